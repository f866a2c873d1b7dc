// Kill tests in real Chromium: write, snapshot, commit, convert and amend on
// OPFS qcow2 images, killed after exactly N storage writes (crash-worker.ts
// counts them) by Worker.terminate() or by closing the tab that runs them
// (tab-page.ts); then the image is reopened by another engine. It must open,
// be consistent (our check and qemu-img check: leaks at most) and hold every
// write whose flush returned, and every snapshot whose create returned.
// `npm test` runs a seeded sample; `npm run crash` (BLOCKTAB_SWEEP=full) runs
// 100 kill points per operation and prints BENCH lines.
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { commands } from 'vitest/browser';
import * as Comlink from 'comlink';
import { createClient, type BlocktabClient } from '../../src/client/client.js';
import { BlockError } from '../../src/block/errors.js';
import { rng } from '../helpers/random.js';
import { crashScenarios, newProgress, type CrashProgress, type GuestWrite, type ScenarioName } from './crash-ops.js';
import type { CrashWorkerApi } from './crash-worker.js';
import type { WorkloadVerdict } from './workload-ops.js';

declare module 'vitest' {
  export interface ProvidedContext {
    crashSweep: { full: boolean; seed: number };
  }
}

const sweep = inject('crashSweep');
/** Kill points per operation (all of its storage writes when it makes fewer). */
const POINTS = (name: ScenarioName) => (sweep.full ? 100 : name === 'write' ? 2 : 1);
/** Of those, how many close the tab instead of calling terminate(): one in five; in CI one, for `write`. */
const TAB_POINTS = (name: ScenarioName, points: number) => (sweep.full ? Math.floor(points / 5) : name === 'write' ? 1 : 0);
const root = `blocktab-tests/crash-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
const tabUrl = new URL('./tab.html', import.meta.url).href;
/** Prepares, counts (a dry run) and verifies: a crash worker never armed. */
let client: BlocktabClient;
let counter: Comlink.Remote<CrashWorkerApi>;
/** The next worker to kill, loading while the current kill point runs (a worker takes seconds to load its modules). */
let spare: ReturnType<typeof spawnCrashWorker> | undefined;

beforeAll(async () => {
  ({ c: client, api: counter } = spawnCrashWorker());
  await client.ready();
});
afterAll(async () => {
  const top = await navigator.storage.getDirectory();
  const dir = await top.getDirectoryHandle('blocktab-tests', { create: true });
  await dir.removeEntry(root.split('/')[1]!, { recursive: true }).catch(() => {});
  client?.terminate();
  spare?.c.terminate();
});

interface KillState {
  killedAt: number | null;
  finished: string | null;
  progress: CrashProgress;
}

function spawnCrashWorker(): { c: BlocktabClient; api: Comlink.Remote<CrashWorkerApi>; killed: Promise<number> } {
  const w = new Worker(new URL('./crash-worker.ts', import.meta.url), { type: 'module' });
  const c = createClient(w);
  const killed = new Promise<number>((resolve) =>
    w.addEventListener('message', (e: MessageEvent) => {
      const at = (e.data as { crashAt?: unknown } | null)?.crashAt;
      if (typeof at === 'number') resolve(at);
    }),
  );
  return { c, api: c.remote as unknown as Comlink.Remote<CrashWorkerApi>, killed };
}

/** Runs the operation in a crash worker killed by terminate() after `n` storage writes. */
async function runKilled(name: ScenarioName, dir: string, n: number): Promise<KillState> {
  const { c, api, killed } = spare ?? spawnCrashWorker();
  spare = undefined;
  await c.ready();
  await api.arm(n);
  const progress = newProgress();
  const ran = crashScenarios[name].run(c, dir, progress).then(
    () => 'done',
    (e: unknown) => `failed: ${e instanceof Error ? e.message : String(e)}`,
  );
  const r = await Promise.race([killed.then((at) => ({ killedAt: at, finished: null })), ran.then((f) => ({ killedAt: null, finished: f }))]);
  c.terminate();
  return { ...r, progress };
}

/** Runs the operation to its end in the never-armed worker; resolves to its storage writes. */
async function dryRun(name: ScenarioName, dir: string): Promise<KillState & { writes: number }> {
  const progress = newProgress();
  await counter.arm(Infinity);
  const finished = await crashScenarios[name].run(client, dir, progress).then(
    () => 'done',
    (e: unknown) => `failed: ${e instanceof Error ? e.message : String(e)}`,
  );
  return { killedAt: null, finished, progress, writes: await counter.writes() };
}

/** Opens `filename` read-only, waiting (5 s at most) for the dead worker's lock and handles to go. */
async function reopen(filename: string, opts: { backing?: boolean } = {}): Promise<string> {
  for (let i = 0; ; i++) {
    try {
      return await client.open('opfs', filename, { format: 'qcow2', readOnly: true, backing: opts.backing });
    } catch (e) {
      if (!(e instanceof BlockError && e.code === 'EBUSY') || i >= 50) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** qemu-img check of an OPFS file, on the Node side (workload-server.ts); the page reads the file directly. */
async function qemuCheck(filename: string): Promise<WorkloadVerdict> {
  let dir = await navigator.storage.getDirectory();
  const parts = filename.split('/');
  for (const d of parts.slice(0, -1)) dir = await dir.getDirectoryHandle(d);
  const bytes = await (await (await dir.getFileHandle(parts.at(-1)!)).getFile()).arrayBuffer();
  const res = await fetch(inject('workloadServer'), { method: 'POST', body: bytes, headers: { 'X-Workload': JSON.stringify({ size: 0, ops: [], checkOnly: true }) } });
  return JSON.parse(await res.text()) as WorkloadVerdict;
}

/** Kill points that left the snapshot operation's known OFLAG_COPIED window (see verify). */
let windows = 0;

/** What is wrong with the images after a kill (empty: nothing). */
async function verify(name: ScenarioName, dir: string, prepared: GuestWrite[], s: KillState): Promise<string[]> {
  const bad: string[] = [];
  const at = `${name} killed after ${s.killedAt ?? 'none'} writes`;
  const p = s.progress;
  if (s.finished?.startsWith('failed')) bad.push(`${at}: the operation ${s.finished}`);
  /**
   * Our check and qemu-img's, then the writes and snapshots that must be
   * there. Snapshot create and delete have QEMU's known windows (see
   * src/formats/qcow2/snapshot.ts): a refcount and an active L1 or L2
   * entry's COPIED flag that disagree, which qemu-img reports as "ERROR
   * OFLAG_COPIED data cluster" or "... L2 cluster"; the snapshot operation
   * may leave exactly that, counted apart, and nothing else.
   */
  const inspect = async (file: string, writes: GuestWrite[], opts: { qemu: boolean; backing?: boolean }) => {
    let window = 0;
    if (opts.qemu) {
      const v = await qemuCheck(`${dir}/${file}`);
      const errors = (v.checkText ?? '').split('\n').filter((l) => l.startsWith('ERROR'));
      const copied = errors.filter((l) => /^ERROR OFLAG_COPIED (data|L2) cluster: .* refcount=[12]$/.test(l));
      if (name === 'snapshot' && copied.length > 0 && copied.length === errors.length && v.check['check-errors'] === 0) window = (v.check.corruptions as number | undefined) ?? copied.length;
      else if (![0, 3].includes(v.checkStatus) || v.check.corruptions !== undefined) bad.push(`${at}: ${file}: qemu-img check ${v.checkStatus} ${v.checkText ?? JSON.stringify(v.check)}`);
    }
    if (window) windows++;
    const node = await reopen(`${dir}/${file}`, { backing: opts.backing });
    try {
      const ck = await client.check(node);
      if (ck['check-errors'] !== 0 || (ck.corruptions ?? 0) !== window) bad.push(`${at}: ${file}: check ${JSON.stringify(ck)}${window ? ` (qemu-img: ${window} OFLAG_COPIED)` : ''}`);
      for (const w of writes) {
        const got = await client.read(node, w.offset, w.bytes);
        if (!got.every((b) => b === w.pattern)) bad.push(`${at}: ${file}: flushed write ${w.bytes}@${w.offset} (0x${w.pattern.toString(16)}) lost`);
      }
      if (p.snapshotsIn.length + p.snapshotsOut.length) {
        const names = (await client.snapshot(node, { list: true })).map((x) => x.name);
        for (const n of p.snapshotsIn) if (!names.includes(n)) bad.push(`${at}: snapshot ${n} lost (have ${names.join(',')})`);
        for (const n of p.snapshotsOut) if (names.includes(n)) bad.push(`${at}: deleted snapshot ${n} back`);
      }
    } finally {
      await client.close(node);
    }
  };
  try {
    const image = crashScenarios[name].image;
    // The overlay's check needs its base open, which qemu-img on the Node side has not: it checks the base alone.
    await inspect(image, [...prepared, ...p.flushed], { qemu: name !== 'commit' });
    if (name === 'commit') await inspect('base.qcow2', p.done ? prepared : [], { qemu: true, backing: false });
    if (name === 'convert') {
      // The target is new: unfinished it may not be an image yet, but one that opens must be consistent.
      const opened = await reopen(`${dir}/dst.qcow2`).then((n) => client.close(n).then(() => true), () => false);
      if (p.done && !opened) bad.push(`${at}: converted image does not open`);
      if (opened) await inspect('dst.qcow2', p.done ? prepared : [], { qemu: true });
    }
  } catch (e) {
    bad.push(`${at}: reopen failed: ${e instanceof Error ? e.message : String(e)}`);
  }
  return bad;
}

/** `count` distinct kill points below `total`, drawn with the sweep seed salted by the operation. */
function killPoints(name: string, total: number, count: number): number[] {
  const next = rng(sweep.seed ^ [...name].reduce((h, ch) => Math.imul(h ^ ch.charCodeAt(0), 16777619), 2166136261));
  const all = Array.from({ length: total }, (_, i) => i);
  for (let i = all.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [all[i], all[j]] = [all[j]!, all[i]!];
  }
  return all.slice(0, Math.min(count, total)).sort((a, b) => a - b);
}

describe('kill points in Chromium (terminate() and tab closed), reopen consistent, flushed writes kept', () => {
  for (const name of Object.keys(crashScenarios) as ScenarioName[]) {
    it(name, { timeout: sweep.full ? 7_200_000 : 120_000 }, async () => {
      const sc = crashScenarios[name];
      // A run without a kill counts the operation's storage writes.
      const dry = `${root}/${name}-count`;
      const prepared = await sc.prepare(client, dry);
      const full = await dryRun(name, dry);
      expect(full.finished).toBe('done');
      // The uncut result is checked in the full run (CI keeps to the kill points; other tests check the operations).
      if (sweep.full) expect(await verify(name, dry, prepared, full)).toEqual([]);
      const points = killPoints(name, full.writes, POINTS(name));
      const tabPoints = TAB_POINTS(name, points.length);
      expect(points.length).toBeGreaterThan(0);
      const failures: string[] = [];
      let reopenFailures = 0;
      windows = 0;
      const every = Math.max(1, Math.floor(points.length / Math.max(1, tabPoints)));
      for (const [i, n] of points.entries()) {
        // Every `every`-th point closes the tab that runs the operation instead.
        const viaTab = tabPoints > 0 && i % every === every - 1 && i < every * tabPoints;
        const dir = `${root}/${name}-${n}`;
        if (!viaTab) spare ??= spawnCrashWorker();
        const pre = await sc.prepare(client, dir);
        let s: KillState;
        if (viaTab) {
          const id = await commands.tabOpen(tabUrl);
          const started = await commands.tabCall<{ error?: unknown }>(id, 'start', [name, dir, n]);
          expect(started.error).toBeUndefined();
          s = await commands.tabKill<KillState>(id);
        } else s = await runKilled(name, dir, n);
        expect(s.killedAt, `${name}: kill point ${n} of ${full.writes} (${viaTab ? 'tab' : 'terminate'})`).toBe(n);
        const bad = await verify(name, dir, pre, s);
        if (bad.some((b) => b.includes('reopen failed'))) reopenFailures++;
        failures.push(...bad.map((b) => `${b} (${viaTab ? 'tab closed' : 'terminate()'})`));
      }
      console.log(
        'BENCH ' +
          JSON.stringify({ name: `crash kill points: ${name} (OPFS qcow2, Chromium)`, value: points.length, unit: 'kill points', baseline: null, ratio: null, aim: sweep.full ? 100 : null, writes: full.writes, reopenFailures, failures: failures.length, copiedWindow: windows }),
      );
      expect(failures).toEqual([]);
    });
  }
});
