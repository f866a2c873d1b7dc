/**
 * qcow2 consistency check and repair (QEMU's qcow2_check_refcounts and its
 * helpers in block/qcow2-refcount.c), on an opened node.
 *
 * The check counts, in memory, how often every host cluster is referenced:
 * header, active L1 and its L2 tables and data clusters, each snapshot's L1
 * and L2 tables, the snapshot table, the refcount table and blocks, the
 * bitmap directory and tables. It then compares each count with the refcount
 * stored on disk: a stored refcount below the references is a corruption, one
 * above is a leak, a referenced cluster with refcount 0 means the refcount
 * structure itself must be rebuilt. Last, OFLAG_COPIED must be set exactly on
 * active L1/L2 entries whose cluster has refcount 1.
 *
 * The messages and the counting rules are QEMU's, so `qemu-img check` and
 * `blocktab check` agree on the numbers and the exit code. Memory is one
 * 32-bit counter per host cluster of the file (bounded, see
 * MAX_COUNTED_CLUSTERS); metadata is read straight from the file, as QEMU's
 * check does, after the node's caches were written back.
 *
 * Repairs (fix.leaks: refcounts lowered; fix.errors: refcounts raised,
 * COPIED flags corrected, broken structures rebuilt) keep the image valid
 * at every step: a refcount only drops for a cluster nothing references, and
 * a rebuilt refcount structure is written and flushed past the end of the
 * file before the header is switched to it.
 */
import { BlockError, hex } from '../../block/errors.js';
import type { CheckResult } from '../../block/driver.js';
import type { BlockNode } from '../../block/node.js';
import { bdrvFlush, bdrvPread, bdrvPwrite, bdrvTruncate } from '../../block/io.js';
import { be, QCOW2_INCOMPAT_CORRUPT, QCOW2_INCOMPAT_DIRTY, QCOW2_INCOMPAT_DATA_FILE } from './header.js';
import { parseCompressedDescriptor } from './compressed.js';
import { getRefcountEntry, setRefcountEntry, dropRefcountCache } from './refcount.js';
import { MAX_COUNTED_CLUSTERS, maxRefcount, writeRefcountStructure } from './repair-refcounts.js';
import { QCOW_MAX_L1_SIZE } from './validate.js';
import { flushMetadata } from './l1.js';
import { writeIncompatibleFeatures } from './metadata.js';
import type { Qcow2State } from './state.js';

/**
 * The check stopped (QEMU's check returning -errno): qemu-img prints the
 * messages so far and "Check failed: <reason>" instead of a summary.
 */
export class CheckFailed extends BlockError {
  constructor(
    code: 'EIO' | 'EFBIG',
    readonly checkMessages: string[],
  ) {
    super(code, code === 'EIO' ? 'Input/output error' : 'File too large');
  }
}

export interface CheckFix {
  leaks: boolean;
  errors: boolean;
}

/** Internal result (QEMU's BdrvCheckResult plus the messages qcow2 prints to stderr). */
interface Res {
  corruptions: number;
  leaks: number;
  checkErrors: number;
  corruptionsFixed: number;
  leaksFixed: number;
  imageEndOffset: number;
  totalClusters: number;
  allocatedClusters: number;
  fragmentedClusters: number;
  compressedClusters: number;
  messages: string[];
}

function newRes(): Res {
  return {
    corruptions: 0,
    leaks: 0,
    checkErrors: 0,
    corruptionsFixed: 0,
    leaksFixed: 0,
    imageEndOffset: 0,
    totalClusters: 0,
    allocatedClusters: 0,
    fragmentedClusters: 0,
    compressedClusters: 0,
    messages: [],
  };
}

const CHECK_FRAG_INFO = 2;
const TWO32 = 0x100000000;

/** A 64-bit entry as hex without 0x (QEMU's PRIx64). */
function hex64(hi: number, lo: number): string {
  return hi ? hi.toString(16) + (lo >>> 0).toString(16).padStart(8, '0') : (lo >>> 0).toString(16);
}

/** Offset bits 9-55 of an L1/L2 entry. */
function entryOffset(hi: number, lo: number): number {
  return (hi & 0x00ffffff) * TWO32 + ((lo & 0xfffffe00) >>> 0);
}

/**
 * In-memory reference counts, one per host cluster (QEMU's refcount "imrt").
 * `n` is QEMU's nb_clusters: the file's clusters, raised to cover every
 * cluster a reference touched; storage grows by doubling underneath.
 */
class Counts {
  a: Uint32Array;
  n: number;
  constructor(n: number) {
    this.n = n;
    this.a = new Uint32Array(Math.max(n, 1));
  }
  grow(n: number): void {
    if (n > MAX_COUNTED_CLUSTERS) throw new BlockError('EFBIG', `refcount array for ${n} clusters is too large to check (at most ${MAX_COUNTED_CLUSTERS})`);
    if (n > this.n) this.n = n;
    if (n <= this.a.length) return;
    const b = new Uint32Array(Math.max(n, Math.min(MAX_COUNTED_CLUSTERS, this.a.length * 2)));
    b.set(this.a);
    this.a = b;
  }
  get(k: number): number {
    return k < this.a.length ? this.a[k]! : 0;
  }
}

/** The refcounts stored on disk, read through a small cache; repairs write through it. */
class DiskRefcounts {
  table: Float64Array = new Float64Array(0);
  /** Raw table entries, for the reserved-bit check. */
  rawLow: Uint32Array = new Uint32Array(0);
  private blocks = new Map<number, Uint8Array>();
  readonly perBlock: number;

  constructor(
    private readonly s: Qcow2State,
    /** Where messages go (the check's message list, in order). */
    private readonly out: { messages: string[] },
  ) {
    this.perBlock = (s.clusterSize * 8) / s.refcountBits;
  }

  async load(): Promise<void> {
    const s = this.s;
    const h = s.header;
    const bytes = h.refcountTableClusters * s.clusterSize;
    const raw = new Uint8Array(bytes);
    await bdrvPread(s.file, h.refcountTableOffset, bytes, raw);
    const n = bytes / 8;
    this.table = new Float64Array(n);
    this.rawLow = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      const hi = be.u32(raw, i * 8);
      const lo = be.u32(raw, i * 8 + 4);
      this.table[i] = hi * TWO32 + ((lo & 0xfffffe00) >>> 0);
      this.rawLow[i] = lo;
    }
    this.blocks.clear();
  }

  private async block(offset: number): Promise<Uint8Array> {
    let b = this.blocks.get(offset);
    if (b) return b;
    if (this.blocks.size >= 64) this.blocks.delete(this.blocks.keys().next().value as number);
    b = new Uint8Array(this.s.clusterSize);
    // Past the end of the file reads as zeros, as QEMU's do.
    await bdrvPread(this.s.file, offset, this.s.clusterSize, b);
    this.blocks.set(offset, b);
    return b;
  }

  /** Refcount of cluster `k`; throws for an unaligned refcount block (QEMU's qcow2_get_refcount -EIO). */
  async get(k: number): Promise<number> {
    const i = Math.floor(k / this.perBlock);
    if (i >= this.table.length) return 0;
    const off = this.table[i]!;
    if (off === 0) return 0;
    if (off % this.s.clusterSize !== 0) {
      await this.signalCorruption(`Refblock offset ${hex(off)} unaligned (reftable index: ${i === 0 ? '0' : hex(i)})`);
      throw new BlockError('EIO', 'Input/output error');
    }
    return getRefcountEntry(await this.block(off), this.s.refcountBits, k - i * this.perBlock);
  }

  private signalled = false;

  /**
   * qcow2_signal_corruption (fatal): on a writable image the corrupt bit is
   * set (v3); a read-only one only says so. Once per check, as QEMU
   * suppresses repeats.
   */
  private async signalCorruption(what: string): Promise<void> {
    if (this.signalled) return;
    this.signalled = true;
    const s = this.s;
    if (s.file.readOnly) {
      this.out.messages.push(`qcow2: Image is corrupt: ${what}; further non-fatal corruption events will be suppressed`);
      return;
    }
    this.out.messages.push(`qcow2: Marking image as corrupt: ${what}; further corruption events will be suppressed`);
    if (s.header.version === 3) {
      s.header.incompatibleFeatures |= QCOW2_INCOMPAT_CORRUPT;
      await writeIncompatible(s);
    }
  }

  /** Sets the refcount of cluster `k` (its block exists) and writes the block. */
  async set(k: number, v: number): Promise<void> {
    const i = Math.floor(k / this.perBlock);
    const off = i < this.table.length ? this.table[i]! : 0;
    if (off === 0 || off % this.s.clusterSize !== 0) throw new BlockError('EIO', 'Input/output error');
    const b = await this.block(off);
    setRefcountEntry(b, this.s.refcountBits, k - i * this.perBlock, v);
    await bdrvPwrite(this.s.file, off, this.s.clusterSize, b);
  }
}

interface Ctx {
  bs: BlockNode;
  s: Qcow2State;
  res: Res;
  counts: Counts;
  fix: CheckFix;
  hasDataFile: boolean;
}

/** qcow2_inc_refcounts_imrt: one more reference to every cluster [offset, offset + size) touches. */
function incRefcounts(c: Ctx, offset: number, size: number): void {
  if (size <= 0) return;
  const { s, res, counts } = c;
  const fileLen = s.file.totalBytes;
  if (offset + size - fileLen >= s.clusterSize) {
    res.messages.push(`ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset ${hex(offset)} size ${hex(size)}`);
    res.corruptions++;
    return;
  }
  const cs = s.clusterSize;
  const first = Math.floor(offset / cs);
  const last = Math.floor((offset + size - 1) / cs);
  const max = Math.min(maxRefcount(s.header.refcountOrder), 0xffffffff);
  counts.grow(last + 1);
  for (let k = first; k <= last; k++) {
    const v = counts.a[k]!;
    if (v >= max) {
      res.messages.push(`ERROR: overflow cluster offset=${hex(k * cs)}`);
      res.messages.push('Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing');
      res.corruptions++;
      continue;
    }
    counts.a[k] = v + 1;
  }
}

/** check_refcounts_l2 */
async function checkL2(c: Ctx, l2Offset: number, flags: number): Promise<void> {
  const { s, res } = c;
  const eb = s.l2EntryBytes;
  const table = new Uint8Array(s.clusterSize);
  await bdrvPread(s.file, l2Offset, s.clusterSize, table);
  let nextContiguous = 0;
  let dirty = false;
  for (let i = 0; i < s.l2Size; i++) {
    const p = i * eb;
    let hi = be.u32(table, p);
    const lo = be.u32(table, p + 4);
    const bmHi = s.extendedL2 ? be.u32(table, p + 8) : 0;
    const bmLo = s.extendedL2 ? be.u32(table, p + 12) : 0;
    const compressed = (hi & 0x40000000) !== 0;
    const offset = entryOffset(hi, lo);
    let type: 'compressed' | 'zeroPlain' | 'zeroAlloc' | 'normal' | 'unallocated';
    if (compressed) type = 'compressed';
    else if (lo & 1 && !s.extendedL2) type = offset ? 'zeroAlloc' : 'zeroPlain';
    else if (!offset) type = c.hasDataFile && hi & 0x80000000 ? 'normal' : 'unallocated';
    else type = 'normal';

    if (type !== 'compressed' && (hi & 0x3f000000 || lo & 0x1fe)) {
      res.messages.push(`ERROR found l2 entry with reserved bits set: ${hex64(hi, lo)}`);
      res.corruptions++;
    }
    switch (type) {
      case 'compressed': {
        const d = parseCompressedDescriptor(hi & 0x3fffffff, lo, s.clusterBits);
        if (hi & 0x80000000) {
          res.messages.push(`ERROR: coffset=${hex(d.coffset)}: copied flag must never be set for compressed clusters`);
          hi &= 0x7fffffff;
          res.corruptions++;
        }
        if (c.hasDataFile) {
          res.messages.push(`ERROR compressed cluster ${i} with data file, entry=${hex(hi * TWO32 + (lo >>> 0))}`);
          res.corruptions++;
          break;
        }
        if (bmHi || bmLo) {
          res.messages.push(`ERROR compressed cluster ${i} with non-zero subcluster allocation bitmap, entry=${hex(hi * TWO32 + (lo >>> 0))}`);
          res.corruptions++;
          break;
        }
        incRefcounts(c, d.coffset, d.csize);
        if (flags & CHECK_FRAG_INFO) {
          res.allocatedClusters++;
          res.compressedClusters++;
          res.fragmentedClusters++;
        }
        break;
      }
      case 'zeroAlloc':
      case 'normal': {
        if ((bmHi & bmLo) !== 0) {
          res.corruptions++;
          res.messages.push(`ERROR offset=${offset.toString(16)}: Allocated cluster has corrupted subcluster allocation bitmap`);
        }
        if (offset % s.clusterSize !== 0) {
          res.corruptions++;
          const containsData = s.extendedL2 ? bmLo !== 0 : !(lo & 1);
          if (!containsData) {
            res.messages.push(`${c.fix.errors ? 'Repairing' : 'ERROR'} offset=${offset.toString(16)}: Preallocated cluster is not properly aligned; L2 entry corrupted.`);
            if (c.fix.errors) {
              // fix_l2_entry_by_zero: the entry becomes a plain zero cluster.
              be.put32(table, p, 0);
              be.put32(table, p + 4, s.extendedL2 ? 0 : 1);
              if (s.extendedL2) {
                be.put32(table, p + 8, 0xffffffff);
                be.put32(table, p + 12, 0);
              }
              dirty = true;
              res.corruptions--;
              res.corruptionsFixed++;
              continue;
            }
          } else {
            res.messages.push(`ERROR offset=${offset.toString(16)}: Data cluster is not properly aligned; L2 entry corrupted.`);
          }
        }
        if (flags & CHECK_FRAG_INFO) {
          res.allocatedClusters++;
          if (nextContiguous && offset !== nextContiguous) res.fragmentedClusters++;
          nextContiguous = offset + s.clusterSize;
        }
        if (!c.hasDataFile) incRefcounts(c, offset, s.clusterSize);
        break;
      }
      case 'zeroPlain':
        break;
      case 'unallocated':
        if (bmLo !== 0) {
          res.corruptions++;
          res.messages.push('ERROR: Unallocated cluster has non-zero subcluster allocation map');
        }
        break;
    }
  }
  if (dirty) {
    await bdrvPwrite(s.file, l2Offset, s.clusterSize, table);
    s.l2Cache.invalidate(l2Offset, s.clusterSize);
  }
}

/** check_refcounts_l1 */
async function checkL1(c: Ctx, l1Offset: number, l1Size: number, flags: number): Promise<void> {
  if (!l1Size) return;
  const { s, res } = c;
  incRefcounts(c, l1Offset, l1Size * 8);
  const l1 = new Uint8Array(l1Size * 8);
  await bdrvPread(s.file, l1Offset, l1.length, l1);
  for (let i = 0; i < l1Size; i++) {
    const hi = be.u32(l1, i * 8);
    const lo = be.u32(l1, i * 8 + 4);
    if (!hi && !lo) continue;
    if (hi & 0x7f000000 || lo & 0x1ff) {
      res.messages.push(`ERROR found L1 entry with reserved bits set: ${hex64(hi, lo)}`);
      res.corruptions++;
    }
    const l2 = entryOffset(hi, lo);
    incRefcounts(c, l2, s.clusterSize);
    if (l2 % s.clusterSize !== 0) {
      res.messages.push(`ERROR l2_offset=${l2.toString(16)}: Table is not cluster aligned; L1 entry corrupted`);
      res.corruptions++;
    }
    await checkL2(c, l2, flags);
  }
}

/** Bytes of the snapshot table as stored (entries padded to 8). */
function snapshotsSize(s: Qcow2State): number {
  const enc = new TextEncoder();
  let n = 0;
  for (const sn of s.snapshots) {
    const len = 40 + sn.extraDataSize + enc.encode(sn.idStr).length + enc.encode(sn.name).length;
    n += len + ((8 - (len % 8)) % 8);
  }
  return n;
}

/** qcow2_check_bitmaps_refcounts: directory, bitmap tables and their data clusters. */
async function countBitmaps(c: Ctx): Promise<void> {
  const { s } = c;
  if (!s.bitmaps.length) return;
  const ext = s.header.extensions.find((e) => e.type === 0x23852875) as { bitmapDirectoryOffset: number; bitmapDirectorySize: number } | undefined;
  if (!ext) return;
  incRefcounts(c, ext.bitmapDirectoryOffset, ext.bitmapDirectorySize);
  for (const b of s.bitmaps) {
    const bytes = b.bitmapTableSize * 8;
    incRefcounts(c, b.bitmapTableOffset, bytes);
    if (!bytes || b.bitmapTableOffset + bytes > s.file.totalBytes) continue;
    const t = new Uint8Array(bytes);
    await bdrvPread(s.file, b.bitmapTableOffset, bytes, t);
    for (let i = 0; i < b.bitmapTableSize; i++) {
      const off = entryOffset(be.u32(t, i * 8), be.u32(t, i * 8 + 4));
      if (off) incRefcounts(c, off, s.clusterSize);
    }
  }
}

/** check_refblocks: every refcount block referenced once, inside the file, aligned. */
async function checkRefblocks(c: Ctx, disk: DiskRefcounts): Promise<boolean> {
  const { s, res, fix } = c;
  let rebuild = false;
  const cs = s.clusterSize;
  for (let i = 0; i < disk.table.length; i++) {
    const offset = disk.table[i]!;
    const cluster = Math.floor(offset / cs);
    if (disk.rawLow[i]! & 0x1ff) {
      res.messages.push(`ERROR refcount table entry ${i} has reserved bits set`);
      res.corruptions++;
      rebuild = true;
      continue;
    }
    if (offset % cs !== 0) {
      res.messages.push(`ERROR refcount block ${i} is not cluster aligned; refcount table entry corrupted`);
      res.corruptions++;
      rebuild = true;
      continue;
    }
    if (cluster >= c.counts.n) {
      res.corruptions++;
      res.messages.push(`${fix.errors ? 'Repairing' : 'ERROR'} refcount block ${i} is outside image`);
      if (fix.errors) {
        // As QEMU: the file grows to hold the block (it reads as zeros, so the rebuild follows).
        if (offset + cs > Number.MAX_SAFE_INTEGER || cluster >= MAX_COUNTED_CLUSTERS) {
          rebuild = true;
          res.messages.push('ERROR could not resize image: Invalid argument');
          continue;
        }
        await bdrvTruncate(s.file, offset + cs);
        c.counts.grow(Math.ceil(s.file.totalBytes / cs));
        res.corruptions--;
        res.corruptionsFixed++;
        incRefcounts(c, offset, cs);
      }
      continue;
    }
    if (offset !== 0) {
      incRefcounts(c, offset, cs);
      const v = c.counts.get(cluster);
      if (v !== 1) {
        res.messages.push(`ERROR refcount block ${i} refcount=${v}`);
        res.corruptions++;
        rebuild = true;
      }
    }
  }
  return rebuild;
}

/** calculate_refcounts: the references, counted. Returns whether a rebuild is needed. */
async function calculateRefcounts(c: Ctx, disk: DiskRefcounts): Promise<boolean> {
  const { s, res } = c;
  incRefcounts(c, 0, s.clusterSize);
  await checkL1(c, s.header.l1TableOffset, s.header.l1Size, CHECK_FRAG_INFO);
  if (c.hasDataFile && s.snapshots.length) {
    res.messages.push(`ERROR ${s.snapshots.length} snapshots in image with data file`);
    res.corruptions++;
  }
  for (const sn of s.snapshots) {
    if (sn.l1TableOffset % s.clusterSize !== 0) {
      res.messages.push(`ERROR snapshot ${sn.idStr} (${sn.name}) l1_offset=${hex(sn.l1TableOffset)}: L1 table is not cluster aligned; snapshot table entry corrupted`);
      res.corruptions++;
      continue;
    }
    if (sn.l1Size > QCOW_MAX_L1_SIZE / 8) {
      res.messages.push(`ERROR snapshot ${sn.idStr} (${sn.name}) l1_size=${hex(sn.l1Size)}: L1 table is too large; snapshot table entry corrupted`);
      res.corruptions++;
      continue;
    }
    await checkL1(c, sn.l1TableOffset, sn.l1Size, 0);
  }
  incRefcounts(c, s.header.snapshotsOffset, snapshotsSize(s));
  incRefcounts(c, s.header.refcountTableOffset, s.header.refcountTableClusters * s.clusterSize);
  await countBitmaps(c);
  return checkRefblocks(c, disk);
}

/** compare_refcounts: stored vs counted, fixing what `fix` allows. Returns [rebuild, highest cluster]. */
async function compareRefcounts(c: Ctx, disk: DiskRefcounts, fix: CheckFix, nbClusters: number): Promise<{ rebuild: boolean; highest: number }> {
  const { res } = c;
  let rebuild = false;
  let highest = 0;
  const n = Math.max(nbClusters, 0);
  for (let i = 0; i < n; i++) {
    let stored: number;
    try {
      stored = await disk.get(i);
    } catch (e) {
      res.messages.push(`Can't get refcount for cluster ${i}: ${e instanceof Error ? e.message : String(e)}`);
      res.checkErrors++;
      continue;
    }
    const counted = c.counts.get(i);
    if (stored > 0 || counted > 0) highest = i;
    if (stored === counted) continue;
    let fixedCounter: 'leaksFixed' | 'corruptionsFixed' | undefined;
    if (stored === 0) rebuild = true;
    else if (stored > counted && fix.leaks) fixedCounter = 'leaksFixed';
    else if (stored < counted && fix.errors) fixedCounter = 'corruptionsFixed';
    res.messages.push(`${fixedCounter ? 'Repairing' : stored < counted ? 'ERROR' : 'Leaked'} cluster ${i} refcount=${stored} reference=${counted}`);
    if (fixedCounter) {
      try {
        if (counted > maxRefcount(c.s.header.refcountOrder)) throw new BlockError('EINVAL', 'refcount overflow');
        await disk.set(i, counted);
        res[fixedCounter]++;
        continue;
      } catch {
        // Counted below as not fixed.
      }
    }
    if (stored < counted) res.corruptions++;
    else res.leaks++;
  }
  return { rebuild, highest };
}

/** check_oflag_copied: COPIED exactly where the refcount is 1 (active L1 and its L2 tables). */
async function checkOflagCopied(c: Ctx, disk: DiskRefcounts, fix: CheckFix): Promise<void> {
  const { s, res } = c;
  const repair = fix.errors ? true : fix.leaks ? !res.checkErrors && !res.corruptions && !res.leaks : false;
  const eb = s.l2EntryBytes;
  const table = new Uint8Array(s.clusterSize);
  for (let i = 0; i < s.l1Size; i++) {
    const hi = be.u32(s.l1Table, i * 8);
    const lo = be.u32(s.l1Table, i * 8 + 4);
    const l2 = entryOffset(hi, lo);
    if (!l2) continue;
    let rc: number;
    try {
      rc = await disk.get(Math.floor(l2 / s.clusterSize));
    } catch {
      continue;
    }
    if ((rc === 1) !== ((hi & 0x80000000) !== 0)) {
      res.corruptions++;
      res.messages.push(`${repair ? 'Repairing' : 'ERROR'} OFLAG_COPIED L2 cluster: l1_index=${i} l1_entry=${hex64(hi, lo)} refcount=${rc}`);
      if (repair) {
        be.put32(s.l1Table, i * 8, rc === 1 ? (hi | 0x80000000) >>> 0 : hi & 0x7fffffff);
        await bdrvPwrite(s.file, s.header.l1TableOffset + i * 8, 8, s.l1Table.subarray(i * 8, i * 8 + 8));
        res.corruptions--;
        res.corruptionsFixed++;
      }
    }
    await bdrvPread(s.file, l2, s.clusterSize, table);
    let dirty = 0;
    for (let j = 0; j < s.l2Size; j++) {
      const ehi = be.u32(table, j * eb);
      const elo = be.u32(table, j * eb + 4);
      const off = entryOffset(ehi, elo);
      if (ehi & 0x40000000) continue; // compressed
      const zeroFlag = !s.extendedL2 && elo & 1;
      const normal = off !== 0 || (c.hasDataFile && (ehi & 0x80000000) !== 0 && !zeroFlag);
      if (!normal) continue;
      let erc: number;
      if (c.hasDataFile) erc = 1;
      else {
        try {
          erc = await disk.get(Math.floor(off / s.clusterSize));
        } catch {
          continue;
        }
      }
      if ((erc === 1) !== ((ehi & 0x80000000) !== 0)) {
        res.corruptions++;
        res.messages.push(`${repair ? 'Repairing' : 'ERROR'} OFLAG_COPIED data cluster: l2_entry=${hex64(ehi, elo)} refcount=${erc}`);
        if (repair) {
          be.put32(table, j * eb, erc === 1 ? (ehi | 0x80000000) >>> 0 : ehi & 0x7fffffff);
          dirty++;
        }
      }
    }
    if (dirty) {
      await bdrvPwrite(s.file, l2, s.clusterSize, table);
      s.l2Cache.invalidate(l2, s.clusterSize);
      res.corruptions -= dirty;
      res.corruptionsFixed += dirty;
    }
  }
}

/**
 * rebuild_refcount_structure: new refcount blocks and table for the counted
 * references, written past the end of the file and flushed, then the header
 * switched to them.
 */
async function rebuildRefcounts(c: Ctx): Promise<void> {
  const { s } = c;
  const cs = s.clusterSize;
  const counts = c.counts.a.subarray(0, lastUsed(c.counts.a) + 1);
  const rs = await writeRefcountStructure(s.file, counts, cs, s.header.refcountOrder, 0);
  await bdrvFlush(s.file);
  const b = new Uint8Array(12);
  be.put64(b, 0, rs.tableOffset);
  be.put32(b, 8, rs.tableClusters);
  await bdrvPwrite(s.file, 48, 12, b);
  await bdrvFlush(s.file);
  s.header.refcountTableOffset = rs.tableOffset;
  s.header.refcountTableClusters = rs.tableClusters;
}

function lastUsed(a: Uint32Array): number {
  for (let i = a.length - 1; i >= 0; i--) if (a[i] !== 0) return i;
  return -1;
}

/** Rewrites incompatible_features from the in-memory header and flushes. */
async function writeIncompatible(s: Qcow2State): Promise<void> {
  await writeIncompatibleFeatures(s);
  await bdrvFlush(s.file);
}

/** qcow2_check_refcounts */
async function checkRefcounts(bs: BlockNode, s: Qcow2State, fix: CheckFix): Promise<Res> {
  let res = newRes();
  const cs = s.clusterSize;
  let nbClusters = Math.ceil(s.file.totalBytes / cs);
  if (nbClusters > MAX_COUNTED_CLUSTERS) {
    res.checkErrors++;
    res.messages.push(`ERROR: the image file has ${nbClusters} clusters; blocktab checks at most ${MAX_COUNTED_CLUSTERS}`);
    return res;
  }
  res.totalClusters = Math.ceil(s.header.size / cs);
  const hasDataFile = (s.header.incompatibleFeatures & QCOW2_INCOMPAT_DATA_FILE) !== 0n;
  const msgSink = { messages: res.messages };
  const disk = new DiskRefcounts(s, msgSink);
  await disk.load();
  let c: Ctx = { bs, s, res, counts: new Counts(nbClusters), fix, hasDataFile };
  let rebuild = await calculateRefcounts(c, disk);
  nbClusters = c.counts.n;
  const preCompare: Res = { ...res, messages: [] };
  const noFix = { leaks: false, errors: false };
  let cmp = await compareRefcounts(c, disk, noFix, nbClusters);
  rebuild ||= cmp.rebuild;
  let highest = cmp.highest;

  if (rebuild && fix.errors) {
    const old = { corruptions: res.corruptions, leaks: res.leaks };
    res.messages.push('Rebuilding refcount structure');
    await rebuildRefcounts(c);
    await disk.load();
    // Count again: the new refcount structures are referenced by the header now.
    const again = newRes();
    c = { ...c, res: again, counts: new Counts(Math.ceil(s.file.totalBytes / cs)) };
    msgSink.messages = again.messages;
    await calculateRefcounts(c, disk);
    // Clusters the old structures used are leaked now; QEMU frees them here and does not count them as fixed.
    const cmp2 = await compareRefcounts(c, disk, { leaks: fix.leaks, errors: false }, c.counts.n);
    if (cmp2.rebuild) res.messages.push('ERROR rebuilt refcount structure is still broken');
    highest = cmp2.highest;
    res.messages.push(...again.messages);
    msgSink.messages = res.messages;
    res.corruptions = again.corruptions;
    res.leaks = again.leaks;
    res.checkErrors += again.checkErrors;
    if (res.corruptions < old.corruptions) res.corruptionsFixed += old.corruptions - res.corruptions;
    if (res.leaks < old.leaks) res.leaksFixed += old.leaks - res.leaks;
    c.res = res;
  } else if (fix.leaks || fix.errors) {
    if (rebuild) {
      res.messages.push('ERROR need to rebuild refcount structures');
      res.checkErrors++;
      throw new CheckFailed('EIO', res.messages);
    }
    if (res.leaks || res.corruptions) {
      const messages = res.messages;
      res = { ...preCompare, messages };
      msgSink.messages = messages;
      c.res = res;
      cmp = await compareRefcounts(c, disk, fix, nbClusters);
      highest = cmp.highest;
    }
  }
  await checkOflagCopied(c, disk, fix);
  res.imageEndOffset = (highest + 1) * cs;
  return res;
}

/**
 * Checks (and with `fix` repairs) an opened qcow2 node, as qemu-img check
 * does; the driver's `check` callback. Repair needs the node read-write.
 */
export async function checkImage(bs: BlockNode, opts: { fix: CheckFix }): Promise<CheckResult> {
  const s = bs.state<Qcow2State>();
  const fix = opts.fix;
  const repairing = fix.leaks || fix.errors;
  if (repairing && bs.readOnly) throw new BlockError('EPERM', `${s.image}: cannot repair an image opened read-only`);
  if (!bs.readOnly) await flushMetadata(s);
  let res: Res;
  try {
    res = await checkRefcounts(bs, s, fix);
  } finally {
    if (repairing) {
      await bdrvFlush(s.file);
      dropRefcountCache(s);
      s.l2Cache.clear();
    }
  }
  if (repairing && res.checkErrors === 0 && res.corruptions === 0) {
    // qcow2_mark_clean + qcow2_mark_consistent: dirty and corrupt bits cleared.
    const h = s.header;
    const bits = QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT;
    if (h.version === 3 && h.incompatibleFeatures & bits) {
      h.incompatibleFeatures &= ~bits;
      await writeIncompatible(s);
    }
    s.rw.corrupt = false;
    s.rw.dirtyBitSet = false;
  }
  return {
    corruptions: res.corruptions,
    leaks: res.leaks,
    checkErrors: res.checkErrors,
    corruptionsFixed: res.corruptionsFixed,
    leaksFixed: res.leaksFixed,
    imageEndOffset: res.imageEndOffset,
    totalClusters: res.totalClusters,
    allocatedClusters: res.allocatedClusters,
    fragmentedClusters: res.fragmentedClusters,
    compressedClusters: res.compressedClusters,
    messages: res.messages,
  };
}
