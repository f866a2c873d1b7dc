/**
 * Copy-on-read (QEMU's bdrv_co_do_copy_on_readv): a read of data that comes
 * from the backing chain also writes that data into the top layer, so later
 * reads find it there. Used by the `copy-on-read` filter driver and by a
 * backend opened with `copy-on-read=on` (-drive).
 *
 * As QEMU, the copy is made in whole clusters of the top layer (a 4 KiB read
 * copies its 64 KiB qcow2 cluster), only for ranges the top does not hold
 * itself; with a `bottom` (the filter's option) only for data found in a
 * layer from the top's backing node down to `bottom` inclusive, without one
 * for every such range, zeros read from no layer included (as QEMU's
 * BDRV_REQ_COPY_ON_READ: a -C read of an image with no backing file
 * allocates zero clusters). The copy is a copyOnRead write: what the guest sees does not
 * change, so dirty bitmaps and wr_highest_offset skip it. All-zero data is
 * written as zeroes.
 */
import type { BlockNode } from './node.js';
import { bdrvPread, bdrvPwrite, bdrvPwriteZeroes } from './io.js';
import { isAllocated, isAllocatedAbove } from './status.js';
import { allocBuffer, bufferIsZero, freeBuffer } from './buffers.js';

/** Largest piece copied at once (bounds the bounce buffer). */
const MAX_COPY = 1024 * 1024;

/**
 * Reads [offset, offset + bytes) of `top` into `buf`, copying what comes
 * from the backing chain (down to `bottom`, inclusive) into `top`. The caller
 * guarantees the range lies inside `top`.
 */
export async function copyOnReadPread(top: BlockNode, bottom: BlockNode | null, offset: number, bytes: number, buf: Uint8Array): Promise<void> {
  const below = top.cowNode();
  if ((bottom && !below) || top.readOnly || bytes === 0) return bdrvPread(top, offset, bytes, buf);
  const cluster = Math.max(top.driver.getDriverInfo?.(top)?.clusterSize ?? 0, top.limits.requestAlignment, 1);
  const start = offset - (offset % cluster);
  const end = Math.min(Math.ceil((offset + bytes) / cluster) * cluster, top.totalBytes);
  for (let pos = start; pos < end; ) {
    const want = Math.min(end - pos, MAX_COPY);
    const own = await isAllocated(top, pos, want);
    let n = Math.max(1, Math.min(own.pnum, want));
    let copy = false;
    if (!own.allocated && bottom && below) {
      const above = await isAllocatedAbove(below, bottom, true, pos, n);
      n = Math.max(1, Math.min(above.pnum, n));
      copy = above.allocated;
    } else if (!own.allocated) {
      // Without a bottom every range the top lacks is copied, zeros from no layer at all included (iotest 197).
      copy = true;
    }
    const lo = Math.max(pos, offset);
    const hi = Math.min(pos + n, offset + bytes);
    if (copy) {
      const tmp = allocBuffer(n);
      try {
        await bdrvPread(top, pos, n, tmp);
        if (bufferIsZero(tmp.subarray(0, n))) await bdrvPwriteZeroes(top, pos, n, { copyOnRead: true });
        else await bdrvPwrite(top, pos, n, tmp, { copyOnRead: true });
        if (hi > lo) buf.set(tmp.subarray(lo - pos, hi - pos), lo - offset);
      } finally {
        freeBuffer(tmp);
      }
    } else if (hi > lo) {
      await bdrvPread(top, lo, hi - lo, buf.subarray(lo - offset, hi - offset));
    }
    pos += n;
  }
}

/** Whether `bottom` is `top`'s backing node or below it (the filter's `bottom` must be). */
export function isBelow(top: BlockNode, bottom: BlockNode): boolean {
  for (let n = top.cowNode(); n; n = n.cowNode()) if (n === bottom) return true;
  return false;
}
