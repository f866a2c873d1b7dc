/**
 * Refcounts: reading them, and the allocation API the write path, the
 * snapshot code and check/repair build on (QEMU's qcow2-refcount.c).
 *
 * The refcount table (refcount_table_clusters clusters of 64-bit entries)
 * points at refcount blocks, each one cluster of refcount_bits-wide entries,
 * one per host cluster. The table was bounds-checked at open (validate.ts);
 * it is loaded on first use.
 *
 * Entries (of any refcount_bits) and table entries are encoded by
 * refcount-codec.ts; header fields are written through metadata.ts
 * writeHeaderFields.
 *
 * Exported allocation surface (all async; call under the node's write lock,
 * metadata.ts withLock, when requests may run concurrently):
 *   getRefcount(s, cluster)                  refcount of host cluster index `cluster`
 *   updateRefcount(s, offset, bytes, delta)  adds delta to every cluster the byte range touches
 *   allocateClusters(s, n)                   n contiguous free clusters, refcount 1; returns the host offset
 *   allocateBytes(s, size)                   QEMU's qcow2_alloc_bytes (compressed clusters), byte offset
 *   freeClustersDeferred(s, offset, bytes)   decrement after the tables that dropped them are stable
 *   flushRefcounts(s)                        writes dirty refcount blocks, then flushes the file
 *   applyDeferredFrees(s)                    (flush path) performs the deferred decrements
 *   dropRefcountCache(s)                     forgets cached blocks (after check/repair rewrote them)
 *
 * Ordering guarantees (what makes a crash leak clusters at worst):
 *  - allocateClusters/updateRefcount(+) change refcounts in the write-back
 *    block cache only; callers must call flushRefcounts before the first
 *    table entry that uses the clusters reaches the disk (the L2/L1 flush
 *    in write.ts does).
 *  - A new refcount block is written (and, when it is not self-describing,
 *    its own refcount flushed) before the refcount table entry pointing at it.
 *  - Refcount table growth writes the new blocks and table, flushes, then
 *    points the header at them, flushes, then frees the old table.
 *  - updateRefcount(-) is immediate in the cache: only use it for clusters
 *    nothing on disk references any more. The write path uses
 *    freeClustersDeferred instead.
 *  - A cluster whose refcount reaches 0 becomes allocatable again
 *    (free-cluster hint lowered). When the free's type passes discards
 *    (state.ts passDiscard), the cluster is queued and the queue, merged into
 *    runs, is passed down to the file as discards at the end of the update
 *    or of a batch (applyDeferredFrees), as QEMU's qcow2_process_discards.
 */
import { QCOW2_OL_REFCOUNT_BLOCK, QCOW2_OL_REFCOUNT_TABLE } from './overlap.js';
import { BlockError, hex } from '../../block/errors.js';
import { allocBuffer, freeBuffer } from '../../block/buffers.js';
import { bdrvPdiscard, bdrvPread, bdrvPwrite } from '../../block/io.js';
import { bdrvDebugEvent } from '../../block/debug-event.js';
import {
  countNonzeroRefcounts,
  decodeReftable,
  getRefcountEntry,
  putReftableEntry,
  refcountLimit,
  refcountsPerBlock,
  setRefcountEntry,
} from './refcount-codec.js';

/** The entry codec, re-exported for callers that already take the refcount API from here. */
export { getRefcountEntry, setRefcountEntry } from './refcount-codec.js';
import { QCOW_MAX_REFTABLE_SIZE } from './validate.js';
import { invalidateMetadata, markCorrupt, preWriteOverlapCheck, removeMetadata, addMetadata, syncFile, writeHeaderFields } from './metadata.js';
import type { Qcow2DiscardType, Qcow2State, RefblockEntry } from './state.js';

/** Offsets of the refcount blocks (0 = unallocated), decoded by refcount-codec.ts. */
export async function loadRefcountTable(s: Qcow2State): Promise<Float64Array> {
  if (s.refcountTable) return s.refcountTable;
  const h = s.header;
  const bytes = h.refcountTableClusters * s.clusterSize;
  const raw = allocBuffer(bytes); // in wasm memory when it fits: decodeReftable's zero test of the tail runs in place
  try {
    await bdrvDebugEvent(s.file, 'reftable_load');
    await bdrvPread(s.file, h.refcountTableOffset, bytes, raw);
    s.refcountTable = decodeReftable(raw);
  } finally {
    freeBuffer(raw);
  }
  return s.refcountTable;
}

/** Refcount entries per refcount block. */
export function refblockEntries(s: Qcow2State): number {
  return refcountsPerBlock(s.clusterSize, s.refcountBits);
}

/**
 * Host clusters [0, endCluster) with a nonzero refcount, counting stops once
 * `threshold` is reached (QEMU's qcow2_detect_metadata_preallocation loop).
 */
export async function countReferencedClusters(s: Qcow2State, endCluster: number, threshold: number): Promise<number> {
  const table = await loadRefcountTable(s);
  const per = refblockEntries(s);
  const block = allocBuffer(s.clusterSize);
  let count = 0;
  try {
    for (let i = 0; i < table.length && i * per < endCluster && count < threshold; i++) {
      const off = table[i]!;
      if (off === 0) continue;
      if (off % s.clusterSize !== 0) {
        throw new BlockError('ECORRUPT', `${s.image}: Refblock offset ${hex(off)} unaligned (reftable index ${hex(i)})`);
      }
      if (off + s.clusterSize > s.file.totalBytes) {
        throw new BlockError('ECORRUPT', `${s.image}: refcount block at ${hex(off)} (reftable index ${hex(i)}) extends beyond the end of the file`);
      }
      await bdrvPread(s.file, off, s.clusterSize, block);
      count += countNonzeroRefcounts(block, s.refcountBits, Math.min(per, endCluster - i * per));
    }
  } finally {
    freeBuffer(block);
  }
  return count;
}

/** QEMU's qcow2_detect_metadata_preallocation: far more refcounted clusters than the file really stores. */
export async function detectMetadataPreallocation(s: Qcow2State): Promise<boolean> {
  const fileNode = s.file;
  const realAllocation = await fileNode.driver.getAllocatedFileSize?.(fileNode);
  if (realAllocation === undefined || realAllocation < 0) return false;
  const realClusters = Math.floor(realAllocation / s.clusterSize);
  const threshold = Math.max(Math.floor((realClusters * 10) / 9), realClusters + 2);
  const endCluster = Math.ceil(fileNode.totalBytes / s.clusterSize);
  return (await countReferencedClusters(s, endCluster, threshold)) >= threshold;
}

// ------------------------------------------------------------ entry access

/** Largest refcount an entry can hold (capped to what a JS number holds exactly). */
export function refcountMax(s: Qcow2State): number {
  return refcountLimit(s.refcountBits);
}

// -------------------------------------------------------- refcount cache

function refError(s: Qcow2State, msg: string): BlockError {
  return new BlockError('ECORRUPT', `${s.image}: ${msg}`);
}

/** Writes one cached refcount block back. */
async function writeRefblock(s: Qcow2State, e: RefblockEntry): Promise<void> {
  await preWriteOverlapCheck(s, QCOW2_OL_REFCOUNT_BLOCK, e.offset, s.clusterSize);
  await bdrvDebugEvent(s.file, 'refblock_update_part');
  await bdrvPwrite(s.file, e.offset, s.clusterSize, e.data);
  e.dirty = false;
  s.rw.refcountsUnsynced = true;
}

async function evictRefblocks(s: Qcow2State): Promise<void> {
  const cache = s.rw.refblocks;
  for (const [k, e] of cache) {
    if (cache.size <= s.rw.refblockCapacity) break;
    // Writing a block early is always safe: increments only leak on a crash,
    // and decrements are applied only after the tables dropping the clusters are stable.
    if (e.dirty) await writeRefblock(s, e);
    cache.delete(k);
    freeBuffer(e.data);
  }
}

/** The refcount block at `offset` (table index `index` for messages), cached. */
async function loadRefblock(s: Qcow2State, offset: number, index: number): Promise<RefblockEntry> {
  const cache = s.rw.refblocks;
  const hit = cache.get(offset);
  if (hit) {
    cache.delete(offset);
    cache.set(offset, hit);
    return hit;
  }
  if (offset % s.clusterSize !== 0) {
    // QEMU's words (%#x: index 0 prints as "0"); fatal, as in qcow2_get_refcount / alloc_refcount_block.
    throw await markCorrupt(s, `Refblock offset ${hex(offset)} unaligned (reftable index: ${index === 0 ? '0' : hex(index)})`);
  }
  if (offset + s.clusterSize > s.file.totalBytes) {
    throw refError(s, `refcount block at ${hex(offset)} (reftable index ${hex(index)}) extends beyond the end of the file`);
  }
  const data = allocBuffer(s.clusterSize);
  try {
    await bdrvPread(s.file, offset, s.clusterSize, data);
  } catch (e) {
    freeBuffer(data);
    throw e;
  }
  // Another request may have loaded it meanwhile; keep the first copy.
  const again = cache.get(offset);
  if (again) {
    freeBuffer(data);
    return again;
  }
  const e: RefblockEntry = { offset, data, dirty: false };
  cache.set(offset, e);
  if (cache.size > s.rw.refblockCapacity) await evictRefblocks(s);
  return e;
}

/** Puts a block just written to disk into the cache (clean). */
function cacheNewRefblock(s: Qcow2State, offset: number, data: Uint8Array): void {
  const old = s.rw.refblocks.get(offset);
  if (old) freeBuffer(old.data);
  const copy = allocBuffer(s.clusterSize);
  copy.set(data);
  s.rw.refblocks.set(offset, { offset, data: copy, dirty: false });
}

/**
 * Writes every dirty refcount block and flushes the file, so refcounts (and
 * refcount table entries) written so far are stable before whatever the
 * caller writes next. Data writes made before the call are flushed too.
 */
export async function flushRefcounts(s: Qcow2State): Promise<void> {
  for (const e of s.rw.refblocks.values()) if (e.dirty) await writeRefblock(s, e);
  if (s.rw.refcountsUnsynced) {
    await syncFile(s);
    s.rw.refcountsUnsynced = false;
  }
}

/** True when refcount changes are waiting in the cache or unflushed on disk. */
export function refcountsPending(s: Qcow2State): boolean {
  if (s.rw.refcountsUnsynced) return true;
  for (const e of s.rw.refblocks.values()) if (e.dirty) return true;
  return false;
}

/** Drops every cached refcount block (they must be clean) and the loaded table; for check/repair after rewriting them. */
export function dropRefcountCache(s: Qcow2State): void {
  for (const e of s.rw.refblocks.values()) freeBuffer(e.data);
  s.rw.refblocks.clear();
  s.refcountTable = null;
  s.rw.freeClusterIndex = 0;
  s.rw.freeByteOffset = 0;
  invalidateMetadata(s);
}

// -------------------------------------------------------------- reading

/**
 * A copy of refcount block `i` of the current table as it stands in the cache
 * (null: no block, every refcount 0). For walks that allocate while they read.
 */
export async function copyRefblock(s: Qcow2State, i: number, into: Uint8Array): Promise<Uint8Array | null> {
  const table = await loadRefcountTable(s);
  if (i >= table.length || table[i] === 0) return null;
  into.set((await loadRefblock(s, table[i]!, i)).data);
  return into;
}

/** Refcount of host cluster index `cluster` (0 past the refcount table's reach). */
export async function getRefcount(s: Qcow2State, cluster: number): Promise<number> {
  const table = await loadRefcountTable(s);
  const per = refblockEntries(s);
  const i = Math.floor(cluster / per);
  if (i >= table.length || table[i] === 0) return 0;
  const e = await loadRefblock(s, table[i]!, i);
  return getRefcountEntry(e.data, s.refcountBits, cluster - i * per);
}

/** Sync fast path: the refcount when its block is cached or absent, undefined when it must be loaded. */
function refcountIfCached(s: Qcow2State, table: Float64Array, per: number, cluster: number): number | undefined {
  const i = Math.floor(cluster / per);
  if (i >= table.length || table[i] === 0) return 0;
  const e = s.rw.refblocks.get(table[i]!);
  return e ? getRefcountEntry(e.data, s.refcountBits, cluster - i * per) : undefined;
}

/**
 * First run of `n` free clusters at or after the free-cluster hint (QEMU's
 * alloc_clusters_noref). Changes nothing.
 */
async function findFreeRun(s: Qcow2State, n: number): Promise<number> {
  const table = await loadRefcountTable(s);
  const per = refblockEntries(s);
  let start = s.rw.freeClusterIndex;
  let c = start;
  while (c - start < n) {
    let rc = refcountIfCached(s, table, per, c);
    if (rc === undefined) rc = await getRefcount(s, c);
    c++;
    if (rc !== 0) start = c;
  }
  return start;
}

// -------------------------------------------------------------- updating

/**
 * Adds `delta` to the refcount of every host cluster [offset, offset + bytes)
 * touches (QEMU's update_refcount). Increments allocate missing refcount
 * blocks (and grow the table) as needed; a decrement below 0 or an increment
 * past refcount_bits marks the image corrupt / fails.
 */
export async function updateRefcount(s: Qcow2State, offset: number, bytes: number, delta: number, type: Qcow2DiscardType = 'never'): Promise<void> {
  if (bytes <= 0 || delta === 0) return;
  const pass = delta < 0 && passesDiscard(s, type);
  const per = refblockEntries(s);
  const bits = s.refcountBits;
  const max = refcountMax(s);
  const first = Math.floor(offset / s.clusterSize);
  const last = Math.floor((offset + bytes - 1) / s.clusterSize);
  for (let c = first; c <= last; ) {
    const i = Math.floor(c / per);
    // QEMU's update_refcount goes through alloc_refcount_block for each block it changes: its events
    // (refblock_alloc, then refblock_load for a block that exists, cached or not) come before any change.
    // A lookup (getRefcount) raises neither, as QEMU's qcow2_get_refcount.
    await bdrvDebugEvent(s.file, 'refblock_alloc');
    let table = await loadRefcountTable(s);
    if (i >= table.length || table[i] === 0) {
      if (delta < 0) throw await markCorrupt(s, `refcount of cluster ${hex(c * s.clusterSize)} would drop below 0 (no refcount block)`);
      await allocRefblock(s, i);
      table = await loadRefcountTable(s);
    }
    await bdrvDebugEvent(s.file, 'refblock_load');
    const e = await loadRefblock(s, table[i]!, i);
    const end = Math.min(last + 1, (i + 1) * per);
    for (; c < end; c++) {
      const k = c - i * per;
      const v = getRefcountEntry(e.data, bits, k) + delta;
      if (v < 0) throw await markCorrupt(s, `refcount of cluster ${hex(c * s.clusterSize)} would drop below 0`);
      if (v > max) throw new BlockError('EINVAL', `${s.image}: refcount of cluster ${hex(c * s.clusterSize)} would exceed ${max} (refcount_bits ${bits})`);
      setRefcountEntry(e.data, bits, k, v);
      if (v === 0) {
        if (c < s.rw.freeClusterIndex) s.rw.freeClusterIndex = c;
        if (s.rw.freeByteOffset && Math.floor(s.rw.freeByteOffset / s.clusterSize) === c) s.rw.freeByteOffset = 0;
        if (pass) queueDiscard(s, c * s.clusterSize, s.clusterSize);
      }
    }
    e.dirty = true;
  }
  if (!s.rw.cacheDiscards) await processDiscards(s);
}

/** Whether clusters freed for `type` reach the file as discards (QEMU's discard_passthrough). */
export function passesDiscard(s: Qcow2State, type: Qcow2DiscardType): boolean {
  switch (type) {
    case 'never':
      return false;
    case 'always':
      return true;
    case 'request':
      return s.passDiscard.request ?? s.nodeUnmap();
    default:
      return s.passDiscard[type];
  }
}

/** Adds a freed host range to the discard queue, merged with the runs it touches. */
function queueDiscard(s: Qcow2State, offset: number, bytes: number): void {
  const q = s.rw.discards;
  let start = offset;
  let end = offset + bytes;
  for (let i = q.length - 1; i >= 0; i--) {
    const d = q[i]!;
    if (d.offset > end || d.offset + d.bytes < start) continue;
    start = Math.min(start, d.offset);
    end = Math.max(end, d.offset + d.bytes);
    q.splice(i, 1);
  }
  q.push({ offset: start, bytes: end - start });
}

/** Passes the queued ranges down as discards; a discard is a hint, so its failure is ignored (as QEMU). */
export async function processDiscards(s: Qcow2State): Promise<void> {
  const q = s.rw.discards;
  if (!q.length) return;
  s.rw.discards = [];
  for (const d of q) {
    const end = Math.min(d.offset + d.bytes, s.file.totalBytes);
    if (end <= d.offset) continue;
    try {
      await bdrvPdiscard(s.file, d.offset, end - d.offset);
    } catch {
      // The clusters are free whether or not the file dropped their data.
    }
  }
}

/**
 * Makes sure refcount blocks exist for clusters [c, c + n); allocates the
 * first missing one and returns its table index (the caller's choice of free
 * clusters may be stale then), or -1 when none was missing.
 */
async function ensureRefblocks(s: Qcow2State, c: number, n: number): Promise<number> {
  const per = refblockEntries(s);
  for (let i = Math.floor(c / per); i <= Math.floor((c + n - 1) / per); i++) {
    const table = await loadRefcountTable(s);
    if (i >= table.length || table[i] === 0) {
      await allocRefblock(s, i);
      return i;
    }
  }
  return -1;
}

/** `n` contiguous free host clusters with refcount 1; returns the first one's offset. */
export async function allocateClusters(s: Qcow2State, n: number): Promise<number> {
  if (!Number.isSafeInteger(n) || n < 1) throw new BlockError('EINVAL', `${s.image}: cannot allocate ${n} clusters`);
  const per = refblockEntries(s);
  // Clusters still queued for a discard must not be handed out (and then lose their new data).
  await processDiscards(s);
  for (;;) {
    await bdrvDebugEvent(s.file, 'cluster_alloc');
    const c = await findFreeRun(s, n);
    // As QEMU's alloc_clusters_noref, the hint moves past the run before its refcounts are set, so a
    // refcount block the run needs lands after the run (and describes itself when it falls in its own range).
    s.rw.freeClusterIndex = c + n;
    const made = await ensureRefblocks(s, c, n);
    if (made >= 0) {
      // As QEMU's update_refcount after a new refcount block, the search restarts at the run's start:
      // the run is taken again when the block landed elsewhere, so no hole is left before the block (121).
      s.rw.freeClusterIndex = Math.min(s.rw.freeClusterIndex, c);
      continue;
    }
    await updateRefcount(s, c * s.clusterSize, n * s.clusterSize, 1);
    s.rw.freeClusterIndex = c + n;
    return c * s.clusterSize;
  }
}

/**
 * `size` bytes (<= one cluster) for a compressed cluster, packed after the
 * previous one where it fits (QEMU's qcow2_alloc_bytes). Each host cluster
 * the range touches gets one more reference. Returns the byte offset.
 */
export async function allocateBytes(s: Qcow2State, size: number): Promise<number> {
  const cs = s.clusterSize;
  if (size <= 0 || size > cs) throw new BlockError('EINVAL', `${s.image}: cannot allocate ${size} bytes for a compressed cluster`);
  await bdrvDebugEvent(s.file, 'cluster_alloc_bytes');
  for (;;) {
    let offset = s.rw.freeByteOffset;
    if (offset && (await getRefcount(s, Math.floor(offset / cs))) >= refcountMax(s)) offset = 0;
    let freeInCluster = offset ? cs - (offset % cs) : 0;
    if (!offset || freeInCluster < size) {
      // A fresh cluster; when it directly follows the partly used one the data may straddle both.
      const c = await findFreeRun(s, 1);
      if ((await ensureRefblocks(s, c, 1)) >= 0) continue;
      if (!offset || Math.ceil(offset / cs) !== c) {
        offset = c * cs;
        freeInCluster = cs;
      } else {
        freeInCluster += cs;
      }
      if (freeInCluster < size) continue;
      s.rw.freeClusterIndex = Math.max(s.rw.freeClusterIndex, c + 1);
    }
    await updateRefcount(s, offset, size, 1);
    s.rw.freeByteOffset = (offset + size) % cs === 0 ? 0 : offset + size;
    return offset;
  }
}

/** Queues a decrement for clusters a not-yet-stable table stopped referencing (see the file comment). */
export function freeClustersDeferred(s: Qcow2State, offset: number, bytes: number, l2Table = false, type: Qcow2DiscardType = 'other'): void {
  if (bytes > 0) s.rw.deferredFrees.push({ offset, bytes, l2Table, type });
}

/**
 * Whether a queued decrement would free a host cluster (its refcount is 1):
 * QEMU frees at once, so its next allocation may reuse the cluster (271).
 */
export async function deferredFreesRelease(s: Qcow2State): Promise<boolean> {
  const cs = s.clusterSize;
  // Several queued decrements may hit one cluster (compressed clusters share host clusters).
  const pending = new Map<number, number>();
  for (const f of s.rw.deferredFrees) {
    for (let c = Math.floor(f.offset / cs); c * cs < f.offset + f.bytes; c++) pending.set(c, (pending.get(c) ?? 0) + 1);
  }
  for (const [c, n] of pending) if ((await getRefcount(s, c)) <= n) return true;
  return false;
}

/** Performs the queued decrements; the caller has made the tables that dropped them stable. */
export async function applyDeferredFrees(s: Qcow2State): Promise<void> {
  const list = s.rw.deferredFrees;
  s.rw.deferredFrees = [];
  const outer = s.rw.cacheDiscards;
  s.rw.cacheDiscards = true;
  try {
    for (const f of list) {
      await bdrvDebugEvent(s.file, 'cluster_free');
      await updateRefcount(s, f.offset, f.bytes, -1, f.type);
      if (f.l2Table && (await getRefcount(s, Math.floor(f.offset / s.clusterSize))) === 0) {
        s.l2Cache.invalidate(f.offset, s.clusterSize);
        removeMetadata(s, f.offset, s.clusterSize);
      }
    }
  } catch (e) {
    s.rw.discards = [];
    throw e;
  } finally {
    s.rw.cacheDiscards = outer;
  }
  if (!outer) await processDiscards(s);
}

// ------------------------------------------------- refcount block allocation

async function writeReftableEntry(s: Qcow2State, index: number, offset: number): Promise<void> {
  const b = new Uint8Array(8);
  putReftableEntry(b, 0, offset);
  await preWriteOverlapCheck(s, QCOW2_OL_REFCOUNT_TABLE, s.header.refcountTableOffset + index * 8, 8);
  await bdrvDebugEvent(s.file, 'refblock_alloc_hookup');
  await bdrvPwrite(s.file, s.header.refcountTableOffset + index * 8, 8, b);
  s.rw.refcountsUnsynced = true;
}

/** Gives refcount table entry `index` a (zeroed) refcount block (QEMU's alloc_refcount_block). */
async function allocRefblock(s: Qcow2State, index: number): Promise<void> {
  await bdrvDebugEvent(s.file, 'refblock_alloc');
  const table = await loadRefcountTable(s);
  if (index >= table.length) return growRefcountTable(s, index);
  const per = refblockEntries(s);
  const cs = s.clusterSize;
  const b = await findFreeRun(s, 1);
  const block = allocBuffer(cs);
  try {
    block.fill(0);
    if (Math.floor(b / per) === index) {
      // Self-describing: the block holds its own refcount.
      setRefcountEntry(block, s.refcountBits, b - index * per, 1);
      await preWriteOverlapCheck(s, QCOW2_OL_REFCOUNT_BLOCK, b * cs, cs);
      await bdrvDebugEvent(s.file, 'refblock_alloc_write');
      await bdrvPwrite(s.file, b * cs, cs, block);
      await syncFile(s);
      await writeReftableEntry(s, index, b * cs);
      table[index] = b * cs;
      cacheNewRefblock(s, b * cs, block);
      addMetadata(s, b * cs, cs, QCOW2_OL_REFCOUNT_BLOCK);
      s.rw.freeClusterIndex = Math.max(s.rw.freeClusterIndex, b + 1);
      return;
    }
    const off = await allocateClusters(s, 1);
    // That allocation may have made this block already, or grown (replaced) the table: look again.
    const now = await loadRefcountTable(s);
    if (now[index] !== 0) {
      // Allocating our own block's refcount already created this one.
      await updateRefcount(s, off, cs, -1);
      return;
    }
    await preWriteOverlapCheck(s, QCOW2_OL_REFCOUNT_BLOCK, off, cs);
    await bdrvDebugEvent(s.file, 'refblock_alloc_write');
    await bdrvPwrite(s.file, off, cs, block);
    // The block's own refcount and contents must be stable before the table points at it.
    await flushRefcounts(s);
    await syncFile(s);
    await writeReftableEntry(s, index, off);
    now[index] = off;
    cacheNewRefblock(s, off, block);
    addMetadata(s, off, cs, QCOW2_OL_REFCOUNT_BLOCK);
  } finally {
    freeBuffer(block);
  }
}

/**
 * Grows the refcount table so entry `need` exists (QEMU's refcount-area
 * growth): new refcount blocks for every uncovered region up to `need` and
 * the new table are placed right after the area the old table covers, and
 * describe themselves.
 */
async function growRefcountTable(s: Qcow2State, need: number): Promise<void> {
  const table = await loadRefcountTable(s);
  const per = refblockEntries(s);
  const cs = s.clusterSize;
  const oldLen = table.length;
  const areaStart = oldLen * per;
  let nbBlocks = need - oldLen + 1;
  let tableClusters = 0;
  for (;;) {
    const entries = Math.max(need + 1, oldLen + nbBlocks, Math.ceil((oldLen * 3) / 2));
    tableClusters = Math.ceil((entries * 8) / cs);
    const areaEnd = areaStart + nbBlocks + tableClusters;
    const want = Math.max(need, Math.floor((areaEnd - 1) / per)) - oldLen + 1;
    if (want <= nbBlocks) break;
    nbBlocks = want;
  }
  if (tableClusters * cs > QCOW_MAX_REFTABLE_SIZE) {
    throw new BlockError('EFBIG', `${s.image}: refcount table would exceed ${QCOW_MAX_REFTABLE_SIZE} bytes (needs ${tableClusters} clusters)`);
  }
  const newEntries = (tableClusters * cs) / 8;
  const areaEnd = areaStart + nbBlocks + tableClusters;

  // New blocks: each sets refcount 1 for the area clusters it covers.
  const blocks = allocBuffer(nbBlocks * cs);
  const newTable = allocBuffer(tableClusters * cs);
  try {
    blocks.fill(0);
    for (let c = areaStart; c < areaEnd; c++) {
      const r = Math.floor(c / per) - oldLen;
      setRefcountEntry(blocks.subarray(r * cs, (r + 1) * cs), s.refcountBits, c % per, 1);
    }
    newTable.fill(0);
    for (let i = 0; i < oldLen; i++) putReftableEntry(newTable, i, table[i]!);
    for (let r = 0; r < nbBlocks; r++) putReftableEntry(newTable, oldLen + r, (areaStart + r) * cs);
    await preWriteOverlapCheck(s, QCOW2_OL_REFCOUNT_BLOCK, areaStart * cs, (nbBlocks + tableClusters) * cs);
    await bdrvDebugEvent(s.file, 'refblock_alloc_write_blocks');
    await bdrvPwrite(s.file, areaStart * cs, nbBlocks * cs, blocks);
    await bdrvDebugEvent(s.file, 'refblock_alloc_write_table');
    await bdrvPwrite(s.file, (areaStart + nbBlocks) * cs, tableClusters * cs, newTable);
    await flushRefcounts(s);
    await syncFile(s);

    // Point the header at the new table (refcount_table_offset and _clusters are adjacent: one write).
    await bdrvDebugEvent(s.file, 'refblock_alloc_switch_table');
    await writeHeaderFields(s, ['refcountTableOffset', 'refcountTableClusters'], {
      ...s.header,
      refcountTableOffset: (areaStart + nbBlocks) * cs,
      refcountTableClusters: tableClusters,
    });
    await syncFile(s);

    const oldOffset = s.header.refcountTableOffset;
    const oldClusters = s.header.refcountTableClusters;
    s.header.refcountTableOffset = (areaStart + nbBlocks) * cs;
    s.header.refcountTableClusters = tableClusters;
    const t = new Float64Array(newEntries);
    t.set(table);
    for (let r = 0; r < nbBlocks; r++) {
      t[oldLen + r] = (areaStart + r) * cs;
      cacheNewRefblock(s, (areaStart + r) * cs, blocks.subarray(r * cs, (r + 1) * cs));
    }
    s.refcountTable = t;
    invalidateMetadata(s);
    await updateRefcount(s, oldOffset, oldClusters * cs, -1);
    if (s.rw.freeClusterIndex >= areaStart && s.rw.freeClusterIndex < areaEnd) s.rw.freeClusterIndex = areaEnd;
  } finally {
    freeBuffer(blocks);
    freeBuffer(newTable);
  }
}
