// Block jobs (imports dist/: run `npm run build` first), through the engine's
// QMP dispatch in this process:
// - mirror (drive-mirror sync=full to a new qcow2, to ready, then complete) and
//   backup (drive-backup sync=full) of a 1 GiB qcow2 with 50% allocated (1 MiB
//   stripes of data every other MiB), against `qemu-img convert -O qcow2` of the
//   same image in the same run, as MiB of guest data per second (aim ≥ 0.9×);
// - incremental backup after 1% of the clusters changed: the bytes the job
//   moved against the dirty bytes (aim: 1.0, only those clusters);
// - dirty-bitmap marking overhead: 4 KiB random writes to a raw image with and
//   without an enabled bitmap on the node, in CPU time (aim ≤ 1.05×).
// BENCH_JOBS_MIB shrinks the image for a quick look.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Engine } from '../dist/engine/index.js';
import { jobDone } from '../dist/engine/commands/jobs.js';
import { FileStorage, initWasm } from '../dist/node.js';
import { bench, best, MiB, runQemu, scratchDir } from './lib.mjs';

await initWasm();
const dir = scratchDir();
const at = (f) => path.join(dir, f);
const SIZE_MIB = Number(process.env.BENCH_JOBS_MIB ?? 1024);
const src = at('src.qcow2');
execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', src, `${SIZE_MIB}M`]);
const stripes = [];
for (let m = 0; m < SIZE_MIB; m += 2) stripes.push('-c', `write -P ${(m % 250) + 1} ${m}M 1M`);
execFileSync('qemu-io', ['-f', 'qcow2', ...stripes, src], { stdio: 'ignore' });
const dataMiB = SIZE_MIB / 2;

function fresh(f) {
  fs.rmSync(at(f), { force: true });
}

/** Runs one job on a fresh engine; returns wall ms (job start to concluded). */
async function timeJob(start, { complete = false } = {}) {
  const e = new Engine({ storages: { file: new FileStorage() } });
  await e.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'src', file: { driver: 'file', filename: src } });
  let ready;
  const readyP = new Promise((r) => (ready = r));
  const off = e.onEvent((ev) => ev.event === 'BLOCK_JOB_READY' && ready());
  const t0 = performance.now();
  await e.execute(...start);
  if (complete) {
    await readyP;
    await e.execute('job-complete', { id: 'j' });
  }
  await jobDone(e, 'j');
  await e.dispose();
  const ms = performance.now() - t0;
  off();
  return ms;
}

async function bestAsync(n, fn) {
  let b = Infinity;
  for (let i = 0; i < n; i++) b = Math.min(b, await fn());
  return b;
}

const convertMs = best(2, () => {
  fresh('conv.qcow2');
  return runQemu(dir, ['convert', '-O', 'qcow2', src, at('conv.qcow2')]);
});
const mirrorMs = await bestAsync(2, () => {
  fresh('mirror.qcow2');
  return timeJob(['drive-mirror', { 'job-id': 'j', device: 'src', target: at('mirror.qcow2'), sync: 'full', format: 'qcow2' }], { complete: true });
});
const backupMs = await bestAsync(2, () => {
  fresh('backup.qcow2');
  return timeJob(['drive-backup', { 'job-id': 'j', device: 'src', target: at('backup.qcow2'), sync: 'full', format: 'qcow2' }]);
});
execFileSync('qemu-img', ['compare', '-q', src, at('mirror.qcow2')]);
execFileSync('qemu-img', ['compare', '-q', src, at('backup.qcow2')]);
const rate = (ms) => dataMiB / (ms / 1000);
for (const [name, ms] of [
  ['mirror 1 GiB 50% allocated (drive-mirror full + complete)', mirrorMs],
  ['backup 1 GiB 50% allocated (drive-backup full)', backupMs],
]) {
  bench({ name, value: +rate(ms).toFixed(1), unit: 'MiB/s', baseline: +rate(convertMs).toFixed(1), ratio: +(convertMs / ms).toFixed(2), aim: 0.9 });
}

// Incremental: a full backup with a bitmap, 1% of the clusters written, an incremental into an overlay.
{
  const e = new Engine({ storages: { file: new FileStorage() } });
  await e.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'src', file: { driver: 'file', filename: src } });
  fresh('full.qcow2');
  fresh('inc.qcow2');
  await e.execute('transaction', {
    actions: [
      { type: 'block-dirty-bitmap-add', data: { node: 'src', name: 'bm' } },
      { type: 'drive-backup', data: { 'job-id': 'full', device: 'src', target: at('full.qcow2'), sync: 'full', format: 'qcow2' } },
    ],
  });
  await jobDone(e, 'full');
  const clusters = (SIZE_MIB * MiB) / 65536;
  const dirty = new Set();
  let seed = 7;
  const next = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  while (dirty.size < Math.ceil(clusters / 100)) {
    const c = Math.floor(next() * clusters);
    dirty.add(c);
    await e.write('src', c * 65536 + 4096, new Uint8Array(4096).fill(0x77));
  }
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', 'full.qcow2', at('inc.qcow2')]);
  let moved = 0;
  e.onEvent((ev) => ev.event === 'BLOCK_JOB_COMPLETED' && ev.data.device === 'inc' && (moved = ev.data.len));
  await e.execute('drive-backup', { 'job-id': 'inc', device: 'src', target: at('inc.qcow2'), sync: 'incremental', bitmap: 'bm', format: 'qcow2', mode: 'existing' });
  await jobDone(e, 'inc');
  await e.dispose();
  execFileSync('qemu-img', ['compare', '-q', src, at('inc.qcow2')]);
  const dirtyBytes = dirty.size * 65536;
  bench({ name: 'incremental backup, 1% of clusters dirty: bytes moved', value: moved, unit: 'bytes', baseline: dirtyBytes, ratio: +(moved / dirtyBytes).toFixed(3), aim: 1 });
}

// Dirty-bitmap marking overhead on 4 KiB random writes.
{
  const raw = at('rw.raw');
  fs.writeFileSync(raw, '');
  fs.truncateSync(raw, 256 * MiB);
  const N = 20000;
  const run = async (withBitmap) => {
    const e = new Engine({ storages: { file: new FileStorage() } });
    await e.execute('blockdev-add', { driver: 'raw', 'node-name': 'd', file: { driver: 'file', filename: raw } });
    if (withBitmap) await e.execute('block-dirty-bitmap-add', { node: 'd', name: 'bm', granularity: 65536 });
    const buf = new Uint8Array(4096).fill(0x33);
    let seed = 99;
    // CPU time (user + system): the machine is shared, and wall time swings more than the overhead measured.
    const c0 = process.cpuUsage();
    for (let i = 0; i < N; i++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      await e.write('d', (seed % 65536) * 4096, buf);
    }
    const c = process.cpuUsage(c0);
    const ms = (c.user + c.system) / 1000;
    await e.dispose();
    return ms;
  };
  let plain = Infinity;
  let marked = Infinity;
  for (let i = 0; i < 7; i++) {
    plain = Math.min(plain, await run(false));
    marked = Math.min(marked, await run(true));
  }
  bench({ name: 'dirty-bitmap marking, 4 KiB random writes (CPU time with / without a bitmap)', value: +marked.toFixed(1), unit: 'ms', baseline: +plain.toFixed(1), ratio: +(marked / plain).toFixed(3), aim: 1.05 });
}
fs.rmSync(dir, { recursive: true, force: true });
