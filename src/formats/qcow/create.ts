/**
 * Creating a qcow (version 1) image, as QEMU's qcow_co_create: the header,
 * the backing file name right after it, then a zeroed L1 table at the next
 * multiple of 8 (written in whole sectors). An image with a backing file
 * gets 512-byte clusters and 4096-entry L2 tables (so a sector write never
 * has to copy a cluster), one without gets 4 KiB clusters and 512-entry
 * tables. qcow cannot store a backing format (one given must at least name
 * a known format). Encryption (`encryption=on` or `encrypt.format=aes`, with
 * `encrypt.key-secret` naming a secret) only sets crypt_method: the key is
 * the password itself, nothing more is stored.
 */
import { BlockError } from '../../block/errors.js';
import type { BlockNode } from '../../block/node.js';
import { driverInfo, type ImageCreateRequest } from '../../block/driver.js';
import { optBool, type OptionDesc } from '../../block/options.js';
import { bdrvPwrite } from '../../block/io.js';
import { lookupSecret } from '../../block/secrets.js';
import { QCOW1_CRYPT_AES, QCOW1_CRYPT_NONE, QCOW1_HEADER_BYTES, QCOW1_MAGIC, QCOW1_VERSION, serializeQcowHeader } from './header.js';

const SECTOR = 512;

export interface QcowCreateOptions {
  /** Virtual size in bytes (> 0). */
  size: number;
  backingFile?: string;
  /** Legacy AES encryption (crypt_method 1). */
  encrypted?: boolean;
}

/** Writes a new qcow image into the empty protocol node `file`. */
export async function createQcow(file: BlockNode, o: QcowCreateOptions): Promise<void> {
  if (o.size === 0) throw new BlockError('EINVAL', 'Image size is too small, cannot be zero length');
  if (!Number.isSafeInteger(o.size) || o.size < 0) throw new BlockError('EINVAL', `Invalid qcow image size ${o.size}`);
  // QEMU's special backing name for vvfat is not stored.
  const backing = o.backingFile !== undefined && o.backingFile !== 'fat:' ? new TextEncoder().encode(o.backingFile) : undefined;
  const clusterBits = o.backingFile !== undefined ? 9 : 12;
  const l2Bits = o.backingFile !== undefined ? 12 : 9;
  const headerSize = Math.ceil((QCOW1_HEADER_BYTES + (backing?.length ?? 0)) / 8) * 8;
  const l1Size = Math.ceil(o.size / 2 ** (clusterBits + l2Bits));
  const header = serializeQcowHeader({
    magic: QCOW1_MAGIC,
    version: QCOW1_VERSION,
    backingFileOffset: backing ? QCOW1_HEADER_BYTES : 0,
    backingFileSize: backing?.length ?? 0,
    mtime: 0,
    size: o.size,
    clusterBits,
    l2Bits,
    cryptMethod: o.encrypted ? QCOW1_CRYPT_AES : QCOW1_CRYPT_NONE,
    l1TableOffset: headerSize,
  });
  await bdrvPwrite(file, 0, header.length, header);
  if (backing) await bdrvPwrite(file, QCOW1_HEADER_BYTES, backing.length, backing);
  const l1Bytes = Math.ceil((l1Size * 8) / SECTOR) * SECTOR;
  if (l1Bytes) await bdrvPwrite(file, headerSize, l1Bytes, new Uint8Array(l1Bytes));
}

/** QEMU's qcow_create_opts, in table order. */
export const QCOW_CREATE_OPTS: readonly OptionDesc[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'backing_file', type: 'str', help: 'File name of a base image', qapi: { name: 'backing-file' } },
  { name: 'backing_fmt', type: 'str', help: 'Format of the backing image', qapi: false },
  { name: 'encryption', type: 'bool', help: "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)", qapi: false },
  { name: 'encrypt.format', type: 'str', help: "Encrypt the image, format choices: 'aes'", qapi: false },
  { name: 'encrypt.key-secret', type: 'str', help: 'ID of the secret that provides the AES encryption key', qapi: false },
];

/**
 * What QEMU's qcow_co_create_opts checks before it makes the file: qcow
 * cannot store a backing format, but one that names no driver is refused,
 * and an existing file is left as it was.
 */
export function checkQcowCreate(req: ImageCreateRequest): void {
  const fmt = req.values.get('backing_fmt');
  if (fmt !== undefined && !driverInfo(fmt)) throw new BlockError('EINVAL', `unrecognized backing format '${fmt}'`);
}

/** The driver's `create` hook (qemu-img create -f qcow, convert -O qcow). */
export async function qcowCreateImage(file: BlockNode, req: ImageCreateRequest): Promise<void> {
  checkQcowCreate(req);
  const encrypt = req.values.get('encrypt.format');
  const encrypted = optBool(req.values, 'encryption') === true || encrypt !== undefined;
  if (encrypted) {
    if (encrypt !== undefined && encrypt !== 'aes') throw new BlockError('EINVAL', `Unsupported encryption format`);
    const secretId = req.values.get('encrypt.key-secret');
    if (secretId === undefined) throw new BlockError('EINVAL', `Parameter 'encrypt.key-secret' is required for cipher`);
    if (!lookupSecret(secretId)) throw new BlockError('EINVAL', `No secret with id '${secretId}'`);
  }
  const size = req.origin === 'qemu-img' ? Math.ceil(req.size / SECTOR) * SECTOR : req.size;
  return createQcow(file, { size, backingFile: req.values.get('backing_file'), encrypted });
}
