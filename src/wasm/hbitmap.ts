/**
 * HBitmap: QEMU's util/hbitmap.c semantics over bytes ("items").
 *
 * A bitmap covers `size` items; each bit stands for 2^granularity items, so
 * it has ceil(size / 2^granularity) bits. Item arguments are rounded to the
 * bits they touch, as QEMU does, and answers come back as items:
 * nextDirty/nextZero return max(start, bit << granularity), count() is set
 * bits << granularity (so a dirty partial last chunk counts whole).
 * Serialization uses qcow2's persistent-bitmap order: little-endian 64-bit
 * words, bit i of the data = chunk i (docs/interop/bitmaps.rst).
 *
 * The bits live in a core (hbitmap-core.ts): in the wasm arena when the
 * module is loaded and has room, else in JS typed arrays. Both keep QEMU's
 * hierarchy (one summary bit per word, level over level), so searching an
 * empty region costs O(levels), not O(bits).
 */
import { WasmError } from './errors.js';
import type { HBitmapCore } from './hbitmap-core.js';
import { JsHBitmapCore } from './hbitmap-js.js';
import { SCRATCH_BASE, SCRATCH_BYTES, wasmState, type WasmState } from './module.js';
import { wasmArena } from './provider.js';
import type { BuddyArena } from './arena.js';
import { ChunkedHBitmapCore, SEGMENT_BITS } from './hbitmap-chunked.js';

/**
 * Largest bitmap (bits): bit numbers stay exact doubles. One core holds at
 * most SEGMENT_BITS (indices cross the wasm boundary as i32); larger bitmaps
 * are sparse runs of cores (hbitmap-chunked.ts).
 */
export const HBITMAP_MAX_BITS = 2 ** 53;

// Frees a wasm core whose HBitmap was dropped without free().
const finalizer =
  typeof FinalizationRegistry === 'function'
    ? new FinalizationRegistry<{ arena: BuddyArena; hdr: number }>((h) => h.arena.release(h.hdr))
    : null;

class WasmHBitmapCore implements HBitmapCore {
  readonly backend = 'wasm' as const;
  readonly nbits: number;
  private readonly s: WasmState;
  private readonly arena: BuddyArena;
  private hdr: number;
  private readonly token = {};

  private constructor(s: WasmState, arena: BuddyArena, hdr: number, nbits: number) {
    this.s = s;
    this.arena = arena;
    this.hdr = hdr;
    this.nbits = nbits;
    finalizer?.register(this, { arena, hdr }, this.token);
  }

  /** A zeroed core, or null when the arena has no room. */
  static create(nbits: number): WasmHBitmapCore | null {
    const s = wasmState();
    const arena = wasmArena();
    if (!s || !arena) return null;
    const hdr = arena.alloc(s.exports.hbBytes(nbits));
    if (hdr < 0) return null;
    s.exports.hbInit(hdr, nbits);
    return new WasmHBitmapCore(s, arena, hdr, nbits);
  }

  private live(): number {
    if (this.hdr < 0) throw new WasmError('EINVAL', 'hbitmap: used after free');
    return this.hdr;
  }

  count(): number {
    return this.s.exports.hbCount(this.live()) >>> 0;
  }
  get(bit: number): boolean {
    return this.s.exports.hbGet(this.live(), bit) !== 0;
  }
  set(first: number, last: number): void {
    this.s.exports.hbSet(this.live(), first, last);
  }
  reset(first: number, last: number): void {
    this.s.exports.hbReset(this.live(), first, last);
  }
  resetAll(): void {
    this.s.exports.hbResetAll(this.live());
  }
  nextSet(start: number, end: number): number {
    return this.s.exports.hbNextDirty(this.live(), start, end);
  }
  nextZero(start: number, end: number): number {
    return this.s.exports.hbNextZero(this.live(), start, end);
  }
  collect(start: number, end: number, out: Uint32Array | Float64Array): number {
    const max = Math.min(out.length, SCRATCH_BYTES >>> 2);
    const n = this.s.exports.hbCollect(this.live(), start, end, SCRATCH_BASE, max);
    out.set(new Uint32Array(this.s.memory.buffer, SCRATCH_BASE, n));
    return n;
  }
  mergeFrom(src: HBitmapCore): boolean {
    if (!(src instanceof WasmHBitmapCore) || src.nbits !== this.nbits) return false;
    this.s.exports.hbMerge(this.live(), src.live());
    return true;
  }
  resized(nbits: number): HBitmapCore {
    const next = WasmHBitmapCore.create(nbits);
    if (next) {
      this.s.exports.hbCopyPrefix(next.hdr, this.live());
      return next;
    }
    // No room in the arena: continue in JS.
    const js = new JsHBitmapCore(nbits);
    const words = Math.ceil(Math.min(nbits, this.nbits) / 64);
    const tmp = new Uint8Array(words * 8);
    this.readWords(0, words, tmp);
    js.writeWords(0, words, tmp);
    return js;
  }
  private level0(): number {
    return this.s.exports.hbLevel0(this.live());
  }
  readWords(firstWord64: number, nwords64: number, out: Uint8Array): void {
    const have = Math.max(0, Math.min(nwords64, Math.ceil(this.nbits / 64) - firstWord64));
    const base = this.level0() + firstWord64 * 8;
    out.set(this.s.u8.subarray(base, base + have * 8));
    out.fill(0, have * 8, nwords64 * 8);
  }
  writeWords(firstWord64: number, nwords64: number, src: Uint8Array): void {
    const have = Math.max(0, Math.min(nwords64, Math.ceil(this.nbits / 64) - firstWord64));
    const chunkWords = SCRATCH_BYTES >>> 3;
    for (let done = 0; done < have; done += chunkWords) {
      const k = Math.min(chunkWords, have - done);
      this.s.u8.set(src.subarray(done * 8, (done + k) * 8), SCRATCH_BASE);
      this.s.exports.hbDeserialize(this.live(), SCRATCH_BASE, firstWord64 + done, k);
    }
  }
  free(): void {
    if (this.hdr < 0) return;
    finalizer?.unregister(this.token);
    this.arena.release(this.hdr);
    this.hdr = -1;
  }
}

function newFlatCore(nbits: number, prefer: 'wasm' | 'js'): HBitmapCore {
  return (prefer === 'wasm' ? WasmHBitmapCore.create(nbits) : null) ?? new JsHBitmapCore(nbits);
}

function newChunkedCore(nbits: number, prefer: 'wasm' | 'js', seg: number): ChunkedHBitmapCore {
  return new ChunkedHBitmapCore(nbits, (n) => newFlatCore(n, prefer), prefer, seg);
}

function newCore(nbits: number, prefer: 'wasm' | 'js', seg: number): HBitmapCore {
  return nbits <= seg ? newFlatCore(nbits, prefer) : newChunkedCore(nbits, prefer, seg);
}

/** `core` resized to nbits, crossing between one core and segments as the size needs. */
function resizeCore(core: HBitmapCore, nbits: number, prefer: 'wasm' | 'js', seg: number): HBitmapCore {
  if (core instanceof ChunkedHBitmapCore || nbits <= seg) return core.resized(nbits);
  const next = newChunkedCore(nbits, prefer, seg);
  if (core.count() > 0) next.adopt(0, core.resized(seg));
  return next;
}

export interface HBitmapOptions {
  /** 'js' forces the JS core (tests compare both); default: wasm when loaded and the arena has room. */
  backend?: 'wasm' | 'js';
  /** Bits one core holds before the bitmap is cut into sparse segments (default SEGMENT_BITS; a multiple of 64). */
  segmentBits?: number;
}

/** A dirty run found by nextDirtyArea. */
export interface DirtyArea {
  offset: number;
  bytes: number;
}

export class HBitmap {
  /** Items covered (QEMU's orig_size). */
  private sizeItems: number;
  /** log2 of items per bit. */
  readonly granularity: number;
  private core: HBitmapCore;
  private readonly scale: number;
  private readonly prefer: 'wasm' | 'js';
  private readonly seg: number;

  constructor(size: number, granularity: number, opts: HBitmapOptions = {}) {
    if (!Number.isSafeInteger(size) || size < 0) throw new WasmError('EINVAL', `hbitmap: invalid size ${size}`);
    if (!Number.isInteger(granularity) || granularity < 0 || granularity > 63) {
      throw new WasmError('EINVAL', `hbitmap: invalid granularity ${granularity}`);
    }
    this.sizeItems = size;
    this.granularity = granularity;
    this.scale = 2 ** granularity;
    this.prefer = opts.backend ?? 'wasm';
    this.seg = opts.segmentBits ?? SEGMENT_BITS;
    this.core = newCore(this.bitsFor(size), this.prefer, this.seg);
  }

  private bitsFor(size: number): number {
    const nbits = Math.ceil(size / this.scale);
    if (nbits > HBITMAP_MAX_BITS) {
      throw new WasmError('EFBIG', `hbitmap: ${size} bytes at granularity ${this.scale} needs ${nbits} bits (limit ${HBITMAP_MAX_BITS})`);
    }
    return nbits;
  }

  get size(): number {
    return this.sizeItems;
  }
  get backend(): 'wasm' | 'js' {
    return this.core.backend;
  }

  private checkRange(start: number, count: number, what: string): void {
    if (!(start >= 0 && count >= 0 && start + count <= this.sizeItems)) {
      throw new WasmError('EINVAL', `hbitmap: ${what} [${start}, +${count}) is outside the bitmap (${this.sizeItems} bytes)`);
    }
  }

  private bit(item: number): number {
    return Math.floor(item / this.scale);
  }

  /** Whether the chunk holding `item` is dirty. */
  get(item: number): boolean {
    if (!(item >= 0 && item < this.sizeItems)) return false;
    return this.core.get(this.bit(item));
  }

  /** Marks every chunk touching [start, start + count). */
  set(start: number, count: number): void {
    this.checkRange(start, count, 'set');
    if (count === 0) return;
    this.core.set(this.bit(start), this.bit(start + count - 1));
  }

  /**
   * Clears [start, start + count). As in QEMU the range must be chunk-aligned
   * (the end may be the bitmap's end): clearing part of a chunk would lose
   * the rest of it.
   */
  reset(start: number, count: number): void {
    this.checkRange(start, count, 'reset');
    if (start % this.scale !== 0 || (count % this.scale !== 0 && start + count !== this.sizeItems)) {
      throw new WasmError('EINVAL', `hbitmap: reset [${start}, +${count}) is not aligned to the granularity (${this.scale})`);
    }
    if (count === 0) return;
    this.core.reset(this.bit(start), this.bit(start + count - 1));
  }

  resetAll(): void {
    this.core.resetAll();
  }

  /** Dirty items as QEMU counts them: dirty chunks × chunk size. */
  count(): number {
    return this.core.count() * this.scale;
  }

  private endBit(start: number, count: number): number {
    return count > this.sizeItems - start ? this.core.nbits : this.bit(start + count - 1) + 1;
  }

  /** First dirty item in [start, start + count), or -1 (count defaults to the rest). */
  nextDirty(start: number, count = Infinity): number {
    if (start < 0 || start >= this.sizeItems || count <= 0) return -1;
    const b = this.core.nextSet(this.bit(start), this.endBit(start, count));
    return b < 0 ? -1 : Math.max(start, b * this.scale);
  }

  /** First clean item in [start, start + count), or -1. */
  nextZero(start: number, count = Infinity): number {
    if (start < 0 || start >= this.sizeItems || count <= 0) return -1;
    const b = this.core.nextZero(this.bit(start), this.endBit(start, count));
    return b < 0 ? -1 : Math.max(start, b * this.scale);
  }

  /** The first dirty run in [start, end), at most maxBytes long (QEMU's hbitmap_next_dirty_area). */
  nextDirtyArea(start: number, end: number, maxBytes = Infinity): DirtyArea | null {
    if (start < 0 || start >= this.sizeItems || end <= start || maxBytes <= 0) return null;
    end = Math.min(end, this.sizeItems);
    const s = this.nextDirty(start, end - start);
    if (s < 0) return null;
    const limit = s + Math.min(end - s, maxBytes);
    const z = this.nextZero(s, limit - s);
    return { offset: s, bytes: (z >= 0 ? z : limit) - s };
  }

  /** Every dirty run from `start` on (merged runs of adjacent dirty chunks, clipped to the size). */
  *dirtyAreas(start = 0, end = this.sizeItems): Generator<DirtyArea> {
    for (let pos = start; pos < end; ) {
      const a = this.nextDirtyArea(pos, end);
      if (!a) return;
      yield a;
      pos = a.offset + a.bytes;
    }
  }

  /**
   * An iterator over dirty chunks (QEMU's HBitmapIter): next() gives each
   * dirty chunk's first item, then -1. Bits are fetched in batches, so a
   * dense bitmap costs no wasm call per bit. Invalid after truncate().
   */
  iter(start = 0): HBitmapIter {
    return new HBitmapIter(this, this.core, start);
  }

  /** this |= src. Sizes must match; granularities may differ (then chunks are mapped through items). */
  merge(src: HBitmap): void {
    if (src.sizeItems !== this.sizeItems) {
      throw new WasmError('EINVAL', `hbitmap: cannot merge bitmaps of different sizes (${this.sizeItems} and ${src.sizeItems} bytes)`);
    }
    if (src === this) return;
    if (src.granularity === this.granularity && this.core.mergeFrom(src.core)) return;
    for (const a of src.dirtyAreas()) this.set(a.offset, a.bytes);
  }

  /** Grows or shrinks to `size` items; new chunks are clean, chunks past the end are dropped. */
  truncate(size: number): void {
    if (!Number.isSafeInteger(size) || size < 0) throw new WasmError('EINVAL', `hbitmap: invalid size ${size}`);
    const nbits = this.bitsFor(size);
    if (nbits !== this.core.nbits) {
      const next = resizeCore(this.core, nbits, this.prefer, this.seg);
      this.core.free();
      this.core = next;
    }
    this.sizeItems = size;
  }

  /** Serialized ranges must start at a multiple of this many items (64 chunks). */
  serializationAlign(): number {
    return 64 * this.scale;
  }

  private serialRange(start: number, count: number): { firstWord: number; words: number } {
    this.checkRange(start, count, 'serialize');
    const align = this.serializationAlign();
    if (start % align !== 0 || (count % align !== 0 && start + count !== this.sizeItems)) {
      throw new WasmError('EINVAL', `hbitmap: serialized range [${start}, +${count}) is not aligned to ${align} bytes`);
    }
    if (count === 0) return { firstWord: start / align, words: 0 };
    const firstWord = start / align;
    const lastWord = Math.floor((start + count - 1) / align);
    return { firstWord, words: lastWord - firstWord + 1 };
  }

  /** Bytes serializePart writes for [start, start + count). */
  serializationSize(start: number, count: number): number {
    return this.serialRange(start, count).words * 8;
  }

  /** Writes the bits of [start, start + count) into `buf` in qcow2 bitmap order. */
  serializePart(buf: Uint8Array, start: number, count: number): void {
    const { firstWord, words } = this.serialRange(start, count);
    if (buf.length < words * 8) throw new WasmError('EINVAL', `hbitmap: serialization buffer of ${buf.length} bytes is too small (${words * 8} needed)`);
    this.core.readWords(firstWord, words, buf);
  }

  /** Replaces the bits of [start, start + count) with those in `buf` (the inverse of serializePart). */
  deserializePart(buf: Uint8Array, start: number, count: number): void {
    const { firstWord, words } = this.serialRange(start, count);
    if (buf.length < words * 8) throw new WasmError('EINVAL', `hbitmap: deserialization buffer of ${buf.length} bytes is too small (${words * 8} needed)`);
    this.core.writeWords(firstWord, words, buf);
  }

  /** Releases the wasm memory behind the bitmap; it must not be used afterwards. */
  free(): void {
    this.core.free();
  }
}

const ITER_BATCH = 256;

export class HBitmapIter {
  private readonly core: HBitmapCore;
  private readonly batch = new Float64Array(ITER_BATCH);
  private n = 0;
  private i = 0;
  private pos: number;
  private readonly scale: number;

  constructor(hb: HBitmap, core: HBitmapCore, start: number) {
    this.core = core;
    this.scale = 2 ** hb.granularity;
    this.pos = Math.floor(Math.max(0, start) / this.scale);
  }

  /** First item of the next dirty chunk, or -1 when there is none. */
  next(): number {
    if (this.i === this.n) {
      if (this.pos >= this.core.nbits) return -1;
      this.n = this.core.collect(this.pos, this.core.nbits, this.batch);
      this.i = 0;
      if (this.n === 0) {
        this.pos = this.core.nbits;
        return -1;
      }
      this.pos = this.batch[this.n - 1]! + 1;
    }
    return this.batch[this.i++]! * this.scale;
  }
}
