// Write and snapshot workloads in real Chromium, through the engine worker as
// the web app drives it: images are created IN OPFS by the engine, written
// through the client, then exported (read back through the worker as raw
// bytes) and POSTed to the Node side (workload-server.ts, started by
// global-setup.ts), which runs qemu-img check on them and replays the same
// workload with qemu-io / qemu-img snapshot on a qemu-img-made twin:
// check must be clean and qemu-img compare must say equal.
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import * as Comlink from 'comlink';
import { createClient, type BlocktabClient } from '../../src/client/client.js';
import { BlockError } from '../../src/block/errors.js';
import { QmpError } from '../../src/engine/qmp-error.js';
import { sha256Hex } from './assert.js';
import { seededWorkload, type WorkloadOp, type WorkloadRequest, type WorkloadVerdict } from './workload-ops.js';
import type { FaultWorkerApi } from './workload-worker.js';

const MiB = 1024 * 1024;
const run = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
const dir = `blocktab-tests/workload-${run}`;
let client: BlocktabClient;
const created: string[] = [];

const spawnEngine = () => createClient(new Worker(new URL('../../src/worker/engine-worker.ts', import.meta.url), { type: 'module' }));

beforeAll(async () => {
  client = spawnEngine();
  await client.ready();
});
afterAll(async () => {
  for (const f of created) await client.removeFile('opfs', f).catch(() => {});
  client?.terminate();
});

async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e,
  );
}

/** The bytes of an OPFS file, read through the worker (opened as raw, read-only). */
async function exportFile(c: BlocktabClient, filename: string): Promise<Uint8Array<ArrayBuffer>> {
  const node = await c.open('opfs', filename, { format: 'raw', readOnly: true });
  try {
    const size = await c.size(node);
    const all = new Uint8Array(size);
    for (let off = 0; off < size; off += 4 * MiB) all.set(await c.read(node, off, Math.min(4 * MiB, size - off)), off);
    return all;
  } finally {
    await c.close(node);
  }
}

async function verdictOf(bytes: Uint8Array<ArrayBuffer>, req: WorkloadRequest): Promise<WorkloadVerdict> {
  const res = await fetch(inject('workloadServer'), { method: 'POST', body: bytes, headers: { 'X-Workload': JSON.stringify(req) } });
  const text = await res.text();
  expect(res.status, text).toBe(200);
  return JSON.parse(text) as WorkloadVerdict;
}

/** Applies `ops` to an open node through the client. */
async function apply(c: BlocktabClient, node: string, ops: WorkloadOp[]): Promise<void> {
  for (const o of ops) {
    if (o.op === 'write') await c.write(node, o.offset, new Uint8Array(o.bytes).fill(o.pattern));
    else if (o.op === 'zero') await c.writeZeroes(node, o.offset, o.bytes);
    else if (o.op === 'discard') await c.discard(node, o.offset, o.bytes);
    else if (o.action === 'apply') await c.snapshotApply(node, o.name);
    else await c.snapshot(node, o.action === 'create' ? { create: o.name } : { delete: o.name });
  }
}

function expectClean(v: WorkloadVerdict): void {
  expect(v.checkStatus, JSON.stringify(v.check)).toBe(0);
  expect(v.check).toMatchObject({ 'check-errors': 0, format: 'qcow2' });
  expect(v.check.corruptions).toBeUndefined();
  expect(v.check.leaks).toBeUndefined();
}

describe('workloads on OPFS qcow2 images made by the engine, checked by qemu-img', () => {
  it('(a) create(): seeded pattern/zero/discard writes, aligned and not — check clean, equal to the qemu-io twin', async () => {
    const f = `${dir}/a.qcow2`;
    created.push(f);
    const size = 8 * MiB;
    const r = await client.create('opfs', f, 'qcow2', size);
    expect(r.line).toBe(`Formatting '${f}', fmt=qcow2 cluster_size=65536 extended_l2=off compression_type=zlib size=${size} lazy_refcounts=off refcount_bits=16`);
    const ops = seededWorkload(101, 60, size);
    expect(new Set(ops.map((o) => o.op))).toEqual(new Set(['write', 'zero', 'discard']));
    const node = await client.open('opfs', f, { format: 'qcow2', nodeName: 'wa' });
    await apply(client, node, ops);
    const ours = await client.check('wa');
    await client.close('wa');
    const v = await verdictOf(await exportFile(client, f), { size, ops });
    expectClean(v);
    expect({ ...ours, filename: v.check.filename }).toEqual(v.check);
    expect(v.compareStatus, v.compareOutput).toBe(0);
  });

  it('(a) blockdev-create (file, then qcow2 on its node, as jobs): another seeded workload, clean and equal', async () => {
    const f = `${dir}/a2.qcow2`;
    created.push(f);
    const size = 6 * MiB;
    await client.execute('blockdev-create', { 'job-id': 'mkfile', options: { driver: 'opfs', filename: f, size: 0 } });
    await expect.poll(async () => (await client.execute<{ id: string; status: string }[]>('query-jobs')).find((j) => j.id === 'mkfile')?.status, { timeout: 15_000 }).toBe('concluded');
    await client.execute('job-dismiss', { id: 'mkfile' });
    await client.execute('blockdev-add', { driver: 'opfs', 'node-name': 'a2-file', filename: f });
    await client.execute('blockdev-create', { 'job-id': 'mkq', options: { driver: 'qcow2', file: 'a2-file', size, 'cluster-size': 32768, 'lazy-refcounts': true } });
    await expect.poll(async () => (await client.execute<{ id: string; status: string; error?: string }[]>('query-jobs')).find((j) => j.id === 'mkq'), { timeout: 15_000 }).toMatchObject({
      status: 'concluded',
    });
    expect((await client.execute<{ id: string; error?: string }[]>('query-jobs')).find((j) => j.id === 'mkq')!.error).toBeUndefined();
    await client.execute('job-dismiss', { id: 'mkq' });
    // discard=unmap as the qemu-io twin (QEMU's blockdev-add drops discards without it).
    await client.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'a2', file: 'a2-file', discard: 'unmap' });
    const ops = seededWorkload(202, 60, size, 32768);
    await apply(client, 'a2', ops);
    await client.execute('blockdev-del', { 'node-name': 'a2' });
    await client.execute('blockdev-del', { 'node-name': 'a2-file' });
    const v = await verdictOf(await exportFile(client, f), { size, ops, createOptions: 'cluster_size=32768,lazy_refcounts=on' });
    expectClean(v);
    expect(v.compareStatus, v.compareOutput).toBe(0);
  });

  it('(b) snapshots on an open OPFS qcow2: create s1, write, create s2, write, apply s1, delete s2, write — same list and content as qemu-img', async () => {
    const f = `${dir}/b.qcow2`;
    created.push(f);
    const size = 4 * MiB;
    await client.create('opfs', f, 'qcow2', size);
    const node = await client.open('opfs', f, { format: 'qcow2', nodeName: 'wb' });
    const ops: WorkloadOp[] = [
      ...seededWorkload(301, 15, size),
      { op: 'snapshot', action: 'create', name: 's1' },
      ...seededWorkload(302, 15, size),
      { op: 'snapshot', action: 'create', name: 's2' },
      ...seededWorkload(303, 15, size),
      { op: 'snapshot', action: 'apply', name: 's1' },
      { op: 'snapshot', action: 'delete', name: 's2' },
      ...seededWorkload(304, 10, size),
    ];
    // What the node reads right after "apply s1" must be what it read right after "create s1".
    const firstPart = ops.indexOf(ops.find((o) => o.op === 'snapshot')!);
    await apply(client, node, ops.slice(0, firstPart + 1));
    const atS1 = await sha256Hex(await client.read(node, 0, size));
    const applyAt = ops.findIndex((o) => o.op === 'snapshot' && o.action === 'apply');
    await apply(client, node, ops.slice(firstPart + 1, applyAt + 1));
    expect(await sha256Hex(await client.read(node, 0, size))).toBe(atS1);
    await apply(client, node, ops.slice(applyAt + 1));
    expect((await client.snapshot(node, { list: true })).map((s) => s.name)).toEqual(['s1']);
    await client.close(node);
    const v = await verdictOf(await exportFile(client, f), { size, ops });
    expectClean(v);
    expect(v.snapshots).toEqual(['s1']);
    expect(v.twinSnapshots).toEqual(v.snapshots);
    expect(v.compareStatus, v.compareOutput).toBe(0);
  });

  it('(c) a qcow2 overlay in OPFS over an HTTP base: reads are the base, writes land in the overlay only (map depth 0), the base is unchanged, qemu-img agrees', async () => {
    const server = inject('storageServer');
    const base = server.images.find((i) => i.name === 'qcow2/plain.qcow2')!;
    const url = server.baseUrl + base.name;
    const fileSha = async () => sha256Hex(new Uint8Array(await (await fetch(url)).arrayBuffer()));
    const baseFileBefore = await fileSha();
    const f = `${dir}/overlay.qcow2`;
    created.push(f);
    await client.create('opfs', f, 'qcow2', base.virtualSize, { backingFile: url, backingFormat: 'qcow2', unsafe: true });
    await client.execute('blockdev-add', {
      driver: 'qcow2',
      'node-name': 'ov',
      file: { driver: 'opfs', filename: f },
      backing: { driver: 'qcow2', 'node-name': 'ov-base', file: { driver: 'http', url } },
    });
    const size = await client.size('ov');
    const expected = await client.read('ov', 0, size);
    expect(await sha256Hex(expected)).toBe(base.sha256);
    const writes = [
      { offset: 2 * 65536, bytes: 65536, pattern: 0x5c },
      { offset: 1_000_003, bytes: 70_001, pattern: 0xc5 },
      { offset: size - 700, bytes: 700, pattern: 0x01 },
    ];
    for (const w of writes) {
      await client.write('ov', w.offset, new Uint8Array(w.bytes).fill(w.pattern));
      expected.fill(w.pattern, w.offset, w.offset + w.bytes);
    }
    expect(await sha256Hex(await client.read('ov', 0, size))).toBe(await sha256Hex(expected));
    const map = await client.map('ov');
    for (const w of writes) {
      // Every cluster a write touched is allocated in the overlay itself.
      const first = Math.floor(w.offset / 65536) * 65536;
      const end = Math.ceil((w.offset + w.bytes) / 65536) * 65536;
      const cover = map.filter((m) => m.start < end && m.start + m.length > first);
      expect(cover.length, `map over ${first}..${end}`).toBeGreaterThan(0);
      for (const m of cover) expect(m, `map over ${first}..${end}`).toMatchObject({ depth: 0, data: true });
    }
    // Elsewhere the data comes from the base (depth 1).
    expect(map.some((m) => m.depth === 1 && m.data)).toBe(true);
    await client.execute('blockdev-del', { 'node-name': 'ov' });
    expect(await fileSha()).toBe(baseFileBefore);
    // qemu-img (through curl) reads the same HTTP base: the twin overlay gets the same writes from qemu-io.
    const v = await verdictOf(await exportFile(client, f), {
      size,
      backingFile: url,
      backingFormat: 'qcow2',
      ops: writes.map((w) => ({ op: 'write', ...w })),
    });
    expectClean(v);
    expect(v.compareStatus, v.compareOutput).toBe(0);
  });
});

describe('faults through the worker', () => {
  it('(d) a second read-write open of an OPFS image is EBUSY "image in use" — in the same engine and from another worker', async () => {
    const f = `${dir}/busy.qcow2`;
    created.push(f);
    await client.create('opfs', f, 'qcow2', MiB);
    await client.open('opfs', f, { format: 'qcow2', nodeName: 'busy' });
    const same = await rejection(client.open('opfs', f, { format: 'qcow2' }));
    expect(same).toBeInstanceOf(BlockError);
    expect((same as BlockError).code).toBe('EBUSY');
    expect((same as BlockError).message).toMatch(/busy\.qcow2.*image in use/);
    const q = (await rejection(client.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'busy2', file: { driver: 'opfs', filename: f } }))) as QmpError;
    expect(q).toBeInstanceOf(QmpError);
    expect(q.code).toBe('EBUSY');
    const other = spawnEngine();
    try {
      const e = await rejection(other.open('opfs', f, { format: 'qcow2' }));
      expect((e as BlockError).code).toBe('EBUSY');
      await client.close('busy');
      const n = await other.open('opfs', f, { format: 'qcow2' });
      await other.close(n);
    } finally {
      other.terminate();
    }
  });

  it('(d) over quota: ENOSPC through the worker (and BLOCK_IO_ERROR nospace), earlier data intact, the image consistent for qemu-img', async () => {
    const worker = new Worker(new URL('./workload-worker.ts', import.meta.url), { type: 'module' });
    const c = createClient(worker);
    const faults = c.remote as unknown as Comlink.Remote<FaultWorkerApi>;
    const f = `${dir}/quota.qcow2`;
    try {
      await c.ready();
      const size = 8 * MiB;
      await c.create('opfs', f, 'qcow2', size);
      await c.open('opfs', f, { format: 'qcow2', nodeName: 'q' });
      const ops = seededWorkload(401, 20, size);
      await apply(c, 'q', ops);
      const before = await c.read('q', 0, size);
      const events: { event: string; data: Record<string, unknown> }[] = [];
      const off = await c.onEvent((e) => events.push(e));
      const fileLength = (await c.info('q'))['actual-size'] as number;
      await faults.setQuota(fileLength + 100_000);
      let failure: unknown = null;
      let failed: WorkloadOp | undefined;
      const good: WorkloadOp[] = [];
      // New clusters far apart: each needs data and, now and then, L2 or refcount blocks.
      for (let i = 0; i < 40 && failure === null; i++) {
        const w: WorkloadOp = { op: 'write', offset: (i * 3 + 1) * 65536 + 123, bytes: 70_000, pattern: 0x90 + (i % 16) };
        try {
          await apply(c, 'q', [w]);
          good.push(w);
        } catch (e) {
          failure = e;
          failed = w;
        }
      }
      expect(failure).toBeInstanceOf(BlockError);
      expect((failure as BlockError).code).toBe('ENOSPC');
      expect((failure as BlockError).message).toMatch(/quota\.qcow2.*quota/);
      expect(await faults.setQuota(null)).toBeGreaterThan(0);
      await expect.poll(() => events.find((e) => e.event === 'BLOCK_IO_ERROR')?.data).toMatchObject({ 'node-name': 'q', operation: 'write', nospace: true });
      await off();
      // A failed write leaves its range undefined (as in QEMU); the guest writes it again once there is room.
      await apply(c, 'q', [failed!]);
      good.push(failed!);
      // Everything written reads back.
      const expected = before;
      for (const w of good) if (w.op === 'write') expected.fill(w.pattern, w.offset, w.offset + w.bytes);
      expect(await sha256Hex(await c.read('q', 0, size))).toBe(await sha256Hex(expected));
      // With the quota lifted the image takes writes again.
      await apply(c, 'q', [{ op: 'write', offset: 5 * MiB + 17, bytes: 100_000, pattern: 0xee }]);
      await c.close('q');
      const v = await verdictOf(await exportFile(c, f), { size, ops: [], checkOnly: true });
      // A failed allocation may leak clusters (as in QEMU); nothing may be corrupt.
      expect(v.check.corruptions, JSON.stringify(v.check)).toBeUndefined();
      expect(v.check['check-errors']).toBe(0);
      expect([0, 3]).toContain(v.checkStatus);
      // The replay through qemu-io of every write that succeeded gives the same disk.
      const replayOps = [...ops, ...good, { op: 'write', offset: 5 * MiB + 17, bytes: 100_000, pattern: 0xee } as WorkloadOp];
      const cmp = await verdictOf(await exportFile(c, f), { size, ops: replayOps });
      expect(cmp.compareStatus, cmp.compareOutput).toBe(0);
    } finally {
      await c.removeFile('opfs', f).catch(() => {});
      c.terminate();
    }
  });
});
