/**
 * Block status across a backing chain, in memory: base (empty) ← mid (holds
 * data and zeros) ← top (empty), with cluster sizes that differ between the
 * layers and data that starts part-way into the top's first answer. Every
 * walk over the chain (block status above, is-allocated-above, map, convert,
 * compare) must advance by exactly what each answer covers, from aligned and
 * unaligned starting points and with short request windows; what the walks
 * report is checked against a byte model and the mid's written clusters.
 */
import { describe, expect, it } from 'vitest';
import { MemoryStorage, openImage, closeNode, bdrvPread, bdrvPwrite, bdrvPwriteZeroes, type BlockNode } from '../../src/index.js';
import { BDRV_BLOCK_ALLOCATED, BDRV_BLOCK_DATA, BDRV_BLOCK_ZERO, blockStatusAbove, isAllocatedAbove } from '../../src/block/status.js';
import { createImage, planCreate } from '../../src/img/create.js';
import { convert } from '../../src/img/convert.js';
import { compareImages } from '../../src/img/compare.js';
import { mapExtents } from '../../src/img/map.js';
import { seededBytes } from '../helpers/random.js';

const KiB = 1024;
const MiB = 1024 * KiB;

interface Pattern {
  name: string;
  size: number;
  /** Cluster sizes of base, mid, top (extended L2 for the mid when asked). */
  clusters: [number, number, number];
  midExtendedL2?: boolean;
  /** Writes into the mid: data (seeded) or zeros. */
  writes: { kind: 'data' | 'zero'; offset: number; bytes: number }[];
}

const patterns: Pattern[] = [
  {
    name: 'small top clusters over large mid clusters, data from 40 KiB',
    size: 4 * MiB,
    clusters: [4096, 65536, 512],
    writes: [
      { kind: 'data', offset: 40 * KiB, bytes: 8 * KiB },
      { kind: 'data', offset: MiB, bytes: 100 * KiB },
      { kind: 'zero', offset: 2 * MiB, bytes: 64 * KiB },
      { kind: 'data', offset: 3 * MiB + 3, bytes: 1001 },
    ],
  },
  {
    name: 'large top clusters over 512-byte mid clusters',
    size: 5 * MiB,
    clusters: [65536, 512, 2 * MiB],
    writes: [
      { kind: 'data', offset: 1536, bytes: 2560 },
      { kind: 'data', offset: 2100 * KiB, bytes: 3 * KiB },
      { kind: 'zero', offset: 2101 * KiB, bytes: 512 },
      { kind: 'data', offset: 4 * MiB, bytes: MiB },
    ],
  },
  {
    name: 'data deep inside the top\'s first answer',
    size: 24 * MiB,
    clusters: [2 * MiB, 4096, 65536],
    writes: [
      { kind: 'data', offset: 13 * MiB, bytes: 4 * KiB },
      { kind: 'data', offset: 20 * MiB, bytes: 2 * MiB },
      { kind: 'zero', offset: 21 * MiB, bytes: 8 * KiB },
      { kind: 'data', offset: 24 * MiB - 512, bytes: 512 },
    ],
  },
  {
    name: 'extended L2 mid (subclusters), 512-byte top, size not cluster aligned',
    size: 3 * MiB + KiB,
    clusters: [512, 65536, 512],
    midExtendedL2: true,
    writes: [
      { kind: 'data', offset: 70 * KiB, bytes: 2 * KiB },
      { kind: 'data', offset: 75 * KiB, bytes: 4 * KiB },
      { kind: 'zero', offset: 66 * KiB, bytes: 2 * KiB },
      { kind: 'data', offset: 3 * MiB, bytes: KiB },
    ],
  },
];

async function create(st: MemoryStorage, name: string, size: number, opts: string[], backing?: string): Promise<void> {
  const plan = await planCreate(st, { filename: name, format: 'qcow2', size, options: opts, backingFile: backing, backingFormat: backing ? 'qcow2' : undefined });
  await createImage(st, plan);
}

/** The chain, the guest bytes it should read as, and which mid clusters were written. */
async function makeChain(pt: Pattern): Promise<{ st: MemoryStorage; top: BlockNode; model: Uint8Array; midAllocated: (o: number) => boolean }> {
  const st = new MemoryStorage();
  const [cb, cm, ct] = pt.clusters;
  await create(st, 'base.qcow2', pt.size, [`cluster_size=${cb}`]);
  await create(st, 'mid.qcow2', pt.size, [`cluster_size=${cm}`, ...(pt.midExtendedL2 ? ['extended_l2=on'] : [])], 'base.qcow2');
  const model = new Uint8Array(pt.size);
  const unit = pt.midExtendedL2 ? cm / 32 : cm;
  const touched = new Set<number>();
  const mid = await openImage(st, 'mid.qcow2', {});
  for (const [i, w] of pt.writes.entries()) {
    if (w.kind === 'data') {
      const data = seededBytes(w.bytes, i + 1);
      await bdrvPwrite(mid, w.offset, w.bytes, data);
      model.set(data, w.offset);
    } else {
      await bdrvPwriteZeroes(mid, w.offset, w.bytes);
      model.fill(0, w.offset, w.offset + w.bytes);
    }
    for (let u = Math.floor(w.offset / unit); u * unit < w.offset + w.bytes; u++) touched.add(u);
  }
  await closeNode(mid);
  await create(st, 'top.qcow2', pt.size, [`cluster_size=${ct}`], 'mid.qcow2');
  const top = await openImage(st, 'top.qcow2', { readOnly: true });
  return { st, top, model, midAllocated: (o) => touched.has(Math.floor(o / unit)) };
}

const isZero = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.length).equals(Buffer.alloc(b.length));

describe('block status across base (empty) ← mid (data) ← top (empty), in memory', { timeout: 60_000 }, () => {
  for (const pt of patterns) {
    describe(pt.name, () => {
      it('blockStatusAbove walks cover the image once, from any start and window, and agree with the model', async () => {
        const { top, model, midAllocated } = await makeChain(pt);
        const size = pt.size;
        // [start, window, end]: short windows walk only the part where the first data begins.
        for (const [start, window, end] of [
          [0, size, size],
          [777, size, size],
          [0, 3 * 512 + 100, Math.min(size, 512 * KiB)],
          [40 * KiB + 1, 64 * KiB - 3, size],
        ] as const) {
          let o = start;
          while (o < end) {
            const ans = await blockStatusAbove(top, null, true, o, Math.min(window, end - o));
            expect(ans.pnum, `answer at ${o}`).toBeGreaterThan(0);
            expect(ans.pnum).toBeLessThanOrEqual(Math.min(window, end - o));
            const bytes = model.subarray(o, o + ans.pnum);
            if (ans.status & BDRV_BLOCK_ZERO) expect(isZero(bytes), `ZERO at ${o}+${ans.pnum}`).toBe(true);
            if (ans.status & BDRV_BLOCK_DATA) {
              // Data comes from the mid (depth 1); the top and the base hold none.
              expect(ans.depth, `DATA at ${o}`).toBe(1);
              for (let k = o; k < o + ans.pnum; k += 512) expect(midAllocated(k), `DATA at ${k} outside the mid's clusters`).toBe(true);
            }
            if (!(ans.status & BDRV_BLOCK_ALLOCATED)) expect(isZero(bytes), `unallocated at ${o}+${ans.pnum}`).toBe(true);
            o += ans.pnum;
          }
          expect(o).toBe(end);
        }
        // Above the mid (base = mid, excluded) nothing is allocated: the top is empty.
        const own = await blockStatusAbove(top, top.cowNode(), true, 0, size);
        expect(own.pnum).toBe(size);
        expect(own.status & BDRV_BLOCK_ALLOCATED).toBe(0);
        await closeNode(top);
      });

      it('isAllocatedAbove walks find exactly the mid\'s written clusters', async () => {
        const { top, midAllocated } = await makeChain(pt);
        const size = pt.size;
        for (const [window, end] of [
          [size, size],
          [5 * 512 + 7, Math.min(size, 512 * KiB)],
        ]) {
          let o = 0;
          while (o < end!) {
            const r = await isAllocatedAbove(top, null, false, o, Math.min(window!, end! - o));
            expect(r.pnum).toBeGreaterThan(0);
            for (let k = o; k < o + r.pnum; k += 512) expect(midAllocated(k), `at ${k}`).toBe(r.allocated);
            if (r.allocated) expect(r.depth).toBe(1);
            o += r.pnum;
          }
          expect(o).toBe(end);
        }
        await closeNode(top);
      });

      it('map extents tile the image; depth-1 data sits in the mid\'s clusters', async () => {
        const { top, model, midAllocated } = await makeChain(pt);
        let next = 0;
        for await (const e of mapExtents(top)) {
          expect(e.start).toBe(next);
          next = e.start + e.length;
          if (e.data) {
            expect(e.depth).toBe(1);
            expect(midAllocated(e.start) && midAllocated(next - 1)).toBe(true);
          } else {
            expect(isZero(model.subarray(e.start, next))).toBe(true);
          }
        }
        expect(next).toBe(pt.size);
        await closeNode(top);
      });

      it('convert gives the mid\'s bytes; compare finds a one-sector difference and passes equal images', async () => {
        const { st, top, model } = await makeChain(pt);
        st.put('out.raw', new Uint8Array(pt.size));
        const out = await openImage(st, 'out.raw', { format: 'raw' });
        await convert([top], out, { targetHasZeroInit: false });
        const got = new Uint8Array(pt.size);
        await bdrvPread(out, 0, pt.size, got);
        expect(Buffer.from(got).equals(Buffer.from(model))).toBe(true);
        expect(await compareImages(top, out)).toEqual({ kind: 'identical', sizeMismatch: false });
        expect(await compareImages(out, top)).toEqual({ kind: 'identical', sizeMismatch: false });

        // One byte off inside each data write of the mid, in turn.
        for (const w of pt.writes.filter((x) => x.kind === 'data')) {
          const at = w.offset + Math.floor(w.bytes / 2);
          const src = model.slice();
          src[at] ^= 0x5a;
          st.put('src.raw', src);
          const s = await openImage(st, 'src.raw', { format: 'raw', readOnly: true });
          const want = { kind: 'content-mismatch', offset: at - (at % 512), sizeMismatch: false };
          expect(await compareImages(top, s)).toEqual(want);
          expect(await compareImages(s, top)).toEqual(want);
          await closeNode(s);
        }
        await closeNode(out);
        await closeNode(top);
      });
    });
  }
});
