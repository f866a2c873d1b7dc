/**
 * qcow2 internal snapshots: create, apply (revert) and delete (QEMU's
 * block/qcow2-snapshot.c), with QEMU's refcount model and QEMU's layout: an
 * L2 table's refcount is the number of L1 tables naming it, a data cluster's
 * is the number of (L1 table, L2 entry) paths reaching it, and COPIED is set
 * on an L1/L2 entry exactly when that refcount is 1.
 *
 * The one pass every operation is built from is QEMU's
 * qcow2_update_snapshot_refcount (updateSnapshotRefcount below): for one L1
 * table, add -1, 0 or +1 to everything it reaches and recompute COPIED in
 * its L2 tables in place (through the L2 cache) and in the L1 table.
 *   create  a copy of the active L1 (as it is, COPIED bits included) goes to
 *           new clusters; the active tables get +1 (their L2 tables become
 *           shared, COPIED clears, the next guest write copies the L2 table);
 *           then the new snapshot table, the header switch, the old table freed.
 *   apply   the snapshot's tables +1; the snapshot's L1 overwrites the active
 *           L1 in place; the old active tables -1; then COPIED recomputed.
 *   delete  the snapshot table without it and the header switch first; then
 *           the snapshot's tables -1, its L1 freed, COPIED recomputed.
 * Cluster numbers and their order are QEMU's, so `qemu-img check` (leaks
 * after a failure included), `map` and the metadata bytes come out the same.
 *
 * Crash safety. Each step's refcounts are written before the tables naming
 * them (flushMetadata's order), and the header names a snapshot only after
 * its refcounts are stable, so a crash leaks at worst, with two kinds of
 * COPIED windows that qemu-img check reports and that are harmless:
 * "refcount 2, COPIED set" in create before the header switch (no snapshot
 * references the cluster yet), and "refcount 1, COPIED clear" after a
 * decrement in apply and delete (a write then merely copies the cluster).
 * One deviation from QEMU, for safety only: apply writes the snapshot's L1
 * entries into the active L1 with COPIED clear (QEMU writes them as last
 * read, and a COPIED bit there on a shared L2 table would let a write after a
 * crash modify the snapshot's table in place); the final COPIED pass sets the
 * same bits QEMU ends with.
 */

import { BlockError, describeCode, hex } from '../../block/errors.js';
import { bdrvDebugEvent } from '../../block/debug-event.js';
import type { BlockNode } from '../../block/node.js';
import { bdrvPdiscard, bdrvPread, bdrvPwrite } from '../../block/io.js';
import { QCOW_MAX_REFTABLE_SIZE, QCOW_MAX_SNAPSHOTS, QCOW_MAX_SNAPSHOTS_SIZE, SNAPSHOT_HEADER_SIZE } from './validate.js';
import { serializeSnapshotTable, validateSnapshotL1 as validateL1, type Qcow2Snapshot } from './snapshot-table.js';
import { allocateClusters, flushRefcounts, getRefcount, loadRefcountTable, refblockEntries, updateRefcount } from './refcount.js';
import { flushMetadata, growL1 } from './l1.js';
import { QCOW2_OL_ACTIVE_L1 } from './overlap.js';
import { checkNotCorrupt, invalidateMetadata, markCorrupt, preWriteOverlapCheck, removeMetadata, syncFile, withLock, writeHeaderFields } from './metadata.js';
import { prepareWrite, qcow2Truncate } from './write.js';
import {
  compressedAt,
  copiedAt,
  entryHi,
  entryLo,
  l1EntryCopied,
  l1EntryOffset,
  l2HostOffset,
  parseCompressedDescriptor,
  putL1Entry,
  setCopiedAt,
} from './l2-entry.js';
import type { Qcow2State } from './state.js';

/** What a new snapshot records besides its disk state (QEMU's QEMUSnapshotInfo). */
export interface NewSnapshot {
  name: string;
  vmStateSize?: number;
  dateSec?: number;
  dateNsec?: number;
  vmClockNsec?: number;
  /** undefined = not recorded (-1 on disk); qemu-img writes 0. */
  icount?: number;
}

const enc = new TextEncoder();

function fail(code: 'ENOENT' | 'EFBIG' | 'ENOTSUP' | 'EINVAL' | 'EROFS' | 'ECORRUPT', s: Qcow2State, msg: string): never {
  throw new BlockError(code, `${s.image}: ${msg}`);
}

/** Bytes QEMU's qcow2_write_snapshots writes: entries 8-aligned, the last one unpadded. */
export function snapshotTableSize(list: Qcow2Snapshot[]): number {
  let size = 0;
  for (const sn of list) {
    size = Math.ceil(size / 8) * 8;
    const extra = Math.max(24, sn.extraDataSize, 24 + sn.extraDataTail.length);
    size += SNAPSHOT_HEADER_SIZE + extra + enc.encode(sn.idStr).length + enc.encode(sn.name).length;
  }
  return size;
}

/** QEMU's find_new_snapshot_id: one more than the largest numeric id. */
export function nextSnapshotId(list: Qcow2Snapshot[]): string {
  let max = 0;
  for (const sn of list) {
    const n = Number.parseInt(sn.idStr, 10);
    if (Number.isFinite(n) && n > max) max = n;
  }
  return String(max + 1);
}

/** QEMU's find_snapshot_by_id_and_name: both must match when both are given. */
export function findSnapshot(list: Qcow2Snapshot[], id: string | undefined, name: string | undefined): number {
  return list.findIndex((sn) => (id === undefined || sn.idStr === id) && (name === undefined || sn.name === name) && (id !== undefined || name !== undefined));
}

/** QEMU's find_snapshot_by_id_or_name: by id first, then by name. */
export function findSnapshotByIdOrName(list: Qcow2Snapshot[], idOrName: string): number {
  const byId = findSnapshot(list, idOrName, undefined);
  return byId >= 0 ? byId : findSnapshot(list, undefined, idOrName);
}

function checkSupported(bs: BlockNode, s: Qcow2State, what: string): void {
  if (bs.readOnly) fail('EROFS', s, `cannot ${what} a snapshot: the image is opened read-only`);
  // QEMU refuses internal snapshots with an external data file: the data clusters have no refcounts.
  if (s.dataFile !== s.file) fail('ENOTSUP', s, `cannot ${what} a snapshot: internal snapshots are not supported with an external data file`);
  checkNotCorrupt(s);
}

/** Nothing is written from a snapshot table that was partly read as zeros past the end of the file (state.ts). */
function refuseTablePastEof(s: Qcow2State, what: string): void {
  if (s.snapshotTablePastEof) {
    fail('EINVAL', s, `cannot ${what}: the snapshot table at ${hex(s.header.snapshotsOffset)} extends beyond the end of the file (${s.file.totalBytes} bytes)`);
  }
}

// ------------------------------------------------------------ refcounts

/**
 * Offset for `bytes` of new metadata (QEMU's qcow2_alloc_clusters): whole
 * clusters with refcount 1, or, for 0 bytes, the free-cluster hint with
 * nothing allocated (an empty snapshot table's offset is that hint in QEMU).
 */
async function allocMeta(s: Qcow2State, bytes: number): Promise<number> {
  if (bytes > 0) return allocateClusters(s, Math.ceil(bytes / s.clusterSize));
  await bdrvDebugEvent(s.file, 'cluster_alloc');
  return s.rw.freeClusterIndex * s.clusterSize;
}

/**
 * QEMU's qcow2_free_clusters as the snapshot code uses it: a failure is
 * reported and the operation goes on (the clusters leak). The refcounts are
 * written at once, so a failing file says so here (iotest 217).
 */
async function freeClusters(s: Qcow2State, offset: number, bytes: number): Promise<void> {
  if (bytes <= 0) return;
  await bdrvDebugEvent(s.file, 'cluster_free');
  try {
    await updateRefcount(s, offset, bytes, -1);
    await flushRefcounts(s);
    const freed = new FreedClusters(s.clusterSize);
    const first = Math.floor(offset / s.clusterSize);
    await freed.noteIfFree(s, first, Math.floor((offset + bytes - 1) / s.clusterSize) - first + 1);
    await freed.discard(s);
  } catch (e) {
    if (!(e instanceof BlockError)) throw e;
    s.warn?.(`qcow2_free_clusters failed: ${describeCode(e.code)}`);
  }
}

/**
 * Clusters whose refcount dropped to 0, passed down to the file as discards
 * once the pass is done (QEMU's pass-discard-snapshot, on by default: the
 * freed clusters read as zeros, as in QEMU's files). A discard is a hint:
 * failures are ignored, as QEMU's qcow2_process_discards ignores them.
 */
class FreedClusters {
  private readonly runs: [number, number][] = [];
  constructor(private readonly clusterSize: number) {}

  async noteIfFree(s: Qcow2State, first: number, count: number): Promise<void> {
    for (let c = first; c < first + count; c++) {
      if ((await getRefcount(s, c)) !== 0) continue;
      const last = this.runs[this.runs.length - 1];
      if (last && last[1] === c) last[1] = c + 1;
      else this.runs.push([c, c + 1]);
    }
  }

  async discard(s: Qcow2State): Promise<void> {
    const cs = this.clusterSize;
    for (const [a, b] of this.runs.splice(0)) {
      const end = Math.min(b * cs, s.file.totalBytes);
      if (end <= a * cs) continue;
      try {
        await bdrvPdiscard(s.file, a * cs, end - a * cs);
      } catch (e) {
        if (!(e instanceof BlockError)) throw e;
      }
    }
  }
}

/** Per-cluster refcount deltas of one L2 slice, applied in ascending runs. */
class RefDeltas {
  private readonly m = new Map<number, number>();
  constructor(
    private readonly clusterSize: number,
    private readonly freed: FreedClusters,
  ) {}

  /** Every cluster [offset, offset + bytes) touches gets `delta`. */
  add(offset: number, bytes: number, delta: number): void {
    const first = Math.floor(offset / this.clusterSize);
    const last = Math.floor((offset + bytes - 1) / this.clusterSize);
    for (let c = first; c <= last; c++) this.m.set(c, (this.m.get(c) ?? 0) + delta);
  }

  async apply(s: Qcow2State): Promise<void> {
    const keys = [...this.m.keys()].sort((a, b) => a - b);
    for (let i = 0; i < keys.length; ) {
      const d = this.m.get(keys[i]!)!;
      let j = i + 1;
      while (j < keys.length && keys[j] === keys[j - 1]! + 1 && this.m.get(keys[j]!) === d) j++;
      if (d !== 0) await updateRefcount(s, keys[i]! * this.clusterSize, (j - i) * this.clusterSize, d);
      if (d < 0) await this.freed.noteIfFree(s, keys[i]!, j - i);
      i = j;
    }
    this.m.clear();
  }
}

/**
 * QEMU's qcow2_update_snapshot_refcount for the L1 table `l1` (l1Size
 * entries, stored at `l1TableOffset`): adds `addend` to the refcount of every
 * L2 table and data cluster it reaches, sets COPIED on its L2 entries and in
 * `l1` exactly where the refcount is now 1, and writes the L2 changes. With
 * addend >= 0 a changed `l1` is written back in place (a table to be dropped
 * is not). L2 tables whose refcount drops to 0 leave the cache unwritten.
 */
/**
 * A data cluster that a new reference would need a new refcount block for
 * (it lies past every cluster the refcount table covers: a corrupt L2 entry).
 * QEMU's update_refcount then makes the block, hooks it up and gives up with
 * EAGAIN (its allocator's "search again"), which the snapshot code reports as
 * such. blocktab gives the same errno without writing the block; a refcount
 * table that cannot grow that far is left to updateRefcount (EFBIG, as QEMU).
 */
function refuseMissingRefblock(s: Qcow2State, table: Float64Array, host: number, l2: number, index: number): void {
  const block = Math.floor(host / s.clusterSize / refblockEntries(s));
  if (block < table.length && table[block]) return;
  if (block * 8 >= QCOW_MAX_REFTABLE_SIZE) return;
  throw new BlockError(
    'EAGAIN',
    `${s.image}: data cluster ${hex(host)} (L2 table at ${hex(l2)}, index ${hex(index)}) has no refcount block; refusing to create one for a new reference`,
  );
}

async function updateSnapshotRefcount(s: Qcow2State, l1: Uint8Array, l1Size: number, addend: -1 | 0 | 1, l1TableOffset: number): Promise<void> {
  const cs = s.clusterSize;
  const stride = s.l2EntryBytes;
  const sliceBytes = s.l2Cache.entrySize;
  const perSlice = sliceBytes / stride;
  const freed = new FreedClusters(cs);
  const deltas = new RefDeltas(cs, freed);
  let l1Modified = false;
  for (let i = 0; i < l1Size; i++) {
    const l2 = l1EntryOffset(l1, i);
    if (!l2) continue;
    if (l2 % cs !== 0) throw await markCorrupt(s, `L2 table offset ${hex(l2)} unaligned (L1 index: ${hex(i)})`);
    for (let at = 0; at < cs; at += sliceBytes) {
      const slice = await s.l2Cache.acquire(l2 + at);
      try {
        const d = slice.data;
        // Refcounts first (one batch per slice), then COPIED from the new counts.
        if (addend !== 0) {
          for (let j = 0; j < perSlice; j++) {
            const p = j * stride;
            if (compressedAt(d, p)) {
              const { coffset, csize } = parseCompressedDescriptor(entryHi(d, p), entryLo(d, p), s.clusterBits);
              deltas.add(coffset, csize, addend);
              continue;
            }
            const host = l2HostOffset(d, j, s.extendedL2);
            if (host === 0) continue;
            if (host % cs !== 0) {
              throw await markCorrupt(s, `Cluster allocation offset ${hex(host)} unaligned (L2 offset: ${hex(l2)}, L2 index: ${hex(at / stride + j)})`);
            }
            if (addend > 0) refuseMissingRefblock(s, s.refcountTable ?? (await loadRefcountTable(s)), host, l2, at / stride + j);
            deltas.add(host, cs, addend);
          }
          await deltas.apply(s);
        }
        let dirty = false;
        for (let j = 0; j < perSlice; j++) {
          const p = j * stride;
          let want = false;
          if (!compressedAt(d, p)) {
            const host = l2HostOffset(d, j, s.extendedL2);
            if (host !== 0) {
              if (host % cs !== 0) {
                throw await markCorrupt(s, `Cluster allocation offset ${hex(host)} unaligned (L2 offset: ${hex(l2)}, L2 index: ${hex(at / stride + j)})`);
              }
              want = (await getRefcount(s, host / cs)) === 1;
            }
          }
          if (want !== copiedAt(d, p)) {
            setCopiedAt(d, p, want);
            dirty = true;
          }
        }
        if (dirty) s.l2Cache.markDirty(slice);
      } finally {
        s.l2Cache.release(slice);
      }
    }
    if (addend !== 0) await updateRefcount(s, l2, cs, addend);
    const rc = await getRefcount(s, l2 / cs);
    if (rc === 0) {
      // Freed: its cached slices must never be written over whatever the cluster holds next.
      s.l2Cache.invalidate(l2, cs);
      removeMetadata(s, l2, cs);
      await freed.noteIfFree(s, l2 / cs, 1);
    }
    if ((rc === 1) !== l1EntryCopied(l1, i)) {
      putL1Entry(l1, i, l2, rc === 1);
      l1Modified = true;
    }
    // Bounded memory on large images: dirty slices go out in the usual order (refcounts first).
    if (s.l2Cache.size > s.l2Cache.capacity) await flushMetadata(s);
  }
  await flushMetadata(s);
  await freed.discard(s);
  if (addend >= 0 && l1Modified && l1Size > 0) {
    await bdrvPwrite(s.file, l1TableOffset, l1Size * 8, l1.subarray(0, l1Size * 8));
    await syncFile(s);
  }
}

/**
 * QEMU's qcow2_write_snapshots: the table `list` goes to new clusters, then
 * one header write switches nb_snapshots and snapshots_offset, then the old
 * table is freed (a failure there only leaks it).
 */
async function writeSnapshots(s: Qcow2State, list: Qcow2Snapshot[]): Promise<void> {
  const size = snapshotTableSize(list);
  if (size > QCOW_MAX_SNAPSHOTS_SIZE) fail('EFBIG', s, `Snapshot table too large: ${size} bytes, at most ${QCOW_MAX_SNAPSHOTS_SIZE}`);
  const offset = await allocMeta(s, size);
  await flushRefcounts(s);
  if (size > 0) {
    await preWriteOverlapCheck(s, 0, offset, size);
    await bdrvPwrite(s.file, offset, size, serializeSnapshotTable(list).subarray(0, size));
  }
  await flushRefcounts(s);
  await syncFile(s);
  const h = s.header;
  await writeHeaderFields(s, ['nbSnapshots', 'snapshotsOffset'], { ...h, nbSnapshots: list.length, snapshotsOffset: offset });
  await syncFile(s);
  const old = { offset: h.snapshotsOffset, size: snapshotTableSize(s.snapshots) };
  h.nbSnapshots = list.length;
  h.snapshotsOffset = offset;
  s.snapshots = list;
  invalidateMetadata(s);
  await freeClusters(s, old.offset, old.size);
}

/**
 * Rewrites the snapshot table as it stands (qcow2_write_snapshots): every
 * entry then has at least the 24 bytes of extra data version 3 requires
 * (vm_state_size_large, disk_size, icount), as amend's upgrade needs.
 */
export async function qcow2RewriteSnapshotTable(s: Qcow2State): Promise<void> {
  refuseTablePastEof(s, 'rewrite the snapshot table');
  await begin(s);
  await writeSnapshots(s, s.snapshots.map((sn) => ({ ...sn, extraDataSize: Math.max(sn.extraDataSize, 24) })));
  await finish(s);
}

/** Common start of every operation: caches written, so tables on disk are current. */
async function begin(s: Qcow2State): Promise<void> {
  await prepareWrite(s);
  await flushMetadata(s);
}

/** Common end: refcount changes made stable, caches forget the moved tables. */
async function finish(s: Qcow2State): Promise<void> {
  await flushMetadata(s);
  await flushRefcounts(s);
  invalidateMetadata(s);
}

// ---------------------------------------------------------------- create

/** QEMU's qcow2_snapshot_create (see the file comment for the order of writes). */
export async function qcow2CreateSnapshot(bs: BlockNode, s: Qcow2State, req: NewSnapshot): Promise<Qcow2Snapshot> {
  checkSupported(bs, s, 'create');
  if (s.snapshots.length >= QCOW_MAX_SNAPSHOTS) fail('EFBIG', s, `Too many snapshots (at most ${QCOW_MAX_SNAPSHOTS})`);
  refuseTablePastEof(s, 'create a snapshot');
  const nameBytes = enc.encode(req.name).length;
  if (nameBytes > 0xffff) fail('EINVAL', s, `snapshot name too long (${nameBytes} bytes)`);
  const now = Date.now();
  const sn: Qcow2Snapshot = {
    l1TableOffset: 0,
    l1Size: 0,
    idStr: nextSnapshotId(s.snapshots),
    name: req.name,
    dateSec: req.dateSec ?? Math.floor(now / 1000),
    dateNsec: req.dateNsec ?? (now % 1000) * 1e6,
    vmClockNsec: req.vmClockNsec ?? 0,
    vmStateSize: req.vmStateSize ?? 0,
    diskSize: bs.totalBytes,
    icount: req.icount,
    extraDataTail: new Uint8Array(0),
    extraDataSize: 24,
  };
  const list = [...s.snapshots, sn];
  // Checked before anything is written: nothing changes when the table would be too large.
  if (snapshotTableSize(list) > QCOW_MAX_SNAPSHOTS_SIZE) fail('EFBIG', s, `Snapshot table too large (at most ${QCOW_MAX_SNAPSHOTS_SIZE} bytes)`);

  await withLock(s, async () => {
    await begin(s);
    const bytes = s.l1Size * 8;
    sn.l1Size = s.l1Size;
    sn.l1TableOffset = await allocMeta(s, bytes);
    if (bytes > 0) {
      await preWriteOverlapCheck(s, 0, sn.l1TableOffset, bytes);
      await bdrvPwrite(s.file, sn.l1TableOffset, bytes, s.l1Table.slice(0, bytes));
    }
    // Refcounts up and COPIED cleared, stable before the snapshot table names the copy.
    await updateSnapshotRefcount(s, s.l1Table, s.l1Size, 1, s.header.l1TableOffset);
    await writeSnapshots(s, list);
    await finish(s);
  });
  return sn;
}

// ----------------------------------------------------------------- apply

/** QEMU's qcow2_snapshot_goto, including a snapshot whose disk size differs from the current one. */
export async function qcow2ApplySnapshot(bs: BlockNode, s: Qcow2State, idOrName: string): Promise<Qcow2Snapshot> {
  checkSupported(bs, s, 'apply');
  const i = findSnapshotByIdOrName(s.snapshots, idOrName);
  if (i < 0) fail('ENOENT', s, `snapshot '${idOrName}' not found`);
  const sn = s.snapshots[i]!;
  try {
    validateSnapshotL1(s, sn);
  } catch (e) {
    // QEMU's qcow2_snapshot_goto reports the table's text, then fails with its errno only.
    if (e instanceof BlockError) s.warn?.(e.message, 'report');
    throw e;
  }
  refuseTablePastEof(s, 'apply a snapshot');
  if (sn.diskSize !== bs.totalBytes && s.bitmaps.length) {
    fail('ENOTSUP', s, `Can't resize an image with persistent dirty bitmaps (snapshot '${sn.name}' has another disk size)`);
  }
  await withLock(s, async () => {
    await begin(s);
    if (sn.diskSize !== bs.totalBytes) {
      await qcow2Truncate(bs, s, sn.diskSize, 'off');
      await flushMetadata(s);
    }
    await growL1(s, sn.l1Size, true);
    const bytes = s.l1Size * 8;
    const snL1 = new Uint8Array(bytes);
    if (sn.l1Size) await bdrvPread(s.file, sn.l1TableOffset, sn.l1Size * 8, snL1.subarray(0, sn.l1Size * 8));
    await updateSnapshotRefcount(s, snL1.slice(), sn.l1Size, 1, sn.l1TableOffset);
    // The snapshot's tables are shared from here on: no COPIED in the active L1 until recomputed (file comment).
    for (let k = 0; k < s.l1Size; k++) {
      const off = l1EntryOffset(snL1, k);
      if (off) putL1Entry(snL1, k, off, false);
    }
    if (bytes > 0) {
      await preWriteOverlapCheck(s, QCOW2_OL_ACTIVE_L1, s.header.l1TableOffset, bytes);
      await bdrvPwrite(s.file, s.header.l1TableOffset, bytes, snL1);
      await syncFile(s);
    }
    // The old active tables are unreferenced now: a crash from here on only leaks.
    let failed: unknown;
    try {
      await updateSnapshotRefcount(s, s.l1Table, s.l1Size, -1, s.header.l1TableOffset);
    } catch (e) {
      failed = e;
    }
    s.l1Table.set(snL1);
    s.rw.l1DirtyFrom = s.rw.l1DirtyTo = 0;
    if (failed) throw failed;
    await updateSnapshotRefcount(s, s.l1Table, s.l1Size, 0, s.header.l1TableOffset);
    await finish(s);
  });
  return sn;
}

/** QEMU's qcow2_validate_table for a snapshot's L1 table, before it is used. */
function validateSnapshotL1(s: Qcow2State, sn: Qcow2Snapshot): void {
  validateL1(sn, s.clusterSize, s.file.totalBytes, s.image);
}

// ------------------------------------------------------------- load tmp

/**
 * QEMU's qcow2_snapshot_load_tmp: a read-only node reads through the
 * snapshot's L1 table from now on. Nothing is written; L2 slices are cached by
 * their offset, so the cache stays valid.
 */
export async function qcow2SnapshotLoadTmp(bs: BlockNode, s: Qcow2State, idOrName: string): Promise<Qcow2Snapshot> {
  if (!bs.readOnly) fail('EINVAL', s, `cannot load snapshot '${idOrName}' temporarily: the image is not opened read-only`);
  const i = findSnapshotByIdOrName(s.snapshots, idOrName);
  if (i < 0) fail('ENOENT', s, `snapshot '${idOrName}' not found`);
  const sn = s.snapshots[i]!;
  validateSnapshotL1(s, sn);
  const l1 = new Uint8Array(sn.l1Size * 8);
  if (l1.length) await bdrvPread(s.file, sn.l1TableOffset, l1.length, l1);
  s.l1Table = l1;
  s.l1Size = sn.l1Size;
  bs.totalBytes = sn.diskSize;
  return sn;
}

// ---------------------------------------------------------------- delete

/** QEMU's qcow2_snapshot_delete: table first, then the snapshot's references, then COPIED in the active tables. */
export async function qcow2DeleteSnapshot(bs: BlockNode, s: Qcow2State, id: string | undefined, name: string | undefined): Promise<Qcow2Snapshot> {
  checkSupported(bs, s, 'delete');
  const i = findSnapshot(s.snapshots, id, name);
  if (i < 0) fail('ENOENT', s, `Can't find the snapshot (id ${id ?? '(any)'}, name ${name ?? '(any)'})`);
  const sn = s.snapshots[i]!;
  validateSnapshotL1(s, sn);
  refuseTablePastEof(s, 'delete a snapshot');
  const list = s.snapshots.filter((_, k) => k !== i);
  await withLock(s, async () => {
    await begin(s);
    await writeSnapshots(s, list);
    // The snapshot is gone from the header: a failure from here on only leaks clusters.
    try {
      const snL1 = new Uint8Array(sn.l1Size * 8);
      if (snL1.length) await bdrvPread(s.file, sn.l1TableOffset, snL1.length, snL1);
      await updateSnapshotRefcount(s, snL1, sn.l1Size, -1, sn.l1TableOffset);
    } catch (e) {
      if (!(e instanceof BlockError)) throw e;
      throw new BlockError(e.code, `Failed to free the cluster and L1 table: ${describeCode(e.code)}`, { cause: e });
    }
    await freeClusters(s, sn.l1TableOffset, sn.l1Size * 8);
    try {
      await updateSnapshotRefcount(s, s.l1Table, s.l1Size, 0, s.header.l1TableOffset);
    } catch (e) {
      if (!(e instanceof BlockError)) throw e;
      throw new BlockError(e.code, `Failed to update snapshot status in disk: ${describeCode(e.code)}`, { cause: e });
    }
    await finish(s);
  });
  return sn;
}
