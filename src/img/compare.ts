/**
 * qemu-img compare as a function. Ranges that read as zeros in both images
 * are skipped without reading; a range allocated in only one of them must
 * read as zeros there. When sizes differ, the common part is compared and the
 * rest of the larger image must be zeros (unless strict mode, where a size
 * difference or any difference in block status is a mismatch).
 */
import type { BlockNode } from '../block/node.js';
import { bdrvPread } from '../block/io.js';
import { BDRV_BLOCK_ALLOCATED, BDRV_BLOCK_ZERO, blockStatusAbove } from '../block/status.js';
import { allocBuffer, bufferIsZero, freeBuffer } from '../block/buffers.js';
import { BlockError } from '../block/errors.js';

export interface CompareOptions {
  /** qemu-img -s: sizes and block status must match too. */
  strict?: boolean;
  /** The names errors give the two images (qemu-img names them as its arguments); default: the nodes' file names. */
  names?: [string, string];
}

export type CompareResult =
  | { kind: 'identical'; sizeMismatch: boolean }
  | { kind: 'content-mismatch'; offset: number; sizeMismatch: boolean }
  | { kind: 'strict-size-mismatch' }
  | { kind: 'strict-status-mismatch'; offset: number }
  /** qemu-img's exit code 3 (status failed) or 4 (read failed), with its message. */
  | { kind: 'error'; exitCode: 3 | 4; message: string; sizeMismatch: boolean };

/** qemu-img's IO_BUF_SIZE: the largest range read at once. */
const IO_BUF_SIZE = 2 * 1024 * 1024;
const SECTOR = 512;

/**
 * Offset of the first 512-byte sector that differs, or -1 (qemu-img's
 * compare_buffers reports sectors). Compares 32-bit words when both views are
 * 4-byte aligned, since this runs over every byte of allocated ranges.
 */
function firstDifferentSector(a: Uint8Array, b: Uint8Array, n: number): number {
  if ((a.byteOffset & 3) === 0 && (b.byteOffset & 3) === 0) {
    const words = n >>> 2;
    const wa = new Uint32Array(a.buffer, a.byteOffset, words);
    const wb = new Uint32Array(b.buffer, b.byteOffset, words);
    for (let k = 0; k < words; k++) {
      if (wa[k] !== wb[k]) return (k << 2) - ((k << 2) % SECTOR);
    }
    for (let k = words << 2; k < n; k++) if (a[k] !== b[k]) return k - (k % SECTOR);
    return -1;
  }
  for (let k = 0; k < n; k++) if (a[k] !== b[k]) return k - (k % SECTOR);
  return -1;
}

/** Offset of the first non-zero 512-byte sector, or -1. */
function firstNonZeroSector(buf: Uint8Array, n: number): number {
  if (bufferIsZero(buf.subarray(0, n))) return -1;
  for (let i = 0; i < n; i += SECTOR) {
    if (!bufferIsZero(buf.subarray(i, Math.min(n, i + SECTOR)))) return i;
  }
  return -1;
}

export async function compareImages(
  a: BlockNode,
  b: BlockNode,
  opts: CompareOptions = {},
  onProgress?: (done: number, total: number) => void,
): Promise<CompareResult> {
  const size1 = a.totalBytes;
  const size2 = b.totalBytes;
  const common = Math.min(size1, size2);
  const progressBase = Math.max(size1, size2);
  if (opts.strict && size1 !== size2) return { kind: 'strict-size-mismatch' };
  const buf1 = allocBuffer(IO_BUF_SIZE);
  const buf2 = allocBuffer(IO_BUF_SIZE);
  onProgress?.(0, progressBase);

  const nameOf = (bs: BlockNode) => opts.names?.[bs === a ? 0 : 1] ?? bs.filename;
  // Set once the common part is done: qemu-img has printed its size warning by then, errors or not.
  let pastCommon = false;
  const status = async (bs: BlockNode, offset: number, bytes: number) => {
    try {
      return await blockStatusAbove(bs, null, true, offset, bytes);
    } catch (e) {
      throw new CompareFailure(3, `Sector allocation test failed for ${nameOf(bs)}`, e);
    }
  };
  const read = async (bs: BlockNode, offset: number, bytes: number, buf: Uint8Array) => {
    try {
      await bdrvPread(bs, offset, bytes, buf);
    } catch (e) {
      const why = e instanceof BlockError ? e.message : String(e);
      throw new CompareFailure(4, `Error while reading offset ${offset} of ${nameOf(bs)}: ${why}`, e);
    }
  };
  /** Reads [offset, offset+bytes) of bs; the offset of its first non-zero sector or -1. */
  const nonZeroAt = async (bs: BlockNode, offset: number, bytes: number) => {
    await read(bs, offset, bytes, buf1);
    const i = firstNonZeroSector(buf1, bytes);
    return i < 0 ? -1 : offset + i;
  };

  try {
    let offset = 0;
    while (offset < common) {
      const s1 = await status(a, offset, size1 - offset);
      const s2 = await status(b, offset, size2 - offset);
      let chunk = Math.min(s1.pnum, s2.pnum);
      if (opts.strict && s1.status !== s2.status) return { kind: 'strict-status-mismatch', offset };
      const alloc1 = (s1.status & BDRV_BLOCK_ALLOCATED) !== 0;
      const alloc2 = (s2.status & BDRV_BLOCK_ALLOCATED) !== 0;
      if (s1.status & BDRV_BLOCK_ZERO && s2.status & BDRV_BLOCK_ZERO) {
        // Both read as zeros.
      } else if (alloc1 === alloc2) {
        if (alloc1) {
          chunk = Math.min(chunk, IO_BUF_SIZE);
          await read(a, offset, chunk, buf1);
          await read(b, offset, chunk, buf2);
          const i = firstDifferentSector(buf1, buf2, chunk);
          if (i >= 0) return { kind: 'content-mismatch', offset: offset + i, sizeMismatch: false };
        }
      } else {
        chunk = Math.min(chunk, IO_BUF_SIZE);
        const at = await nonZeroAt(alloc1 ? a : b, offset, chunk);
        if (at >= 0) return { kind: 'content-mismatch', offset: at, sizeMismatch: false };
      }
      offset += chunk;
      onProgress?.(offset, progressBase);
    }

    if (size1 !== size2) {
      pastCommon = true;
      const over = size1 > size2 ? a : b;
      while (offset < progressBase) {
        const s = await status(over, offset, progressBase - offset);
        let chunk = s.pnum;
        if (s.status & BDRV_BLOCK_ALLOCATED && !(s.status & BDRV_BLOCK_ZERO)) {
          chunk = Math.min(chunk, IO_BUF_SIZE);
          const at = await nonZeroAt(over, offset, chunk);
          if (at >= 0) return { kind: 'content-mismatch', offset: at, sizeMismatch: true };
        }
        offset += chunk;
        onProgress?.(offset, progressBase);
      }
    }
    return { kind: 'identical', sizeMismatch: size1 !== size2 };
  } catch (e) {
    if (e instanceof CompareFailure) return { kind: 'error', exitCode: e.exitCode, message: e.message, sizeMismatch: pastCommon };
    throw e;
  } finally {
    freeBuffer(buf1);
    freeBuffer(buf2);
  }
}

class CompareFailure extends Error {
  constructor(
    readonly exitCode: 3 | 4,
    message: string,
    cause: unknown,
  ) {
    super(message, { cause });
  }
}
