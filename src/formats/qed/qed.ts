/**
 * The `qed` format driver (QEMU Enhanced Disk), read and write.
 *
 * Two levels of tables map guest clusters to file offsets (header.ts). As
 * QEMU's block/qed.c: open checks the header against QEMU's limits and every
 * table offset before it is used (cluster aligned, past the header area,
 * inside the file), unallocated clusters come from the backing file (whose
 * format is probed unless QED_F_BACKING_FORMAT_NO_PROBE says raw), zero
 * clusters read as zeros, and block status answers DATA with the host offset,
 * ZERO, or nothing (unallocated: the generic layer asks the backing chain).
 *
 * Writes append clusters at the end of the file (rounded down to a cluster,
 * as QEMU's file_size): data first (with copy-on-write from the backing file
 * for a partial cluster), then a new L2 table or the changed L2 entries, then
 * the L1 entry — so a crash can only leak clusters. An image whose
 * QED_F_NEED_CHECK bit is set (not closed cleanly by QEMU) is checked and
 * repaired on a read-write open, as QEMU does (invalid table entries
 * cleared, the bit cleared when nothing is left corrupt); a read-only open
 * reads it as it is.
 */
import { BlockError, hex } from '../../block/errors.js';
import { type BlockDriver, type CheckResult, type DriverInfo } from '../../block/driver.js';
import type { BlockNode } from '../../block/node.js';
import { bdrvFlush, bdrvPread, bdrvPwrite, readBacking } from '../../block/io.js';
import { bdrvDebugEvent } from '../../block/debug-event.js';
import { BDRV_BLOCK_DATA, BDRV_BLOCK_OFFSET_VALID, BDRV_BLOCK_ZERO } from '../../block/status.js';
import { readStructure } from '../on-disk.js';
import { QED_CREATE_OPTS, qedCreateImage } from './create.js';
import {
  parseQedHeader,
  parseQedTable,
  qedMaxImageSize,
  QED_F_BACKING_FILE,
  QED_F_BACKING_FORMAT_NO_PROBE,
  QED_F_NEED_CHECK,
  QED_FEATURE_MASK,
  QED_HEADER_BYTES,
  QED_MAGIC,
  QED_MAX_CLUSTER_SIZE,
  QED_MAX_TABLE_SIZE,
  QED_MIN_CLUSTER_SIZE,
  QED_MIN_TABLE_SIZE,
  QED_ZERO_CLUSTER,
  serializeQedHeader,
  serializeQedTable,
  type QedHeader,
} from './header.js';
import { qedProbe } from './probe.js';

/** Backing file names longer than this are refused (QEMU's PATH_MAX-sized buffer). */
const QED_MAX_BACKING_NAME = 1023;
/** L2 tables kept in memory (each is table_size clusters). */
const L2_CACHE_TABLES = 32;

const CLUSTER_L1 = 0; // no L2 table: unallocated
const CLUSTER_L2 = 1; // L2 entry 0: unallocated
const CLUSTER_ZERO = 2;
const CLUSTER_FOUND = 3;

interface Run {
  type: number;
  /** Host offset of the run's first byte (CLUSTER_FOUND only). */
  host: number;
  bytes: number;
}

interface QedState {
  image: string;
  file: BlockNode;
  header: QedHeader;
  clusterSize: number;
  /** Entries per table. */
  tableNelems: number;
  tableBytes: number;
  /** End of the file rounded down to a cluster: where new clusters go. */
  fileSize: number;
  /** fileSize at open: entries at or past it were not written by this image's writers before we opened it. */
  openEnd: number;
  /** Data clusters allocated since open (host offset → guest offset): the only valid targets at or past openEnd. */
  grown: Map<number, number>;
  l1: Float64Array;
  l2Cache: Map<number, Float64Array>;
  lock: Promise<void>;
}

/**
 * QEMU's QED change of backing file (qemu-img rebase, 050): the name goes
 * right after the 64-byte header, the features say whether there is one and
 * whether it is raw (no probing), and header and name are written as one
 * block. Refused when an unknown compat feature may own the bytes after the
 * header, or when the name does not fit in the header area.
 */
async function qedChangeBackingFile(bs: BlockNode, s: QedState, backingFile: string | null, backingFormat: string | null): Promise<void> {
  const h = s.header;
  if (backingFile !== null && h.compatFeatures !== 0) {
    throw new BlockError('ENOTSUP', `${s.image}: QED header at 0x0 has unknown compat features ${hex(h.compatFeatures)}; the backing file name cannot be rewritten`);
  }
  const name = backingFile === null ? new Uint8Array(0) : new TextEncoder().encode(backingFile);
  const area = h.headerSize * h.clusterSize;
  if (QED_HEADER_BYTES + name.length > area) {
    throw new BlockError('ENOSPC', `${s.image}: QED backing file name (${name.length} bytes) does not fit in the header area (${area} bytes at 0x0)`);
  }
  let features = h.features & ~(QED_F_BACKING_FILE | QED_F_BACKING_FORMAT_NO_PROBE);
  if (backingFile !== null) features |= QED_F_BACKING_FILE | (backingFormat === 'raw' ? QED_F_BACKING_FORMAT_NO_PROBE : 0);
  const next: QedHeader = { ...h, features, backingFilenameOffset: QED_HEADER_BYTES, backingFilenameSize: name.length };
  const buf = new Uint8Array(QED_HEADER_BYTES + name.length);
  buf.set(serializeQedHeader(next));
  buf.set(name, QED_HEADER_BYTES);
  await bdrvPwrite(s.file, 0, buf.length, buf);
  await bdrvFlush(s.file);
  s.header = next;
  bs.backingFile = backingFile;
  bs.backingFormat = backingFile !== null && backingFormat === 'raw' ? 'raw' : null;
}

function st(bs: BlockNode): QedState {
  return bs.state<QedState>();
}

const isPow2 = (v: number) => v > 0 && (v & (v - 1)) === 0;

/** QEMU's qed_check_cluster_offset. */
function clusterOffsetOk(s: QedState, offset: number): boolean {
  if (offset % s.clusterSize) return false;
  return offset >= s.header.headerSize * s.clusterSize && offset < s.fileSize;
}

/**
 * QEMU's qed_check_table_offset: the table's first and last clusters are valid
 * cluster offsets. QEMU's overflow test (last <= first) also refuses every
 * table of a table_size 1 image; qemu-img cannot open those, and neither do we.
 */
function tableOffsetOk(s: QedState, offset: number): boolean {
  const last = offset + (s.header.tableSize - 1) * s.clusterSize;
  if (last <= offset) return false;
  return clusterOffsetOk(s, offset) && clusterOffsetOk(s, last);
}

function validateHeader(image: string, h: QedHeader): void {
  // QEMU's order of checks; qemuMessage is its text where it words the failure without the value.
  const bad = (what: string, qemuMessage?: string, code: 'EINVAL' | 'ENOTSUP' = 'EINVAL') =>
    new BlockError(code, `${image}: ${what}`, qemuMessage === undefined ? undefined : { qemuMessage });
  if (h.magic !== QED_MAGIC) throw bad('Image not in QED format');
  if (h.features & ~QED_FEATURE_MASK || h.features > 0xffffffff) {
    throw bad(`Unsupported QED features: ${(h.features - (h.features & QED_FEATURE_MASK)).toString(16)}`, undefined, 'ENOTSUP');
  }
  if (!isPow2(h.clusterSize) || h.clusterSize < QED_MIN_CLUSTER_SIZE || h.clusterSize > QED_MAX_CLUSTER_SIZE) {
    throw bad(`invalid QED cluster size ${h.clusterSize} in the header (a power of two from ${QED_MIN_CLUSTER_SIZE} to ${QED_MAX_CLUSTER_SIZE})`, 'QED cluster size is invalid');
  }
  if (!isPow2(h.tableSize) || h.tableSize < QED_MIN_TABLE_SIZE || h.tableSize > QED_MAX_TABLE_SIZE) {
    throw bad(`invalid QED table size ${h.tableSize} in the header (a power of two from ${QED_MIN_TABLE_SIZE} to ${QED_MAX_TABLE_SIZE} clusters)`, 'QED table size is invalid');
  }
  const max = qedMaxImageSize(h.clusterSize, h.tableSize);
  if (h.imageSize % 512 || h.imageSize > max) {
    throw bad(`invalid QED image size ${h.imageSize} in the header (a multiple of 512 up to ${max})`, 'QED image size is invalid');
  }
}

/** After the L1 table offset check, as QEMU: the header size in bytes must fit 32 bits (and, ours, not be 0). */
function validateHeaderSize(image: string, h: QedHeader): void {
  if (h.headerSize === 0 || h.headerSize > 0xffffffff / h.clusterSize) {
    throw new BlockError('EINVAL', `${image}: invalid QED header size ${h.headerSize} clusters`, h.headerSize === 0 ? undefined : { qemuMessage: 'QED header size is too large' });
  }
}

async function loadL2(s: QedState, l2Offset: number, l1Index: number): Promise<Float64Array> {
  const hit = s.l2Cache.get(l2Offset);
  if (hit) {
    s.l2Cache.delete(l2Offset);
    s.l2Cache.set(l2Offset, hit);
    return hit;
  }
  if (!tableOffsetOk(s, l2Offset)) {
    throw new BlockError(
      'ECORRUPT',
      `${s.image}: L1 entry ${l1Index} (at ${hex(s.header.l1TableOffset + l1Index * 8)}) points at an invalid L2 table offset ${hex(l2Offset)} (file ends at ${hex(s.fileSize)})`,
    );
  }
  const t = parseQedTable(await readStructure(s.file, s.image, 'QED L2 table', l2Offset, s.tableBytes));
  if (s.l2Cache.size >= L2_CACHE_TABLES) s.l2Cache.delete(s.l2Cache.keys().next().value!);
  s.l2Cache.set(l2Offset, t);
  return t;
}

/** QEMU's qed_find_cluster: the run of same-kind clusters at `pos`, at most `len` bytes, inside one L2 table. */
async function findCluster(s: QedState, pos: number, len: number): Promise<Run> {
  const cs = s.clusterSize;
  const l2Span = s.tableNelems * cs;
  const l1Index = Math.floor(pos / l2Span);
  const inCluster = pos % cs;
  const index = Math.floor((pos % l2Span) / cs);
  const max = Math.min(len, (s.tableNelems - index) * cs - inCluster);
  const l2Offset = s.l1[l1Index]!;
  if (l2Offset === 0) return { type: CLUSTER_L1, host: 0, bytes: max };
  const l2 = await loadL2(s, l2Offset, l1Index);
  const first = l2[index]!;
  const clusters = Math.ceil((max + inCluster) / cs);
  let n = 1;
  if (first === 0 || first === QED_ZERO_CLUSTER) {
    while (n < clusters && l2[index + n] === first) n++;
  } else {
    while (n < clusters && l2[index + n] === first + n * cs) n++;
  }
  const bytes = Math.min(max, n * cs - inCluster);
  if (first === 0) return { type: CLUSTER_L2, host: 0, bytes };
  if (first === QED_ZERO_CLUSTER) return { type: CLUSTER_ZERO, host: 0, bytes };
  // An entry that pointed past the end of the file at open must not alias a cluster allocated since.
  const guest = pos - inCluster;
  let stale = false;
  for (let i = 0; i < n; i++) if (first + i * cs >= s.openEnd && s.grown.get(first + i * cs) !== guest + i * cs) stale = true;
  if (stale || !clusterOffsetOk(s, first) || first + n * cs > s.fileSize) {
    const at = l2Offset + index * 8;
    throw new BlockError('ECORRUPT', `${s.image}: L2 entry at ${hex(at)} points at an invalid data cluster offset ${hex(first)} (file ends at ${hex(s.fileSize)})`);
  }
  return { type: CLUSTER_FOUND, host: first + inCluster, bytes };
}

function locked(s: QedState, fn: () => Promise<void>): Promise<void> {
  const next = s.lock.then(fn);
  s.lock = next.catch(() => {});
  return next;
}

export const qedDriver: BlockDriver = {
  name: 'qed',
  kind: 'format',
  supportsBacking: true,
  createOptions: QED_CREATE_OPTS,
  create: qedCreateImage,

  probe: qedProbe,

  async open(bs, options) {
    const file = bs.file!.node;
    const image = bs.filename;
    const header = parseQedHeader(await readStructure(file, image, 'QED header', 0, QED_HEADER_BYTES));
    validateHeader(image, header);
    const cs = header.clusterSize;
    const s: QedState = {
      image,
      file,
      header,
      clusterSize: cs,
      tableNelems: (cs * header.tableSize) / 8,
      tableBytes: cs * header.tableSize,
      fileSize: file.totalBytes - (file.totalBytes % cs),
      openEnd: file.totalBytes - (file.totalBytes % cs),
      grown: new Map(),
      l1: new Float64Array(0),
      l2Cache: new Map(),
      lock: Promise.resolve(),
    };
    if (!tableOffsetOk(s, header.l1TableOffset)) {
      throw new BlockError(
        'ECORRUPT',
        `${image}: invalid QED L1 table offset ${hex(header.l1TableOffset)} (${header.tableSize} clusters of ${cs} bytes; the header area ends at ${hex(header.headerSize * cs)}, the file at ${hex(s.fileSize)})`,
        { qemuMessage: 'QED table offset is invalid' },
      );
    }
    validateHeaderSize(image, header);
    if (header.features & QED_F_BACKING_FILE) {
      const { backingFilenameOffset: off, backingFilenameSize: n } = header;
      if (off + n > cs * header.headerSize) {
        throw new BlockError('ECORRUPT', `${image}: QED backing file name at ${hex(off)} (${n} bytes) lies outside the header area`, {
          qemuMessage: 'QED backing filename offset is invalid',
        });
      }
      if (n > QED_MAX_BACKING_NAME) throw new BlockError('EINVAL', `${image}: QED backing file name at ${hex(off)} is too long (${n} bytes)`);
      const name = await readStructure(file, image, 'QED backing file name', off, n);
      bs.backingFile = new TextDecoder().decode(name);
      bs.backingFormat = header.features & QED_F_BACKING_FORMAT_NO_PROBE ? 'raw' : null;
    }
    s.l1 = parseQedTable(await readStructure(file, image, 'QED L1 table', header.l1TableOffset, s.tableBytes));
    if (!bs.readOnly && header.autoclearFeatures !== 0) {
      // No autoclear feature is known: clear them all, as QEMU does on a read-write open.
      header.autoclearFeatures = 0;
      await bdrvPwrite(file, 0, QED_HEADER_BYTES, serializeQedHeader(header));
    }
    // QEMU's open-time repair; under qemu-img check (BDRV_O_CHECK) the check itself does it.
    if (!bs.readOnly && header.features & QED_F_NEED_CHECK && options['check'] !== true) {
      const r = await qedCheck(s, true);
      if (r.checkErrors) throw new BlockError('EIO', `${image}: the QED image was not closed cleanly (QED_F_NEED_CHECK) and its repair could not read every L2 table`);
    }
    bs.opaque = s;
    bs.totalBytes = header.imageSize;
  },

  async preadv(bs, offset, bytes, buf) {
    const s = st(bs);
    let done = 0;
    while (done < bytes) {
      const run = await findCluster(s, offset + done, bytes - done);
      const out = buf.subarray(done, done + run.bytes);
      if (run.type === CLUSTER_FOUND) {
        await bdrvDebugEvent(s.file, 'read_aio');
        await bdrvPread(s.file, run.host, run.bytes, out);
      } else if (run.type === CLUSTER_ZERO) out.fill(0);
      else await readBacking(bs, offset + done, run.bytes, out);
      done += run.bytes;
    }
  },

  async blockStatus(bs, _wantZero, offset, bytes) {
    const s = st(bs);
    const run = await findCluster(s, offset, bytes);
    if (run.type === CLUSTER_FOUND) return { status: BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID, pnum: run.bytes, map: run.host, file: s.file };
    return { status: run.type === CLUSTER_ZERO ? BDRV_BLOCK_ZERO : 0, pnum: run.bytes };
  },

  async pwritev(bs, offset, bytes, buf) {
    const s = st(bs);
    await locked(s, async () => {
      let done = 0;
      while (done < bytes) done += await writeRun(bs, s, offset + done, bytes - done, buf.subarray(done));
    });
  },

  // QEMU's QED resize (025, 048): grow only, preallocation off, the new size in the header.
  async truncate(bs, size, _exact, prealloc) {
    const s = st(bs);
    if (prealloc !== 'off') throw new BlockError('ENOTSUP', `Unsupported preallocation mode '${prealloc}'`);
    if (size % 512 || size > qedMaxImageSize(s.header.clusterSize, s.header.tableSize)) throw new BlockError('EINVAL', 'Invalid image size specified');
    if (size < s.header.imageSize) throw new BlockError('ENOTSUP', 'Shrinking images is currently not supported');
    await locked(s, async () => {
      const next = { ...s.header, imageSize: size };
      await bdrvPwrite(s.file, 0, QED_HEADER_BYTES, serializeQedHeader(next));
      await bdrvFlush(s.file);
      s.header = next;
      bs.totalBytes = size;
    });
  },

  changeBackingFile(bs, backingFile, backingFormat) {
    return locked(st(bs), () => qedChangeBackingFile(bs, st(bs), backingFile, backingFormat));
  },

  getDriverInfo(bs): DriverInfo {
    const s = st(bs);
    return { clusterSize: s.clusterSize, isDirty: (s.header.features & QED_F_NEED_CHECK) !== 0 };
  },

  async check(bs, fix) {
    // Any -r repairs, as QEMU's bdrv_qed_co_check (leaks are only counted).
    return qedCheck(st(bs), fix.leaks || fix.errors);
  },
};

/**
 * QEMU's qed_check (block/qed-check.c): every table and data cluster must be
 * a valid cluster offset referenced once; clusters of the file (past the
 * header) that nothing references are leaks — counted only when the whole
 * image could be scanned. With `fix`, entries with invalid offsets are
 * cleared (the fixed L2 tables, then the L1 table, written whole), leaks stay
 * (QED never shrinks its file), and when nothing corrupt is left the
 * QED_F_NEED_CHECK bit is cleared.
 */
async function qedCheck(s: QedState, fix: boolean): Promise<CheckResult> {
  const cs = s.clusterSize;
  const r: CheckResult = {
    corruptions: 0,
    leaks: 0,
    checkErrors: 0,
    corruptionsFixed: 0,
    leaksFixed: 0,
    totalClusters: Math.ceil(s.header.imageSize / cs),
    allocatedClusters: 0,
    fragmentedClusters: 0,
  };
  const nclusters = s.fileSize / cs;
  const used = new Uint8Array(Math.ceil(nclusters / 8));
  const markUsed = (offset: number, n: number): boolean => {
    let dup = 0;
    for (let c = offset / cs, i = 0; i < n; i++, c++) {
      if (used[c >> 3]! & (1 << (c & 7))) dup++;
      used[c >> 3]! |= 1 << (c & 7);
    }
    r.corruptions += dup;
    return dup === 0;
  };
  const invalid = () => (fix ? r.corruptionsFixed++ : r.corruptions++);
  let l1Fixed = false;
  markUsed(s.header.l1TableOffset, s.header.tableSize);
  for (let i = 0; i < s.tableNelems; i++) {
    const l2Offset = s.l1[i]!;
    if (l2Offset === 0) continue;
    if (!tableOffsetOk(s, l2Offset)) {
      invalid();
      if (fix) {
        s.l1[i] = 0;
        l1Fixed = true;
      }
      continue;
    }
    if (!markUsed(l2Offset, s.header.tableSize)) continue;
    let table: Float64Array;
    try {
      table = parseQedTable(await readStructure(s.file, s.image, 'QED L2 table', l2Offset, s.tableBytes));
    } catch {
      r.checkErrors++;
      continue;
    }
    // Fragmentation as QEMU counts it: within one L2 table, an allocated entry not right after the previous one.
    let last = 0;
    let l2Fixed = false;
    for (let k = 0; k < s.tableNelems; k++) {
      const off = table[k]!;
      if (off === 0 || off === QED_ZERO_CLUSTER) continue;
      r.allocatedClusters!++;
      if (last && last + cs !== off) r.fragmentedClusters!++;
      last = off;
      if (!clusterOffsetOk(s, off)) {
        invalid();
        if (fix) {
          table[k] = 0;
          l2Fixed = true;
        }
        continue;
      }
      markUsed(off, 1);
    }
    if (l2Fixed) {
      s.l2Cache.delete(l2Offset);
      try {
        await bdrvPwrite(s.file, l2Offset, s.tableBytes, serializeQedTable(table, 0, s.tableNelems));
      } catch {
        r.checkErrors++;
      }
    }
  }
  if (l1Fixed) {
    try {
      await bdrvPwrite(s.file, s.header.l1TableOffset, s.tableBytes, serializeQedTable(s.l1, 0, s.tableNelems));
    } catch {
      r.checkErrors++;
    }
  }
  if (r.checkErrors === 0) {
    for (let c = s.header.headerSize; c < nclusters; c++) if (!(used[c >> 3]! & (1 << (c & 7)))) r.leaks++;
    // QEMU's qed_check_mark_clean: the fixes reach the disk before the bit is cleared.
    if (fix && r.corruptions === 0 && s.header.features & QED_F_NEED_CHECK) {
      await bdrvFlush(s.file);
      s.header.features -= QED_F_NEED_CHECK;
      await bdrvPwrite(s.file, 0, QED_HEADER_BYTES, serializeQedHeader(s.header));
    }
  }
  return r;
}

/** Writes up to `len` bytes at `pos` (one run of one kind inside one L2 table); returns the bytes written. */
async function writeRun(bs: BlockNode, s: QedState, pos: number, len: number, data: Uint8Array): Promise<number> {
  const run = await findCluster(s, pos, len);
  if (run.type === CLUSTER_FOUND) {
    await bdrvDebugEvent(s.file, 'write_aio');
    await bdrvPwrite(s.file, run.host, run.bytes, data.subarray(0, run.bytes));
    return run.bytes;
  }
  const cs = s.clusterSize;
  const start = pos - (pos % cs);
  const end = Math.ceil((pos + run.bytes) / cs) * cs;
  const clusters = (end - start) / cs;
  // New clusters: guest data, with the rest of the first and last cluster from what the guest saw before.
  const buf = new Uint8Array(end - start);
  if (run.type !== CLUSTER_ZERO) {
    const guestEnd = Math.min(end, bs.totalBytes);
    if (pos > start) await readBacking(bs, start, pos - start, buf);
    if (pos + run.bytes < guestEnd) await readBacking(bs, pos + run.bytes, guestEnd - pos - run.bytes, buf.subarray(pos + run.bytes - start));
  }
  buf.set(data.subarray(0, run.bytes), pos - start);
  const host = s.fileSize;
  // The guest's data goes out with the copied-in rest of its clusters: QEMU's data write event (blkdebug's write_aio, 020).
  await bdrvDebugEvent(s.file, 'write_aio');
  await bdrvPwrite(s.file, host, buf.length, buf);
  s.fileSize += buf.length;
  for (let i = 0; i < clusters; i++) s.grown.set(host + i * cs, start + i * cs);

  const l2Span = s.tableNelems * cs;
  const l1Index = Math.floor(pos / l2Span);
  const index = Math.floor((start % l2Span) / cs);
  let l2Offset = s.l1[l1Index]!;
  if (l2Offset === 0) {
    const table = new Float64Array(s.tableNelems);
    for (let i = 0; i < clusters; i++) table[index + i] = host + i * cs;
    l2Offset = s.fileSize;
    await bdrvPwrite(s.file, l2Offset, s.tableBytes, serializeQedTable(table, 0, s.tableNelems));
    s.fileSize += s.tableBytes;
    s.l2Cache.set(l2Offset, table);
    s.l1[l1Index] = l2Offset;
    await bdrvPwrite(s.file, s.header.l1TableOffset + l1Index * 8, 8, serializeQedTable(s.l1, l1Index, 1));
  } else {
    const table = await loadL2(s, l2Offset, l1Index);
    for (let i = 0; i < clusters; i++) table[index + i] = host + i * cs;
    await bdrvPwrite(s.file, l2Offset + index * 8, clusters * 8, serializeQedTable(table, index, clusters));
  }
  return run.bytes;
}

