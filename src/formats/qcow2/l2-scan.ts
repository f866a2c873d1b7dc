/**
 * Classifying qcow2 L2 entries and finding runs of alike entries.
 *
 * Block status, map and read planning ask "from entry `start`, how many
 * entries share its kind (and, for clusters with a host offset, continue
 * contiguously)?" so one answer covers many clusters. l2ScanRun is the
 * reference implementation in TypeScript; the WebAssembly kernel
 * (asm/l2-scan.ts, called through src/wasm/l2-scan.ts) answers the same
 * question with the same semantics and is tested against it. l2FindRun is
 * what the driver calls: the kernel when it is loaded, else the reference.
 *
 * The entry layout (flags, offset field, subcluster bitmaps) is decoded by
 * l2-entry.ts; see the diagrams there.
 */
import { wasmL2ScanRun } from '../../wasm/l2-scan.js';
import {
  entryHasOffset,
  l2Copied,
  l2EntryBytes,
  l2HostOffset,
  QCOW_OFLAG_COMPRESSED,
  QCOW_OFLAG_ZERO,
  ALL_SUBCLUSTERS,
} from './l2-entry.js';
import { be } from './header.js';

/** Entry accessors that lived here before l2-entry.ts; re-exported for existing callers. */
export { l2Copied, l2EntryBytes, l2HostOffset } from './l2-entry.js';

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

/** The kind of entry `index` (one of the L2_* constants). */
export function l2EntryKind(slice: Uint8Array, index: number, extended: boolean): L2Kind {
  const p = index * l2EntryBytes(extended);
  const hi = be.u32(slice, p);
  const lo = be.u32(slice, p + 4);
  if (hi & QCOW_OFLAG_COMPRESSED) return L2_COMPRESSED;
  const hasOffset = entryHasOffset(hi, lo);
  if (!extended) {
    if (lo & QCOW_OFLAG_ZERO) return hasOffset ? L2_ZERO_ALLOC : L2_ZERO_PLAIN;
    return hasOffset ? L2_NORMAL : L2_UNALLOCATED;
  }
  const zeroBits = be.u32(slice, p + 8);
  const allocBits = be.u32(slice, p + 12);
  if (allocBits === 0 && zeroBits === 0) return hasOffset ? L2_UNALLOCATED_ALLOC : L2_UNALLOCATED;
  if (allocBits === ALL_SUBCLUSTERS && zeroBits === 0 && hasOffset) return L2_NORMAL;
  if (zeroBits === ALL_SUBCLUSTERS && allocBits === 0) return hasOffset ? L2_ZERO_ALLOC : L2_ZERO_PLAIN;
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

/**
 * l2ScanRun's answer, from the WebAssembly kernel when it is loaded (zero
 * copy for slices in wasm memory), else from l2ScanRun itself.
 */
export function l2FindRun(
  slice: Uint8Array,
  start: number,
  end: number,
  extended: boolean,
  clusterBits: number,
  matchCopied: boolean,
): number {
  const n = wasmL2ScanRun(slice, start, end, extended, clusterBits, matchCopied);
  return n >= 0 ? n : l2ScanRun(slice, start, end, extended, clusterBits, matchCopied);
}
