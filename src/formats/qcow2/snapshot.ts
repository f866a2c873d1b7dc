/**
 * qcow2 internal snapshots: create, apply (revert) and delete (QEMU's
 * block/qcow2-snapshot.c), with the refcount model QEMU uses: an L2 table's
 * refcount is the number of L1 tables naming it, a data cluster's is the
 * number of (L1 table, L2 entry) paths reaching it, and COPIED is set on an
 * active L1/L2 entry exactly when that refcount is 1.
 *
 * Crash safety. QEMU bumps refcounts and clears COPIED in the active tables
 * in place. We never modify the tables the header currently points at:
 *   create  the old active L1 (with its L2 tables) becomes the snapshot's L1
 *           as it is; the new active L1 points at private copies of those L2
 *           tables with COPIED cleared on data entries (their data now has two
 *           paths); data refcounts +1, copies and the new L1 written and
 *           flushed, then ONE header write switches l1_size, l1_table_offset,
 *           nb_snapshots and snapshots_offset (bytes 36..71, one sector).
 *   apply   the new active L1 points at private copies of the snapshot's L2
 *           tables (data +1, COPIED cleared), then one header write switches
 *           size and the L1 (bytes 24..47), then the old active's references
 *           are dropped. A crash anywhere leaves at worst leaked clusters.
 * Create and delete cannot avoid one window, because a data cluster's
 * refcount (in a refcount block) and the COPIED flag of its active L2 entry
 * (in an L2 table or behind the header switch) must change together and
 * live in different sectors. Create bumps refcounts before the switch, so a
 * crash in between leaves "refcount 2, COPIED set" on the still-active old
 * tables; delete drops refcounts before setting COPIED, leaving "refcount 1,
 * COPIED clear". qemu-img check reports both as OFLAG_COPIED errors (QEMU's
 * own create and delete have the same windows), and both are safe: no
 * snapshot references the cluster in the first case, and in the second a
 * later write merely copies the cluster instead of overwriting it in place.
 *
 * Cost of the copies: one cluster per allocated L2 table (QEMU rewrites the
 * same tables in place, so the I/O is the same; the file holds the extra
 * tables until the snapshot is deleted). The active image then owns its L2
 * tables (COPIED on the L1 entries), so later guest writes need no L2 COW.
 */

import { BlockError, describeCode, hex } from '../../block/errors.js';
import { bdrvDebugEvent } from '../../block/debug-event.js';
import type { BlockNode } from '../../block/node.js';
import { allocBuffer, freeBuffer } from '../../block/buffers.js';
import { bdrvPread, bdrvPwrite } from '../../block/io.js';
import { QCOW_MAX_L1_SIZE, QCOW_MAX_SNAPSHOTS, QCOW_MAX_SNAPSHOTS_SIZE, SNAPSHOT_HEADER_SIZE, sizeToL1 } from './validate.js';
import { serializeSnapshotTable, type Qcow2Snapshot } from './snapshot-table.js';
import { allocateClusters, flushRefcounts, getRefcount, updateRefcount } from './refcount.js';
import { flushMetadata, setL1Entry } from './l1.js';
import { checkNotCorrupt, invalidateMetadata, preWriteOverlapCheck, syncFile, withLock, writeHeaderFields } from './metadata.js';
import { prepareWrite } from './write.js';
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

// ------------------------------------------------------------ refcounts

/** Per-cluster refcount deltas, applied in runs. */
class RefDeltas {
  private readonly m = new Map<number, number>();
  constructor(private readonly clusterSize: number) {}

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
      i = j;
    }
    this.m.clear();
  }
}

/**
 * Adds `delta` for every data cluster the L2 table `t` (one whole table)
 * references: normal and zero-allocated clusters, and the bytes of compressed
 * clusters. With `clearCopied`, also clears COPIED on those entries in `t`.
 */
function countL2(s: Qcow2State, t: Uint8Array, deltas: RefDeltas, delta: number, clearCopied: boolean, tableOffset: number): void {
  const stride = s.l2EntryBytes;
  for (let j = 0; j < s.l2Size; j++) {
    const p = j * stride;
    if (compressedAt(t, p)) {
      const { coffset, csize } = parseCompressedDescriptor(entryHi(t, p), entryLo(t, p), s.clusterBits);
      deltas.add(coffset, csize, delta);
      continue;
    }
    const host = l2HostOffset(t, j, s.extendedL2);
    if (host === 0) continue;
    if (host % s.clusterSize !== 0) {
      fail('ECORRUPT', s, `Cluster allocation offset ${hex(host)} unaligned (L2 table at ${hex(tableOffset)}, index ${j})`);
    }
    deltas.add(host, s.clusterSize, delta);
    if (clearCopied) setCopiedAt(t, p, false);
  }
}

/** Reads the L2 table at `offset` (a whole cluster) from the image file, checked against the file. */
async function readL2(s: Qcow2State, offset: number, into: Uint8Array, l1Index: number): Promise<void> {
  if (offset % s.clusterSize !== 0) fail('ECORRUPT', s, `L2 table offset ${hex(offset)} unaligned (L1 index ${hex(l1Index)})`);
  if (offset + s.clusterSize > s.file.totalBytes) {
    fail('ECORRUPT', s, `L2 table at ${hex(offset)} (L1 index ${hex(l1Index)}) extends beyond the end of the file`);
  }
  await bdrvPread(s.file, offset, s.clusterSize, into);
}

/**
 * Builds a new active L1 table of `newSize` entries whose L2 tables are
 * private copies of the ones `src` (srcSize entries) names: each copy gets
 * refcount 1 (COPIED in the L1), its data clusters +1 with COPIED cleared.
 * Returns the table (not yet written).
 */
async function copyTablesForActive(s: Qcow2State, src: Uint8Array, srcSize: number, newSize: number): Promise<Uint8Array> {
  const cs = s.clusterSize;
  const l1 = new Uint8Array(newSize * 8);
  const deltas = new RefDeltas(cs);
  const t = allocBuffer(cs);
  try {
    for (let i = 0; i < srcSize; i++) {
      const off = l1EntryOffset(src, i);
      if (!off) continue;
      await readL2(s, off, t, i);
      countL2(s, t, deltas, 1, true, off);
      const copy = await allocateClusters(s, 1);
      await preWriteOverlapCheck(s, 0, copy, cs);
      await bdrvPwrite(s.file, copy, cs, t);
      putL1Entry(l1, i, copy, true);
    }
  } finally {
    freeBuffer(t);
  }
  await deltas.apply(s);
  return l1;
}

/** Drops one reference of the L1 table `l1` (l1Size entries): its L2 tables and their data (QEMU's addend -1). */
async function releaseL1(s: Qcow2State, l1: Uint8Array, l1Size: number): Promise<void> {
  const cs = s.clusterSize;
  const deltas = new RefDeltas(cs);
  const t = allocBuffer(cs);
  try {
    for (let i = 0; i < l1Size; i++) {
      const off = l1EntryOffset(l1, i);
      if (!off) continue;
      await readL2(s, off, t, i);
      countL2(s, t, deltas, -1, false, off);
      deltas.add(off, cs, -1);
    }
  } finally {
    freeBuffer(t);
  }
  await deltas.apply(s);
}

/** Writes `table` (l1Size entries) into new clusters; returns the offset (0 for an empty table). */
async function writeNewL1(s: Qcow2State, table: Uint8Array): Promise<number> {
  if (table.length === 0) return 0;
  const cs = s.clusterSize;
  const off = await allocateClusters(s, Math.ceil(table.length / cs));
  await preWriteOverlapCheck(s, 0, off, table.length);
  await bdrvPwrite(s.file, off, table.length, table);
  return off;
}

/** Writes the snapshot table into new clusters (QEMU's qcow2_write_snapshots, before the header switch). */
async function writeNewTable(s: Qcow2State, list: Qcow2Snapshot[]): Promise<{ offset: number; size: number }> {
  if (list.length === 0) return { offset: 0, size: 0 };
  const size = snapshotTableSize(list);
  if (size > QCOW_MAX_SNAPSHOTS_SIZE) {
    fail('EFBIG', s, `Snapshot table too large: ${size} bytes, at most ${QCOW_MAX_SNAPSHOTS_SIZE}`);
  }
  const bytes = serializeSnapshotTable(list);
  const offset = await allocateClusters(s, Math.ceil(size / s.clusterSize));
  await preWriteOverlapCheck(s, 0, offset, size);
  await bdrvPwrite(s.file, offset, size, bytes.subarray(0, size));
  return { offset, size };
}

/** Frees the clusters of the current snapshot table (after the header stopped naming it). */
async function freeOldTable(s: Qcow2State, offset: number, size: number): Promise<void> {
  if (size > 0) await updateRefcount(s, offset, size, -1);
}

/** Common start of every operation: caches written, so tables on disk are current. */
async function begin(s: Qcow2State): Promise<void> {
  await prepareWrite(s);
  await flushMetadata(s);
}

/** Common end: refcount changes made stable, caches forget the moved tables. */
async function finish(s: Qcow2State): Promise<void> {
  await flushRefcounts(s);
  s.l2Cache.clear();
  invalidateMetadata(s);
}

// ---------------------------------------------------------------- create

/** QEMU's qcow2_snapshot_create (see the file comment for the order of writes). */
export async function qcow2CreateSnapshot(bs: BlockNode, s: Qcow2State, req: NewSnapshot): Promise<Qcow2Snapshot> {
  checkSupported(bs, s, 'create');
  if (s.snapshots.length >= QCOW_MAX_SNAPSHOTS) fail('EFBIG', s, `Too many snapshots (at most ${QCOW_MAX_SNAPSHOTS})`);
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
    const h = s.header;
    sn.l1TableOffset = h.l1TableOffset;
    sn.l1Size = s.l1Size;
    const newL1 = await copyTablesForActive(s, s.l1Table, s.l1Size, s.l1Size);
    const l1Offset = await writeNewL1(s, newL1);
    const oldTable = { offset: h.snapshotsOffset, size: snapshotTableSize(s.snapshots) };
    const table = await writeNewTable(s, list);
    // Refcounts, copies, L1 and table stable before the header names them.
    await flushRefcounts(s);
    await syncFile(s);
    await writeHeaderFields(s, ['l1TableOffset', 'nbSnapshots', 'snapshotsOffset'], {
      ...h,
      l1TableOffset: l1Offset,
      nbSnapshots: list.length,
      snapshotsOffset: table.offset,
    });
    await syncFile(s);
    s.l1Table = newL1;
    h.l1TableOffset = l1Offset;
    h.nbSnapshots = list.length;
    h.snapshotsOffset = table.offset;
    s.snapshots = list;
    await freeOldTable(s, oldTable.offset, oldTable.size);
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
  if (sn.l1Size > QCOW_MAX_L1_SIZE / 8) fail('EFBIG', s, `Snapshot L1 table too large (${sn.l1Size} entries)`);
  if (sn.diskSize !== bs.totalBytes && s.bitmaps.length) {
    fail('ENOTSUP', s, `Can't resize an image with persistent dirty bitmaps (snapshot '${sn.name}' has another disk size)`);
  }
  await withLock(s, async () => {
    await begin(s);
    const h = s.header;
    const snL1 = new Uint8Array(sn.l1Size * 8);
    if (snL1.length) await bdrvPread(s.file, sn.l1TableOffset, snL1.length, snL1);
    const newSize = Math.max(s.l1Size, sn.l1Size, sizeToL1(h, sn.diskSize));
    const newL1 = await copyTablesForActive(s, snL1, sn.l1Size, newSize);
    const l1Offset = await writeNewL1(s, newL1);
    await flushRefcounts(s);
    await syncFile(s);
    await writeHeaderFields(s, ['size', 'l1Size', 'l1TableOffset'], { ...h, size: sn.diskSize, l1Size: newSize, l1TableOffset: l1Offset });
    await syncFile(s);
    const oldL1 = s.l1Table;
    const oldSize = s.l1Size;
    const oldOffset = h.l1TableOffset;
    s.l1Table = newL1;
    s.l1Size = newSize;
    h.l1Size = newSize;
    h.l1TableOffset = l1Offset;
    h.size = sn.diskSize;
    bs.totalBytes = sn.diskSize;
    s.rw.l1DirtyFrom = s.rw.l1DirtyTo = 0;
    // The old active tables are unreferenced now: a crash from here on only leaks.
    await releaseL1(s, oldL1, oldSize);
    if (oldSize > 0) await updateRefcount(s, oldOffset, oldSize * 8, -1);
    await finish(s);
  });
  return sn;
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
  if (sn.l1Size > QCOW_MAX_L1_SIZE / 8) fail('EFBIG', s, `Snapshot L1 table too large (${sn.l1Size} entries)`);
  if (sn.l1Size > 0 && (sn.l1TableOffset % s.clusterSize !== 0 || sn.l1TableOffset + sn.l1Size * 8 > s.file.totalBytes)) {
    fail('ECORRUPT', s, `Snapshot '${sn.name}' L1 table at ${hex(sn.l1TableOffset)} is unaligned or beyond the end of the file`);
  }
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
  const list = s.snapshots.filter((_, k) => k !== i);
  await withLock(s, async () => {
    await begin(s);
    const h = s.header;
    const oldTable = { offset: h.snapshotsOffset, size: snapshotTableSize(s.snapshots) };
    const table = await writeNewTable(s, list);
    await flushRefcounts(s);
    await syncFile(s);
    await writeHeaderFields(s, ['nbSnapshots', 'snapshotsOffset'], { ...h, nbSnapshots: list.length, snapshotsOffset: table.offset });
    await syncFile(s);
    h.nbSnapshots = list.length;
    h.snapshotsOffset = table.offset;
    s.snapshots = list;
    invalidateMetadata(s);
    // The snapshot is gone from the header: a failure from here on only leaks clusters. As QEMU's
    // qcow2_free_clusters, a failed free of the old table is reported and the deletion goes on; the
    // freed refcounts are written at once, so a failing file says so here (iotest 217).
    await bdrvDebugEvent(s.file, 'cluster_free');
    try {
      await freeOldTable(s, oldTable.offset, oldTable.size);
      await flushRefcounts(s);
    } catch (e) {
      if (!(e instanceof BlockError)) throw e;
      s.warn?.(`qcow2_free_clusters failed: ${describeCode(e.code)}`);
    }
    try {
      const snL1 = new Uint8Array(sn.l1Size * 8);
      if (snL1.length) await bdrvPread(s.file, sn.l1TableOffset, snL1.length, snL1);
      await releaseL1(s, snL1, sn.l1Size);
      if (sn.l1Size > 0) await updateRefcount(s, sn.l1TableOffset, sn.l1Size * 8, -1);
      await flushRefcounts(s);
    } catch (e) {
      if (!(e instanceof BlockError)) throw e;
      throw new BlockError(e.code, `Failed to free the cluster and L1 table: ${describeCode(e.code)}`, { cause: e });
    }
    await updateActiveCopied(s);
    await flushMetadata(s);
    await finish(s);
  });
  return sn;
}

/** Recomputes COPIED on the active L1 and L2 entries from the refcounts (QEMU's addend-0 pass). */
async function updateActiveCopied(s: Qcow2State): Promise<void> {
  const stride = s.l2EntryBytes;
  const sliceBytes = s.l2Cache.entrySize;
  for (let i = 0; i < s.l1Size; i++) {
    const off = l1EntryOffset(s.l1Table, i);
    if (!off) continue;
    const tableOwned = (await getRefcount(s, off / s.clusterSize)) === 1;
    if (tableOwned !== l1EntryCopied(s.l1Table, i)) setL1Entry(s, i, off, tableOwned);
    // Data of a shared table has more than one path: only owned tables can hold refcount-1 data.
    for (let at = 0; at < s.clusterSize; at += sliceBytes) {
      const slice = await s.l2Cache.acquire(off + at);
      try {
        const d = slice.data;
        for (let j = 0; j < sliceBytes / stride; j++) {
          const p = j * stride;
          if (compressedAt(d, p)) continue;
          const host = l2HostOffset(d, j, s.extendedL2);
          if (host === 0) continue;
          const want = tableOwned && (await getRefcount(s, Math.floor(host / s.clusterSize))) === 1;
          if (want === copiedAt(d, p)) continue;
          setCopiedAt(d, p, want);
          s.l2Cache.markDirty(slice);
        }
      } finally {
        s.l2Cache.release(slice);
      }
    }
  }
}
