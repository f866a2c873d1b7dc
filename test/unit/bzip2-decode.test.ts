/**
 * The TypeScript bzip2 decoder (src/codecs/bzip2-decode.ts, the browser's
 * DMG UDBZ path) against the bzip2 tool: whatever `bzip2 -1`/`-9` makes,
 * including several blocks, long runs, every byte value and concatenated
 * streams, decodes to the original bytes; a corrupted stream, a truncated
 * one and one longer than the caller's size are refused, never a crash.
 */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { bzip2Decompress, Bzip2Error } from '../../src/codecs/bzip2-decode.js';
import { seededBytes } from '../helpers/random.js';

const bz = (data: Uint8Array, level = '-9') => new Uint8Array(execFileSync('bzip2', ['-c', level], { input: data, maxBuffer: 1 << 28 }));

const runs = (): Uint8Array => {
  const out = new Uint8Array(700_000);
  let o = 0;
  for (let i = 0; o < out.length; i++) {
    const n = Math.min(out.length - o, (i * 37) % 300 + 1);
    out.fill(i % 7 === 0 ? 0 : (i * 13) & 0xff, o, o + n);
    o += n;
  }
  return out;
};

const CASES: [string, Uint8Array][] = [
  ['empty', new Uint8Array(0)],
  ['one byte', Uint8Array.of(0x42)],
  ['text', new TextEncoder().encode('the quick brown fox jumps over the lazy dog '.repeat(999))],
  ['2 MB of one byte (runs past 2^16)', new Uint8Array(2_000_000).fill(7)],
  ['random (several blocks at -1)', seededBytes(350_000, 3)],
  ['runs of every length', runs()],
  ['every byte value', Uint8Array.from({ length: 256 * 40 }, (_, i) => (i * 7919) & 0xff)],
];

describe('bzip2 decoder (TypeScript) against the bzip2 tool', () => {
  for (const [name, data] of CASES) {
    it(`${name}: -1 and -9 decode to the original`, () => {
      for (const level of ['-1', '-9']) expect(Buffer.from(bzip2Decompress(bz(data, level), data.length)).equals(Buffer.from(data))).toBe(true);
    });
  }

  it('concatenated streams decode to the concatenation', () => {
    const a = seededBytes(1000, 1);
    const b = new Uint8Array(5000).fill(9);
    const both = new Uint8Array([...bz(a), ...bz(b)]);
    expect(Buffer.from(bzip2Decompress(both, 6000)).equals(Buffer.concat([a, b]))).toBe(true);
  });

  it('refuses a flipped bit (CRC or structure), a truncated stream and output past the size given', () => {
    const data = seededBytes(20_000, 5);
    const z = bz(data);
    for (const at of [4, 12, 40, Math.floor(z.length / 2), z.length - 6]) {
      const bad = z.slice();
      bad[at]! ^= 0x10;
      expect(() => bzip2Decompress(bad, data.length), `flip at ${at}`).toThrow(Bzip2Error);
    }
    expect(() => bzip2Decompress(z.subarray(0, z.length - 20), data.length)).toThrow(/ends early/);
    expect(() => bzip2Decompress(z, data.length - 1)).toThrow(/more than 19999 bytes/);
    expect(() => bzip2Decompress(Uint8Array.of(1, 2, 3, 4), 10)).toThrow(/BZh/);
  });
});
