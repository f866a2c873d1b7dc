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
import { openTree } from '../../src/block/open-tree.js';
import { bdrvPdiscard, bdrvPread, bdrvPwrite, bdrvPwriteZeroes, bdrvTruncate } from '../../src/block/io.js';
import { registerDriver, type BlockDriver } from '../../src/block/driver.js';
import type { BlockNode } from '../../src/block/node.js';
import { filterFile, filterPassThrough } from '../../src/filters/pass-through.js';

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

// ------------------------------------------------------------ 066

interface Req {
  offset: number;
  bytes: number;
}

/** A filter under the format that records the writes it is handed. */
const recordWritesDriver: BlockDriver = {
  name: 'test-record-writes',
  kind: 'filter',
  async open(bs) {
    bs.opaque = [] satisfies Req[];
    bs.totalBytes = filterFile(bs).totalBytes;
  },
  async preadv(bs, offset, bytes, buf) {
    await bdrvPread(filterFile(bs), offset, bytes, buf);
  },
  async pwritev(bs, offset, bytes, buf, flags) {
    (bs.opaque as Req[]).push({ offset, bytes });
    await bdrvPwrite(filterFile(bs), offset, bytes, buf, flags);
    bs.totalBytes = filterFile(bs).totalBytes;
  },
  async pdiscard(bs, offset, bytes) {
    discardsSeen.push({ offset, bytes });
    await bdrvPdiscard(filterFile(bs), offset, bytes);
  },
  ...filterPassThrough,
};
registerDriver(recordWritesDriver);
/** Discards the recorder was handed (tests clear it). */
const discardsSeen: Req[] = [];

const CS = 64 * KIB;

/** 066's image: three data clusters, the middle one then a preallocated zero cluster; the qcow2 node over a recorder. */
async function dataZeroData(): Promise<{ st: MemoryStorage; bs: BlockNode; seen: Req[]; host0: number }> {
  const st = new MemoryStorage();
  await createImage(st, await planCreate(st, { filename: 'a.qcow2', format: 'qcow2', size: 3 * CS }));
  const bs = await openTree(st, { driver: 'qcow2', file: { driver: 'test-record-writes', file: { driver: 'file', filename: 'a.qcow2' } } });
  const seen = bs.file!.node.opaque as Req[];
  await bdrvPwrite(bs, 0, 3 * CS, new Uint8Array(3 * CS).fill(42));
  const host0 = seen.find((r) => r.bytes === 3 * CS)!.offset;
  await bdrvPwriteZeroes(bs, CS, CS, {});
  seen.length = 0;
  return { st, bs, seen, host0 };
}

describe('writes over data and preallocated zero clusters (066)', () => {
  it('data / preallocated zero / data at consecutive host offsets is one request to the file, and the zero cluster holds data again', async () => {
    const { bs, seen, host0 } = await dataZeroData();
    try {
      expect(await firstOther(bs, CS, 2 * CS, 0)).toBe(-1);
      await bdrvPwrite(bs, 0, 3 * CS, new Uint8Array(3 * CS).fill(7));
      expect(seen).toEqual([{ offset: host0, bytes: 3 * CS }]);
      expect(await firstOther(bs, 0, 3 * CS, 7)).toBe(-1);
    } finally {
      await closeNode(bs);
    }
  });

  it('a write ending inside the zero cluster writes it whole (zeros after the data), still as one request', async () => {
    const { st, bs, seen, host0 } = await dataZeroData();
    await bdrvPwrite(bs, 16 * KIB, CS, new Uint8Array(CS).fill(9));
    expect(seen).toEqual([{ offset: host0 + 16 * KIB, bytes: 2 * CS - 16 * KIB }]);
    await closeNode(bs);
    const again = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: true });
    try {
      expect(await firstOther(again, 0, 16 * KIB, 42)).toBe(-1);
      expect(await firstOther(again, 16 * KIB, 16 * KIB + CS, 9)).toBe(-1);
      expect(await firstOther(again, 16 * KIB + CS, 2 * CS, 0)).toBe(-1);
      expect(await firstOther(again, 2 * CS, 3 * CS, 42)).toBe(-1);
      const c = (await checkNode(again, 'a.qcow2', { leaks: false, errors: false })).check;
      expect([c.corruptions ?? 0, c.leaks ?? 0]).toEqual([0, 0]);
    } finally {
      await closeNode(again);
    }
  });
});

/** The first offset in [from, to) whose byte is not `value`, or -1. */
async function firstOther(bs: BlockNode, from: number, to: number, value: number): Promise<number> {
  const buf = new Uint8Array(to - from);
  await bdrvPread(bs, from, buf.length, buf);
  const i = buf.findIndex((b) => b !== value);
  return i < 0 ? -1 : from + i;
}

// ------------------------------------------------------------ 250

/** A 16-cluster image (1 MiB clusters) fully written, over the recorder; `opts` are qcow2 options. */
async function written(opts: Record<string, unknown> = {}): Promise<{ bs: BlockNode; host: (guest: number) => number }> {
  const st = new MemoryStorage();
  await createImage(st, await planCreate(st, { filename: 'a.qcow2', format: 'qcow2', size: 16 * MIB, options: ['cluster_size=1M'] }));
  const bs = await openTree(st, { driver: 'qcow2', ...opts, file: { driver: 'test-record-writes', file: { driver: 'file', filename: 'a.qcow2' } } });
  const seen = bs.file!.node.opaque as Req[];
  await bdrvPwrite(bs, 0, 16 * MIB, new Uint8Array(16 * MIB).fill(5));
  const base = seen.find((r) => r.bytes === 16 * MIB)!.offset;
  discardsSeen.length = 0;
  return { bs, host: (g) => base + g };
}

/** Flushes (freed clusters are released once the tables that dropped them are on disk) and returns the discards seen. */
async function discardsAfterFlush(bs: BlockNode): Promise<Req[]> {
  const { bdrvFlush } = await import('../../src/block/io.js');
  await bdrvFlush(bs);
  return [...discardsSeen];
}

describe('freed qcow2 clusters passed down to the file as discards (250)', () => {
  it('a guest discard reaches the file, merged into one run, only when the node has discard=unmap (pass-discard-request follows it)', async () => {
    const a = await written();
    try {
      // The opener decides the top node's setting (openImage leaves it on; qemu-img's and blockdev-add's default is off).
      a.bs.unmap = false;
      await bdrvPdiscard(a.bs, 2 * MIB, 3 * MIB);
      expect(await discardsAfterFlush(a.bs)).toEqual([]);
      a.bs.unmap = true;
      await bdrvPdiscard(a.bs, 8 * MIB, 3 * MIB);
      expect(await discardsAfterFlush(a.bs)).toEqual([{ offset: a.host(8 * MIB), bytes: 3 * MIB }]);
    } finally {
      await closeNode(a.bs);
    }
  });

  it('pass-discard-request=off keeps guest discards from the file even with discard=unmap; on passes them without it', async () => {
    const off = await written({ 'pass-discard-request': false });
    try {
      off.bs.unmap = true;
      await bdrvPdiscard(off.bs, 0, MIB);
      expect(await discardsAfterFlush(off.bs)).toEqual([]);
    } finally {
      await closeNode(off.bs);
    }
    const on = await written({ 'pass-discard-request': true });
    try {
      await bdrvPwriteZeroes(on.bs, 4 * MIB, 2 * MIB, { mayUnmap: true });
      expect(await discardsAfterFlush(on.bs)).toEqual([{ offset: on.host(4 * MIB), bytes: 2 * MIB }]);
    } finally {
      await closeNode(on.bs);
    }
  });

  it('shrinking always discards the cropped clusters and cuts the file after its last used cluster; overwriting frees nothing', async () => {
    const a = await written();
    try {
      const fileBefore = a.bs.file!.node.totalBytes;
      await bdrvTruncate(a.bs, 5 * MIB);
      // The cropped clusters are at the file's end: discarded, then the file is cut after guest 5M's cluster.
      expect(discardsSeen).toEqual([{ offset: a.host(5 * MIB), bytes: 11 * MIB }]);
      expect(a.bs.file!.node.totalBytes).toBe(a.host(5 * MIB));
      expect(a.bs.file!.node.totalBytes).toBeLessThan(fileBefore);
      expect(await firstOther(a.bs, 0, 5 * MIB, 5)).toBe(-1);
      discardsSeen.length = 0;
      await bdrvPwrite(a.bs, 0, MIB, new Uint8Array(MIB).fill(6));
      expect(await discardsAfterFlush(a.bs)).toEqual([]);
    } finally {
      await closeNode(a.bs);
    }
  });
});

// ------------------------------------------------------------ 098

describe("qcow2's make-empty rebuilds the image from nothing (098)", () => {
  async function topWithData(st: MemoryStorage): Promise<void> {
    await createImage(st, await planCreate(st, { filename: 'b.qcow2', format: 'qcow2', size: 64 * MIB }));
    await createImage(st, await planCreate(st, { filename: 'a.qcow2', format: 'qcow2', size: 64 * MIB, backingFile: 'b.qcow2', backingFormat: 'qcow2' }));
    const bs = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: false });
    await bdrvPwrite(bs, 0, 64 * KIB, new Uint8Array(64 * KIB).fill(3));
    await closeNode(bs);
  }

  it('an emptied image is header, refcount table, refcount block and L1 table, nothing leaked, reading through to the backing file', async () => {
    const st = new MemoryStorage();
    await topWithData(st);
    const bs = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: false });
    await bs.driver.makeEmpty!(bs);
    // 64 MiB at 64 KiB clusters: one L1 cluster, so the file is four clusters.
    expect(bs.file!.node.totalBytes).toBe(4 * CS);
    await closeNode(bs);
    const again = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: true });
    try {
      expect(await firstOther(again, 0, 64 * KIB, 0)).toBe(-1);
      const c = (await checkNode(again, 'a.qcow2', { leaks: false, errors: false })).check;
      expect([c.corruptions ?? 0, c.leaks ?? 0]).toEqual([0, 0]);
    } finally {
      await closeNode(again);
    }
  });

  it.each(['l1_update', 'empty_image_prepare', 'reftable_update', 'refblock_alloc'])(
    'an error at %s fails the make-empty, leaves the dirty bit, and the next writable open repairs the image',
    async (event) => {
      const st = new MemoryStorage();
      await topWithData(st);
      const bs = await openTree(st, {
        driver: 'qcow2',
        file: { driver: 'blkdebug', 'inject-error': [{ event, errno: '5' }], image: { driver: 'file', filename: 'a.qcow2' } },
      });
      const err = await bs.driver.makeEmpty!(bs).catch((e: unknown) => e);
      await closeNode(bs).catch(() => {});
      expect((err as Error).message).toMatch(/Input\/output error/);
      const repaired = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: false });
      await closeNode(repaired);
      const after = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: true });
      try {
        const c = (await checkNode(after, 'a.qcow2', { leaks: false, errors: false })).check;
        expect([c.corruptions ?? 0, c.leaks ?? 0]).toEqual([0, 0]);
      } finally {
        await closeNode(after);
      }
    },
  );
});

// ------------------------------------------------------------ raw 171

describe("raw's offset and size change at a reopen (171)", () => {
  it('reopen -o offset=1536,size=1024 moves the window; a window past the file or of odd size is refused with QEMU words and changes nothing', async () => {
    const { bdrvReopen } = await import('../../src/block/reopen.js');
    const st = new MemoryStorage();
    await createImage(st, await planCreate(st, { filename: 'r.raw', format: 'raw', size: 4096 }));
    const bs = await openTree(st, { driver: 'raw', offset: 512, size: 512, file: { driver: 'file', filename: 'r.raw' } });
    try {
      await bdrvReopen(bs, { offset: 1536, size: 1024 });
      expect(bs.totalBytes).toBe(1024);
      await bdrvPwrite(bs, 0, 1024, new Uint8Array(1024).fill(10));
      await expect(bdrvPwrite(bs, 1023, 2, new Uint8Array(2))).rejects.toThrow();
      await expect(bdrvReopen(bs, { offset: 3584 })).rejects.toThrow(
        'The sum of offset (3584) and size (1024) has to be smaller or equal to the  actual size of the containing file (4096)',
      );
      await expect(bdrvReopen(bs, { size: 1000 })).rejects.toThrow('Specified size is not multiple of 512');
      expect(bs.totalBytes).toBe(1024);
    } finally {
      await closeNode(bs);
    }
    const whole = await openImage(st, 'r.raw', { format: 'raw', readOnly: true });
    try {
      expect(await firstOther(whole, 0, 1536, 0)).toBe(-1);
      expect(await firstOther(whole, 1536, 2560, 10)).toBe(-1);
      expect(await firstOther(whole, 2560, 4096, 0)).toBe(-1);
    } finally {
      await closeNode(whole);
    }
  });
});
