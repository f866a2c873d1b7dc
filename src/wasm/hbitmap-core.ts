/**
 * What HBitmap (hbitmap.ts) needs from a bit store: bit indices only, ranges
 * inclusive, `end` bounds exclusive and at most nbits. Two implementations:
 * WasmHBitmapCore (levels in the wasm arena, kernels in asm/hbitmap.ts) and
 * JsHBitmapCore (hbitmap-js.ts).
 */
export interface HBitmapCore {
  readonly backend: 'wasm' | 'js';
  readonly nbits: number;
  count(): number;
  get(bit: number): boolean;
  set(first: number, last: number): void;
  reset(first: number, last: number): void;
  resetAll(): void;
  /** First set bit in [start, end), or -1. */
  nextSet(start: number, end: number): number;
  /** First clear bit in [start, end), or -1. */
  nextZero(start: number, end: number): number;
  /** Fills `out` with set bits from [start, end) in order; returns how many. */
  collect(start: number, end: number, out: Uint32Array | Float64Array): number;
  /** this |= src when src is the same kind of core with the same nbits; false otherwise (caller merges generically). */
  mergeFrom(src: HBitmapCore): boolean;
  /** A new core of `nbits` bits holding this one's first bits (this one is left as is). */
  resized(nbits: number): HBitmapCore;
  /** Level-0 bits of 64-bit words [firstWord64, +nwords64) as little-endian bytes into out (8 bytes per word). */
  readWords(firstWord64: number, nwords64: number, out: Uint8Array): void;
  /** Replaces those words from `src` (bits past nbits are dropped). */
  writeWords(firstWord64: number, nwords64: number, src: Uint8Array): void;
  /** Releases wasm memory; the core must not be used afterwards. */
  free(): void;
}
