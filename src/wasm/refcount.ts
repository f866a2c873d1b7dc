/**
 * The reference counting kernels (asm/refcount.ts) over bytes: a counter
 * array, two mark bitmaps and the kernels' state block, all carved from the
 * arena so the kernels work on them in place. What the masks and marks mean
 * belongs to the caller (src/formats/qcow2/check-kernel.ts, which also holds
 * the JS twin the kernels are tested against).
 *
 * `WasmRefcounts.create` answers null when the module is not loaded or the
 * arena has no room; the caller then counts in JS.
 */
import { wasmArena } from './provider.js';
import { wasmState, type WasmState } from './module.js';

export type CountCells = Uint8Array | Uint16Array | Uint32Array;

/** Masks that pick the common entry of a table (see refCountTable in asm/refcount.ts). */
export interface CountMasks {
  /** Entry bytes: 8, or 16 when a bitmap word follows each entry. */
  stride: number;
  skipMask: bigint;
  rejectMask: bigint;
  offsetMask: bigint;
  /** The flag whose presence picks the first mark bitmap. */
  flagBit: bigint;
  clusterBits: number;
}

const ST_BYTES = 64;

export class WasmRefcounts {
  /** The counters, a view into wasm memory (zeroed at creation). */
  readonly counts: CountCells;
  /** Two bitmaps of `markBytes` each (flagged, then not flagged), or null. */
  readonly marks: Uint8Array | null;
  readonly markBytes: number;
  private readonly st: DataView;
  private freed = false;

  private constructor(
    private readonly s: WasmState,
    private readonly addrs: number[],
    counts: CountCells,
    marks: Uint8Array | null,
    st: number,
  ) {
    this.counts = counts;
    this.marks = marks;
    this.markBytes = marks ? marks.length / 2 : 0;
    this.st = new DataView(s.memory.buffer, st, ST_BYTES);
  }

  /** `length` zeroed counters of `width` bytes (1, 2 or 4), with mark bitmaps of `length` bits when asked; null without the module or room. */
  static create(length: number, width: 1 | 2 | 4, withMarks: boolean): WasmRefcounts | null {
    const s = wasmState();
    const arena = wasmArena();
    if (!s || !arena) return null;
    const markBytes = withMarks ? Math.ceil(length / 8) : 0;
    const sizes = [ST_BYTES, length * width, markBytes * 2];
    const addrs: number[] = [];
    for (const n of sizes) {
      const a = n ? arena.allocZeroed(n, s.u8) : 0;
      if (a < 0) {
        for (const b of addrs) if (b) arena.release(b);
        return null;
      }
      addrs.push(a);
    }
    const buf = s.memory.buffer;
    const counts = width === 1 ? new Uint8Array(buf, addrs[1], length) : width === 2 ? new Uint16Array(buf, addrs[1], length) : new Uint32Array(buf, addrs[1], length);
    const marks = markBytes ? new Uint8Array(buf, addrs[2], markBytes * 2) : null;
    return new WasmRefcounts(s, addrs, counts, marks, addrs[0]!);
  }

  /** Whether `b` lies in wasm memory (the kernels read it in place). */
  inMemory(b: Uint8Array): boolean {
    return b.buffer === this.s.memory.buffer;
  }

  /**
   * refCountTable over entries [from, n) of `table` (which must be inMemory):
   * the index of the first entry it left to the caller, or n.
   */
  countTable(table: Uint8Array, from: number, n: number, m: CountMasks, max: number, limit: number, frag: boolean, mark: boolean): number {
    const width = this.counts.BYTES_PER_ELEMENT;
    return this.s.exports.refCountTable(
      table.byteOffset, from, n, m.stride, m.skipMask, m.rejectMask, m.offsetMask, m.flagBit, m.clusterBits,
      this.counts.byteOffset, width, max, BigInt(limit), frag ? 1 : 0,
      mark && this.marks ? this.marks.byteOffset : 0, this.markBytes, this.st.byteOffset,
    );
  }

  /** refCompareBlock over entries [from, n) of `blk` (inMemory, `bits` 8, 16 or 32) for clusters base + j. */
  compareBlock(blk: Uint8Array, from: number, n: number, bits: number, base: number, mark: boolean): number {
    const width = this.counts.BYTES_PER_ELEMENT;
    return this.s.exports.refCompareBlock(
      blk.byteOffset, from, n, bits, this.counts.byteOffset, width, BigInt(base),
      mark && this.marks ? this.marks.byteOffset : 0, this.markBytes, this.st.byteOffset,
    );
  }

  /** The kernels' state (see asm/refcount.ts): fragmentation walk, highest cluster, mark verdict. */
  get next(): number {
    return Number(this.st.getBigUint64(0, true));
  }
  set next(v: number) {
    this.st.setBigUint64(0, BigInt(v), true);
  }
  get allocated(): number {
    return Number(this.st.getBigUint64(8, true));
  }
  set allocated(v: number) {
    this.st.setBigUint64(8, BigInt(v), true);
  }
  get fragmented(): number {
    return Number(this.st.getBigUint64(16, true));
  }
  set fragmented(v: number) {
    this.st.setBigUint64(16, BigInt(v), true);
  }
  get highest(): number {
    return Number(this.st.getBigUint64(24, true));
  }
  set highest(v: number) {
    this.st.setBigUint64(24, BigInt(v), true);
  }
  get marksBad(): boolean {
    return this.st.getUint32(32, true) !== 0;
  }
  set marksBad(v: boolean) {
    this.st.setUint32(32, v ? 1 : 0, true);
  }

  /** Returns the memory to the arena; the views must not be used afterwards. */
  free(): void {
    if (this.freed) return;
    this.freed = true;
    const arena = wasmArena();
    for (const a of this.addrs) if (a && arena) arena.release(a);
  }
}
