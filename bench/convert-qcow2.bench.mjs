#!/usr/bin/env node
// blocktab vs qemu-img: convert -O qcow2 of a 4 GiB raw image (1 GiB random
// data, 1 GiB of written zeros, a 2 GiB hole), plain and with -c. Wall and CPU
// time of each tool (lib.mjs's copyRounds: interleaved, synced, fastest and
// median), the ratio, and blocktab's peak RSS; the outputs are checked with
// `qemu-img compare` (equal to the source) and `qemu-img check` (clean).
// Needs `npm run build:ts` first (bench/run.mjs's npm script does it).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MiB, bench, copyLines, copyRoundCount, copyRounds, describeScratch, runBlocktab, runQemuTimed, scratchDir, writeMixedRaw } from './lib.mjs';

const dir = scratchDir();

function verify(out) {
  const c = spawnSync('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', 'src.raw', out], { cwd: dir, encoding: 'utf8' });
  if (c.status !== 0) throw new Error(`${out} differs from the source: ${c.stdout}${c.stderr}`);
  const k = spawnSync('qemu-img', ['check', out], { cwd: dir, encoding: 'utf8' });
  if (k.status !== 0) throw new Error(`${out} fails qemu-img check: ${k.stdout}${k.stderr}`);
}

try {
  const src = path.join(dir, 'src.raw');
  writeMixedRaw(src);
  describeScratch(dir);

  for (const c of [[], ['-c']]) {
    const label = c.length ? ' -c' : '';
    const args = (out) => ['convert', '-f', 'raw', '-O', 'qcow2', ...c, 'src.raw', out];
    const [q, b] = copyRounds(c.length ? Math.min(2, copyRoundCount()) : copyRoundCount(), [
      { output: path.join(dir, 'q.qcow2'), inputs: [src], run: () => runQemuTimed(dir, args('q.qcow2')) },
      { output: path.join(dir, 'b.qcow2'), inputs: [src], run: () => runBlocktab(dir, args('b.qcow2')) },
    ]);
    verify('b.qcow2');
    copyLines(`convert raw->qcow2${label} 4 GiB (1 GiB data, 1 GiB zeros, 2 GiB hole)`, b, q, '<=1.0x qemu-img');
    bench({ name: `convert raw->qcow2${label} 4 GiB (peak RSS)`, value: +(b.rss / MiB).toFixed(1), unit: 'MiB', baseline: null, ratio: null, aim: '<128 MiB' });
    fs.rmSync(path.join(dir, 'q.qcow2'));
    fs.rmSync(path.join(dir, 'b.qcow2'));
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
