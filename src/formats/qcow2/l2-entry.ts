/**
 * L1 and L2 table entries: the one codec (docs/interop/qcow2.txt, "Cluster
 * mapping", "Compressed Clusters Descriptor", "Extended L2 Entries").
 *
 * Every entry is a 64-bit big-endian word. A JS number cannot hold 64 bits
 * exactly and BigInt is too slow for loops over whole tables, so this codec
 * speaks in the two 32-bit halves: `hi` holds bits 63..32 and `lo` bits
 * 31..0, both as unsigned numbers. Offsets come back as plain numbers (exact
 * below 2^53, which every host offset is).
 *
 * L1 entry (8 bytes):
 *
 *    63  62        56 55                                   9 8        0
 *   +---+------------+--------------------------------------+----------+
 *   | C |  reserved  |  offset of the L2 table              | reserved |
 *   +---+------------+--------------------------------------+----------+
 *     C  COPIED: the L2 table's refcount is exactly 1, so it may be changed
 *        in place (otherwise it is shared with a snapshot: copy it first)
 *   An offset of 0 means the L2 table (and all it would map) is unallocated.
 *
 * L2 entry of a standard cluster (8 bytes, or the first half of 16):
 *
 *    63  62  61     56 55                                   9 8       1  0
 *   +---+---+---------+--------------------------------------+---------+---+
 *   | C | 0 |reserved |  host cluster offset                 |reserved | Z |
 *   +---+---+---------+--------------------------------------+---------+---+
 *     C  COPIED, as above, for the data cluster
 *     Z  the cluster reads as zeros (version 3; with extended L2 this bit is
 *        reserved and the bitmap below says which subclusters are zero)
 *   Offset 0 without Z: unallocated (the backing file shows through); with an
 *   external data file offset 0 is a real cluster when C is set.
 *
 * L2 entry of a compressed cluster (bit 62 set; COPIED is never set):
 *
 *    63  62  61             x x-1                                      0
 *   +---+---+----------------+-----------------------------------------+
 *   | 0 | 1 | extra sectors  |  host byte offset of the compressed data |
 *   +---+---+----------------+-----------------------------------------+
 *   x = 62 - (cluster_bits - 8), so the split moves with the cluster size:
 *     cluster_bits  9 (512 B)   x = 61: 61 offset bits,  1 sector bit
 *     cluster_bits 16 (64 KiB)  x = 54: 54 offset bits,  8 sector bits
 *     cluster_bits 21 (2 MiB)   x = 49: 49 offset bits, 13 sector bits
 *   "extra sectors" counts the 512-byte sectors the data occupies after the
 *   one holding its first byte. The byte count read back (csize) therefore
 *   runs to the end of the last sector, usually past the stream's end.
 *
 * Extended L2 entries (incompatible feature bit 4) add a second 64-bit word:
 *
 *    63                            32 31                             0
 *   +--------------------------------+--------------------------------+
 *   |  zero bits, subcluster 31..0   |  alloc bits, subcluster 31..0  |
 *   +--------------------------------+--------------------------------+
 *   Each cluster has 32 subclusters; bit n of a half is subcluster n. In
 *   big-endian bytes the zero half comes first (bytes 8..11), then the
 *   allocation half (bytes 12..15). Both set for one subcluster is invalid.
 */
import { be } from './header.js';

// -------------------------------------------------------------- the flags

/** COPIED (bit 63), in `hi`. */
export const QCOW_OFLAG_COPIED = 0x80000000;
/** Compressed cluster (bit 62), in `hi`. */
export const QCOW_OFLAG_COMPRESSED = 0x40000000;
/** Reads as zeros (bit 0), in `lo`. */
export const QCOW_OFLAG_ZERO = 0x1;
/** Bits 32..55 of the offset field, in `hi`. */
const OFFSET_MASK_HI = 0x00ffffff;
/** Bits 9..31 of the offset field, in `lo`. */
const OFFSET_MASK_LO = 0xfffffe00;
/** Reserved bits of an L1 entry (56..62 in `hi`, 0..8 in `lo`). */
export const L1E_RESERVED_HI = 0x7f000000;
export const L1E_RESERVED_LO = 0x000001ff;
/** Reserved bits of a standard L2 entry (56..61 in `hi`, 1..8 in `lo`). */
export const L2E_RESERVED_HI = 0x3f000000;
export const L2E_RESERVED_LO = 0x000001fe;
/** Every flag and reserved bit of `hi` (what is not offset). */
export const ENTRY_NON_OFFSET_HI = 0xff000000;
/** All 32 subclusters of an extended entry's bitmap half. */
export const ALL_SUBCLUSTERS = 0xffffffff;

// ------------------------------------------------------ halves and offsets

/** Bytes of one L2 entry: 8, or 16 with extended L2. */
export function l2EntryBytes(extended: boolean): number {
  return extended ? 16 : 8;
}

/** The high half (bits 63..32) of the entry at byte `p`. */
export function entryHi(b: Uint8Array, p: number): number {
  return be.u32(b, p);
}

/** The low half (bits 31..0) of the entry at byte `p`. */
export function entryLo(b: Uint8Array, p: number): number {
  return be.u32(b, p + 4);
}

/** The offset field (bits 9..55) of an L1 or standard L2 entry. */
export function entryOffset(hi: number, lo: number): number {
  return (hi & OFFSET_MASK_HI) * 0x100000000 + ((lo & OFFSET_MASK_LO) >>> 0);
}

/** Whether the offset field is nonzero (without building the number). */
export function entryHasOffset(hi: number, lo: number): boolean {
  return (hi & OFFSET_MASK_HI) !== 0 || (lo & OFFSET_MASK_LO) !== 0;
}

/**
 * Host cluster index of the offset field, for offsets that are cluster
 * aligned: exact integer arithmetic on the halves (a hot path of check).
 */
export function entryClusterIndex(hi: number, lo: number, clusterBits: number): number {
  // clusterBits >= 9, so 1 << (32 - clusterBits) is an exact small integer.
  return (hi & OFFSET_MASK_HI) * (1 << (32 - clusterBits)) + (lo >>> clusterBits);
}

/** `hi` of a standard entry naming `offset` (bits 9..55), with COPIED when asked. */
export function encodeEntryHi(offset: number, copied: boolean): number {
  return ((Math.floor(offset / 0x100000000) & OFFSET_MASK_HI) | (copied ? QCOW_OFLAG_COPIED : 0)) >>> 0;
}

/** `lo` of a standard entry naming `offset`, with the zero flag when asked. */
export function encodeEntryLo(offset: number, zero: boolean): number {
  return ((offset >>> 0) & OFFSET_MASK_LO) | (zero ? QCOW_OFLAG_ZERO : 0);
}

/** The offset field of the entry at byte `p`. */
export function entryOffsetAt(b: Uint8Array, p: number): number {
  return entryOffset(be.u32(b, p), be.u32(b, p + 4));
}

/** Writes a standard entry (L1, or the first word of an L2 entry) naming `offset` at byte `p`. */
export function putEntry(b: Uint8Array, p: number, offset: number, copied: boolean, zero = false): void {
  be.put32(b, p, encodeEntryHi(offset, copied));
  be.put32(b, p + 4, encodeEntryLo(offset, zero));
}

/** Whether the entry at byte `p` has COPIED. */
export function copiedAt(b: Uint8Array, p: number): boolean {
  return (b[p]! & 0x80) !== 0;
}

/** Whether the entry at byte `p` is compressed. */
export function compressedAt(b: Uint8Array, p: number): boolean {
  return (b[p]! & 0x40) !== 0;
}

/** Sets or clears COPIED of the entry at byte `p`, leaving every other bit. */
export function setCopiedAt(b: Uint8Array, p: number, copied: boolean): void {
  b[p] = copied ? b[p]! | 0x80 : b[p]! & 0x7f;
}

/** `hi` with COPIED set or cleared. */
export function withCopied(hi: number, copied: boolean): number {
  return (copied ? hi | QCOW_OFLAG_COPIED : hi & ~QCOW_OFLAG_COPIED) >>> 0;
}

// ------------------------------------------------------------------- L1

/** L2 table offset of L1 entry `i` (0 when unallocated). */
export function l1EntryOffset(l1: Uint8Array, i: number): number {
  return entryOffsetAt(l1, i * 8);
}

/** Whether L1 entry `i` has COPIED. */
export function l1EntryCopied(l1: Uint8Array, i: number): boolean {
  return copiedAt(l1, i * 8);
}

/** Sets L1 entry `i` to `offset` (COPIED when asked). */
export function putL1Entry(l1: Uint8Array, i: number, offset: number, copied: boolean): void {
  putEntry(l1, i * 8, offset, copied);
}

// ------------------------------------------------------------------- L2

/** Host cluster offset (bits 9..55) of L2 entry `index` of a slice; meaningless for compressed entries. */
export function l2HostOffset(slice: Uint8Array, index: number, extended: boolean): number {
  return entryOffsetAt(slice, index * l2EntryBytes(extended));
}

/** Whether L2 entry `index` has COPIED. */
export function l2Copied(slice: Uint8Array, index: number, extended: boolean): boolean {
  return copiedAt(slice, index * l2EntryBytes(extended));
}

/** Whether L2 entry `index` is compressed. */
export function l2Compressed(slice: Uint8Array, index: number, extended: boolean): boolean {
  return compressedAt(slice, index * l2EntryBytes(extended));
}

/** The zero half of extended entry `index`'s bitmap (bit n: subcluster n reads as zeros). */
export function l2ZeroBitmap(slice: Uint8Array, index: number): number {
  return be.u32(slice, index * 16 + 8);
}

/** The allocation half of extended entry `index`'s bitmap (bit n: subcluster n is allocated). */
export function l2AllocBitmap(slice: Uint8Array, index: number): number {
  return be.u32(slice, index * 16 + 12);
}

/**
 * An L2 entry decoded into its halves and, with extended L2, its bitmap
 * halves (0 otherwise). The write path edits these and writes them back.
 */
export interface L2Entry {
  hi: number;
  lo: number;
  /** Zero bits (extended L2). */
  zero: number;
  /** Allocation bits (extended L2). */
  alloc: number;
}

/** The all-zero entry: unallocated, no subcluster allocated. */
export function emptyL2Entry(): L2Entry {
  return { hi: 0, lo: 0, zero: 0, alloc: 0 };
}

export function readL2Entry(slice: Uint8Array, index: number, extended: boolean): L2Entry {
  const p = index * l2EntryBytes(extended);
  return {
    hi: be.u32(slice, p),
    lo: be.u32(slice, p + 4),
    zero: extended ? be.u32(slice, p + 8) : 0,
    alloc: extended ? be.u32(slice, p + 12) : 0,
  };
}

export function writeL2Entry(slice: Uint8Array, index: number, extended: boolean, e: L2Entry): void {
  const p = index * l2EntryBytes(extended);
  be.put32(slice, p, e.hi);
  be.put32(slice, p + 4, e.lo);
  if (extended) {
    be.put32(slice, p + 8, e.zero);
    be.put32(slice, p + 12, e.alloc);
  }
}

export function sameL2Entry(a: L2Entry, b: L2Entry): boolean {
  return a.hi === b.hi && a.lo === b.lo && a.zero === b.zero && a.alloc === b.alloc;
}

/** A standard entry naming host cluster `host` (COPIED unless told otherwise), bitmaps empty. */
export function standardL2Entry(host: number, copied = true): L2Entry {
  return { hi: encodeEntryHi(host, copied), lo: encodeEntryLo(host, false), zero: 0, alloc: 0 };
}

/** Host cluster offset of a standard entry. */
export function l2EntryHost(e: L2Entry): number {
  return entryOffset(e.hi, e.lo);
}

export function l2EntryIsCompressed(e: L2Entry): boolean {
  return (e.hi & QCOW_OFLAG_COMPRESSED) !== 0;
}

export function l2EntryIsCopied(e: L2Entry): boolean {
  return (e.hi & QCOW_OFLAG_COPIED) !== 0;
}

/** The zero flag of a standard (not extended) entry. */
export function l2EntryIsZero(e: L2Entry): boolean {
  return (e.lo & QCOW_OFLAG_ZERO) !== 0;
}

/**
 * Whether an extended entry's bitmap is invalid (QEMU's
 * QCOW2_SUBCLUSTER_INVALID): a subcluster both zero and allocated, or
 * allocation bits on a cluster with no host offset (`hasHost`). A compressed
 * entry's bitmap is unused and never invalid.
 */
export function l2BitmapInvalid(e: L2Entry, hasHost: boolean): boolean {
  if (l2EntryIsCompressed(e)) return false;
  return hasHost ? (e.zero & e.alloc) !== 0 : e.alloc !== 0;
}

/** Subclusters [a, b) as a bitmap half (0 when b <= a). */
export function subclusterMask(a: number, b: number): number {
  if (b <= a) return 0;
  return b - a >= 32 ? ALL_SUBCLUSTERS : ((((1 << (b - a)) - 1) << a) >>> 0);
}

// ------------------------------------------------ compressed descriptor

/** Unit of the descriptor's sector count. */
export const QCOW2_COMPRESSED_SECTOR_SIZE = 512;

export interface CompressedDescriptor {
  /** Host offset of the first compressed byte. */
  coffset: number;
  /** Bytes to read: to the end of the last sector (may run past the stream's end). */
  csize: number;
}

/** Bit x of the diagram above: where the sector count starts. */
function csizeShift(clusterBits: number): number {
  return 62 - (clusterBits - 8);
}

/** Decodes the descriptor of a compressed entry from its halves (flag bits are ignored). */
export function parseCompressedDescriptor(hi: number, lo: number, clusterBits: number): CompressedDescriptor {
  const hiOffsetBits = csizeShift(clusterBits) - 32;
  const sectorMask = (1 << (clusterBits - 8)) - 1;
  const coffset = (hi & ((1 << hiOffsetBits) - 1)) * 0x100000000 + (lo >>> 0);
  const sectors = ((hi >>> hiOffsetBits) & sectorMask) + 1;
  const csize = sectors * QCOW2_COMPRESSED_SECTOR_SIZE - (coffset % QCOW2_COMPRESSED_SECTOR_SIZE);
  return { coffset, csize };
}

/**
 * The halves of a compressed entry for `bytes` bytes of compressed data at
 * host byte offset `coffset`. Throws RangeError when they do not fit the
 * descriptor (more than one cluster's worth of sectors, or an offset past 2^x).
 */
export function encodeCompressedEntry(coffset: number, bytes: number, clusterBits: number): { hi: number; lo: number } {
  const x = csizeShift(clusterBits);
  const extra = Math.floor((coffset + bytes - 1) / QCOW2_COMPRESSED_SECTOR_SIZE) - Math.floor(coffset / QCOW2_COMPRESSED_SECTOR_SIZE);
  if (!(bytes > 0) || extra >= 2 ** (clusterBits - 8) || !(coffset >= 0) || coffset >= 2 ** x || !Number.isSafeInteger(coffset)) {
    throw new RangeError(`compressed cluster of ${bytes} bytes at ${coffset} does not fit the descriptor (cluster_bits ${clusterBits})`);
  }
  const hi = QCOW_OFLAG_COMPRESSED | (extra << (x - 32)) | Math.floor(coffset / 0x100000000);
  return { hi: hi >>> 0, lo: coffset >>> 0 };
}
