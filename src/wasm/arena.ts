/**
 * The buffer arena: a buddy allocator over a fixed region of wasm memory.
 *
 * Guest I/O buffers and hbitmap levels are carved from here, so the kernels
 * read them in place. Block sizes are powers of two from 64 bytes (the
 * minimum, which also gives every block 64-byte alignment for the vector
 * loads) up to the whole arena; a free block's buddy is found by flipping
 * one bit of its offset, so freeing coalesces in O(log n). The books live in
 * JS (one Set of free offsets per order, one Map of live blocks), not in wasm
 * memory, so a kernel overrunning a buffer cannot corrupt the allocator.
 *
 *   arena offset 0                                             arenaBytes
 *   |-------------------------- order k -------------------------------|
 *   |------------ order k-1 ---------|------------ order k-1 -----------|
 *   | buf 4 KiB |free 4K| free 8 KiB |  bitmap 16 KiB   | free 16 KiB   |
 *
 * Rounding up to a power of two wastes at most half of a block; in exchange
 * allocation and free are a few Set operations and fragmentation cannot
 * strand space the way first-fit does under mixed buffer sizes. When a
 * request cannot be met the caller falls back to a plain Uint8Array (see
 * provider.ts), so exhaustion costs speed, never correctness.
 */
import { WasmError, hexAddr } from './errors.js';

export const MIN_ORDER = 6;

export class BuddyArena {
  /** Absolute address of the arena's first byte. */
  readonly base: number;
  readonly bytes: number;
  private readonly maxOrder: number;
  private readonly freeLists: Set<number>[] = [];
  private readonly live = new Map<number, number>();
  private usedBytes = 0;
  /** Arena offset past every byte ever handed out: above it memory is as the module started, zero. */
  private highWater = 0;

  constructor(base: number, bytes: number) {
    if ((bytes & (bytes - 1)) !== 0 || bytes < 1 << MIN_ORDER) throw new WasmError('EINVAL', `arena: size ${bytes} is not a power of two`);
    this.base = base;
    this.bytes = bytes;
    this.maxOrder = Math.log2(bytes);
    for (let k = 0; k <= this.maxOrder; k++) this.freeLists.push(new Set());
    this.freeLists[this.maxOrder]!.add(0);
  }

  /** Address of a block of at least `bytes` bytes (64-byte aligned), or -1 when none is free. */
  alloc(bytes: number): number {
    if (!(bytes > 0) || bytes > this.bytes) return -1;
    const order = Math.max(MIN_ORDER, 32 - Math.clz32(bytes - 1));
    let k = order;
    while (k <= this.maxOrder && this.freeLists[k]!.size === 0) k++;
    if (k > this.maxOrder) return -1;
    const list = this.freeLists[k]!;
    const off = list.values().next().value as number;
    list.delete(off);
    // Split down to the wanted order; the upper halves become free buddies.
    while (k > order) {
      k--;
      this.freeLists[k]!.add(off + 2 ** k);
    }
    this.live.set(off, order);
    this.usedBytes += 2 ** order;
    this.highWater = Math.max(this.highWater, off + 2 ** order);
    return this.base + off;
  }

  /**
   * alloc, with the first `bytes` bytes zero: only the part that was handed
   * out before is cleared (`mem` is the whole memory), so a large table in
   * fresh memory costs no pass over it.
   */
  allocZeroed(bytes: number, mem: Uint8Array): number {
    const hw = this.highWater;
    const addr = this.alloc(bytes);
    const off = addr - this.base;
    if (addr >= 0 && off < hw) mem.fill(0, addr, addr + Math.min(bytes, hw - off));
    return addr;
  }

  /** Returns a block obtained from `alloc`. */
  release(addr: number): void {
    let off = addr - this.base;
    let order = this.live.get(off);
    if (order === undefined) throw new WasmError('EINVAL', `arena: ${hexAddr(addr)} is not a live block (double free, or not from the arena)`);
    this.live.delete(off);
    this.usedBytes -= 2 ** order;
    while (order < this.maxOrder) {
      const buddy = off ^ (2 ** order);
      const list = this.freeLists[order]!;
      if (!list.has(buddy)) break;
      list.delete(buddy);
      off = Math.min(off, buddy);
      order++;
    }
    this.freeLists[order]!.add(off);
  }

  /** Whether `addr` is the start of a live block. */
  owns(addr: number): boolean {
    return this.live.has(addr - this.base);
  }

  /** Usable bytes of the live block at `addr` (its power-of-two size). */
  blockBytes(addr: number): number {
    const order = this.live.get(addr - this.base);
    return order === undefined ? 0 : 2 ** order;
  }

  stats(): { liveBlocks: number; usedBytes: number; freeBytes: number; largestFree: number } {
    let largest = 0;
    for (let k = this.maxOrder; k >= 0; k--) {
      if (this.freeLists[k]!.size > 0) {
        largest = 2 ** k;
        break;
      }
    }
    return { liveBlocks: this.live.size, usedBytes: this.usedBytes, freeBytes: this.bytes - this.usedBytes, largestFree: largest };
  }
}
