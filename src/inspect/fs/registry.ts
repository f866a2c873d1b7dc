/**
 * The file-system drivers, probed in order (the first whose signature matches
 * wins), as the block layer's format registry. Detection-only drivers (NTFS,
 * btrfs) are here too, so a disk holding one says what it holds.
 */
import type { FileSystem, FileSystemDriver } from './types.js';
import { BlockError } from '../../block/errors.js';
import type { Volume } from '../volume.js';

const drivers: FileSystemDriver[] = [];

export function registerFileSystem(d: FileSystemDriver): void {
  if (!drivers.some((x) => x.name === d.name)) drivers.push(d);
}

export function listFileSystems(): readonly FileSystemDriver[] {
  return drivers;
}

/** The file system the volume holds (blkid's TYPE, e.g. "ext4"), or null. Probe failures count as "none". */
export async function probeFileSystem(vol: Volume): Promise<{ driver: FileSystemDriver; type: string } | null> {
  for (const d of drivers) {
    let type: string | null = null;
    try {
      type = await d.probe(vol);
    } catch {
      type = null;
    }
    if (type) return { driver: d, type };
  }
  return null;
}

/** Opens the file system on `vol`; ENOENT-like EINVAL when there is none. */
export async function openFileSystem(vol: Volume): Promise<FileSystem> {
  const found = await probeFileSystem(vol);
  if (!found) throw new BlockError('EINVAL', `${vol.name}: no file system found (known: ${drivers.map((d) => d.name).join(', ')})`);
  return found.driver.open(vol);
}
