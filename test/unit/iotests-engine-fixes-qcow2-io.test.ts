/**
 * Engine behaviours that QEMU's quick-group iotests 066, 098, 190 and 250
 * found (issue 19), each reproduced on images made in memory and named after
 * the iotest.
 */
import { describe, expect, it } from 'vitest';
import '../../src/drivers.js';
import { MemoryStorage } from '../../src/protocols/memory.js';
import { createImage, planCreate } from '../../src/img/create.js';
import { closeNode, openImage } from '../../src/block/open.js';
import { imgBitmap } from '../../src/img/bitmap.js';
import { measureImage, planMeasure } from '../../src/img/measure.js';
import { checkNode } from '../../src/img/check.js';
import { listDirtyBitmaps } from '../../src/block/dirty-bitmap.js';

const KIB = 1024;
const MIB = 1024 * KIB;
const TIB = 1024 * 1024 * MIB;

// ------------------------------------------------------------ 190

/** What 190 computes by hand: bitmap clusters, their tables, one directory cluster. */
function expectedBitmapBytes(size: number, granularities: number[], cluster: number): number {
  let total = cluster;
  for (const g of granularities) {
    const clusters = Math.ceil(size / g / 8 / cluster);
    total += clusters * cluster + Math.ceil((clusters * 8) / cluster) * cluster;
  }
  return total;
}

describe('dirty bitmaps of huge images (190)', () => {
  it('a 2 TiB image takes a 512-byte-granularity bitmap (2^32 bits), keeps it, and measure counts it', async () => {
    const st = new MemoryStorage();
    await createImage(st, await planCreate(st, { filename: 'a.qcow2', format: 'qcow2', size: 2 * TIB, options: ['cluster_size=2M'] }));
    let bs = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: false });
    await imgBitmap(bs, 'b1', [{ op: 'add', granularity: 512 }]);
    await imgBitmap(bs, 'b2', [{ op: 'add', granularity: 2 * MIB }]);
    await closeNode(bs);

    bs = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: true });
    try {
      expect(listDirtyBitmaps(bs).map((b) => [b.name, b.granularity])).toEqual([
        ['b1', 512],
        ['b2', 2 * MIB],
      ]);
      for (const cluster of [64 * KIB, 2 * MIB]) {
        const m = await measureImage(await planMeasure('qcow2', [`cluster_size=${cluster}`]), bs);
        expect(m.bitmaps).toBe(expectedBitmapBytes(2 * TIB, [512, 2 * MIB], cluster));
      }
      const c = (await checkNode(bs, 'a.qcow2', { leaks: false, errors: false })).check;
      expect([c.corruptions ?? 0, c.leaks ?? 0]).toEqual([0, 0]);
    } finally {
      await closeNode(bs);
    }
  });

  it('a bitmap of a 2^53-byte image at 512 bytes (2^44 bits) marks and finds a bit at either end without allocating the middle', async () => {
    const { HBitmap } = await import('../../src/wasm/index.js');
    const size = 2 ** 53 - MIB;
    const hb = new HBitmap(size, 9);
    try {
      expect(hb.nextDirty(0)).toBe(-1);
      hb.set(size - 512, 512);
      hb.set(4096, 1);
      expect(hb.count()).toBe(1024);
      expect(hb.nextDirty(0)).toBe(4096);
      expect(hb.nextDirty(4608)).toBe(size - 512);
      expect(hb.nextZero(4096)).toBe(4608);
      expect([...hb.dirtyAreas()]).toEqual([
        { offset: 4096, bytes: 512 },
        { offset: size - 512, bytes: 512 },
      ]);
      hb.reset(size - 512, 512);
      expect(hb.nextDirty(4608)).toBe(-1);
    } finally {
      hb.free();
    }
  });
});
