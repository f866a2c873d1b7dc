/**
 * qemu-img convert as a function: copies the guest view of one or more
 * source images (concatenated) into an open target node.
 *
 * Ranges the chain reports as zero are never read; with a zero-initialised
 * target (a freshly created file) they are not written either, so they stay
 * holes. Data is read in large requests and each `minSparse` block of it that
 * is all zeros is skipped the same way (qemu-img's -S), so a zero-filled but
 * allocated source still becomes sparse.
 */
import { BlockError } from '../block/errors.js';
import type { BlockNode } from '../block/node.js';
import { bdrvPread, bdrvPwrite, bdrvPwriteZeroes, bdrvTruncate } from '../block/io.js';
import { BDRV_BLOCK_ZERO, blockStatusAbove } from '../block/status.js';
import { allocBuffer, bufferIsZero, freeBuffer } from '../block/buffers.js';
import { openImage, type Storage } from '../block/open.js';

export interface ConvertOptions {
  /**
   * Bytes of consecutive zeros that become a hole (qemu-img -S, default 4 KiB);
   * 0 writes every byte, and zeros are written explicitly.
   */
  minSparse?: number;
  /**
   * The target reads as zeros before the copy (a new file), so zero ranges
   * need no write. Ignored when minSparse is 0, as in qemu-img.
   */
  targetHasZeroInit?: boolean;
  /** Size of each read request (default 2 MiB). */
  bufferSize?: number;
}

/** Progress callback: bytes of the target done so far, out of `total`. */
export type ProgressFn = (done: number, total: number) => void;

const DEFAULT_BUFFER = 2 * 1024 * 1024;
/** Largest range asked about in one block-status call (as qemu-img map). */
const STATUS_CHUNK = 1 << 30;

/** Sum of the sources' virtual sizes: the target's size. */
export function convertTotalBytes(sources: BlockNode[]): number {
  return sources.reduce((n, s) => n + s.totalBytes, 0);
}

/** Creates `filename` as an empty raw file of `size` bytes and opens it for writing. */
export async function createRawTarget(storage: Storage, filename: string, size: number): Promise<BlockNode> {
  if (!storage.createFile) throw new BlockError('ENOTSUP', `${filename}: ${storage.name} storage cannot create files`);
  await storage.createFile(filename);
  const bs = await openImage(storage, filename, { format: 'raw' });
  await bdrvTruncate(bs, size, true);
  return bs;
}

export async function convert(
  sources: BlockNode[],
  target: BlockNode,
  opts: ConvertOptions = {},
  onProgress?: ProgressFn,
): Promise<void> {
  const minSparse = opts.minSparse ?? 4096;
  const zeroInit = minSparse > 0 && opts.targetHasZeroInit === true;
  const bufSize = Math.max(opts.bufferSize ?? DEFAULT_BUFFER, minSparse);
  const total = convertTotalBytes(sources);
  if (target.totalBytes < total) {
    throw new BlockError('EINVAL', `${target.filename}: output file is smaller than input file`);
  }
  const buf = allocBuffer(bufSize);
  let base = 0;
  try {
    onProgress?.(0, total);
    for (const src of sources) {
      const size = src.totalBytes;
      for (let pos = 0; pos < size; ) {
        const st = await blockStatusAbove(src, null, true, pos, Math.min(STATUS_CHUNK, size - pos));
        const extent = st.pnum > 0 ? st.pnum : size - pos;
        if (st.status & BDRV_BLOCK_ZERO) {
          if (!zeroInit) await bdrvPwriteZeroes(target, base + pos, extent, { mayUnmap: minSparse > 0 });
          pos += extent;
          onProgress?.(base + pos, total);
          continue;
        }
        for (let done = 0; done < extent; ) {
          const n = Math.min(bufSize, extent - done);
          const view = buf.subarray(0, n);
          await bdrvPread(src, pos + done, n, view);
          await writeSparse(target, base + pos + done, view, minSparse, zeroInit);
          done += n;
          onProgress?.(base + pos + done, total);
        }
        pos += extent;
      }
      base += size;
    }
  } finally {
    freeBuffer(buf);
  }
}

/**
 * Writes `data` at `offset`, leaving out (or, without zero-init, zero-writing)
 * every all-zero block of `minSparse` bytes, aligned to guest offsets.
 */
async function writeSparse(target: BlockNode, offset: number, data: Uint8Array, minSparse: number, zeroInit: boolean): Promise<void> {
  if (minSparse === 0) {
    await bdrvPwrite(target, offset, data.length, data);
    return;
  }
  // Runs of same-kind blocks become one request each.
  let runStart = 0;
  let runZero: boolean | undefined;
  const flush = async (end: number) => {
    if (runZero === undefined || end === runStart) return;
    if (!runZero) await bdrvPwrite(target, offset + runStart, end - runStart, data.subarray(runStart, end));
    else if (!zeroInit) await bdrvPwriteZeroes(target, offset + runStart, end - runStart, { mayUnmap: true });
  };
  for (let i = 0; i < data.length; ) {
    const blockEnd = Math.min(data.length, i + minSparse - ((offset + i) % minSparse));
    const zero = bufferIsZero(data.subarray(i, blockEnd));
    if (zero !== runZero) {
      await flush(i);
      runStart = i;
      runZero = zero;
    }
    i = blockEnd;
  }
  await flush(data.length);
}
