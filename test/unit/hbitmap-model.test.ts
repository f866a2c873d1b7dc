// HBitmap against a flat bit array under long random operation sequences,
// as QEMU's tests/unit/test-hbitmap.c checks its hbitmap: both bit cores
// (wasm and JS), several granularities, sizes that give 1 to 4 levels.
import { beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { initWasm, HBitmap } from '../../src/wasm/index.js';
import { rng } from '../helpers/random.js';

beforeAll(async () => {
  await initWasm();
});


/** The model: one byte per chunk. */
class Flat {
  bits: Uint8Array;
  constructor(public size: number, public gran: number) {
    this.bits = new Uint8Array(Math.ceil(size / gran));
  }
  fill(start: number, count: number, v: number): void {
    if (count === 0) return;
    this.bits.fill(v, Math.floor(start / this.gran), Math.floor((start + count - 1) / this.gran) + 1);
  }
  count(): number {
    let n = 0;
    for (const b of this.bits) n += b;
    return n * this.gran;
  }
  next(v: number, start: number, count: number): number {
    if (start >= this.size || count <= 0) return -1;
    const endBit = count > this.size - start ? this.bits.length : Math.floor((start + count - 1) / this.gran) + 1;
    const b = this.bits.indexOf(v, Math.floor(start / this.gran));
    return b < 0 || b >= endBit ? -1 : Math.max(start, b * this.gran);
  }
  area(start: number, end: number, max: number): { offset: number; bytes: number } | null {
    if (start >= this.size || end <= start) return null;
    end = Math.min(end, this.size);
    const s = this.next(1, start, end - start);
    if (s < 0) return null;
    const limit = s + Math.min(end - s, max);
    const z = this.next(0, s, limit - s);
    return { offset: s, bytes: (z >= 0 ? z : limit) - s };
  }
  truncate(size: number): void {
    const next = new Uint8Array(Math.ceil(size / this.gran));
    next.set(this.bits.subarray(0, Math.min(next.length, this.bits.length)));
    this.bits = next;
    this.size = size;
  }
}

function runOps(backend: 'wasm' | 'js', seed: number, ops: number, maxSize: number, segmentBits?: number): void {
  const r = rng(seed);
  const int = (n: number) => Math.floor(r() * n);
  const g = [0, 1, 3, 6, 9][int(5)]!;
  const gran = 2 ** g;
  let size = 1 + int(maxSize);
  const hb = new HBitmap(size, g, { backend, segmentBits });
  expect(hb.backend).toBe(backend);
  const model = new Flat(size, gran);
  // A second bitmap for merges, with the same or a coarser granularity.
  const pick = () => {
    const start = int(size);
    // Mostly short ranges, sometimes long ones that cross many words.
    const count = r() < 0.8 ? int(Math.min(size - start, 200 * gran) + 1) : int(size - start + 1);
    return [start, count] as const;
  };
  try {
    for (let op = 0; op < ops; op++) {
      const k = int(100);
      if (k < 25) {
        const [s, c] = pick();
        hb.set(s, c);
        model.fill(s, c, 1);
      } else if (k < 40) {
        // reset needs chunk alignment (the end may be the bitmap's end)
        const s = Math.floor(int(size) / gran) * gran;
        const c = r() < 0.2 ? size - s : Math.min(size - s, int(300) * gran);
        hb.reset(s, c);
        model.fill(s, c, 0);
      } else if (k < 50) {
        const i = int(size);
        expect(hb.get(i)).toBe(model.bits[Math.floor(i / gran)] === 1);
      } else if (k < 55) {
        expect(hb.count()).toBe(model.count());
      } else if (k < 70) {
        const [s, c] = pick();
        const cnt = r() < 0.3 ? Infinity : c;
        expect(hb.nextDirty(s, cnt), `nextDirty(${s}, ${cnt})`).toBe(model.next(1, s, cnt));
      } else if (k < 82) {
        const [s, c] = pick();
        const cnt = r() < 0.3 ? Infinity : c;
        expect(hb.nextZero(s, cnt), `nextZero(${s}, ${cnt})`).toBe(model.next(0, s, cnt));
      } else if (k < 92) {
        const [s, c] = pick();
        const max = r() < 0.5 ? Infinity : 1 + int(5 * gran);
        expect(hb.nextDirtyArea(s, s + c, max)).toEqual(model.area(s, s + c, max));
      } else if (k < 94) {
        const newSize = 1 + int(maxSize);
        hb.truncate(newSize);
        model.truncate(newSize);
        size = newSize;
        expect(hb.size).toBe(size);
        expect(hb.count()).toBe(model.count());
      } else if (k < 97) {
        // merge another random bitmap of the same size (same or different granularity and core)
        const g2 = r() < 0.6 ? g : [0, 2, 9][int(3)]!;
        const other = new HBitmap(size, g2, { backend: r() < 0.5 ? backend : backend === 'wasm' ? 'js' : 'wasm', segmentBits: r() < 0.5 ? segmentBits : undefined });
        const gran2 = 2 ** g2;
        for (let j = 0; j < 5; j++) {
          const [s, c] = pick();
          other.set(s, c);
          if (c > 0) {
            // The other bitmap marks whole chunks of its own granularity; clip to the size.
            const s2 = Math.floor(s / gran2) * gran2;
            const e2 = Math.min(size, (Math.floor((s + c - 1) / gran2) + 1) * gran2);
            model.fill(s2, e2 - s2, 1);
          }
        }
        hb.merge(other);
        other.free();
        expect(hb.count()).toBe(model.count());
      } else {
        // serialize a random aligned range, check the bit order, write it into a fresh bitmap
        const align = hb.serializationAlign();
        const s = Math.floor(int(size) / align) * align;
        const c = r() < 0.2 ? size - s : Math.min(size - s, align * (1 + int(4)));
        const buf = new Uint8Array(hb.serializationSize(s, c));
        hb.serializePart(buf, s, c);
        const firstBit = s / gran;
        for (let i = 0; i < buf.length * 8; i++) {
          const want = firstBit + i < model.bits.length ? model.bits[firstBit + i]! : 0;
          if (((buf[i >> 3]! >> (i & 7)) & 1) !== want) throw new Error(`serialized bit ${i} of [${s}, +${c}) is wrong`);
        }
        const copy = new HBitmap(size, g, { backend, segmentBits });
        copy.deserializePart(buf, s, c);
        const back = new Uint8Array(buf.length);
        copy.serializePart(back, s, c);
        expect(back).toEqual(buf);
        // Only the deserialized range is dirty in the copy.
        const inside = copy.nextDirtyArea(0, size);
        if (inside) expect(inside.offset).toBeGreaterThanOrEqual(s);
        copy.free();
      }
    }
    // A final full comparison.
    expect(hb.count()).toBe(model.count());
    const got: number[] = [];
    for (let it = hb.iter(), item = it.next(); item >= 0; item = it.next()) got.push(item);
    const want: number[] = [];
    model.bits.forEach((b, i) => b && want.push(i * gran));
    expect(got.length).toBe(want.length);
    if (got.some((v, i) => v !== want[i])) expect(got).toEqual(want);
  } finally {
    hb.free();
  }
}

describe.each(['wasm', 'js'] as const)('HBitmap (%s core) against a flat bit array', (backend) => {
  it('survives 100k random operations on small bitmaps (1-2 levels)', () => {
    let seeds = 0;
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 31 - 1 }), (seed) => {
        seeds++;
        runOps(backend, seed, 5000, 6000);
      }),
      { numRuns: 20 },
    );
    expect(seeds).toBe(20);
  });

  it('survives random operations on large bitmaps (3-4 levels)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 31 - 1 }), (seed) => {
        runOps(backend, seed, 1500, 1_200_000);
      }),
      { numRuns: 3 },
    );
  }, 60_000);
});

// iotest 190: bitmaps past one core's 2^31 bits are sparse runs of cores.
// The same random sequences with tiny segments cross segment bounds often.
describe.each(['wasm', 'js'] as const)('HBitmap cut into segments (%s cores) against a flat bit array', (backend) => {
  it('agrees with the model with segments of 64 to 512 bits', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 31 - 1 }), fc.constantFrom(64, 128, 512), (seed, seg) => {
        runOps(backend, seed, 3000, 6000, seg);
      }),
      { numRuns: 12 },
    );
  });
});
