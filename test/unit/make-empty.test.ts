/**
 * bdrvMakeEmpty (QEMU's bdrv_make_empty) through the request path: the
 * format's makeEmpty hook drops every cluster, so the image reads through to
 * its backing file, and the node's dirty bitmaps see the whole disk change —
 * commit empties its top image this way, and a bitmap on that image must not
 * miss it (before, commit called qcow2's discard directly and bitmaps stayed clean).
 */
import { describe, expect, it } from 'vitest';
import '../../src/drivers.js';
import { MemoryStorage } from '../../src/protocols/memory.js';
import { openImage, closeNode } from '../../src/block/open.js';
import { bdrvMakeEmpty, bdrvPread, bdrvPwrite } from '../../src/block/io.js';
import { addDirtyBitmap } from '../../src/block/dirty-bitmap.js';
import { createImage, planCreate } from '../../src/img/create.js';
import { isAllocated } from '../../src/block/status.js';
import { seededBytes } from '../helpers/random.js';

const MiB = 1 << 20;

async function make(st: MemoryStorage, filename: string, format: string, size: number, backing?: string): Promise<void> {
  await createImage(st, await planCreate(st, { filename, format, size, backingFile: backing, backingFormat: backing ? 'qcow2' : undefined }));
}

describe('bdrvMakeEmpty', () => {
  it('qcow2 overlay: reads fall through to the backing file afterwards, nothing stays allocated, a dirty bitmap covers the disk', async () => {
    const st = new MemoryStorage();
    await make(st, 'base.qcow2', 'qcow2', 2 * MiB);
    const base = await openImage(st, 'base.qcow2', { format: 'qcow2', readOnly: false });
    const baseData = seededBytes(2 * MiB, 1);
    await bdrvPwrite(base, 0, baseData.length, baseData);
    await closeNode(base);
    await make(st, 'top.qcow2', 'qcow2', 2 * MiB, 'base.qcow2');

    const top = await openImage(st, 'top.qcow2', { format: 'qcow2', readOnly: false });
    try {
      await bdrvPwrite(top, 70_000, 300_000, seededBytes(300_000, 2));
      const bm = addDirtyBitmap(top, 'b', { granularity: 65536 });
      expect(bm.count()).toBe(0);
      await bdrvMakeEmpty(top);
      expect(bm.count(), 'dirty bytes after make-empty').toBe(2 * MiB);
      const got = new Uint8Array(2 * MiB);
      await bdrvPread(top, 0, got.length, got);
      expect(Buffer.from(got).equals(Buffer.from(baseData)), 'the image reads as its backing file').toBe(true);
      const a = await isAllocated(top, 0, 2 * MiB);
      expect(a).toEqual({ allocated: false, pnum: 2 * MiB });
    } finally {
      await closeNode(top);
    }
  });

  it('refuses read-only nodes and formats without a makeEmpty hook (raw), naming the image', async () => {
    const st = new MemoryStorage();
    await make(st, 'r.raw', 'raw', MiB);
    const raw = await openImage(st, 'r.raw', { format: 'raw', readOnly: false });
    await expect(bdrvMakeEmpty(raw)).rejects.toThrow('r.raw: the raw format cannot be emptied');
    await closeNode(raw);
    await make(st, 'q.qcow2', 'qcow2', MiB);
    const ro = await openImage(st, 'q.qcow2', { format: 'qcow2', readOnly: true });
    await expect(bdrvMakeEmpty(ro)).rejects.toMatchObject({ code: 'EPERM' });
    await closeNode(ro);
  });
});
