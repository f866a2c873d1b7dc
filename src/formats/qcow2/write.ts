/**
 * The qcow2 write path: guest writes, compressed writes, write-zeroes,
 * discard and resize (QEMU's qcow2_co_pwritev_part, qcow2_alloc_cluster_offset,
 * qcow2_co_pwritev_compressed, qcow2_subcluster_zeroize, qcow2_cluster_discard,
 * qcow2_co_truncate).
 *
 * Every request runs under the node's lock (metadata.ts withLock), one at a
 * time, so allocation needs no in-flight bookkeeping. Per cluster run:
 *   in place  the cluster has a host offset with COPIED (refcount 1) and every
 *             touched subcluster is allocated: the data is written over it;
 *   reuse     host offset with COPIED, but the L2 entry must change (a
 *             ZERO_ALLOC cluster, or unallocated/zero subclusters): the
 *             touched (sub)clusters are completed from what the guest reads
 *             now and written into the same host cluster;
 *   alloc     anything else: new contiguous clusters are allocated (refcount
 *             1), the parts of the (sub)clusters the request does not cover
 *             are copied from what the guest reads now (old cluster, compressed
 *             data, backing chain or zeros), then the L2 entries point at the
 *             new clusters with COPIED; the old clusters are freed only once
 *             the L2 tables are stable (refcount.ts freeClustersDeferred).
 * With extended L2 entries only the touched subclusters are completed
 * (QEMU's calculate_l2_meta: from the first allocated subcluster of an old
 * cluster, so no allocated subcluster is lost), and their allocation bits
 * are set and zero bits cleared. With an external data file host offsets equal
 * guest offsets and data clusters have no refcounts.
 *
 * L2 changes stay in the L2 cache until l1.ts flushMetadata writes them in
 * order (refcounts, L2, L1, deferred frees), on flush, close, FUA, or when
 * dirty slices exceed the cache's capacity.
 */
import { BlockError, hex } from '../../block/errors.js';
import type { BlockNode } from '../../block/node.js';
import type { WriteFlags, PreallocMode } from '../../block/driver.js';
import { allocBuffer, freeBuffer } from '../../block/buffers.js';
import { bdrvFlush, bdrvPwrite, bdrvTruncate } from '../../block/io.js';
import { bdrvDebugEvent } from '../../block/debug-event.js';
import { QCOW2_AUTOCLEAR_BITMAPS, QCOW2_AUTOCLEAR_DATA_FILE_RAW } from './header.js';
import { sizeToL1 } from './validate.js';
import { compressCluster } from './compressed.js';
import {
  ALL_SUBCLUSTERS,
  emptyL2Entry,
  encodeCompressedEntry,
  entryHasOffset,
  l2BitmapInvalid,
  l2EntryHost,
  l2EntryIsCompressed,
  l2EntryIsCopied,
  l2EntryIsZero,
  parseCompressedDescriptor,
  QCOW_OFLAG_ZERO,
  QCOW2_COMPRESSED_SECTOR_SIZE,
  readL2Entry,
  sameL2Entry,
  standardL2Entry,
  subclusterMask,
  writeL2Entry,
  type L2Entry,
} from './l2-entry.js';
import { allocateBytes, allocateClusters, deferredFreesRelease, freeClustersDeferred, getRefcount, updateRefcount } from './refcount.js';
import { flushMetadata, getL2ForWrite, growL1, setL1Entry } from './l1.js';
import { altHex, checkDataOverlap, checkNotCorrupt, markCorrupt, setDirtyBit, syncFile, writeAutoclearFeatures, writeHeaderFields } from './metadata.js';
import { qcow2Read } from './read.js';
import { mapRun } from './cluster-map.js';
import { qcow2TruncateBitmapsCheck } from './bitmaps.js';
import { L2_UNALLOCATED, L2_UNALLOCATED_ALLOC, L2_ZERO_ALLOC, L2_ZERO_PLAIN } from './l2-scan.js';
import { blockStatusAbove, BDRV_BLOCK_ZERO } from '../../block/status.js';
import { l1Offset, type Qcow2DiscardType, type Qcow2State } from './state.js';
import type { L2Slice } from './l2-cache.js';
import { encryptData } from './crypto.js';

// ----------------------------------------------------------- L2 entries

/** Whether the entry has a host cluster (with an external data file, offset 0 counts when COPIED). */
export function hasHost(s: Qcow2State, e: L2Entry): boolean {
  if (l2EntryIsCompressed(e)) return false;
  return l2EntryHost(e) !== 0 || (s.dataFile !== s.file && l2EntryIsCopied(e));
}

/** Queues the release of what an old entry referenced (nothing for data-file clusters). */
function freeOld(s: Qcow2State, e: L2Entry, type: Qcow2DiscardType): void {
  if (s.dataFile !== s.file) return;
  if (l2EntryIsCompressed(e)) {
    const { coffset, csize } = parseCompressedDescriptor(e.hi, e.lo, s.clusterBits);
    const start = coffset - (coffset % QCOW2_COMPRESSED_SECTOR_SIZE);
    freeClustersDeferred(s, start, csize + (coffset - start), false, type);
  } else if (l2EntryHost(e) !== 0) {
    freeClustersDeferred(s, l2EntryHost(e), s.clusterSize, false, type);
  }
}

type Cls = 'inPlace' | 'reuse' | 'alloc';

function classify(s: Qcow2State, e: L2Entry, a: number, b: number): Cls {
  if (!hasHost(s, e) || !l2EntryIsCopied(e)) return 'alloc';
  if (!s.extendedL2) return l2EntryIsZero(e) ? 'reuse' : 'inPlace';
  const m = subclusterMask(Math.floor(a / s.subclusterSize), Math.ceil(b / s.subclusterSize));
  return (e.alloc & m) === m ? 'inPlace' : 'reuse';
}

export async function checkHostAligned(s: Qcow2State, host: number, guest: number): Promise<void> {
  if (host % s.clusterSize !== 0) {
    throw await markCorrupt(s, `Cluster allocation offset ${hex(host)} unaligned (guest offset ${hex(guest)})`);
  }
}

/**
 * Every cluster a write touches must have a valid bitmap before anything is
 * written (QEMU's calculate_l2_meta); else the image is marked corrupt.
 */
async function checkBitmapsValid(s: Qcow2State, d: Uint8Array, l2Off: number, idx0: number, n: number): Promise<void> {
  for (let j = 0; j < n; j++) {
    const e = readL2Entry(d, idx0 + j, true);
    if (l2BitmapInvalid(e, hasHost(s, e))) {
      throw await markCorrupt(s, `Invalid cluster entry found (L2 offset: ${hex(l2Off)}, L2 index: ${altHex(idx0 + j)})`);
    }
  }
}

// ---------------------------------------------------------- preparation

/** Before the first change: clear autoclear bits we do not maintain, set the dirty bit for lazy refcounts. */
export async function prepareWrite(s: Qcow2State): Promise<void> {
  checkNotCorrupt(s);
  await prepareHeader(s);
  if (s.useLazyRefcounts) await setDirtyBit(s);
}

/** Clears the autoclear bits we do not maintain, once (QEMU does it when it opens an image read-write). */
export async function prepareHeader(s: Qcow2State): Promise<void> {
  const h = s.header;
  if (!s.rw.headerPrepared) {
    // Bits we do not keep up to date (unknown ones; bitmaps this node did not load) must go before the image changes.
    const keep = QCOW2_AUTOCLEAR_DATA_FILE_RAW | (s.bitmapsLoaded ? QCOW2_AUTOCLEAR_BITMAPS : 0n);
    if (h.version === 3 && h.autoclearFeatures & ~keep) {
      h.autoclearFeatures &= keep;
      await writeAutoclearFeatures(s);
      await syncFile(s);
    }
    s.rw.headerPrepared = true;
  }
}

/** After a request: keep the number of dirty L2 slices bounded. */
export async function afterWrite(s: Qcow2State, flags: WriteFlags = {}): Promise<void> {
  if (flags.fua) {
    await flushMetadata(s, { keepLazy: true });
    if (s.dataFile !== s.file) await bdrvFlush(s.dataFile);
    await syncFile(s);
  } else if (s.l2Cache.size > s.l2Cache.capacity) {
    await flushMetadata(s, { keepLazy: true });
  }
}

/**
 * The L2 slice holding guest offset `off`'s entry, its table first made
 * writable (getL2ForWrite), acquired from the cache (the caller releases it),
 * with the table's offset and the entry's index in the slice.
 */
export async function acquireL2SliceForWrite(s: Qcow2State, off: number): Promise<{ slice: L2Slice; l2Off: number; idx: number }> {
  const cs = s.clusterSize;
  const coverage = cs * s.l2Size;
  const l1Index = Math.floor(off / coverage);
  const l2Off = await getL2ForWrite(s, l1Index);
  const ci = Math.floor((off - l1Index * coverage) / cs);
  const sliceIndex = Math.floor(ci / s.l2SliceSize);
  const slice = await s.l2Cache.acquire(l2Off + sliceIndex * s.l2Cache.entrySize);
  return { slice, l2Off, idx: ci - sliceIndex * s.l2SliceSize };
}

// ----------------------------------------------------------------- writes

/** Writes guest bytes `data` (at guest `guest`) to host `host` of the data file, encrypted in a bounce buffer when the image is. */
export async function writeData(s: Qcow2State, guest: number, host: number, data: Uint8Array): Promise<void> {
  if (!s.crypto) {
    await bdrvPwrite(s.dataFile, host, data.length, data);
    return;
  }
  // Never in the caller's buffer: it may be read again (or be guest memory).
  const bounce = allocBuffer(data.length);
  try {
    bounce.set(data);
    encryptData(s.crypto, s.image, guest, host, bounce);
    await bdrvPwrite(s.dataFile, host, data.length, bounce);
  } finally {
    freeBuffer(bounce);
  }
}

/** Fills `out` with guest bytes [offset, offset + out.length), zeros past the virtual disk's end. */
async function readCurrent(bs: BlockNode, s: Qcow2State, offset: number, out: Uint8Array): Promise<void> {
  const have = Math.max(0, Math.min(out.length, bs.totalBytes - offset));
  if (have > 0) await qcow2Read(bs, s, offset, have, out.subarray(0, have));
  if (have < out.length) out.fill(0, have);
}

/**
 * Writes guest range [regionStart + head, …) of `data` into host `host` +
 * (regionStart - clusterGuest), completing [regionStart, regionEnd) from
 * what the guest reads now.
 */
async function writeCompleted(
  bs: BlockNode,
  s: Qcow2State,
  regionStart: number,
  regionEnd: number,
  dataStart: number,
  data: Uint8Array,
  hostStart: number,
): Promise<void> {
  const head = dataStart - regionStart;
  const tail = regionEnd - (dataStart + data.length);
  await checkDataOverlap(s, hostStart, regionEnd - regionStart);
  if (head === 0 && tail === 0) {
    await bdrvDebugEvent(s.file, 'write_aio');
    await writeData(s, dataStart, hostStart, data);
    return;
  }
  const len = regionEnd - regionStart;
  const bounce = allocBuffer(len);
  try {
    // Without a backing file the rest of the cluster is zeros: QEMU zeroes it on the file (cluster_alloc_space) and writes
    // the data as a plain write; here one write carries both, announced by the same events. Else a copy-on-write with
    // QEMU's events: one cow_read per region read (both ends in one read when the data between is at most 16 KiB),
    // then write_aio and cow_write for the single write of regions and data.
    const zeroCow = !bs.backing;
    const mergedReads = head > 0 && tail > 0 && data.length <= 16384;
    if (zeroCow || mergedReads || head) await bdrvDebugEvent(s.file, zeroCow ? 'cluster_alloc_space' : 'cow_read');
    if (head) await readCurrent(bs, s, regionStart, bounce.subarray(0, head));
    bounce.set(data, head);
    if (tail && !zeroCow && !mergedReads) await bdrvDebugEvent(s.file, 'cow_read');
    if (tail) await readCurrent(bs, s, dataStart + data.length, bounce.subarray(len - tail));
    await bdrvDebugEvent(s.file, 'write_aio');
    if (!zeroCow) await bdrvDebugEvent(s.file, 'cow_write');
    await writeData(s, regionStart, hostStart, bounce.subarray(0, len));
  } finally {
    freeBuffer(bounce);
  }
}

/** `n` clusters from slice index `idx0` get new host clusters; `data` lands at guest `off`. */
async function writeAlloc(bs: BlockNode, s: Qcow2State, slice: L2Slice, idx0: number, n: number, off: number, data: Uint8Array): Promise<void> {
  const cs = s.clusterSize;
  const ext = s.extendedL2;
  const scs = s.subclusterSize;
  const guest0 = off - (off % cs);
  const first = off % cs;
  const lastEnd = first + data.length - (n - 1) * cs;
  const d = slice.data;

  // Subcluster range each cluster materialises (whole clusters without extended L2).
  const range = (j: number): [number, number] => {
    if (!ext) return [0, 32];
    const a = j === 0 ? first : 0;
    const b = j === n - 1 ? lastEnd : cs;
    let lo = Math.floor(a / scs);
    let hi = Math.ceil(b / scs);
    const old = readL2Entry(d, idx0 + j, ext);
    if (l2EntryIsCompressed(old)) return [0, 32];
    if (hasHost(s, old) && old.alloc) {
      lo = Math.min(lo, 31 - Math.clz32(old.alloc & -old.alloc));
      hi = Math.max(hi, 32 - Math.clz32(old.alloc));
    }
    return [lo, hi];
  };
  const r0 = range(0);
  const rn = n === 1 ? r0 : range(n - 1);
  const regionStart = guest0 + (ext ? r0[0] * scs : 0);
  const regionEnd = guest0 + (n - 1) * cs + (ext ? rn[1] * scs : cs);

  // Clusters an earlier write let go are free again before this allocation, as in QEMU (which frees them at once and
  // orders the refcount write after the L2 table's); here the tables are made stable first, then the frees applied.
  if (s.dataFile === s.file && !s.rw.dirtyBitSet && (await deferredFreesRelease(s))) await flushMetadata(s);
  const host = s.dataFile !== s.file ? guest0 : await allocateClusters(s, n);
  try {
    await writeCompleted(bs, s, regionStart, regionEnd, off, data, host + (regionStart - guest0));
  } catch (e) {
    await abortAllocation(s, host, n);
    throw e;
  }

  for (let j = 0; j < n; j++) {
    const old = readL2Entry(d, idx0 + j, ext);
    const e = standardL2Entry(host + j * cs);
    if (ext) {
      const [lo, hi] = j === 0 ? r0 : j === n - 1 ? rn : [0, 32];
      const m = subclusterMask(lo, hi);
      e.alloc = m;
      e.zero = l2EntryIsCompressed(old) ? 0 : (old.zero & ~m) >>> 0;
    }
    writeL2Entry(d, idx0 + j, ext, e);
    freeOld(s, old, 'never');
  }
  s.l2Cache.markDirty(slice);
}

/**
 * QEMU's qcow2_alloc_cluster_abort: the data write into `n` fresh clusters
 * at `host` failed, so no table references them; their refcounts drop at
 * once (nothing to order) and a later write may take them again. A failure
 * here only leaks them.
 */
export async function abortAllocation(s: Qcow2State, host: number, n: number): Promise<void> {
  if (s.dataFile !== s.file) return;
  await updateRefcount(s, host, n * s.clusterSize, -1, 'never').catch(() => {});
}

/** Cluster `idx` keeps its host cluster (COPIED) but its entry changes. */
async function writeReuse(bs: BlockNode, s: Qcow2State, slice: L2Slice, idx: number, off: number, data: Uint8Array): Promise<void> {
  const cs = s.clusterSize;
  const ext = s.extendedL2;
  const scs = s.subclusterSize;
  const guest0 = off - (off % cs);
  const e = readL2Entry(slice.data, idx, ext);
  const host = l2EntryHost(e);
  await checkHostAligned(s, host, off);
  let lo = 0;
  let hi = cs;
  if (ext) {
    lo = Math.floor((off % cs) / scs) * scs;
    hi = Math.ceil(((off % cs) + data.length) / scs) * scs;
  }
  await writeCompleted(bs, s, guest0 + lo, guest0 + hi, off, data, host + lo);
  if (ext) {
    const m = subclusterMask(lo / scs, hi / scs);
    e.alloc = (e.alloc | m) >>> 0;
    e.zero = (e.zero & ~m) >>> 0;
  } else {
    e.lo = (e.lo & ~QCOW_OFLAG_ZERO) >>> 0;
  }
  writeL2Entry(slice.data, idx, ext, e);
  s.l2Cache.markDirty(slice);
}

/** Writes guest [offset, offset + bytes) from `buf` (the caller holds the lock). */
export async function qcow2Write(bs: BlockNode, s: Qcow2State, offset: number, bytes: number, buf: Uint8Array): Promise<void> {
  const cs = s.clusterSize;
  const ext = s.extendedL2;
  let done = 0;
  while (done < bytes) {
    const off = offset + done;
    const remaining = bytes - done;
    const { slice, l2Off, idx: idx0 } = await acquireL2SliceForWrite(s, off);
    const first = off % cs;
    const maxClusters = Math.min(s.l2SliceSize - idx0, Math.ceil((first + remaining) / cs));
    const touched = (j: number): [number, number] => [j === 0 ? first : 0, Math.min(cs, first + remaining - j * cs)];

    try {
      const d = slice.data;
      if (ext) await checkBitmapsValid(s, d, l2Off, idx0, maxClusters);
      const e0 = readL2Entry(d, idx0, ext);
      const cls = classify(s, e0, ...touched(0));
      let n = 1;
      if (cls === 'inPlace' || (cls === 'reuse' && !ext)) {
        // A run of clusters this image owns (COPIED) at consecutive host offsets is one request to the file, as QEMU's
        // host-contiguous runs: data clusters written in place and preallocated zero clusters alike (066).
        const h0 = l2EntryHost(e0);
        await checkHostAligned(s, h0, off);
        const kinds: Cls[] = [cls];
        while (n < maxClusters) {
          const e = readL2Entry(d, idx0 + n, ext);
          const k = classify(s, e, ...touched(n));
          if ((k !== 'inPlace' && (k !== 'reuse' || ext)) || l2EntryHost(e) !== h0 + n * cs) break;
          kinds.push(k);
          n++;
        }
        const len = Math.min(remaining, n * cs - first);
        const data = buf.subarray(done, done + len);
        if (!kinds.includes('reuse')) {
          await checkDataOverlap(s, h0 + first, len);
          await bdrvDebugEvent(s.file, 'write_aio');
          await writeData(s, off, h0 + first, data);
        } else {
          // A zero cluster is written whole: its untouched ends read as zeros now and are completed from that.
          const guest0 = off - first;
          const regionStart = kinds[0] === 'reuse' ? guest0 : off;
          const end = off + len;
          const regionEnd = kinds[n - 1] === 'reuse' ? guest0 + Math.ceil((first + len) / cs) * cs : end;
          await writeCompleted(bs, s, regionStart, regionEnd, off, data, h0 + (regionStart - guest0));
          for (let j = 0; j < n; j++) {
            if (kinds[j] !== 'reuse') continue;
            const e = readL2Entry(d, idx0 + j, ext);
            e.lo = (e.lo & ~QCOW_OFLAG_ZERO) >>> 0;
            writeL2Entry(d, idx0 + j, ext, e);
          }
          s.l2Cache.markDirty(slice);
        }
        done += len;
      } else if (cls === 'reuse') {
        const len = Math.min(remaining, cs - first);
        await writeReuse(bs, s, slice, idx0, off, buf.subarray(done, done + len));
        done += len;
      } else {
        while (n < maxClusters && classify(s, readL2Entry(d, idx0 + n, ext), ...touched(n)) === 'alloc') n++;
        const len = Math.min(remaining, n * cs - first);
        await writeAlloc(bs, s, slice, idx0, n, off, buf.subarray(done, done + len));
        done += len;
      }
    } finally {
      s.l2Cache.release(slice);
    }
  }
}

// -------------------------------------------------------- compressed writes

/**
 * QEMU's qcow2_co_pwritev_compressed: whole clusters at cluster-aligned
 * offsets (the image's last cluster may be partial), each compressed on its
 * own; a cluster that does not shrink is written normally. Compressed data
 * never overwrites an allocated cluster (EIO, as QEMU).
 */
export async function qcow2WriteCompressed(
  bs: BlockNode,
  s: Qcow2State,
  offset: number,
  bytes: number,
  buf: Uint8Array,
  precompressed?: Uint8Array | null,
): Promise<void> {
  const cs = s.clusterSize;
  if (s.dataFile !== s.file) throw new BlockError('ENOTSUP', `${s.image}: compressed writes are not supported with an external data file`);
  if (offset % cs !== 0) throw new BlockError('EINVAL', `${s.image}: compressed write at ${hex(offset)} is not cluster-aligned (cluster size ${cs})`);
  if (bytes % cs !== 0 && offset + bytes !== bs.totalBytes) {
    throw new BlockError('EINVAL', `${s.image}: compressed write at ${hex(offset)} (+${bytes} bytes) must cover whole clusters (cluster size ${cs})`);
  }
  for (let done = 0; done < bytes; done += cs) {
    const off = offset + done;
    const len = Math.min(cs, bytes - done);
    const packed = precompressed !== undefined && bytes <= cs ? precompressed : await qcow2CompressCluster(s, buf.subarray(done, done + len));
    if (!packed) {
      await qcow2Write(bs, s, off, len, buf.subarray(done, done + len));
      continue;
    }
    await writeOneCompressed(s, off, packed);
  }
}

/**
 * One cluster as qcow2_co_compress makes it (a partial last cluster is
 * padded with zeros), or null when it does not shrink below a cluster.
 * Reads only the header, so concurrent calls are safe (the driver's
 * compressCluster, for callers that compress ahead of their writes).
 */
export async function qcow2CompressCluster(s: Qcow2State, data: Uint8Array): Promise<Uint8Array | null> {
  const cs = s.clusterSize;
  if (data.length > cs) throw new BlockError('EINVAL', `${s.image}: ${data.length} bytes to compress are more than one cluster (${cs})`);
  if (data.length === cs) return compressCluster(s.header.compressionType, data, cs - 1);
  const cluster = allocBuffer(cs);
  try {
    cluster.fill(0);
    cluster.set(data);
    return await compressCluster(s.header.compressionType, cluster, cs - 1);
  } finally {
    freeBuffer(cluster);
  }
}

async function writeOneCompressed(s: Qcow2State, off: number, packed: Uint8Array): Promise<void> {
  const cs = s.clusterSize;
  const ext = s.extendedL2;
  const { slice, idx } = await acquireL2SliceForWrite(s, off);
  try {
    const old = readL2Entry(slice.data, idx, ext);
    if (entryHasOffset(old.hi, old.lo)) {
      throw new BlockError('EIO', `${s.image}: compressed write at guest offset ${hex(off)}: the cluster is already allocated (compressed data cannot overwrite it)`);
    }
    const coffset = await allocateBytes(s, packed.length);
    let e: { hi: number; lo: number };
    try {
      e = encodeCompressedEntry(coffset, packed.length, s.clusterBits);
    } catch (err) {
      // As QEMU's qcow2_alloc_bytes, an offset the entry cannot hold fails before any data is written
      // (the bytes are given back: nothing leaks, the file grows by no data, iotest 220).
      await updateRefcount(s, coffset, packed.length, -1);
      throw new BlockError('EFBIG', `${s.image}: compressed cluster at host offset ${hex(coffset)} (${packed.length} bytes) cannot be described by an L2 entry with ${s.clusterSize}-byte clusters`, { cause: err });
    }
    await checkDataOverlap(s, coffset, packed.length);
    await bdrvDebugEvent(s.file, 'write_compressed');
    await bdrvPwrite(s.file, coffset, packed.length, packed);
    const { hi, lo } = e;
    writeL2Entry(slice.data, idx, ext, { hi, lo, zero: 0, alloc: 0 });
    s.l2Cache.markDirty(slice);
  } finally {
    s.l2Cache.release(slice);
  }
}

// ------------------------------------------------- zeroes, discard, truncate

type EntryFn = (d: Uint8Array, idx: number, a: number, b: number, guest: number) => Promise<boolean>;

/**
 * Calls `fn` for each cluster of [offset, offset + bytes) with its slice,
 * index and the touched byte range [a, b) in the cluster; marks the slice
 * dirty when fn says it changed the entry. L2 tables that are unallocated
 * are skipped unless `needTables` (then they are allocated).
 */
async function modifyEntries(s: Qcow2State, offset: number, bytes: number, needTables: boolean, fn: EntryFn): Promise<void> {
  const cs = s.clusterSize;
  const coverage = cs * s.l2Size;
  const sliceBytes = s.l2SliceSize * cs;
  const end = offset + bytes;
  let pos = offset;
  while (pos < end) {
    const l1Index = Math.floor(pos / coverage);
    const tableStart = l1Index * coverage;
    const tableEnd = Math.min(end, tableStart + coverage);
    if (!needTables && (l1Index >= s.l1Size || l1Offset(s, l1Index) === 0)) {
      pos = tableEnd;
      continue;
    }
    const l2Off = await getL2ForWrite(s, l1Index);
    const sliceIndex = Math.floor((pos - tableStart) / sliceBytes);
    const sliceStart = tableStart + sliceIndex * sliceBytes;
    const sliceEnd = Math.min(tableEnd, sliceStart + sliceBytes);
    const slice = await s.l2Cache.acquire(l2Off + sliceIndex * s.l2Cache.entrySize);
    try {
      for (let g = pos; g < sliceEnd; ) {
        const cStart = g - (g % cs);
        const a = g - cStart;
        const b = Math.min(cs, sliceEnd - cStart);
        if (await fn(slice.data, (cStart - sliceStart) / cs, a, b, cStart)) s.l2Cache.markDirty(slice);
        g = cStart + b;
      }
    } finally {
      s.l2Cache.release(slice);
    }
    pos = sliceEnd;
  }
}

/**
 * QEMU's qcow2_subcluster_zeroize for a (sub)cluster-aligned range (the
 * image's end may cut the last cluster): zero flags on v3 (deallocating with
 * `mayUnmap`, always for compressed clusters); on v2 the range is discarded
 * when there is no backing file, else ENOTSUP (the core writes zeros).
 */
export async function qcow2ZeroRange(bs: BlockNode, s: Qcow2State, offset: number, bytes: number, mayUnmap: boolean): Promise<void> {
  if (s.dataFileRaw) throw new BlockError('ENOTSUP', `${s.image}: zero clusters are not used with a raw external data file`);
  if (s.header.version < 3) {
    if (bs.cowNode()) throw new BlockError('ENOTSUP', `${s.image}: compat 0.10 images have no zero clusters`);
    return qcow2DiscardRange(bs, s, offset, bytes, false);
  }
  const cs = s.clusterSize;
  const ext = s.extendedL2;
  const scs = s.subclusterSize;
  // QEMU's zero_in_l2_slice allocates missing L2 tables even without a backing file: the range becomes zero clusters, which count as allocated.
  await modifyEntries(s, offset, bytes, true, async (d, idx, a, b, guest) => {
    const e = readL2Entry(d, idx, ext);
    const full = a === 0 && (b === cs || guest + b >= bs.totalBytes);
    if (!full) {
      if (!ext || l2EntryIsCompressed(e)) throw new BlockError('ENOTSUP', `${s.image}: cannot zero part of the cluster at ${hex(guest)} without writing it`);
      const m = subclusterMask(Math.floor(a / scs), Math.ceil(b / scs));
      const n: L2Entry = { ...e, zero: (e.zero | m) >>> 0, alloc: (e.alloc & ~m) >>> 0 };
      if (sameL2Entry(n, e)) return false;
      writeL2Entry(d, idx, ext, n);
      return true;
    }
    const allocated = l2EntryIsCompressed(e) || hasHost(s, e);
    const unmap = l2EntryIsCompressed(e) || (mayUnmap && allocated);
    const n: L2Entry = unmap ? emptyL2Entry() : { ...e };
    if (ext) {
      n.zero = ALL_SUBCLUSTERS;
      n.alloc = 0;
    } else {
      n.lo = (n.lo | QCOW_OFLAG_ZERO) >>> 0;
    }
    if (sameL2Entry(n, e)) return false;
    writeL2Entry(d, idx, ext, n);
    if (unmap) freeOld(s, e, 'request');
    return true;
  });
}

/**
 * QEMU's qcow2_cluster_discard over whole clusters (the image's last one may
 * be partial). Without `full`, discarded clusters read as zeros on v3 (so a
 * backing file does not show through); on v2 they become unallocated, and
 * nothing happens when a backing file would show through. With
 * `full` (shrinking) the entries are simply cleared.
 */
export async function qcow2DiscardRange(
  bs: BlockNode,
  s: Qcow2State,
  offset: number,
  bytes: number,
  full: boolean,
  type: Qcow2DiscardType = full ? 'always' : 'request',
): Promise<void> {
  const ext = s.extendedL2;
  const backing = bs.cowNode() !== null;
  // A compat 0.10 image cannot hide its backing file without writing data: QEMU 7.2 leaves it alone.
  if (!full && backing && s.header.version < 3) return;
  await modifyEntries(s, offset, bytes, backing && !full, async (d, idx) => {
    const e = readL2Entry(d, idx, ext);
    const allocated = l2EntryIsCompressed(e) || hasHost(s, e);
    let n: L2Entry = { ...e };
    if (full) {
      n = emptyL2Entry();
    } else if (backing || allocated) {
      if (ext) n = { hi: 0, lo: 0, zero: ALL_SUBCLUSTERS, alloc: 0 };
      else n = { hi: 0, lo: s.header.version >= 3 ? QCOW_OFLAG_ZERO : 0, zero: 0, alloc: 0 };
    }
    if (sameL2Entry(n, e)) return false;
    writeL2Entry(d, idx, ext, n);
    if (allocated) freeOld(s, e, type);
    return true;
  });
}

/** QEMU's is_zero: block status of the chain says ZERO for the whole range. */
async function readsAsZero(bs: BlockNode, offset: number, bytes: number): Promise<boolean> {
  const end = Math.min(offset + bytes, bs.totalBytes);
  for (let o = offset; o < end; ) {
    const st = await blockStatusAbove(bs, null, false, o, end - o);
    if (!(st.status & BDRV_BLOCK_ZERO) || st.pnum <= 0) return false;
    o += st.pnum;
  }
  return true;
}

/**
 * The driver's write-zeroes (QEMU's qcow2_co_pwrite_zeroes plus the generic
 * layer's head/tail split): the subcluster-aligned middle becomes zero
 * clusters; a partial subcluster at either end becomes a zero subcluster
 * when the rest of it already reads as zeros and it holds no data, and is
 * written with explicit zeros otherwise.
 */
export async function qcow2PwriteZeroes(bs: BlockNode, s: Qcow2State, offset: number, bytes: number, mayUnmap: boolean): Promise<void> {
  const scs = s.subclusterSize;
  const end = offset + bytes;
  const headEnd = Math.min(end, Math.ceil(offset / scs) * scs);
  // The generic layer cuts an unaligned tail off even at the image's end (271: a 35k zero write there sets 18 zero bits, not 32).
  const tailStart = Math.max(headEnd, end - (end % scs));
  const partial = async (a: number, b: number): Promise<void> => {
    const start = a - (a % scs);
    const stop = Math.min(start + scs, bs.totalBytes);
    if ((await readsAsZero(bs, start, a - start)) && (await readsAsZero(bs, b, stop - b))) {
      const run = await mapRun(s, start, stop - start);
      const t = run.type;
      if (run.bytes >= stop - start && (t === L2_UNALLOCATED || t === L2_UNALLOCATED_ALLOC || t === L2_ZERO_PLAIN || t === L2_ZERO_ALLOC)) {
        try {
          await qcow2ZeroRange(bs, s, start, stop - start, mayUnmap);
          return;
        } catch (e) {
          if (!(e instanceof BlockError && e.code === 'ENOTSUP')) throw e;
        }
      }
    }
    await writeZeroBuffer(bs, s, a, b - a);
  };
  // A piece that ends the image has nothing after it to check (QEMU's qcow2_co_pwrite_zeroes drops the tail there).
  const atEnd = async (a: number, b: number): Promise<void> => {
    try {
      await qcow2ZeroRange(bs, s, a, b - a, mayUnmap);
    } catch (e) {
      if (!(e instanceof BlockError && e.code === 'ENOTSUP')) throw e;
      await writeZeroBuffer(bs, s, a, b - a);
    }
  };
  if (headEnd > offset) await partial(offset, headEnd);
  if (tailStart > headEnd) await qcow2ZeroRange(bs, s, headEnd, tailStart - headEnd, mayUnmap);
  if (end > tailStart) await (end >= bs.totalBytes ? atEnd : partial)(tailStart, end);
}

/** Explicit zeros over guest [offset, offset + bytes). */
async function writeZeroBuffer(bs: BlockNode, s: Qcow2State, offset: number, bytes: number): Promise<void> {
  const chunk = Math.min(bytes, 1024 * 1024);
  const zeros = allocBuffer(chunk);
  zeros.fill(0);
  try {
    for (let done = 0; done < bytes; done += chunk) {
      const n = Math.min(chunk, bytes - done);
      await qcow2Write(bs, s, offset + done, n, zeros.subarray(0, n));
    }
  } finally {
    freeBuffer(zeros);
  }
}

/** Makes guest [start, end) read as zeros: zero clusters where aligned (v3), explicit zeros elsewhere. */
async function zeroFill(bs: BlockNode, s: Qcow2State, start: number, end: number): Promise<void> {
  const scs = s.subclusterSize;
  const alignedStart = Math.min(end, Math.ceil(start / scs) * scs);
  const alignedEnd = end >= bs.totalBytes ? end : Math.max(alignedStart, end - (end % scs));
  if (alignedStart > start) await writeZeroBuffer(bs, s, start, alignedStart - start);
  if (alignedEnd > alignedStart) {
    if (s.header.version >= 3 && !s.dataFileRaw) await qcow2ZeroRange(bs, s, alignedStart, alignedEnd - alignedStart, false);
    else await writeZeroBuffer(bs, s, alignedStart, alignedEnd - alignedStart);
  }
  if (end > alignedEnd) await writeZeroBuffer(bs, s, alignedEnd, end - alignedEnd);
}

/**
 * Growing with preallocation (QEMU's preallocate_co for 'metadata', the
 * falloc/full branch of qcow2_co_truncate): every cluster of the new area,
 * from the one holding the old end, gets a host cluster with COPIED.
 * 'metadata' keeps clusters that already have one and leaves extended
 * bitmaps alone (new subclusters are unallocated, reading zeros or the
 * backing file until zeroFill hides it); falloc/full give every such cluster
 * a new one, its subclusters all allocated when a backing file must be
 * hidden. The old end's cluster keeps its bytes below the old size (copied
 * into a new cluster); the rest of each new cluster is zeros, written when
 * the cluster lies inside the file, else from growing the file with the mode.
 */
async function preallocateGrow(bs: BlockNode, s: Qcow2State, old: number, size: number, prealloc: PreallocMode, hideBacking: boolean): Promise<void> {
  const cs = s.clusterSize;
  const ext = s.extendedL2;
  const data = prealloc !== 'metadata';
  const start = old - (old % cs);
  const fileEnd = s.file.totalBytes;
  let hostEnd = fileEnd;
  await modifyEntries(s, start, Math.ceil(size / cs) * cs - start, true, async (d, idx, _a, _b, guest) => {
    const e = readL2Entry(d, idx, ext);
    if (!data && hasHost(s, e) && l2EntryIsCopied(e)) return false;
    const host = await allocateClusters(s, 1);
    const head = Math.max(0, Math.min(old, guest + cs) - guest);
    if (host < fileEnd || head > 0) {
      const buf = allocBuffer(cs);
      try {
        buf.fill(0);
        if (head > 0) await readCurrent(bs, s, guest, buf.subarray(0, head));
        await checkDataOverlap(s, host, cs);
        await writeData(s, guest, host, buf);
      } finally {
        freeBuffer(buf);
      }
    }
    hostEnd = Math.max(hostEnd, host + cs);
    const n = standardL2Entry(host);
    if (ext) {
      // A compressed cluster's bytes were just written out plainly: all of them count.
      const allocAll = (data && hideBacking) || l2EntryIsCompressed(e);
      n.alloc = allocAll ? ALL_SUBCLUSTERS : e.alloc;
      n.zero = allocAll ? 0 : e.zero;
    }
    writeL2Entry(d, idx, ext, n);
    freeOld(s, e, 'never');
    return true;
  });
  if (hostEnd > s.file.totalBytes) await bdrvTruncate(s.file, hostEnd, false, data ? prealloc : 'off');
}

async function writeHeaderSize(s: Qcow2State, size: number): Promise<void> {
  await writeHeaderFields(s, ['size'], { ...s.header, size });
  await syncFile(s);
  s.header.size = size;
}

/**
 * QEMU's qcow2_co_truncate with preallocation off. Growing grows the L1
 * table, then the header's size; when a backing file would show through the
 * new area it is zeroed (QEMU's BDRV_REQ_ZERO_WRITE from bdrv_co_truncate).
 * Shrinking writes the size, then clears and frees the clusters past the new
 * end and the L2 tables past the new L1 size.
 */
export async function qcow2Truncate(bs: BlockNode, s: Qcow2State, size: number, prealloc: PreallocMode): Promise<void> {
  if (prealloc !== 'off' && s.dataFile !== s.file) {
    throw new BlockError('ENOTSUP', `${s.image}: Preallocation mode '${prealloc}' is not supported when resizing qcow2 images with an external data file`);
  }
  if (size % 512 !== 0) throw new BlockError('EINVAL', `${s.image}: The new size must be a multiple of 512`);
  // v3 snapshots record their own disk size, so the active image may change size under them (as QEMU >= 5.0).
  if (s.snapshots.length && s.header.version < 3) throw new BlockError('ENOTSUP', "Can't resize a v2 image which has snapshots");
  const cs = s.clusterSize;
  const old = s.header.size;
  if (size < old && prealloc !== 'off') throw new BlockError('ENOTSUP', `${s.image}: Preallocation can't be used for shrinking an image`);
  // QEMU writes the header's size field even when it does not change (a write the file node's statistics show).
  if (size === old) return writeHeaderSize(s, size);
  // Stored bitmaps follow the disk only when they are in memory and usable (they are stored at the new size on close).
  qcow2TruncateBitmapsCheck(bs, s);
  if (size > old) {
    await growL1(s, sizeToL1(s.header, size), true);
    await writeHeaderSize(s, size);
    bs.totalBytes = size;
    const backing = bs.cowNode();
    const hideBacking = backing !== null && backing.totalBytes > old;
    if (prealloc !== 'off') await preallocateGrow(bs, s, old, size, prealloc, hideBacking);
    // Data preallocation leaves every new subcluster allocated over zeros when a backing file would show through.
    if (hideBacking && (prealloc === 'off' || prealloc === 'metadata')) await zeroFill(bs, s, old, Math.min(size, backing.totalBytes));
    return;
  }
  // The size switches first (one sector write): a crash before it leaves the old disk, after it the
  // new one with, at worst, leaked clusters past its end. Freeing first (QEMU's order) could leave the
  // old size reading zeros where the data was.
  await flushMetadata(s);
  await writeHeaderSize(s, size);
  bs.totalBytes = size;
  const start = Math.ceil(size / cs) * cs;
  if (start < old) await qcow2DiscardRange(bs, s, start, old - start, true);
  const keep = sizeToL1(s.header, size);
  for (let i = keep; i < s.l1Size; i++) {
    const off = l1Offset(s, i);
    if (!off) continue;
    setL1Entry(s, i, 0, false);
    freeClustersDeferred(s, off, cs, true, 'always');
  }
  await flushMetadata(s);
  await trimFileTail(s);
}

/**
 * After a shrink, as QEMU's qcow2_co_truncate: the file is cut after the last
 * cluster still in use. A failure only warns (the image is consistent either way).
 */
async function trimFileTail(s: Qcow2State): Promise<void> {
  const cs = s.clusterSize;
  const fileSize = s.file.totalBytes;
  let last = Math.ceil(fileSize / cs) - 1;
  while (last >= 0 && (await getRefcount(s, last)) === 0) last--;
  const end = (last + 1) * cs;
  if (end >= fileSize) return;
  try {
    await bdrvTruncate(s.file, end, false, 'off');
  } catch (e) {
    s.warn?.(`Failed to truncate the tail of the image: ${(e as Error).message}`);
  }
}
