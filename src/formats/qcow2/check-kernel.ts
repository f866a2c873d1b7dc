/**
 * The hot loops of qcow2's check, and what they mean for qcow2.
 *
 * The check counts every L2 entry's cluster, compares the counts with the
 * stored refcounts, and checks that COPIED is set exactly on the active
 * entries whose cluster has refcount 1. Nearly every entry of a healthy
 * image takes the same path, so a kernel handles that path and stops at the
 * first entry it cannot (check.ts reports that one with QEMU's full rules and
 * resumes after it):
 *
 *  - countTable: for a plain entry (an offset, no flag but COPIED, no
 *    reserved bit, cluster aligned, inside the file, count below the width's
 *    maximum) one more reference, the fragmentation walk, and a mark for the
 *    COPIED check: the cluster's bit in the "flagged" map when the entry has
 *    COPIED, else in the "plain" map;
 *  - compareBlock: stored refcount == count, the highest used cluster, and
 *    the marks against the stored refcount (flagged needs refcount 1, plain
 *    needs another). A disagreement only raises `marksBad`; then check.ts
 *    reads the tables again and finds the entries the way QEMU does.
 *
 * The kernels are asm/refcount.ts (wasm, through src/wasm/refcount.ts, with
 * the masks below as parameters, so wasm/ stays ignorant of qcow2) and the
 * JS twins here, which run when the module is not loaded, a table is not in
 * wasm memory, or the refcount width has no kernel. test/unit/
 * qcow2-check-kernel.test.ts runs both over the same tables.
 */
import { WasmRefcounts, type CountCells, type CountMasks } from '../../wasm/refcount.js';
import { getRefcountEntry } from './refcount-codec.js';
import { L2E_RESERVED_HI, QCOW_OFLAG_COMPRESSED, QCOW_OFLAG_COPIED, QCOW_OFLAG_ZERO } from './l2-entry.js';

export type { CountMasks } from '../../wasm/refcount.js';

/** The kernels' state across calls (WasmRefcounts keeps the same fields in wasm memory). */
export interface TallyState {
  /** Next contiguous host offset of the fragmentation walk (0: none yet). */
  next: number;
  allocated: number;
  fragmented: number;
  /** Highest cluster with a nonzero stored refcount seen by compareBlock. */
  highest: number;
  /** A marked cluster's stored refcount contradicts its COPIED flags. */
  marksBad: boolean;
}

const OFFSET_MASK = 0x00ff_ffff_ffff_fe00n;

/** The masks that pick a plain L2 entry of an image with `clusterBits` (see countTable). */
export function l2CountMasks(clusterBits: number, extended: boolean): CountMasks {
  const cs = 1n << BigInt(clusterBits);
  // Below the offset: bit 0 is the zero flag of a standard entry (not plain), unused in an extended one.
  const low = extended ? (cs - 1n) & ~1n : cs - 1n;
  return {
    stride: extended ? 16 : 8,
    skipMask: (BigInt(QCOW_OFLAG_COPIED) << 32n) | BigInt(QCOW_OFLAG_ZERO),
    rejectMask: (BigInt(L2E_RESERVED_HI | QCOW_OFLAG_COMPRESSED) << 32n) | low,
    offsetMask: OFFSET_MASK,
    flagBit: BigInt(QCOW_OFLAG_COPIED) << 32n,
    clusterBits,
  };
}

function widthFor(max: number): 1 | 2 | 4 {
  return max <= 0xff ? 1 : max <= 0xffff ? 2 : 4;
}

/** Bytes per counter of a tally whose largest count is `max`. */
export const counterWidth = widthFor;

/**
 * Counters (one per host cluster) and the COPIED marks, in wasm memory when
 * the module is loaded and the arena has room, else plain arrays; the same
 * answers either way. `free` returns the wasm memory.
 */
export class RefTally {
  readonly counts: CountCells;
  /** Flagged map, then plain map, `markBytes` each; null when not marking. */
  readonly marks: Uint8Array | null;
  readonly markBytes: number;
  readonly st: TallyState;
  private readonly w: WasmRefcounts | null;

  constructor(length: number, max: number, withMarks: boolean, useWasm = true) {
    const width = widthFor(max);
    this.w = useWasm ? WasmRefcounts.create(length, width, withMarks) : null;
    if (this.w) {
      this.counts = this.w.counts;
      this.marks = this.w.marks;
      this.markBytes = this.w.markBytes;
      this.st = this.w;
    } else {
      this.counts = width === 1 ? new Uint8Array(length) : width === 2 ? new Uint16Array(length) : new Uint32Array(length);
      this.markBytes = withMarks ? Math.ceil(length / 8) : 0;
      this.marks = withMarks ? new Uint8Array(this.markBytes * 2) : null;
      this.st = { next: 0, allocated: 0, fragmented: 0, highest: 0, marksBad: false };
    }
  }

  /** Whether the wasm kernels run (tests compare both). */
  get wasm(): boolean {
    return this.w !== null;
  }

  /**
   * Counts the plain entries of `table` from entry `from` on; returns the
   * first entry it left to the caller, or n. `limit`: clusters of the file.
   */
  countTable(table: Uint8Array, from: number, n: number, m: CountMasks, max: number, limit: number, frag: boolean, mark: boolean): number {
    if (this.w?.inMemory(table)) return this.w.countTable(table, from, n, m, max, limit, frag, mark);
    return countTableJs(table, from, n, m, this.counts, max, limit, frag, mark ? this.marks : null, this.markBytes, this.st);
  }

  /**
   * Compares the stored refcounts of `blk` (`bits` wide; null: no block, all
   * 0) for clusters base + [from, n) with the counts; returns the first
   * entry that differs, or n.
   */
  compareBlock(blk: Uint8Array | null, from: number, n: number, bits: number, base: number, mark: boolean): number {
    if (blk && (bits === 8 || bits === 16 || bits === 32) && this.w?.inMemory(blk)) return this.w.compareBlock(blk, from, n, bits, base, mark);
    return compareBlockJs(blk, from, n, bits, this.counts, base, mark ? this.marks : null, this.markBytes, this.st);
  }

  /** Marks cluster `k` as referenced by an active entry with (or without) COPIED; false when `k` is past the maps. */
  mark(k: number, copied: boolean): boolean {
    if (!this.marks || k >= this.markBytes * 8) return false;
    this.marks[(copied ? 0 : this.markBytes) + Math.floor(k / 8)]! |= 1 << (k % 8);
    return true;
  }

  /** The marks of cluster `k` against its stored refcount (for clusters compareBlock left to the caller). */
  checkMarks(k: number, stored: number): void {
    if (this.marks && markContradicts(this.marks, this.markBytes, k, stored)) this.st.marksBad = true;
  }

  free(): void {
    this.w?.free();
  }
}

function markContradicts(marks: Uint8Array, markBytes: number, k: number, stored: number): boolean {
  const byte = Math.floor(k / 8);
  const bit = 1 << (k % 8);
  return stored === 1 ? (marks[markBytes + byte]! & bit) !== 0 : (marks[byte]! & bit) !== 0;
}

/** countTable in JS: asm/refcount.ts's refCountTable, entry for entry. */
export function countTableJs(
  table: Uint8Array,
  from: number,
  n: number,
  m: CountMasks,
  counts: CountCells,
  max: number,
  limit: number,
  frag: boolean,
  marks: Uint8Array | null,
  markBytes: number,
  st: TallyState,
): number {
  const dv = new DataView(table.buffer, table.byteOffset, table.byteLength);
  const ext = m.stride === 16;
  const skipHi = ~Number(m.skipMask >> 32n) >>> 0;
  const skipLo = ~Number(m.skipMask & 0xffffffffn) >>> 0;
  const rejHi = Number(m.rejectMask >> 32n);
  const rejLo = Number(m.rejectMask & 0xffffffffn);
  const offHi = Number(m.offsetMask >> 32n);
  const offLo = Number(m.offsetMask & 0xffffffffn);
  const flagHi = Number(m.flagBit >> 32n);
  const cb = m.clusterBits;
  const cs = 2 ** cb;
  const per4G = 2 ** (32 - cb);
  let next = st.next;
  let allocated = st.allocated;
  let fragmented = st.fragmented;
  let i = from;
  for (; i < n; i++) {
    const p = i * m.stride;
    const hi = dv.getUint32(p);
    const lo = dv.getUint32(p + 4);
    const bmHi = ext ? dv.getUint32(p + 8) : 0;
    const bmLo = ext ? dv.getUint32(p + 12) : 0;
    if ((hi & skipHi) === 0 && (lo & skipLo) === 0 && bmLo === 0) continue;
    if (hi & rejHi || lo & rejLo) break;
    const oh = hi & offHi;
    const ol = (lo & offLo) >>> 0;
    if ((oh | ol) === 0) break;
    if ((bmHi & bmLo) !== 0) break;
    const k = oh * per4G + (ol >>> cb);
    if (k >= limit) break;
    const v = counts[k]!;
    if (v >= max) break;
    counts[k] = v + 1;
    if (frag) {
      const off = k * cs;
      allocated++;
      if (next !== 0 && off !== next) fragmented++;
      next = off + cs;
    }
    if (marks) marks[(hi & flagHi ? 0 : markBytes) + Math.floor(k / 8)]! |= 1 << (k % 8);
  }
  st.next = next;
  st.allocated = allocated;
  st.fragmented = fragmented;
  return i;
}

/** compareBlock in JS: asm/refcount.ts's refCompareBlock, for every refcount width. */
export function compareBlockJs(
  blk: Uint8Array | null,
  from: number,
  n: number,
  bits: number,
  counts: CountCells,
  base: number,
  marks: Uint8Array | null,
  markBytes: number,
  st: TallyState,
): number {
  let highest = st.highest;
  let bad = st.marksBad;
  let j = from;
  for (; j < n; j++) {
    const stored = blk ? getRefcountEntry(blk, bits, j) : 0;
    const k = base + j;
    if (stored !== counts[k]) break;
    if (stored !== 0) highest = k;
    if (marks && !bad) bad = markContradicts(marks, markBytes, k, stored);
  }
  st.highest = highest;
  st.marksBad = bad;
  return j;
}
