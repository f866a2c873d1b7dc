import { beforeAll, describe, expect, it } from 'vitest';
import { initWasm, HBitmap } from '../../src/wasm/index.js';
import { WasmError } from '../../src/wasm/index.js';

beforeAll(async () => {
  await initWasm();
});

describe.each(['wasm', 'js'] as const)('HBitmap semantics (%s core)', (backend) => {
  it('counts whole chunks, including a partial last chunk, as QEMU does', () => {
    const hb = new HBitmap(1000, 9, { backend }); // two 512-byte chunks
    hb.set(999, 1);
    expect(hb.count()).toBe(512);
    hb.set(0, 1);
    expect(hb.count()).toBe(1024);
    expect(hb.get(511)).toBe(true);
    hb.free();
  });

  it('next-dirty and next-zero answer max(start, chunk start) and honour the limit', () => {
    const hb = new HBitmap(1 << 20, 12, { backend });
    hb.set(10_000, 1); // chunk 2: [8192, 12288)
    expect(hb.nextDirty(0)).toBe(8192);
    expect(hb.nextDirty(9000)).toBe(9000);
    expect(hb.nextDirty(0, 8192)).toBe(-1);
    expect(hb.nextDirty(0, 8193)).toBe(8192);
    expect(hb.nextDirty(12288)).toBe(-1);
    expect(hb.nextZero(8192)).toBe(12288);
    expect(hb.nextZero(8192, 4096)).toBe(-1);
    expect(hb.nextZero(100)).toBe(100);
    expect(hb.nextDirtyArea(0, 1 << 20)).toEqual({ offset: 8192, bytes: 4096 });
    expect(hb.nextDirtyArea(9000, 10_000)).toEqual({ offset: 9000, bytes: 1000 });
    expect(hb.nextDirtyArea(0, 1 << 20, 100)).toEqual({ offset: 8192, bytes: 100 });
    hb.free();
  });

  it('finds a lone bit at the far end of an empty 2^24-bit map, and nothing in an empty one', () => {
    const size = 2 ** 24 * 512;
    const hb = new HBitmap(size, 9, { backend });
    expect(hb.nextDirty(0)).toBe(-1);
    hb.set(size - 1, 1);
    expect(hb.nextDirty(0)).toBe(size - 512);
    expect(hb.nextDirtyArea(0, size)).toEqual({ offset: size - 512, bytes: 512 });
    hb.free();
  });

  it('refuses a reset that would clear part of a chunk, and ranges past the end', () => {
    const hb = new HBitmap(4096, 10, { backend });
    hb.set(0, 4096);
    expect(() => hb.reset(512, 1024)).toThrow(WasmError);
    expect(() => hb.set(4000, 200)).toThrow(/outside the bitmap/);
    hb.reset(1024, 1024);
    expect([...hb.dirtyAreas()]).toEqual([
      { offset: 0, bytes: 1024 },
      { offset: 2048, bytes: 2048 },
    ]);
    hb.free();
  });

  it('serializes in qcow2 bitmap order: bit i of the little-endian bytes is chunk i', () => {
    const hb = new HBitmap(200 * 65536, 16, { backend });
    hb.set(0, 1); // chunk 0
    hb.set(9 * 65536, 65536); // chunk 9
    hb.set(130 * 65536, 1); // chunk 130
    const buf = new Uint8Array(hb.serializationSize(0, hb.size));
    expect(buf.length).toBe(32); // 200 chunks → four 64-bit words
    hb.serializePart(buf, 0, hb.size);
    const expected = new Uint8Array(32);
    expected[0] = 0x01;
    expected[1] = 0x02;
    expected[16] = 0x04;
    expect(buf).toEqual(expected);
    expect(() => hb.serializePart(buf, 65536, 64 * 65536)).toThrow(/not aligned/);
    hb.free();
  });

  it('truncate keeps the bits below the new end, drops the rest, and grows clean', () => {
    const hb = new HBitmap(10_000, 9, { backend });
    hb.set(0, 10_000);
    hb.truncate(1200); // 3 chunks, the last partial
    expect(hb.count()).toBe(1536);
    hb.truncate(1 << 20);
    expect(hb.count()).toBe(1536);
    expect(hb.nextZero(0)).toBe(1536);
    hb.free();
  });
});
