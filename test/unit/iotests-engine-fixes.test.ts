/**
 * Engine bugs QEMU's iotests found (issue 19, qcow2/raw tests without
 * blkdebug): each reproduced on images made in memory, named after the iotest.
 */
import { describe, expect, it } from 'vitest';
import '../../src/drivers.js';
import { MemoryStorage } from '../../src/protocols/memory.js';
import { createImage, planCreate } from '../../src/img/create.js';
import { closeNode, openImage } from '../../src/block/open.js';
import { bdrvPdiscard, bdrvPread, bdrvPwrite, bdrvPwriteZeroes } from '../../src/block/io.js';
import { rebaseImage } from '../../src/img/rebase.js';
import { commitImage } from '../../src/img/commit.js';
import { check, guest } from '../helpers/qcow2-check.js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FileStorage } from '../../src/protocols/file.js';
import { blockStatus, BDRV_BLOCK_ALLOCATED, BDRV_BLOCK_DATA, BDRV_BLOCK_ZERO } from '../../src/block/status.js';
import { tmpDir } from '../helpers/qemu.js';
import { BlockBackend } from '../../src/block/backend.js';
import { openTree } from '../../src/block/open-tree.js';
import { bdrvReopen } from '../../src/block/reopen.js';

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

describe('a host file whose length is not a multiple of 512 (101, 221)', () => {
  it('reads and maps as its length rounded up to 512 bytes, the tail a zero hole', async () => {
    const f = path.join(tmpDir('blocktab-sector-'), 'a.raw');
    fs.writeFileSync(f, new Uint8Array(65537).fill(7, 65536));
    const bs = await openImage(new FileStorage(), f, { format: 'raw', readOnly: true });
    try {
      expect(bs.totalBytes).toBe(66048);
      const tail = new Uint8Array(512).fill(0xff);
      await bdrvPread(bs, 65536, 512, tail);
      expect(tail[0]).toBe(7);
      expect(tail.subarray(1).every((b) => b === 0)).toBe(true);
      const st = await blockStatus(bs, true, 65537, 511);
      expect(st.pnum).toBe(511);
      expect(st.status & (BDRV_BLOCK_ZERO | BDRV_BLOCK_DATA)).toBe(BDRV_BLOCK_ZERO);
    } finally {
      await closeNode(bs);
    }
  });
});

describe('refcount block placement (313)', () => {
  it('a refcount block a data run needs lands right after the run, as QEMU allocates the run first', async () => {
    const st = new MemoryStorage();
    const cs = 4096;
    await createImage(st, await planCreate(st, { filename: 'a.qcow2', format: 'qcow2', size: 2038 * cs, options: [`cluster_size=${cs},refcount_bits=64`] }));
    const bs = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: false });
    await bdrvPwrite(bs, 0, 2038 * cs, new Uint8Array(2038 * cs).fill(1));
    await closeNode(bs);
    const img = st.get('a.qcow2')!;
    const dv = new DataView(img.buffer, img.byteOffset);
    const reftable = Number(dv.getBigUint64(48));
    const blocks = [0, 1, 2, 3, 4].map((i) => Number(dv.getBigUint64(reftable + 8 * i)));
    // Header, reftable, refblock 0, L1, L2 at clusters 0-4; 512-cluster runs of data; each new L2 table before its run.
    expect(blocks).toEqual([0x2000, 0x205000, 0x407000, 0x609000, 0x801000]);
  });
});

describe('qcow2 write-zeroes without a backing file (154)', () => {
  it('makes zero clusters (allocated, reading as zeros), the partial tail cluster included, as QEMU', async () => {
    const st = new MemoryStorage();
    const size = (1 << 20) + 2048;
    await createImage(st, await planCreate(st, { filename: 'a.qcow2', format: 'qcow2', size, options: ['cluster_size=4096'] }));
    const bs = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: false });
    try {
      await bdrvPwriteZeroes(bs, 0, 65536);
      await bdrvPwriteZeroes(bs, 1 << 20, 512);
      const head = await blockStatus(bs, true, 0, 65536);
      expect(head.status & (BDRV_BLOCK_ALLOCATED | BDRV_BLOCK_ZERO)).toBe(BDRV_BLOCK_ALLOCATED | BDRV_BLOCK_ZERO);
      expect(head.pnum).toBe(65536);
      const tail = await blockStatus(bs, true, 1 << 20, 2048);
      expect(tail.status & (BDRV_BLOCK_ALLOCATED | BDRV_BLOCK_ZERO)).toBe(BDRV_BLOCK_ALLOCATED | BDRV_BLOCK_ZERO);
      expect(tail.pnum).toBe(2048);
    } finally {
      await closeNode(bs);
    }
  });
});

describe('qcow2 virtual size too large to open (054)', () => {
  it("a header size whose L1 index passes INT_MAX is refused with QEMU's words", async () => {
    const st = new MemoryStorage();
    await qcow2(st, 'a.qcow2', 4 << 30);
    const img = st.get('a.qcow2')!.slice();
    new DataView(img.buffer).setBigUint64(24, 1n << 60n);
    st.put('a.qcow2', img);
    await expect(openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: true })).rejects.toThrow(/^a\.qcow2: Image is too big$/);
  });
});

describe('rebase onto a backing file from no old backing (252)', () => {
  it('writes the old zeros as zero clusters where the new backing has data, as qemu-img 7.2', async () => {
    const st = new MemoryStorage();
    const cs = 65536;
    await qcow2(st, 'a.qcow2', 2 * cs);
    await qcow2(st, 'new.qcow2', 2 * cs);
    const nb = await openImage(st, 'new.qcow2', { format: 'qcow2', readOnly: false });
    await bdrvPwrite(nb, 0, cs, new Uint8Array(cs).fill(0x11));
    await closeNode(nb);
    await rebaseImage(st, { filename: 'a.qcow2', backing: 'new.qcow2', backingFormat: 'qcow2' });
    const bs = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: true });
    try {
      const first = await blockStatus(bs, true, 0, cs);
      expect(first.status & (BDRV_BLOCK_ALLOCATED | BDRV_BLOCK_ZERO | BDRV_BLOCK_DATA)).toBe(BDRV_BLOCK_ALLOCATED | BDRV_BLOCK_ZERO);
      const buf = new Uint8Array(cs).fill(0xff);
      await bdrvPread(bs, 0, cs, buf);
      expect(buf.every((b) => b === 0)).toBe(true);
    } finally {
      await closeNode(bs);
    }
  });
});

describe('qcow2 preallocation=falloc on the host file system (243)', () => {
  it('allocates the data area in the image file and in an external data file', async () => {
    const dir = tmpDir('blocktab-falloc-');
    const st = new FileStorage();
    const size = 4 << 20;
    const img = path.join(dir, 'a.qcow2');
    await createImage(st, await planCreate(st, { filename: img, format: 'qcow2', size, options: ['preallocation=falloc'] }));
    expect(fs.statSync(img).blocks * 512).toBeGreaterThanOrEqual(size);
    const ext = path.join(dir, 'b.qcow2');
    await createImage(st, await planCreate(st, { filename: ext, format: 'qcow2', size, options: [`data_file=${path.join(dir, 'b.data')},preallocation=falloc`] }));
    expect(fs.statSync(path.join(dir, 'b.data')).blocks * 512).toBeGreaterThanOrEqual(size);
    expect(fs.statSync(ext).blocks * 512).toBeLessThan(1 << 20);
  });
});

describe('qcow2 discard frees clusters for the next allocation (250)', () => {
  it('a write after a discard in the same session reuses the discarded host clusters, as QEMU', async () => {
    const st = new MemoryStorage();
    const cs = 65536;
    await qcow2(st, 'a.qcow2', 4 << 20);
    const bs = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: false });
    try {
      await bdrvPwrite(bs, 0, 2 * cs, new Uint8Array(2 * cs).fill(1));
      const before = await blockStatus(bs, true, 0, cs);
      await bdrvPdiscard(bs, 0, 2 * cs);
      await bdrvPwrite(bs, 1 << 20, cs, new Uint8Array(cs).fill(2));
      const after = await blockStatus(bs, true, 1 << 20, cs);
      expect(after.map).toBe(before.map);
    } finally {
      await closeNode(bs);
    }
  });
});

describe('qcow2 unaligned refcount block offset (305)', () => {
  it("marks the image corrupt with QEMU's words on stderr and fails the write with EIO", async () => {
    const st = new MemoryStorage();
    await qcow2(st, 'a.qcow2', 1 << 20);
    const img = st.get('a.qcow2')!.slice();
    const dv = new DataView(img.buffer);
    const reftable = Number(dv.getBigUint64(48));
    dv.setBigUint64(reftable, dv.getBigUint64(reftable) + 0x200n);
    st.put('a.qcow2', img);
    const warnings: string[] = [];
    const bs = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: false, warn: (m) => warnings.push(m) });
    try {
      await expect(bdrvPwrite(bs, 0, 512, new Uint8Array(512).fill(1))).rejects.toMatchObject({ code: 'EIO' });
      expect(warnings).toEqual(['qcow2: Marking image as corrupt: Refblock offset 0x20200 unaligned (reftable index: 0); further corruption events will be suppressed']);
    } finally {
      await closeNode(bs).catch(() => {});
    }
  });
});

describe('lazy refcounts and a write-through backend (039)', () => {
  it('a crash after a flushed write leaves the L2 entry and the dirty bit on disk but not the data cluster refcount, as QEMU', async () => {
    const st = new MemoryStorage();
    await createImage(st, await planCreate(st, { filename: 'a.qcow2', format: 'qcow2', size: 1 << 20, options: ['lazy_refcounts=on'] }));
    const bs = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: false });
    const blk = new BlockBackend(bs);
    blk.writeCacheEnabled = false;
    await blk.write(0, 512, new Uint8Array(512).fill(0x5a));
    // The process dies here: what is on disk is a copy of the file now, never closed.
    const crashed = new MemoryStorage();
    crashed.put('a.qcow2', st.get('a.qcow2')!.slice());
    await closeNode(bs);
    const head = crashed.get('a.qcow2')!;
    expect(head[79]! & 1).toBe(1); // incompatible_features: dirty
    const res = await check(crashed, { leaks: false, errors: false });
    expect(res.messages).toContain('ERROR cluster 5 refcount=0 reference=1');
    expect(res.corruptions).toBe(2);
    expect((await guest(crashed))[0]).toBe(0x5a);
  });

  it('without lazy refcounts the same crash leaves a clean image', async () => {
    const st = new MemoryStorage();
    await qcow2(st, 'a.qcow2', 1 << 20);
    const bs = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: false });
    const blk = new BlockBackend(bs);
    blk.writeCacheEnabled = false;
    await blk.write(0, 512, new Uint8Array(512).fill(0x5a));
    const crashed = new MemoryStorage();
    crashed.put('a.qcow2', st.get('a.qcow2')!.slice());
    await closeNode(bs);
    const res = await check(crashed, { leaks: false, errors: false });
    expect(res.corruptions + res.leaks).toBe(0);
    expect((await guest(crashed))[0]).toBe(0x5a);
  });
});

describe('reopen with options (133, 039)', () => {
  async function chain(st: MemoryStorage): Promise<void> {
    await qcow2(st, 'b.qcow2', 1 << 20);
    await qcow2(st, 'a.qcow2', 1 << 20, { backingFile: 'b.qcow2', backingFormat: 'qcow2' });
  }

  it("refuses a node-name or driver change with QEMU's words, and takes unchanged ones", async () => {
    const st = new MemoryStorage();
    await chain(st);
    const bs = await openTree(st, { filename: 'a.qcow2', 'node-name': 'top', backing: { 'node-name': 'low' } }, {});
    try {
      for (const [opts, key] of [
        [{ 'node-name': 'foo' }, 'node-name'],
        [{ 'file.node-name': 'foo' }, 'node-name'],
        [{ 'backing.node-name': 'foo' }, 'node-name'],
        [{ driver: 'raw' }, 'driver'],
        [{ 'file.driver': 'qcow2' }, 'driver'],
        [{ 'backing.driver': 'file' }, 'driver'],
        [{ 'no-such-option': 'x' }, 'no-such-option'],
      ] as const) {
        await expect(bdrvReopen(bs, opts)).rejects.toThrow(`Cannot change the option '${key}'`);
      }
      await expect(bdrvReopen(bs, { 'read-only': 'foo' })).rejects.toThrow("Parameter 'read-only' expects 'on' or 'off'");
      await bdrvReopen(bs, { 'node-name': 'top', 'backing.node-name': 'low', driver: 'qcow2', 'file.driver': bs.file!.node.driver.name, 'backing.driver': 'qcow2' });
      expect(bs.nodeName).toBe('top');
      expect(bs.backing!.node.nodeName).toBe('low');
    } finally {
      await closeNode(bs);
    }
  });

  it('read-only and back: the file child follows, the backing node stays read-only', async () => {
    const st = new MemoryStorage();
    await chain(st);
    const bs = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: false });
    try {
      await bdrvReopen(bs, { 'read-only': 'on' });
      expect([bs.readOnly, bs.file!.node.readOnly, bs.backing!.node.readOnly]).toEqual([true, true, true]);
      await expect(bdrvPwrite(bs, 0, 512, new Uint8Array(512))).rejects.toThrow();
      await bdrvReopen(bs, { 'read-only': 'off' });
      expect([bs.readOnly, bs.file!.node.readOnly, bs.backing!.node.readOnly]).toEqual([false, false, true]);
      await bdrvPwrite(bs, 0, 512, new Uint8Array(512).fill(1));
    } finally {
      await closeNode(bs);
    }
  });

  it('lazy-refcounts=on on an image without the header bit sets the dirty bit at the next write (039)', async () => {
    const st = new MemoryStorage();
    await qcow2(st, 'a.qcow2', 1 << 20);
    const bs = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: false });
    try {
      await bdrvReopen(bs, { 'lazy-refcounts': 'on' });
      await bdrvPwrite(bs, 0, 512, new Uint8Array(512).fill(1));
      expect(st.get('a.qcow2')![79]! & 1).toBe(1);
      await bdrvReopen(bs, { 'lazy-refcounts': 'off' });
      expect(st.get('a.qcow2')![79]! & 1).toBe(0);
    } finally {
      await closeNode(bs);
    }
  });
});

describe('qemu-img commit into a backing file named by options (020)', () => {
  it('create -b json:{…} opens the name as options, and commit writes through the blkdebug filter it names', async () => {
    const dir = tmpDir('blocktab-020-');
    const st = new FileStorage();
    const base = path.join(dir, 'base.qcow2');
    const top = path.join(dir, 'top.qcow2');
    await createImage(st, await planCreate(st, { filename: base, format: 'qcow2', size: 1 << 20 }));
    const backing = `json:{'driver': 'qcow2', 'file': { 'driver': 'blkdebug', 'inject-error': [{ 'event': 'write_aio', 'errno': 28, 'once': true }], 'image': { 'driver': 'file', 'filename': '${base}' }}}`;
    const plan = await planCreate(st, { filename: top, format: 'qcow2', backingFile: backing, backingFormat: 'qcow2' });
    expect(plan.line).toContain("'driver': 'blkdebug',, 'inject-error'");
    await createImage(st, plan);
    const t = await openImage(st, top, { format: 'qcow2', readOnly: false });
    await bdrvPwrite(t, 0, 65536, new Uint8Array(65536).fill(3));
    await closeNode(t);
    await expect(commitImage(st, { filename: top })).rejects.toThrow('Block job failed: No space left on device');
  });

  it('-b names a chain member relative to each overlay, or absolutely; not relative to the working directory', async () => {
    const dir = tmpDir('blocktab-020-');
    const sub = path.join(dir, 'subdir');
    fs.mkdirSync(sub);
    const st = new FileStorage();
    const cwd = process.cwd();
    process.chdir(dir);
    try {
      await createImage(st, await planCreate(st, { filename: 'subdir/t.base', format: 'qcow2', size: 1 << 20 }));
      await createImage(st, await planCreate(st, { filename: 'subdir/t.mid', format: 'qcow2', backingFile: 't.base', backingFormat: 'qcow2' }));
      await createImage(st, await planCreate(st, { filename: 'subdir/t', format: 'qcow2', backingFile: 't.mid', backingFormat: 'qcow2' }));
      await commitImage(st, { filename: 'subdir/t', base: 't.mid' });
      await expect(commitImage(st, { filename: 'subdir/t', base: 'subdir/t.mid' })).rejects.toThrow("Did not find 'subdir/t.mid' in the backing chain of 'subdir/t'");
      await commitImage(st, { filename: 'subdir/t', base: path.join(sub, 't.mid') });
    } finally {
      process.chdir(cwd);
    }
  });
});
