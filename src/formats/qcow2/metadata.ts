/**
 * Small pieces every qcow2 write module shares: the request lock, file
 * flushes, header field updates, the corrupt and dirty bits, and the
 * metadata overlap check (QEMU's qcow2_pre_write_overlap_check).
 *
 * Overlap check: before guest data (or a compressed cluster) is written to the
 * image file, its host clusters are looked up in a set of every cluster that
 * holds metadata (header, active L1, refcount table and blocks, active L2
 * tables, snapshot table, inactive L1 tables). The set is built once from the
 * tables (O(L1 + refcount table)) and kept up to date as metadata clusters
 * are allocated and freed, so a check costs one lookup per cluster written.
 * A hit means the refcounts say "free" for a cluster the tables use: the
 * image is marked corrupt and the write fails, as QEMU does.
 */
import { BlockError, hex } from '../../block/errors.js';
import { bdrvFlush, bdrvPwrite } from '../../block/io.js';
import { notifyRequestWaiting } from '../../block/debug-event.js';
import { encodeHeaderFields, QCOW2_INCOMPAT_CORRUPT, QCOW2_INCOMPAT_DIRTY, type HeaderField, type Qcow2Header } from './header.js';
import { serializeSnapshotTable } from './snapshot-table.js';
import { l1Offset, type MetaClusters, type Qcow2State } from './state.js';
import {
  checkMetadataOverlap,
  ensureRefcountTable,
  overlapCheckOf,
  overlapName,
  QCOW2_OL_ACTIVE_L1,
  QCOW2_OL_ACTIVE_L2,
  QCOW2_OL_BITMAP_DIRECTORY,
  QCOW2_OL_INACTIVE_L1,
  QCOW2_OL_INACTIVE_L2,
  QCOW2_OL_MAIN_HEADER,
  QCOW2_OL_REFCOUNT_BLOCK,
  QCOW2_OL_REFCOUNT_TABLE,
  QCOW2_OL_SNAPSHOT_TABLE,
} from './overlap.js';

/**
 * Runs `fn` after every earlier modifying request of the node finished (QEMU's
 * s->lock), allocating writes whose data is still in flight included: their
 * L2 entries are in place before `fn` runs (alloc-in-flight.ts).
 */
export function withLock<T>(s: Qcow2State, fn: () => Promise<T>): Promise<T> {
  return withLockInflight(s, () => (s.rw.allocs.size ? drainAllocs(s).then(fn) : fn()));
}

/**
 * The lock alone: `fn` runs while other requests' fresh clusters may still be
 * in flight (their L2 entries not yet set). Only for alloc-in-flight.ts, whose
 * requests touch nothing but their own clusters' entries.
 */
export function withLockInflight<T>(s: Qcow2State, fn: () => Promise<T>): Promise<T> {
  const prev = s.rw.lock;
  let release!: () => void;
  s.rw.lock = new Promise<void>((r) => (release = r));
  // A request that queues behind another cannot go on by itself (an aio command that started it returns).
  if (s.rw.lockQueued++ > 0) notifyRequestWaiting();
  return prev.then(fn).finally(() => {
    s.rw.lockQueued--;
    release();
  });
}

/** Waits until no allocating write is in flight (called under the lock, so no new one starts). */
export async function drainAllocs(s: Qcow2State): Promise<void> {
  // Waiting for another request's data (held at a breakpoint, say): the aio command that started this one returns.
  if (s.rw.allocs.size) notifyRequestWaiting();
  while (s.rw.allocs.size) await Promise.all([...s.rw.allocs].map((a) => a.done));
}

/** Makes every write to the image file so far stable (bdrv_flush of bs->file). */
export async function syncFile(s: Qcow2State): Promise<void> {
  await bdrvFlush(s.file);
}

/** Fails every request after this open marked the image corrupt, as QEMU's node without a driver ("No medium found"). */
export function checkUsable(s: Qcow2State): void {
  if (s.rw.unusable) throw new BlockError('ENOMEDIUM', `${s.image}: No medium found (the image was marked corrupt)`);
}

/** Fails fast once the image was found inconsistent. */
export function checkNotCorrupt(s: Qcow2State): void {
  checkUsable(s);
  if (s.rw.corrupt) throw new BlockError('EIO', `${s.image}: image marked corrupt: writes are refused until it is repaired (qemu-img check -r all)`);
}

/**
 * QEMU's qcow2_signal_corruption with fatal=true: sets the corrupt bit (v3),
 * stops every later write and returns the error to throw.
 */
export async function markCorrupt(s: Qcow2State, what: string): Promise<BlockError> {
  const first = !s.rw.corrupt;
  s.rw.corrupt = true;
  s.rw.unusable = true;
  // QEMU's notice on stderr, once per open image (qcow2_signal_corruption).
  if (first) s.warn?.(`qcow2: Marking image as corrupt: ${what}; further corruption events will be suppressed`);
  if (first && s.header.version === 3) {
    s.header.incompatibleFeatures |= QCOW2_INCOMPAT_CORRUPT;
    try {
      await writeIncompatibleFeatures(s);
      await syncFile(s);
    } catch {
      // The write that found the problem fails anyway; a failed marker write changes nothing.
    }
  }
  return new BlockError('EIO', `${s.image}: Marking image as corrupt: ${what}; further writes are refused`);
}

/**
 * QEMU's qcow2_signal_corruption(fatal=true) for a problem a request found:
 * fatal (markCorrupt) when the image is writable; on a read-only image the
 * notice says "Image is corrupt" once and the request fails with EIO.
 */
export async function signalCorruption(s: Qcow2State, what: string): Promise<BlockError> {
  if (!s.file.readOnly) return markCorrupt(s, what);
  if (!s.rw.signaledCorruption) {
    s.rw.signaledCorruption = true;
    s.warn?.(`qcow2: Image is corrupt: ${what}; further non-fatal corruption events will be suppressed`);
  }
  return new BlockError('EIO', `${s.image}: image is corrupt: ${what}`);
}

/** printf's %#x: "0" for zero, else 0x and the hex digits (QEMU's corruption notices). */
export function altHex(n: number): string {
  return n === 0 ? '0' : hex(n);
}

/**
 * Writes header fields `fields` as `h` has them (default: the in-memory
 * header) in one request; header.ts encodes them. The caller flushes and,
 * when `h` is not `s.header`, adopts the new values once the write is stable.
 */
export async function writeHeaderFields(s: Qcow2State, fields: readonly HeaderField[], h: Qcow2Header = s.header): Promise<void> {
  const { offset, bytes } = encodeHeaderFields(h, fields);
  await bdrvPwrite(s.file, offset, bytes.length, bytes);
}

/** Rewrites incompatible_features from the in-memory header. */
export async function writeIncompatibleFeatures(s: Qcow2State): Promise<void> {
  await writeHeaderFields(s, ['incompatibleFeatures']);
}

/** Rewrites autoclear_features from the in-memory header. */
export async function writeAutoclearFeatures(s: Qcow2State): Promise<void> {
  await writeHeaderFields(s, ['autoclearFeatures']);
}

/** Sets the dirty bit on disk (lazy refcounts: before the first metadata write). */
export async function setDirtyBit(s: Qcow2State): Promise<void> {
  if (s.rw.dirtyBitSet || s.header.version !== 3) return;
  s.header.incompatibleFeatures |= QCOW2_INCOMPAT_DIRTY;
  await writeIncompatibleFeatures(s);
  await syncFile(s);
  s.rw.dirtyBitSet = true;
}

/** Clears the dirty bit once every metadata write is stable. */
export async function clearDirtyBit(s: Qcow2State): Promise<void> {
  if (!(s.header.incompatibleFeatures & QCOW2_INCOMPAT_DIRTY)) return;
  s.header.incompatibleFeatures &= ~QCOW2_INCOMPAT_DIRTY;
  await writeIncompatibleFeatures(s);
  await syncFile(s);
  s.rw.dirtyBitSet = false;
}

// ------------------------------------------------------------------ overlap

const BIG_RANGE_CLUSTERS = 4096;

function addRange(m: MetaClusters, s: Qcow2State, offset: number, bytes: number, kind: number): void {
  // A corrupt entry may point past 2^53, where cluster numbers stop being exact (the loop would never end);
  // no write reaches there, so there is nothing to guard.
  if (bytes <= 0 || !Number.isSafeInteger(offset + bytes)) return;
  const first = Math.floor(offset / s.clusterSize);
  const last = Math.floor((offset + bytes - 1) / s.clusterSize);
  if (last - first >= BIG_RANGE_CLUSTERS) {
    m.ranges.push({ first, last, kind });
    return;
  }
  for (let c = first; c <= last; c++) m.clusters.set(c, (m.clusters.get(c) ?? 0) | kind);
}

/**
 * Every cluster of metadata with its kinds, except the two kinds it does not
 * follow (the bitmap directory and inactive L2 tables, checked on each
 * write). A superset is harmless: a write on a listed cluster gets the full
 * check of the listed kinds, which gives the exact answer.
 */
function buildMetaClusters(s: Qcow2State): MetaClusters {
  const m: MetaClusters = { clusters: new Map([[0, QCOW2_OL_MAIN_HEADER]]), ranges: [] };
  const h = s.header;
  const cs = s.clusterSize;
  addRange(m, s, h.l1TableOffset, s.l1Size * 8, QCOW2_OL_ACTIVE_L1);
  addRange(m, s, h.refcountTableOffset, h.refcountTableClusters * cs, QCOW2_OL_REFCOUNT_TABLE);
  for (const off of s.refcountTable ?? []) if (off) addRange(m, s, off, cs, QCOW2_OL_REFCOUNT_BLOCK);
  for (let i = 0; i < s.l1Size; i++) {
    const off = l1Offset(s, i);
    if (off) addRange(m, s, off, cs, QCOW2_OL_ACTIVE_L2);
  }
  if (h.nbSnapshots) addRange(m, s, h.snapshotsOffset, serializeSnapshotTable(s.snapshots).length, QCOW2_OL_SNAPSHOT_TABLE);
  for (const sn of s.snapshots) addRange(m, s, sn.l1TableOffset, sn.l1Size * 8, QCOW2_OL_INACTIVE_L1);
  return m;
}

/** Records that [offset, offset + bytes) now holds metadata of `kind` (a QCOW2_OL_* bit). */
export function addMetadata(s: Qcow2State, offset: number, bytes: number, kind: number): void {
  if (s.rw.metaClusters) addRange(s.rw.metaClusters, s, offset, bytes, kind);
}

/** Records that [offset, offset + bytes) no longer holds metadata. */
export function removeMetadata(s: Qcow2State, offset: number, bytes: number): void {
  const m = s.rw.metaClusters;
  if (!m || bytes <= 0 || !Number.isSafeInteger(offset + bytes)) return;
  const first = Math.floor(offset / s.clusterSize);
  const last = Math.floor((offset + bytes - 1) / s.clusterSize);
  m.ranges = m.ranges.filter((r) => r.first < first || r.last > last);
  if (last - first >= m.clusters.size) {
    for (const c of [...m.clusters.keys()]) if (c >= first && c <= last) m.clusters.delete(c);
  } else {
    for (let c = first; c <= last; c++) m.clusters.delete(c);
  }
}

/** Forgets the map (after the tables moved); the next check rebuilds it. */
export function invalidateMetadata(s: Qcow2State): void {
  s.rw.metaClusters = null;
  s.rw.l2InPlaceChecked.clear();
}

/** The kinds of metadata the map lists on the clusters of [offset, offset + bytes), building it first if needed. */
async function metadataKindsAt(s: Qcow2State, offset: number, bytes: number): Promise<number> {
  if (!s.rw.metaClusters) await ensureRefcountTable(s);
  const m = (s.rw.metaClusters ??= buildMetaClusters(s));
  const first = Math.floor(offset / s.clusterSize);
  const last = Math.floor((offset + bytes - 1) / s.clusterSize);
  let kinds = 0;
  // A write spans few clusters; a huge one is checked against the map's entries instead.
  if (last - first < m.clusters.size) for (let c = first; c <= last; c++) kinds |= m.clusters.get(c) ?? 0;
  else for (const [c, k] of m.clusters) if (c >= first && c <= last) kinds |= k;
  for (const r of m.ranges) if (r.first <= last && first <= r.last) kinds |= r.kind;
  return kinds;
}

/** The kinds the map does not follow: every write checks them. */
const UNTRACKED_KINDS = QCOW2_OL_BITMAP_DIRECTORY | QCOW2_OL_INACTIVE_L2;

/**
 * Refuses a data write to the image file over metadata. `node` is where the
 * write goes: writes to an external data file never overlap metadata.
 */
export async function checkDataOverlap(s: Qcow2State, offset: number, bytes: number): Promise<void> {
  if (s.dataFile !== s.file || bytes <= 0) return;
  await preWriteOverlapCheck(s, 0, offset, bytes);
}

/**
 * QEMU's qcow2_pre_write_overlap_check: refuses a write to the image file at
 * [offset, offset + bytes) that would land on metadata of a kind the
 * `overlap-check` option enables, except the kinds in `ign` (the structure
 * being written). The image is marked corrupt and the error thrown.
 */
export async function preWriteOverlapCheck(s: Qcow2State, ign: number, offset: number, bytes: number): Promise<void> {
  if (bytes <= 0 || !(overlapCheckOf(s) & ~ign)) return;
  // Only the kinds the map lists on these clusters (and the two it does not follow) can overlap:
  // the scans of the L1 and refcount tables run only when the write lands on such a cluster.
  const kinds = (await metadataKindsAt(s, offset, bytes)) | UNTRACKED_KINDS;
  const bit = await checkMetadataOverlap(s, ign | ~kinds, offset, bytes);
  if (bit) throw await markCorrupt(s, `Preventing invalid write on metadata (overlaps with ${overlapName(bit)})`);
}
