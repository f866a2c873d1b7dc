/**
 * A sparse bit core for bitmaps past one core's reach (iotest 190: a 2 TiB
 * image at 512-byte granularity has 2^32 bits; a 2^63-byte image 2^54).
 *
 * The bits are cut into segments of SEGMENT_BITS; a segment is an ordinary
 * core (wasm or JS), made on the first bit set in it and dropped when a reset
 * clears it whole. A missing segment reads as all clear, so a huge clean
 * bitmap costs no memory, where QEMU leans on calloc's untouched pages.
 * Searches visit only the segments that exist (kept sorted).
 */
import type { HBitmapCore } from './hbitmap-core.js';

/** Bits per segment: a multiple of 64 (serialization words), within one core's i32 indices. */
export const SEGMENT_BITS = 2 ** 30;

export class ChunkedHBitmapCore implements HBitmapCore {
  readonly backend: 'wasm' | 'js';
  readonly nbits: number;
  private readonly segs = new Map<number, HBitmapCore>();
  /** Indices of the segments that exist, ascending. */
  private keys: number[] = [];
  private readonly make: (nbits: number) => HBitmapCore;
  private scratch: Uint32Array | null = null;

  /** Bits per segment (SEGMENT_BITS; tests pass small ones to cross segments often). */
  private readonly seg: number;
  private readonly segWords: number;

  constructor(nbits: number, make: (nbits: number) => HBitmapCore, backend: 'wasm' | 'js', segmentBits = SEGMENT_BITS) {
    if (segmentBits % 64 !== 0 || segmentBits <= 0) throw new RangeError(`hbitmap: segment of ${segmentBits} bits is not a multiple of 64`);
    this.nbits = nbits;
    this.seg = segmentBits;
    this.segWords = segmentBits / 64;
    this.make = make;
    this.backend = backend;
  }

  private segBits(s: number): number {
    return Math.min(this.seg, this.nbits - s * this.seg);
  }

  private ensure(s: number): HBitmapCore {
    let c = this.segs.get(s);
    if (!c) {
      c = this.make(this.segBits(s));
      this.segs.set(s, c);
      this.keys.splice(this.firstKeyAtOrAfter(s), 0, s);
    }
    return c;
  }

  /** Adopts `core` as segment s (its size must be segBits(s)). */
  adopt(s: number, core: HBitmapCore): void {
    this.drop(s);
    this.segs.set(s, core);
    this.keys.splice(this.firstKeyAtOrAfter(s), 0, s);
  }

  private drop(s: number): void {
    const c = this.segs.get(s);
    if (!c) return;
    c.free();
    this.segs.delete(s);
    this.keys.splice(this.firstKeyAtOrAfter(s), 1);
  }

  /** Position in `keys` of the first segment index >= s (binary search). */
  private firstKeyAtOrAfter(s: number): number {
    let lo = 0;
    let hi = this.keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.keys[mid]! < s) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Existing segment indices in [sFirst, sLast], ascending (a copy: callers may drop). */
  private present(sFirst: number, sLast: number): number[] {
    const out: number[] = [];
    for (let i = this.firstKeyAtOrAfter(sFirst); i < this.keys.length && this.keys[i]! <= sLast; i++) out.push(this.keys[i]!);
    return out;
  }

  count(): number {
    let n = 0;
    for (const c of this.segs.values()) n += c.count();
    return n;
  }

  get(bit: number): boolean {
    const s = Math.floor(bit / this.seg);
    return this.segs.get(s)?.get(bit - s * this.seg) ?? false;
  }

  set(first: number, last: number): void {
    const sf = Math.floor(first / this.seg);
    const sl = Math.floor(last / this.seg);
    for (let s = sf; s <= sl; s++) {
      const base = s * this.seg;
      this.ensure(s).set(Math.max(first, base) - base, Math.min(last, base + this.segBits(s) - 1) - base);
    }
  }

  reset(first: number, last: number): void {
    for (const s of this.present(Math.floor(first / this.seg), Math.floor(last / this.seg))) {
      const base = s * this.seg;
      const lo = Math.max(first, base) - base;
      const hi = Math.min(last, base + this.segBits(s) - 1) - base;
      if (lo === 0 && hi === this.segBits(s) - 1) this.drop(s);
      else this.segs.get(s)!.reset(lo, hi);
    }
  }

  resetAll(): void {
    for (const c of this.segs.values()) c.free();
    this.segs.clear();
    this.keys = [];
  }

  nextSet(start: number, end: number): number {
    if (start >= end) return -1;
    for (const s of this.present(Math.floor(start / this.seg), Math.floor((end - 1) / this.seg))) {
      const base = s * this.seg;
      const b = this.segs.get(s)!.nextSet(Math.max(start, base) - base, Math.min(end, base + this.segBits(s)) - base);
      if (b >= 0) return base + b;
    }
    return -1;
  }

  nextZero(start: number, end: number): number {
    let pos = start;
    while (pos < end) {
      const s = Math.floor(pos / this.seg);
      const base = s * this.seg;
      const c = this.segs.get(s);
      if (!c) return pos;
      const segEnd = Math.min(end, base + this.segBits(s));
      const b = c.nextZero(pos - base, segEnd - base);
      if (b >= 0) return base + b;
      pos = segEnd;
    }
    return -1;
  }

  collect(start: number, end: number, out: Uint32Array | Float64Array): number {
    let n = 0;
    for (const s of this.present(Math.floor(start / this.seg), Math.floor((Math.max(start + 1, end) - 1) / this.seg))) {
      if (n >= out.length) break;
      const base = s * this.seg;
      const lo = Math.max(start, base) - base;
      const hi = Math.min(end, base + this.segBits(s)) - base;
      if (lo >= hi) continue;
      const want = out.length - n;
      if (!this.scratch || this.scratch.length < want) this.scratch = new Uint32Array(want);
      const got = this.segs.get(s)!.collect(lo, hi, this.scratch.subarray(0, want));
      for (let i = 0; i < got; i++) out[n++] = base + this.scratch[i]!;
    }
    return n;
  }

  mergeFrom(src: HBitmapCore): boolean {
    if (!(src instanceof ChunkedHBitmapCore) || src.nbits !== this.nbits) return false;
    for (const s of src.keys) {
      const from = src.segs.get(s)!;
      const to = this.ensure(s);
      if (to.mergeFrom(from)) continue;
      // Segments of different kinds (wasm and JS): OR their words.
      const words = Math.ceil(this.segBits(s) / 64);
      const step = 8192;
      const a = new Uint8Array(step * 8);
      const b = new Uint8Array(step * 8);
      for (let w = 0; w < words; w += step) {
        const k = Math.min(step, words - w);
        from.readWords(w, k, a);
        to.readWords(w, k, b);
        for (let i = 0; i < k * 8; i++) b[i] = b[i]! | a[i]!;
        to.writeWords(w, k, b);
      }
    }
    return true;
  }

  resized(nbits: number): HBitmapCore {
    if (nbits <= this.seg) {
      const first = this.segs.get(0);
      return first ? first.resized(nbits) : this.make(nbits);
    }
    const next = new ChunkedHBitmapCore(nbits, this.make, this.backend, this.seg);
    for (const s of this.keys) {
      if (s * this.seg >= nbits) break;
      const want = next.segBits(s);
      const c = this.segs.get(s)!;
      next.adopt(s, c.resized(want));
    }
    return next;
  }

  private forWords(firstWord64: number, nwords64: number, fn: (s: number, localWord: number, k: number, done: number) => void): void {
    let done = 0;
    while (done < nwords64) {
      const w = firstWord64 + done;
      const s = Math.floor(w / this.segWords);
      const local = w - s * this.segWords;
      const k = Math.min(nwords64 - done, this.segWords - local);
      fn(s, local, k, done);
      done += k;
    }
  }

  readWords(firstWord64: number, nwords64: number, out: Uint8Array): void {
    this.forWords(firstWord64, nwords64, (s, local, k, done) => {
      const part = out.subarray(done * 8, (done + k) * 8);
      const c = s * this.seg < this.nbits ? this.segs.get(s) : undefined;
      if (c) c.readWords(local, k, part);
      else part.fill(0);
    });
  }

  writeWords(firstWord64: number, nwords64: number, src: Uint8Array): void {
    this.forWords(firstWord64, nwords64, (s, local, k, done) => {
      if (s * this.seg >= this.nbits) return;
      const part = src.subarray(done * 8, (done + k) * 8);
      const c = this.segs.get(s);
      if (!c && part.every((b) => b === 0)) return;
      (c ?? this.ensure(s)).writeWords(local, k, part);
    });
  }

  free(): void {
    this.resetAll();
  }
}
