/**
 * Allocating writes with their data in flight outside the lock (QEMU's
 * qcow2_alloc_cluster_offset, the data write, then qcow2_alloc_cluster_link_l2
 * for a QCowL2Meta in s->cluster_allocs).
 *
 * A write of whole clusters that have no host cluster yet (unallocated or zero
 * entries; no copy-on-write, nothing to free) takes the lock only to reserve
 * its host clusters: their refcounts are set in the refcount cache, the L2
 * slice is pinned, and the guest range is recorded in `rw.allocs`. The lock is
 * then released and the data written; once the write is done, the entries are
 * set in the pinned slice (synchronously, no await in between) and marked
 * dirty. So the next request's allocation and the data writes of several
 * requests overlap in time, while host clusters are handed out in the order
 * the requests took the lock (the order of the calls): the image is laid out
 * exactly as with one write at a time.
 *
 * Crash safety is the one-at-a-time path's: an entry points at data only after
 * that data was written, and the refcounts of its clusters were set (in the
 * cache, which flushMetadata writes before any L2 slice) before the entry. A
 * crash while the data is in flight leaks the reserved clusters, as in QEMU.
 *
 * Everything else that takes the lock (metadata.ts withLock) first waits for
 * the allocations in flight, so it sees their entries and no flush writes a
 * slice while an entry is about to change. A write that overlaps an allocation
 * in flight, or that does not qualify, waits the same way and takes the
 * ordinary path (write.ts) under the same turn of the lock.
 */
import type { BlockNode } from '../../block/node.js';
import type { WriteFlags } from '../../block/driver.js';
import { bdrvDebugEvent } from '../../block/debug-event.js';
import { l2EntryIsCompressed, readL2Entry, standardL2Entry, writeL2Entry } from './l2-entry.js';
import { allocateClusters } from './refcount.js';
import { checkDataOverlap, checkNotCorrupt, drainAllocs, withLockInflight } from './metadata.js';
import { abortAllocation, acquireL2SliceForWrite, afterWrite, checkHostAligned, hasHost, prepareWrite, qcow2Write, writeData } from './write.js';
import type { InflightAlloc, Qcow2State } from './state.js';
import type { L2Slice } from './l2-cache.js';

/** What the locked part hands to the data write: the reserved clusters and the pinned slice. */
interface Reserved {
  alloc: InflightAlloc;
  finish: () => void;
  slice: L2Slice;
  idx0: number;
  host: number;
}

/**
 * The driver's guest write (pwritev without compression): whole fresh
 * clusters with their data in flight outside the lock, anything else through
 * qcow2Write under it.
 */
export async function qcow2WriteMaybeInflight(bs: BlockNode, s: Qcow2State, offset: number, bytes: number, buf: Uint8Array, flags: WriteFlags): Promise<void> {
  const r = await withLockInflight(s, async (): Promise<Reserved | null> => {
    await prepareWrite(s);
    const res = fresh(s, offset, bytes, flags) ? await reserve(s, offset, bytes) : null;
    if (res) return res;
    // The ordinary path, in this same turn of the lock: first the allocations in flight must land.
    await drainAllocs(s);
    await qcow2Write(bs, s, offset, bytes, buf);
    await afterWrite(s, flags);
    return null;
  });
  if (r) await writeReserved(s, r, offset, buf.subarray(0, bytes));
}

/** Whether the request may take the in-flight path, before looking at its entries. */
function fresh(s: Qcow2State, offset: number, bytes: number, flags: WriteFlags): boolean {
  const cs = s.clusterSize;
  if (flags.fua || s.extendedL2 || s.dataFile !== s.file) return false;
  if (offset % cs !== 0 || bytes % cs !== 0 || bytes === 0) return false;
  // One L2 slice, whose table exists in the L1 table's range (growing L1 flushes L2 slices: not while data is in flight).
  const sliceBytes = s.l2SliceSize * cs;
  if (Math.floor(offset / sliceBytes) !== Math.floor((offset + bytes - 1) / sliceBytes)) return false;
  if (Math.floor(offset / (cs * s.l2Size)) >= s.l1Size) return false;
  // The L2 cache over its bound is flushed by the ordinary path (after the allocations in flight landed).
  if (s.l2Cache.size > s.l2Cache.capacity) return false;
  for (const a of s.rw.allocs) if (a.start < offset + bytes && offset < a.end) return false;
  return true;
}

/** Under the lock: reserves host clusters for [offset, offset + bytes) when every cluster is fresh, else null. */
async function reserve(s: Qcow2State, offset: number, bytes: number): Promise<Reserved | null> {
  const cs = s.clusterSize;
  const { slice, idx: idx0 } = await acquireL2SliceForWrite(s, offset);
  const n = bytes / cs;
  try {
    for (let j = 0; j < n; j++) {
      const e = readL2Entry(slice.data, idx0 + j, false);
      if (hasHost(s, e) || l2EntryIsCompressed(e)) {
        s.l2Cache.release(slice);
        return null;
      }
    }
    const host = await allocateClusters(s, n);
    await checkHostAligned(s, host, offset);
    // Before the lock is let go: the check may read tables that the next request's allocation changes.
    await checkDataOverlap(s, host, bytes);
    let finish!: () => void;
    const alloc: InflightAlloc = { start: offset, end: offset + bytes, done: new Promise<void>((r) => (finish = r)) };
    s.rw.allocs.add(alloc);
    return { alloc, finish, slice, idx0, host };
  } catch (e) {
    s.l2Cache.release(slice);
    throw e;
  }
}

/** Outside the lock: the data, then (no await between the check and the update) the entries. */
async function writeReserved(s: Qcow2State, r: Reserved, offset: number, data: Uint8Array): Promise<void> {
  const { slice, idx0, host } = r;
  let dataFailed = false;
  try {
    await bdrvDebugEvent(s.file, 'write_aio');
    try {
      await writeData(s, offset, host, data);
    } catch (e) {
      dataFailed = true;
      throw e;
    }
    // The image may have been found corrupt meanwhile: no entry then (the clusters leak, as on a failed write).
    checkNotCorrupt(s);
    const n = data.length / s.clusterSize;
    for (let j = 0; j < n; j++) writeL2Entry(slice.data, idx0 + j, false, standardL2Entry(host + j * s.clusterSize));
    s.l2Cache.markDirty(slice);
  } finally {
    s.l2Cache.release(slice);
    s.rw.allocs.delete(r.alloc);
    r.finish();
    // No entry will name the clusters: their refcounts drop under the lock (QEMU's qcow2_alloc_cluster_abort),
    // taken only now that this allocation no longer holds up a request that drains them.
    if (dataFailed) await withLockInflight(s, () => abortAllocation(s, host, data.length / s.clusterSize));
  }
}
