/**
 * The JS fallback of the hbitmap bit core: the same hierarchy as
 * asm/hbitmap.ts, with 32-bit words (fan-out 32) because JS bit operations
 * are 32-bit. Used before initWasm resolved and when the arena is full.
 */
import type { HBitmapCore } from './hbitmap-core.js';

function ctz32(w: number): number {
  return 31 - Math.clz32(w & -w);
}

function popcnt32(w: number): number {
  w = w - ((w >>> 1) & 0x55555555);
  w = (w & 0x33333333) + ((w >>> 2) & 0x33333333);
  return (((w + (w >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

// Mask of bits lo..hi (0..31) in one word.
function spanMask(lo: number, hi: number): number {
  return ((0xffffffff >>> (31 - hi)) & (0xffffffff << lo)) >>> 0;
}

export class JsHBitmapCore implements HBitmapCore {
  readonly backend = 'js' as const;
  readonly nbits: number;
  /** levels[0] holds the bits; bit j of levels[k+1] = (levels[k][j] !== 0); the last has one word. */
  private readonly levels: Uint32Array[] = [];
  private bits = 0;

  constructor(nbits: number) {
    this.nbits = nbits;
    let words = Math.max(1, Math.ceil(nbits / 32));
    for (;;) {
      this.levels.push(new Uint32Array(words));
      if (words === 1) break;
      words = Math.ceil(words / 32);
    }
  }

  count(): number {
    return this.bits;
  }

  get(bit: number): boolean {
    return ((this.levels[0]![bit >>> 5]! >>> (bit & 31)) & 1) !== 0;
  }

  private updateParents(wa: number, wb: number): void {
    for (let level = 0; level + 1 < this.levels.length; level++) {
      const child = this.levels[level]!;
      const parent = this.levels[level + 1]!;
      for (let pw = wa >>> 5; pw <= wb >>> 5; pw++) {
        const lo = Math.max(wa, pw << 5);
        const hi = Math.min(wb, (pw << 5) + 31);
        let nz = 0;
        for (let j = lo; j <= hi; j++) if (child[j] !== 0) nz |= 1 << (j & 31);
        const span = spanMask(lo & 31, hi & 31);
        parent[pw] = ((parent[pw]! & ~span) | nz) >>> 0;
      }
      wa >>>= 5;
      wb >>>= 5;
    }
  }

  private apply(first: number, last: number, set: boolean): void {
    const l0 = this.levels[0]!;
    const wa = first >>> 5;
    const wb = last >>> 5;
    for (let w = wa; w <= wb; w++) {
      const old = l0[w]!;
      const mask = spanMask(w === wa ? first & 31 : 0, w === wb ? last & 31 : 31);
      const val = (set ? old | mask : old & ~mask) >>> 0;
      this.bits += popcnt32(val) - popcnt32(old);
      l0[w] = val;
    }
    this.updateParents(wa, wb);
  }

  set(first: number, last: number): void {
    this.apply(first, last, true);
  }

  reset(first: number, last: number): void {
    this.apply(first, last, false);
  }

  resetAll(): void {
    for (const l of this.levels) l.fill(0);
    this.bits = 0;
  }

  nextSet(start: number, end: number): number {
    if (start >= end) return -1;
    const n = this.levels.length;
    let level = 0;
    let pos = start;
    for (;;) {
      const widx = Math.floor(pos / 32);
      const w = (this.levels[level]![widx]! & (0xffffffff << (pos & 31))) >>> 0;
      if (w !== 0) {
        let bit = widx * 32 + ctz32(w);
        while (level > 0) {
          level--;
          bit = bit * 32 + ctz32(this.levels[level]![bit]!);
        }
        return bit < end ? bit : -1;
      }
      if (level + 1 >= n) return -1;
      pos = widx + 1;
      if (pos >= this.levels[level]!.length) return -1;
      level++;
      if (pos * 32 ** level >= end) return -1;
    }
  }

  nextZero(start: number, end: number): number {
    if (start >= end) return -1;
    const l0 = this.levels[0]!;
    const lastWord = (end - 1) >>> 5;
    let widx = start >>> 5;
    let w = (~l0[widx]! & (0xffffffff << (start & 31))) >>> 0;
    while (w === 0) {
      widx++;
      if (widx > lastWord) return -1;
      w = ~l0[widx]! >>> 0;
    }
    const bit = widx * 32 + ctz32(w);
    return bit < end ? bit : -1;
  }

  collect(start: number, end: number, out: Uint32Array | Float64Array): number {
    let n = 0;
    let pos = start;
    const l0 = this.levels[0]!;
    while (n < out.length && pos < end) {
      const next = this.nextSet(pos, end);
      if (next < 0) break;
      const widx = next >>> 5;
      let w = (l0[widx]! & (0xffffffff << (next & 31))) >>> 0;
      while (w !== 0 && n < out.length) {
        const bit = widx * 32 + ctz32(w);
        if (bit >= end) return n;
        out[n++] = bit;
        w = (w & (w - 1)) >>> 0;
        pos = bit + 1;
      }
    }
    return n;
  }

  mergeFrom(src: HBitmapCore): boolean {
    if (!(src instanceof JsHBitmapCore) || src.nbits !== this.nbits) return false;
    const d = this.levels[0]!;
    const s = src.levels[0]!;
    let bits = 0;
    for (let w = 0; w < d.length; w++) {
      d[w] = (d[w]! | s[w]!) >>> 0;
      bits += popcnt32(d[w]!);
    }
    this.bits = bits;
    this.updateParents(0, d.length - 1);
    return true;
  }

  resized(nbits: number): JsHBitmapCore {
    const next = new JsHBitmapCore(nbits);
    const keep = Math.min(nbits, this.nbits);
    if (keep > 0) {
      const words = Math.ceil(keep / 32);
      const d = next.levels[0]!;
      d.set(this.levels[0]!.subarray(0, words));
      if (keep & 31) d[words - 1] = (d[words - 1]! & spanMask(0, (keep & 31) - 1)) >>> 0;
      for (let w = 0; w < words; w++) next.bits += popcnt32(d[w]!);
      next.updateParents(0, words - 1);
    }
    return next;
  }

  readWords(firstWord64: number, nwords64: number, out: Uint8Array): void {
    // Two 32-bit words per 64-bit word, little-endian either way.
    const l0 = this.levels[0]!;
    const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
    for (let k = 0; k < nwords64 * 2; k++) {
      const w = firstWord64 * 2 + k;
      dv.setUint32(k * 4, w < l0.length ? l0[w]! : 0, true);
    }
  }

  writeWords(firstWord64: number, nwords64: number, src: Uint8Array): void {
    if (nwords64 === 0) return;
    const l0 = this.levels[0]!;
    const dv = new DataView(src.buffer, src.byteOffset, src.byteLength);
    const first = firstWord64 * 2;
    const last = Math.min(l0.length, first + nwords64 * 2) - 1;
    for (let w = first; w <= last; w++) {
      let val = dv.getUint32((w - first) * 4, true);
      const lo = w * 32;
      if (lo + 32 > this.nbits) val = this.nbits > lo ? (val & spanMask(0, this.nbits - lo - 1)) >>> 0 : 0;
      this.bits += popcnt32(val) - popcnt32(l0[w]!);
      l0[w] = val;
    }
    if (last >= first) this.updateParents(first, last);
  }

  free(): void {}
}
