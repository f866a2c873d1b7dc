/**
 * File systems we recognise but do not read yet: a disk holding one says
 * what it holds ("ntfs", "btrfs") and opening it is a clear ENOTSUP.
 */
import { BlockError } from '../../block/errors.js';
import { ascii } from '../volume.js';
import type { FileSystemDriver } from './types.js';

function detectOnly(name: string, probe: FileSystemDriver['probe']): FileSystemDriver {
  return {
    name,
    probe,
    async open(vol) {
      throw new BlockError('ENOTSUP', `${vol.name}: ${name} file system found; reading ${name} is not supported yet`);
    },
  };
}

/** NTFS: the OEM ID "NTFS    " at byte 3 of the boot sector. */
export const ntfsDriver = detectOnly('ntfs', async (vol) => (vol.size >= 512 && ascii(await vol.read(3, 8, 'NTFS boot sector'), 0, 8) === 'NTFS    ' ? 'ntfs' : null));

/** btrfs: the magic "_BHRfS_M" at 0x40 of the superblock at 64 KiB. */
export const btrfsDriver = detectOnly('btrfs', async (vol) => (vol.size >= 0x10000 + 0x48 && ascii(await vol.read(0x10040, 8, 'btrfs superblock'), 0, 8) === '_BHRfS_M' ? 'btrfs' : null));
