/**
 * The L2 table cache: slices of L2 tables kept in a bounded LRU (QEMU's
 * Qcow2Cache with l2-cache-entry-size).
 *
 * A slice is `entrySize` bytes of one L2 table, keyed by its host offset.
 * Slices come from allocBuffer so the wasm arena can back them (the L2 scan
 * kernel then reads them in place). A slice is pinned while a caller uses it
 * (`acquire` … `release`) and is never evicted or freed while pinned, so a
 * concurrent request's load cannot recycle a buffer another request is
 * scanning. Concurrent loads of the same slice share one read.
 *
 * The write path adds dirty slices: `markDirty` keeps a slice from being
 * evicted before `flushDirty` has written it.
 */
import { allocBuffer, freeBuffer } from '../../block/buffers.js';

export interface L2Slice {
  /** Host offset of the slice's first byte. */
  readonly offset: number;
  readonly data: Uint8Array;
  pins: number;
  dirty: boolean;
}

export type SliceLoader = (offset: number, into: Uint8Array) => Promise<void>;

export class L2Cache {
  private readonly slices = new Map<number, L2Slice>();
  private readonly loading = new Map<number, Promise<L2Slice>>();
  /**
   * Buffers of evicted slices, reused by the next load. Recycling (rather
   * than free + alloc) keeps the cache on the same pages of the arena: a
   * streaming scan over a large image otherwise walks the allocator across
   * fresh pages and the process's resident memory grows well past the cache size.
   */
  private readonly spare: Uint8Array[] = [];

  /**
   * @param entrySize bytes per slice (a power of two, at most one cluster)
   * @param capacity slices kept at most (pinned and dirty slices may exceed it briefly)
   * @param load reads a slice from the image (it validates the table offset)
   */
  constructor(
    readonly entrySize: number,
    readonly capacity: number,
    private readonly load: SliceLoader,
  ) {}

  get size(): number {
    return this.slices.size;
  }

  /** The slice at `offset`, pinned; call `release` when done with it. */
  async acquire(offset: number): Promise<L2Slice> {
    const hit = this.slices.get(offset);
    if (hit) {
      // Re-insert: Map iteration order is the LRU order.
      this.slices.delete(offset);
      this.slices.set(offset, hit);
      hit.pins++;
      return hit;
    }
    let pending = this.loading.get(offset);
    if (!pending) {
      pending = this.fill(offset);
      this.loading.set(offset, pending);
    }
    const s = await pending;
    // Another load may have evicted (and freed) it before we resumed: load it again.
    if (this.slices.get(offset) !== s) return this.acquire(offset);
    s.pins++;
    return s;
  }

  release(s: L2Slice): void {
    s.pins--;
    if (this.slices.size > this.capacity) this.evict();
  }

  /** The write path: the slice holds changes not yet written. */
  markDirty(s: L2Slice): void {
    s.dirty = true;
  }

  /** Writes every dirty slice with `write` and marks it clean. */
  async flushDirty(write: (offset: number, data: Uint8Array) => Promise<void>): Promise<void> {
    for (const s of this.slices.values()) {
      if (!s.dirty) continue;
      await write(s.offset, s.data);
      s.dirty = false;
    }
    if (this.slices.size > this.capacity) this.evict();
  }

  /** True when some slice holds changes not yet written. */
  hasDirty(): boolean {
    for (const s of this.slices.values()) if (s.dirty) return true;
    return false;
  }

  /** Lays the cached slices of the table at `tableOffset` over `into` (one whole table). */
  async copyCached(tableOffset: number, into: Uint8Array): Promise<void> {
    for (const [k, s] of this.slices) {
      if (k >= tableOffset && k < tableOffset + into.length) into.set(s.data, k - tableOffset);
    }
  }

  /**
   * Caches the slices of a table the caller has just written whole (a new L2
   * table, QEMU's qcow2_cache_get_empty): using them loads nothing. A slice
   * already cached (a reused cluster) takes the new bytes.
   */
  seed(tableOffset: number, table: Uint8Array): void {
    for (let o = 0; o < table.length; o += this.entrySize) {
      const bytes = table.subarray(o, o + this.entrySize);
      const hit = this.slices.get(tableOffset + o);
      if (hit) {
        hit.data.set(bytes);
        continue;
      }
      const data = this.spare.pop() ?? allocBuffer(this.entrySize);
      data.set(bytes);
      this.slices.set(tableOffset + o, { offset: tableOffset + o, data, pins: 0, dirty: false });
    }
    if (this.slices.size > this.capacity) this.evict();
  }

  /** Drops the slices of [offset, offset + bytes) (a freed or rewritten L2 table). */
  invalidate(offset: number, bytes: number): void {
    for (const [k, s] of this.slices) {
      if (k >= offset && k < offset + bytes && s.pins === 0) {
        this.slices.delete(k);
        freeBuffer(s.data);
      }
    }
  }

  /** Frees every unpinned slice (dirty ones too: call flushDirty first). */
  clear(): void {
    for (const [k, s] of this.slices) {
      if (s.pins > 0) continue;
      this.slices.delete(k);
      freeBuffer(s.data);
    }
    for (const b of this.spare.splice(0)) freeBuffer(b);
  }

  private async fill(offset: number): Promise<L2Slice> {
    const data = this.spare.pop() ?? allocBuffer(this.entrySize);
    try {
      await this.load(offset, data);
    } catch (e) {
      freeBuffer(data);
      this.loading.delete(offset);
      throw e;
    }
    const s: L2Slice = { offset, data, pins: 0, dirty: false };
    this.loading.delete(offset);
    this.slices.set(offset, s);
    // Evict before the caller pins it: the new slice is the most recent, so it survives.
    if (this.slices.size > this.capacity) this.evict();
    return s;
  }

  private evict(): void {
    for (const [k, s] of this.slices) {
      if (this.slices.size <= this.capacity) break;
      if (s.pins > 0 || s.dirty) continue;
      this.slices.delete(k);
      if (this.spare.length < 4) this.spare.push(s.data);
      else freeBuffer(s.data);
    }
  }
}
