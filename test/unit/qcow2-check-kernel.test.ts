/**
 * qcow2 check's kernels (src/formats/qcow2/check-kernel.ts): the wasm ones
 * (asm/refcount.ts) and their JS twins run over the same crafted L2 tables
 * and refcount blocks, healthy and corrupt, and must agree on every stop,
 * count, mark and verdict. A small model of QEMU's rules says which entries
 * are plain (the kernels take them) and which must be left to the caller.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { initWasm } from '../../src/runtime.js';
import { wasmBufferProvider } from '../../src/wasm/index.js';
import { l2CountMasks, RefTally } from '../../src/formats/qcow2/check-kernel.js';
import { setRefcountEntry } from '../../src/formats/qcow2/refcount-codec.js';

beforeAll(async () => {
  await initWasm();
});

const COPIED = 1n << 63n;
const COMPRESSED = 1n << 62n;

/** A copy of `bytes` in wasm memory (the kernels only read tables there). */
function inWasm(bytes: Uint8Array): Uint8Array {
  const b = wasmBufferProvider()!.alloc(bytes.length);
  b.set(bytes);
  return b;
}

type Kind = 'plain' | 'plain-copied' | 'unalloc' | 'zero-plain' | 'zero-alloc' | 'compressed' | 'reserved' | 'unaligned' | 'past-end' | 'bad-bitmap' | 'dup';

interface Spec {
  clusterBits: number;
  extended: boolean;
  entries: { kind: Kind; cluster: number }[];
}

/** The entry for `kind` at host cluster `cluster` (and its bitmap word for extended tables). */
function entryFor(kind: Kind, cluster: number, cb: number, limit: number): [bigint, bigint] {
  const off = BigInt(cluster) << BigInt(cb);
  switch (kind) {
    case 'plain':
    case 'dup':
      return [off, 0n];
    case 'plain-copied':
      return [off | COPIED, 0xffffffffn];
    case 'unalloc':
      return [0n, 0n];
    case 'zero-plain':
      return [1n | COPIED, 0xffffffffn << 32n];
    case 'zero-alloc':
      return [off | 1n | COPIED, 0n];
    case 'compressed':
      return [COMPRESSED | off, 0n];
    case 'reserved':
      return [off | (1n << 57n) | COPIED, 0n];
    case 'unaligned':
      return [off | (1n << BigInt(Math.max(cb - 1, 8))) | COPIED, 0n];
    case 'past-end':
      return [(BigInt(limit + cluster) << BigInt(cb)) | COPIED, 0n];
    case 'bad-bitmap':
      return [off | COPIED, (1n << 32n) | 1n]; // subcluster 0 both zero and allocated
  }
}

function buildTable(spec: Spec, limit: number): Uint8Array {
  const stride = spec.extended ? 16 : 8;
  const t = new Uint8Array(spec.entries.length * stride);
  const dv = new DataView(t.buffer);
  spec.entries.forEach((e, i) => {
    const [v, bm] = entryFor(e.kind, e.cluster, spec.clusterBits, limit);
    dv.setBigUint64(i * stride, v);
    if (spec.extended) dv.setBigUint64(i * stride + 8, bm);
  });
  return t;
}

/** Which entries the kernels must leave to the caller (QEMU's rules, read off the kinds). */
function expectedStop(kind: Kind, extended: boolean): boolean {
  if (kind === 'unalloc') return false;
  if (kind === 'zero-plain') return false; // no offset, no allocation bit: nothing to count
  if (kind === 'zero-alloc') return !extended; // bit 0 is no flag in an extended entry: a plain cluster
  if (kind === 'bad-bitmap') return extended; // a standard entry has no bitmap
  return kind !== 'plain' && kind !== 'plain-copied' && kind !== 'dup';
}

/** The caller's loop: count, and note each entry left over (then skip it). */
function drive(t: RefTally, table: Uint8Array, n: number, cb: number, extended: boolean, max: number, limit: number): number[] {
  const stops: number[] = [];
  const m = l2CountMasks(cb, extended);
  for (let i = 0; i < n; i++) {
    i = t.countTable(table, i, n, m, max, limit, true, true);
    if (i < n) stops.push(i);
  }
  return stops;
}

const kinds: Kind[] = ['plain', 'plain-copied', 'unalloc', 'zero-plain', 'zero-alloc', 'compressed', 'reserved', 'unaligned', 'past-end', 'bad-bitmap', 'dup'];

const specArb = fc.record({
  clusterBits: fc.constantFrom(9, 12, 16, 21),
  extended: fc.boolean(),
  entries: fc.array(fc.record({ kind: fc.constantFrom(...kinds), cluster: fc.integer({ min: 1, max: 300 }) }), { minLength: 1, maxLength: 200 }),
});

/**
 * Tables made of runs of contiguous clusters (as a preallocated image has,
 * which the wasm kernel takes eight at a time), each run all COPIED or all
 * not, with single entries of other kinds dropped in.
 */
const runSpecArb = fc
  .record({
    clusterBits: fc.constantFrom(9, 16),
    extended: fc.boolean(),
    runs: fc.array(
      fc.record({
        start: fc.integer({ min: 1, max: 250 }),
        length: fc.integer({ min: 1, max: 40 }),
        copied: fc.boolean(),
        odd: fc.option(fc.record({ at: fc.nat(), kind: fc.constantFrom(...(['unalloc', 'compressed', 'reserved', 'unaligned', 'zero-alloc', 'past-end'] as Kind[])) })),
      }),
      { minLength: 1, maxLength: 12 },
    ),
  })
  .map(({ clusterBits, extended, runs }) => {
    const entries: Spec['entries'] = [];
    for (const r of runs) {
      for (let j = 0; j < r.length; j++) {
        const odd = r.odd && r.odd.at % r.length === j ? r.odd.kind : null;
        entries.push({ kind: odd ?? (r.copied ? 'plain-copied' : 'plain'), cluster: Math.min(r.start + j, 310) });
      }
    }
    return { clusterBits, extended, entries };
  });

describe('qcow2 check kernels: wasm and JS agree', () => {
  it('counting L2 tables: the same stops, counts, marks and fragmentation, and the stops are the non-plain entries', () => {
    fc.assert(
      fc.property(fc.oneof(specArb, runSpecArb), fc.constantFrom(0xff, 0xffff, 0xffffffff), (spec, max) => {
        const limit = 320;
        const bytes = buildTable(spec, limit);
        const n = spec.entries.length;
        const w = new RefTally(limit + 1, max, true, true);
        const j = new RefTally(limit + 1, max, true, false);
        try {
          expect(w.wasm).toBe(true);
          expect(j.wasm).toBe(false);
          const ws = drive(w, inWasm(bytes), n, spec.clusterBits, spec.extended, max, limit);
          const js = drive(j, bytes, n, spec.clusterBits, spec.extended, max, limit);
          expect(ws).toEqual(js);
          const want = spec.entries.flatMap((e, i) => (expectedStop(e.kind, spec.extended) ? [i] : []));
          expect(ws).toEqual(want);
          expect(Array.from(w.counts)).toEqual(Array.from(j.counts));
          expect(Array.from(w.marks!)).toEqual(Array.from(j.marks!));
          expect([w.st.next, w.st.allocated, w.st.fragmented]).toEqual([j.st.next, j.st.allocated, j.st.fragmented]);
          // The model's counts: one per taken entry.
          const model = new Array<number>(limit + 1).fill(0);
          spec.entries.forEach((e, i) => {
            if (!want.includes(i) && e.kind !== 'unalloc' && e.kind !== 'zero-plain') model[e.cluster]!++;
          });
          expect(Array.from(w.counts)).toEqual(model);
        } finally {
          w.free();
          j.free();
        }
      }),
      { numRuns: 300, seed: 1123 },
    );
  });

  it('eight contiguous entries on counters at the 16-bit maximum are left to the caller one by one', () => {
    for (const useWasm of [true, false]) {
      const t = new RefTally(40, 0xffff, true, useWasm);
      t.counts[12] = 0xffff;
      const table = new Uint8Array(8 * 16);
      const dv = new DataView(table.buffer);
      for (let i = 0; i < 16; i++) dv.setBigUint64(i * 8, COPIED | (BigInt(8 + i) << 16n));
      expect(drive(t, useWasm ? inWasm(table) : table, 16, 16, false, 0xffff, 40)).toEqual([4]);
      expect(Array.from(t.counts.subarray(8, 24))).toEqual([1, 1, 1, 1, 0xffff, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
      expect([t.st.allocated, t.st.fragmented, t.st.next]).toEqual([15, 1, 24 << 16]);
      t.free();
    }
  });

  it('a count at the maximum is left to the caller (overflow), in both', () => {
    for (const useWasm of [true, false]) {
      const t = new RefTally(10, 0xff, true, useWasm);
      const table = new Uint8Array(8 * 300);
      const dv = new DataView(table.buffer);
      for (let i = 0; i < 300; i++) dv.setBigUint64(i * 8, 3n << 16n);
      const stops = drive(t, useWasm ? inWasm(table) : table, 300, 16, false, 0xff, 9);
      expect(stops).toEqual(Array.from({ length: 45 }, (_, i) => 255 + i));
      expect(t.counts[3]).toBe(255);
      t.free();
    }
  });

  it('comparing refcount blocks: the same differences, highest cluster and COPIED verdict for 8, 16 and 32-bit refcounts', () => {
    const arb = fc.record({
      bits: fc.constantFrom(8, 16, 32),
      refs: fc.array(fc.record({ copied: fc.boolean(), times: fc.integer({ min: 1, max: 3 }) }), { minLength: 1, maxLength: 40 }),
      clusters: fc.array(fc.integer({ min: 0, max: 999 }), { minLength: 1, maxLength: 40 }),
      bumps: fc.array(fc.record({ k: fc.integer({ min: 0, max: 999 }), by: fc.integer({ min: 1, max: 2 }) }), { maxLength: 4 }),
      base: fc.constantFrom(0, 8, 1000, 3),
      from: fc.integer({ min: 0, max: 20 }),
    });
    fc.assert(
      fc.property(arb, ({ bits, refs, clusters, bumps, base, from }) => {
        const per = 1000;
        const max = bits === 8 ? 0xff : bits === 16 ? 0xffff : 0xffffffff;
        const tallies = [new RefTally(base + per + 1, max, true, true), new RefTally(base + per + 1, max, true, false)];
        try {
          // Counted references with their COPIED marks; the stored block agrees except where bumped.
          const blk = new Uint8Array((per * bits) / 8);
          for (const t of tallies) {
            refs.forEach((r, i) => {
              const k = base + clusters[i % clusters.length]!;
              t.counts[k]! += r.times;
              t.mark(k, r.copied);
            });
          }
          const counts = tallies[0]!.counts;
          for (let j = 0; j < per; j++) setRefcountEntry(blk, bits, j, counts[base + j]!);
          for (const b of bumps) setRefcountEntry(blk, bits, b.k, counts[base + b.k]! + b.by);
          const results = tallies.map((t) => {
            const stops: number[] = [];
            const block = t.wasm ? inWasm(blk) : blk;
            for (let j = from; j < per; j++) {
              j = t.compareBlock(block, j, per, bits, base, true);
              if (j < per) stops.push(j);
            }
            return { stops, highest: t.st.highest, bad: t.st.marksBad };
          });
          expect(results[0]).toEqual(results[1]);
          // The model: differences where bumped; the verdict where a mark contradicts the stored refcount.
          const bumped = [...new Set(bumps.map((b) => b.k))].filter((k) => k >= from).sort((a, b) => a - b);
          expect(results[0]!.stops).toEqual(bumped);
          let bad = false;
          let highest = 0;
          for (let j = from; j < per; j++) {
            if (bumped.includes(j)) continue;
            const k = base + j;
            const stored = counts[k]!;
            if (stored) highest = k;
            const flagged = refs.some((r, i) => base + clusters[i % clusters.length]! === k && r.copied);
            const plain = refs.some((r, i) => base + clusters[i % clusters.length]! === k && !r.copied);
            if ((stored === 1 && plain) || (stored !== 1 && flagged)) bad = true;
          }
          expect(results[0]!.bad).toBe(bad);
          expect(results[0]!.highest).toBe(highest);
        } finally {
          for (const t of tallies) t.free();
        }
      }),
      { numRuns: 200, seed: 77 },
    );
  });

  it('counters and marks start at zero on arena memory used before (fresh memory is not cleared again)', () => {
    const p = wasmBufferProvider()!;
    const dirty = Array.from({ length: 8 }, () => p.alloc(1 << 16));
    for (const b of dirty) b.fill(0xff);
    for (const b of dirty) p.free(b);
    const t = new RefTally(40000, 0xffff, true, true);
    expect(t.wasm).toBe(true);
    expect(t.counts.every((v) => v === 0)).toBe(true);
    expect(t.marks!.every((v) => v === 0)).toBe(true);
    expect([t.st.next, t.st.allocated, t.st.fragmented, t.st.highest, t.st.marksBad]).toEqual([0, 0, 0, 0, false]);
    t.free();
  });

  it('a missing block (all refcounts 0) contradicts a COPIED mark', () => {
    for (const useWasm of [true, false]) {
      const t = new RefTally(100, 0xffff, true, useWasm);
      t.mark(5, true);
      expect(t.compareBlock(null, 0, 100, 16, 0, true)).toBe(100);
      expect(t.st.marksBad).toBe(true);
      t.free();
    }
  });
});
