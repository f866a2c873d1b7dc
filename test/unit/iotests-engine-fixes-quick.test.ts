/**
 * Engine behaviours that QEMU's quick-group iotests found (issue 19), each
 * reproduced on images made in memory and named after the iotest.
 */
import { describe, expect, it } from 'vitest';
import '../../src/drivers.js';
import { MemoryStorage } from '../../src/protocols/memory.js';
import { createImage, planCreate } from '../../src/img/create.js';
import { closeNode, openImage } from '../../src/block/open.js';
import { imgSnapshot, listSnapshots } from '../../src/img/snapshot.js';
import { checkNode } from '../../src/img/check.js';
import { openTree } from '../../src/block/open-tree.js';
import { bdrvPdiscard, bdrvPread, bdrvPwrite, bdrvPwriteZeroes } from '../../src/block/io.js';
import { registerDriver, type BlockDriver } from '../../src/block/driver.js';
import type { BlockNode } from '../../src/block/node.js';
import { discardPieces } from '../../src/block/request-split.js';
import { filterFile, filterPassThrough } from '../../src/filters/pass-through.js';
import { rng } from '../helpers/random.js';

const KIB = 1024;
const MIB = 1024 * KIB;

// ------------------------------------------------------------ 204, 177

/** 15 "units" of 64 KiB: a preferred alignment that is not a power of two, as 204's 15M over 1M clusters, scaled down. */
const ODD = 15 * 64 * KIB;

interface Seen {
  discards: { offset: number; bytes: number }[];
  zeroes: { offset: number; bytes: number }[];
}

/** A filter that exposes 204's limits (align 512, opt/max discard and write-zero 15 units) and records what it is handed. */
const oddLimitsDriver: BlockDriver = {
  name: 'test-odd-limits',
  kind: 'filter',
  async open(bs) {
    bs.opaque = { discards: [], zeroes: [] } satisfies Seen;
    bs.totalBytes = filterFile(bs).totalBytes;
    bs.limits = {
      requestAlignment: 512,
      maxTransfer: 16 * MIB,
      pdiscardAlignment: ODD,
      maxPdiscard: ODD,
      pwriteZeroesAlignment: ODD,
      maxPwriteZeroes: ODD,
    };
  },
  async preadv(bs, offset, bytes, buf) {
    await bdrvPread(filterFile(bs), offset, bytes, buf);
  },
  async pwritev(bs, offset, bytes, buf, flags) {
    await bdrvPwrite(filterFile(bs), offset, bytes, buf, flags);
  },
  async pwriteZeroes(bs, offset, bytes, flags) {
    (bs.opaque as Seen).zeroes.push({ offset, bytes });
    await bdrvPwriteZeroes(filterFile(bs), offset, bytes, flags);
  },
  async pdiscard(bs, offset, bytes) {
    (bs.opaque as Seen).discards.push({ offset, bytes });
    await bdrvPdiscard(filterFile(bs), offset, bytes);
  },
  ...filterPassThrough,
};
registerDriver(oddLimitsDriver);

async function oddOverQcow2(): Promise<BlockNode> {
  const st = new MemoryStorage();
  await createImage(st, await planCreate(st, { filename: 'a.qcow2', format: 'qcow2', size: 8 * MIB, options: ['cluster_size=65536'] }));
  const bs = await openTree(st, { driver: 'test-odd-limits', file: { driver: 'qcow2', file: { filename: 'a.qcow2' } } });
  await bdrvPwrite(bs, 0, 8 * MIB, new Uint8Array(8 * MIB).fill(22));
  return bs;
}

/** The first offset in [from, to) whose byte is not `value`, or -1. */
async function firstOther(bs: BlockNode, from: number, to: number, value: number): Promise<number> {
  const buf = new Uint8Array(to - from);
  await bdrvPread(bs, from, buf.length, buf);
  const i = buf.findIndex((b) => b !== value);
  return i < 0 ? -1 : from + i;
}

describe('discard and write-zeroes with limits that are not powers of two (204, 177)', () => {
  it('a discard whose ends are off a 15-unit alignment still frees every whole cluster inside it (204: "discard 80000001 30M")', async () => {
    const bs = await oddOverQcow2();
    try {
      const offset = 5000001; // 204's 80000001 over 16
      const bytes = 30 * 64 * KIB; // 204's 30M over 16
      await bdrvPdiscard(bs, offset, bytes);
      const firstCluster = Math.ceil(offset / (64 * KIB)) * 64 * KIB;
      const endCluster = Math.floor((offset + bytes) / (64 * KIB)) * 64 * KIB;
      // The partial clusters at both ends keep their data; every whole cluster inside reads as zeros.
      expect(await firstOther(bs, 0, firstCluster, 22)).toBe(-1);
      expect(await firstOther(bs, firstCluster, endCluster, 0)).toBe(-1);
      expect(await firstOther(bs, endCluster, 8 * MIB, 22)).toBe(-1);
      // What the filter was handed: every piece lies on its alignment, or is smaller and crosses no boundary of it.
      const seen = (bs.opaque as Seen).discards;
      expect(seen.reduce((n, p) => n + p.bytes, 0)).toBe(bytes);
      for (const p of seen) {
        if (p.bytes >= ODD) expect([p.offset % ODD, p.bytes % ODD, p.bytes <= ODD]).toEqual([0, 0, true]);
        else expect(Math.floor(p.offset / ODD)).toBe(Math.floor((p.offset + p.bytes - 1) / ODD));
      }
    } finally {
      await closeNode(bs);
    }
  });

  it('write-zeroes hands the driver aligned chunks no larger than its max-write-zero, and zeroes exactly the range', async () => {
    const bs = await oddOverQcow2();
    try {
      const offset = 2 * MIB + 512;
      const bytes = 4 * MIB;
      await bdrvPwriteZeroes(bs, offset, bytes);
      expect(await firstOther(bs, 0, offset, 22)).toBe(-1);
      expect(await firstOther(bs, offset, offset + bytes, 0)).toBe(-1);
      expect(await firstOther(bs, offset + bytes, 8 * MIB, 22)).toBe(-1);
      const seen = (bs.opaque as Seen).zeroes;
      expect(seen.length).toBeGreaterThan(1);
      for (const p of seen) expect([p.offset % ODD, p.bytes % ODD, p.bytes <= ODD]).toEqual([0, 0, true]);
    } finally {
      await closeNode(bs);
    }
  });

  it("discardPieces follows QEMU's cuts on 204's own numbers", () => {
    const M = MIB;
    const pieces = [...discardPieces(80000001, 30 * M, 15 * M, 512, 15 * M)];
    expect(pieces).toEqual([
      { offset: 80000001, bytes: 511 },
      { offset: 80000512, bytes: 6 * 15 * M - 80000512 },
      { offset: 6 * 15 * M, bytes: 15 * M },
      { offset: 7 * 15 * M, bytes: 1356800 },
      { offset: 7 * 15 * M + 1356800, bytes: 1 },
    ]);
  });

  it('discardPieces covers the range exactly, and no unaligned piece crosses an alignment boundary (seeded sweep)', () => {
    const rnd = rng(204);
    for (let i = 0; i < 500; i++) {
      const req = 2 ** Math.floor(rnd() * 13);
      const align = req * (1 + Math.floor(rnd() * 20));
      const max = rnd() < 0.3 ? 0 : align * (1 + Math.floor(rnd() * 4));
      const offset = Math.floor(rnd() * 64 * align);
      const bytes = 1 + Math.floor(rnd() * 8 * align);
      let at = offset;
      for (const p of discardPieces(offset, bytes, align, req, max)) {
        expect(p.offset).toBe(at);
        expect(p.bytes).toBeGreaterThan(0);
        if (p.offset % align === 0 && p.bytes % align === 0) {
          if (max) expect(p.bytes).toBeLessThanOrEqual(max);
        } else {
          expect(p.bytes).toBeLessThan(align);
          expect(Math.floor(p.offset / align)).toBe(Math.floor((p.offset + p.bytes - 1) / align));
        }
        at += p.bytes;
      }
      expect(at).toBe(offset + bytes);
    }
  });
});

// ------------------------------------------------------------ 217

describe("snapshot delete's failure path (217)", () => {
  it('a file that fails once the old table is freed: the free is reported, the delete fails naming the L1 table, and only leaks are left', async () => {
    const st = new MemoryStorage();
    await createImage(st, await planCreate(st, { filename: 'a.qcow2', format: 'qcow2', size: 64 * MIB }));
    const plain = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: false });
    await bdrvPwrite(plain, 0, 65536, new Uint8Array(65536).fill(1));
    await imgSnapshot(plain, 'create', 'foo');
    await closeNode(plain);

    const warnings: string[] = [];
    const tree = {
      driver: 'qcow2',
      file: { driver: 'blkdebug', 'inject-error': [{ event: 'cluster_free', errno: '5' }], image: { driver: 'file', filename: 'a.qcow2' } },
    };
    const bs = await openTree(st, tree, { readOnly: false, warn: (m) => warnings.push(m) });
    const err = await imgSnapshot(bs, 'delete', 'foo').catch((e: unknown) => e);
    await closeNode(bs).catch(() => {});
    expect((err as Error).message).toBe("Could not delete snapshot 'foo': Failed to free the cluster and L1 table: Input/output error");
    expect(warnings).toContain('qcow2_free_clusters failed: Input/output error');

    const after = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: true });
    try {
      // The header no longer names the snapshot; its clusters are leaked, nothing is corrupt.
      expect(listSnapshots(after)).toEqual([]);
      const messages: string[] = [];
      const run = await checkNode(after, 'a.qcow2', { leaks: false, errors: false }, { line: (m) => messages.push(m) });
      expect([run.check.corruptions ?? 0, run.check.leaks]).toEqual([0, 4]);
      // QEMU's cluster numbers (217.out): the shared L2 table and data keep their second reference,
      // the snapshot's L1 copy (6) and the old snapshot table (7) are left with no reference.
      expect(messages.filter((m) => m.startsWith('Leaked'))).toEqual([
        'Leaked cluster 4 refcount=2 reference=1',
        'Leaked cluster 5 refcount=2 reference=1',
        'Leaked cluster 6 refcount=1 reference=0',
        'Leaked cluster 7 refcount=1 reference=0',
      ]);
    } finally {
      await closeNode(after);
    }
  });
});

describe('snapshot create shares the active tables, as QEMU lays them out (217, 080, 112)', () => {
  it('only the L1 table is copied; the L2 table and data get a second reference; the next write copies the L2 table', async () => {
    const st = new MemoryStorage();
    await createImage(st, await planCreate(st, { filename: 'a.qcow2', format: 'qcow2', size: 64 * MIB }));
    const bs = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: false });
    await bdrvPwrite(bs, 0, 65536, new Uint8Array(65536).fill(1));
    await imgSnapshot(bs, 'create', 'foo');
    await closeNode(bs);
    const cs = 65536;
    const file = await openImage(st, 'a.qcow2', { format: 'raw', readOnly: true });
    const u64 = async (off: number) => {
      const b = new Uint8Array(8);
      await bdrvPread(file, off, 8, b);
      return new DataView(b.buffer).getBigUint64(0);
    };
    const refcount = async (cluster: number) => {
      const b = new Uint8Array(2);
      await bdrvPread(file, 2 * cs + cluster * 2, 2, b);
      return (b[0]! << 8) | b[1]!;
    };
    const COPIED = 1n << 63n;
    try {
      // Header: the active L1 stays at cluster 3; the snapshot table went to cluster 7.
      expect(await u64(40)).toBe(BigInt(3 * cs));
      expect(await u64(64)).toBe(BigInt(7 * cs));
      // The snapshot's L1 is a copy at cluster 6, naming the same L2 table (cluster 4).
      expect(await u64(7 * cs)).toBe(BigInt(6 * cs));
      expect((await u64(6 * cs)) & ~COPIED).toBe(BigInt(4 * cs));
      // Shared: refcount 2 and no COPIED, on the L1 entry and on the data entry.
      expect([await refcount(4), await refcount(5), await refcount(6), await refcount(7)]).toEqual([2, 2, 1, 1]);
      expect(await u64(3 * cs)).toBe(BigInt(4 * cs));
      expect(await u64(4 * cs)).toBe(BigInt(5 * cs));
    } finally {
      await closeNode(file);
    }
    const again = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: false });
    await bdrvPwrite(again, 0, 512, new Uint8Array(512).fill(2));
    await closeNode(again);
    const after = await openImage(st, 'a.qcow2', { format: 'raw', readOnly: true });
    try {
      const b = new Uint8Array(8);
      await bdrvPread(after, 3 * cs, 8, b);
      // The write copied the L2 table to cluster 8 (owned: COPIED) and the data cluster to 9.
      expect(new DataView(b.buffer).getBigUint64(0)).toBe(COPIED | BigInt(8 * cs));
      await bdrvPread(after, 8 * cs, 8, b);
      expect(new DataView(b.buffer).getBigUint64(0)).toBe(COPIED | BigInt(9 * cs));
    } finally {
      await closeNode(after);
    }
  });
});
