// The Engine's typed write-side qemu-img operations (create, check, snapshot,
// rebase, commit, resize, amend) and the QMP commands blockdev-create,
// block-commit, query-jobs, job-dismiss, block-job-set-speed, job-complete —
// on files and on open nodes, checked with qemu-img.
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MemoryStorage } from '../../src/node.js';
import { FileStorage } from '../../src/protocols/file.js';
import { Engine, type QmpEvent } from '../../src/engine/index.js';
import { jobDone } from '../../src/engine/commands/jobs.js';
import { QmpError } from '../../src/engine/qmp-error.js';
import { BlockError } from '../../src/block/errors.js';
import { qemuImg, qemuImgRun, qemuIo, seededBytes, tmpDir } from '../helpers/qemu.js';

const newEngine = () => new Engine({ storages: { file: new FileStorage(), memory: new MemoryStorage() } });
const MiB = 1024 * 1024;

function qemuCheck(file: string): Record<string, unknown> {
  const r = qemuImgRun(['check', '--output=json', file]);
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}
const equalImages = (a: string, b: string) => qemuImgRun(['compare', a, b]);
const snapshotNames = (file: string) =>
  ((JSON.parse(qemuImg(['info', '--output=json', file])) as { snapshots?: { name: string }[] }).snapshots ?? []).map((s) => s.name);

async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e,
  );
}

describe('engine: typed qemu-img operations that write', () => {
  const dir = tmpDir();
  const at = (n: string) => path.join(dir, n);

  it('create makes a qcow2 image qemu-img agrees with (options as a record and as strings)', async () => {
    const e = newEngine();
    const r = await e.create('file', at('c.qcow2'), 'qcow2', 3 * MiB, { options: { cluster_size: 4096, lazy_refcounts: true } });
    expect(r).toMatchObject({ filename: at('c.qcow2'), format: 'qcow2', size: 3 * MiB });
    expect(r.line).toBe(qemuImgRun(['create', '-f', 'qcow2', '-o', 'cluster_size=4096,lazy_refcounts=on', at('twin.qcow2'), '3M']).stdout.trim().replace('twin.qcow2', 'c.qcow2'));
    const info = JSON.parse(qemuImg(['info', '--output=json', at('c.qcow2')])) as Record<string, any>;
    expect(info['cluster-size']).toBe(4096);
    expect(info['format-specific'].data['lazy-refcounts']).toBe(true);
    qemuCheck(at('c.qcow2'));
    expect(equalImages(at('c.qcow2'), at('twin.qcow2')).status).toBe(0);
    await e.create('file', at('c2.qcow2'), 'qcow2', undefined, { backingFile: 'c.qcow2', backingFormat: 'qcow2', options: ['compat=0.10'] });
    const info2 = JSON.parse(qemuImg(['info', '--output=json', at('c2.qcow2')])) as Record<string, any>;
    expect(info2['virtual-size']).toBe(3 * MiB);
    expect(info2['backing-filename']).toBe('c.qcow2');
    expect(info2['format-specific'].data.compat).toBe('0.10');
    const bad = await rejection(e.create('file', at('bad.qcow2'), 'qcow2', MiB, { options: { cluster_size: 1000 } }));
    expect(bad).toBeInstanceOf(BlockError);
    expect((bad as BlockError).message).toMatch(/bad\.qcow2: .*[Cc]luster size/);
  });

  it('check returns qemu-img check --output=json; repair fixes leaks (leaks-fixed), as -r leaks', async () => {
    const f = at('chk.qcow2');
    qemuImg(['create', '-f', 'qcow2', f, '4M']);
    qemuIo(f, ['write -P 1 0 256k', 'write -P 2 1M 64k'], 'qcow2');
    const e = newEngine();
    expect(await e.check({ storage: 'file', filename: f })).toEqual(qemuCheck(f));
    // Leak the first data cluster: zero its L2 entry (L1 at header offset 40; L2 offset in bits 9..55 of L1[0]).
    const leaky = at('leak.qcow2');
    fs.copyFileSync(f, leaky);
    const fd = fs.openSync(leaky, 'r+');
    const b8 = Buffer.alloc(8);
    fs.readSync(fd, b8, 0, 8, 40);
    fs.readSync(fd, b8, 0, 8, Number(b8.readBigUInt64BE()));
    fs.writeSync(fd, Buffer.alloc(8), 0, 8, Number(b8.readBigUInt64BE() & 0x00fffffffffffe00n));
    fs.closeSync(fd);
    const leaks = await e.check({ storage: 'file', filename: leaky });
    expect(leaks.leaks).toBe(1);
    expect(leaks).toEqual(JSON.parse(qemuImgRun(['check', '--output=json', leaky]).stdout));
    const twin = at('leak-twin.qcow2');
    fs.copyFileSync(leaky, twin);
    const fixed = await e.check({ storage: 'file', filename: leaky }, { repair: 'leaks' });
    expect({ ...fixed, filename: twin }).toEqual(JSON.parse(qemuImgRun(['check', '-r', 'leaks', '--output=json', twin]).stdout));
    expect(fixed['leaks-fixed']).toBe(1);
    qemuCheck(leaky);
    await e.open('file', f, { format: 'qcow2', nodeName: 'n' });
    const onNode = await e.check('n');
    expect({ ...onNode, filename: f }).toEqual(qemuCheck(f));
    await e.dispose();
  });

  it('check repair opens an image with the corrupt bit set (as qemu-img check -r all) and clears it', async () => {
    const e = newEngine();
    qemuImg(['create', '-q', '-f', 'qcow2', at('corrupt.qcow2'), '1M']);
    qemuIo(at('corrupt.qcow2'), ['write -P 7 0 64k'], 'qcow2');
    // Incompatible feature bit 1 (corrupt) lives in the low byte of the field at 0x48.
    const fd = fs.openSync(at('corrupt.qcow2'), 'r+');
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, 0x4f);
    b[0]! |= 2;
    fs.writeSync(fd, b, 0, 1, 0x4f);
    fs.closeSync(fd);
    const before = qemuImgRun(['info', '--output=json', at('corrupt.qcow2')]);
    expect((JSON.parse(before.stdout) as Record<string, any>)['format-specific'].data.corrupt).toBe(true);
    await e.check({ storage: 'file', filename: at('corrupt.qcow2') }, { repair: 'all' });
    const after = JSON.parse(qemuImg(['info', '--output=json', at('corrupt.qcow2')])) as Record<string, any>;
    expect(after['format-specific'].data.corrupt).toBe(false);
    qemuCheck(at('corrupt.qcow2'));
    expect(qemuIo(at('corrupt.qcow2'), ['read -P 7 0 64k'], 'qcow2')).not.toMatch(/failed/);
  });

  it('snapshot on a file: create s1, write, create s2, apply s1, delete s2 — same as qemu-img and qemu-io', async () => {
    const ours = at('snap.qcow2');
    const twin = at('snap-twin.qcow2');
    for (const f of [ours, twin]) {
      qemuImg(['create', '-f', 'qcow2', f, '2M']);
      qemuIo(f, ['write -P 0x11 0 128k'], 'qcow2');
    }
    const e = newEngine();
    const ref = { storage: 'file', filename: ours };
    let list = await e.snapshot(ref, { create: 's1' });
    expect(list.map((s) => s.name)).toEqual(['s1']);
    qemuIo(ours, ['write -P 0x22 64k 128k'], 'qcow2');
    await e.snapshot(ref, { create: 's2' });
    await e.snapshot(ref, { apply: 's1' });
    list = await e.snapshot(ref, { delete: 's2' });
    expect(list.map((s) => s.name)).toEqual(['s1']);
    expect(Object.keys(list[0]!)).toEqual(['id', 'name', 'vm-state-size', 'date-sec', 'date-nsec', 'vm-clock-sec', 'vm-clock-nsec', 'icount']);
    qemuImg(['snapshot', '-c', 's1', twin]);
    qemuIo(twin, ['write -P 0x22 64k 128k'], 'qcow2');
    qemuImg(['snapshot', '-c', 's2', twin]);
    qemuImg(['snapshot', '-a', 's1', twin]);
    qemuImg(['snapshot', '-d', 's2', twin]);
    expect(snapshotNames(ours)).toEqual(snapshotNames(twin));
    qemuCheck(ours);
    expect(equalImages(ours, twin).status).toBe(0);
    expect(await e.snapshot(ref, { list: true })).toEqual(
      (JSON.parse(qemuImg(['info', '--output=json', ours])) as { snapshots: unknown[] }).snapshots,
    );
    const missing = (await rejection(e.snapshot(ref, { delete: 'nope' }))) as BlockError;
    expect(missing.message).toBe("Could not delete snapshot 'nope': snapshot not found");
  });

  it('snapshotApply on an open writable node reverts what the node reads; read-only nodes refuse', async () => {
    const f = at('open-snap.qcow2');
    qemuImg(['create', '-f', 'qcow2', f, '1M']);
    const e = newEngine();
    await e.open('file', f, { format: 'qcow2', nodeName: 'n' });
    await e.write('n', 0, new Uint8Array(65536).fill(7));
    await e.snapshot('n', { create: 'before' });
    await e.write('n', 0, new Uint8Array(65536).fill(9));
    expect((await e.read('n', 0, 4))[0]).toBe(9);
    await e.snapshotApply('n', 'before');
    expect((await e.read('n', 0, 4))[0]).toBe(7);
    await e.dispose();
    qemuCheck(f);
    expect(qemuIo(f, ['read -P 7 0 64k'], 'qcow2')).not.toMatch(/Pattern verification failed/);
    await e.open('file', f, { format: 'qcow2', nodeName: 'ro', readOnly: true });
    expect(((await rejection(e.snapshotApply('ro', 'before'))) as BlockError).code).toBe('EROFS');
    await e.dispose();
  });

  it('resize of a file and of an open node (relative, shrink needs shrink)', async () => {
    const f = at('rs.qcow2');
    qemuImg(['create', '-f', 'qcow2', f, '1M']);
    const e = newEngine();
    expect(await e.resize({ storage: 'file', filename: f }, 2 * MiB)).toEqual({ size: 2 * MiB });
    expect((JSON.parse(qemuImg(['info', '--output=json', f])) as Record<string, number>)['virtual-size']).toBe(2 * MiB);
    await e.open('file', f, { format: 'qcow2', nodeName: 'n' });
    expect(await e.resize('n', MiB, { relative: true })).toEqual({ size: 3 * MiB });
    expect(((await rejection(e.resize('n', MiB))) as BlockError).message).toMatch(/--shrink/);
    expect(await e.resize('n', -MiB, { relative: true, shrink: true })).toEqual({ size: 2 * MiB });
    await e.dispose();
    expect((JSON.parse(qemuImg(['info', '--output=json', f])) as Record<string, number>)['virtual-size']).toBe(2 * MiB);
    qemuCheck(f);
  });

  it('amend compat and rebase (safe) give what qemu-img gives', async () => {
    const e = newEngine();
    for (const n of ['base1', 'base2']) qemuImg(['create', '-f', 'qcow2', at(`${n}.qcow2`), '1M']);
    qemuIo(at('base1.qcow2'), ['write -P 0x31 0 512k'], 'qcow2');
    qemuIo(at('base2.qcow2'), ['write -P 0x32 256k 512k'], 'qcow2');
    for (const n of ['top', 'top-twin']) {
      qemuImg(['create', '-f', 'qcow2', '-b', 'base1.qcow2', '-F', 'qcow2', at(`${n}.qcow2`)]);
      qemuIo(at(`${n}.qcow2`), ['write -P 0x33 100k 10k'], 'qcow2');
    }
    await e.rebase({ storage: 'file', filename: at('top.qcow2') }, 'base2.qcow2', { backingFormat: 'qcow2' });
    qemuImg(['rebase', '-b', 'base2.qcow2', '-F', 'qcow2', at('top-twin.qcow2')]);
    expect(equalImages(at('top.qcow2'), at('top-twin.qcow2')).status).toBe(0);
    expect((JSON.parse(qemuImg(['info', '--output=json', at('top.qcow2')])) as Record<string, string>)['backing-filename']).toBe('base2.qcow2');
    await e.amend({ storage: 'file', filename: at('base1.qcow2') }, { compat: '0.10' });
    expect((JSON.parse(qemuImg(['info', '--output=json', at('base1.qcow2')])) as Record<string, any>)['format-specific'].data.compat).toBe('0.10');
    qemuCheck(at('base1.qcow2'));
    expect(((await rejection(e.rebase('some-node', 'x'))) as BlockError).code).toBe('EBUSY');
  });

  it('commit of a file and of an open node (the node stays, emptied; its base holds the data)', async () => {
    const e = newEngine();
    for (const suffix of ['', '-twin', '-node']) {
      qemuImg(['create', '-f', 'qcow2', at(`cb${suffix}.qcow2`), '1M']);
      qemuIo(at(`cb${suffix}.qcow2`), ['write -P 0x41 0 1M'], 'qcow2');
      qemuImg(['create', '-f', 'qcow2', '-b', `cb${suffix}.qcow2`, '-F', 'qcow2', at(`ct${suffix}.qcow2`)]);
      qemuIo(at(`ct${suffix}.qcow2`), ['write -P 0x42 64k 100k', 'write -z 512k 64k'], 'qcow2');
    }
    const progress: number[] = [];
    await e.commit({ storage: 'file', filename: at('ct.qcow2') }, {}, (d) => progress.push(d));
    expect(progress[progress.length - 1]).toBe(MiB);
    qemuImg(['commit', at('ct-twin.qcow2')]);
    expect(equalImages(at('cb.qcow2'), at('cb-twin.qcow2')).status).toBe(0);
    expect(equalImages(at('ct.qcow2'), at('ct-twin.qcow2')).status).toBe(0);
    await e.open('file', at('ct-node.qcow2'), { format: 'qcow2', nodeName: 'top' });
    const before = await e.read('top', 0, MiB);
    await e.commit('top');
    expect(Buffer.from(await e.read('top', 0, MiB)).equals(Buffer.from(before))).toBe(true);
    const map = await e.map('top');
    expect(map.every((m) => m.depth === 1 || !m.data)).toBe(true);
    await e.dispose();
    qemuCheck(at('ct-node.qcow2'));
    qemuCheck(at('cb-node.qcow2'));
    expect(equalImages(at('cb-node.qcow2'), at('cb-twin.qcow2')).status).toBe(0);
  });
});

describe('engine: blockdev-create, block-commit and the job commands', () => {
  const dir = tmpDir();
  const at = (n: string) => path.join(dir, n);

  it('blockdev-create: file then qcow2 on its node, as a create job (query-jobs, job-dismiss); qemu-img agrees', async () => {
    const e = newEngine();
    const events: QmpEvent[] = [];
    e.onEvent((ev) => events.push(ev));
    const f = at('bc.qcow2');
    await e.execute('blockdev-create', { 'job-id': 'j1', options: { driver: 'file', filename: f, size: 0 } });
    await jobDone(e, 'j1');
    expect(await e.execute('query-jobs')).toEqual([{ id: 'j1', type: 'create', status: 'concluded', 'current-progress': 1, 'total-progress': 1 }]);
    await e.execute('job-dismiss', { id: 'j1' });
    await e.execute('blockdev-add', { driver: 'file', 'node-name': 'proto', filename: f });
    await e.execute('blockdev-create', {
      'job-id': 'j2',
      options: { driver: 'qcow2', file: 'proto', size: 4 * MiB, 'cluster-size': 65536, version: 'v3', 'lazy-refcounts': true, 'refcount-bits': 16 },
    });
    await jobDone(e, 'j2');
    expect(((await e.execute('query-jobs')) as { status: string }[])[0]!.status).toBe('concluded');
    await e.execute('job-dismiss', { id: 'j2' });
    expect(await e.execute('query-block-jobs')).toEqual([]);
    expect(events.filter((ev) => ev.event === 'JOB_STATUS_CHANGE').map((ev) => `${ev.data.id as string}:${ev.data.status as string}`)).toEqual([
      // QEMU 7.2's sequence for a blockdev-create job (created → running → waiting → pending → concluded, null on dismiss).
      'j1:created',
      'j1:running',
      'j1:waiting',
      'j1:pending',
      'j1:concluded',
      'j1:null',
      'j2:created',
      'j2:running',
      'j2:waiting',
      'j2:pending',
      'j2:concluded',
      'j2:null',
    ]);
    expect(events.some((ev) => ev.event.startsWith('BLOCK_JOB_'))).toBe(false);
    await e.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'q', file: 'proto' });
    await e.write('q', 1000, seededBytes(70000, 3));
    await e.dispose();
    qemuCheck(f);
    const info = JSON.parse(qemuImg(['info', '--output=json', f])) as Record<string, any>;
    expect(info['virtual-size']).toBe(4 * MiB);
    expect(info['format-specific'].data).toMatchObject({ compat: '1.1', 'lazy-refcounts': true, 'refcount-bits': 16 });
  });

  it('blockdev-create: bad options fail at once (QAPI), in-use nodes fail in the job with the error in query-jobs', async () => {
    const e = newEngine();
    const bad = (await rejection(e.execute('blockdev-create', { 'job-id': 'x', options: { driver: 'qcow2', file: 'p', size: 1, colour: 'red' } }))) as QmpError;
    expect(bad.toQmp()).toEqual({ class: 'GenericError', desc: "Parameter 'options.colour' is unexpected" });
    const badV = (await rejection(e.execute('blockdev-create', { 'job-id': 'x', options: { driver: 'qcow2', file: 'p', size: 1, version: 'v4' } }))) as QmpError;
    expect(badV.desc).toBe("Parameter 'options.version' does not accept value 'v4'");
    fs.writeFileSync(at('busy.qcow2'), '');
    await e.execute('blockdev-create', { 'job-id': 'c', options: { driver: 'qcow2', file: { driver: 'file', filename: at('busy.qcow2') }, size: MiB } });
    await jobDone(e, 'c');
    await e.execute('job-dismiss', { id: 'c' });
    await e.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'q', file: { driver: 'file', 'node-name': 'p', filename: at('busy.qcow2') } });
    await e.execute('blockdev-create', { 'job-id': 'j', options: { driver: 'qcow2', file: 'p', size: MiB } });
    await jobDone(e, 'j');
    const jobs = (await e.execute('query-jobs')) as { status: string; error?: string }[];
    expect(jobs[0]).toMatchObject({ status: 'concluded', error: "Node 'p' is in use: close the format node on it first" });
    const dup = (await rejection(e.execute('blockdev-create', { 'job-id': 'j', options: { driver: 'file', filename: at('z'), size: 0 } }))) as QmpError;
    expect(dup.desc).toBe("Job ID 'j' already in use");
    await e.dispose();
    qemuCheck(at('busy.qcow2'));
  });

  it('block-commit of a lower layer: data lands in base, the overlay points at base, qemu-img agrees; events and job commands', async () => {
    // base <- mid <- top, made by qemu-img; a twin chain committed by qemu-img commit of mid.
    for (const s of ['', '-twin']) {
      qemuImg(['create', '-f', 'qcow2', at(`base${s}.qcow2`), '2M']);
      qemuIo(at(`base${s}.qcow2`), ['write -P 0x51 0 2M'], 'qcow2');
      qemuImg(['create', '-f', 'qcow2', '-b', `base${s}.qcow2`, '-F', 'qcow2', at(`mid${s}.qcow2`)]);
      qemuIo(at(`mid${s}.qcow2`), ['write -P 0x52 64k 300k', 'write -z 1M 64k'], 'qcow2');
      qemuImg(['create', '-f', 'qcow2', '-b', `mid${s}.qcow2`, '-F', 'qcow2', at(`top${s}.qcow2`)]);
      qemuIo(at(`top${s}.qcow2`), ['write -P 0x53 128k 64k'], 'qcow2');
    }
    qemuImg(['commit', at('mid-twin.qcow2')]);
    qemuImg(['rebase', '-u', '-b', at('base-twin.qcow2'), '-F', 'qcow2', at('top-twin.qcow2')]);
    const e = newEngine();
    const events: string[] = [];
    e.onEvent((ev) => events.push(`${ev.event}:${(ev.data.status as string | undefined) ?? ''}`));
    await e.open('file', at('top.qcow2'), { format: 'qcow2', nodeName: 'top', device: 'drive0' });
    const before = await e.read('drive0', 0, 2 * MiB);
    const nodes = e.allNodes().map((n) => e.nameOf(n));
    const midName = nodes.find((n) => e.findNode(n)!.filename === at('mid.qcow2') && e.findNode(n)!.driver.name === 'qcow2')!;
    // Active commit is a job with a ready phase (test/unit/active-commit.test.ts); a backing-file is refused for it, as QEMU.
    const active = (await rejection(e.execute('block-commit', { device: 'drive0', 'backing-file': 'x' }))) as QmpError;
    expect(active.desc).toBe("'backing-file' specified, but 'top' is the active layer");
    const self = (await rejection(e.execute('block-commit', { device: 'drive0', 'top-node': midName, 'base-node': midName }))) as QmpError;
    expect(self.desc).toBe('cannot commit an image into itself');
    expect(((await rejection(e.execute('block-commit', { device: 'nope' }))) as QmpError).toQmp()).toEqual({ class: 'DeviceNotFound', desc: "Device 'nope' not found" });
    await e.execute('block-commit', { device: 'drive0', 'job-id': 'cj', 'top-node': midName, 'auto-dismiss': false });
    await jobDone(e, 'cj');
    expect(await e.execute('query-block-jobs')).toMatchObject([{ type: 'commit', device: 'cj', status: 'concluded', len: 2 * MiB, offset: 2 * MiB }]);
    expect(((await rejection(e.execute('job-complete', { id: 'cj' }))) as QmpError).desc).toBe("Job 'cj' in state 'concluded' cannot accept command verb 'complete'");
    expect(((await rejection(e.execute('block-job-set-speed', { device: 'cj', speed: 1000 }))) as QmpError).desc).toBe(
      "Job 'cj' in state 'concluded' cannot accept command verb 'set-speed'",
    );
    await e.execute('job-dismiss', { id: 'cj' });
    expect(events).toEqual([
      'JOB_STATUS_CHANGE:created',
      'JOB_STATUS_CHANGE:running',
      'JOB_STATUS_CHANGE:waiting',
      'JOB_STATUS_CHANGE:pending',
      'BLOCK_JOB_COMPLETED:',
      'JOB_STATUS_CHANGE:concluded',
      'JOB_STATUS_CHANGE:null',
    ]);
    expect(Buffer.from(await e.read('drive0', 0, 2 * MiB)).equals(Buffer.from(before))).toBe(true);
    expect(e.allNodes().some((n) => n.filename === at('mid.qcow2'))).toBe(false);
    const info = (await e.info('top', { backingChain: true })) as Record<string, any>;
    expect(info['backing-image'].filename).toBe(at('base.qcow2'));
    await e.dispose();
    expect(equalImages(at('base.qcow2'), at('base-twin.qcow2')).status).toBe(0);
    expect(equalImages(at('top.qcow2'), at('top-twin.qcow2')).status).toBe(0);
    expect((JSON.parse(qemuImg(['info', '--output=json', at('top.qcow2')])) as Record<string, string>)['backing-filename']).toBe(at('base.qcow2'));
    for (const f of ['base.qcow2', 'top.qcow2']) qemuCheck(at(f));
  });
});
