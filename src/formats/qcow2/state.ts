/**
 * The qcow2 driver's per-node state (QEMU's BDRVQcow2State), shared by the
 * read path now and the write, snapshot and check code later.
 */
import type { BlockNode } from '../../block/node.js';
import type { Qcow2Header } from './header.js';
import type { L2Cache } from './l2-cache.js';
import type { Qcow2Snapshot } from './snapshot-table.js';
import type { Qcow2BitmapEntry } from './bitmap-directory.js';
import { l1EntryCopied, l1EntryOffset } from './l2-entry.js';
import type { Qcow2Crypto } from './crypto.js';

export interface Qcow2State {
  /** Image name for messages. */
  image: string;
  /** Where QEMU's stderr lines about the image go (the corruption notice); the opener's warn. */
  warn?: (message: string, kind?: 'report') => void;
  header: Qcow2Header;
  clusterBits: number;
  clusterSize: number;
  /** extended_l2: 16-byte entries with 32 subclusters each. */
  extendedL2: boolean;
  /** Bytes per L2 entry (8, or 16 with extended_l2). */
  l2EntryBytes: number;
  /** Entries per L2 table (one cluster). */
  l2Size: number;
  /** Entries per cached slice (l2-cache-entry-size / l2EntryBytes). */
  l2SliceSize: number;
  subclusterBits: number;
  subclusterSize: number;
  /** The active L1 table as on disk (big-endian, l1Size * 8 bytes). */
  l1Table: Uint8Array;
  l1Size: number;
  l2Cache: L2Cache;
  /** The storage node holding metadata (bs.file). */
  file: BlockNode;
  /** Where guest data clusters live: the external data file, or `file`. */
  dataFile: BlockNode;
  /** Name of the external data file as stored in the image, or null. */
  imageDataFile: string | null;
  dataFileRaw: boolean;
  refcountBits: number;
  /** Refcount table (refcount block offsets), loaded on first use. */
  refcountTable: Float64Array | null;
  snapshots: Qcow2Snapshot[];
  /**
   * Bytes the table takes on disk when that is not what `snapshots` would
   * serialize to (qemu-img check read entries whose extra data it cut), so
   * the refcount check counts and the next table write frees what is there.
   */
  snapshotsSize?: number;
  /**
   * Part of the snapshot table lies past the end of the file and was read as
   * zeros, as QEMU reads it: fine for reading, but nothing may rewrite the
   * table or act on its entries (snapshot.ts refuses).
   */
  snapshotTablePastEof?: boolean;
  /** The bitmap directory as it is on disk (empty without a valid bitmaps extension). */
  bitmaps: Qcow2BitmapEntry[];
  /**
   * The directory's bitmaps were loaded by a writable open (bitmaps.ts: in use on
   * disk, stored on close), so writes keep the autoclear bit; when false the
   * first write clears it and the stored bitmaps become stale, as QEMU reads it.
   */
  bitmapsLoaded: boolean;
  /** QEMU's metadata_preallocation heuristic, computed on the first block-status call. */
  metadataPreallocation: boolean | undefined;
  /**
   * Refcount updates are postponed (QEMU's use_lazy_refcounts): the header's
   * lazy-refcounts bit unless the `lazy-refcounts` option says otherwise.
   * While the dirty bit is set, a flush writes the tables but not the refcounts.
   */
  useLazyRefcounts: boolean;
  /**
   * Which freed clusters are passed down to the file as discards (QEMU's
   * discard_passthrough): 'always' ones are, 'never' ones are not; the
   * pass-discard-request/-snapshot/-other options decide the rest
   * (request: null follows the node's discard=unmap, as QEMU's BDRV_O_UNMAP default).
   */
  passDiscard: { request: boolean | null; snapshot: boolean; other: boolean };
  /** The node's discard=unmap (QEMU's BDRV_O_UNMAP), read when a freed cluster of type 'request' is queued. */
  nodeUnmap: () => boolean;
  /** Write-path state (refcount cache, allocation hints, ordering flags). */
  rw: Qcow2RwState;
  /** Data encryption (crypto.ts), absent for a plain image. */
  crypto?: Qcow2Crypto | null;
}

/** Why clusters are freed, which decides whether the file hears of it (QEMU's enum qcow2_discard_type). */
export type Qcow2DiscardType = 'never' | 'always' | 'request' | 'snapshot' | 'other';

/** One cached refcount block (a whole cluster). */
export interface RefblockEntry {
  offset: number;
  data: Uint8Array;
  dirty: boolean;
}

/**
 * What the write path keeps between requests (QEMU's free_cluster_index,
 * free_byte_offset, refcount block cache and cache dependencies).
 */
export interface Qcow2RwState {
  /** Refcount blocks by host offset, LRU in Map order (write-back, bounded by `refblockCapacity`). */
  refblocks: Map<number, RefblockEntry>;
  refblockCapacity: number;
  /** No cluster below this index is free (QEMU's free_cluster_index). */
  freeClusterIndex: number;
  /** Where the next compressed cluster may go (QEMU's free_byte_offset), 0 = none. */
  freeByteOffset: number;
  /**
   * Clusters whose last reference was removed from an L2/L1 table that is not
   * yet stable on disk: their refcounts drop only after those tables are
   * flushed, so a crash cannot leave a table pointing at a reused cluster.
   */
  deferredFrees: { offset: number; bytes: number; l2Table: boolean; type: Qcow2DiscardType }[];
  /** Freed host ranges to pass down as discards, merged when adjacent (QEMU's s->discards). */
  discards: { offset: number; bytes: number }[];
  /** While set, queued discards wait (QEMU's cache_discards): a batch of frees is passed down at its end. */
  cacheDiscards: boolean;
  /** Refcount-side writes (blocks, table entries) not yet followed by a file flush. */
  refcountsUnsynced: boolean;
  /** Dirty range of the in-memory L1 table, in entries ([from, to), empty when from >= to). */
  l1DirtyFrom: number;
  l1DirtyTo: number;
  /** Where the metadata lies, for the overlap check; rebuilt lazily when null. */
  metaClusters: MetaClusters | null;
  /** Tail of the request queue: modifying requests run one at a time (QEMU's s->lock). */
  lock: Promise<void>;
  /** Requests holding or queued for `lock`: one that finds it above zero waits. */
  lockQueued: number;
  /**
   * Fresh clusters whose data write runs outside the lock (alloc-in-flight.ts,
   * QEMU's s->cluster_allocs): reserved, their L2 entries not yet set.
   */
  allocs: Set<InflightAlloc>;
  /** Set once an inconsistency was found: every later write fails with EIO. */
  corrupt: boolean;
  /**
   * Set when this open found the corruption (QEMU's fatal qcow2_signal_corruption,
   * which drops the node's driver): every later request fails with ENOMEDIUM.
   */
  unusable: boolean;
  /** A non-fatal corruption was reported (QEMU's signaled_corruption): later ones are quiet. */
  signaledCorruption: boolean;
  /** The header's dirty bit is set on disk by us (lazy refcounts). */
  dirtyBitSet: boolean;
  /** The header was prepared for writing (autoclear bits cleared). */
  headerPrepared: boolean;
  /** L2 tables (host offsets) a write may change in place, checked once against the other metadata. */
  l2InPlaceChecked: Set<number>;
}

/** Guest [start, end) whose new host clusters are being written (see Qcow2RwState.allocs). */
export interface InflightAlloc {
  readonly start: number;
  readonly end: number;
  /** Settles once the L2 entries point at the data (or the write failed). */
  readonly done: Promise<void>;
}

/**
 * Host cluster index → the overlap kinds (QCOW2_OL_* bits) of the metadata it
 * holds; ranges too long to list cluster by cluster (a corrupt snapshot's L1
 * table may claim 2^31 entries, which QEMU opens) are kept as ranges, so the
 * map stays bounded by the image's real metadata.
 */
export interface MetaClusters {
  clusters: Map<number, number>;
  ranges: { first: number; last: number; kind: number }[];
}

export function newRwState(clusterSize: number): Qcow2RwState {
  return {
    refblocks: new Map(),
    // QEMU keeps a quarter of the L2 cache; a few MiB of refcount blocks are plenty here.
    refblockCapacity: Math.max(4, Math.floor((4 * 1024 * 1024) / clusterSize)),
    freeClusterIndex: 0,
    freeByteOffset: 0,
    deferredFrees: [],
    discards: [],
    cacheDiscards: false,
    refcountsUnsynced: false,
    l1DirtyFrom: 0,
    l1DirtyTo: 0,
    metaClusters: null,
    lock: Promise.resolve(),
    lockQueued: 0,
    allocs: new Set(),
    corrupt: false,
    unusable: false,
    signaledCorruption: false,
    dirtyBitSet: false,
    headerPrepared: false,
    l2InPlaceChecked: new Set(),
  };
}

/** Host offset of L2 table `index` from the active L1 table, 0 when unallocated. */
export function l1Offset(s: Qcow2State, index: number): number {
  return l1EntryOffset(s.l1Table, index);
}

/** Whether L1 entry `index` has the COPIED flag. */
export function l1Copied(s: Qcow2State, index: number): boolean {
  return l1EntryCopied(s.l1Table, index);
}
