import { describe, expect, it } from 'vitest';
import '../../src/index.js';
import { MemoryStorage } from '../../src/protocols/memory.js';
import { openImage, closeNode } from '../../src/block/open.js';
import { BlockBackend } from '../../src/block/backend.js';
import { BlockError } from '../../src/block/errors.js';
import { faultyStorage, type FaultPlan } from '../../src/filters/fault.js';
import { seededBytes } from '../helpers/qemu.js';

const SIZE = 256 * 1024;

/** A seeded workload of writes (some unaligned, some zero writes), applied to a reference model too. */
function workload(seed: number, n: number): Array<{ kind: 'write' | 'zero'; offset: number; data: Uint8Array }> {
  const rnd = seededBytes(n * 8, seed);
  const ops = [];
  for (let i = 0; i < n; i++) {
    const offset = ((rnd[i * 8]! << 10) | (rnd[i * 8 + 1]! << 2)) % (SIZE - 9000);
    const len = 1 + (((rnd[i * 8 + 2]! << 8) | rnd[i * 8 + 3]!) % 8192);
    const kind = rnd[i * 8 + 4]! < 40 ? ('zero' as const) : ('write' as const);
    ops.push({ kind, offset, data: kind === 'zero' ? new Uint8Array(len) : seededBytes(len, seed * 1000 + i + 1) });
  }
  return ops;
}

async function open(plan: FaultPlan, initial = new Uint8Array(SIZE)) {
  const mem = new MemoryStorage();
  mem.put('disk.raw', initial);
  const storage = faultyStorage(mem, plan);
  const bs = await openImage(storage, 'disk.raw', { format: 'raw' });
  return { mem, storage, bs, blk: new BlockBackend(bs) };
}

describe('fault filter', () => {
  it('sits between the format node and its file and passes everything through', async () => {
    const { mem, bs, blk, storage } = await open({});
    expect(bs.driver.name).toBe('raw');
    expect(bs.file!.node.driver.name).toBe('fault');
    expect(bs.file!.node.file!.node.driver.name).toBe('memory');
    const ops = workload(7, 40);
    const model = new Uint8Array(SIZE);
    for (const op of ops) {
      if (op.kind === 'zero') await blk.writeZeroes(op.offset, op.data.length);
      else await blk.write(op.offset, op.data.length, op.data);
      model.set(op.data, op.offset);
    }
    await blk.flush();
    expect(storage.counters.writes).toBe(40);
    expect(storage.counters.flushes).toBe(1);
    expect(Buffer.from(mem.get('disk.raw')!).equals(Buffer.from(model))).toBe(true);
    await closeNode(bs);
  });

  it('after a power cut at write N the file holds exactly the first N writes, while the process still sees all', async () => {
    const ops = workload(11, 30);
    for (const cut of [0, 1, 5, 17, 29, 30]) {
      const { mem, blk, storage, bs } = await open({ dropWritesAfter: cut });
      const disk = new Uint8Array(SIZE);
      const seen = new Uint8Array(SIZE);
      for (const [i, op] of ops.entries()) {
        if (op.kind === 'zero') await blk.writeZeroes(op.offset, op.data.length);
        else await blk.write(op.offset, op.data.length, op.data);
        if (i < cut) disk.set(op.data, op.offset);
        seen.set(op.data, op.offset);
        await blk.flush();
      }
      const back = new Uint8Array(SIZE);
      await blk.read(0, SIZE, back);
      expect(Buffer.from(back).equals(Buffer.from(seen)), `process view, cut ${cut}`).toBe(true);
      expect(Buffer.from(mem.get('disk.raw')!).equals(Buffer.from(disk)), `disk, cut ${cut}`).toBe(true);
      expect(storage.counters.writes).toBe(30);
      expect(storage.counters.dropped).toBe(30 - cut);
      await closeNode(bs);
      expect(Buffer.from(mem.get('disk.raw')!).equals(Buffer.from(disk)), `disk after close, cut ${cut}`).toBe(true);
    }
  });

  it('drops file growth after the cut but lets the process read it back', async () => {
    const mem = new MemoryStorage();
    mem.put('f', new Uint8Array(4096));
    const storage = faultyStorage(mem, { dropWritesAfter: 1 });
    const proto = await storage.openProtocol('f', { readOnly: false });
    const { bdrvPwrite, bdrvPread, bdrvTruncate } = await import('../../src/block/io.js');
    await bdrvPwrite(proto, 0, 3, new Uint8Array([1, 2, 3]));
    await bdrvPwrite(proto, 8192, 4, new Uint8Array([4, 5, 6, 7]));
    expect(mem.get('f')!.length).toBe(4096);
    const buf = new Uint8Array(8196);
    await bdrvPread(proto, 0, 8196, buf);
    expect([...buf.subarray(0, 3)]).toEqual([1, 2, 3]);
    expect([...buf.subarray(8192)]).toEqual([4, 5, 6, 7]);
    await bdrvTruncate(proto, 100);
    expect(mem.get('f')!.length).toBe(4096);
    const again = new Uint8Array(200);
    await bdrvPread(proto, 0, 200, again);
    expect(again.subarray(100).every((b) => b === 0)).toBe(true);
  });

  it('fails every write after the Nth with EIO, and the file keeps the first N', async () => {
    const ops = workload(3, 10);
    const { mem, blk, storage } = await open({ failWritesAfter: 4 });
    const disk = new Uint8Array(SIZE);
    for (const [i, op] of ops.entries()) {
      const p = op.kind === 'zero' ? blk.writeZeroes(op.offset, op.data.length) : blk.write(op.offset, op.data.length, op.data);
      if (i < 4) {
        await p;
        disk.set(op.data, op.offset);
      } else {
        await expect(p).rejects.toMatchObject({ code: 'EIO' });
      }
    }
    expect(storage.counters.failed).toBe(6);
    expect(Buffer.from(mem.get('disk.raw')!).equals(Buffer.from(disk))).toBe(true);
  });

  it('fails requests touching a range with the given code, a given number of times', async () => {
    const { blk } = await open({
      rules: [
        { op: 'write', offset: 65536, bytes: 4096, code: 'ENOSPC', times: 2 },
        { op: 'read', offset: 131072, bytes: 1, code: 'EIO' },
      ],
    });
    const data = new Uint8Array(512).fill(9);
    // As a device that reports errors (werror=report) and tracks iostatus.
    blk.werror = 'report';
    blk.iostatusEnabled = true;
    await blk.write(0, 512, data);
    await expect(blk.write(65536 + 4000, 512, data, {}, { errorPolicy: true })).rejects.toSatisfy((e: unknown) => e instanceof BlockError && e.code === 'ENOSPC');
    expect(blk.iostatus).toBe('nospace');
    await expect(blk.write(65536, 1, data)).rejects.toMatchObject({ code: 'ENOSPC' });
    await blk.write(65536, 512, data); // the rule fired twice and is spent
    await blk.read(131072 - 512, 512, new Uint8Array(512));
    await expect(blk.read(131072 - 511, 512, new Uint8Array(512))).rejects.toMatchObject({ code: 'EIO' });
  });

  it('can fail flushes (a flush reaches it only when something was written since the last good one, as QEMU\'s write_gen)', async () => {
    const { blk, storage } = await open({ rules: [{ op: 'flush', code: 'EIO', times: 1 }] });
    await blk.flush();
    expect(storage.counters.flushes).toBe(0);
    await blk.write(0, 512, new Uint8Array(512).fill(1));
    await expect(blk.flush()).rejects.toMatchObject({ code: 'EIO' });
    // The failed flush left the write unflushed: the next one goes down again, and the rule is spent.
    await blk.flush();
    expect(storage.counters.flushes).toBe(2);
    await blk.flush();
    expect(storage.counters.flushes).toBe(2);
  });
});
