/**
 * Mirror and backup jobs against QEMU 7.2: the same QMP script runs through
 * `qemu-system-x86_64 -qmp stdio` and through Engine.execute on twin files
 * made by qemu-img; replies and events (timestamps dropped) must be equal,
 * and the images both sides leave are compared with qemu-img. Guest writes
 * during a job are HMP `qemu-io` commands on the QEMU side and engine
 * writes on ours (the same bytes at the same offsets).
 */
/* eslint-disable @typescript-eslint/no-explicit-any */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FileStorage } from '../../src/node.js';
import { Engine } from '../../src/engine/index.js';
import { qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';
import { engineTranscript, haveQemuSystem, qemuTranscript, type QmpCommandLine, type QmpStep } from '../helpers/qmp.js';

const MiB = 1024 * 1024;

/** src: 4 MiB, 0x01 in the first MiB and 0x02 at 2–2.5 MiB; empty 4 MiB targets t1..t4. */
function makeImages(dir: string): void {
  const at = (n: string) => path.join(dir, n);
  qemuImg(['create', '-f', 'qcow2', at('src.qcow2'), '4M']);
  qemuIo(at('src.qcow2'), ['write -P 1 0 1M', 'write -P 2 2M 512k'], 'qcow2');
  for (const t of ['t1', 't2', 't3', 't4']) qemuImg(['create', '-f', 'qcow2', at(`${t}.qcow2`), '4M']);
  qemuImg(['create', '-f', 'qcow2', at('big.qcow2'), '8M']);
  qemuImg(['create', '-f', 'raw', at('flat.raw'), '4M']);
  // A chain for sync=top: base (0x03 everywhere) ← ovl (0x04 at 1 MiB).
  qemuImg(['create', '-f', 'qcow2', at('base.qcow2'), '4M']);
  qemuIo(at('base.qcow2'), ['write -P 3 0 4M'], 'qcow2');
  qemuImg(['create', '-f', 'qcow2', '-F', 'qcow2', '-b', 'base.qcow2', at('ovl.qcow2')]);
  qemuIo(at('ovl.qcow2'), ['write -P 4 1M 64k'], 'qcow2');
}

const add = (dir: string, name: string, backing?: string): QmpCommandLine => ({
  execute: 'blockdev-add',
  arguments: {
    driver: 'qcow2',
    'node-name': name,
    file: { driver: 'file', 'node-name': `${name}-file`, filename: path.join(dir, `${name}.qcow2`) },
    ...(backing ? { backing } : {}),
  },
});
const backingOf = (f: string) => (JSON.parse(qemuImg(['info', '--output=json', f])) as { 'backing-filename'?: string })['backing-filename'];
const x = (execute: string, args?: Record<string, unknown>): QmpCommandLine => (args ? { execute, arguments: args } : { execute });
/** A guest write: HMP qemu-io on QEMU, Engine.write on ours. */
const guestWrite = (node: string, pattern: number, offset: number, bytes: number): QmpCommandLine =>
  x('human-monitor-command', { 'command-line': `qemu-io ${node} "write -P ${pattern} ${offset} ${bytes}"` });

/** Engine side of the HMP qemu-io writes the scripts use. */
function withGuestWrites(engine: Engine): Engine {
  const orig = engine.execute.bind(engine);
  engine.execute = async (command: string, args?: unknown) => {
    if (command !== 'human-monitor-command') return orig(command, args);
    // QEMU's backup and mirror put a filter above the source: the guest writes through it (named cbw-<node> / mir-<node>).
    const m = /^qemu-io (?:cbw-|mir-)?(\S+) "write -P (\d+) (\d+) (\d+)"$/.exec((args as { 'command-line': string })['command-line']);
    if (!m) throw new Error(`unexpected HMP line ${JSON.stringify(args)}`);
    await engine.write(m[1]!, Number(m[3]), new Uint8Array(Number(m[4])).fill(Number(m[2])));
    return '';
  };
  return engine;
}

/** query-named-block-nodes, reduced to the dirty bitmaps of the named format nodes (QEMU lists its filter nodes too). */
function bitmapsOnly(st: QmpStep): QmpStep {
  const nodes = (st.reply as { return: any[] }).return;
  const out: Record<string, unknown> = {};
  for (const n of nodes) if (n.drv === 'qcow2') out[n['node-name']] = n['dirty-bitmaps'] ?? [];
  return { ...st, reply: { return: out } };
}

/**
 * QEMU's HMP qemu-io attaches a temporary BlockBackend to the node, and
 * attaching drains it: every job there pauses and resumes (a ready one goes to standby and back). The engine writes
 * without a drain, so those pairs are dropped from QEMU's HMP steps.
 */
function dropHmpDrains(steps: QmpStep[]): QmpStep[] {
  return steps.map((st) => {
    if (st.cmd === 'query-named-block-nodes') return bitmapsOnly(st);
    if (st.cmd !== 'human-monitor-command') return st;
    const ev = st.events.filter((e) => !(e.event === 'JOB_STATUS_CHANGE' && ['paused', 'running', 'standby', 'ready'].includes(e.data.status as string)));
    return { ...st, events: ev };
  });
}

async function both(cmds: (dir: string) => QmpCommandLine[]) {
  const qd = tmpDir('qmpmb-q-');
  const ed = tmpDir('qmpmb-e-');
  makeImages(qd);
  makeImages(ed);
  const theirs = dropHmpDrains(await qemuTranscript(cmds(qd), { cwd: qd }));
  const engine = withGuestWrites(new Engine({ storages: { file: new FileStorage() } }));
  const ours = (await engineTranscript(engine, cmds(ed))).map((st) => (st.cmd === 'query-named-block-nodes' ? bitmapsOnly(st) : st));
  await engine.dispose();
  for (let i = 0; i < theirs.length; i++) expect({ i, ...ours[i] }).toEqual({ i, ...theirs[i] });
  expect(ours.length).toBe(theirs.length);
  if (process.env.SHOW) for (const st of ours) console.log(JSON.stringify(st));
  return { qd, ed, ours };
}

const same = (a: string, b: string) => expect(qemuImg(['compare', a, b])).toContain('Images are identical');
const clean = (f: string) => expect(qemuImgRun(['check', f]).status, f).toBe(0);
/** Starts of the 64 KiB clusters an image holds data for itself. */
const dataClustersOf = (f: string) =>
  (JSON.parse(qemuImg(['map', '--output=json', f])) as { start: number; length: number; data: boolean; depth: number }[])
    .filter((m) => m.data && m.depth === 0)
    .flatMap((m) => Array.from({ length: m.length / 65536 }, (_, i) => m.start + i * 65536));

/** The bytes a qcow2 image shows. */
const guest = (f: string) => {
  const out = `${f}.raw`;
  qemuImg(['convert', '-U', '-O', 'raw', f, out]);
  const b = fs.readFileSync(out);
  fs.rmSync(out);
  return b;
};

describe.runIf(haveQemuSystem())('mirror, against qemu-system-x86_64', () => {
  it('blockdev-mirror and drive-mirror: ready, guest writes mirrored, complete, soft and forced cancel, errors', async () => {
    const { qd, ed } = await both((dir) => [
      add(dir, 'src'),
      add(dir, 't1'),
      add(dir, 't2'),
      x('blockdev-mirror', { 'job-id': 'm0', device: 'src', target: 't1', sync: 'full', granularity: 1000 }),
      x('blockdev-mirror', { 'job-id': 'm0', device: 'src', target: 'src', sync: 'full' }),
      x('blockdev-mirror', { 'job-id': 'm0', device: 'src', target: 't1', sync: 'bitmap' }),
      x('blockdev-mirror', { 'job-id': 'm0', device: 'src', target: 'nowhere', sync: 'full' }),
      // The copy: a zero target is not known, so every byte counts (len = 4 MiB). Guest writes are copied before they complete.
      // (QEMU copies a write-blocking write in its mirror-top filter: the guest writes through it, named mir-src.)
      x('blockdev-mirror', { 'job-id': 'm0', device: 'src', target: 't1', sync: 'full', 'auto-dismiss': false, 'copy-mode': 'write-blocking', 'filter-node-name': 'mir-src' }),
      x('query-block-jobs'),
      x('blockdev-mirror', { 'job-id': 'm1', device: 'src', target: 't2', sync: 'full' }),
      guestWrite('mir-src', 5, 3 * MiB, 64 * 1024),
      x('query-jobs'),
      x('job-complete', { id: 'm0' }),
      x('query-jobs'),
      x('job-dismiss', { id: 'm0' }),
      // A new image: only what the source holds is copied (len = 1.5 MiB); a soft cancel completes without a pivot.
      x('drive-mirror', { 'job-id': 'm2', device: 'src', target: path.join(dir, 'new.qcow2'), sync: 'full', format: 'qcow2' }),
      x('query-block-jobs'),
      x('block-job-cancel', { device: 'm2' }),
      // sync none: nothing to copy, ready at once; only the guest's write goes over; a forced cancel.
      x('blockdev-mirror', { 'job-id': 'm3', device: 'src', target: 't2', sync: 'none' }),
      x('blockdev-mirror', { 'job-id': 'm4', device: 'src', target: 't3', sync: 'none' }),
      guestWrite('src', 6, 0, 4096),
      x('query-block-jobs'),
      x('block-job-cancel', { device: 'm3', force: true }),
      // sync=top of an overlay: a new image on the same backing file, holding the overlay's one cluster.
      add(dir, 'base'),
      add(dir, 'ovl', 'base'),
      x('drive-mirror', { 'job-id': 'm5', device: 'base', target: path.join(dir, 'x.qcow2'), sync: 'full', format: 'qcow2' }),
      x('drive-mirror', { 'job-id': 'm5', device: 'ovl', target: path.join(dir, 'top.qcow2'), sync: 'top', format: 'qcow2' }),
      x('query-block-jobs'),
      x('block-job-cancel', { device: 'm5' }),
    ]);
    for (const d of [qd, ed]) {
      expect(backingOf(path.join(d, 'top.qcow2'))).toBe(path.join(d, 'base.qcow2'));
      same(path.join(d, 'top.qcow2'), path.join(d, 'ovl.qcow2'));
      clean(path.join(d, 'top.qcow2'));
    }
    for (const d of [qd, ed]) {
      // t1 took the mirrored guest write, as new.qcow2 did; t2 got only the write made after its start.
      same(path.join(d, 'new.qcow2'), path.join(d, 't1.qcow2'));
      for (const f of ['t1', 't2', 'new']) clean(path.join(d, `${f}.qcow2`));
    }
    for (const f of ['t1', 't2', 'new']) same(path.join(qd, `${f}.qcow2`), path.join(ed, `${f}.qcow2`));
    const t1 = guest(path.join(ed, 't1.qcow2'));
    expect(t1[3 * MiB]).toBe(5);
    expect(t1[0]).toBe(1);
    expect(t1[2 * MiB]).toBe(2);
    const t2 = guest(path.join(ed, 't2.qcow2'));
    expect(t2[0]).toBe(6);
    // The job copies whole chunks of its granularity (the target's 64 KiB cluster): the rest of that chunk is the source's.
    expect(t2[4096]).toBe(1);
    expect(t2.findIndex((b, i) => i >= 65536 && b !== 0)).toBe(-1);
  });
});

describe.runIf(haveQemuSystem())('backup, against qemu-system-x86_64', () => {
  it('copy-before-write, incremental with a bitmap, bitmap modes, compress, sync none, errors', async () => {
    const { qd, ed, ours } = await both((dir) => [
      add(dir, 'src'),
      add(dir, 't1'),
      add(dir, 't2'),
      add(dir, 't3'),
      x('block-dirty-bitmap-add', { node: 'src', name: 'bm' }),
      x('blockdev-backup', { 'job-id': 'b0', device: 'src', target: 'src', sync: 'full' }),
      x('blockdev-backup', { 'job-id': 'b0', device: 'src', target: 't1', sync: 'none', bitmap: 'bm', 'bitmap-mode': 'always' }),
      x('blockdev-backup', { 'job-id': 'b0', device: 'src', target: 't1', sync: 'full', 'bitmap-mode': 'always' }),
      x('blockdev-backup', { 'job-id': 'b0', device: 'src', target: 't1', sync: 'full', bitmap: 'nope', 'bitmap-mode': 'always' }),
      x('blockdev-backup', { 'job-id': 'b0', device: 'src', target: 't1', sync: 'full', bitmap: 'bm', 'bitmap-mode': 'never' }),
      x('blockdev-backup', { 'job-id': 'b0', device: 'src', target: 't1', sync: 'bitmap' }),
      x('blockdev-backup', { 'job-id': 'b0', device: 'src', target: 't1', sync: 'incremental', bitmap: 'bm', 'bitmap-mode': 'never' }),
      add(dir, 'big'),
      { execute: 'blockdev-add', arguments: { driver: 'raw', 'node-name': 'flat', file: { driver: 'file', filename: path.join(dir, 'flat.raw') } } },
      x('blockdev-backup', { 'job-id': 'b0', device: 'src', target: 'big', sync: 'full' }),
      x('blockdev-backup', { 'job-id': 'b0', device: 'src', target: 'flat', sync: 'full', compress: true }),
      x('blockdev-backup', { 'job-id': 'b0', device: 'src-file', target: 't1', sync: 'full' }),
      x('blockdev-backup', { 'job-id': '0b', device: 'src', target: 't1', sync: 'full' }),
      x('blockdev-mirror', { 'job-id': 'm9', device: 'src', target: 'big', sync: 'full' }),
      // Full backup, throttled: one chunk, then the guest overwrites data not yet copied — the target keeps the old bytes.
      x('blockdev-backup', { 'job-id': 'b0', device: 'src', target: 't1', sync: 'full', speed: 1, 'filter-node-name': 'cbw-src' }),
      x('query-block-jobs'),
      guestWrite('cbw-src', 7, 2 * MiB, 64 * 1024),
      x('block-job-set-speed', { device: 'b0', speed: 0 }),
      x('query-named-block-nodes', { flat: true }),
      // Incremental: only the cluster the bitmap marks goes to t2; on success the bitmap is clean.
      x('blockdev-backup', { 'job-id': 'b1', device: 'src', target: 't2', sync: 'incremental', bitmap: 'bm' }),
      x('query-named-block-nodes', { flat: true }),
      // Compressed, into a new image.
      x('drive-backup', { 'job-id': 'b2', device: 'src', target: path.join(dir, 'zip.qcow2'), sync: 'full', format: 'qcow2', compress: true }),
      // sync none: waits for its cancel; the guest's write copies the old cluster first.
      x('blockdev-backup', { 'job-id': 'b3', device: 'src', target: 't3', sync: 'none', 'filter-node-name': 'cbw-src' }),
      x('query-block-jobs'),
      guestWrite('cbw-src', 9, 0, 4096),
      x('block-job-cancel', { device: 'b3' }),
      // sync=top of an overlay (its backing file opened from its header, read-only) into a new image on the same
      // backing file; then a fleecing target (sync=none) whose backing is the overlay.
      add(dir, 'ovl'),
      x('drive-backup', { 'job-id': 'b4', device: 'ovl', target: path.join(dir, 'top.qcow2'), sync: 'top', format: 'qcow2' }),
      x('drive-backup', { 'job-id': 'b5', device: 'ovl', target: path.join(dir, 'fleece.qcow2'), sync: 'none', format: 'qcow2', 'filter-node-name': 'cbw-ovl' }),
      guestWrite('cbw-ovl', 10, 1 * MiB, 4096),
      x('query-block-jobs'),
      x('block-job-cancel', { device: 'b5' }),
    ]);
    for (const d of [qd, ed]) {
      expect(backingOf(path.join(d, 'top.qcow2'))).toBe(path.join(d, 'base.qcow2'));
      expect(backingOf(path.join(d, 'fleece.qcow2'))).toBe(path.join(d, 'ovl.qcow2'));
      for (const f of ['top', 'fleece']) clean(path.join(d, `${f}.qcow2`));
      // The fleecing image holds the overlay's old cluster, copied before the write of 10s.
      expect(dataClustersOf(path.join(d, 'fleece.qcow2'))).toEqual([MiB]);
    }
    same(path.join(qd, 'top.qcow2'), path.join(ed, 'top.qcow2'));
    same(path.join(qd, 'fleece.qcow2'), path.join(ed, 'fleece.qcow2'));
    const fl = guest(path.join(ed, 'fleece.qcow2'));
    expect(fl[MiB]).toBe(4);
    const now = guest(path.join(ed, 'src.qcow2'));
    for (const d of [qd, ed]) {
      for (const f of ['t1', 't2', 't3', 'zip']) clean(path.join(d, `${f}.qcow2`));
    }
    for (const f of ['t1', 't2', 't3', 'zip', 'src']) same(path.join(qd, `${f}.qcow2`), path.join(ed, `${f}.qcow2`));
    // t1: the source as it was before the guest write at 2 MiB.
    const t1 = guest(path.join(ed, 't1.qcow2'));
    expect(t1[2 * MiB]).toBe(2);
    expect(t1[0]).toBe(1);
    expect(now[2 * MiB]).toBe(7);
    expect(now[0]).toBe(9);
    // t2: exactly the one 64 KiB cluster the bitmap marked.
    const map = JSON.parse(qemuImg(['map', '--output=json', path.join(ed, 't2.qcow2')])) as { start: number; length: number; data: boolean }[];
    expect(map.filter((e) => e.data)).toEqual([expect.objectContaining({ start: 2 * MiB, length: 64 * 1024 })]);
    // zip: compressed clusters, the source's view at that time.
    expect(qemuImg(['check', path.join(ed, 'zip.qcow2')])).toMatch(/compressed clusters/);
    // t3: the old first cluster, before the write of 9s.
    const t3 = guest(path.join(ed, 't3.qcow2'));
    expect(t3[0]).toBe(1);
    const named = ours.filter((st) => st.cmd === 'query-named-block-nodes');
    const bitmaps = (i: number) => (named[i]!.reply as { return: Record<string, unknown> }).return.src;
    expect(bitmaps(0)).toEqual([expect.objectContaining({ name: 'bm', count: 64 * 1024 })]);
    expect(bitmaps(1)).toEqual([expect.objectContaining({ name: 'bm', count: 0 })]);
  });
});
