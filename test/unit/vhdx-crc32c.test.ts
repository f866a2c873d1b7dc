/**
 * VHDX's CRC-32C: the slicing-by-8 loop (words where the buffer is 4-byte
 * aligned, bytes at the head and tail) against the one-table byte loop, at
 * every alignment and length, chained across pieces; and the standard check
 * value.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { crc32c, crc32cBytewise, crc32cUpdate, vhdxChecksum } from '../../src/formats/vhdx/crc32c.js';

describe('vhdx crc32c', () => {
  it('gives the CRC-32C check value of "123456789"', () => {
    expect(crc32c(new TextEncoder().encode('123456789'))).toBe(0xe3069283);
  });

  it('equals the byte loop at any offset, length and starting value', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 300 }), fc.nat(7), fc.nat(7), fc.integer({ min: 0, max: 0xffffffff }), (bytes, head, tail, seed) => {
        const view = bytes.subarray(Math.min(head, bytes.length), Math.max(Math.min(head, bytes.length), bytes.length - tail));
        expect(crc32cUpdate(seed, view)).toBe(crc32cBytewise(seed, view));
      }),
      { numRuns: 500 },
    );
  });

  it('chains: the CRC of two pieces is the CRC of the whole', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 200 }), fc.nat(), (bytes, cut) => {
        const at = cut % bytes.length;
        const whole = crc32cUpdate(0xffffffff, bytes);
        expect(crc32cUpdate(crc32cUpdate(0xffffffff, bytes.subarray(0, at)), bytes.subarray(at))).toBe(whole);
      }),
      { numRuns: 200 },
    );
  });

  it('vhdxChecksum reads the checksum field as zero', () => {
    const buf = new Uint8Array(4096).map((_, i) => (i * 13) & 0xff);
    const zeroed = buf.slice();
    zeroed.fill(0, 4, 8);
    expect(vhdxChecksum(buf, 4)).toBe(crc32c(zeroed));
  });
});
