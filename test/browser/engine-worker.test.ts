// The engine behind its Web Worker, driven only through the client as the web
// app drives it: every call crosses comlink. Images are qemu-img's (served
// over HTTP by global-setup.ts); contents are compared with the SHA-256 of
// qemu-img convert -O raw. Checks the error transfer handler (BlockError and
// QmpError keep code, message and class), that buffers move by transfer, that
// progress and events arrive through proxies.
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createClient, type BlocktabClient } from '../../src/client/client.js';
import { BlockError } from '../../src/block/errors.js';
import { QmpError } from '../../src/engine/qmp-error.js';
import type { BlockDeviceInfo } from '../../src/engine/query.js';
import { sha256Hex } from './assert.js';
import { seededBytes, type InteropImage } from './fixtures.js';

const run = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
const dir = `blocktab-tests/engine-${run}`;
let client: BlocktabClient;

beforeAll(async () => {
  client = createClient(new Worker(new URL('../../src/worker/engine-worker.ts', import.meta.url), { type: 'module' }));
  await client.ready();
});
afterAll(() => client?.terminate());

const server = () => inject('storageServer');
const image = (name: string): InteropImage => {
  const img = server().images.find((i) => i.name === name);
  if (!img) throw new Error(`no image ${name} in the setup`);
  return img;
};

async function fetchBytes(name: string): Promise<Uint8Array<ArrayBuffer>> {
  const res = await fetch(server().baseUrl + name);
  expect(res.ok, `fetch ${name}`).toBe(true);
  return new Uint8Array(await res.arrayBuffer());
}

/** Reads a whole node through the worker in 1 MiB requests and hashes it. */
async function nodeSha(node: string): Promise<string> {
  const size = await client.size(node);
  const all = new Uint8Array(size);
  for (let off = 0; off < size; off += 1 << 20) {
    const n = Math.min(1 << 20, size - off);
    all.set(await client.read(node, off, n), off);
  }
  return sha256Hex(all);
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e,
  );
}

describe('engine worker: images through comlink', () => {
  it('starts with the browser storages (OPFS in the worker) and reports them', async () => {
    const r = await client.ready();
    expect(r.storages).toEqual(expect.arrayContaining(['opfs', 'idb', 'http', 'blob', 'memory', 'local']));
    expect(typeof r.wasm).toBe('boolean');
  });

  it('blockdev-add raw and qcow2 images over HTTP; reads match qemu-img convert (SHA-256)', async () => {
    for (const [name, node] of [
      ['raw/data.raw', 'http-raw'],
      ['qcow2/plain.qcow2', 'http-qcow2'],
      ['qcow2/compressed.qcow2', 'http-comp'],
      ['chain/sub/top.qcow2', 'http-chain'],
    ] as const) {
      const img = image(name);
      await client.execute('blockdev-add', {
        driver: img.format,
        'node-name': node,
        'read-only': true,
        file: { driver: 'http', url: server().baseUrl + name },
      });
      expect(await client.size(node), name).toBe(img.virtualSize);
      expect(await nodeSha(node), name).toBe(img.sha256);
    }
  });

  it('query-named-block-nodes has the QEMU shape for the HTTP nodes', async () => {
    const nodes = await client.execute<BlockDeviceInfo[]>('query-named-block-nodes');
    const q = nodes.find((n) => n['node-name'] === 'http-qcow2')!;
    const url = server().baseUrl + 'qcow2/plain.qcow2';
    expect(q).toMatchObject({ file: url, 'node-name': 'http-qcow2', ro: true, drv: 'qcow2', backing_file_depth: 0, encrypted: false, detect_zeroes: 'off' });
    expect(q.image).toMatchObject({ filename: url, format: 'qcow2', 'virtual-size': image('qcow2/plain.qcow2').virtualSize, 'cluster-size': 65536 });
    const proto = nodes.find((n) => n.file === url && n.drv === 'http')!;
    expect(proto['node-name']).toMatch(/^#block\d+$/);
    const chain = nodes.find((n) => n['node-name'] === 'http-chain')!;
    expect(chain.backing_file).toBe(server().baseUrl + 'chain/base.qcow2');
    expect(chain.backing_file_depth).toBe(1);
    expect(chain.image['backing-image']).toMatchObject({ format: 'qcow2', filename: server().baseUrl + 'chain/base.qcow2' });
  });

  it('images copied into OPFS through the engine open with their backing chain and match qemu-img', async () => {
    for (const f of ['qcow2/zero.qcow2', 'chain/sub/top.qcow2', 'chain/base.qcow2']) {
      await client.importFile('opfs', `${dir}/${f}`, await fetchBytes(f));
    }
    await client.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'opfs-zero', file: { driver: 'opfs', filename: `${dir}/qcow2/zero.qcow2` } });
    expect(await nodeSha('opfs-zero')).toBe(image('qcow2/zero.qcow2').sha256);
    await client.execute('blockdev-add', {
      driver: 'qcow2',
      'node-name': 'opfs-chain',
      'read-only': true,
      file: { driver: 'opfs', filename: `${dir}/chain/sub/top.qcow2` },
    });
    expect(await nodeSha('opfs-chain')).toBe(image('chain/sub/top.qcow2').sha256);
  });
  it('a file the page hands over (addFile) opens from the blob storage and reads back', async () => {
    const img = image('raw/data.raw');
    const name = await client.addFile(new Blob([await fetchBytes(img.name)]), 'dropped.raw');
    const node = await client.open('blob', name, { format: 'raw', readOnly: true, nodeName: 'dropped' });
    expect(await nodeSha(node)).toBe(img.sha256);
    await client.close('dropped');
  });
});

describe('engine worker: errors cross the boundary intact', () => {
  it('an unknown command is a QmpError CommandNotFound (and a BlockError) on the page', async () => {
    const e = await rejection(client.execute('no-such-command', {}));
    expect(e).toBeInstanceOf(QmpError);
    expect(e).toBeInstanceOf(BlockError);
    expect((e as QmpError).errorClass).toBe('CommandNotFound');
    expect((e as QmpError).desc).toBe('The command no-such-command has not been found');
    expect((e as QmpError).code).toBe('ENOTSUP');
  });

  it('a missing node is GenericError (code ENOENT), as QEMU 7.2; bad arguments GenericError (EINVAL)', async () => {
    const missing = (await rejection(client.execute('blockdev-del', { 'node-name': 'ghost' }))) as QmpError;
    expect(missing).toBeInstanceOf(QmpError);
    expect(missing.toQmp()).toEqual({ class: 'GenericError', desc: "Failed to find node with node-name='ghost'" });
    expect(missing.code).toBe('ENOENT');
    const bad = (await rejection(client.execute('block_resize', { 'node-name': 'http-raw', size: 'big' }))) as QmpError;
    expect(bad).toBeInstanceOf(QmpError);
    expect(bad.toQmp()).toEqual({ class: 'GenericError', desc: "Invalid parameter type for 'size', expected: integer" });
    expect(bad.code).toBe('EINVAL');
  });

  it("a driver's BlockError arrives as a BlockError with the driver's code and message", async () => {
    const e = await rejection(client.open('opfs', `${dir}/nothing-here.img`, { format: 'raw' }));
    expect(e).toBeInstanceOf(BlockError);
    expect(e).not.toBeInstanceOf(QmpError);
    expect((e as BlockError).code).toBe('ENOENT');
    expect((e as BlockError).message).toMatch(/nothing-here\.img/);
    // Through execute the same failure is a GenericError that keeps the code.
    const q = (await rejection(
      client.execute('blockdev-add', { driver: 'raw', 'node-name': 'nope', file: { driver: 'opfs', filename: `${dir}/nothing-here.img` } }),
    )) as QmpError;
    expect(q).toBeInstanceOf(QmpError);
    expect(q.errorClass).toBe('GenericError');
    expect(q.code).toBe('ENOENT');
  });
});

describe('engine worker: buffers, bitmaps, progress, events', () => {
  it('a large read arrives by transfer: a fresh buffer of exactly that size, detached in the worker', async () => {
    const before = await client.boundaryStats();
    const bytes = 4 * 1024 * 1024;
    const buf = await client.read('http-raw', 0, bytes);
    expect(buf.byteLength).toBe(bytes);
    expect(buf.byteOffset).toBe(0);
    expect(buf.buffer.byteLength).toBe(bytes);
    const after = await client.boundaryStats();
    expect(after.transferredReads).toBe(before.transferredReads + 1);
    expect(after.transferredBytes).toBe(before.transferredBytes + bytes);
    expect(after.lastReadDetached).toBe(true);
  });

  it('reads on the read channel keep their BlockError (code, message) and many in flight resolve to the right requests', async () => {
    const past = await rejection(client.read('http-raw', 2 ** 40, 512));
    expect(past).toBeInstanceOf(BlockError);
    expect(['EIO', 'EINVAL']).toContain((past as BlockError).code);
    expect((past as BlockError).message).toMatch(/past the end/);
    const missing = await rejection(client.read('no-such-node', 0, 512));
    expect(missing).toBeInstanceOf(BlockError);
    expect((missing as BlockError).code).toBe('ENOENT');
    // Concurrent reads of different ranges: each answer must be its own range.
    const whole = await client.read('http-raw', 0, 64 * 1024);
    const parts = await Promise.all(Array.from({ length: 16 }, (_, i) => client.read('http-raw', i * 4096, 4096)));
    parts.forEach((p, i) => expect(p).toEqual(whole.subarray(i * 4096, (i + 1) * 4096)));
  });

  it("a write transfers the caller's buffer (detached afterwards) and the data lands", async () => {
    await client.importFile('memory', 'w.img', new Uint8Array(1 << 20));
    await client.execute('blockdev-add', { driver: 'raw', 'node-name': 'mem-w', file: { driver: 'memory', filename: 'w.img' } });
    const data = seededBytes(300_000, 7);
    const copy = data.slice();
    await client.write('mem-w', 12_345, data);
    expect(data.buffer.byteLength).toBe(0);
    // Hashes, not toEqual: a deep equality over 300 KB of typed array takes most of a second in the page.
    expect(await sha256Hex(await client.read('mem-w', 12_345, copy.length))).toBe(await sha256Hex(copy));
  });

  it('dirty bitmaps through execute: add, count writes, clear, remove', async () => {
    await client.execute('block-dirty-bitmap-add', { node: 'mem-w', name: 'bm', granularity: 65536 });
    await client.write('mem-w', 0, new Uint8Array(10));
    await client.write('mem-w', 200_000, new Uint8Array(70_000));
    const countOf = async () =>
      (await client.execute<BlockDeviceInfo[]>('query-named-block-nodes')).find((n) => n['node-name'] === 'mem-w')!['dirty-bitmaps'];
    // Chunks 0, 3 and 4 (200000..270000 spans 196608..327680).
    expect(await countOf()).toEqual([{ name: 'bm', count: 3 * 65536, granularity: 65536, recording: true, busy: false, persistent: false }]);
    await client.execute('block-dirty-bitmap-clear', { node: 'mem-w', name: 'bm' });
    expect((await countOf())![0]!.count).toBe(0);
    const dup = (await rejection(client.execute('block-dirty-bitmap-add', { node: 'mem-w', name: 'bm' }))) as QmpError;
    expect(dup.toQmp()).toEqual({ class: 'GenericError', desc: 'Bitmap already exists: bm' });
    await client.execute('block-dirty-bitmap-remove', { node: 'mem-w', name: 'bm' });
    expect(await countOf()).toBeUndefined();
  });

  it('convert raw → raw into OPFS reports progress through a proxy; the copy matches qemu-img and compares identical', async () => {
    const src = image('raw/data.raw');
    const progress: [number, number][] = [];
    const res = await client.convert([{ storage: 'http', filename: server().baseUrl + src.name, format: 'raw' }], { storage: 'opfs', filename: `${dir}/converted.raw` }, {}, (done, total) => {
      progress.push([done, total]);
    });
    expect(res.bytes).toBe(src.virtualSize);
    expect(progress.length).toBeGreaterThan(0);
    expect(progress[progress.length - 1]).toEqual([src.virtualSize, src.virtualSize]);
    for (let i = 1; i < progress.length; i++) expect(progress[i]![0]).toBeGreaterThanOrEqual(progress[i - 1]![0]);
    const node = await client.open('opfs', `${dir}/converted.raw`, { format: 'raw', readOnly: true, nodeName: 'converted' });
    expect(await nodeSha(node)).toBe(src.sha256);
    expect(await client.compare('converted', 'http-raw')).toEqual({ kind: 'identical', sizeMismatch: false });
    await client.close('converted');
  });

  it('QMP events reach a subscriber: a failed write emits BLOCK_IO_ERROR', async () => {
    const events: { event: string; data: Record<string, unknown> }[] = [];
    const off = await client.onEvent((e) => events.push(e));
    const e = await rejection(client.write('http-raw', 0, new Uint8Array(512)));
    expect(e).toBeInstanceOf(BlockError);
    expect((e as BlockError).code).toBe('EPERM');
    await off();
    await expect.poll(() => events.length).toBe(1);
    expect(events[0]!.event).toBe('BLOCK_IO_ERROR');
    expect(events[0]!.data).toMatchObject({ 'node-name': 'http-raw', operation: 'write', action: 'report' });
  });
});
