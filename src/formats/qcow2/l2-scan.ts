/**
 * Classifying qcow2 L2 entries and finding runs of alike entries.
 *
 * This is the reference implementation in TypeScript: block status, map and
 * read planning ask "from entry `start`, how many entries share its kind (and,
 * for clusters with a host offset, continue contiguously)?" so one answer
 * covers many clusters. The WebAssembly kernel (asm/l2-scan.ts, loaded by
 * src/wasm/) answers the same question with the same semantics and is tested
 * against this file.
 *
 * Entry layout (docs/interop/qcow2.txt, "Cluster mapping"):
 *
 *   standard entry, 64 bits big-endian
 *     bit 63     COPIED (refcount is exactly 1)
 *     bit 62     compressed
 *     bits 9-55  host cluster offset (standard clusters)
 *     bit 0      reads as zeros (v3)
 *   extended entry (extended_l2): the 64-bit entry above (bit 0 reserved)
 *     followed by a 64-bit subcluster bitmap:
 *     bits 0-31  subcluster n is allocated
 *     bits 32-63 subcluster n reads as zeros
 */

export const L2_UNALLOCATED = 0;
export const L2_ZERO_PLAIN = 1;
export const L2_ZERO_ALLOC = 2;
export const L2_NORMAL = 3;
export const L2_COMPRESSED = 4;
/** Extended L2 only: a host cluster is reserved but no subcluster is allocated. */
export const L2_UNALLOCATED_ALLOC = 5;
/** Extended L2 only: the subclusters are not all alike (or the bitmap is invalid); inspect them one by one. */
export const L2_MIXED = 6;

export type L2Kind = 0 | 1 | 2 | 3 | 4 | 5 | 6;

/** Bytes of one entry. */
export function l2EntryBytes(extended: boolean): number {
  return extended ? 16 : 8;
}

function u32(b: Uint8Array, p: number): number {
  return ((b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!) >>> 0;
}

/** Host cluster offset of a (non-compressed) entry: bits 9-55. */
export function l2HostOffset(slice: Uint8Array, index: number, extended: boolean): number {
  const p = index * l2EntryBytes(extended);
  return (u32(slice, p) & 0x00ffffff) * 0x100000000 + ((u32(slice, p + 4) & 0xfffffe00) >>> 0);
}

/** Whether the COPIED flag (bit 63) is set. */
export function l2Copied(slice: Uint8Array, index: number, extended: boolean): boolean {
  return (slice[index * l2EntryBytes(extended)]! & 0x80) !== 0;
}

/** The kind of entry `index` (one of the L2_* constants). */
export function l2EntryKind(slice: Uint8Array, index: number, extended: boolean): L2Kind {
  const p = index * l2EntryBytes(extended);
  const hi = u32(slice, p);
  const lo = u32(slice, p + 4);
  if (hi & 0x40000000) return L2_COMPRESSED;
  const hasOffset = (hi & 0x00ffffff) !== 0 || (lo & 0xfffffe00) !== 0;
  if (!extended) {
    if (lo & 1) return hasOffset ? L2_ZERO_ALLOC : L2_ZERO_PLAIN;
    return hasOffset ? L2_NORMAL : L2_UNALLOCATED;
  }
  const zeroBits = u32(slice, p + 8);
  const allocBits = u32(slice, p + 12);
  if (allocBits === 0 && zeroBits === 0) return hasOffset ? L2_UNALLOCATED_ALLOC : L2_UNALLOCATED;
  if (allocBits === 0xffffffff && zeroBits === 0 && hasOffset) return L2_NORMAL;
  if (zeroBits === 0xffffffff && allocBits === 0) return hasOffset ? L2_ZERO_ALLOC : L2_ZERO_PLAIN;
  return L2_MIXED;
}

/**
 * Number of entries from `start` (inclusive) up to `end` (exclusive) that
 * have the kind of entry `start`, where kinds with a host offset (normal,
 * zero-alloc, unallocated-alloc) also need each offset to follow the previous
 * one by one cluster, and with `matchCopied` the COPIED flag must equal
 * start's. Compressed entries form runs by kind alone; a mixed entry is a run
 * of one. Returns 0 only when start >= end.
 */
export function l2ScanRun(
  slice: Uint8Array,
  start: number,
  end: number,
  extended: boolean,
  clusterBits: number,
  matchCopied: boolean,
): number {
  if (start >= end) return 0;
  const kind = l2EntryKind(slice, start, extended);
  if (kind === L2_MIXED) return 1;
  const contiguous = kind === L2_NORMAL || kind === L2_ZERO_ALLOC || kind === L2_UNALLOCATED_ALLOC;
  const clusterSize = 2 ** clusterBits;
  const copied = l2Copied(slice, start, extended);
  let expect = contiguous ? l2HostOffset(slice, start, extended) + clusterSize : 0;
  let i = start + 1;
  for (; i < end; i++) {
    if (l2EntryKind(slice, i, extended) !== kind) break;
    if (matchCopied && l2Copied(slice, i, extended) !== copied) break;
    if (contiguous) {
      if (l2HostOffset(slice, i, extended) !== expect) break;
      expect += clusterSize;
    }
  }
  return i - start;
}
