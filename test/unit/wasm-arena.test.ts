import { beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BuddyArena } from '../../src/wasm/arena.js';
import { wasmArena, WasmError } from '../../src/wasm/index.js';
import { allocBuffer, freeBuffer, initWasm } from '../../src/index.js';

beforeAll(async () => {
  await initWasm();
});

describe('buddy arena', () => {
  it('keeps live blocks disjoint, aligned and intact under random alloc/free, and coalesces back to one block', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 1, max: 70_000 }), fc.nat()), { minLength: 1, maxLength: 300 }),
        (ops) => {
          const arena = new BuddyArena(1 << 20, 1 << 20);
          const mem = new Uint8Array(2 << 20);
          const live: { addr: number; bytes: number; tag: number }[] = [];
          let tag = 0;
          for (const [doAlloc, bytes, pick] of ops) {
            if (doAlloc || live.length === 0) {
              const addr = arena.alloc(bytes);
              if (addr < 0) {
                // Only fails when no free block is large enough.
                expect(arena.stats().largestFree).toBeLessThan(bytes);
                continue;
              }
              expect(addr % 64).toBe(0);
              expect(addr).toBeGreaterThanOrEqual(1 << 20);
              expect(addr + bytes).toBeLessThanOrEqual(2 << 20);
              tag = (tag % 250) + 1;
              mem.fill(tag, addr, addr + bytes);
              live.push({ addr, bytes, tag });
            } else {
              const [b] = live.splice(pick % live.length, 1);
              // Nobody wrote over it while it was live.
              expect(mem.subarray(b!.addr, b!.addr + b!.bytes).every((v) => v === b!.tag)).toBe(true);
              arena.release(b!.addr);
            }
          }
          for (const b of live) {
            expect(mem.subarray(b.addr, b.addr + b.bytes).every((v) => v === b.tag)).toBe(true);
            arena.release(b.addr);
          }
          expect(arena.stats()).toEqual({ liveBlocks: 0, usedBytes: 0, freeBytes: 1 << 20, largestFree: 1 << 20 });
        },
      ),
      { numRuns: 200 },
    );
  });

  it('refuses a double free and an address it never handed out', () => {
    const arena = new BuddyArena(4096, 4096);
    const a = arena.alloc(100);
    arena.release(a);
    expect(() => arena.release(a)).toThrow(WasmError);
    expect(() => arena.release(a + 64)).toThrow(/not a live block/);
  });
});

describe('arena-backed allocBuffer', () => {
  it('hands out views that stay valid while other buffers come and go', () => {
    const keep = allocBuffer(8192);
    keep.fill(0x5a);
    const mem = keep.buffer;
    const others: Uint8Array[] = [];
    for (let i = 0; i < 200; i++) {
      const b = allocBuffer(1 + ((i * 7919) % 300_000));
      b.fill(i & 0xff);
      others.push(b);
      if (i % 3 === 0) freeBuffer(others.shift()!);
    }
    for (const b of others) freeBuffer(b);
    expect(keep.buffer).toBe(mem);
    expect(keep.byteLength).toBe(8192);
    expect(keep.every((v) => v === 0x5a)).toBe(true);
    freeBuffer(keep);
  });

  it('falls back to a plain Uint8Array when the arena is exhausted, and frees it as a no-op', () => {
    const arena = wasmArena()!;
    const before = arena.stats();
    const huge = allocBuffer(before.freeBytes + 1); // larger than anything free
    expect(huge.length).toBe(before.freeBytes + 1);
    expect(huge.buffer).not.toBe(allocBuffer(16).buffer);
    freeBuffer(huge);
    // Exhaust the arena with big blocks, then ask for more.
    const big: Uint8Array[] = [];
    for (;;) {
      const b = allocBuffer(16 * 1024 * 1024);
      big.push(b);
      if (!arena.owns(b.byteOffset) || b.buffer !== big[0]!.buffer) break;
    }
    const last = big[big.length - 1]!;
    expect(last.buffer).not.toBe(big[0]!.buffer);
    last[0] = 1; // usable
    for (const b of big) freeBuffer(b);
  });

  it('a zero-length buffer is fine', () => {
    const b = allocBuffer(0);
    expect(b.length).toBe(0);
    freeBuffer(b);
  });
});
