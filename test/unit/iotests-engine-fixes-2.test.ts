/**
 * More engine behaviours QEMU's iotests found (issue 19), each reproduced on
 * images made in memory and named after the iotest.
 */
import { describe, expect, it } from 'vitest';
import '../../src/drivers.js';
import { MemoryStorage } from '../../src/protocols/memory.js';
import { createImage, planCreate } from '../../src/img/create.js';
import { closeNode, openImage } from '../../src/block/open.js';
import { openTree } from '../../src/block/open-tree.js';
import { bdrvLoadVmState, bdrvPread, bdrvPwrite, bdrvSaveVmState } from '../../src/block/io.js';
import { BlockBackend } from '../../src/block/backend.js';
import { blockStatus, BDRV_BLOCK_ALLOCATED, BDRV_BLOCK_DATA, isAllocated } from '../../src/block/status.js';
import { BlockError } from '../../src/block/errors.js';

async function qcow2(st: MemoryStorage, filename: string, size: number, extra: { backingFile?: string; backingFormat?: string; options?: string[] } = {}): Promise<void> {
  await createImage(st, await planCreate(st, { filename, format: 'qcow2', size, ...extra }));
}

describe('copy-on-read without a bottom copies what the top does not hold (197, 215)', () => {
  it('an image without a backing file allocates what a copy-on-read read covers, as qemu-io -C', async () => {
    const st = new MemoryStorage();
    await qcow2(st, 'a.qcow2', 1024);
    const bs = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: false });
    try {
      const blk = new BlockBackend(bs, { copyOnRead: true });
      await blk.read(0, 1024, new Uint8Array(1024));
      expect((await isAllocated(bs, 0, 1024)).allocated).toBe(true);
    } finally {
      await closeNode(bs);
    }
  });

  it('a piece holding backing data and zeros is copied whole as data (QEMU judges the whole piece)', async () => {
    const st = new MemoryStorage();
    const mib = 1 << 20;
    await qcow2(st, 'base.qcow2', 4 * mib);
    const base = await openImage(st, 'base.qcow2', { format: 'qcow2', readOnly: false });
    await bdrvPwrite(base, mib, 65536, new Uint8Array(65536).fill(1));
    await closeNode(base);
    await qcow2(st, 'top.qcow2', 4 * mib, { backingFile: 'base.qcow2', backingFormat: 'qcow2' });
    const top = await openImage(st, 'top.qcow2', { format: 'qcow2', readOnly: false });
    try {
      const buf = new Uint8Array(mib + 65536);
      await new BlockBackend(top, { copyOnRead: true }).read(512 * 1024, buf.length, buf);
      expect(buf[mib / 2]).toBe(1);
      const st0 = await blockStatus(top, false, 512 * 1024, 4 * mib - 512 * 1024);
      // The whole range read, zeros around the backing data included, is now the top's own data.
      expect(st0.status & (BDRV_BLOCK_ALLOCATED | BDRV_BLOCK_DATA)).toBe(BDRV_BLOCK_ALLOCATED | BDRV_BLOCK_DATA);
      expect(st0.pnum).toBe(mib + 65536);
    } finally {
      await closeNode(top);
    }
  });

  it('the copy-on-read filter refuses a read-only open, as QEMU ("Block node is read-only")', async () => {
    const st = new MemoryStorage();
    await qcow2(st, 'a.qcow2', 65536);
    const err = await openTree(st, { driver: 'copy-on-read', file: { driver: 'qcow2', file: { filename: 'a.qcow2' } } }, { readOnly: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BlockError);
    expect((err as BlockError).message).toBe('Block node is read-only');
  });
});

describe('the VM state area (022, 026, 029)', () => {
  it('qcow2 keeps it past the disk: it reads back, and the guest disk does not see it', async () => {
    const st = new MemoryStorage();
    await qcow2(st, 'a.qcow2', 1 << 20);
    const bs = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: false });
    try {
      await bdrvSaveVmState(bs, 4096, 8192, new Uint8Array(8192).fill(9));
      const back = new Uint8Array(8192);
      await bdrvLoadVmState(bs, 4096, 8192, back);
      expect(back.every((b) => b === 9)).toBe(true);
      const disk = new Uint8Array(1 << 20);
      await bdrvPread(bs, 0, disk.length, disk);
      expect(disk.every((b) => b === 0)).toBe(true);
    } finally {
      await closeNode(bs);
    }
  });

  it('raw keeps none: ENOTSUP', async () => {
    const st = new MemoryStorage();
    await createImage(st, await planCreate(st, { filename: 'a.raw', format: 'raw', size: 65536 }));
    const bs = await openImage(st, 'a.raw', { format: 'raw', readOnly: false });
    try {
      const err = await bdrvSaveVmState(bs, 0, 512, new Uint8Array(512)).catch((e: unknown) => e);
      expect((err as BlockError).code).toBe('ENOTSUP');
    } finally {
      await closeNode(bs);
    }
  });
});

describe('a qcow2 data file given as an options tree (289)', () => {
  it('opens the tree (a filter over the file) as the data file: an error injected there fails the write', async () => {
    const st = new MemoryStorage();
    await qcow2(st, 'a.qcow2', 65536, { options: ['data_file=a.data'] });
    const tree = {
      driver: 'qcow2',
      file: { driver: 'file', filename: 'a.qcow2' },
      'data-file': {
        driver: 'raw',
        file: { driver: 'blkdebug', 'inject-error': [{ event: 'write_aio', errno: '5', once: 'on' }], image: { driver: 'file', filename: 'a.data' } },
      },
    };
    const bs = await openTree(st, tree, { readOnly: false });
    try {
      const err = await bdrvPwrite(bs, 0, 65536, new Uint8Array(65536).fill(1)).catch((e: unknown) => e);
      expect((err as BlockError).code).toBe('EIO');
    } finally {
      await closeNode(bs);
    }
  });
});
