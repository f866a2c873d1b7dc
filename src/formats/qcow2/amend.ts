/**
 * qemu-img amend for qcow2 (QEMU's qcow2_amend_options), on an opened,
 * writable node: compat upgrade (0.10 → 1.1) and downgrade (1.1 → 0.10, zero
 * clusters expanded as qcow2_expand_zero_clusters), LUKS key slots
 * (encrypt.*, src/crypto/luks-amend.ts), lazy_refcounts on/off,
 * refcount_bits (qcow2_change_refcount_order) and size.
 *
 * Steps run in QEMU's order: upgrade, key slots, refcount width, lazy refcounts, size,
 * downgrade last (it may fail on features v2 cannot express). Every step
 * leaves a valid image: new refcount structures are written past the end of
 * the file and flushed before one header write switches to them; zero
 * clusters get their data (and refcounts) before the L2 entries change.
 */
import { BlockError, describeCode } from '../../block/errors.js';
import type { BlockNode } from '../../block/node.js';
import type { AmendStatus } from '../../block/driver.js';
import { bdrvFlush, bdrvPread, bdrvPwrite, bdrvTruncate } from '../../block/io.js';
import {
  QCOW2_AUTOCLEAR_DATA_FILE_RAW,
  QCOW2_COMPAT_LAZY_REFCOUNTS,
  QCOW2_EXT_MAGIC_DATA_FILE,
  QCOW2_COMPRESSION_TYPE_ZLIB,
  QCOW2_EXT_MAGIC_BITMAPS,
  QCOW2_EXT_MAGIC_FEATURE_TABLE,
  QCOW2_INCOMPAT_COMPRESSION,
  QCOW2_INCOMPAT_DATA_FILE,
  QEMU_FEATURE_TABLE,
  serializeHeader,
  V3_HEADER_LENGTH,
} from './header.js';
import { allocateClusters, copyRefblock, dropRefcountCache, flushRefcounts, getRefcount, loadRefcountTable, refblockEntries, updateRefcount } from './refcount.js';
import { flushMetadata } from './l1.js';
import { qcow2RewriteSnapshotTable } from './snapshot.js';
import type { Qcow2State } from './state.js';
import {
  emptyL2Entry,
  l1EntryOffset,
  l2Compressed,
  l2EntryHost,
  l2EntryIsCompressed,
  l2EntryIsZero,
  readL2Entry,
  standardL2Entry,
  writeL2Entry,
} from './l2-entry.js';
import { getRefcountEntry, putReftableEntry, refcountsPerBlock, setRefcountEntry } from './refcount-codec.js';
import { validateSnapshotL1 } from './snapshot-table.js';
import { QCOW_MAX_REFTABLE_SIZE } from './validate.js';
import { luksAreaIo, QCOW_CRYPT_LUKS } from './crypto.js';
import { luksAmend, luksAmendParams } from '../../crypto/luks-amend.js';
import { lookupSecretUtf8 } from '../../block/secrets.js';

export interface Qcow2AmendOptions {
  /** The encrypt.* options, names without the prefix (LUKS key-slot changes). */
  encrypt?: Map<string, string>;
  version?: 2 | 3;
  lazyRefcounts?: boolean;
  refcountBits?: number;
  size?: number;
  /** backing_file / backing_fmt as given (null: not given); amend only accepts the ones the image has. */
  backing?: { file: string | null; format: string | null };
  /** data_file: the external data file's new name in the header ('' drops the name). */
  dataFile?: string;
  /** data_file_raw: may be cleared, not set on an existing image. */
  dataFileRaw?: boolean;
}

function fail(msg: string, code: 'EINVAL' | 'ENOTSUP' = 'EINVAL'): never {
  throw new BlockError(code, msg);
}

/** Rewrites the whole header cluster from `s.header` (one write, as qcow2_update_header). */
async function updateHeader(s: Qcow2State): Promise<void> {
  const b = serializeHeader(s.header);
  await bdrvPwrite(s.file, 0, b.length, b);
  await bdrvFlush(s.file);
}

async function upgrade(s: Qcow2State, status?: AmendStatus): Promise<void> {
  const h = s.header;
  status?.(0, 2);
  // Version 3 entries carry vm_state_size_large and disk_size: older entries are rewritten with them.
  if (s.snapshots.some((sn) => sn.extraDataSize < 16)) await qcow2RewriteSnapshotTable(s);
  status?.(1, 2);
  h.version = 3;
  h.headerLength = V3_HEADER_LENGTH;
  h.headerTail = new Uint8Array(V3_HEADER_LENGTH - 105);
  h.compressionType = QCOW2_COMPRESSION_TYPE_ZLIB;
  if (s.clusterSize >= 8192 && !h.extensions.some((e) => e.type === QCOW2_EXT_MAGIC_FEATURE_TABLE)) {
    h.extensions.push({ type: QCOW2_EXT_MAGIC_FEATURE_TABLE, features: [...QEMU_FEATURE_TABLE] });
  }
  await updateHeader(s);
  status?.(2, 2);
}

/**
 * qcow2_change_refcount_order, as QEMU walks it: walks over the current
 * refcount table allocate (in the current structures) a block for every
 * range of the new width that holds a nonzero refcount, then the new table,
 * until a walk allocates nothing more; one last walk writes the new blocks,
 * then the new table, and one header write switches to them. The old blocks
 * and table are freed afterwards, in the new structures. A crash before the
 * header write leaves the old image with leaked clusters, after it the new
 * one with the old structures leaked. Progress counts walks of the old table
 * (QEMU's: the total grows when allocations force another walk).
 */
async function changeRefcountOrder(s: Qcow2State, order: number, status?: AmendStatus): Promise<void> {
  const cs = s.clusterSize;
  const oldBits = s.refcountBits;
  const newBits = 1 << order;
  const newPer = refcountsPerBlock(cs, newBits);
  const newTable: number[] = [];
  let newTableOffset = 0;
  let newTableBytes = 0;
  const oldBlock = new Uint8Array(cs);
  const newBlock = new Uint8Array(cs);
  /** One walk over the current table; `write`: fill and write the new blocks, else allocate them. True when it allocated. */
  const walk = async (index: number, total: number, write: boolean): Promise<boolean> => {
    let allocated = false;
    let newIndex = 0;
    let used = 0;
    let empty = true;
    const finish = async (): Promise<void> => {
      if (write) {
        const off = newTable[newIndex] ?? 0;
        if (off) await bdrvPwrite(s.file, off, cs, newBlock);
        newBlock.fill(0);
      } else if (!empty) {
        if (newIndex >= newTable.length) {
          const size = Math.ceil((newIndex + 1) / (cs / 8)) * (cs / 8);
          if (size > QCOW_MAX_REFTABLE_SIZE / 8) {
            fail('This operation would make the refcount table grow beyond the maximum size supported by QEMU, aborting', 'ENOTSUP');
          }
          while (newTable.length < size) newTable.push(0);
        }
        if (!newTable[newIndex]) {
          newTable[newIndex] = await allocateClusters(s, 1);
          allocated = true;
        }
      }
      newIndex++;
      used = 0;
      empty = true;
    };
    const oldPer = refblockEntries(s);
    let size = (await loadRefcountTable(s)).length;
    for (let i = 0; i < size; i++) {
      status?.(index * size + i, total * size);
      const data = await copyRefblock(s, i, oldBlock);
      if (!data) {
        // No block: every refcount is 0, taken a new block's worth at a time.
        for (let left = oldPer; left > 0; ) {
          if (used >= newPer) await finish();
          const take = Math.min(left, newPer - used);
          used += take;
          left -= take;
        }
        size = (await loadRefcountTable(s)).length;
        continue;
      }
      for (let j = 0; j < oldPer; j++) {
        if (used >= newPer) await finish();
        const v = getRefcountEntry(data, oldBits, j);
        if (newBits < 64 && v >= 2 ** newBits) {
          fail(`Cannot decrease refcount entry width to ${newBits} bits: Cluster at offset 0x${((i * oldPer + j) * cs).toString(16)} has a refcount of ${v}`);
        }
        if (write) setRefcountEntry(newBlock, newBits, used, v);
        used++;
        if (v) empty = false;
      }
      // An allocation may have grown the current table.
      size = (await loadRefcountTable(s)).length;
    }
    if (used > 0) await finish();
    status?.((index + 1) * size, total * size);
    return allocated;
  };
  try {
    let walkIndex = 0;
    let again: boolean;
    do {
      // At least this walk, the one that finds nothing new and the one that writes.
      again = await walk(walkIndex, Math.max(walkIndex + 2, 3), false);
      walkIndex++;
      if (again) {
        if (newTableOffset) await updateRefcount(s, newTableOffset, newTableBytes, -1);
        newTableBytes = newTable.length * 8;
        newTableOffset = 0;
        newTableOffset = await allocateClusters(s, newTableBytes / cs);
      }
    } while (again);
    await walk(walkIndex, walkIndex + 1, true);
    const raw = new Uint8Array(newTableBytes);
    newTable.forEach((off, i) => putReftableEntry(raw, i, off));
    await bdrvPwrite(s.file, newTableOffset, raw.length, raw);
    // The current structures count the new ones; both are stable before the header names the new table.
    await flushRefcounts(s);
    await bdrvFlush(s.file);
  } catch (e) {
    // As QEMU: what this change allocated goes back (leaked at worst when that fails too).
    try {
      for (const off of newTable) if (off) await updateRefcount(s, off, cs, -1, 'other');
      if (newTableOffset) await updateRefcount(s, newTableOffset, newTableBytes, -1, 'other');
      await flushRefcounts(s);
    } catch {
      // The first error is the one to report.
    }
    throw e;
  }
  const oldTable = Array.from(await loadRefcountTable(s));
  const oldTableOffset = s.header.refcountTableOffset;
  const oldTableBytes = s.header.refcountTableClusters * cs;
  s.header.refcountOrder = order;
  s.header.refcountTableOffset = newTableOffset;
  s.header.refcountTableClusters = newTableBytes / cs;
  await updateHeader(s);
  dropRefcountCache(s);
  s.refcountBits = newBits;
  for (const off of oldTable) if (off) await updateRefcount(s, off, cs, -1, 'other');
  await updateRefcount(s, oldTableOffset, oldTableBytes, -1, 'other');
  await flushRefcounts(s);
}

/**
 * QEMU's qcow2_amend_helper_cb: one progress over the amend's operations
 * (version change, key slots, refcount width), each reporting its own
 * offset of its own total; the work of operations not begun yet is
 * projected from the ones done so far.
 */
function amendProgress(status: AmendStatus | undefined, totalOperations: number): (op: string) => AmendStatus | undefined {
  if (!status || totalOperations === 0) return () => undefined;
  let last: string | null = null;
  let completed = 0;
  let offsetCompleted = 0;
  let lastWork = 0;
  return (op) => (offset, work) => {
    if (op !== last) {
      if (last !== null) {
        offsetCompleted += lastWork;
        completed++;
      }
      last = op;
    }
    lastWork = work;
    const current = offsetCompleted + work;
    const projected = Math.floor((current * (totalOperations - completed - 1)) / (completed + 1));
    status(offsetCompleted + offset, current + projected);
  };
}

/**
 * qcow2_expand_zero_clusters over every L1 table (active and snapshots).
 *
 * An L2 table with refcount r contributes r to each cluster it points at, so
 * a new cluster gets refcount r (and COPIED only when r is 1). A preallocated
 * zero cluster is zeroed in place only when that L2 table holds every
 * reference to it; otherwise (another L2 table still reads its data) it gets
 * a cluster of its own. Ordering for a crash: new clusters' refcounts and
 * zeros are stable before the L2 table points at them; the old clusters'
 * refcounts drop only after the L2 table stopped pointing at them.
 */
async function expandZeroClusters(bs: BlockNode, s: Qcow2State, status?: AmendStatus): Promise<void> {
  const cs = s.clusterSize;
  const l1s: Array<{ offset: number; size: number }> = [{ offset: s.header.l1TableOffset, size: s.l1Size }];
  for (const sn of s.snapshots) l1s.push({ offset: sn.l1TableOffset, size: sn.l1Size });
  // Progress counts L1 entries, allocated or not, over every table.
  const l1Entries = l1s.reduce((n, t) => n + t.size, 0);
  let visited = 0;
  const seen = new Set<number>();
  const zeros = new Uint8Array(cs);
  const l2 = new Uint8Array(cs);
  /** One L1 entry's L2 table (each table once): its zero clusters get data. */
  const expandEntry = async (l2Off: number): Promise<void> => {
    if (!l2Off || seen.has(l2Off)) return;
    seen.add(l2Off);
    await bdrvPread(s.file, l2Off, cs, l2);
    const l2Refcount = await getRefcount(s, l2Off / cs);
    const copied = l2Refcount === 1;
    let dirty = false;
    /** Clusters this L2 table stops pointing at: their refcounts drop by l2Refcount after it is written. */
    const released: number[] = [];
    for (let j = 0; j < s.l2Size; j++) {
      // A downgrade target has no extended L2 (v2 cannot express it): 8-byte entries.
      const e = readL2Entry(l2, j, false);
      if (l2EntryIsCompressed(e) || !l2EntryIsZero(e)) continue;
      const host = l2EntryHost(e);
      let target: number;
      if (!host && !bs.backing) {
        // Not backed: an unallocated cluster reads as zeros too.
        writeL2Entry(l2, j, false, emptyL2Entry());
        dirty = true;
        continue;
      }
      if (host && (await getRefcount(s, host / cs)) === l2Refcount) {
        target = host;
      } else {
        target = await allocateClusters(s, 1);
        if (l2Refcount > 1) await updateRefcount(s, target, cs, l2Refcount - 1);
        if (host) released.push(host);
      }
      await bdrvPwrite(s.file, target, cs, zeros);
      writeL2Entry(l2, j, false, standardL2Entry(target, copied));
      dirty = true;
    }
    if (!dirty) return;
    await flushRefcounts(s);
    await bdrvFlush(s.file);
    await bdrvPwrite(s.file, l2Off, cs, l2);
    s.l2Cache.invalidate(l2Off, cs);
    if (released.length) {
      await bdrvFlush(s.file);
      for (const host of released) await updateRefcount(s, host, cs, -l2Refcount);
      await flushRefcounts(s);
    }
  };
  for (const [k, { offset, size }] of l1s.entries()) {
    if (k > 0) {
      // QEMU's expand_zero_clusters checks each snapshot's table as it comes to it, reports its text, fails with the errno.
      try {
        validateSnapshotL1(s.snapshots[k - 1]!, cs, s.file.totalBytes, s.image);
      } catch (e) {
        if (!(e instanceof BlockError)) throw e;
        s.warn?.(e.message, 'report');
        throw new BlockError(e.code, `${s.image}: Failed to turn zero into data clusters: ${describeCode(e.code)}`, {
          cause: e,
          qemuMessage: `Failed to turn zero into data clusters: ${describeCode(e.code)}`,
        });
      }
    }
    const l1 = new Uint8Array(size * 8);
    await bdrvPread(s.file, offset, l1.length, l1);
    for (let i = 0; i < size; i++) {
      await expandEntry(l1EntryOffset(l1, i));
      status?.(++visited, l1Entries);
    }
  }
  await bdrvFlush(s.file);
}

/** qcow2_downgrade */
async function downgrade(bs: BlockNode, s: Qcow2State, status?: AmendStatus): Promise<void> {
  const h = s.header;
  if (h.refcountOrder !== 4) fail('compat=0.10 requires refcount_bits=16', 'ENOTSUP');
  if (h.incompatibleFeatures & QCOW2_INCOMPAT_DATA_FILE) fail('Cannot downgrade an image with a data file', 'ENOTSUP');
  // v2 readers may not know a snapshot's own disk size or a VM state past 4 GiB: the table would lie to them.
  if (s.snapshots.some((sn) => sn.vmStateSize > 0xffffffff || sn.diskSize !== bs.totalBytes)) {
    fail('Internal snapshots prevent downgrade of image', 'ENOTSUP');
  }
  const other = h.incompatibleFeatures & ~QCOW2_INCOMPAT_COMPRESSION;
  if (other) fail(`Cannot downgrade an image with incompatible features 0x${other.toString(16)} set`, 'ENOTSUP');
  if (s.bitmaps.length || h.extensions.some((e) => e.type === QCOW2_EXT_MAGIC_BITMAPS)) {
    fail(`${s.image}: cannot downgrade an image with persistent bitmaps (blocktab does not convert them)`, 'ENOTSUP');
  }
  if (h.compressionType !== QCOW2_COMPRESSION_TYPE_ZLIB && (await hasCompressedClusters(s))) {
    fail(`Cannot downgrade an image with incompatible features 0x${QCOW2_INCOMPAT_COMPRESSION.toString(16)} set`, 'ENOTSUP');
  }
  await expandZeroClusters(bs, s, status);
  h.compatibleFeatures = 0n;
  s.useLazyRefcounts = false;
  h.autoclearFeatures = 0n;
  h.incompatibleFeatures = 0n;
  h.compressionType = QCOW2_COMPRESSION_TYPE_ZLIB;
  h.version = 2;
  h.headerLength = 72;
  h.headerTail = new Uint8Array(0);
  h.extensions = h.extensions.filter((e) => e.type !== QCOW2_EXT_MAGIC_FEATURE_TABLE);
  await updateHeader(s);
}

async function hasCompressedClusters(s: Qcow2State): Promise<boolean> {
  const cs = s.clusterSize;
  const l2 = new Uint8Array(cs);
  const l1s = [{ offset: s.header.l1TableOffset, size: s.l1Size }, ...s.snapshots.map((sn) => ({ offset: sn.l1TableOffset, size: sn.l1Size }))];
  for (const [k, { offset, size }] of l1s.entries()) {
    // Each snapshot's table is checked before it is read (nothing is allocated from a bad size).
    if (k > 0) validateSnapshotL1(s.snapshots[k - 1]!, cs, s.file.totalBytes, s.image);
    const l1 = new Uint8Array(size * 8);
    await bdrvPread(s.file, offset, l1.length, l1);
    for (let i = 0; i < size; i++) {
      const l2Off = l1EntryOffset(l1, i);
      if (!l2Off) continue;
      await bdrvPread(s.file, l2Off, cs, l2);
      for (let j = 0; j < s.l2Size; j++) if (l2Compressed(l2, j, s.extendedL2)) return true;
    }
  }
  return false;
}

/** LUKS key-slot changes in the header area the crypto header extension names (src/crypto/luks-amend.ts). */
async function amendEncryption(s: Qcow2State, values: Map<string, string>, force: boolean): Promise<void> {
  const c = s.crypto!;
  const params = luksAmendParams((name) => values.get(name));
  await luksAmend({ volume: c.luks!, io: luksAreaIo(s.file, c.area!, s.image), openSecret: c.secretId, lookupSecret: lookupSecretUtf8, force, image: s.image }, params);
  await bdrvFlush(s.file);
}

/** Applies `o` to the opened qcow2 node `bs` (read-write). Messages are QEMU's. */
export async function amendQcow2(bs: BlockNode, o: Qcow2AmendOptions, force = false, status?: AmendStatus): Promise<void> {
  const s = bs.state<Qcow2State>();
  if (bs.readOnly) fail(`${s.image}: cannot amend an image opened read-only`, 'EINVAL');
  // QEMU's table lists encrypt.* first, so these come before the other options' checks.
  if (o.encrypt) {
    if (!s.crypto) fail("Can't amend encryption options - encryption not present");
    if (s.crypto.method !== QCOW_CRYPT_LUKS) fail('Only LUKS encryption options can be amended', 'ENOTSUP');
  }
  const h = s.header;
  const oldVersion = h.version;
  const newVersion = o.version ?? oldVersion;
  const lazy = o.lazyRefcounts ?? (h.compatibleFeatures & QCOW2_COMPAT_LAZY_REFCOUNTS) !== 0n;
  // Option checks first, in QEMU's order.
  let newOrder = h.refcountOrder;
  if (o.refcountBits !== undefined) {
    const order = Math.log2(o.refcountBits);
    if (!Number.isInteger(order) || o.refcountBits > 64 || o.refcountBits < 1) fail('Refcount width must be a power of two and may not exceed 64 bits');
    newOrder = order;
  }
  // Only an asked-for width is checked here; an image that already has another width fails in downgrade(), with QEMU's message there.
  if (o.refcountBits !== undefined && newVersion < 3 && newOrder !== 4) {
    fail('Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)');
  }
  const hasDataFile = (h.incompatibleFeatures & QCOW2_INCOMPAT_DATA_FILE) !== 0n;
  if (o.dataFile !== undefined && !hasDataFile) fail('data-file can only be set for images that use an external data file');
  const dataFileRaw = o.dataFileRaw ?? s.dataFileRaw;
  if (dataFileRaw && !s.dataFileRaw) fail('data-file-raw cannot be set on existing images');
  if (o.backing && (o.backing.file !== bs.backingFile || o.backing.format !== bs.backingFormat)) {
    fail("Cannot amend the backing file\nYou can use 'qemu-img rebase' instead.");
  }
  const hadLazy = (h.compatibleFeatures & QCOW2_COMPAT_LAZY_REFCOUNTS) !== 0n;
  // Only a change is checked: a downgrade drops lazy refcounts with the other compatible features.
  if (lazy && !hadLazy && newVersion < 3) fail('Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)');

  await flushMetadata(s);
  const progress = amendProgress(status, (newVersion !== oldVersion ? 1 : 0) + (newOrder !== h.refcountOrder ? 1 : 0) + (o.encrypt ? 1 : 0));
  if (newVersion > oldVersion) await upgrade(s, progress('upgrade'));
  if (o.encrypt) await amendEncryption(s, o.encrypt, force);
  if (newOrder !== h.refcountOrder) await changeRefcountOrder(s, newOrder, progress('refcount-order'));
  if (lazy !== hadLazy) {
    if (!lazy) {
      // Refcounts must be exact before they stop being lazy (qcow2_mark_clean repairs a dirty image).
      // Loaded on demand, like the driver's check callback, so opening an image does not load the checker.
      const { checkImage } = await import('./check.js');
      await checkImage(bs, { fix: { leaks: true, errors: true }, report: () => {} });
      h.compatibleFeatures &= ~QCOW2_COMPAT_LAZY_REFCOUNTS;
    } else {
      h.compatibleFeatures |= QCOW2_COMPAT_LAZY_REFCOUNTS;
    }
    s.useLazyRefcounts = lazy;
    await updateHeader(s);
  }
  if (o.dataFile !== undefined || dataFileRaw !== s.dataFileRaw) {
    if (o.dataFile !== undefined) {
      h.extensions = h.extensions.filter((e) => e.type !== QCOW2_EXT_MAGIC_DATA_FILE);
      if (o.dataFile !== '') h.extensions.push({ type: QCOW2_EXT_MAGIC_DATA_FILE, dataFile: o.dataFile });
      s.imageDataFile = o.dataFile === '' ? null : o.dataFile;
    }
    if (dataFileRaw) h.autoclearFeatures |= QCOW2_AUTOCLEAR_DATA_FILE_RAW;
    else h.autoclearFeatures &= ~QCOW2_AUTOCLEAR_DATA_FILE_RAW;
    s.dataFileRaw = dataFileRaw;
    await updateHeader(s);
  }
  if (o.size !== undefined && o.size !== bs.totalBytes) await bdrvTruncate(bs, o.size, false, 'off');
  if (newVersion < oldVersion) await downgrade(bs, s, progress('downgrade'));
  await flushMetadata(s);
}
