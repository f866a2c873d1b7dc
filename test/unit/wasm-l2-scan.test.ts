import { beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { wasmL2EntryKind, wasmL2ScanRun } from '../../src/wasm/index.js';
import { initWasm } from '../../src/runtime.js';
import { l2EntryKind, l2ScanRun } from '../../src/formats/qcow2/l2-scan.js';
import { l2EntryBytes } from '../../src/formats/qcow2/l2-entry.js';
import { allocBuffer, freeBuffer } from '../../src/block/buffers.js';

beforeAll(async () => {
  await initWasm();
});

const OFFSET_MASK = 0x00ff_ffff_ffff_fe00n;

/** One way an entry may differ from "previous + one cluster". */
type Perturb = 'none' | 'copied' | 'kind' | 'gap' | 'reserved' | 'zero-bit' | 'compressed' | 'bitmap' | 'offset-bit';

interface SliceSpec {
  extended: boolean;
  clusterBits: number;
  entries: number;
  baseHi: bigint; // flags of the first entry (bits 56-63 and 0-8)
  baseOffset: bigint;
  bitmap: bigint;
  perturb: { at: number; how: Perturb; salt: number }[];
}

function buildSlice(spec: SliceSpec): Uint8Array {
  const esz = l2EntryBytes(spec.extended);
  const out = new Uint8Array(spec.entries * esz);
  const dv = new DataView(out.buffer);
  const cs = 1n << BigInt(spec.clusterBits);
  const pert = new Map(spec.perturb.map((p) => [p.at, p]));
  let offset = spec.baseOffset;
  for (let i = 0; i < spec.entries; i++) {
    let e = spec.baseHi | (offset & OFFSET_MASK);
    let bm = spec.bitmap;
    const p = pert.get(i);
    if (p) {
      switch (p.how) {
        case 'copied': e ^= 1n << 63n; break;
        case 'kind': e = BigInt(p.salt & 1); break;
        case 'gap': offset += cs * BigInt(1 + (p.salt % 3)); e = spec.baseHi | (offset & OFFSET_MASK); break;
        // Reserved bits 1-8 and 56-61: no effect on kind or contiguity.
        case 'reserved': e ^= 1n << BigInt([1, 2, 3, 4, 5, 6, 7, 8, 56, 57, 58, 59, 60, 61][p.salt % 14]!); break;
        case 'offset-bit': e ^= 1n << BigInt(9 + (p.salt % 47)); break;
        case 'zero-bit': e ^= 1n; break;
        case 'compressed': e |= 1n << 62n; break;
        case 'bitmap': bm ^= 1n << BigInt(p.salt % 64); break;
        default: break;
      }
    }
    dv.setBigUint64(i * esz, e);
    if (spec.extended) dv.setBigUint64(i * esz + 8, bm);
    offset += cs;
  }
  return out;
}

const specArb: fc.Arbitrary<SliceSpec> = fc
  .record({
    extended: fc.boolean(),
    clusterBits: fc.integer({ min: 9, max: 21 }),
    entries: fc.integer({ min: 1, max: 600 }),
    flags: fc.constantFrom(0n, 1n << 63n, 1n, (1n << 63n) | 1n, 1n << 62n, 0x3n << 56n),
    offsetKind: fc.constantFrom('none', 'small', 'high'),
    offsetSeed: fc.bigInt({ min: 1n, max: (1n << 40n) - 1n }),
    bitmap: fc.constantFrom(0n, 0xffffffffn, 0xffffffff00000000n, 0x0000ffff0000ffffn, 0xffffffffffffffffn),
    perturb: fc.array(
      fc.record({
        at: fc.nat(),
        how: fc.constantFrom<Perturb>('none', 'copied', 'kind', 'gap', 'reserved', 'zero-bit', 'compressed', 'bitmap', 'offset-bit'),
        salt: fc.nat(),
      }),
      { maxLength: 6 },
    ),
  })
  .map((r) => {
    const cs = 1n << BigInt(r.clusterBits);
    const baseOffset =
      r.offsetKind === 'none' ? 0n : r.offsetKind === 'small' ? r.offsetSeed * cs : ((1n << 56n) - cs * BigInt(r.entries)) + cs * (r.offsetSeed % 4n) - cs * 2n;
    return {
      extended: r.extended,
      clusterBits: r.clusterBits,
      entries: r.entries,
      baseHi: r.flags,
      baseOffset: baseOffset < 0n ? 0n : baseOffset,
      bitmap: r.bitmap,
      perturb: r.perturb.map((p) => ({ ...p, at: p.at % r.entries })),
    };
  });

/** Copies `data` into a wasm-memory buffer at `misalign` bytes past an arena block's start. */
function inWasm(data: Uint8Array, misalign: number): { view: Uint8Array; block: Uint8Array } {
  const block = allocBuffer(data.length + misalign);
  const view = block.subarray(misalign, misalign + data.length);
  view.set(data);
  return { view, block };
}

describe('wasm L2 scan against src/formats/qcow2/l2-scan.ts', () => {
  it('returns the reference run length for random slices, starts, ends and matchCopied', () => {
    fc.assert(
      fc.property(specArb, fc.nat(), fc.nat(), fc.boolean(), fc.integer({ min: 0, max: 7 }), (spec, a, b, matchCopied, misalign) => {
        const data = buildSlice(spec);
        const { view, block } = inWasm(data, misalign);
        const n = spec.entries;
        const start = a % (n + 1);
        const end = start + (b % (n + 1 - start));
        for (const [s, e] of [[start, end], [0, n], [start, n]] as const) {
          const want = l2ScanRun(data, s, e, spec.extended, spec.clusterBits, matchCopied);
          expect(wasmL2ScanRun(view, s, e, spec.extended, spec.clusterBits, matchCopied), `wasm memory ${s}..${e}`).toBe(want);
          expect(wasmL2ScanRun(data, s, e, spec.extended, spec.clusterBits, matchCopied), `staged ${s}..${e}`).toBe(want);
        }
        for (let i = 0; i < n; i += 7) expect(wasmL2EntryKind(view, i, spec.extended)).toBe(l2EntryKind(data, i, spec.extended));
        freeBuffer(block);
      }),
      { numRuns: 1500 },
    );
  });

  it('answers every start of a slice like the reference (long runs broken at a few places)', () => {
    fc.assert(
      fc.property(specArb, fc.boolean(), (spec, matchCopied) => {
        const data = buildSlice(spec);
        const { view, block } = inWasm(data, 0);
        for (let s = 0; s < spec.entries; s++) {
          const want = l2ScanRun(data, s, spec.entries, spec.extended, spec.clusterBits, matchCopied);
          expect(wasmL2ScanRun(view, s, spec.entries, spec.extended, spec.clusterBits, matchCopied)).toBe(want);
        }
        freeBuffer(block);
      }),
      { numRuns: 150 },
    );
  });

  it('follows a contiguous run across staging chunks of a slice outside wasm memory', () => {
    const entries = 300_000; // 2.4 MB of standard entries: three staging chunks
    const data = buildSlice({ extended: false, clusterBits: 16, entries, baseHi: 1n << 63n, baseOffset: 1n << 20n, bitmap: 0n, perturb: [{ at: 250_000, how: 'gap', salt: 0 }] });
    expect(wasmL2ScanRun(data, 0, entries, false, 16, true)).toBe(250_000);
    expect(wasmL2ScanRun(data, 3, entries, false, 16, true)).toBe(l2ScanRun(data, 3, entries, false, 16, true));
    expect(wasmL2ScanRun(data, 250_000, entries, false, 16, true)).toBe(50_000);
  });

  it('stops a run whose host offset would carry out of bits 9-55', () => {
    const cs = 1n << 16n;
    const data = buildSlice({ extended: false, clusterBits: 16, entries: 8, baseHi: 0n, baseOffset: (1n << 56n) - 4n * cs, bitmap: 0n, perturb: [] });
    const want = l2ScanRun(data, 0, 8, false, 16, false);
    expect(want).toBe(4);
    const { view, block } = inWasm(data, 0);
    expect(wasmL2ScanRun(view, 0, 8, false, 16, false)).toBe(want);
    freeBuffer(block);
  });

  it('ends offset-carrying runs after one entry when the cluster size cannot fit the offset field', () => {
    // qcow2 only has 2^9..2^21-byte clusters; outside 9..55 bits no offset can follow another.
    for (const extended of [false, true]) {
      for (const [baseHi, bitmap] of [[0n, 0xffffffffn], [1n, 0xffffffff00000000n], [0n, 0n]] as const) {
        for (const clusterBits of [0, 1, 8, 56, 60]) {
          const data = buildSlice({ extended, clusterBits, entries: 40, baseHi, baseOffset: 1n << 30n, bitmap, perturb: [] });
          const { view, block } = inWasm(data, 3);
          for (const start of [0, 5]) {
            const want = l2ScanRun(data, start, 40, extended, clusterBits, false);
            expect(wasmL2ScanRun(view, start, 40, extended, clusterBits, false), `cb ${clusterBits} ext ${extended}`).toBe(want);
          }
          freeBuffer(block);
        }
      }
    }
  });

  it('follows long runs of every kind and breaks them at any lane of the vector loop', () => {
    // 4096 entries: the SIMD loop does almost all of the work; one perturbed
    // entry at each position mod 16 must end the run exactly there (or not at all).
    const kinds: { extended: boolean; baseHi: bigint; baseOffset: bigint; bitmap: bigint }[] = [
      { extended: false, baseHi: 1n << 63n, baseOffset: 0xfff0_0000n, bitmap: 0n }, // normal, crossing 4 GiB
      { extended: false, baseHi: 1n, baseOffset: 1n << 40n, bitmap: 0n }, // zero-alloc
      { extended: false, baseHi: 0n, baseOffset: 0n, bitmap: 0n }, // unallocated
      { extended: false, baseHi: 1n, baseOffset: 0n, bitmap: 0n }, // zero, no offset
      { extended: false, baseHi: 1n << 62n, baseOffset: 1n << 20n, bitmap: 0n }, // compressed
      { extended: true, baseHi: 0n, baseOffset: 0xfff0_0000n, bitmap: 0xffffffffn }, // normal
      { extended: true, baseHi: 0n, baseOffset: 1n << 20n, bitmap: 0n }, // unallocated-alloc
      { extended: true, baseHi: 0n, baseOffset: 0n, bitmap: 0xffffffff00000000n }, // zero
      { extended: true, baseHi: 1n << 62n, baseOffset: 1n << 20n, bitmap: 0x1234n }, // compressed
    ];
    const hows: Perturb[] = ['copied', 'kind', 'gap', 'reserved', 'zero-bit', 'compressed', 'bitmap', 'offset-bit'];
    const entries = 4096;
    for (const k of kinds) {
      for (const how of hows) {
        for (let lane = 0; lane < 16; lane++) {
          const at = 2000 + lane;
          const data = buildSlice({ ...k, clusterBits: 16, entries, perturb: [{ at, how, salt: lane * 7 + 3 }] });
          const { view, block } = inWasm(data, lane & 7);
          for (const matchCopied of [false, true]) {
            const want = l2ScanRun(data, 0, entries, k.extended, 16, matchCopied);
            expect(wasmL2ScanRun(view, 0, entries, k.extended, 16, matchCopied), `${how} at ${at}`).toBe(want);
          }
          freeBuffer(block);
        }
      }
    }
  });
});
