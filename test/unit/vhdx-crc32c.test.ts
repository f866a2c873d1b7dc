/**
 * VHDX's CRC-32C: the wasm kernel (slicing-by-8, asm/crc32c.ts), on views
 * into wasm memory and on staged buffers, against the JS byte loop at every
 * alignment and length, chained across pieces; the standard check value on
 * both paths.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { initWasm } from '../../src/runtime.js';
import { wasmCrc32cUpdate } from '../../src/wasm/index.js';
import { allocBuffer, freeBuffer } from '../../src/block/buffers.js';
import { crc32c, crc32cUpdate, crc32cUpdateJs, vhdxChecksum } from '../../src/formats/vhdx/crc32c.js';

const CHECK = new TextEncoder().encode('123456789');

beforeAll(async () => {
  await initWasm();
});

describe('vhdx crc32c', () => {
  it('gives the CRC-32C check value of "123456789" in JS and in the kernel', () => {
    expect(crc32c(CHECK)).toBe(0xe3069283);
    expect((crc32cUpdateJs(0xffffffff, CHECK) ^ 0xffffffff) >>> 0).toBe(0xe3069283);
    expect((wasmCrc32cUpdate(0xffffffff, CHECK)! ^ 0xffffffff) >>> 0).toBe(0xe3069283);
  });

  it('the kernel equals the byte loop at any offset, length and starting value, staged or in wasm memory', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 400 }), fc.nat(15), fc.nat(15), fc.integer({ min: 0, max: 0xffffffff }), (bytes, head, tail, seed) => {
        const from = Math.min(head, bytes.length);
        const view = bytes.subarray(from, Math.max(from, bytes.length - tail));
        const want = crc32cUpdateJs(seed, view);
        expect(wasmCrc32cUpdate(seed, view)).toBe(want);
        expect(crc32cUpdate(seed, view)).toBe(want);
        const inWasm = allocBuffer(view.length + 16);
        try {
          const v = inWasm.subarray(head, head + view.length);
          v.set(view);
          expect(wasmCrc32cUpdate(seed, v)).toBe(want);
        } finally {
          freeBuffer(inWasm);
        }
      }),
      { numRuns: 400 },
    );
  });

  it('a buffer larger than the staging area gives the byte loop\'s answer', () => {
    const big = new Uint8Array(2 * 1024 * 1024 + 77).map((_, i) => (i * 2654435761) >>> 24);
    expect(wasmCrc32cUpdate(0xffffffff, big)).toBe(crc32cUpdateJs(0xffffffff, big));
  });

  it('chains: the CRC of two pieces is the CRC of the whole', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 300 }), fc.nat(), (bytes, cut) => {
        const at = cut % bytes.length;
        expect(crc32cUpdate(crc32cUpdate(0xffffffff, bytes.subarray(0, at)), bytes.subarray(at))).toBe(crc32cUpdateJs(0xffffffff, bytes));
      }),
      { numRuns: 200 },
    );
  });

  it('vhdxChecksum reads the checksum field as zero', () => {
    const buf = new Uint8Array(4096).map((_, i) => (i * 13) & 0xff);
    const zeroed = buf.slice();
    zeroed.fill(0, 4, 8);
    expect(vhdxChecksum(buf, 4)).toBe((crc32cUpdateJs(0xffffffff, zeroed) ^ 0xffffffff) >>> 0);
  });
});
