/**
 * Persistent dirty bitmaps of a qcow2 image (QEMU's block/qcow2-bitmap.c):
 * loaded into the node's bitmap list on open, stored on close.
 *
 * The autoclear bit 0 ("bitmaps") says the directory is up to date. A program
 * unaware of bitmaps clears it when it writes, and the bitmaps are lost (the
 * extension is ignored; its clusters leak until `check -r`). This driver
 * keeps the bit, because it keeps the bitmaps current:
 *
 * - open read/write: every bitmap that was not in use gets the in_use flag on
 *   disk (autoclear off, directory rewritten in place, autoclear on), so a
 *   crash leaves them in use, which a later open reads as inconsistent;
 * - open read-only: bitmaps are loaded read-only, nothing is written;
 * - a bitmap already in use on disk loads as inconsistent (no data), and
 *   can only be removed;
 * - close: each persistent, consistent, writable bitmap gets fresh data
 *   clusters and a fresh table, then a new directory, then the header that
 *   points at it; old tables and the old directory are freed last, so a
 *   crash at any point only leaks clusters (QEMU's order);
 * - a writer that did not load the bitmaps (state.bitmapsLoaded false)
 *   clears the autoclear bit before its first write (write.ts prepareHeader).
 */
import { BlockError, hex } from '../../block/errors.js';
import { bdrvPread, bdrvPwrite } from '../../block/io.js';
import type { BlockNode } from '../../block/node.js';
import {
  checkDirtyBitmap,
  createDirtyBitmap,
  findDirtyBitmap,
  listDirtyBitmaps,
  releaseDirtyBitmap,
  type BdrvDirtyBitmap,
} from '../../block/dirty-bitmap.js';
import {
  findExtension,
  QCOW2_AUTOCLEAR_BITMAPS,
  QCOW2_EXT_MAGIC_BITMAPS,
  QCOW2_EXT_MAGIC_FEATURE_TABLE,
  serializeHeader,
  type HeaderExtension,
  type Qcow2Header,
} from './header.js';
import {
  BME_FLAG_AUTO,
  BME_FLAG_IN_USE,
  BME_MAX_GRANULARITY_BITS,
  BME_MAX_NAME_SIZE,
  BME_MAX_PHYS_SIZE,
  BME_MAX_TABLE_SIZE,
  BME_MIN_GRANULARITY_BITS,
  bitmapTableSizeFor,
  dirEntryProblem,
  dirEntrySize,
  hasStaleBitmapsExtension,
  QCOW2_MAX_BITMAP_DIRECTORY_SIZE,
  QCOW2_MAX_BITMAPS,
  serializeBitmapDirectory,
  type Qcow2BitmapEntry,
} from './bitmap-directory.js';
import { bitmapTableEntryProblem, parseBitmapTableEntry, serializeBitmapTable } from './bitmap-table.js';
import { allocateClusters, flushRefcounts, updateRefcount } from './refcount.js';
import { flushMetadata } from './l1.js';
import { syncFile, withLock, writeAutoclearFeatures } from './metadata.js';
import type { Qcow2State } from './state.js';

const enc = new TextEncoder();

/** Guest bytes one cluster of bitmap data covers. */
function clusterCoverage(s: Qcow2State, granularity: number): number {
  return s.clusterSize * 8 * granularity;
}

/** Reads and checks bitmap `e`'s table (QEMU's bitmap_table_load); offsets of the data clusters. */
export async function readBitmapTable(s: Qcow2State, e: Qcow2BitmapEntry): Promise<{ offset: number; allOnes: boolean }[]> {
  const bytes = e.bitmapTableSize * 8;
  if (e.bitmapTableOffset + bytes > s.file.totalBytes) {
    throw new BlockError('EINVAL', `${s.image}: bitmap '${e.name}': bitmap table at ${hex(e.bitmapTableOffset)} (${bytes} bytes) extends beyond the end of the file`);
  }
  const t = new Uint8Array(bytes);
  await bdrvPread(s.file, e.bitmapTableOffset, bytes, t);
  const out: { offset: number; allOnes: boolean }[] = [];
  for (let i = 0; i < e.bitmapTableSize; i++) {
    const problem = bitmapTableEntryProblem(t, i, s.clusterSize);
    if (problem) {
      throw new BlockError('EINVAL', `${s.image}: bitmap '${e.name}': bitmap table entry ${i} at ${hex(e.bitmapTableOffset + i * 8)} is invalid: ${problem}`);
    }
    const entry = parseBitmapTableEntry(t, i);
    if (entry.offset && entry.offset + s.clusterSize > s.file.totalBytes) {
      throw new BlockError('EINVAL', `${s.image}: bitmap '${e.name}': data cluster ${hex(entry.offset)} (table entry ${i}) is beyond the end of the file`);
    }
    out.push(entry);
  }
  return out;
}

/**
 * Refuses directories whose tables overlap each other, the directory or the
 * image's fixed metadata: storing over them would free clusters twice.
 */
function checkTablesApart(s: Qcow2State, dirOffset: number, dirSize: number): void {
  const cs = s.clusterSize;
  const h = s.header;
  const taken: { from: number; to: number; what: string }[] = [
    { from: 0, to: 1, what: 'the header' },
    { from: Math.floor(dirOffset / cs), to: Math.ceil((dirOffset + dirSize) / cs), what: 'the bitmap directory' },
    { from: Math.floor(h.l1TableOffset / cs), to: Math.ceil((h.l1TableOffset + h.l1Size * 8) / cs), what: 'the L1 table' },
    { from: Math.floor(h.refcountTableOffset / cs), to: Math.floor(h.refcountTableOffset / cs) + h.refcountTableClusters, what: 'the refcount table' },
  ];
  for (const e of s.bitmaps) {
    const from = Math.floor(e.bitmapTableOffset / cs);
    const to = Math.ceil((e.bitmapTableOffset + e.bitmapTableSize * 8) / cs);
    const hit = taken.find((r) => from < r.to && r.from < to);
    if (hit) {
      throw new BlockError('EINVAL', `${s.image}: bitmap '${e.name}': bitmap table at ${hex(e.bitmapTableOffset)} overlaps ${hit.what}`);
    }
    taken.push({ from, to, what: `the bitmap table of '${e.name}'` });
  }
}

/** Fills `bm` from the data clusters of `table` (QEMU's load_bitmap_data). */
async function loadBitmapData(s: Qcow2State, e: Qcow2BitmapEntry, bm: BdrvDirtyBitmap, table: { offset: number; allOnes: boolean }[]): Promise<void> {
  const size = bm.size;
  const want = bitmapTableSizeFor(size, bm.granularity, s.clusterSize);
  if (want !== e.bitmapTableSize) {
    throw new BlockError('EINVAL', `${s.image}: Could not read bitmap '${e.name}' from image: its table has ${e.bitmapTableSize} entries, the virtual disk needs ${want}`);
  }
  const limit = clusterCoverage(s, bm.granularity);
  const buf = new Uint8Array(s.clusterSize);
  for (let i = 0; i < table.length; i++) {
    const start = i * limit;
    const count = Math.min(size - start, limit);
    const t = table[i]!;
    if (t.offset) {
      await bdrvPread(s.file, t.offset, s.clusterSize, buf);
      bm.bitmap.deserializePart(buf, start, count);
    } else if (t.allOnes) {
      bm.bitmap.set(start, count);
    }
  }
}

/** Rewrites the header cluster from `h` (QEMU's qcow2_update_header) and makes it stable. */
async function writeHeader(s: Qcow2State, h: Qcow2Header): Promise<void> {
  const cluster = serializeHeader(h);
  await bdrvPwrite(s.file, 0, cluster.length, cluster);
  await syncFile(s);
  s.header = h;
}

/** `h` with the bitmaps extension set to `ext` (null: removed), where QEMU puts it: after the feature table. */
function withBitmapsExtension(h: Qcow2Header, ext: Extract<HeaderExtension, { type: typeof QCOW2_EXT_MAGIC_BITMAPS }> | null): Qcow2Header {
  const exts = h.extensions.filter((e) => e.type !== QCOW2_EXT_MAGIC_BITMAPS);
  if (ext) {
    let at = exts.findIndex((e) => e.type === QCOW2_EXT_MAGIC_FEATURE_TABLE) + 1;
    if (at === 0) at = exts.length;
    exts.splice(at, 0, ext);
  }
  const autoclear = ext ? h.autoclearFeatures | QCOW2_AUTOCLEAR_BITMAPS : h.autoclearFeatures & ~QCOW2_AUTOCLEAR_BITMAPS;
  return { ...h, extensions: exts, autoclearFeatures: autoclear };
}

/**
 * Loads the directory's bitmaps into the node (QEMU's
 * qcow2_load_dirty_bitmaps). Throws, naming the image and the bitmap, when
 * a table or its data is unusable; then no bitmap stays on the node.
 * `writable`: load as a read-write open does (bitmaps marked in use).
 */
export async function qcow2LoadBitmaps(bs: BlockNode, s: Qcow2State, writable = !bs.readOnly): Promise<void> {
  const ext = findExtension(s.header, QCOW2_EXT_MAGIC_BITMAPS);
  if (hasStaleBitmapsExtension(s.header)) {
    // QEMU's warning on every open of such an image (its qcow2_read_extensions).
    s.warn?.(
      'warning: a program lacking bitmap support modified this file, so all bitmaps are now considered inconsistent\n' +
        "Some clusters may be leaked, run 'qemu-img check -r' on the image file to fix.",
    );
  }
  // Only a writable node keeps the bitmaps current; a read-only one that later writes (a reopen) drops them.
  s.bitmapsLoaded = writable;
  if (writable && hasStaleBitmapsExtension(s.header)) {
    // As QEMU: a stale extension goes at a read/write open; its clusters leak until check -r.
    await withLock(s, () => writeHeader(s, withBitmapsExtension(s.header, null)));
    return;
  }
  if (!s.bitmaps.length || !ext) return;
  checkTablesApart(s, ext.bitmapDirectoryOffset, ext.bitmapDirectorySize);
  const created: BdrvDirtyBitmap[] = [];
  let needsUpdate = false;
  const flags = s.bitmaps.map((e) => e.flags);
  try {
    for (const [i, e] of s.bitmaps.entries()) {
      if (findDirtyBitmap(bs, e.name)) throw new BlockError('EINVAL', `${s.image}: the bitmap directory has two bitmaps named '${e.name}'`);
      const bm = createDirtyBitmap(bs, e.name, 2 ** e.granularityBits);
      created.push(bm);
      bm.persistent = true;
      if (e.flags & BME_FLAG_IN_USE) {
        bm.inconsistent = true;
      } else {
        await loadBitmapData(s, e, bm, await readBitmapTable(s, e));
        flags[i] = e.flags | BME_FLAG_IN_USE;
        needsUpdate = true;
      }
      if (!(e.flags & BME_FLAG_AUTO)) bm.disabled = true;
      if (!writable) bm.readonly = true;
    }
    if (needsUpdate && writable) await rewriteDirectoryFlags(s, ext.bitmapDirectoryOffset, ext.bitmapDirectorySize, flags);
  } catch (err) {
    for (const bm of created) releaseDirtyBitmap(bs, bm);
    throw err;
  }
}

/**
 * The directory with new flags, in place, as QEMU: with the autoclear bit
 * off nobody trusts the directory while it changes.
 */
async function rewriteDirectoryFlags(s: Qcow2State, offset: number, size: number, flags: number[]): Promise<void> {
  const dir = serializeBitmapDirectory(s.bitmaps.map((e, i) => ({ ...e, flags: flags[i]! })));
  if (dir.length !== size) throw new BlockError('EINVAL', `${s.image}: bitmap directory at ${hex(offset)} cannot be rewritten in place`);
  await withLock(s, async () => {
    s.header.autoclearFeatures &= ~QCOW2_AUTOCLEAR_BITMAPS;
    await writeAutoclearFeatures(s);
    await syncFile(s);
    await bdrvPwrite(s.file, offset, dir.length, dir);
    await syncFile(s);
    s.header.autoclearFeatures |= QCOW2_AUTOCLEAR_BITMAPS;
    await writeAutoclearFeatures(s);
    await syncFile(s);
  });
  s.bitmaps.forEach((e, i) => (e.flags = flags[i]!));
}

/**
 * A read-only node turning read-write (QEMU's qcow2_reopen_bitmaps_rw): the
 * bitmaps loaded read-only become writable and their directory entries are
 * marked in use, so a crash from now on leaves them flagged inconsistent.
 * A node that never loaded them (opened read-write, or a stale extension)
 * loads them now.
 */
export async function qcow2ReopenBitmapsRw(bs: BlockNode, s: Qcow2State): Promise<void> {
  if (s.bitmapsLoaded) return;
  const ext = findExtension(s.header, QCOW2_EXT_MAGIC_BITMAPS);
  const loaded = s.bitmaps.map((e) => findDirtyBitmap(bs, e.name));
  if (!ext || !s.bitmaps.length || loaded.some((b) => !b)) {
    // Nothing loaded read-only: load as a read-write open does.
    for (const b of loaded) if (b) releaseDirtyBitmap(bs, b);
    await qcow2LoadBitmaps(bs, s, true);
    return;
  }
  const flags = s.bitmaps.map((e, i) => (loaded[i]!.inconsistent ? e.flags : e.flags | BME_FLAG_IN_USE));
  if (flags.some((f, i) => f !== s.bitmaps[i]!.flags)) await rewriteDirectoryFlags(s, ext.bitmapDirectoryOffset, ext.bitmapDirectorySize, flags);
  for (const b of loaded) b!.readonly = false;
  s.bitmapsLoaded = true;
}

/** A read-write node turning read-only, after its bitmaps were stored: they stay in memory, read-only (QEMU's qcow2_reopen_prepare). */
export function qcow2BitmapsReadOnly(bs: BlockNode, s: Qcow2State): void {
  for (const e of s.bitmaps) {
    const b = findDirtyBitmap(bs, e.name);
    if (b) b.readonly = true;
  }
  s.bitmapsLoaded = false;
}

/**
 * Before a resize (QEMU's qcow2_truncate_bitmaps_check): every stored bitmap
 * must be in memory and usable, since only the in-memory copy is resized.
 */
export function qcow2TruncateBitmapsCheck(bs: BlockNode, s: Qcow2State): void {
  for (const e of s.bitmaps) {
    const bm = findDirtyBitmap(bs, e.name);
    if (!bm || !s.bitmapsLoaded) {
      throw new BlockError('ENOTSUP', `${s.image}: Cannot resize qcow2 with persistent bitmaps that were not loaded into memory`);
    }
    checkDirtyBitmap(bm);
  }
}

/** QEMU's check_constraints_on_bitmap, messages included. */
function checkConstraints(s: Qcow2State, virtualSize: number, name: string, granularity: number): string | null {
  const bits = Math.log2(granularity);
  if (bits > BME_MAX_GRANULARITY_BITS) return `Granularity exceeds maximum (${2 ** BME_MAX_GRANULARITY_BITS} bytes)`;
  if (bits < BME_MIN_GRANULARITY_BITS) return `Granularity is under minimum (${2 ** BME_MIN_GRANULARITY_BITS} bytes)`;
  const bytes = Math.ceil(Math.ceil(virtualSize / granularity) / 8);
  if (bytes > BME_MAX_PHYS_SIZE || bytes > BME_MAX_TABLE_SIZE * s.clusterSize) {
    return 'Too much space will be occupied by the bitmap. Use larger granularity';
  }
  if (enc.encode(name).length > BME_MAX_NAME_SIZE) return `Name length exceeds maximum (${BME_MAX_NAME_SIZE} characters)`;
  return null;
}

/** Persistent bitmaps of the node that are not in the directory yet. */
function unstoredPersistent(bs: BlockNode, s: Qcow2State): BdrvDirtyBitmap[] {
  return listDirtyBitmaps(bs).filter((b) => b.persistent && !s.bitmaps.some((e) => e.name === b.name));
}

/** QEMU's qcow2_co_can_store_new_dirty_bitmap. */
export function qcow2CanStoreNewBitmap(bs: BlockNode, s: Qcow2State, name: string, granularity: number): void {
  const fail = (msg: string): never => {
    throw new BlockError('EINVAL', `Can't make bitmap '${name}' persistent in '${bs.nodeName || s.image}': ${msg}`);
  };
  if (s.header.version < 3) fail('Cannot store dirty bitmaps in qcow2 v2 files');
  if (bs.readOnly || !s.bitmapsLoaded) fail('the image is opened read-only');
  const problem = checkConstraints(s, bs.totalBytes, name, granularity);
  if (problem) fail(problem);
  const pending = unstoredPersistent(bs, s);
  if (s.bitmaps.length + pending.length >= QCOW2_MAX_BITMAPS) fail('Maximum number of persistent bitmaps is already reached');
  let dirSize = s.bitmaps.reduce((n, e) => n + dirEntrySize(enc.encode(e.name).length, e.extraData.length), 0);
  for (const b of pending) dirSize += dirEntrySize(enc.encode(b.name).length);
  if (dirSize + dirEntrySize(enc.encode(name).length) > QCOW2_MAX_BITMAP_DIRECTORY_SIZE) fail('Not enough space in the bitmap directory');
}

/** Frees a bitmap table and its data clusters (QEMU's free_bitmap_clusters). */
async function freeBitmapClusters(s: Qcow2State, e: Qcow2BitmapEntry): Promise<void> {
  // An unreadable table (a stale in-use bitmap's) leaks its clusters rather than freeing what it names.
  const table = await readBitmapTable(s, e).catch(() => null);
  if (!table) return;
  for (const t of table) if (t.offset) await updateRefcount(s, t.offset, s.clusterSize, -1);
  await updateRefcount(s, e.bitmapTableOffset, e.bitmapTableSize * 8, -1);
}

/** Writes bitmap `bm`'s data clusters and table (QEMU's store_bitmap); returns the table's place. */
async function storeBitmap(s: Qcow2State, bm: BdrvDirtyBitmap): Promise<{ offset: number; size: number }> {
  const size = bm.size;
  const tbSize = bitmapTableSizeFor(size, bm.granularity, s.clusterSize);
  if (tbSize > BME_MAX_TABLE_SIZE || tbSize * s.clusterSize > BME_MAX_PHYS_SIZE) {
    throw new BlockError('EINVAL', `${s.image}: Bitmap '${bm.name}' is too big`);
  }
  const limit = clusterCoverage(s, bm.granularity);
  const offsets = new Array<number>(tbSize).fill(0);
  const buf = new Uint8Array(s.clusterSize);
  for (let start = bm.nextDirty(0); start >= 0 && start < size; start = bm.nextDirty(start)) {
    const i = Math.floor(start / limit);
    const from = i * limit;
    const count = Math.min(size - from, limit);
    buf.fill(0);
    bm.bitmap.serializePart(buf, from, count);
    const off = await allocateClusters(s, 1);
    await bdrvPwrite(s.file, off, s.clusterSize, buf);
    offsets[i] = off;
    start = from + count;
    if (start >= size) break;
  }
  const table = serializeBitmapTable(offsets);
  const tableOffset = await allocateClusters(s, Math.ceil(table.length / s.clusterSize));
  await bdrvPwrite(s.file, tableOffset, table.length, table);
  return { offset: tableOffset, size: tbSize };
}

/** Points the header at `entries` (a new directory, or none) and frees the old directory. */
async function replaceDirectory(s: Qcow2State, entries: Qcow2BitmapEntry[]): Promise<void> {
  const old = findExtension(s.header, QCOW2_EXT_MAGIC_BITMAPS);
  const oldValid = !!old && (s.header.autoclearFeatures & QCOW2_AUTOCLEAR_BITMAPS) !== 0n;
  let ext: Extract<HeaderExtension, { type: typeof QCOW2_EXT_MAGIC_BITMAPS }> | null = null;
  if (entries.length) {
    if (entries.length > QCOW2_MAX_BITMAPS) throw new BlockError('EINVAL', `${s.image}: Too many persistent bitmaps`);
    for (const e of entries) {
      const problem = dirEntryProblem(e, s.clusterSize, s.header.size);
      if (problem) throw new BlockError('EINVAL', `${s.image}: Bitmap '${e.name}' doesn't satisfy the constraints: ${problem}`);
    }
    const dir = serializeBitmapDirectory(entries);
    if (dir.length > QCOW2_MAX_BITMAP_DIRECTORY_SIZE) throw new BlockError('EINVAL', `${s.image}: Bitmap directory is too large`);
    const dirOffset = await allocateClusters(s, Math.ceil(dir.length / s.clusterSize));
    await bdrvPwrite(s.file, dirOffset, dir.length, dir);
    ext = { type: QCOW2_EXT_MAGIC_BITMAPS, nbBitmaps: entries.length, reserved: 0, bitmapDirectorySize: dir.length, bitmapDirectoryOffset: dirOffset };
  }
  // Data, tables, directory and their refcounts stable before the header points at them.
  await flushMetadata(s);
  await syncFile(s);
  await writeHeader(s, withBitmapsExtension(s.header, ext));
  if (old && oldValid) await updateRefcount(s, old.bitmapDirectoryOffset, old.bitmapDirectorySize, -1);
  s.bitmaps = entries;
}

/**
 * Stores the node's persistent bitmaps (QEMU's
 * qcow2_store_persistent_dirty_bitmaps): called on close of a writable node.
 */
export async function qcow2StoreBitmaps(bs: BlockNode, s: Qcow2State): Promise<void> {
  // A node loaded writable stores even after it turned read-only (the old top of an external snapshot).
  if (!s.bitmapsLoaded) return;
  const toStore = listDirtyBitmaps(bs)
    // Newest first, as QEMU walks a node's bitmaps: new entries reach the directory's end in that order.
    .filter((b) => b.persistent && !b.inconsistent && !b.readonly);
  if (!toStore.length) return;
  await withLock(s, async () => {
    const entries = s.bitmaps.map((e) => ({ ...e }));
    const drop: Qcow2BitmapEntry[] = [];
    const plan: { entry: Qcow2BitmapEntry; bm: BdrvDirtyBitmap }[] = [];
    for (const bm of toStore) {
      const problem = checkConstraints(s, bs.totalBytes, bm.name, bm.granularity);
      if (problem) throw new BlockError('EINVAL', `${s.image}: Bitmap '${bm.name}' doesn't satisfy the constraints: ${problem}`);
      let entry = entries.find((e) => e.name === bm.name);
      if (!entry) {
        entry = { bitmapTableOffset: 0, bitmapTableSize: 0, flags: 0, type: 1, granularityBits: 0, name: bm.name, extraData: new Uint8Array(0) };
        entries.push(entry);
      } else {
        if (!(entry.flags & BME_FLAG_IN_USE)) throw new BlockError('EEXIST', `${s.image}: Bitmap '${bm.name}' already exists in the image`);
        drop.push({ ...entry });
      }
      entry.flags = bm.enabled ? BME_FLAG_AUTO : 0;
      entry.granularityBits = Math.log2(bm.granularity);
      plan.push({ entry, bm });
    }
    if (entries.length > QCOW2_MAX_BITMAPS) throw new BlockError('EINVAL', `${s.image}: Too many persistent bitmaps`);
    for (const { entry, bm } of plan) {
      const t = await storeBitmap(s, bm);
      entry.bitmapTableOffset = t.offset;
      entry.bitmapTableSize = t.size;
    }
    await replaceDirectory(s, entries);
    // The new directory is in place: the old copies can go (QEMU does not reuse them either).
    for (const e of drop) await freeBitmapClusters(s, e);
    await flushRefcounts(s);
    await syncFile(s);
  });
}

/** QEMU's qcow2_co_remove_persistent_dirty_bitmap. */
export async function qcow2RemoveBitmap(bs: BlockNode, s: Qcow2State, name: string): Promise<void> {
  const i = s.bitmaps.findIndex((e) => e.name === name);
  if (i < 0) return;
  if (bs.readOnly || !s.bitmapsLoaded) throw new BlockError('EROFS', `${s.image}: cannot remove bitmap '${name}': the image is opened read-only`);
  await withLock(s, async () => {
    const gone = s.bitmaps[i]!;
    await replaceDirectory(s, s.bitmaps.filter((_, k) => k !== i));
    await freeBitmapClusters(s, gone);
    await flushRefcounts(s);
    await syncFile(s);
  });
}
