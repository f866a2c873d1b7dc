/**
 * The qcow2 format driver: open with QEMU's checks, reads through the L1/L2
 * tables, writes (write.ts), block status, info and snapshot listing.
 *
 * Module map (src/formats/qcow2/):
 *   header.ts           parse/serialize the header and its extensions; named field writers
 *   l2-entry.ts         the L1/L2 entry codec: flags, offsets, compressed descriptor, subcluster bitmaps
 *   refcount-codec.ts   refcount table entries and refcount block entries (refcount_bits 1..64)
 *   validate.ts         QEMU's limits, checked against the file before tables are read
 *   l2-cache.ts         bounded LRU of L2 slices (buffers from allocBuffer)
 *   l2-scan.ts          L2 entry classification and run finding (wasm kernel in asm/, called via src/wasm/)
 *   cluster-map.ts      guest offset → run of one subcluster type / contiguous host range
 *   compressed.ts       zlib (raw deflate) and zstd cluster codecs
 *   refcount.ts         refcount table/blocks, refcount cache, cluster allocation API
 *   read.ts             guest reads (also the copy-on-write source of the write path)
 *   write.ts            writes, compressed writes, write-zeroes, discard, resize
 *   l1.ts               L2 allocation / L1 growth, the ordered metadata flush
 *   metadata.ts         request lock, header fields, dirty/corrupt bits, overlap checks
 *   snapshot-table.ts   internal snapshot table
 *   bitmap-directory.ts persistent bitmap directory entries and the extension's limits
 *   bitmap-table.ts     bitmap table entries
 *   bitmaps.ts          persistent dirty bitmaps: load on open, store on close, remove
 *   create-options.ts   qemu-img create / amend: option tables, values → create.ts / amend.ts
 *   measure.ts          qemu-img measure
 *   make-empty.ts       bdrv_make_empty (commit empties its top image with it)
 *   index.ts            the entry: registers the driver (the only file others import)
 *
 * Defaults (QEMU's, block/qcow2.c read_cache_sizes): l2-cache-entry-size is
 * min(4 KiB, cluster size); l2-cache-size is what maps the whole virtual disk
 * (one L2 entry per cluster, rounded up to a cluster) capped at 32 MiB, and at
 * least two clusters. Slices are only allocated when loaded, so a large
 * capacity costs nothing for a small working set.
 */
import { parseOverlapCheck, setOverlapCheck } from './overlap.js';
import { BlockError, hex } from '../../block/errors.js';
import { qemuStrtosz } from '../../block/options.js';
import { optBool, type OptionsTree } from '../../block/options-tree.js';
import type { BlockDriver, DriverInfo } from '../../block/driver.js';
import { BlockNode } from '../../block/node.js';
import { allocBuffer, freeBuffer } from '../../block/buffers.js';
import { bdrvPread, readBacking } from '../../block/io.js';
import { bdrvDebugEvent } from '../../block/debug-event.js';
import { openContext, openFileChild } from '../../block/open.js';
import {
  BDRV_BLOCK_COMPRESSED,
  BDRV_BLOCK_DATA,
  BDRV_BLOCK_OFFSET_VALID,
  BDRV_BLOCK_RECURSE,
  BDRV_BLOCK_ZERO,
} from '../../block/status.js';
import type { ImageInfoSpecific } from '../../block/info.js';
import {
  findExtension,
  headerClusterBytes,
  parseHeader,
  QCOW2_AUTOCLEAR_DATA_FILE_RAW,
  QCOW2_COMPAT_LAZY_REFCOUNTS,
  QCOW2_COMPRESSION_TYPE_ZSTD,
  QCOW2_EXT_MAGIC_BACKING_FORMAT,
  QCOW2_EXT_MAGIC_DATA_FILE,
  QCOW2_INCOMPAT_CORRUPT,
  QCOW2_INCOMPAT_DATA_FILE,
  QCOW2_INCOMPAT_DIRTY,
  QCOW2_INCOMPAT_EXTL2,
  type Qcow2Header,
  V3_MIN_HEADER_LENGTH,
} from './header.js';
import { sizeToL1, validateHeader } from './validate.js';
import { L2Cache } from './l2-cache.js';
import { makeSliceLoader, mapRun } from './cluster-map.js';
import { detectMetadataPreallocation } from './refcount.js';
import { readSnapshotEntries, snapshotInfo } from './snapshot-table.js';
import { qcow2ApplySnapshot, qcow2CreateSnapshot, qcow2DeleteSnapshot, qcow2SnapshotLoadTmp } from './snapshot.js';
import { qcow2ChangeBackingFile } from './change-backing.js';
import { QCOW2_AMEND_OPTS, QCOW2_CREATE_OPTS, qcow2AmendImage, qcow2CreateImage, qcow2OptionsFromValues } from './create-options.js';
import { validateQcow2CreateOptions } from './create.js';
import { qcow2Measure } from './measure.js';
import { qcow2MakeEmpty } from './make-empty.js';
import { BME_FLAG_AUTO, BME_FLAG_IN_USE, readBitmapDirectory } from './bitmap-directory.js';
import { qcow2BitmapsReadOnly, qcow2CanStoreNewBitmap, qcow2LoadBitmaps, qcow2ReopenBitmapsRw, qcow2RemoveBitmap, qcow2StoreBitmaps } from './bitmaps.js';
import { l1Offset, newRwState, type Qcow2State } from './state.js';
import { qcow2Read } from './read.js';
import { compressThreads } from './compressed.js';
import { cryptoInfo, openQcow2Crypto, QCOW2_CRYPT_SECTOR } from './crypto.js';
import { dropRefcountCache } from './refcount.js';
import { flushForClose, flushMetadata } from './l1.js';
import { checkUsable, clearDirtyBit, withLock } from './metadata.js';
import { qcow2WriteMaybeInflight } from './alloc-in-flight.js';
import { afterWrite, prepareWrite, qcow2DiscardRange, qcow2Truncate, qcow2PwriteZeroes, qcow2Write, qcow2WriteCompressed, qcow2CompressCluster } from './write.js';
import {
  L2_COMPRESSED,
  L2_NORMAL,
  L2_UNALLOCATED,
  L2_UNALLOCATED_ALLOC,
  L2_ZERO_ALLOC,
  L2_ZERO_PLAIN,
} from './l2-scan.js';
import { qcow2Probe } from './probe.js';
import { unopenedDataFile } from './unopened-data-file.js';

export type { Qcow2State } from './state.js';

/** QEMU's DEFAULT_L2_CACHE_MAX_SIZE. */
export const DEFAULT_L2_CACHE_MAX_SIZE = 32 * 1024 * 1024;
/** QEMU's MIN_L2_CACHE_SIZE, in clusters. */
export const MIN_L2_CACHE_CLUSTERS = 2;
/** QEMU's MIN_REFCOUNT_CACHE_SIZE, in clusters: what cache-size leaves the refcount cache at least. */
const MIN_REFCOUNT_CACHE_CLUSTERS = 4;

/** The driver state of an open qcow2 node (for the write path, snapshot and check code). */
export function qcow2State(bs: BlockNode): Qcow2State {
  if (bs.driver !== qcow2Driver) throw new BlockError('EINVAL', `${bs.filename}: not a qcow2 node`);
  return bs.state<Qcow2State>();
}

/** A size option: a number (QMP) or QemuOpts size text with k/M/G suffixes and fractions ("0.25M", from -o). */
function optionInt(bs: BlockNode, options: Record<string, unknown>, key: string): number | undefined {
  const v = options[key];
  if (v === undefined) return undefined;
  const big = typeof v === 'string' ? qemuStrtosz(v) : undefined;
  const n = typeof v === 'string' ? (big === undefined ? NaN : Number(big)) : (v as number);
  if (!Number.isSafeInteger(n) || n < 0) throw new BlockError('EINVAL', `${bs.filename}: qcow2 option '${key}' must be a non-negative integer`);
  return n;
}

/** The `lazy-refcounts` option, by default the header's bit (QEMU's qcow2_update_options_prepare). */
function lazyRefcountsOption(options: Record<string, unknown>, h: Qcow2Header, image: string): boolean {
  const lazy = optBool(options as OptionsTree, 'lazy-refcounts') ?? (h.compatibleFeatures & QCOW2_COMPAT_LAZY_REFCOUNTS) !== 0n;
  if (lazy && h.version < 3) {
    throw new BlockError('EINVAL', `${image}: Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level`);
  }
  return lazy;
}

/** Slice size and slice count of the L2 cache, as QEMU's read_cache_sizes. */
export function l2CacheGeometry(
  bs: BlockNode,
  options: Record<string, unknown>,
  clusterSize: number,
  l2EntryBytes: number,
  virtualSize: number,
): { entrySize: number; slices: number } {
  const entrySize = optionInt(bs, options, 'l2-cache-entry-size') ?? Math.min(4096, clusterSize);
  if (entrySize < 512 || entrySize > clusterSize || (entrySize & (entrySize - 1)) !== 0) {
    throw new BlockError('EINVAL', `${bs.filename}: L2 cache entry size must be a power of two between 512 and the cluster size (${clusterSize})`);
  }
  const maxL2Cache = Math.ceil((Math.ceil(virtualSize / clusterSize) * l2EntryBytes) / clusterSize) * clusterSize;
  // cache-size is shared between the L2 and refcount caches (QEMU's read_cache_sizes, with its checks and words).
  const combined = optionInt(bs, options, 'cache-size');
  const l2Set = optionInt(bs, options, 'l2-cache-size');
  const refcountSet = optionInt(bs, options, 'refcount-cache-size');
  const fail = (why: string): never => {
    throw new BlockError('EINVAL', `${bs.filename}: ${why}`);
  };
  let size = l2Set ?? Math.min(maxL2Cache, DEFAULT_L2_CACHE_MAX_SIZE);
  if (combined !== undefined) {
    if (l2Set !== undefined && refcountSet !== undefined) fail('cache-size, l2-cache-size and refcount-cache-size may not be set at the same time');
    if (l2Set !== undefined && l2Set > combined) fail('l2-cache-size may not exceed cache-size');
    if (refcountSet !== undefined && refcountSet > combined) fail('refcount-cache-size may not exceed cache-size');
    if (refcountSet !== undefined) size = combined - refcountSet;
    else if (l2Set === undefined) {
      const minRefcountCache = MIN_REFCOUNT_CACHE_CLUSTERS * clusterSize;
      size = combined >= maxL2Cache + minRefcountCache ? maxL2Cache : combined - Math.min(combined, minRefcountCache);
    }
  }
  size = Math.max(size, MIN_L2_CACHE_CLUSTERS * clusterSize);
  return { entrySize, slices: Math.max(2, Math.floor(size / entrySize)) };
}

/**
 * A dirty image (lazy refcounts, not closed cleanly) opened read/write is
 * repaired first, as QEMU's qcow2_do_open does, with check.ts when it exists.
 */
async function repairDirty(bs: BlockNode, s: Qcow2State): Promise<void> {
  // Loaded on demand: check.ts is large and only a dirty image needs it at open.
  const mod = await import('./check.js');
  // QEMU's check prints what it finds and repairs on stderr, at open too.
  await mod.checkImage(bs, { fix: { leaks: true, errors: true }, report: (m) => s.warn?.(m) });
  dropRefcountCache(s);
  s.l2Cache.clear();
  await clearDirtyBit(s);
}

export const qcow2Driver: BlockDriver = {
  name: 'qcow2',
  strongRuntimeOpts: ['encrypt.key-secret'],
  kind: 'format',
  supportsBacking: true,
  supportsCompressedWrites: true,
  // Whole fresh clusters are reserved under the lock in call order, their data written after it (alloc-in-flight.ts).
  allocatesInCallOrder: true,
  // As qcow2_has_zero_init: preallocated metadata (the first L1 entry set) in an encrypted image maps clusters whose
  // bytes decrypt to noise; without encryption they read as the file does, and a new file reads as zeros.
  hasZeroInit: (bs) => {
    const s = bs.state<Qcow2State>();
    return !(s.crypto && s.l1Size > 0 && l1Offset(s, 0) !== 0);
  },
  compressCluster: (bs, data) => qcow2CompressCluster(bs.state<Qcow2State>(), data),
  compressThreads: (bs) => compressThreads(bs.state<Qcow2State>().header.compressionType),
  // QAPI BlockdevOptionsQcow2 (the members blockdev-add accepts).
  blockdevOptions: {
    file: 'BlockdevRef',
    '*backing': 'BlockdevRefOrNull',
    '*lazy-refcounts': 'bool',
    '*pass-discard-request': 'bool',
    '*pass-discard-snapshot': 'bool',
    '*pass-discard-other': 'bool',
    '*overlap-check': 'any',
    '*cache-size': 'int',
    '*l2-cache-size': 'int',
    '*l2-cache-entry-size': 'int',
    '*refcount-cache-size': 'int',
    '*cache-clean-interval': 'int',
  },

  probe: qcow2Probe,

  async open(bs, options) {
    const file = bs.file!.node;
    const image = bs.filename;
    const fileSize = file.totalBytes;

    // The fixed header first, to learn the cluster size; then the whole header cluster.
    const first = new Uint8Array(Math.min(fileSize, V3_MIN_HEADER_LENGTH));
    await bdrvPread(file, 0, first.length, first);
    let buf = first;
    const want = Math.min(headerClusterBytes(first), fileSize);
    if (want > first.length) {
      buf = new Uint8Array(want);
      await bdrvPread(file, 0, want, buf);
    }
    const h = parseHeader(buf, image);
    // qemu-img check -r opens a corrupt image read/write to repair it (QEMU's BDRV_O_CHECK): option 'check'.
    const forCheck = options['check'] === true;
    validateHeader(h, image, fileSize, !bs.readOnly && !forCheck, forCheck);

    const clusterBits = h.clusterBits;
    const clusterSize = 2 ** clusterBits;
    const extendedL2 = (h.incompatibleFeatures & QCOW2_INCOMPAT_EXTL2) !== 0n;
    const l2EntryBytes = extendedL2 ? 16 : 8;
    const geo = l2CacheGeometry(bs, options, clusterSize, l2EntryBytes, h.size);

    // Active L1 table: bounded by validateHeader (<= 32 MiB and inside the file).
    const l1Table = new Uint8Array(h.l1Size * 8);
    if (l1Table.length) await bdrvPread(file, h.l1TableOffset, l1Table.length, l1Table);

    const s: Qcow2State = {
      image,
      warn: openContext(bs)?.warn,
      header: h,
      clusterBits,
      clusterSize,
      extendedL2,
      l2EntryBytes,
      l2Size: clusterSize / l2EntryBytes,
      l2SliceSize: geo.entrySize / l2EntryBytes,
      subclusterBits: extendedL2 ? clusterBits - 5 : clusterBits,
      subclusterSize: extendedL2 ? clusterSize / 32 : clusterSize,
      l1Table,
      l1Size: h.l1Size,
      l2Cache: undefined as unknown as L2Cache,
      file,
      dataFile: file,
      imageDataFile: findExtension(h, QCOW2_EXT_MAGIC_DATA_FILE)?.dataFile ?? null,
      dataFileRaw: (h.autoclearFeatures & QCOW2_AUTOCLEAR_DATA_FILE_RAW) !== 0n,
      refcountBits: 2 ** h.refcountOrder,
      refcountTable: null,
      snapshots: [],
      bitmaps: [],
      bitmapsLoaded: false,
      metadataPreallocation: undefined,
      useLazyRefcounts: lazyRefcountsOption(options, h, image),
      passDiscard: {
        request: optBool(options as OptionsTree, 'pass-discard-request') ?? null,
        snapshot: optBool(options as OptionsTree, 'pass-discard-snapshot') ?? true,
        other: optBool(options as OptionsTree, 'pass-discard-other') ?? false,
      },
      nodeUnmap: () => bs.unmap,
      rw: newRwState(clusterSize),
    };
    // Opened for a repair: only the repair writes until it clears the bit (checkImage).
    if (h.incompatibleFeatures & QCOW2_INCOMPAT_CORRUPT) s.rw.corrupt = true;
    s.l2Cache = new L2Cache(geo.entrySize, geo.slices, makeSliceLoader(s));

    // Opened for qemu-img check: the check reads the table itself (check-snapshots.ts), so a broken one can be repaired.
    if (!forCheck) {
      const status = { pastEof: false };
      const table = await readSnapshotEntries(file, h, image, h.nbSnapshots, undefined, status);
      s.snapshots = table.snapshots;
      s.snapshotsSize = table.size;
      if (status.pastEof) s.snapshotTablePastEof = true;
    }
    s.bitmaps = await readBitmapDirectory(file, h, image);

    // A name, or a node the options tree opened (a filter over the data file).
    const given = options['data-file'];
    const dataFileOption = typeof given === 'string' || given instanceof BlockNode ? given : undefined;
    if (h.incompatibleFeatures & QCOW2_INCOMPAT_DATA_FILE && dataFileOption instanceof BlockNode) {
      s.dataFile = dataFileOption;
      bs.attach(dataFileOption, 'data-file');
    } else if (h.incompatibleFeatures & QCOW2_INCOMPAT_DATA_FILE) {
      const name = (typeof dataFileOption === 'string' ? dataFileOption : undefined) ?? s.imageDataFile;
      // Opened for metadata only (qemu-img info): the data file is not opened, as QEMU (BDRV_O_NO_IO).
      if (options.noIo) s.dataFile = unopenedDataFile(name ?? '');
      else if (!name) throw new BlockError('EINVAL', "'data-file' is required for this image");
      else s.dataFile = await openFileChild(bs, name, 'data-file');
    } else if (dataFileOption !== undefined) {
      throw new BlockError('EINVAL', `${image}: 'data-file' can only be set for images with an external data file`);
    }

    s.crypto = await openQcow2Crypto(file, h, image, options);
    bs.opaque = s;
    setOverlapCheck(s, parseOverlapCheck(image, options));
    bs.totalBytes = h.size;
    // Write-zeroes takes any range: like QEMU's qcow2_co_pwrite_zeroes the driver turns a partial
    // subcluster into a zero subcluster when the rest of it already reads as zeros.
    // Encrypted data is whole sectors (the block layer reads, modifies and writes around the rest).
    bs.limits = { ...bs.limits, requestAlignment: s.crypto ? QCOW2_CRYPT_SECTOR : 1, pdiscardAlignment: clusterSize };
    if (s.crypto) bs.encrypted = true;
    bs.backingFile = h.backingFile;
    bs.backingFormat = findExtension(h, QCOW2_EXT_MAGIC_BACKING_FORMAT)?.backingFormat ?? null;

    // Under qemu-img check the check itself repairs (or reports) a dirty image.
    if (!bs.readOnly && !forCheck && h.incompatibleFeatures & QCOW2_INCOMPAT_DIRTY) await repairDirty(bs, s);
    // QEMU loads bitmaps on every open of an active node; a broken directory fails the open.
    await qcow2LoadBitmaps(bs, s);
  },

  async close(bs) {
    const s = bs.state<Qcow2State>();
    try {
      if (!s.rw.corrupt) await qcow2StoreBitmaps(bs, s);
      // An image made unusable (marked corrupt, a failed make-empty) writes nothing more: QEMU dropped its driver.
      if (!bs.readOnly && !s.rw.unusable) await withLock(s, () => flushForClose(s, (line) => s.warn?.(line, 'report')));
    } finally {
      s.l2Cache.clear();
      dropRefcountCache(s);
    }
  },

  async reopen(bs, readOnly) {
    const s = bs.state<Qcow2State>();
    if (readOnly) {
      // As QEMU's qcow2_reopen_prepare: bitmaps stored and metadata written while the file still takes writes.
      await qcow2StoreBitmaps(bs, s);
      await withLock(s, () => flushMetadata(s));
      qcow2BitmapsReadOnly(bs, s);
    } else {
      await qcow2ReopenBitmapsRw(bs, s);
    }
  },

  async reopenOptions(bs, options, { check }) {
    const s = bs.state<Qcow2State>();
    if (options['lazy-refcounts'] === undefined) return;
    const lazy = lazyRefcountsOption({ ...bs.options, ...options }, s.header, bs.filename);
    if (check) return;
    // As qcow2_update_options_commit: refcounts that stop being lazy are written and the image marked clean.
    if (s.useLazyRefcounts && !lazy && !bs.readOnly) await withLock(s, () => flushMetadata(s));
    s.useLazyRefcounts = lazy;
  },

  canStoreNewDirtyBitmap(bs, name, granularity) {
    qcow2CanStoreNewBitmap(bs, bs.state<Qcow2State>(), name, granularity);
  },

  removePersistentDirtyBitmap(bs, name) {
    return qcow2RemoveBitmap(bs, bs.state<Qcow2State>(), name);
  },



  async pwritev(bs, offset, bytes, buf, flags) {
    const s = bs.state<Qcow2State>();
    if (!flags.compressed) return qcow2WriteMaybeInflight(bs, s, offset, bytes, buf, flags);
    await withLock(s, async () => {
      await prepareWrite(s);
      await qcow2WriteCompressed(bs, s, offset, bytes, buf, flags.precompressed);
      await afterWrite(s, flags);
    });
  },

  async pwriteZeroes(bs, offset, bytes, flags) {
    const s = bs.state<Qcow2State>();
    await withLock(s, async () => {
      await prepareWrite(s);
      await qcow2PwriteZeroes(bs, s, offset, bytes, flags.mayUnmap === true);
      await afterWrite(s, flags);
    });
  },

  async pdiscard(bs, offset, bytes) {
    const s = bs.state<Qcow2State>();
    // A piece of a cluster is ignored, except the whole partial cluster at the end of an unaligned image.
    const cs = s.clusterSize;
    if (offset % cs !== 0 || (bytes % cs !== 0 && offset + bytes !== bs.totalBytes)) return;
    await withLock(s, async () => {
      await prepareWrite(s);
      await qcow2DiscardRange(bs, s, offset, bytes, false);
      // QEMU frees discarded clusters at once (the L2 change ordered before the refcount one), so the next
      // allocation reuses them; ours wait for the tables to be stable, so make them stable now.
      if (s.rw.deferredFrees.length) await flushMetadata(s);
      await afterWrite(s);
    });
  },

  async flush(bs) {
    const s = bs.state<Qcow2State>();
    if (s.rw.unusable) return;
    await withLock(s, () => flushMetadata(s, { keepLazy: true }));
  },

  async truncate(bs, size, _exact, prealloc) {
    const s = bs.state<Qcow2State>();
    await withLock(s, async () => {
      await prepareWrite(s);
      await qcow2Truncate(bs, s, size, prealloc);
      await afterWrite(s);
    });
  },

  // QEMU's qcow2_save_vmstate / qcow2_load_vmstate: the area lies past the L1 entries the disk
  // needs, and goes through the ordinary cluster paths (the L1 table grows to reach it).
  async saveVmState(bs, pos, bytes, buf) {
    const s = bs.state<Qcow2State>();
    await bdrvDebugEvent(s.file, 'vmstate_save');
    await withLock(s, async () => {
      await prepareWrite(s);
      await qcow2Write(bs, s, vmStateOffset(s) + pos, bytes, buf);
      await afterWrite(s, {});
    });
  },

  async loadVmState(bs, pos, bytes, buf) {
    const s = bs.state<Qcow2State>();
    checkUsable(s);
    await bdrvDebugEvent(s.file, 'vmstate_load');
    await qcow2Read(bs, s, vmStateOffset(s) + pos, bytes, buf);
  },

  async preadv(bs, offset, bytes, buf) {
    const s = bs.state<Qcow2State>();
    checkUsable(s);
    await qcow2Read(bs, s, offset, bytes, buf);
  },

  async blockStatus(bs, _wantZero, offset, bytes) {
    const s = bs.state<Qcow2State>();
    checkUsable(s);
    if (s.metadataPreallocation === undefined) {
      // QEMU computes this once, on the first block-status call; a failure means "no".
      s.metadataPreallocation = await detectMetadataPreallocation(s).catch(() => false);
    }
    const run = await mapRun(s, offset, bytes);
    const t = run.type;
    let status = 0;
    let map: number | undefined;
    let file: BlockNode | undefined;
    if (t === L2_NORMAL || t === L2_ZERO_ALLOC || t === L2_UNALLOCATED_ALLOC) {
      map = run.host;
      file = s.dataFile;
      // The host bytes of an encrypted image are not the guest's: no offset to read them at (as QEMU).
      if (!s.crypto) status |= BDRV_BLOCK_OFFSET_VALID;
    }
    if (t === L2_ZERO_PLAIN || t === L2_ZERO_ALLOC) status |= BDRV_BLOCK_ZERO;
    else if (t !== L2_UNALLOCATED && t !== L2_UNALLOCATED_ALLOC) status |= BDRV_BLOCK_DATA;
    if (s.metadataPreallocation && status & BDRV_BLOCK_DATA && status & BDRV_BLOCK_OFFSET_VALID) status |= BDRV_BLOCK_RECURSE;
    if (t === L2_COMPRESSED) status |= BDRV_BLOCK_COMPRESSED;
    return { status, pnum: run.bytes, map, file };
  },

  async getAllocatedFileSize(bs) {
    // qemu-img 7.2 reports the image file alone (newer QEMU adds the external data file).
    const file = bs.state<Qcow2State>().file;
    return file.driver.getAllocatedFileSize?.(file);
  },

  check: (bs, fix, report) => import('./check.js').then((m) => m.checkImage(bs, { fix, report })),

  getInfo(bs): ImageInfoSpecific {
    const s = bs.state<Qcow2State>();
    const h = s.header;
    const compression = h.compressionType === QCOW2_COMPRESSION_TYPE_ZSTD ? 'zstd' : 'zlib';
    if (h.version === 2) {
      const v2: Record<string, unknown> = { compat: '0.10', 'compression-type': compression, 'refcount-bits': s.refcountBits };
      if (s.crypto) v2.encrypt = cryptoInfo(s.crypto);
      return { type: 'qcow2', data: v2 };
    }
    // Keys in the order qemu-img 7.2 prints them.
    const data: Record<string, unknown> = {
      compat: '1.1',
      'compression-type': compression,
      'lazy-refcounts': (h.compatibleFeatures & QCOW2_COMPAT_LAZY_REFCOUNTS) !== 0n,
    };
    if (s.bitmaps.length) {
      data.bitmaps = s.bitmaps.map((b) => ({
        flags: [...(b.flags & BME_FLAG_IN_USE ? ['in-use'] : []), ...(b.flags & BME_FLAG_AUTO ? ['auto'] : [])],
        name: b.name,
        granularity: 2 ** b.granularityBits,
      }));
    }
    data['refcount-bits'] = s.refcountBits;
    if (s.crypto) data.encrypt = cryptoInfo(s.crypto);
    if (s.imageDataFile !== null) data['data-file'] = s.imageDataFile;
    if (h.incompatibleFeatures & QCOW2_INCOMPAT_DATA_FILE) data['data-file-raw'] = s.dataFileRaw;
    data.corrupt = (h.incompatibleFeatures & QCOW2_INCOMPAT_CORRUPT) !== 0n;
    data['extended-l2'] = s.extendedL2;
    return { type: 'qcow2', data };
  },

  getDriverInfo(bs): DriverInfo {
    const s = bs.state<Qcow2State>();
    return {
      clusterSize: s.clusterSize,
      isDirty: (s.header.incompatibleFeatures & QCOW2_INCOMPAT_DIRTY) !== 0n,
      vmStateOffset: vmStateOffset(s),
    };
  },

  listSnapshots(bs) {
    return bs.state<Qcow2State>().snapshots.map(snapshotInfo);
  },

  // Internal snapshots and backing-file changes live in snapshot.ts and change-backing.ts.
  async createSnapshot(bs, sn) {
    await qcow2CreateSnapshot(bs, bs.state<Qcow2State>(), sn);
  },
  async applySnapshot(bs, idOrName) {
    await qcow2ApplySnapshot(bs, bs.state<Qcow2State>(), idOrName);
  },
  async snapshotLoadTmp(bs, idOrName) {
    await qcow2SnapshotLoadTmp(bs, bs.state<Qcow2State>(), idOrName);
  },
  async deleteSnapshot(bs, id, name) {
    await qcow2DeleteSnapshot(bs, bs.state<Qcow2State>(), id, name);
  },
  changeBackingFile(bs, backingFile, backingFormat) {
    return qcow2ChangeBackingFile(bs, bs.state<Qcow2State>(), backingFile, backingFormat);
  },

  // What qemu-img needs per format: create-options.ts (create, amend), measure.ts, make-empty.ts.
  createOptions: QCOW2_CREATE_OPTS,
  create: qcow2CreateImage,
  createChecksSize: true,
  createRemovesFileOnError: true,
  checkCreate: (req) => validateQcow2CreateOptions(qcow2OptionsFromValues(req.values, req.size, req.origin)),
  measure: qcow2Measure,
  amendOptions: QCOW2_AMEND_OPTS,
  amend: qcow2AmendImage,
  makeEmpty: qcow2MakeEmpty,
};

/** QEMU's qcow2_vm_state_offset: the VM state lives past the L1 entries the disk needs. */
function vmStateOffset(s: Qcow2State): number {
  return sizeToL1(s.header, s.header.size) * s.clusterSize * s.l2Size;
}
