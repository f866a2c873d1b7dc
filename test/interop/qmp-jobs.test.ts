/**
 * The job state machine against QEMU 7.2 itself: the same QMP script runs
 * through `qemu-system-x86_64 -qmp stdio` and through Engine.execute on twin
 * chains made by qemu-img, and the transcripts (replies, and the events each
 * command caused, timestamps masked) must be equal — status changes, verb
 * refusals, the pause/resume/cancel/finalize/dismiss replies, query-jobs and
 * query-block-jobs members (offset, len, speed, busy, paused…), and the
 * BLOCK_JOB_* events. Jobs start with speed 1 byte/s, so both sides copy one
 * chunk and then sleep: the states in between are deterministic.
 * Afterwards, the images the two sides left are compared with qemu-img.
 */
/* eslint-disable @typescript-eslint/no-explicit-any */
import { describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { FileStorage } from '../../src/node.js';
import { Engine } from '../../src/engine/index.js';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu.js';
import { engineTranscript, haveQemuSystem, qemuTranscript, type QmpCommandLine, type QmpStep } from '../helpers/qmp.js';

/** base (4 MiB of 0x01) ← mid (0x03 at 1–2 MiB) ← top (0x02 in the first 64 KiB), for stream (s*), commit (c*), active commit (a*, b*). */
function makeChains(dir: string): void {
  const at = (n: string) => path.join(dir, n);
  for (const k of ['s', 'c', 'a', 'b']) {
    qemuImg(['create', '-f', 'qcow2', at(`${k}base.qcow2`), '4M']);
    qemuIo(at(`${k}base.qcow2`), ['write -P 1 0 4M'], 'qcow2');
    qemuImg(['create', '-f', 'qcow2', '-b', `${k}base.qcow2`, '-F', 'qcow2', at(`${k}mid.qcow2`)]);
    qemuIo(at(`${k}mid.qcow2`), ['write -P 3 1M 1M'], 'qcow2');
    qemuImg(['create', '-f', 'qcow2', '-b', `${k}mid.qcow2`, '-F', 'qcow2', at(`${k}top.qcow2`)]);
    qemuIo(at(`${k}top.qcow2`), ['write -P 2 0 64k'], 'qcow2');
  }
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

function script(dir: string): QmpCommandLine[] {
  const x = (execute: string, args?: Record<string, unknown>): QmpCommandLine => (args ? { execute, arguments: args } : { execute });
  return [
    add(dir, 'sbase'),
    add(dir, 'smid', 'sbase'),
    add(dir, 'stop', 'smid'),
    // stream mid into top, keeping base; throttled, manual finalize and dismiss
    x('block-stream', { 'job-id': 's0', device: 'stop', 'base-node': 'sbase', speed: 1, 'auto-finalize': false, 'auto-dismiss': false }),
    x('block-stream', { 'job-id': 's0', device: 'stop' }),
    x('query-block-jobs'),
    x('query-jobs'),
    x('block-job-pause', { device: 's0' }),
    x('block-job-pause', { device: 's0' }),
    x('query-block-jobs'),
    x('block-job-cancel', { device: 's0' }),
    x('block-job-complete', { device: 's0' }),
    x('job-complete', { id: 's0' }),
    x('block-job-resume', { device: 's0' }),
    x('block-job-resume', { device: 's0' }),
    x('job-pause', { id: 's0' }),
    x('job-resume', { id: 's0' }),
    x('block-job-set-speed', { device: 's0', speed: -1 }),
    x('job-finalize', { id: 's0' }),
    x('job-dismiss', { id: 's0' }),
    x('block-job-set-speed', { device: 's0', speed: 0 }),
    x('query-jobs'),
    x('query-block-jobs'),
    x('block-job-set-speed', { device: 's0', speed: 5 }),
    x('job-pause', { id: 's0' }),
    x('job-resume', { id: 's0' }),
    x('job-finalize', { id: 's0' }),
    x('query-block-jobs'),
    x('job-cancel', { id: 's0' }),
    x('block-job-dismiss', { id: 's0' }),
    x('query-jobs'),
    // commit of the middle layer: first cancelled while throttled, then run to the end
    add(dir, 'cbase'),
    add(dir, 'cmid', 'cbase'),
    add(dir, 'ctop', 'cmid'),
    x('block-commit', { 'job-id': 'c0', device: 'ctop', 'top-node': 'cmid', 'base-node': 'cbase', speed: 1 }),
    x('query-block-jobs'),
    x('job-cancel', { id: 'c0' }),
    x('query-jobs'),
    x('block-commit', { 'job-id': 'c2', device: 'ctop', 'top-node': 'cmid', 'base-node': 'cbase', 'auto-finalize': false }),
    x('query-block-jobs'),
    x('job-cancel', { id: 'c2' }),
    x('block-commit', { 'job-id': 'c1', device: 'ctop', 'top-node': 'cmid', 'base-node': 'cbase', 'auto-dismiss': false }),
    x('query-jobs'),
    x('job-dismiss', { id: 'c1' }),
    // active commit (QEMU runs it as a mirror) throttled: len is what lies above base (top's 64 KiB, mid's 1 MiB),
    // offset its first run of dirty chunks (top's); running, not ready, while the speed limit sleeps
    add(dir, 'abase'),
    add(dir, 'amid', 'abase'),
    add(dir, 'atop', 'amid'),
    x('block-commit', { 'job-id': 'a1', device: 'atop', speed: 1 }),
    x('query-block-jobs'),
    x('job-cancel', { id: 'a1' }),
    x('query-jobs'),
    // unknown jobs
    x('block-job-cancel', { device: 'nojob' }),
    x('job-cancel', { id: 'nojob' }),
    x('job-dismiss', { id: 'nojob' }),
    x('block-job-set-speed', { device: 'nojob', speed: 1 }),
    // a create job is a job but not a block job
    x('blockdev-create', { 'job-id': 'mk', options: { driver: 'file', filename: path.join(dir, 'new.img'), size: 0 } }),
    x('block-job-pause', { device: 'mk' }),
    x('query-jobs'),
    x('job-dismiss', { id: 'mk' }),
  ];
}

describe.runIf(haveQemuSystem())('jobs over QMP, against qemu-system-x86_64', () => {
  it('stream, commit and create jobs: every reply and event as QEMU 7.2', async () => {
    const qd = tmpDir('qmpjobs-q-');
    const ed = tmpDir('qmpjobs-e-');
    makeChains(qd);
    makeChains(ed);
    const theirs = await qemuTranscript(script(qd), { cwd: qd });
    const engine = new Engine({ storages: { file: new FileStorage() } });
    const ours = await engineTranscript(engine, script(ed));
    await engine.dispose();
    // Step by step, so a failure names the command.
    for (let i = 0; i < theirs.length; i++) expect({ i, ...ours[i] }).toEqual({ i, ...theirs[i] });
    // Both sides left the same images: top streamed onto base, cbase holding cmid's data, ctop on cbase.
    for (const f of ['stop.qcow2', 'cbase.qcow2', 'ctop.qcow2']) {
      expect(qemuImg(['compare', '-f', 'qcow2', '-F', 'qcow2', path.join(qd, f), path.join(ed, f)])).toContain('Images are identical');
    }
    const backing = (d: string, f: string) => (JSON.parse(qemuImg(['info', '--output=json', path.join(d, f)])) as Record<string, unknown>)['backing-filename'];
    // Both wrote base's filename as the node has it (the absolute path blockdev-add gave).
    for (const [f, b] of [['stop.qcow2', 'sbase.qcow2'], ['ctop.qcow2', 'cbase.qcow2']] as const) {
      expect(backing(ed, f)).toBe(path.join(ed, b));
      expect(backing(qd, f)).toBe(path.join(qd, b));
    }
  });
});

/** Per node: its dirty bitmaps (query-named-block-nodes) and wr_highest_offset (query-blockstats), for the named nodes. */
function nodeFacts(steps: QmpStep[]): Record<string, unknown> {
  const [nodes, stats] = steps.slice(-2).map((st) => (st.reply as { return: Record<string, any>[] }).return);
  const out: Record<string, unknown> = {};
  for (const n of nodes!) if (!String(n['node-name']).startsWith('#')) out[`${n['node-name']}:bitmaps`] = n['dirty-bitmaps'] ?? [];
  for (const st of stats!) if (!String(st['node-name']).startsWith('#')) out[`${st['node-name']}:wr_highest_offset`] = st.stats.wr_highest_offset;
  return out;
}

describe.runIf(haveQemuSystem())('job writes go through the block layer, as QEMU', () => {
  it("a bitmap on the commit base sees the committed ranges; the stream target's one stays clean (copy-on-read); wr_highest_offset counts job writes", async () => {
    const qd = tmpDir('qmpjobs-q-');
    const ed = tmpDir('qmpjobs-e-');
    makeChains(qd);
    makeChains(ed);
    const x = (execute: string, args: Record<string, unknown>): QmpCommandLine => ({ execute, arguments: args });
    const cmds = (dir: string) => [
      ...['c', 's'].flatMap((k) => [add(dir, `${k}base`), add(dir, `${k}mid`, `${k}base`), add(dir, `${k}top`, `${k}mid`)]),
      x('block-dirty-bitmap-add', { node: 'cbase', name: 'committed' }),
      x('block-dirty-bitmap-add', { node: 'stop', name: 'streamed', granularity: 4096 }),
      x('block-commit', { 'job-id': 'c', device: 'ctop', 'top-node': 'cmid', 'base-node': 'cbase' }),
      x('block-stream', { 'job-id': 's', device: 'stop', 'base-node': 'sbase' }),
      x('query-named-block-nodes', { flat: true }),
      x('query-blockstats', { 'query-nodes': true }),
    ];
    const theirs = await qemuTranscript(cmds(qd), { cwd: qd });
    const engine = new Engine({ storages: { file: new FileStorage() } });
    const ours = await engineTranscript(engine, cmds(ed));
    await engine.dispose();
    for (let i = 0; i < theirs.length - 2; i++) expect({ i, ...ours[i] }).toEqual({ i, ...theirs[i] });
    const facts = nodeFacts(ours);
    expect(facts).toEqual(nodeFacts(theirs));
    // What the facts say, independently of QEMU: cmid's 1 MiB at 1 MiB went into cbase, marked in its bitmap.
    // Stream copies what stop already shows (QEMU's copy-on-read): stop's bitmap stays clean and its
    // written offset 0, while its file node counts the writes.
    expect(facts['cbase:bitmaps']).toMatchObject([{ name: 'committed', count: 1024 * 1024 }]);
    expect(facts['cbase:wr_highest_offset']).toBe(2 * 1024 * 1024);
    expect(facts['stop:bitmaps']).toMatchObject([{ name: 'streamed', count: 0 }]);
    expect(facts['stop:wr_highest_offset']).toBe(0);
    expect(facts['stop-file:wr_highest_offset']).toBeGreaterThan(1024 * 1024);
  });
});

/** Active commit's progress counts what QEMU's mirror counts (its dirty bitmap), ours what it copied: those numbers are masked. */
function maskProgress(steps: QmpStep[]): QmpStep[] {
  const mask = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(mask);
    if (v && typeof v === 'object') {
      return Object.fromEntries(
        Object.entries(v).map(([k, x]) => [k, ['len', 'offset', 'current-progress', 'total-progress'].includes(k) ? typeof x : mask(x)]),
      );
    }
    return v;
  };
  return steps.map((st) => mask(st) as QmpStep);
}

describe.runIf(haveQemuSystem())('active commit, against qemu-system-x86_64', () => {
  it('ready, then complete (base holds the guest view) or a soft cancel; events and replies as QEMU 7.2', async () => {
    const qd = tmpDir('qmpjobs-q-');
    const ed = tmpDir('qmpjobs-e-');
    makeChains(qd);
    makeChains(ed);
    const x = (execute: string, args: Record<string, unknown>): QmpCommandLine => ({ execute, arguments: args });
    const cmds = (dir: string) => [
      ...['a', 'b'].flatMap((k) => [add(dir, `${k}base`), add(dir, `${k}mid`, `${k}base`), add(dir, `${k}top`, `${k}mid`)]),
      x('block-commit', { 'job-id': 'a0', device: 'atop', 'base-node': 'abase', 'backing-file': 'x' }),
      x('block-commit', { 'job-id': 'a0', device: 'atop', 'base-node': 'abase' }),
      x('query-block-jobs', {}),
      x('job-finalize', { id: 'a0' }),
      x('block-job-pause', { device: 'a0' }),
      x('query-jobs', {}),
      x('block-job-complete', { device: 'a0' }),
      x('block-job-resume', { device: 'a0' }),
      x('block-job-complete', { device: 'a0' }),
      x('query-jobs', {}),
      x('block-commit', { 'job-id': 'b0', device: 'btop', 'base-node': 'bbase', 'auto-dismiss': false }),
      x('block-job-cancel', { device: 'b0' }),
      x('query-jobs', {}),
      x('job-dismiss', { id: 'b0' }),
    ];
    const theirs = maskProgress(await qemuTranscript(cmds(qd), { cwd: qd }));
    const engine = new Engine({ storages: { file: new FileStorage() } });
    const ours = maskProgress(await engineTranscript(engine, cmds(ed)));
    await engine.dispose();
    for (let i = 0; i < theirs.length; i++) expect({ i, ...ours[i] }).toEqual({ i, ...theirs[i] });
    // Completed and soft-cancelled alike, base holds the top's guest view, as QEMU's base does.
    for (const f of ['abase.qcow2', 'bbase.qcow2']) {
      expect(qemuImg(['compare', '-f', 'qcow2', '-F', 'qcow2', path.join(qd, f), path.join(ed, f)])).toContain('Images are identical');
    }
    expect(qemuImg(['compare', '-f', 'qcow2', '-F', 'qcow2', path.join(ed, 'abase.qcow2'), path.join(ed, 'atop.qcow2')])).toContain('Images are identical');
  });
});
