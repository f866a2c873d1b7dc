import { describe, expect, it } from 'vitest';
import * as zlib from 'node:zlib';
import { nodeInflateExact } from '../../src/codecs/inflate-node.js';
import { pakoInflateExact } from '../../src/codecs/zlib-exact.js';
import { seededBytes } from '../helpers/random.js';

// Node's inflate for vmdk grains and dmg/cloop chunks: one reused zlib handle writing into the
// caller's buffer, and the one-shot inflateSync where the handle is not exposed. Both must answer
// as the environment-neutral pako path does.
const data = seededBytes(65536, 70).map((b, i) => (i % 3 ? b : 0));
const z = new Uint8Array(zlib.deflateSync(data));
const noHandle = () => ({ ...zlib, Inflate: class extends zlib.Inflate { _handle = undefined; } }) as unknown as typeof zlib;

describe.each([
  ['reused handle', () => nodeInflateExact(() => zlib)],
  ['one-shot fallback', () => nodeInflateExact(noHandle)],
])('nodeInflateExact (%s)', (_name, make) => {
  const cases: [string, Uint8Array, number][] = [
    ['exact', z, 65536],
    ['long stream', new Uint8Array(zlib.deflateSync(new Uint8Array(1 << 22))), 512],
    ['short stream', z, 70000],
    ['truncated', z.subarray(0, z.length - 30), 65536],
    ['truncated trailer', z.subarray(0, z.length - 2), 65536],
    ['garbage', seededBytes(100, 71), 65536],
    ['trailing bytes', new Uint8Array([...z, 1, 2, 3]), 65536],
  ];
  it.each(cases)('%s: the same answer as pako, and the same bytes', (_c, input, size) => {
    const inflate = make();
    const a = new Uint8Array(size);
    const b = new Uint8Array(size);
    const want = pakoInflateExact(input, b);
    const got = inflate(input, a);
    expect(got === null).toBe(want === null);
    if (want === null) expect(Buffer.compare(a, b)).toBe(0);
    else expect(got).toMatch(/more than|inflates to \d+ bytes, not|does not inflate|truncated/);
  });

  it('a stream after a refused one inflates (the handle is reset)', () => {
    const inflate = make();
    for (const bad of [seededBytes(100, 72), z.subarray(0, 100), z]) {
      expect(inflate(bad, new Uint8Array(bad === z ? 1000 : 65536))).not.toBeNull();
      const out = new Uint8Array(65536);
      expect(inflate(z, out)).toBeNull();
      expect(Buffer.compare(out, data)).toBe(0);
    }
  });

  it('writes into a view at an offset of a larger buffer, and reads from one', () => {
    const inflate = make();
    const host = new Uint8Array(z.length + 40);
    host.set(z, 17);
    const big = new Uint8Array(65536 * 3).fill(9);
    expect(inflate(host.subarray(17, 17 + z.length), big.subarray(65536, 131072))).toBeNull();
    expect(Buffer.compare(big.subarray(65536, 131072), data)).toBe(0);
    expect(big[65535]).toBe(9);
    expect(big[131072]).toBe(9);
  });
});
