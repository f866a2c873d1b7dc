/**
 * qemu-img rebase as a function (QEMU's img_rebase).
 *
 * Safe mode: for every range not allocated in the image itself, the old
 * chain's data and the new backing's are compared sector by sector, and
 * where they differ the old chain's data is written into the image, so the
 * guest sees the same disk over the new backing; then the header names the
 * new backing file. `backing: ''` removes the backing file (every non-zero
 * byte of the old chain is copied). Unsafe mode (`unsafe`) only rewrites the
 * header. Every check that can fail runs before the first write, so a
 * refused rebase changes nothing.
 */
import { BlockError, isBlockError } from '../block/errors.js';
import type { BlockNode } from '../block/node.js';
import { allocBuffer, freeBuffer } from '../block/buffers.js';
import { bdrvFlush, bdrvPread, bdrvPwrite, bdrvPwriteZeroes } from '../block/io.js';
import { closeNode, openImage, type Storage } from '../block/open.js';
import { isAllocated } from '../block/status.js';
import type { ProgressFn } from './convert.js';

export interface RebaseRequest {
  filename: string;
  format?: string;
  /** -b: the new backing file name as it will be stored ('' removes the backing file). */
  backing: string;
  /** -F */
  backingFormat?: string;
  /** -u */
  unsafe?: boolean;
  onProgress?: ProgressFn;
}

/** QEMU's IO_BUF_SIZE. */
const CHUNK = 2 * 1024 * 1024;
const SECTOR = 512;

/** Reads [offset, offset + n) of `bs` into `buf`, zeros past its end (or everything without a node). */
async function readOrZero(bs: BlockNode | null, offset: number, n: number, buf: Uint8Array): Promise<void> {
  const have = bs ? Math.max(0, Math.min(n, bs.totalBytes - offset)) : 0;
  if (have > 0) await bdrvPread(bs!, offset, have, buf.subarray(0, have));
  if (have < n) buf.fill(0, have, n);
}

function sectorEqual(a: Uint8Array, b: Uint8Array, at: number, len: number): boolean {
  for (let i = at; i < at + len; i++) if (a[i] !== b[i]) return false;
  return true;
}

export async function rebaseImage(storage: Storage, req: RebaseRequest): Promise<void> {
  const { filename, backing } = req;
  const newFormat = backing === '' ? null : (req.backingFormat ?? null);
  if (backing !== '' && newFormat === null) {
    throw new BlockError('EINVAL', `Could not change the backing file to '${backing}': backing format must be specified`);
  }
  const bs = await openImage(storage, filename, { format: req.format, readOnly: false, backing: !req.unsafe });
  let newBacking: BlockNode | null = null;
  try {
    if (!bs.driver.changeBackingFile) {
      throw new BlockError('ENOTSUP', `Could not change the backing file to '${backing}': Operation not supported`);
    }
    if (!req.unsafe) {
      if (backing !== '') {
        const resolved = storage.resolve(filename, backing);
        try {
          newBacking = await openImage(storage, resolved, { format: newFormat!, readOnly: true });
        } catch (e) {
          const why = e instanceof Error ? e.message : String(e);
          throw new BlockError(isBlockError(e) ? e.code : 'EIO', `Could not open new backing file '${backing}': Could not open '${resolved}': ${why.replace(`${resolved}: `, '')}`, { cause: e });
        }
      }
      await copyDifferences(bs, bs.cowNode(), newBacking, req.onProgress);
      await bdrvFlush(bs);
    }
    await bs.driver.changeBackingFile(bs, backing === '' ? null : backing, newFormat);
  } finally {
    if (newBacking) await closeNode(newBacking);
    await closeNode(bs);
  }
}

/** Writes into `bs` the old chain's data wherever it differs from the new backing (ranges `bs` does not allocate). */
async function copyDifferences(bs: BlockNode, oldChain: BlockNode | null, newBacking: BlockNode | null, onProgress?: ProgressFn): Promise<void> {
  const size = bs.totalBytes;
  const a = allocBuffer(CHUNK);
  const b = allocBuffer(CHUNK);
  try {
    for (let offset = 0; offset < size; ) {
      const want = Math.min(CHUNK, size - offset);
      const own = await isAllocated(bs, offset, want);
      let n = Math.max(1, Math.min(own.pnum, want));
      // Past the old backing's end (or without one) the old data is zeros, written as zeros (QEMU: "use zero writes after source backing EOF").
      const oldSize = oldChain ? oldChain.totalBytes : 0;
      const oldIsZero = offset >= oldSize;
      if (!oldIsZero) n = Math.min(n, oldSize - offset);
      if (!own.allocated) {
        await readOrZero(oldChain, offset, n, a);
        await readOrZero(newBacking, offset, n, b);
        // Runs of differing sectors, each written once.
        for (let at = 0; at < n; ) {
          const len = Math.min(SECTOR, n - at);
          if (sectorEqual(a, b, at, len)) {
            at += len;
            continue;
          }
          let end = at + len;
          while (end < n && !sectorEqual(a, b, end, Math.min(SECTOR, n - end))) end += Math.min(SECTOR, n - end);
          if (oldIsZero) await bdrvPwriteZeroes(bs, offset + at, end - at);
          else await bdrvPwrite(bs, offset + at, end - at, a.subarray(at, end));
          at = end;
        }
      }
      offset += n;
      onProgress?.(offset, size);
    }
  } finally {
    freeBuffer(a);
    freeBuffer(b);
  }
}
