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
 * counter per host cluster of the file, as wide as the image's refcounts
 * (bounded, see maxCheckedClusters); metadata is read straight from the
 * file, as QEMU's check does, after the node's caches were written back.
 *
 * Speed: each L2 table and each refcount block is read once per pass and
 * walked in a synchronous loop (no await per cluster). The COPIED check of
 * the active L2 tables is computed in the counting pass while each table is
 * in memory and reused at its place in the output when the check wrote
 * nothing in between (otherwise the tables are read again, as QEMU does).
 *
 * Repairs (fix.leaks: refcounts lowered; fix.errors: refcounts raised,
 * COPIED flags corrected, broken structures rebuilt) keep the image valid
 * at every step: a refcount only drops for a cluster nothing references, and
 * a rebuilt refcount structure is written and flushed past the end of the
 * file before the header is switched to it.
 */
import { bitmapTableEntryProblem, parseBitmapTableEntry } from './bitmap-table.js';
import { BlockError, CheckFailedError, hex } from '../../block/errors.js';
import type { CheckReport, CheckResult } from '../../block/driver.js';
import type { BlockNode } from '../../block/node.js';
import { bdrvFlush, bdrvPread, bdrvPwrite, bdrvTruncate } from '../../block/io.js';
import { allocBuffer, freeBuffer } from '../../block/buffers.js';
import { be, findExtension, QCOW2_EXT_MAGIC_BITMAPS, QCOW2_EXT_MAGIC_CRYPTO_HEADER, QCOW2_INCOMPAT_CORRUPT, QCOW2_INCOMPAT_DIRTY, QCOW2_INCOMPAT_DATA_FILE } from './header.js';
import {
  entryClusterIndex,
  entryHasOffset,
  entryHi,
  entryLo,
  entryOffset,
  entryOffsetAt,
  L1E_RESERVED_HI,
  L1E_RESERVED_LO,
  L2E_RESERVED_HI,
  L2E_RESERVED_LO,
  parseCompressedDescriptor,
  QCOW_OFLAG_COMPRESSED,
  QCOW_OFLAG_COPIED,
  QCOW_OFLAG_ZERO,
  setCopiedAt,
  withCopied,
  writeL2Entry,
} from './l2-entry.js';
import { counterWidth, l2CountMasks, RefTally, type CountMasks } from './check-kernel.js';
import type { CountCells } from '../../wasm/refcount.js';
import { getRefcountEntry, refcountEntryText, reftableEntryOffset, reftableEntryReserved, setRefcountEntry } from './refcount-codec.js';
import { dropRefcountCache } from './refcount.js';
import { MAX_COUNTED_CLUSTERS, maxRefcount, writeRefcountStructure } from './repair-refcounts.js';
import { QCOW_MAX_L1_SIZE } from './validate.js';
import { flushMetadata } from './l1.js';
import { writeHeaderFields, writeIncompatibleFeatures } from './metadata.js';
import type { Qcow2State } from './state.js';
import { prepareHeader } from './write.js';
import { checkFixSnapshotTable, checkReadSnapshotTable, SnapshotCheckFailed, type SnapshotCheckRes } from './check-snapshots.js';

/**
 * The check stopped (QEMU's check returning -errno): after the lines already
 * reported qemu-img prints "Check failed: <reason>" instead of a summary.
 */
export class CheckFailed extends CheckFailedError {
  constructor(code: 'EIO' | 'EFBIG' | 'EINVAL') {
    super(code, code === 'EIO' ? 'Input/output error' : code === 'EINVAL' ? 'Invalid argument' : 'File too large');
  }
}

export interface CheckFix {
  leaks: boolean;
  errors: boolean;
}

/**
 * Where the check's lines go: passed on to the caller's CheckReport as they
 * come, none kept (a leaky image makes one per cluster).
 */
interface CheckLines {
  push(...lines: string[]): void;
}

function linesTo(report: CheckReport): CheckLines {
  return { push: (...lines) => lines.forEach((l) => report(l)) };
}

/** Lines nobody sees (a check whose output qemu-img would not show). */
const DISCARD: CheckLines = { push: () => {} };

/** Internal result (QEMU's BdrvCheckResult plus where the lines qcow2 prints to stderr go). */
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
  messages: CheckLines;
}

function newRes(messages: CheckLines): Res {
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
    messages,
  };
}

const CHECK_FRAG_INFO = 2;

/** A 64-bit entry as hex without 0x (QEMU's PRIx64). */
function hex64(hi: number, lo: number): string {
  return hi ? hi.toString(16) + (lo >>> 0).toString(16).padStart(8, '0') : (lo >>> 0).toString(16);
}

/**
 * Where the check's lines go (nowhere when qemu-img would not show them),
 * and how many writes it made so far: a finding computed from bytes read
 * earlier is only reused while no write came in between.
 */
interface CheckLog {
  messages: CheckLines;
  writes: number;
}

type CountArray = CountCells;

/**
 * In-memory reference counts, one per host cluster (QEMU's refcount "imrt").
 * `n` is QEMU's nb_clusters: the file's clusters, raised to cover every
 * cluster a reference touched.
 *
 * The counters are as wide as the image's refcounts (8 bits for
 * refcount_bits <= 8, 16 for 16, 32 for 32 and 64) and that is exact: a count
 * never passes `max`, because one more reference to a cluster at the
 * maximum is reported as an overflow and not counted, as QEMU's
 * qcow2_inc_refcounts_imrt does with its refcount_bits-wide table. With the
 * default 16 bits a 1 TiB image costs 32 MiB. The array is sized once from
 * the file, with one cluster to spare: a reference may end at most inside
 * the cluster past the end of the file (incRefcounts). It lives in a
 * RefTally (check-kernel.ts), in wasm memory when it can, with the marks of
 * the COPIED check; `release` returns that memory.
 */
/** QEMU's check refuses files of more clusters than an int holds (-EFBIG). */
const QEMU_MAX_CHECKED_CLUSTERS = 2 ** 31 - 1;
/** Bytes of counters a check may hold: the bound on its memory, whatever the width. */
const MAX_COUNTER_BYTES = MAX_COUNTED_CLUSTERS * 4;

/**
 * The most host clusters a check counts when the largest refcount is `max`:
 * as many counters as fit MAX_COUNTER_BYTES at their width (1, 2 or 4 bytes),
 * and never more than QEMU's check takes. Narrow refcounts reach further
 * (iotest 220: 2^28 clusters of 1-bit refcounts, 256 MiB of counters).
 */
export function maxCheckedClusters(max: number): number {
  return Math.min(QEMU_MAX_CHECKED_CLUSTERS, Math.floor(MAX_COUNTER_BYTES / counterWidth(max)));
}

class Counts {
  tally: RefTally;
  n: number;
  /** Largest count (the refcount width's maximum, at most 2^32 - 1). */
  readonly max: number;
  constructor(
    n: number,
    refcountOrder: number,
    private readonly withMarks: boolean,
  ) {
    this.n = n;
    this.max = Math.min(maxRefcount(refcountOrder), 0xffffffff);
    this.tally = new RefTally(n + 1, this.max, withMarks);
  }
  /** The most clusters this check counts (maxCheckedClusters for its width). */
  get cap(): number {
    return maxCheckedClusters(this.max);
  }
  get a(): CountArray {
    return this.tally.counts;
  }
  grow(n: number): void {
    if (n > this.cap) throw new BlockError('EFBIG', `refcount array for ${n} clusters is too large to check (at most ${this.cap})`);
    if (n > this.n) this.n = n;
    if (n <= this.a.length) return;
    // Only a repair that extends the file (a refcount block outside it) gets here.
    const old = this.tally;
    const t = new RefTally(n + 1, this.max, this.withMarks);
    t.counts.set(old.counts);
    if (old.marks && t.marks) {
      t.marks.set(old.marks.subarray(0, old.markBytes), 0);
      t.marks.set(old.marks.subarray(old.markBytes), t.markBytes);
    }
    Object.assign(t.st, { next: old.st.next, allocated: old.st.allocated, fragmented: old.st.fragmented, highest: old.st.highest, marksBad: old.st.marksBad });
    old.free();
    this.tally = t;
  }
  get(k: number): number {
    return k < this.a.length ? this.a[k]! : 0;
  }
  release(): void {
    this.tally.free();
  }
}

/**
 * Metadata read ahead: a run of clusters that follow each other in the file
 * (the L2 tables or refcount blocks of a preallocated image) is read in one
 * request into one buffer (from the arena, so the kernels read it in place),
 * and each cluster of the run is a view into it. The bytes are trusted only
 * while the check wrote nothing since they were read.
 */
class ReadAhead {
  private readonly buf: Uint8Array;
  private start = -1;
  private end = -1;
  private writes = -1;
  /** At most this many clusters per request. */
  readonly cap: number;

  constructor(
    private readonly s: Qcow2State,
    private readonly log: CheckLog,
  ) {
    this.cap = Math.max(1, Math.floor(READ_AHEAD_BYTES / s.clusterSize));
    this.buf = allocBuffer(this.cap * s.clusterSize);
  }

  /**
   * The cluster at `off`, which starts a run of `run` clusters (at most
   * `cap`, all inside the file; 0 when `off` is not such a cluster: then
   * exactly one cluster is read, as a plain read would).
   */
  async cluster(off: number, run: number): Promise<Uint8Array> {
    const cs = this.s.clusterSize;
    if (off >= this.start && off + cs <= this.end && this.writes === this.log.writes && (off - this.start) % cs === 0) {
      return this.buf.subarray(off - this.start, off - this.start + cs);
    }
    const len = Math.max(1, Math.min(run, this.cap)) * cs;
    this.start = this.end = -1;
    try {
      await bdrvPread(this.s.file, off, len, this.buf.subarray(0, len));
    } catch (e) {
      if (len === cs) throw e;
      // The run failed as a whole: the one cluster alone, so an error is the one a plain read would meet.
      await bdrvPread(this.s.file, off, cs, this.buf.subarray(0, cs));
      return this.buf.subarray(0, cs);
    }
    if (len > cs) {
      this.start = off;
      this.end = off + len;
      this.writes = this.log.writes;
    }
    return this.buf.subarray(0, cs);
  }

  release(): void {
    freeBuffer(this.buf);
  }
}

/** Bytes of metadata read per request when tables follow each other. */
const READ_AHEAD_BYTES = 4 << 20;

/** How many clusters from `first` follow each other in the file: at[j] for j >= first must be first's + (j - first) clusters, inside the file. */
function contiguousRun(at: (j: number) => number, first: number, count: number, cap: number, cs: number, fileLen: number): number {
  const off = at(first);
  if (off === 0 || off % cs !== 0) return 0;
  let m = 0;
  while (m < cap && first + m < count && at(first + m) === off + m * cs && off + (m + 1) * cs <= fileLen) m++;
  return m;
}

/** The refcounts stored on disk: the table, and the blocks read through a small cache that repairs write through. */
class DiskRefcounts {
  table: Float64Array = new Float64Array(0);
  /** Raw table entries, for the reserved-bit check. */
  rawLow: Uint32Array = new Uint32Array(0);
  /** Some table entry points at an unaligned block (looking a cluster up there signals corruption). */
  hasUnaligned = false;
  private blocks = new Map<number, Uint8Array>();
  /** Blocks kept: 64, fewer for large clusters (at most 8 MiB). */
  private readonly capacity: number;
  readonly perBlock: number;

  constructor(
    private readonly s: Qcow2State,
    private readonly log: CheckLog,
  ) {
    this.perBlock = (s.clusterSize * 8) / s.refcountBits;
    this.capacity = Math.min(64, Math.max(4, Math.floor((4 << 20) / s.clusterSize)));
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
    this.hasUnaligned = false;
    for (let i = 0; i < n; i++) {
      const hi = be.u32(raw, i * 8);
      const lo = be.u32(raw, i * 8 + 4);
      this.table[i] = reftableEntryOffset(hi, lo);
      this.rawLow[i] = lo;
      if (this.table[i]! % s.clusterSize !== 0) this.hasUnaligned = true;
    }
    this.release();
  }

  /**
   * The refcount block at aligned `offset`, cached; past the end of the file
   * reads as zeros, as QEMU's do. The returned bytes stay valid until the
   * next call (an evicted block's buffer is reused: a pass over a large
   * image then allocates `capacity` blocks, not one per refcount block).
   */
  async block(offset: number): Promise<Uint8Array> {
    let b = this.blocks.get(offset);
    if (b) return b;
    if (this.blocks.size >= this.capacity) {
      const oldest = this.blocks.keys().next().value as number;
      b = this.blocks.get(oldest);
      this.blocks.delete(oldest);
    }
    b ??= allocBuffer(this.s.clusterSize);
    await bdrvPread(this.s.file, offset, this.s.clusterSize, b);
    this.blocks.set(offset, b);
    return b;
  }

  /** Caches the bytes of the block at aligned `offset` (a copy, unless `bytes` is the cached block itself). */
  adopt(offset: number, bytes: Uint8Array): void {
    const b = this.blocks.get(offset);
    if (b === bytes) return;
    if (b) {
      b.set(bytes);
      return;
    }
    let slot: Uint8Array | undefined;
    if (this.blocks.size >= this.capacity) {
      const oldest = this.blocks.keys().next().value as number;
      slot = this.blocks.get(oldest);
      this.blocks.delete(oldest);
    }
    slot ??= allocBuffer(this.s.clusterSize);
    slot.set(bytes);
    this.blocks.set(offset, slot);
  }

  /** Returns the cached blocks' buffers (they may come from the arena). */
  release(): void {
    for (const b of this.blocks.values()) freeBuffer(b);
    this.blocks.clear();
  }

  /**
   * Block `i` of the table when no I/O is needed: null when there is none
   * (its clusters' refcounts are 0), undefined when get() must be asked
   * (not cached, or unaligned).
   */
  cachedBlock(i: number): Uint8Array | null | undefined {
    if (i >= this.table.length) return null;
    const off = this.table[i]!;
    if (off === 0) return null;
    // Unaligned blocks never enter the cache.
    return this.blocks.get(off);
  }

  /** Refcount of cluster `k`; throws for an unaligned refcount block (QEMU's qcow2_get_refcount -EIO). */
  async get(k: number): Promise<number> {
    const i = Math.floor(k / this.perBlock);
    if (i >= this.table.length) return 0;
    const off = this.table[i]!;
    if (off === 0) return 0;
    if (off % this.s.clusterSize !== 0) throw await this.unaligned(i);
    return getRefcountEntry(await this.block(off), this.s.refcountBits, k - i * this.perBlock);
  }

  /** Looking up a cluster of unaligned block `i`: corruption signalled, the error to fail with. */
  async unaligned(i: number): Promise<BlockError> {
    await this.signalCorruption(`Refblock offset ${hex(this.table[i]!)} unaligned (reftable index: ${i === 0 ? '0' : hex(i)})`);
    return new BlockError('EIO', 'Input/output error');
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
      this.log.messages.push(`qcow2: Image is corrupt: ${what}; further non-fatal corruption events will be suppressed`);
      return;
    }
    this.log.messages.push(`qcow2: Marking image as corrupt: ${what}; further corruption events will be suppressed`);
    if (s.header.version === 3) {
      s.header.incompatibleFeatures |= QCOW2_INCOMPAT_CORRUPT;
      this.log.writes++;
      await writeIncompatible(s);
    }
  }
}

/** An active L2 entry whose COPIED flag disagrees with its refcount (check_oflag_copied). */
interface CopiedFinding {
  /** Index in the L2 table. */
  j: number;
  hi: number;
  lo: number;
  refcount: number;
}

/**
 * check_oflag_copied's L2 half, prepared while the counting pass has each
 * active L2 table in memory: every active entry with an offset marks its
 * cluster (check-kernel.ts), and the comparison with the stored refcounts
 * tells whether any mark contradicts its refcount. When none does and the
 * check wrote nothing since the pass started (`writes`), no entry has a
 * COPIED finding and the tables need not be read again; otherwise they are,
 * as QEMU does. `unsure`: some entry could not be marked (its cluster lies
 * past what the comparison covers).
 */
interface CopiedPass {
  writes: number;
  unsure: boolean;
}

interface Ctx {
  bs: BlockNode;
  s: Qcow2State;
  res: Res;
  counts: Counts;
  fix: CheckFix;
  hasDataFile: boolean;
  disk: DiskRefcounts;
  log: CheckLog;
  copiedPass?: CopiedPass;
  /** The plain-entry masks of this image's L2 tables (computed once). */
  masks?: CountMasks;
  /** A bitmap table failed to load: after the comparison the check fails with EINVAL, as QEMU's does. */
  bitmapTableFailed?: boolean;
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
  counts.grow(last + 1);
  const a = counts.a;
  const max = counts.max;
  for (let k = first; k <= last; k++) {
    const v = a[k]!;
    if (v >= max) {
      res.messages.push(`ERROR: overflow cluster offset=${hex(k * cs)}`);
      res.messages.push('Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing');
      res.corruptions++;
      continue;
    }
    a[k] = v + 1;
  }
}

const L2_COMPRESSED = 0;
const L2_ZERO_PLAIN = 1;
const L2_ZERO_ALLOC = 2;
const L2_NORMAL = 3;
const L2_UNALLOCATED = 4;

/** check_refcounts_l2: counts the table at `l2Offset`, read into `table`, and writes back what it repaired. */
async function checkL2(c: Ctx, l2Offset: number, flags: number, table: Uint8Array, pass: CopiedPass | undefined): Promise<void> {
  const { s } = c;
  if (countL2(c, table, flags, pass)) {
    c.log.writes++;
    await bdrvPwrite(s.file, l2Offset, s.clusterSize, table);
    s.l2Cache.invalidate(l2Offset, s.clusterSize);
  }
}

/**
 * check_refcounts_l2's walk over a table in memory, synchronous: each
 * entry is checked and its clusters counted. Returns whether entries were
 * repaired in `table` (it must be written back). The kernel
 * (check-kernel.ts) takes the plain entries; each entry it stops at goes
 * through countEntry with QEMU's full rules. With `pass`, every active
 * entry with an offset is marked for the COPIED check.
 */
function countL2(c: Ctx, table: Uint8Array, flags: number, pass: CopiedPass | undefined): boolean {
  const { s, res, counts } = c;
  const frag = (flags & CHECK_FRAG_INFO) !== 0;
  const n = s.l2Size;
  const limit = Math.ceil(s.file.totalBytes / s.clusterSize);
  const masks = (c.masks ??= l2CountMasks(s.clusterBits, s.extendedL2));
  const st = counts.tally.st;
  st.next = 0;
  st.allocated = 0;
  st.fragmented = 0;
  let dirty = false;
  for (let i = 0; i < n; i++) {
    if (!c.hasDataFile) {
      i = counts.tally.countTable(table, i, n, masks, counts.max, limit, frag, pass !== undefined);
      if (i >= n) break;
    }
    if (countEntry(c, table, i, frag, pass)) dirty = true;
  }
  // A grown counter array carries the state over.
  const end = counts.tally.st;
  res.allocatedClusters += end.allocated;
  res.fragmentedClusters += end.fragmented;
  return dirty;
}

/** check_refcounts_l2 for entry `i` of `table`; returns whether it repaired the entry. */
function countEntry(c: Ctx, table: Uint8Array, i: number, frag: boolean, pass: CopiedPass | undefined): boolean {
  const { s, res } = c;
  const ext = s.extendedL2;
  const p = i * s.l2EntryBytes;
  const cs = s.clusterSize;
  let hi = be.u32(table, p);
  const lo = be.u32(table, p + 4);
  const bmHi = ext ? be.u32(table, p + 8) : 0;
  const bmLo = ext ? be.u32(table, p + 12) : 0;
  // Unallocated with an empty allocation bitmap: nothing to count or report.
  if ((hi | lo | bmLo) === 0) return false;
  const compressed = (hi & QCOW_OFLAG_COMPRESSED) !== 0;
  const offset = entryOffset(hi, lo);
  if (pass && offset && !compressed) {
    // Marked before counting can grow the array; a cluster past what the comparison covers leaves the pass unsure.
    const k = entryClusterIndex(hi, lo, s.clusterBits);
    if (k >= c.counts.n || !c.counts.tally.mark(k, (hi & QCOW_OFLAG_COPIED) !== 0)) pass.unsure = true;
  }
  let type: number;
  if (compressed) type = L2_COMPRESSED;
  else if (lo & QCOW_OFLAG_ZERO && !ext) type = offset ? L2_ZERO_ALLOC : L2_ZERO_PLAIN;
  else if (!offset) type = c.hasDataFile && hi & QCOW_OFLAG_COPIED ? L2_NORMAL : L2_UNALLOCATED;
  else type = L2_NORMAL;

  if (type !== L2_COMPRESSED && (hi & L2E_RESERVED_HI || lo & L2E_RESERVED_LO)) {
    res.messages.push(`ERROR found l2 entry with reserved bits set: ${hex64(hi, lo)}`);
    res.corruptions++;
  }
  if (type === L2_NORMAL || type === L2_ZERO_ALLOC) {
    if ((bmHi & bmLo) !== 0) {
      res.corruptions++;
      res.messages.push(`ERROR offset=${offset.toString(16)}: Allocated cluster has corrupted subcluster allocation bitmap`);
    }
    if (offset % cs !== 0) {
      res.corruptions++;
      const containsData = ext ? bmLo !== 0 : !(lo & QCOW_OFLAG_ZERO);
      if (!containsData) {
        res.messages.push(`${c.fix.errors ? 'Repairing' : 'ERROR'} offset=${offset.toString(16)}: Preallocated cluster is not properly aligned; L2 entry corrupted.`);
        if (c.fix.errors) {
          // fix_l2_entry_by_zero: the entry loses its offset; with extended L2 allocated subclusters become zero and
          // the others keep their state (an unallocated one still shows the backing file, 271).
          writeL2Entry(table, i, ext, ext ? { hi: 0, lo: 0, zero: (bmHi | bmLo) >>> 0, alloc: 0 } : { hi: 0, lo: QCOW_OFLAG_ZERO, zero: 0, alloc: 0 });
          res.corruptions--;
          res.corruptionsFixed++;
          return true;
        }
      } else {
        res.messages.push(`ERROR offset=${offset.toString(16)}: Data cluster is not properly aligned; L2 entry corrupted.`);
      }
    }
    if (frag) {
      const st = c.counts.tally.st;
      st.allocated++;
      if (st.next && offset !== st.next) st.fragmented++;
      st.next = offset + cs;
    }
    if (c.hasDataFile) return false;
    incRefcounts(c, offset, cs);
  } else if (type === L2_COMPRESSED) {
    const d = parseCompressedDescriptor(hi, lo, s.clusterBits);
    if (hi & QCOW_OFLAG_COPIED) {
      res.messages.push(`ERROR: coffset=${hex(d.coffset)}: copied flag must never be set for compressed clusters`);
      hi = withCopied(hi, false);
      res.corruptions++;
    }
    if (c.hasDataFile) {
      res.messages.push(`ERROR compressed cluster ${i} with data file, entry=${hex(hi * 0x100000000 + (lo >>> 0))}`);
      res.corruptions++;
      return false;
    }
    if (bmHi || bmLo) {
      res.messages.push(`ERROR compressed cluster ${i} with non-zero subcluster allocation bitmap, entry=${hex(hi * 0x100000000 + (lo >>> 0))}`);
      res.corruptions++;
      return false;
    }
    incRefcounts(c, d.coffset, d.csize);
    if (frag) {
      const st = c.counts.tally.st;
      st.allocated++;
      st.fragmented++;
      res.compressedClusters++;
    }
  } else if (type === L2_UNALLOCATED && bmLo !== 0) {
    res.corruptions++;
    res.messages.push('ERROR: Unallocated cluster has non-zero subcluster allocation map');
  }
  return false;
}

/**
 * check_oflag_copied's test for one L2 table in memory: the entries whose
 * COPIED flag is not (refcount == 1), in table order. Synchronous over the
 * cached refcount blocks; only an entry whose block is not cached waits for
 * a read. An entry whose refcount cannot be read is skipped, as QEMU does.
 */
async function copiedFindings(c: Ctx, table: Uint8Array): Promise<CopiedFinding[]> {
  const out: CopiedFinding[] = [];
  const { s } = c;
  let retried = -1;
  for (let j = 0; j < s.l2Size; ) {
    const stop = scanCopied(c, table, j, out);
    if (stop >= s.l2Size) break;
    // Nothing awaits between reading the block and the next scan, so it is still cached then.
    if (stop === retried) throw new BlockError('EIO', `${s.image}: refcount block cache lost a block it just read`);
    const off = entryOffsetAt(table, stop * s.l2EntryBytes);
    try {
      await c.disk.get(Math.floor(off / s.clusterSize));
    } catch {
      j = stop + 1;
      continue;
    }
    retried = j = stop;
  }
  return out;
}

/** copiedFindings' synchronous part, from entry `from`; returns where it stopped (an uncached block) or l2Size. */
function scanCopied(c: Ctx, table: Uint8Array, from: number, out: CopiedFinding[]): number {
  const { s, disk } = c;
  const eb = s.l2EntryBytes;
  const n = s.l2Size;
  const bits = s.refcountBits;
  const per = disk.perBlock;
  const cb = s.clusterBits;
  const dv = new DataView(table.buffer, table.byteOffset, table.byteLength);
  // Clusters [first, first + per) have their refcounts in `blk` (null: no block, all 0).
  let first = -1;
  let blk: Uint8Array | null = null;
  for (let j = from; j < n; j++) {
    const p = j * eb;
    const hi = dv.getUint32(p);
    const lo = dv.getUint32(p + 4);
    if ((hi | lo) === 0 || hi & QCOW_OFLAG_COMPRESSED) continue; // unallocated, compressed
    if (!entryHasOffset(hi, lo)) {
      const zeroFlag = !s.extendedL2 && (lo & QCOW_OFLAG_ZERO) !== 0;
      if (!(c.hasDataFile && hi & QCOW_OFLAG_COPIED && !zeroFlag)) continue;
    }
    let refcount = 1;
    if (!c.hasDataFile) {
      const k = entryClusterIndex(hi, lo, cb);
      if (first < 0 || k < first || k >= first + per) {
        const i = Math.floor(k / per);
        const b = disk.cachedBlock(i);
        if (b === undefined) return j;
        first = i * per;
        blk = b;
      }
      refcount = blk ? getRefcountEntry(blk, bits, k - first) : 0;
    }
    if ((refcount === 1) !== ((hi & QCOW_OFLAG_COPIED) !== 0)) out.push({ j, hi, lo, refcount });
  }
  return n;
}

/**
 * The active L1 table as read by the counting pass may stand in for the
 * node's in-memory one (which check_oflag_copied walks) only when they are
 * the same bytes; and the pass may look refcounts up only when doing so
 * cannot signal corruption out of QEMU's order (no unaligned refcount block).
 */
function startCopiedPass(c: Ctx, l1: Uint8Array, l1Size: number): CopiedPass | undefined {
  const { s } = c;
  if (c.disk.hasUnaligned || c.hasDataFile || !c.counts.tally.marks) return undefined;
  if (s.l1Size !== l1Size || s.l1Table.length < l1.length) return undefined;
  for (let i = 0; i < l1.length; i++) if (s.l1Table[i] !== l1[i]) return undefined;
  return { writes: c.log.writes, unsure: false };
}

/** check_refcounts_l1 (the active table also gathers its COPIED findings while each L2 table is in memory). */
async function checkL1(c: Ctx, l1Offset: number, l1Size: number, flags: number): Promise<void> {
  if (!l1Size) return;
  const { s, res } = c;
  incRefcounts(c, l1Offset, l1Size * 8);
  const l1 = new Uint8Array(l1Size * 8);
  await bdrvPread(s.file, l1Offset, l1.length, l1);
  const pass = flags & CHECK_FRAG_INFO ? startCopiedPass(c, l1, l1Size) : undefined;
  if (pass) c.copiedPass = pass;
  const ahead = new ReadAhead(s, c.log);
  try {
    await walkL1(c, l1, l1Size, flags, pass, ahead);
  } finally {
    ahead.release();
  }
}

/** check_refcounts_l1's loop over the entries (L2 tables read ahead in runs). */
async function walkL1(c: Ctx, l1: Uint8Array, l1Size: number, flags: number, pass: CopiedPass | undefined, ahead: ReadAhead): Promise<void> {
  const { s, res } = c;
  const l1Offset = (j: number) => entryOffset(entryHi(l1, j * 8), entryLo(l1, j * 8));
  for (let i = 0; i < l1Size; i++) {
    const hi = entryHi(l1, i * 8);
    const lo = entryLo(l1, i * 8);
    if (!hi && !lo) continue;
    if (hi & L1E_RESERVED_HI || lo & L1E_RESERVED_LO) {
      res.messages.push(`ERROR found L1 entry with reserved bits set: ${hex64(hi, lo)}`);
      res.corruptions++;
    }
    const l2 = entryOffset(hi, lo);
    incRefcounts(c, l2, s.clusterSize);
    if (l2 % s.clusterSize !== 0) {
      res.messages.push(`ERROR l2_offset=${l2.toString(16)}: Table is not cluster aligned; L1 entry corrupted`);
      res.corruptions++;
    }
    const table = await ahead.cluster(l2, contiguousRun(l1Offset, i, l1Size, ahead.cap, s.clusterSize, s.file.totalBytes));
    await checkL2(c, l2, flags, table, pass);
  }
}

/** Bytes of the snapshot table as stored (entries padded to 8). */
function snapshotsSize(s: Qcow2State): number {
  if (s.snapshotsSize !== undefined) return s.snapshotsSize;
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
  const ext = findExtension(s.header, QCOW2_EXT_MAGIC_BITMAPS);
  if (!ext) return;
  incRefcounts(c, ext.bitmapDirectoryOffset, ext.bitmapDirectorySize);
  for (const b of s.bitmaps) {
    const bytes = b.bitmapTableSize * 8;
    incRefcounts(c, b.bitmapTableOffset, bytes);
    if (!bytes || b.bitmapTableOffset + bytes > s.file.totalBytes) continue;
    const t = new Uint8Array(bytes);
    await bdrvPread(s.file, b.bitmapTableOffset, bytes, t);
    // As qcow2_check_bitmaps_refcounts: a table with an invalid entry does not load, is one
    // corruption, and none of its data clusters is counted (they show as leaked).
    let bad = false;
    for (let i = 0; i < b.bitmapTableSize && !bad; i++) bad = bitmapTableEntryProblem(t, i, s.clusterSize) !== null;
    if (bad) {
      c.res.corruptions++;
      c.bitmapTableFailed = true;
      return;
    }
    for (let i = 0; i < b.bitmapTableSize; i++) {
      const off = parseBitmapTableEntry(t, i).offset;
      if (off) incRefcounts(c, off, s.clusterSize);
    }
  }
}

/** check_refblocks: every refcount block referenced once, inside the file, aligned. */
async function checkRefblocks(c: Ctx): Promise<boolean> {
  const { s, res, fix, disk } = c;
  let rebuild = false;
  const cs = s.clusterSize;
  for (let i = 0; i < disk.table.length; i++) {
    const offset = disk.table[i]!;
    const cluster = Math.floor(offset / cs);
    if (reftableEntryReserved(disk.rawLow[i]!)) {
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
        if (offset + cs > Number.MAX_SAFE_INTEGER || cluster >= c.counts.cap) {
          rebuild = true;
          res.messages.push('ERROR could not resize image: Invalid argument');
          continue;
        }
        c.log.writes++;
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
async function calculateRefcounts(c: Ctx): Promise<boolean> {
  const { s, res } = c;
  c.copiedPass = undefined;
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
  // An encrypted image's LUKS header clusters (crypto header extension).
  const cryptoHeader = findExtension(s.header, QCOW2_EXT_MAGIC_CRYPTO_HEADER);
  if (cryptoHeader?.length) incRefcounts(c, cryptoHeader.offset, cryptoHeader.length);
  await countBitmaps(c);
  return checkRefblocks(c);
}

/** What compare_refcounts found so far; per block, the repairs made in its bytes. */
interface Comparison {
  rebuild: boolean;
  highest: number;
  leaksFixed: number;
  corruptionsFixed: number;
}

/**
 * compare_refcounts: stored vs counted, fixing what `fix` allows. Walks the
 * refcount table block by block: each stored block is read once and its
 * entries compared with the counts in a synchronous loop (compareBlock); a
 * block's repairs are written once after its loop. Returns whether a
 * rebuild is needed and the highest cluster in use.
 */
async function compareRefcounts(c: Ctx, fix: CheckFix, nbClusters: number): Promise<{ rebuild: boolean; highest: number }> {
  const { s, res, disk } = c;
  const per = disk.perBlock;
  const cmp: Comparison = { rebuild: false, highest: 0, leaksFixed: 0, corruptionsFixed: 0 };
  // nbClusters is a counts.n, which never exceeds the counter array (Counts.grow).
  const n = Math.min(Math.max(nbClusters, 0), c.counts.a.length);
  const ahead = new ReadAhead(s, c.log);
  try {
    await compareBlocks(c, fix, n, cmp, ahead);
  } finally {
    ahead.release();
  }
  return { rebuild: cmp.rebuild, highest: cmp.highest };
}

/** compareRefcounts' walk over the refcount blocks of clusters [0, n) (blocks not cached are read ahead in runs). */
async function compareBlocks(c: Ctx, fix: CheckFix, n: number, cmp: Comparison, ahead: ReadAhead): Promise<void> {
  const { s, res, disk } = c;
  const per = disk.perBlock;
  const at = (j: number) => disk.table[j]!;
  for (let i = 0, base = 0; base < n; i++, base += per) {
    const end = Math.min(base + per, n);
    const off = i < disk.table.length ? disk.table[i]! : 0;
    let blk: Uint8Array | null = null;
    if (off !== 0) {
      try {
        if (off % s.clusterSize !== 0) throw await disk.unaligned(i);
        blk = disk.cachedBlock(i) ?? (await ahead.cluster(off, contiguousRun(at, i, disk.table.length, ahead.cap, s.clusterSize, s.file.totalBytes)));
      } catch (e) {
        // Every cluster of the block fails as QEMU's qcow2_get_refcount would.
        const why = e instanceof Error ? e.message : String(e);
        for (let k = base; k < end; k++) res.messages.push(`Can't get refcount for cluster ${k}: ${why}`);
        res.checkErrors += end - base;
        if (c.copiedPass) c.copiedPass.unsure = true;
        continue;
      }
    }
    cmp.leaksFixed = 0;
    cmp.corruptionsFixed = 0;
    compareBlock(c, fix, blk, base, end, cmp);
    if (cmp.leaksFixed || cmp.corruptionsFixed) {
      c.log.writes++;
      // Later lookups see the repaired block even when the write fails (as a refcount cache would).
      disk.adopt(off, blk!);
      try {
        await bdrvPwrite(s.file, off, s.clusterSize, blk!);
        res.leaksFixed += cmp.leaksFixed;
        res.corruptionsFixed += cmp.corruptionsFixed;
      } catch {
        // Not written: the repairs of this block count as not fixed.
        res.leaks += cmp.leaksFixed;
        res.corruptions += cmp.corruptionsFixed;
      }
    }
  }
}

/**
 * compareRefcounts' loop over clusters [base, end), whose refcounts are in
 * `blk` (null: no block, all 0). The kernel (check-kernel.ts) runs up to
 * each difference, which is reported and repaired here. It also checks the
 * COPIED marks against the stored refcounts.
 */
function compareBlock(c: Ctx, fix: CheckFix, blk: Uint8Array | null, base: number, end: number, cmp: Comparison): void {
  const { s, res } = c;
  const tally = c.counts.tally;
  const a = tally.counts;
  const bits = s.refcountBits;
  const limit = maxRefcount(s.header.refcountOrder);
  const n = end - base;
  tally.st.highest = cmp.highest;
  for (let j = 0; j < n; j++) {
    j = tally.compareBlock(blk, j, n, bits, base, true);
    if (j >= n) break;
    const k = base + j;
    const stored = blk ? getRefcountEntry(blk, bits, j) : 0;
    const counted = a[k]!;
    tally.checkMarks(k, stored);
    tally.st.highest = k;
    if (stored === 0) cmp.rebuild = true;
    const repairing = stored !== 0 && (stored > counted ? fix.leaks : fix.errors);
    res.messages.push(`${repairing ? 'Repairing' : stored < counted ? 'ERROR' : 'Leaked'} cluster ${k} refcount=${blk ? refcountEntryText(blk, bits, j) : 0} reference=${counted}`);
    // A count above the width's maximum cannot be stored (then it counts as not fixed).
    if (repairing && counted <= limit) {
      // A non-zero stored refcount means the block exists: set it there.
      setRefcountEntry(blk!, bits, j, counted);
      if (stored > counted) cmp.leaksFixed++;
      else cmp.corruptionsFixed++;
    } else if (stored < counted) res.corruptions++;
    else res.leaks++;
  }
  cmp.highest = tally.st.highest;
}

/** check_oflag_copied: COPIED exactly where the refcount is 1 (active L1 and its L2 tables). */
async function checkOflagCopied(c: Ctx, fix: CheckFix): Promise<void> {
  const { s, res, disk } = c;
  const repair = fix.errors ? true : fix.leaks ? !res.checkErrors && !res.corruptions && !res.leaks : false;
  const eb = s.l2EntryBytes;
  const table = new Uint8Array(s.clusterSize);
  const pass = c.copiedPass;
  for (let i = 0; i < s.l1Size; i++) {
    const hi = entryHi(s.l1Table, i * 8);
    const lo = entryLo(s.l1Table, i * 8);
    const l2 = entryOffset(hi, lo);
    if (!l2) continue;
    let rc: number;
    try {
      rc = await disk.get(Math.floor(l2 / s.clusterSize));
    } catch {
      continue;
    }
    if ((rc === 1) !== ((hi & QCOW_OFLAG_COPIED) !== 0)) {
      res.corruptions++;
      res.messages.push(`${repair ? 'Repairing' : 'ERROR'} OFLAG_COPIED L2 cluster: l1_index=${i} l1_entry=${hex64(hi, lo)} refcount=${rc}`);
      if (repair) {
        setCopiedAt(s.l1Table, i * 8, rc === 1);
        c.log.writes++;
        await bdrvPwrite(s.file, s.header.l1TableOffset + i * 8, 8, s.l1Table.subarray(i * 8, i * 8 + 8));
        res.corruptions--;
        res.corruptionsFixed++;
      }
    }
    let found: CopiedFinding[];
    let read = false;
    if (pass && pass.writes === c.log.writes && !pass.unsure && !c.counts.tally.st.marksBad) {
      found = [];
    } else {
      await bdrvPread(s.file, l2, s.clusterSize, table);
      read = true;
      found = await copiedFindings(c, table);
    }
    if (!found.length) continue;
    if (repair && !read) await bdrvPread(s.file, l2, s.clusterSize, table);
    for (const f of found) {
      res.corruptions++;
      res.messages.push(`${repair ? 'Repairing' : 'ERROR'} OFLAG_COPIED data cluster: l2_entry=${hex64(f.hi, f.lo)} refcount=${f.refcount}`);
      if (repair) setCopiedAt(table, f.j * eb, f.refcount === 1);
    }
    if (repair) {
      c.log.writes++;
      await bdrvPwrite(s.file, l2, s.clusterSize, table);
      s.l2Cache.invalidate(l2, s.clusterSize);
      res.corruptions -= found.length;
      res.corruptionsFixed += found.length;
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
  await writeHeaderFields(s, ['refcountTableOffset', 'refcountTableClusters'], {
    ...s.header,
    refcountTableOffset: rs.tableOffset,
    refcountTableClusters: rs.tableClusters,
  });
  await bdrvFlush(s.file);
  s.header.refcountTableOffset = rs.tableOffset;
  s.header.refcountTableClusters = rs.tableClusters;
}

function lastUsed(a: CountArray): number {
  for (let i = a.length - 1; i >= 0; i--) if (a[i] !== 0) return i;
  return -1;
}

/** Rewrites incompatible_features from the in-memory header and flushes. */
async function writeIncompatible(s: Qcow2State): Promise<void> {
  await writeIncompatibleFeatures(s);
  await bdrvFlush(s.file);
}

/** qcow2_check_refcounts */
async function checkRefcounts(bs: BlockNode, s: Qcow2State, fix: CheckFix, report: CheckReport): Promise<Res> {
  let res = newRes(linesTo(report));
  const cs = s.clusterSize;
  let nbClusters = Math.ceil(s.file.totalBytes / cs);
  const cap = maxCheckedClusters(Math.min(maxRefcount(s.header.refcountOrder), 0xffffffff));
  if (nbClusters > cap) {
    res.checkErrors++;
    res.messages.push(`ERROR: the image file has ${nbClusters} clusters; blocktab checks at most ${cap} with ${1 << s.header.refcountOrder}-bit refcounts`);
    return res;
  }
  res.totalClusters = Math.ceil(s.header.size / cs);
  const hasDataFile = (s.header.incompatibleFeatures & QCOW2_INCOMPAT_DATA_FILE) !== 0n;
  const log: CheckLog = { messages: res.messages, writes: 0 };
  const disk = new DiskRefcounts(s, log);
  await disk.load();
  const order = s.header.refcountOrder;
  // The counters may live in wasm memory: every Counts made here is released at the end.
  const held: Counts[] = [];
  const newCounts = (n: number): Counts => {
    const k = new Counts(n, order, true);
    held.push(k);
    return k;
  };
  try {
    return await compareAndRepair(bs, s, fix, res, disk, log, { bs, s, res, counts: newCounts(nbClusters), fix, hasDataFile, disk, log }, newCounts);
  } finally {
    for (const k of held) k.release();
    disk.release();
  }
}

/** qcow2_check_refcounts once the structures are loaded: count, compare, repair, COPIED. */
async function compareAndRepair(
  bs: BlockNode,
  s: Qcow2State,
  fix: CheckFix,
  res: Res,
  disk: DiskRefcounts,
  log: CheckLog,
  c: Ctx,
  newCounts: (n: number) => Counts,
): Promise<Res> {
  const cs = s.clusterSize;
  let rebuild = await calculateRefcounts(c);
  const nbClusters = c.counts.n;
  const preCompare: Res = { ...res };
  const noFix = { leaks: false, errors: false };
  // qemu-img's comparison lines go to its buffered stdout, which this failure path never flushes: none are shown.
  if (c.bitmapTableFailed) log.messages = res.messages = DISCARD;
  let cmp = await compareRefcounts(c, noFix, nbClusters);
  if (c.bitmapTableFailed) throw new CheckFailed('EINVAL');
  rebuild ||= cmp.rebuild;
  let highest = cmp.highest;

  if (rebuild && fix.errors) {
    const old = { corruptions: res.corruptions, leaks: res.leaks };
    res.messages.push('Rebuilding refcount structure');
    log.writes++;
    await rebuildRefcounts(c);
    await disk.load();
    // Count again: the new refcount structures are referenced by the header now.
    const again = newRes(res.messages);
    c = { ...c, res: again, counts: newCounts(Math.ceil(s.file.totalBytes / cs)) };
    await calculateRefcounts(c);
    // Clusters the old structures used are leaked now; QEMU frees them here and does not count them as fixed.
    const cmp2 = await compareRefcounts(c, { leaks: fix.leaks, errors: false }, c.counts.n);
    if (cmp2.rebuild) res.messages.push('ERROR rebuilt refcount structure is still broken');
    highest = cmp2.highest;
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
      throw new CheckFailed('EIO');
    }
    if (res.leaks || res.corruptions) {
      res = { ...preCompare };
      c.res = res;
      cmp = await compareRefcounts(c, fix, nbClusters);
      highest = cmp.highest;
    }
  }
  await checkOflagCopied(c, fix);
  res.imageEndOffset = (highest + 1) * cs;
  return res;
}

/**
 * Checks (and with `fix` repairs) an opened qcow2 node, as qemu-img check
 * does; the driver's `check` callback. Repair needs the node read-write.
 */
export async function checkImage(bs: BlockNode, opts: { fix: CheckFix; report: CheckReport }): Promise<CheckResult> {
  const s = bs.state<Qcow2State>();
  const fix = opts.fix;
  const repairing = fix.leaks || fix.errors;
  if (repairing && bs.readOnly) throw new BlockError('EPERM', `${s.image}: cannot repair an image opened read-only`);
  if (!bs.readOnly) await flushMetadata(s);
  // A repair opens the image read-write, which drops the autoclear bits nobody maintains (qemu-img check -r).
  if (repairing) await prepareHeader(s);
  let res: Res;
  let snap: SnapshotCheckRes;
  try {
    // The snapshot table first: the refcount check counts what it kept.
    snap = await checkReadSnapshotTable(s, fix.errors, opts.report);
    res = await checkRefcounts(bs, s, fix, opts.report);
  } catch (e) {
    if (e instanceof SnapshotCheckFailed) throw new CheckFailed(e.code);
    throw e;
  } finally {
    if (repairing) {
      await bdrvFlush(s.file);
      dropRefcountCache(s);
      s.l2Cache.clear();
    }
  }
  try {
    await checkFixSnapshotTable(s, snap, fix.errors, opts.report);
  } catch (e) {
    if (e instanceof SnapshotCheckFailed) throw new CheckFailed(e.code);
    throw e;
  }
  // qcow2_add_check_result of the table's part.
  res.corruptions += snap.corruptions;
  res.corruptionsFixed += snap.corruptionsFixed;
  res.checkErrors += snap.checkErrors;
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
  };
}
