import { beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { blockRunEndJs, wasmBlockRunEnd, wasmBufferIsZero, wasmReady } from '../../src/wasm/index.js';
import { initWasm } from '../../src/runtime.js';
import { allocBuffer, bufferIsZero, bufferIsZeroReference, freeBuffer, zeroRunEnd } from '../../src/block/buffers.js';

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

describe('run of zero / data blocks (convert -S)', () => {
  /** The model: block by block with the reference zero test. */
  function modelRunEnd(buf: Uint8Array, from: number, block: number, zero: boolean): number {
    let end = from;
    while (end < buf.length) {
      const next = Math.min(buf.length, end + block);
      if (bufferIsZeroReference(buf.subarray(end, next)) !== zero) return end;
      end = next;
    }
    return buf.length;
  }

  it('the kernel, the JS loop and the provider agree with the model on random block patterns', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(512, 4096, 8192),
        fc.array(fc.constantFrom('zero', 'data', 'late', 'last'), { minLength: 1, maxLength: 24 }),
        fc.integer({ min: 0, max: 4095 }),
        fc.integer({ min: 0, max: 3 }),
        fc.boolean(),
        (block, kinds, tail, startBlock, zero) => {
          // Blocks: all zeros, data from the first byte, data whose first byte is zero (a set byte inside), data only in the last byte.
          const len = kinds.length * block + (tail % block);
          const { view, block: backing } = wasmView(len, 0);
          backing[len] = 0xff;
          kinds.forEach((k, i) => {
            const at = i * block;
            if (k === 'data') view[at] = 1 + (i % 255);
            else if (k === 'late') view[at + 1 + ((i * 37) % (block - 1))] = 7;
            else if (k === 'last') view[at + block - 1] = 9;
          });
          const from = Math.min(len, startBlock * block);
          const want = modelRunEnd(view, from, block, zero);
          expect(wasmBlockRunEnd(view, from, block, zero)).toBe(want);
          expect(blockRunEndJs(view, from, block, zero)).toBe(want);
          expect(zeroRunEnd(view, from, block, zero)).toBe(want);
          // A buffer outside wasm memory takes the JS loop, same answer.
          expect(wasmBlockRunEnd(view.slice(), from, block, zero)).toBe(want);
          freeBuffer(backing);
        },
      ),
      { numRuns: 400 },
    );
  });

  it('a short last block counts as a block of its own', () => {
    const { view, block } = wasmView(4096 + 100, 0);
    expect(wasmBlockRunEnd(view, 0, 4096, true)).toBe(4196);
    view[4096 + 99] = 1;
    expect(wasmBlockRunEnd(view, 0, 4096, true)).toBe(4096);
    expect(wasmBlockRunEnd(view, 4096, 4096, false)).toBe(4196);
    freeBuffer(block);
  });
});
