/**
 * Engine and CLI behaviours QEMU's non-quick iotests found (issue 19), each
 * named after its iotest and reproduced on our own images.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import '../../src/drivers.js';
import { MemoryStorage } from '../../src/protocols/memory.js';
import { FileStorage } from '../../src/protocols/file.js';
import { createImage, planCreate } from '../../src/img/create.js';
import { closeNode, openImage } from '../../src/block/open.js';
import { bdrvPwrite } from '../../src/block/io.js';
import { registerSecret, removeSecret } from '../../src/block/secrets.js';
import { BlockError } from '../../src/block/errors.js';
import { runIo } from '../../src/cli/qemu-io/main.js';
import { parseProtocolFilename } from '../../src/block/options-tree.js';
import { check } from '../helpers/qcow2-check.js';
import { tmpDir } from '../helpers/qemu.js';

describe('a new refcount block leaves no hole before it (121)', () => {
  it('the data cluster that needed the block takes the first cluster the block describes, the block the next', async () => {
    const st = new MemoryStorage();
    await createImage(st, await planCreate(st, { filename: 'a.qcow2', format: 'qcow2', size: 1 << 20, options: ['cluster_size=512', 'refcount_bits=16'] }));
    const bs = await openImage(st, 'a.qcow2', { format: 'qcow2', readOnly: false });
    try {
      // Header, refcount table, one refcount block, L1, four L2 tables and 248 data clusters: the block's 256 entries are used.
      await bdrvPwrite(bs, 0, 124 * 1024, new Uint8Array(124 * 1024).fill(1));
      expect(bs.file!.node.totalBytes).toBe(256 * 512);
      await bdrvPwrite(bs, 124 * 1024, 512, new Uint8Array(512).fill(2));
      // Two more clusters, as QEMU (the search restarts at the run once the block is hooked up).
      expect(bs.file!.node.totalBytes).toBe(258 * 512);
    } finally {
      await closeNode(bs);
    }
    const res = await check(st, { leaks: false, errors: false });
    expect(res.corruptions).toBe(0);
    expect(res.leaks).toBe(0);
    expect(res.imageEndOffset).toBe(258 * 512);
  });
});

describe('a luks passphrase must be UTF-8 (282)', () => {
  const bad = new Uint8Array([0x3a, 0x3c, 0x3b, 0xff]);

  it('create fails with QEMU\'s message and removes the file it made, or the one that was there', async () => {
    registerSecret('sec282', bad);
    try {
      for (const existed of [false, true]) {
        const st = new MemoryStorage();
        if (existed) await st.createFile('vol.img');
        const plan = await planCreate(st, { filename: 'vol.img', format: 'luks', size: 4 << 20, options: ['key-secret=sec282'] });
        expect(plan.line).toBe("Formatting 'vol.img', fmt=luks size=4194304 key-secret=sec282");
        const err = await createImage(st, plan).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(BlockError);
        expect((err as Error).message).toBe('vol.img: Data from secret sec282 is not valid UTF-8');
        expect(st.files.has('vol.img')).toBe(false);
      }
    } finally {
      removeSecret('sec282');
    }
  });

  it('an image whose secret is not UTF-8 does not open; valid UTF-8 beyond ASCII does', async () => {
    const st = new MemoryStorage();
    registerSecret('ok282', 'pässwörd');
    try {
      await createImage(st, await planCreate(st, { filename: 'v.luks', format: 'luks', size: 1 << 20, options: ['key-secret=ok282', 'iter-time=10'] }));
      await closeNode(await openImage(st, 'v.luks', { format: 'luks', driverOptions: { 'key-secret': 'ok282' } }));
      registerSecret('bad282', bad);
      const err = await openImage(st, 'v.luks', { format: 'luks', driverOptions: { 'key-secret': 'bad282' } }).catch((e: unknown) => e);
      expect((err as Error).message).toMatch(/Data from secret bad282 is not valid UTF-8$/);
    } finally {
      removeSecret('ok282');
      removeSecret('bad282');
    }
  });
});

describe('qemu-io -s stacks the temporary overlay on the node already open (052)', () => {
  it('a luks image opened with its key-secret reads and writes under -s, and the image is left unchanged', async () => {
    const dir = tmpDir('blocktab-052-');
    const img = path.join(dir, 't.luks');
    const st = new FileStorage();
    registerSecret('sec052', '123456');
    try {
      await createImage(st, await planCreate(st, { filename: img, format: 'luks', size: 1 << 20, options: ['key-secret=sec052', 'iter-time=10'] }));
    } finally {
      removeSecret('sec052');
    }
    const run = async (args: string[]) => {
      let out = '';
      let err = '';
      const status = await runIo(['--object', 'secret,id=sec0,data=123456', '--image-opts', ...args], { out: (t) => (out += t), err: (t) => (err += t) }, Readable.from([]));
      return { status, out, err };
    };
    const opts = `driver=luks,key-secret=sec0,file.filename=${img}`;
    expect((await run(['-c', 'write -P 5 0 1M', opts])).status).toBe(0);
    const r = await run(['-s', '-c', 'write -P 0xa 0 1M', '-c', 'read -P 0xa 0 1M', opts]);
    expect(r.err).toBe('');
    expect(r.status).toBe(0);
    expect(r.out).toMatch(/^wrote 1048576\/1048576 bytes at offset 0\n[^\n]*\nread 1048576\/1048576 bytes at offset 0\n/);
    const after = await run(['-c', 'read -P 5 0 1M', opts]);
    expect(after.out).toMatch(/^read 1048576\/1048576 bytes at offset 0\n/);
    // QEMU agrees the image holds what was there before.
    const q = spawnSync('qemu-io', ['--object', 'secret,id=sec0,data=123456', '--image-opts', '-c', 'read -P 5 0 1M', opts], { encoding: 'utf8' });
    expect(q.stdout).toMatch(/^read 1048576\/1048576 bytes at offset 0\n/);
    expect(fs.readdirSync(dir)).toEqual(['t.luks']);
  });
});

describe('file: names with colons (126)', () => {
  it('create makes the file the rest of a file: name names, colons and all, and opens it by that name', async () => {
    const dir = tmpDir('blocktab-126-');
    const st = new FileStorage();
    await createImage(st, await planCreate(st, { filename: `file:${dir}/a:b.qcow2`, format: 'qcow2', size: 1 << 20 }));
    expect(fs.readdirSync(dir)).toEqual(['a:b.qcow2']);
    await closeNode(await openImage(st, `file:${dir}/a:b.qcow2`, { format: 'qcow2' }));
  });

  it('a relative path that would read as a protocol is named ./path, as QEMU names it', () => {
    expect(parseProtocolFilename('file:image:top.qcow2')).toEqual({ driver: 'file', filename: './image:top.qcow2' });
    expect(parseProtocolFilename('file:/d/image:top.qcow2')).toEqual({ driver: 'file', filename: '/d/image:top.qcow2' });
    expect(parseProtocolFilename('file:dir/image:top.qcow2')).toEqual({ driver: 'file', filename: 'dir/image:top.qcow2' });
  });
});

describe('a node opened with a key secret is named by its options (198)', () => {
  it('info shows json:{…} with the secret option for an encrypted qcow2, the file name for other options', async () => {
    const { imageInfo } = await import('../../src/img/info.js');
    const { openTree } = await import('../../src/block/open-tree.js');
    const st = new MemoryStorage();
    registerSecret('sec198', '123456');
    try {
      await createImage(st, await planCreate(st, { filename: 'e.qcow2', format: 'qcow2', size: 1 << 20, options: ['encrypt.format=luks', 'encrypt.key-secret=sec198', 'encrypt.iter-time=10'] }));
      await createImage(st, await planCreate(st, { filename: 'p.qcow2', format: 'qcow2', size: 1 << 20 }));
      const e = await openTree(st, { driver: 'qcow2', file: { filename: 'e.qcow2' }, 'encrypt.key-secret': 'sec198' }, { readOnly: true });
      const p = await openTree(st, { driver: 'qcow2', file: { filename: 'p.qcow2' }, 'lazy-refcounts': 'on' }, { readOnly: true });
      try {
        expect((await imageInfo(e)).filename).toBe('json:{"driver": "qcow2", "encrypt.key-secret": "sec198", "file": {"driver": "memory", "filename": "e.qcow2"}}');
        expect((await imageInfo(p)).filename).toBe('p.qcow2');
      } finally {
        await closeNode(e);
        await closeNode(p);
      }
    } finally {
      removeSecret('sec198');
    }
  });
});
