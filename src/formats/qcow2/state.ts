/**
 * The qcow2 driver's per-node state (QEMU's BDRVQcow2State), shared by the
 * read path now and the write, snapshot and check code later.
 */
import type { BlockNode } from '../../block/node.js';
import type { Qcow2Header } from './header.js';
import type { L2Cache } from './l2-cache.js';
import type { Qcow2Snapshot } from './snapshot-table.js';
import type { Qcow2BitmapEntry } from './bitmap-directory.js';

export interface Qcow2State {
  /** Image name for messages. */
  image: string;
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
  bitmaps: Qcow2BitmapEntry[];
  /** QEMU's metadata_preallocation heuristic, computed on the first block-status call. */
  metadataPreallocation: boolean | undefined;
}

/** Host offset of L2 table `index` from the active L1 table, 0 when unallocated (bits 9-55). */
export function l1Offset(s: Qcow2State, index: number): number {
  const b = s.l1Table;
  const p = index * 8;
  const hi = ((b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!) & 0x00ffffff;
  const lo = ((b[p + 4]! << 24) | (b[p + 5]! << 16) | (b[p + 6]! << 8) | b[p + 7]!) & 0xfffffe00;
  return hi * 0x100000000 + (lo >>> 0);
}

/** Whether L1 entry `index` has the COPIED flag (bit 63). */
export function l1Copied(s: Qcow2State, index: number): boolean {
  return (s.l1Table[index * 8]! & 0x80) !== 0;
}
