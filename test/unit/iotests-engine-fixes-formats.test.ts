/**
 * Engine behaviours QEMU's iotests found for the formats besides qcow2 and
 * raw (vmdk, vpc, vdi, vhdx, qed; issue 19), each reproduced on images made
 * here and named after the iotest.
 */
import { describe, expect, it } from 'vitest';
import '../../src/drivers.js';
import * as path from 'node:path';
import { createImage, planCreate } from '../../src/img/create.js';
import { closeNode, openImage } from '../../src/block/open.js';
import { bdrvPread, bdrvPwrite, bdrvTruncate } from '../../src/block/io.js';
import { openTree } from '../../src/block/open-tree.js';
import { commitImage } from '../../src/img/commit.js';
import { rebaseImage } from '../../src/img/rebase.js';
import { FileStorage } from '../../src/protocols/file.js';
import { tmpDir } from '../helpers/qemu.js';

const MIB = 1 << 20;

async function readByte(st: FileStorage, filename: string, format: string, offset: number): Promise<number> {
  const bs = await openImage(st, filename, { format, readOnly: true });
  try {
    const b = new Uint8Array(512);
    await bdrvPread(bs, offset, 512, b);
    return b[0]!;
  } finally {
    await closeNode(bs);
  }
}

describe('qemu-img commit for formats that cannot be emptied (020)', () => {
  it('vmdk: the data reaches the base and the top keeps its own (make_empty is ENOTSUP, which qemu-img ignores)', async () => {
    const dir = tmpDir('blocktab-020-');
    const st = new FileStorage();
    const base = path.join(dir, 't.vmdk.base');
    const top = path.join(dir, 't.vmdk');
    await createImage(st, await planCreate(st, { filename: base, format: 'vmdk', size: 6 * 1024 * MIB, options: ['zeroed_grain=on'] }));
    await createImage(st, await planCreate(st, { filename: top, format: 'vmdk', size: 6 * 1024 * MIB, backingFile: base, backingFormat: 'vmdk', options: ['zeroed_grain=on'] }));
    const t = await openImage(st, top, { format: 'vmdk', readOnly: false });
    await bdrvPwrite(t, 4 * 1024 * MIB + 65536, 65536, new Uint8Array(65536).fill(4));
    await closeNode(t);
    await commitImage(st, { filename: top });
    expect(await readByte(st, base, 'vmdk', 4 * 1024 * MIB + 65536)).toBe(4);
    expect(await readByte(st, top, 'vmdk', 4 * 1024 * MIB + 65536)).toBe(4);
  });
});

describe.each(['vmdk', 'qed'])('%s: blkdebug sees the data writes and reads (020)', (format) => {
  it('create -b json:{…} opens the name as options, and commit fails with the error blkdebug injects on write_aio', async () => {
    const dir = tmpDir('blocktab-020-');
    const st = new FileStorage();
    const base = path.join(dir, `t.${format}.base`);
    const top = path.join(dir, `t.${format}`);
    await createImage(st, await planCreate(st, { filename: base, format, size: MIB }));
    const backing = `json:{'driver': '${format}', 'file': { 'driver': 'blkdebug', 'inject-error': [{ 'event': 'write_aio', 'errno': 28, 'once': true }], 'image': { 'driver': 'file', 'filename': '${base}' }}}`;
    await createImage(st, await planCreate(st, { filename: top, format, backingFile: backing, backingFormat: format }));
    const t = await openImage(st, top, { format, readOnly: false });
    await bdrvPwrite(t, 0, 65536, new Uint8Array(65536).fill(3));
    await closeNode(t);
    await expect(commitImage(st, { filename: top })).rejects.toThrow('Block job failed: No space left on device');
  });

  it('a read of allocated data raises read_aio', async () => {
    const dir = tmpDir('blocktab-020-');
    const st = new FileStorage();
    const img = path.join(dir, `t.${format}`);
    await createImage(st, await planCreate(st, { filename: img, format, size: MIB }));
    const w = await openImage(st, img, { format, readOnly: false });
    await bdrvPwrite(w, 0, 65536, new Uint8Array(65536).fill(3));
    await closeNode(w);
    const bs = await openTree(st, { driver: format, file: { driver: 'blkdebug', 'inject-error': [{ event: 'read_aio', errno: '5' }], image: { driver: 'file', filename: img } } }, { readOnly: true });
    try {
      await expect(bdrvPread(bs, 0, 512, new Uint8Array(512))).rejects.toMatchObject({ code: 'EIO' });
    } finally {
      await closeNode(bs);
    }
  });
});

describe('qed: qemu-img rebase changes the backing file in the header (050)', () => {
  it('the new name and format are written after the header and read back; the guest still sees the data of the old chain', async () => {
    const dir = tmpDir('blocktab-050-');
    const st = new FileStorage();
    const [old, neu, top] = ['t.qed.old', 't.qed.new', 't.qed'].map((n) => path.join(dir, n)) as [string, string, string];
    for (const [f, fill] of [[old, 0x40], [neu, 0x5a]] as const) {
      await createImage(st, await planCreate(st, { filename: f, format: 'qed', size: 10 * MIB }));
      const bs = await openImage(st, f, { format: 'qed', readOnly: false });
      await bdrvPwrite(bs, 0, MIB, new Uint8Array(MIB).fill(fill));
      await closeNode(bs);
    }
    await createImage(st, await planCreate(st, { filename: top, format: 'qed', size: 10 * MIB, backingFile: old, backingFormat: 'qed' }));
    await rebaseImage(st, { filename: top, backing: neu, backingFormat: 'qed' });
    const bs = await openImage(st, top, { format: 'qed', readOnly: true });
    try {
      expect(bs.backingFile).toBe(neu);
      const b = new Uint8Array(512);
      await bdrvPread(bs, 0, 512, b);
      expect(b[0]).toBe(0x40);
    } finally {
      await closeNode(bs);
    }
    // A raw backing file is marked as not to be probed; removing the backing file clears both features.
    await rebaseImage(st, { filename: top, backing: neu, backingFormat: 'raw', unsafe: true });
    const raw = await openImage(st, top, { format: 'qed', readOnly: true, backing: false });
    expect(raw.backingFormat).toBe('raw');
    await closeNode(raw);
    await rebaseImage(st, { filename: top, backing: '', unsafe: true });
    const none = await openImage(st, top, { format: 'qed', readOnly: true });
    expect(none.backingFile).toBe(null);
    await closeNode(none);
  });
});

describe('vmdk: flat subformats refuse what only sparse extents hold (059)', () => {
  it.each(['monolithicFlat', 'twoGbMaxExtentFlat'])('%s with zeroed_grain=on, or with a backing file, fails in QEMU words', async (subformat) => {
    const dir = tmpDir('blocktab-059-');
    const st = new FileStorage();
    const img = path.join(dir, 't.vmdk');
    await expect(createImage(st, await planCreate(st, { filename: img, format: 'vmdk', size: 2048 * MIB, options: [`subformat=${subformat},zeroed_grain=on`] }))).rejects.toThrow(
      `${img}: Flat image can't enable zeroed grain`,
    );
    const base = path.join(dir, 'b.vmdk');
    await createImage(st, await planCreate(st, { filename: base, format: 'vmdk', size: MIB }));
    await expect(createImage(st, await planCreate(st, { filename: img, format: 'vmdk', backingFile: base, backingFormat: 'vmdk', options: [`subformat=${subformat}`] }))).rejects.toThrow(
      `${img}: Flat image can't have backing file`,
    );
  });
});

describe('qed: resize grows the image in the header (025, 048)', () => {
  it('grows, keeps the data, reads zeros in the new part, and refuses to shrink or preallocate as QEMU does', async () => {
    const dir = tmpDir('blocktab-025-');
    const st = new FileStorage();
    const img = path.join(dir, 't.qed');
    await createImage(st, await planCreate(st, { filename: img, format: 'qed', size: 128 * MIB }));
    const bs = await openImage(st, img, { format: 'qed', readOnly: false });
    try {
      await bdrvPwrite(bs, 128 * MIB - 512, 512, new Uint8Array(512).fill(7));
      await bdrvTruncate(bs, 384 * MIB);
      await expect(bdrvTruncate(bs, 256 * MIB)).rejects.toThrow('Shrinking images is currently not supported');
      await expect(bdrvTruncate(bs, 512 * MIB, false, 'full')).rejects.toThrow("Unsupported preallocation mode 'full'");
      await bdrvPwrite(bs, 300 * MIB, 512, new Uint8Array(512).fill(9));
    } finally {
      await closeNode(bs);
    }
    const ro = await openImage(st, img, { format: 'qed', readOnly: true });
    try {
      expect(ro.totalBytes).toBe(384 * MIB);
      const b = new Uint8Array(512);
      await bdrvPread(ro, 128 * MIB - 512, 512, b);
      expect(b[0]).toBe(7);
      await bdrvPread(ro, 300 * MIB, 512, b);
      expect(b[0]).toBe(9);
      await bdrvPread(ro, 200 * MIB, 512, b);
      expect(b.every((x) => x === 0)).toBe(true);
    } finally {
      await closeNode(ro);
    }
  });
});
