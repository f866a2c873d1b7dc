import { beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { wasmBufferIsZero, wasmReady } from '../../src/wasm/index.js';
import { initWasm } from '../../src/runtime.js';
import { allocBuffer, bufferIsZero, bufferIsZeroReference, freeBuffer } from '../../src/block/buffers.js';

beforeAll(async () => {
  await initWasm();
});

/** A zero view of `len` bytes at `misalign` bytes past a 64-byte boundary, inside wasm memory. */
function wasmView(len: number, misalign: number): { view: Uint8Array; block: Uint8Array } {
  const block = allocBuffer(len + misalign + 32);
  block.fill(0);
  return { view: block.subarray(misalign, misalign + len), block };
}

describe('wasm zero detection (buffer_is_zero)', () => {
  it('is installed as the buffer provider: allocBuffer gives views into wasm memory', () => {
    expect(wasmReady()).toBe(true);
    const b = allocBuffer(1000);
    const other = allocBuffer(1000);
    expect(b.buffer).toBe(other.buffer);
    expect(b.buffer).not.toBeInstanceOf(SharedArrayBuffer);
    expect(b.byteOffset % 64).toBe(0);
    freeBuffer(b);
    freeBuffer(other);
  });

  it('agrees with the JS reference for random lengths, alignments and contents (in wasm memory)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 5000 }),
        fc.integer({ min: 0, max: 63 }),
        fc.option(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { nil: undefined }),
        (len, misalign, poke) => {
          const { view, block } = wasmView(len, misalign);
          // Bytes just outside the view are non-zero: the kernel must not read them.
          block[misalign - 1] = misalign > 0 ? 0xff : 0;
          block[misalign + len] = 0xff;
          if (poke && len > 0) view[poke[0] % len] = poke[1];
          expect(wasmBufferIsZero(view)).toBe(bufferIsZeroReference(view));
          expect(bufferIsZero(view)).toBe(bufferIsZeroReference(view));
          freeBuffer(block);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('finds a single non-zero byte at every position of every short length and alignment', () => {
    for (let misalign = 0; misalign < 16; misalign++) {
      for (let len = 0; len <= 300; len += len < 64 ? 1 : 7) {
        const { view, block } = wasmView(len, misalign);
        block[misalign + len] = 1;
        if (misalign > 0) block[misalign - 1] = 1;
        expect(wasmBufferIsZero(view)).toBe(true);
        for (let i = 0; i < len; i++) {
          view[i] = 0x80;
          expect(wasmBufferIsZero(view), `len ${len} misalign ${misalign} at ${i}`).toBe(false);
          view[i] = 0;
        }
        freeBuffer(block);
      }
    }
  });

  it('finds one non-zero byte in the head, each unrolled lane, the vector tail and the last byte of a large buffer', () => {
    const len = 1 << 20;
    for (const misalign of [0, 1, 7, 15, 16, 33]) {
      const { view, block } = wasmView(len, misalign);
      expect(wasmBufferIsZero(view)).toBe(true);
      const positions = [0, 15, 16, 17, 127, 128, 129, 200, 4096 + 64, len / 2 + 3, len - 129, len - 17, len - 16, len - 1];
      for (const p of positions) {
        view[p] = 1;
        expect(wasmBufferIsZero(view), `misalign ${misalign} at ${p}`).toBe(false);
        view[p] = 0;
      }
      freeBuffer(block);
    }
  });

  it('agrees with the reference on buffers outside wasm memory (staged and JS paths)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 3_000_000 }),
        fc.integer({ min: 0, max: 15 }),
        fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { nil: undefined }),
        (len, misalign, where) => {
          const backing = new Uint8Array(len + misalign);
          const view = backing.subarray(misalign);
          if (where !== undefined && len > 0) view[Math.min(len - 1, Math.floor(where * len))] = 3;
          expect(wasmBufferIsZero(view)).toBe(where === undefined || len === 0);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('scans a non-zero byte just past each staging chunk boundary of a foreign buffer', () => {
    const len = 3 * 1024 * 1024 + 5;
    const buf = new Uint8Array(len);
    for (const p of [255, 256, 256 + 983039, 256 + 983040, 256 + 983041, len - 1]) {
      buf[p] = 9;
      expect(wasmBufferIsZero(buf), `at ${p}`).toBe(false);
      buf[p] = 0;
    }
    expect(wasmBufferIsZero(buf)).toBe(true);
  });
});
