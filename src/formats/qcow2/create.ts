/**
 * Creating qcow2 images (QEMU's qcow2_co_create followed by the truncate
 * that gives the image its size and preallocation).
 *
 * The layout is QEMU 7.2's, reproduced by replaying its allocator on a model
 * instead of on a live image: header in cluster 0, refcount table in cluster
 * 1, the first refcount block in cluster 2, the L1 table next; metadata
 * preallocation allocates each L2 table and then its data clusters one L2
 * slice at a time, and a refcount block that becomes necessary lands right
 * after the run that needed it (QEMU's self-describing block). falloc/full
 * follow qcow2_co_truncate's path: a new refcount table after the L1 table
 * (the old one is freed and reused by the first L2 table), then the data area.
 * Whenever the replay meets a case QEMU solves with its rarer paths (refcount
 * table growth, a block that cannot describe itself), the image gets a plain
 * sequential layout with its refcount structures at the end instead: a
 * different but equally valid image.
 *
 * Everything is written through the protocol node; the header goes last.
 */
import { BlockError } from '../../block/errors.js';
import type { BlockNode } from '../../block/node.js';
import type { PreallocMode } from '../../block/driver.js';
import { bdrvFlush, bdrvPwrite, bdrvTruncate } from '../../block/io.js';
import {
  QCOW_MAGIC,
  QCOW2_AUTOCLEAR_DATA_FILE_RAW,
  QCOW2_COMPAT_LAZY_REFCOUNTS,
  QCOW2_COMPRESSION_TYPE_ZLIB,
  QCOW2_COMPRESSION_TYPE_ZSTD,
  QCOW2_EXT_MAGIC_BACKING_FORMAT,
  QCOW2_EXT_MAGIC_DATA_FILE,
  QCOW2_EXT_MAGIC_FEATURE_TABLE,
  QCOW2_INCOMPAT_COMPRESSION,
  QCOW2_INCOMPAT_DATA_FILE,
  QCOW2_INCOMPAT_EXTL2,
  QEMU_FEATURE_TABLE,
  serializeHeader,
  V3_HEADER_LENGTH,
  type HeaderExtension,
  type Qcow2Header,
} from './header.js';
import { QCOW_MAX_L1_SIZE } from './validate.js';
import { MAX_COUNTED_CLUSTERS, writeRefcountStructure } from './repair-refcounts.js';
import { putReftableEntry, setRefcountEntry } from './refcount-codec.js';
import { putL1Entry, standardL2Entry, writeL2Entry } from './l2-entry.js';

export interface Qcow2CreateOptions {
  /** Virtual size in bytes (rounded up to 512, as QEMU's create). */
  size: number;
  /** 2 (compat=0.10) or 3 (compat=1.1, default). */
  version?: 2 | 3;
  clusterSize?: number;
  refcountBits?: number;
  lazyRefcounts?: boolean;
  extendedL2?: boolean;
  compressionType?: 'zlib' | 'zstd';
  preallocation?: PreallocMode;
  backingFile?: string;
  backingFormat?: string;
  /** Name of the external data file, as stored in the image. */
  dataFile?: string;
  dataFileRaw?: boolean;
}

/** The create checks of qcow2_co_create, in QEMU's order and with its messages. */
export function validateQcow2CreateOptions(o: Qcow2CreateOptions): void {
  const fail = (msg: string): never => {
    throw new BlockError('EINVAL', msg);
  };
  const version = o.version ?? 3;
  const cs = o.clusterSize ?? 65536;
  const extendedL2 = o.extendedL2 ?? false;
  if (o.size % 512 !== 0) fail('Image size must be a multiple of 512 bytes');
  if (extendedL2 && version < 3) fail('Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)');
  if (!Number.isInteger(Math.log2(cs)) || cs < 512 || cs > 2 * 1024 * 1024) fail('Cluster size must be a power of two between 512 and 2048k');
  if (extendedL2 && cs < 16384) fail('Extended L2 entries are only supported with cluster sizes of at least 16384 bytes');
  const prealloc = o.preallocation ?? 'off';
  if (o.backingFile !== undefined && prealloc !== 'off' && !extendedL2) {
    fail('Backing file and preallocation can only be used at the same time if extended_l2 is on');
  }
  if (o.backingFormat !== undefined && o.backingFile === undefined) fail('Backing format cannot be used without backing file');
  if (o.lazyRefcounts && version < 3) fail('Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)');
  const rb = o.refcountBits ?? 16;
  if (!Number.isInteger(Math.log2(rb)) || rb > 64 || rb < 1) fail('Refcount width must be a power of two and may not exceed 64 bits');
  if (version < 3 && rb !== 16) fail('Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)');
  if (o.dataFileRaw && o.dataFile === undefined) fail('data-file-raw requires data-file');
  if (o.dataFileRaw && o.backingFile !== undefined) fail('Backing file and data-file-raw cannot be used at the same time');
  if (o.dataFile !== undefined && version < 3) fail('External data files are only supported with compatibility level 1.1 and above (use version=v3 or greater)');
  if ((o.compressionType ?? 'zlib') !== 'zlib' && version < 3) {
    fail('Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)');
  }
  const l2Entries = cs / (extendedL2 ? 16 : 8);
  if (Math.ceil(o.size / (cs * l2Entries)) > QCOW_MAX_L1_SIZE / 8) fail("The image size is too large for file format 'qcow2' (try using a larger cluster size)");
  if (o.backingFile !== undefined && o.backingFile.length > 1023) fail('Backing file name too long');
}

/** The header a new image starts with (before tables are placed). */
export function newQcow2Header(o: Qcow2CreateOptions): Qcow2Header {
  const version = o.version ?? 3;
  const cs = o.clusterSize ?? 65536;
  let incompat = 0n;
  let autoclear = 0n;
  if (o.dataFile !== undefined) incompat |= QCOW2_INCOMPAT_DATA_FILE;
  if (o.compressionType === 'zstd') incompat |= QCOW2_INCOMPAT_COMPRESSION;
  if (o.extendedL2) incompat |= QCOW2_INCOMPAT_EXTL2;
  if (o.dataFileRaw) autoclear |= QCOW2_AUTOCLEAR_DATA_FILE_RAW;
  // qcow2_update_header's order: backing format, data file, feature table.
  const extensions: HeaderExtension[] = [];
  if (o.backingFormat !== undefined) extensions.push({ type: QCOW2_EXT_MAGIC_BACKING_FORMAT, backingFormat: o.backingFormat });
  if (o.dataFile !== undefined) extensions.push({ type: QCOW2_EXT_MAGIC_DATA_FILE, dataFile: o.dataFile });
  // qemu-img 7.2 leaves the feature-name table out of images with clusters of 4 KiB and less (measured).
  if (version === 3 && cs >= 8192) extensions.push({ type: QCOW2_EXT_MAGIC_FEATURE_TABLE, features: [...QEMU_FEATURE_TABLE] });
  return {
    magic: QCOW_MAGIC,
    version,
    backingFileOffset: 0,
    backingFileSize: 0,
    clusterBits: Math.log2(cs),
    size: Math.ceil(o.size / 512) * 512,
    cryptMethod: 0,
    l1Size: 0,
    l1TableOffset: 0,
    refcountTableOffset: cs,
    refcountTableClusters: 1,
    nbSnapshots: 0,
    snapshotsOffset: 0,
    incompatibleFeatures: incompat,
    compatibleFeatures: o.lazyRefcounts ? QCOW2_COMPAT_LAZY_REFCOUNTS : 0n,
    autoclearFeatures: autoclear,
    refcountOrder: Math.log2(o.refcountBits ?? 16),
    headerLength: version === 3 ? V3_HEADER_LENGTH : 72,
    compressionType: o.compressionType === 'zstd' ? QCOW2_COMPRESSION_TYPE_ZSTD : QCOW2_COMPRESSION_TYPE_ZLIB,
    headerTail: new Uint8Array(version === 3 ? V3_HEADER_LENGTH - 105 : 0),
    extensions,
    backingFile: o.backingFile ?? null,
  };
}

// ----------------------------------------------------------- allocator model

/** Thrown inside the replay when QEMU would take one of its rarer paths. */
class NotReplayable extends Error {}

/** Allocated host clusters as sorted, disjoint [start, end) ranges, plus QEMU's free_cluster_index. */
class AllocModel {
  ranges: Array<[number, number]> = [];
  next = 0;
  /** Refcount block index → cluster of the block. */
  readonly blocks = new Map<number, number>();

  constructor(
    readonly perBlock: number,
    readonly tableEntries: number,
  ) {}

  private firstFree(from: number, n: number): number {
    let a = from;
    for (const [s, e] of this.ranges) {
      if (e <= a) continue;
      if (s >= a + n) break;
      a = e;
    }
    return a;
  }

  mark(a: number, n: number): void {
    const r = this.ranges;
    r.push([a, a + n]);
    r.sort((x, y) => x[0] - y[0]);
    const merged: Array<[number, number]> = [];
    for (const x of r) {
      const last = merged[merged.length - 1];
      if (last && last[1] >= x[0]) last[1] = Math.max(last[1], x[1]);
      else merged.push([x[0], x[1]]);
    }
    this.ranges = merged;
  }

  free(c: number): void {
    const out: Array<[number, number]> = [];
    for (const [s, e] of this.ranges) {
      if (c < s || c >= e) out.push([s, e]);
      else {
        if (c > s) out.push([s, c]);
        if (c + 1 < e) out.push([c + 1, e]);
      }
    }
    this.ranges = out;
    this.next = Math.min(this.next, c);
  }

  /** qcow2_alloc_clusters: a free run, with the refcount blocks its refcounts need placed as QEMU does. */
  alloc(n: number): number {
    const a = this.firstFree(this.next, n);
    this.next = a + n;
    for (let j = Math.floor(a / this.perBlock); j <= Math.floor((a + n - 1) / this.perBlock); j++) {
      if (this.blocks.has(j)) continue;
      const rb = this.firstFree(this.next, 1);
      if (j >= this.tableEntries || Math.floor(rb / this.perBlock) !== j) throw new NotReplayable();
      this.blocks.set(j, rb);
      this.mark(rb, 1);
    }
    this.mark(a, n);
    return a;
  }

  /** qcow2_alloc_clusters_at: exactly these clusters (already known free). */
  allocAt(a: number, n: number): void {
    for (let j = Math.floor(a / this.perBlock); j <= Math.floor((a + n - 1) / this.perBlock); j++) {
      if (!this.blocks.has(j)) throw new NotReplayable();
    }
    this.mark(a, n);
  }

  end(): number {
    return this.ranges.length ? this.ranges[this.ranges.length - 1]![1] : 0;
  }
}

/** The planned image: where each table lives and what the L2 tables map. */
interface Plan {
  h: Qcow2Header;
  l1: Uint8Array;
  /** L2 table index → host cluster of the table. */
  l2At: number[];
  /** Guest cluster k of L2 table i maps to dataStart[i] + k (host cluster), for preallocated images. */
  dataStart: number[];
  /** Refcount structures already placed by the replay (undefined: write them at the end). */
  model: AllocModel | undefined;
  /** Host clusters the image uses besides refcount structures (fallback layout). */
  used: number;
  /** Host byte range of preallocated data in the image file (for full/falloc). */
  dataArea: [number, number] | undefined;
  fileEnd: number;
}

function planLayout(o: Qcow2CreateOptions, h: Qcow2Header, replay: boolean): Plan {
  const cs = 2 ** h.clusterBits;
  const order = h.refcountOrder;
  const extendedL2 = o.extendedL2 ?? false;
  const l2Size = cs / (extendedL2 ? 16 : 8);
  const sliceEntries = Math.min(4096, cs) / (extendedL2 ? 16 : 8);
  const guestClusters = Math.ceil(h.size / cs);
  const l1Size = Math.ceil(guestClusters / l2Size);
  const l1Clusters = Math.ceil((l1Size * 8) / cs);
  const prealloc = o.preallocation ?? 'off';
  const hasDataFile = o.dataFile !== undefined;
  const metadata = prealloc === 'metadata' || (hasDataFile && prealloc !== 'off');
  const falloc = !hasDataFile && (prealloc === 'falloc' || prealloc === 'full');
  if ((metadata || falloc) && !hasDataFile && guestClusters > MAX_COUNTED_CLUSTERS) {
    throw new BlockError('EFBIG', `cannot preallocate ${guestClusters} clusters (at most ${MAX_COUNTED_CLUSTERS})`);
  }
  const plan: Plan = { h, l1: new Uint8Array(l1Size * 8), l2At: [], dataStart: [], model: undefined, used: 0, dataArea: undefined, fileEnd: 0 };
  h.l1Size = l1Size;

  const perBlock = (cs * 8) >> order;
  const m = new AllocModel(perBlock, cs / 8);
  // Without replay: a sequential allocator with no refcount structures inside.
  let seq = 1;
  const alloc = (n: number): number => {
    if (replay) return m.alloc(n);
    const a = seq;
    seq += n;
    return a;
  };
  if (replay) {
    m.mark(0, 3);
    m.blocks.set(0, 2);
    m.next = 3;
  }
  if (l1Size > 0) h.l1TableOffset = alloc(l1Clusters) * cs;
  plan.fileEnd = l1Size > 0 ? h.l1TableOffset + l1Size * 8 : replay ? 3 * cs : cs;

  const mapL2 = (i: number, at: number, data: number): void => {
    plan.l2At[i] = at;
    plan.dataStart[i] = data;
    putL1Entry(plan.l1, i, at * cs, true);
  };
  const entriesOf = (i: number): number => Math.min(l2Size, guestClusters - i * l2Size);

  if (metadata) {
    for (let i = 0; i < l1Size; i++) {
      const at = alloc(1);
      let data = -1;
      if (hasDataFile) data = i * l2Size; // guest offset = host offset in a data file
      else {
        for (let k = 0; k < entriesOf(i); k += sliceEntries) {
          const got = alloc(Math.min(sliceEntries, entriesOf(i) - k));
          if (data < 0) data = got;
          else if (got !== data + k) throw new NotReplayable();
        }
      }
      mapL2(i, at, data);
      plan.fileEnd = Math.max(plan.fileEnd, (at + 1) * cs, hasDataFile ? 0 : (data + entriesOf(i)) * cs);
    }
  } else if (falloc && guestClusters > 0) {
    if (replay) {
      // qcow2_refcount_area right after the last used cluster: a new one-cluster table, the old one freed.
      const oldEnd = m.end();
      if (oldEnd + 1 + guestClusters + Math.ceil(guestClusters / l2Size) + 1 > perBlock) throw new NotReplayable();
      m.mark(oldEnd, 1);
      m.free(1);
      h.refcountTableOffset = oldEnd * cs;
      const start = oldEnd + 1;
      m.allocAt(start, guestClusters);
      plan.dataArea = [start * cs, (start + guestClusters) * cs];
      for (let i = 0; i < l1Size; i++) mapL2(i, m.alloc(1), start + i * l2Size);
    } else {
      const start = seq;
      seq += guestClusters;
      plan.dataArea = [start * cs, (start + guestClusters) * cs];
      for (let i = 0; i < l1Size; i++) mapL2(i, alloc(1), start + i * l2Size);
    }
    plan.fileEnd = Math.max(plan.dataArea[1], ...plan.l2At.map((c) => (c + 1) * cs));
  }
  plan.used = seq;
  if (replay) plan.model = m;
  return plan;
}

/**
 * Writes a new qcow2 image of `o.size` bytes into `file` (an empty protocol
 * node opened read-write); `dataFile`, when given, is the external data file
 * (empty, read-write) that gets the image's size.
 */
export async function createQcow2(file: BlockNode, o: Qcow2CreateOptions, dataFile?: BlockNode): Promise<void> {
  validateQcow2CreateOptions(o);
  const o2: Qcow2CreateOptions = { ...o };
  // data-file-raw: "all zeros" is not a valid state of the data file, so metadata is preallocated.
  if (o2.dataFileRaw && (o2.preallocation ?? 'off') === 'off') o2.preallocation = 'metadata';
  let plan: Plan;
  try {
    plan = planLayout(o2, newQcow2Header(o2), true);
  } catch (e) {
    if (!(e instanceof NotReplayable)) throw e;
    plan = planLayout(o2, newQcow2Header(o2), false);
  }
  const h = plan.h;
  const cs = 2 ** h.clusterBits;
  const extendedL2 = o2.extendedL2 ?? false;
  const entryBytes = extendedL2 ? 16 : 8;
  const l2Size = cs / entryBytes;
  const guestClusters = Math.ceil(h.size / cs);

  // Data area (falloc/full) first: the file grows to its final size.
  if (plan.dataArea) {
    const [a, b] = plan.dataArea;
    // falloc allocates the area in the file (as QEMU's fallocate), full writes zeros.
    await bdrvTruncate(file, Math.max(file.totalBytes, b), false, o2.preallocation === 'falloc' ? 'falloc' : 'off');
    if (o2.preallocation === 'full') await writeZeros(file, a, b - a);
  }
  // L2 tables.
  const l2 = new Uint8Array(cs);
  for (let i = 0; i < plan.l2At.length; i++) {
    l2.fill(0);
    const n = Math.min(l2Size, guestClusters - i * l2Size);
    for (let k = 0; k < n; k++) {
      writeL2Entry(l2, k, extendedL2, standardL2Entry((plan.dataStart[i]! + k) * cs));
    }
    await bdrvPwrite(file, plan.l2At[i]! * cs, cs, l2);
  }
  if (plan.l1.length) await bdrvPwrite(file, h.l1TableOffset, plan.l1.length, plan.l1);

  // Refcount structures.
  if (plan.model) {
    const m = plan.model;
    const order = h.refcountOrder;
    const perBlock = (cs * 8) >> order;
    const table = new Uint8Array(cs);
    const block = new Uint8Array(cs);
    for (const [j, at] of [...m.blocks.entries()].sort((x, y) => x[0] - y[0])) {
      block.fill(0);
      for (const [s, e] of m.ranges) {
        for (let c = Math.max(s, j * perBlock); c < Math.min(e, (j + 1) * perBlock); c++) setRefcountEntry(block, 1 << order, c - j * perBlock, 1);
      }
      await bdrvPwrite(file, at * cs, cs, block);
      putReftableEntry(table, j, at * cs);
    }
    await bdrvPwrite(file, h.refcountTableOffset, cs, table);
  } else {
    const counts = new Uint8Array(plan.used).fill(1);
    if (plan.dataArea && plan.dataArea[1] / cs > counts.length) throw new Error('unreachable: data area past the planned clusters');
    const rs = await writeRefcountStructure(file, counts, cs, h.refcountOrder, plan.used);
    h.refcountTableOffset = rs.tableOffset;
    h.refcountTableClusters = rs.tableClusters;
  }
  if (file.totalBytes < plan.fileEnd) await bdrvTruncate(file, plan.fileEnd);

  if (dataFile) {
    await bdrvTruncate(dataFile, h.size, false, o2.preallocation === 'falloc' ? 'falloc' : 'off');
    if (o2.preallocation === 'full') await writeZeros(dataFile, 0, h.size);
    await bdrvFlush(dataFile);
  }
  // The header last: until it is written the file is no valid image.
  await bdrvFlush(file);
  const hdr = serializeHeader(h);
  await bdrvPwrite(file, 0, cs, hdr);
  await bdrvFlush(file);
}

async function writeZeros(node: BlockNode, offset: number, bytes: number): Promise<void> {
  // Explicit zeros, as QEMU's full preallocation (no unmap allowed).
  const chunk = 1 << 20;
  const zeros = new Uint8Array(Math.min(chunk, bytes));
  for (let done = 0; done < bytes; ) {
    const n = Math.min(zeros.length, bytes - done);
    await bdrvPwrite(node, offset + done, n, zeros);
    done += n;
  }
}
