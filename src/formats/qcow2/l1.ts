/**
 * The active L1 table on the write path, and the ordered metadata flush.
 *
 * L1 entries change in memory (`s.l1Table`) and are written by
 * flushMetadata after the L2 tables they point at; getL2ForWrite allocates
 * an L2 table on demand (zeroed, or a copy of a shared one: QEMU's
 * l2_allocate) and growL1 moves the table when it must grow
 * (qcow2_grow_l1_table).
 *
 * flushMetadata is the one place that orders metadata writes (QEMU's cache
 * dependencies):
 *   1. dirty refcount blocks, then flush   (refcounts before the tables using them;
 *                                          also makes earlier data writes stable)
 *   2. dirty L2 slices, then flush         (L2 before L1)
 *   3. dirty L1 entries, then flush
 *   4. deferred frees: refcounts of clusters the tables above stopped using
 *      drop only now, then those refcount blocks, then flush
 *   5. lazy refcounts: the dirty bit is cleared last
 * A crash anywhere leaves tables that point only at clusters with a refcount,
 * so at worst clusters leak.
 *
 * With lazy refcounts and the dirty bit set, a plain flush (`keepLazy`: the
 * driver's flush, a FUA write) writes only the tables, as QEMU's
 * qcow2_write_caches: refcounts stay in the cache and the dirty bit on disk
 * until the node closes or goes read-only, and a crash in between leaves
 * refcounts that the next read/write open rebuilds.
 */
import { QCOW2_OL_ACTIVE_L1, QCOW2_OL_ACTIVE_L2 } from './overlap.js';
import { BlockError, describeCode, hex } from '../../block/errors.js';
import { allocBuffer, freeBuffer } from '../../block/buffers.js';
import { bdrvFlush, bdrvPread, bdrvPwrite } from '../../block/io.js';
import { putL1Entry } from './l2-entry.js';
import { QCOW_MAX_L1_SIZE } from './validate.js';
import {
  allocateClusters,
  applyDeferredFrees,
  flushRefcounts,
  freeClustersDeferred,
  refcountsPending,
  updateRefcount,
} from './refcount.js';
import { addMetadata, removeMetadata, clearDirtyBit, invalidateMetadata, markCorrupt, preWriteOverlapCheck, syncFile, writeHeaderFields } from './metadata.js';
import { l1Copied, l1Offset, type Qcow2State } from './state.js';
import { bdrvDebugEvent } from '../../block/debug-event.js';

/** Sets L1 entry `index` to `offset` (with COPIED) in memory and marks it dirty. */
export function setL1Entry(s: Qcow2State, index: number, offset: number, copied: boolean): void {
  putL1Entry(s.l1Table, index, offset, copied);
  const rw = s.rw;
  if (rw.l1DirtyFrom >= rw.l1DirtyTo) {
    rw.l1DirtyFrom = index;
    rw.l1DirtyTo = index + 1;
  } else {
    rw.l1DirtyFrom = Math.min(rw.l1DirtyFrom, index);
    rw.l1DirtyTo = Math.max(rw.l1DirtyTo, index + 1);
  }
}

function l2Dirty(s: Qcow2State): boolean {
  return s.l2Cache.hasDirty();
}

/** Writes the dirty L2 slices after the refcounts they depend on (lazily: without them). */
async function flushL2(s: Qcow2State, lazy = false): Promise<void> {
  if (!l2Dirty(s)) return;
  if (!lazy) await flushRefcounts(s);
  await syncAll(s);
  await s.l2Cache.flushDirty(async (offset, data) => {
    await preWriteOverlapCheck(s, QCOW2_OL_ACTIVE_L2, offset, data.length);
    await bdrvDebugEvent(s.file, 'l2_update');
    await bdrvPwrite(s.file, offset, data.length, data);
  });
  await syncFile(s);
}

/** Flushes the image file and the external data file (data before the tables mapping it). */
async function syncAll(s: Qcow2State): Promise<void> {
  if (s.dataFile !== s.file) await bdrvFlush(s.dataFile);
  await syncFile(s);
}

async function writeL1Dirty(s: Qcow2State): Promise<void> {
  const rw = s.rw;
  if (rw.l1DirtyFrom >= rw.l1DirtyTo) return;
  // Whole 512-byte sectors (64 entries), as QEMU's qcow2_write_l1_entry, clipped to the table.
  const from = rw.l1DirtyFrom & ~63;
  const to = Math.min(s.l1Size, (rw.l1DirtyTo + 63) & ~63);
  await preWriteOverlapCheck(s, QCOW2_OL_ACTIVE_L1, s.header.l1TableOffset + from * 8, (to - from) * 8);
  await bdrvDebugEvent(s.file, 'l1_update');
  await bdrvPwrite(s.file, s.header.l1TableOffset + from * 8, (to - from) * 8, s.l1Table.subarray(from * 8, to * 8));
  rw.l1DirtyFrom = rw.l1DirtyTo = 0;
  await syncFile(s);
}

/** Writes every cached metadata change in crash-safe order (see the file comment). */
export async function flushMetadata(s: Qcow2State, opts: { keepLazy?: boolean } = {}): Promise<void> {
  const rw = s.rw;
  if (opts.keepLazy && rw.dirtyBitSet) {
    await flushL2(s, true);
    await writeL1Dirty(s);
    return;
  }
  const l1 = rw.l1DirtyFrom < rw.l1DirtyTo;
  if (l2Dirty(s) || l1 || rw.deferredFrees.length || refcountsPending(s)) {
    await flushRefcounts(s);
    await syncAll(s);
    await flushL2(s);
    await writeL1Dirty(s);
    if (rw.deferredFrees.length) {
      await applyDeferredFrees(s);
      await flushRefcounts(s);
    }
  }
  if (rw.dirtyBitSet) await clearDirtyBit(s);
}

/**
 * The metadata flush of a close (QEMU's qcow2_inactivate): first the tables
 * (dirty L2 slices or L1 entries after the refcounts they need, a flush of
 * the file even when nothing was dirty), then the refcount blocks (the deferred
 * frees applied only when the tables are stable). A failure of either is
 * reported with QEMU's words and the other still tried; the dirty bit is
 * cleared only when both succeeded. Returns whether they did.
 */
export async function flushForClose(s: Qcow2State, report: (line: string) => void): Promise<boolean> {
  const rw = s.rw;
  let tables = true;
  let refcounts = true;
  try {
    // The refcounts go first only where a table depends on them (QEMU's cache dependency): a refcount
    // block that cannot be written is reported once, as the refcount cache's failure.
    await flushL2(s);
    if (rw.l1DirtyFrom < rw.l1DirtyTo) {
      await flushRefcounts(s);
      await syncAll(s);
      await writeL1Dirty(s);
    }
    await syncFile(s);
  } catch (e) {
    tables = false;
    report(`Failed to flush the L2 table cache: ${errorText(e)}`);
  }
  try {
    if (tables && rw.deferredFrees.length) await applyDeferredFrees(s);
    await flushRefcounts(s);
    await syncFile(s);
  } catch (e) {
    refcounts = false;
    report(`Failed to flush the refcount block cache: ${errorText(e)}`);
  }
  if (tables && refcounts && rw.dirtyBitSet) await clearDirtyBit(s);
  return tables && refcounts;
}

function errorText(e: unknown): string {
  return e instanceof BlockError ? describeCode(e.code) : e instanceof Error ? e.message : String(e);
}

/**
 * Host offset of the L2 table for L1 entry `l1Index`, allocated (or copied
 * from a shared table) so it may be modified: its L1 entry has COPIED.
 */
export async function getL2ForWrite(s: Qcow2State, l1Index: number): Promise<number> {
  if (l1Index >= s.l1Size) await growL1(s, l1Index + 1, false);
  const old = l1Offset(s, l1Index);
  if (old && l1Copied(s, l1Index)) {
    if (old % s.clusterSize !== 0) {
      throw await markCorrupt(s, `L2 table offset ${hex(old)} unaligned (L1 index ${hex(l1Index)})`);
    }
    // The table will be written back later (at a flush or eviction): check now, once per table, that
    // it is not other metadata, so the write that would change it fails at once (and reports it)
    // rather than report success and lose its mapping when the write-back is refused.
    if (!s.rw.l2InPlaceChecked.has(old)) {
      await preWriteOverlapCheck(s, QCOW2_OL_ACTIVE_L2, old, s.clusterSize);
      s.rw.l2InPlaceChecked.add(old);
    }
    return old;
  }
  const cs = s.clusterSize;
  const table = await allocateClusters(s, 1);
  // QEMU's l2_allocate: the table's refcount is made stable first (lazy refcounts or not), then the new
  // table is written with the other dirty L2 slices and made stable, then its L1 entry is written and
  // made stable, all before the data the request writes next. If any of it fails the L1 entry keeps its
  // old value and the new cluster is freed at once (nothing references it), so check finds no leak.
  try {
    await flushRefcounts(s);
    await syncFile(s);
    const buf = allocBuffer(cs);
    try {
      if (old) {
        if (old % cs !== 0) throw await markCorrupt(s, `L2 table offset ${hex(old)} unaligned (L1 index ${hex(l1Index)})`);
        // Copy-on-write of a table shared with a snapshot: its cached slices may be newer than the disk.
        await bdrvDebugEvent(s.file, 'l2_alloc_cow_read');
        await bdrvPread(s.file, old, cs, buf);
        await s.l2Cache.copyCached(old, buf);
      } else {
        buf.fill(0);
      }
      await bdrvDebugEvent(s.file, 'l2_alloc_write');
      await flushL2(s);
      await preWriteOverlapCheck(s, QCOW2_OL_ACTIVE_L2, table, cs);
      await bdrvDebugEvent(s.file, 'l2_update');
      await bdrvPwrite(s.file, table, cs, buf);
      await syncFile(s);
      // The write that follows finds the new table cached, as QEMU's: no l2_load for a table just made.
      s.l2Cache.seed(table, buf);
    } finally {
      freeBuffer(buf);
    }
    addMetadata(s, table, cs, QCOW2_OL_ACTIVE_L2);
    setL1Entry(s, l1Index, table, true);
    await writeL1Dirty(s);
  } catch (e) {
    // The entry had no COPIED (else no table was allocated); a failed L1 write leaves its sector dirty.
    if (l1Offset(s, l1Index) === table) putL1Entry(s.l1Table, l1Index, old, false);
    s.l2Cache.invalidate(table, cs);
    // An image found corrupt on the way (the new table overlapping metadata, say) is left as it is.
    if (!s.rw.unusable) {
      removeMetadata(s, table, cs);
      await updateRefcount(s, table, cs, -1, 'always').catch(() => {});
    }
    throw e;
  }
  if (old) freeClustersDeferred(s, old, cs, true);
  return table;
}

/**
 * Grows the active L1 table to at least `minSize` entries (exactly with
 * `exact`, else by half again as QEMU does): the new table is written
 * elsewhere, refcounted and flushed, then the header points at it, then the
 * old one is freed.
 */
export async function growL1(s: Qcow2State, minSize: number, exact: boolean): Promise<void> {
  if (minSize <= s.l1Size) return;
  let size = minSize;
  if (!exact) {
    size = Math.max(1, s.l1Size);
    while (size < minSize) size = Math.floor((size * 3 + 1) / 2);
  }
  if (size > QCOW_MAX_L1_SIZE / 8) throw new BlockError('EFBIG', `${s.image}: Active L1 table too large (${size} entries, at most ${QCOW_MAX_L1_SIZE / 8})`);
  const cs = s.clusterSize;
  // The new table carries the in-memory entries: the L2 tables they name must be on disk first.
  await flushL2(s);
  const bytes = Math.ceil((size * 8) / cs) * cs;
  await bdrvDebugEvent(s.file, 'l1_grow_alloc_table');
  const offset = await allocateClusters(s, bytes / cs);
  const table = new Uint8Array(bytes);
  table.set(s.l1Table);
  // Only the entries are written (as QEMU): a table ending mid-cluster at the end of the file leaves it short.
  await preWriteOverlapCheck(s, 0, offset, size * 8);
  await bdrvDebugEvent(s.file, 'l1_grow_write_table');
  await bdrvPwrite(s.file, offset, size * 8, table);
  await flushRefcounts(s);
  await syncFile(s);
  // l1_size and l1_table_offset are adjacent: one write switches to the new table.
  await bdrvDebugEvent(s.file, 'l1_grow_activate_table');
  await writeHeaderFields(s, ['l1Size', 'l1TableOffset'], { ...s.header, l1Size: size, l1TableOffset: offset });
  await syncFile(s);
  const oldOffset = s.header.l1TableOffset;
  const oldSize = s.l1Size;
  s.l1Table = table.subarray(0, size * 8);
  s.l1Size = size;
  s.header.l1Size = size;
  s.header.l1TableOffset = offset;
  s.rw.l1DirtyFrom = s.rw.l1DirtyTo = 0;
  invalidateMetadata(s);
  if (oldSize > 0) await updateRefcount(s, oldOffset, oldSize * 8, -1);
}
