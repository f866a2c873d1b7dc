/**
 * Engine bugs QEMU's iotests found (issue 19, qcow2/raw tests without
 * blkdebug): each reproduced on images made in memory, named after the iotest.
 */
import { describe, expect, it } from 'vitest';
import '../../src/drivers.js';
import { MemoryStorage } from '../../src/protocols/memory.js';
import { createImage, planCreate } from '../../src/img/create.js';
import { closeNode, openImage } from '../../src/block/open.js';
import { bdrvPwrite, bdrvPwriteZeroes } from '../../src/block/io.js';
import { commitImage } from '../../src/img/commit.js';
import { check, guest } from '../helpers/qcow2-check.js';

async function qcow2(st: MemoryStorage, filename: string, size: number, extra: { backingFile?: string; backingFormat?: string } = {}): Promise<void> {
  await createImage(st, await planCreate(st, { filename, format: 'qcow2', size, ...extra }));
}

describe('qemu-img commit of zeros (313)', () => {
  it('a range the overlay holds as zeros leaves base unallocated, as QEMU active commit (a mirror with unmap) does', async () => {
    const st = new MemoryStorage();
    const size = 1 << 20;
    await qcow2(st, 'a.qcow2', size);
    const base = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: false });
    await bdrvPwrite(base, 0, size, new Uint8Array(size).fill(1));
    await closeNode(base);
    await qcow2(st, 'top.qcow2', size, { backingFile: 'a.qcow2', backingFormat: 'qcow2' });
    const top = await openImage(st, 'top.qcow2', { format: 'qcow2', readOnly: false });
    await bdrvPwriteZeroes(top, 0, size);
    await closeNode(top);
    await commitImage(st, { filename: 'top.qcow2' });
    const res = await check(st, { leaks: false, errors: false });
    expect(res.corruptions).toBe(0);
    expect(res.leaks).toBe(0);
    expect(res.allocatedClusters).toBe(0);
    expect((await guest(st)).every((b) => b === 0)).toBe(true);
  });
});
