/**
 * convert's zero read-ahead (src/img/convert-zero-scout.ts): while the copy
 * waits for its writes, written zeros ahead of it are read and scanned once,
 * the workers do not read them again, and the target is the one a copy with
 * one request at a time makes.
 */
import { describe, expect, it } from 'vitest';
import { MemoryStorage, openImage } from '../../src/index.js';
import { closeNode } from '../../src/block/open.js';
import type { BlockNode } from '../../src/block/node.js';
import { createImage, planCreate } from '../../src/img/create.js';
import { convert } from '../../src/img/convert.js';
import { ZeroScout, type ScoutSource } from '../../src/img/convert-zero-scout.js';
import { bufferIsZero } from '../../src/block/buffers.js';
import { guestBytes } from '../helpers/guest-bytes.js';

const MiB = 1024 * 1024;
const STEP = 2 * MiB;

/** A fake source of `kinds` (one per step: D data, Z written zeros, H a hole), probed with the scout always idle. */
function fakeSource(kinds: string, reads: number[]): ScoutSource {
  return {
    total: kinds.length * STEP,
    runAt: async (pos) => {
      const i = Math.floor(pos / STEP);
      let j = i;
      const hole = kinds[i] === 'H';
      while (j < kinds.length && (kinds[j] === 'H') === hole) j++;
      return { data: !hole, end: j * STEP };
    },
    read: async (pos, n, buf) => {
      reads.push(pos);
      buf.fill(0);
      for (let o = pos; o < pos + n; o += STEP) if (kinds[Math.floor(o / STEP)] === 'D') buf[o - pos + 100] = 1;
    },
    isZero: bufferIsZero,
  };
}

async function scoutAll(kinds: string, frontier = 0): Promise<{ scout: ZeroScout; reads: number[] }> {
  const reads: number[] = [];
  const scout = new ZeroScout(fakeSource(kinds, reads), STEP, () => frontier, () => true, (n) => new Uint8Array(n), () => {});
  // Always idle: one run of probes goes to the end of the source.
  await scout.poke();
  return { scout, reads };
}

describe('zero read-ahead (ZeroScout)', () => {
  it('finds a zero region behind a long data region with a few wasted reads, and covers only what it read as zeros', async () => {
    const kinds = 'D'.repeat(200) + 'Z'.repeat(100) + 'HHHH' + 'Z'.repeat(10) + 'D' + 'Z'.repeat(5);
    const { scout, reads } = await scoutAll(kinds);
    // Data buffers in a row: the jump doubles, so 200 of them cost about log2(200) reads (and one going back).
    expect(scout.wasted).toBeLessThanOrEqual(11);
    expect(reads.filter((p) => kinds[p / STEP] === 'D').length).toBe(scout.wasted);
    // No hole is read; no buffer twice.
    expect(reads.some((p) => kinds[p / STEP] === 'H')).toBe(false);
    expect(new Set(reads).size).toBe(reads.length);
    // Most of the zero steps are known; a step counts only when read as zeros.
    let known = 0;
    for (let i = 0; i < kinds.length; i++) {
      const c = scout.covers(i * STEP, (i + 1) * STEP);
      if (c) known++;
      expect(c && kinds[i] !== 'Z').toBe(false);
      expect(c).toBe(reads.includes(i * STEP) && kinds[i] === 'Z');
    }
    // Every zero step: those a jump passed over are probed going back from where it landed.
    expect(known).toBe(115);
  });

  it('gives up on a source whose zeros come in pieces too small to pay for the reads', async () => {
    const { scout, reads } = await scoutAll('DZDDZ'.repeat(200));
    expect(scout.wasted).toBeGreaterThanOrEqual(16);
    expect(scout.wasted).toBeLessThanOrEqual(Math.max(16, scout.probes - scout.wasted + 1));
    expect(reads.length).toBeLessThan(100);
  });

  it('covers a range only when every byte of it lies in known zeros (adjacent probes merged, steps off the probe grid)', async () => {
    const { scout } = await scoutAll('ZZZDZZZ');
    // Steps cut at other offsets than the probes: across the merged first probes, inside one, across the data one.
    expect(scout.covers(MiB, 3 * MiB)).toBe(true);
    expect(scout.covers(4 * MiB + 512, 6 * MiB - 512)).toBe(true);
    expect(scout.covers(5 * MiB, 7 * MiB)).toBe(false);
    // The step after a data probe is jumped over, then probed going back from the zeros after it.
    expect(scout.covers(8 * MiB + 4096, 10 * MiB)).toBe(true);
    expect(scout.covers(10 * MiB, 12 * MiB)).toBe(true);
    expect(scout.covers(11 * MiB, 14 * MiB)).toBe(true);
    expect(scout.covers(13 * MiB, 14 * MiB + 1)).toBe(false);
  });

  it('does not probe behind the frontier nor while the copy is busy reading', async () => {
    const reads: number[] = [];
    let idle = false;
    const scout = new ZeroScout(fakeSource('Z'.repeat(20), reads), STEP, () => 10 * STEP, () => idle, (n) => new Uint8Array(n), () => {});
    scout.poke();
    await new Promise((r) => setImmediate(r));
    expect(reads).toEqual([]);
    idle = true;
    scout.poke();
    for (let i = 0; i < 100; i++) await new Promise((r) => setImmediate(r));
    await scout.stop();
    expect(reads.length).toBe(10);
    expect(Math.min(...reads)).toBe(10 * STEP);
  });
});

describe('convert with the zero read-ahead', () => {
  const KiB = 1024;
  /** Steps of 256 KiB (convert's bufferSize): the data region is more steps than the workers hold. */
  const CSTEP = 256 * KiB;
  /** Data (16 steps), written zeros (16 steps, 4 KiB of data inside one), data: 10 MiB. */
  function mixedSource(): Uint8Array {
    const src = new Uint8Array(10 * MiB);
    for (let i = 0; i < 4 * MiB; i++) src[i] = ((i * 13) >> 3) & 0xff || 1;
    src.fill(0x5a, 6 * MiB + 8192, 6 * MiB + 12288);
    for (let i = 8 * MiB; i < src.length; i++) src[i] = (i * 7) & 0xff;
    return src;
  }

  it('reads each zero step of the source once, ahead of the writes, and makes the image one request at a time makes', async () => {
    const st = new MemoryStorage();
    const src = mixedSource();
    st.put('src.raw', src);
    const images: Uint8Array[] = [];
    for (const parallel of [1, 8]) {
      const from = await openImage(st, 'src.raw', { format: 'raw', readOnly: true });
      const name = `dst${parallel}.qcow2`;
      await createImage(st, await planCreate(st, { filename: name, format: 'qcow2', size: src.length }));
      const q = await openImage(st, name, { format: 'qcow2' });
      // The memory protocol's driver serves both images: tell the source's reads and the target's writes apart.
      const srcFile: BlockNode = from.file!.node;
      const drv = srcFile.driver as { preadv: typeof srcFile.driver.preadv; pwritev: NonNullable<typeof srcFile.driver.pwritev> };
      const { preadv, pwritev } = drv;
      const events: string[] = [];
      let readsInFlight = 0;
      drv.preadv = async (bs, off, n, buf) => {
        if (bs !== srcFile) return preadv.call(drv, bs, off, n, buf);
        readsInFlight++;
        try {
          await preadv.call(drv, bs, off, n, buf);
          events.push(`r${off}`);
        } finally {
          readsInFlight--;
        }
      };
      // Writes take a few ms, so the copy is write-bound as on a host file.
      drv.pwritev = async (bs, off, n, buf, flags) => {
        await new Promise((r) => setTimeout(r, 2));
        await pwritev.call(drv, bs, off, n, buf, flags);
        if (n >= 64 * KiB) events.push('w');
      };
      try {
        await convert([from], q, { parallel, targetHasZeroInit: true, bufferSize: CSTEP });
        // Nothing of the read-ahead is left running once convert returns.
        expect(readsInFlight).toBe(0);
        await closeNode(q);
        await closeNode(from);
      } finally {
        drv.preadv = preadv;
        drv.pwritev = pwritev;
      }
      const stepReads = (a: number, b: number) => events.filter((e) => e.startsWith('r') && +e.slice(1) >= a && +e.slice(1) < b);
      if (parallel === 8) {
        // Every all-zero step of [4, 8) MiB is read exactly once; the one holding data may be read twice.
        for (let p = 4 * MiB; p < 8 * MiB; p += CSTEP) {
          const n = stepReads(p, p + CSTEP).length;
          if (p === 6 * MiB) expect(n).toBeGreaterThanOrEqual(1);
          else expect(n).toBe(1);
        }
        // Some zero steps were read before the last write of the first data region.
        const lastDataWrite = events.lastIndexOf('w', events.indexOf(`r${8 * MiB}`));
        const early = events.slice(0, lastDataWrite).filter((e) => e.startsWith('r') && +e.slice(1) >= 4 * MiB && +e.slice(1) < 8 * MiB);
        expect(early.length).toBeGreaterThan(0);
      }
      images.push(st.get(name)!.slice());
      expect(Buffer.from(await guestBytes(st, name, 'qcow2')).equals(Buffer.from(src))).toBe(true);
    }
    expect(Buffer.from(images[1]!).equals(Buffer.from(images[0]!))).toBe(true);
  }, 30_000);
});
