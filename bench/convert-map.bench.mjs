#!/usr/bin/env node
// blocktab vs qemu-img, side by side in one run:
//  - convert -O raw of a 1 GiB fully allocated qcow2 (random data),
//  - map --output=json of a 1 TiB qcow2 created with preallocation=metadata.
// Wall time of each (fastest and median of BENCH_ROUNDS interleaved rounds,
// lib.mjs's copyRounds), CPU time, the ratio, and blocktab's peak RSS.
// The copy is timed twice: into a new target (what users run; the kernel
// allocates a gigabyte of page cache for it, which on a shared VM varies
// several-fold from run to run), and with -n into the previous run's
// target, whose pages are still cached (the copy itself: the same reads and
// writes, no page allocation). The outputs must be equal and allocated as
// qemu-img's (qemu-img map of both).
// Needs `npm run build` first (bench/run.mjs's npm script does it).
import { spawnSync, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { bench, copyLines, copyRoundCount, copyRounds, describeScratch, interleaved, MiB, ratioLine, runBlocktab, runQemu, runQemuTimed, scratchDir, writeRandom } from './lib.mjs';

const dir = scratchDir();

/** The two targets hold the same bytes and map the same (data and holes, as qemu-img map reads them). */
function sameOutputs(a, b) {
  if (spawnSync('cmp', ['-s', a, b]).status !== 0) throw new Error('convert outputs differ');
  const map = (f) => execFileSync('qemu-img', ['map', '--output=json', '-f', 'raw', f], { encoding: 'utf8' });
  if (map(a) !== map(b)) throw new Error(`convert outputs are allocated differently:\n${map(a)}\n---\n${map(b)}`);
}

try {
  // 1 GiB of random data as qcow2.
  const rnd = path.join(dir, 'random.raw');
  const fd = fs.openSync(rnd, 'w');
  writeRandom(fd, 1024);
  fs.closeSync(fd);
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', rnd, 'full.qcow2'], { cwd: dir });
  fs.rmSync(rnd);

  describeScratch(dir);
  const src = path.join(dir, 'full.qcow2');
  const conv = (out, ...opts) => ['convert', ...opts, '-O', 'raw', 'full.qcow2', out];
  const [q, b] = copyRounds(copyRoundCount(), [
    { output: path.join(dir, 'q.raw'), inputs: [src], run: () => runQemuTimed(dir, conv('q.raw')) },
    { output: path.join(dir, 'b.raw'), inputs: [src], run: () => runBlocktab(dir, conv('b.raw')) },
  ]);
  sameOutputs(path.join(dir, 'q.raw'), path.join(dir, 'b.raw'));
  copyLines('convert qcow2->raw 1 GiB', b, q, '<=1.0x qemu-img');
  bench({ name: 'convert qcow2->raw 1 GiB (peak RSS)', value: +(b.rss / MiB).toFixed(1), unit: 'MiB', baseline: null, ratio: null, aim: '<128 MiB' });
  // -n: the same copy into the target the previous run left (its pages cached).
  const [qn, bn] = copyRounds(copyRoundCount(), [
    { output: path.join(dir, 'q.raw'), keep: true, inputs: [src], run: () => runQemuTimed(dir, conv('q.raw', '-n')) },
    { output: path.join(dir, 'b.raw'), keep: true, inputs: [src], run: () => runBlocktab(dir, conv('b.raw', '-n')) },
  ]);
  sameOutputs(path.join(dir, 'q.raw'), path.join(dir, 'b.raw'));
  copyLines('convert -n qcow2->raw 1 GiB into the cached previous target', bn, qn, null);
  fs.rmSync(path.join(dir, 'q.raw'));
  fs.rmSync(path.join(dir, 'b.raw'));
  fs.rmSync(path.join(dir, 'full.qcow2'));

  // 1 TiB, metadata preallocated.
  execFileSync('qemu-img', ['create', '-f', 'qcow2', '-o', 'preallocation=metadata', 'pre.qcow2', '1T'], { cwd: dir, stdio: 'ignore' });
  runQemu(dir, ['map', '--output=json', 'pre.qcow2']);
  const [qm, bm] = interleaved(3, [
    { run: () => runQemu(dir, ['map', '--output=json', 'pre.qcow2']) },
    { run: () => runBlocktab(dir, ['map', '--output=json', 'pre.qcow2']) },
  ]);
  bench(ratioLine('map --output=json 1 TiB preallocation=metadata (wall)', bm, qm, '<=0.6x qemu-img'));
  bench({ name: 'map 1 TiB preallocation=metadata (peak RSS)', value: +(bm.rss / MiB).toFixed(1), unit: 'MiB', baseline: null, ratio: null, aim: '<128 MiB' });
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
