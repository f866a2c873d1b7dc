/**
 * The order of a qcow2 write that needs a new L2 table (QEMU's l2_allocate,
 * what iotest 026 injects errors into), what a failure at each step leaves,
 * and the flush generations of the block layer (QEMU's write_gen): the
 * image file's writes and flushes are recorded as they reach its driver.
 */
import { describe, expect, it } from 'vitest';
import '../../src/drivers.js';
import { MemoryStorage } from '../../src/protocols/memory.js';
import { createImage, planCreate } from '../../src/img/create.js';
import { closeNode, openImage } from '../../src/block/open.js';
import { openTree } from '../../src/block/open-tree.js';
import { bdrvFlush, bdrvPwrite } from '../../src/block/io.js';
import { checkNode } from '../../src/img/check.js';
import type { BlockNode } from '../../src/block/node.js';
import type { BlockDriver } from '../../src/block/driver.js';
import type { Qcow2State } from '../../src/formats/qcow2/state.js';

const MIB = 1024 * 1024;

type Op = { op: 'write'; offset: number; bytes: number } | { op: 'flush' };

/** Records every write and flush that reaches `node`'s driver. */
function record(node: BlockNode): Op[] {
  const log: Op[] = [];
  const drv = node.driver;
  const wrapped: BlockDriver = {
    ...drv,
    pwritev: async (bs, offset, bytes, buf, flags) => {
      log.push({ op: 'write', offset, bytes });
      return drv.pwritev!(bs, offset, bytes, buf, flags);
    },
    flush: async (bs) => {
      log.push({ op: 'flush' });
      return drv.flush?.(bs);
    },
  };
  Object.defineProperty(node, 'driver', { value: wrapped });
  return log;
}

async function fresh(st: MemoryStorage): Promise<void> {
  await createImage(st, await planCreate(st, { filename: 't.qcow2', format: 'qcow2', size: 64 * MIB }));
}

async function check(st: MemoryStorage): Promise<{ leaks: number; corruptions: number }> {
  const bs = await openImage(st, 't.qcow2', { format: 'qcow2', readOnly: true });
  try {
    const c = (await checkNode(bs, 't.qcow2', { leaks: false, errors: false })).check;
    return { leaks: c.leaks ?? 0, corruptions: c.corruptions ?? 0 };
  } finally {
    await closeNode(bs);
  }
}

describe('qcow2 L2 table allocation (QEMU l2_allocate order)', () => {
  it('writes the refcount block, the L2 table and the L1 entry, each flushed, before the data', async () => {
    const st = new MemoryStorage();
    await fresh(st);
    const bs = await openImage(st, 't.qcow2', { format: 'qcow2', readOnly: false });
    const s = bs.state<Qcow2State>();
    const log = record(bs.file!.node);
    await bdrvPwrite(bs, 0, 4096, new Uint8Array(4096).fill(7));
    const cs = s.clusterSize;
    const l1 = s.header.l1TableOffset;
    const refblock = s.refcountTable![0]!;
    const l2 = Number(new DataView(s.l1Table.buffer, s.l1Table.byteOffset).getBigUint64(0) & 0x00fffffffffffe00n);
    const kind = (o: Op): string => {
      if (o.op === 'flush') return 'flush';
      if (o.offset >= l1 && o.offset < l1 + cs) return 'L1';
      if (o.offset === refblock) return 'refblock';
      if (o.offset === l2) return 'L2';
      return 'data';
    };
    expect(log.map(kind)).toEqual(['refblock', 'flush', 'L2', 'flush', 'L1', 'flush', 'data']);
    // The L1 entry goes as QEMU's qcow2_write_l1_entry writes it: its 512-byte sector, clipped to the table.
    expect(log.find((o) => kind(o) === 'L1')).toMatchObject({ offset: l1, bytes: Math.min(512, s.l1Size * 8) });
    await closeNode(bs);
    expect(await check(st)).toEqual({ leaks: 0, corruptions: 0 });
  });

  it.each(['l1_update', 'l2_alloc_write', 'refblock_load'])(
    'an error at %s fails the write itself and leaves an image without leaks or corruption',
    async (event) => {
      const st = new MemoryStorage();
      await fresh(st);
      const bs = await openTree(st, {
        driver: 'qcow2',
        file: { driver: 'blkdebug', 'inject-error': [{ event, errno: '5', once: true }], image: { driver: 'file', filename: 't.qcow2' } },
      });
      // Write-back cache: nothing flushes after the write, so only the allocation's own writes can fail it.
      const err = await bdrvPwrite(bs, 0, 4096, new Uint8Array(4096).fill(1)).catch((e: unknown) => e);
      expect((err as Error).message).toMatch(/Input\/output error/);
      await closeNode(bs);
      expect(await check(st)).toEqual({ leaks: 0, corruptions: 0 });
    },
  );

  it.each([
    ['whole clusters (data in flight outside the lock)', 0, MIB],
    ['part of a cluster (completed from what the guest reads)', MIB + 512, 4096],
  ])('a data write of %s that fails gives its fresh clusters back: the retry takes them, none leaks', async (_what, off, len) => {
    const st = new MemoryStorage();
    await fresh(st);
    const bs = await openTree(st, {
      driver: 'qcow2',
      file: { driver: 'blkdebug', 'inject-error': [{ event: 'write_aio', errno: '5', once: true }], image: { driver: 'file', filename: 't.qcow2' } },
    });
    await expect(bdrvPwrite(bs, off, len, new Uint8Array(len).fill(2))).rejects.toThrow(/Input\/output error/);
    // The retry takes the same clusters; had they leaked, it would land after them and the file would hold them.
    await bdrvPwrite(bs, off, len, new Uint8Array(len).fill(3));
    await closeNode(bs);
    expect(await check(st)).toEqual({ leaks: 0, corruptions: 0 });
  });

  it('close reports the caches it could not flush, in QEMU words; with nothing written, nothing is flushed or reported', async () => {
    const st = new MemoryStorage();
    await fresh(st);
    const warnings: string[] = [];
    const open = () =>
      openTree(st, {
        driver: 'qcow2',
        file: { driver: 'blkdebug', 'inject-error': [{ event: 'l1_update', errno: '28' }], image: { driver: 'file', filename: 't.qcow2' } },
      }, { warn: (m) => warnings.push(m) });
    const bs = await open();
    await expect(bdrvPwrite(bs, 0, 4096, new Uint8Array(4096))).rejects.toThrow(/No space left on device/);
    await closeNode(bs).catch(() => {});
    expect(warnings).toEqual(['Failed to flush the L2 table cache: No space left on device', 'Failed to flush the refcount block cache: No space left on device']);
    warnings.length = 0;
    // The rule stays armed, but a session that writes nothing flushes nothing at close and reports nothing.
    const again = await open();
    await closeNode(again);
    expect(warnings).toEqual([]);
  });
});

describe('flush generations (QEMU write_gen / flushed_gen)', () => {
  it('a flush reaches the storage only when something was written since the last one (a failed write counts)', async () => {
    const st = new MemoryStorage();
    await fresh(st);
    const bs = await openImage(st, 't.qcow2', { format: 'qcow2', readOnly: false });
    await bdrvPwrite(bs, 0, 4096, new Uint8Array(4096).fill(5));
    await bdrvFlush(bs);
    const file = bs.file!.node;
    const log = record(file);
    await bdrvFlush(bs);
    await bdrvFlush(bs);
    expect(log).toEqual([]);
    await bdrvPwrite(bs, 0, 512, new Uint8Array(512).fill(6));
    await bdrvFlush(bs);
    expect(log.filter((o) => o.op === 'flush')).toHaveLength(1);
    // A write that fails in the driver still makes the next flush reach the storage.
    const failing = file.driver;
    Object.defineProperty(file, 'driver', { value: { ...failing, pwritev: async () => Promise.reject(new Error('EIO')) } });
    await expect(bdrvPwrite(file, 0, 512, new Uint8Array(512))).rejects.toThrow();
    Object.defineProperty(file, 'driver', { value: failing });
    await bdrvFlush(bs);
    expect(log.filter((o) => o.op === 'flush')).toHaveLength(2);
    await closeNode(bs);
  });
});
