#!/usr/bin/env node
// blocktab vs qemu-img on the same files in one run: convert -O raw of a
// 1 GiB half-allocated vdi, vpc (dynamic) and qed image (512 MiB of random
// data in every other 2 MiB, the rest never written), and vdi -> qcow2.
// Wall and CPU time (lib.mjs's copyRounds: interleaved, synced, fastest and
// median), the ratio, and blocktab's peak RSS. Needs `npm run build:ts`.
import { spawnSync, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { bench, copyLines, copyRounds, describeScratch, MiB, runBlocktab, runQemuTimed, scratchDir } from './lib.mjs';

const dir = scratchDir();
const rounds = Number(process.env.BENCH_ROUNDS ?? 2);

try {
  const src = path.join(dir, 'half.raw');
  const fd = fs.openSync(src, 'w');
  const chunk = Buffer.alloc(2 * MiB);
  for (let i = 0; i < 512; i += 2) {
    for (let o = 0; o < chunk.length; o += 65536) chunk.set(crypto.getRandomValues(new Uint8Array(65536)), o);
    fs.writeSync(fd, chunk, 0, chunk.length, i * 2 * MiB);
  }
  fs.ftruncateSync(fd, 1024 * MiB);
  fs.closeSync(fd);
  describeScratch(dir);

  for (const [fmt, file, out] of [
    ['vdi', 'half.vdi', 'raw'],
    ['vpc', 'half.vhd', 'raw'],
    ['qed', 'half.qed', 'raw'],
    ['vdi', 'half.vdi', 'qcow2'],
  ]) {
    if (!fs.existsSync(path.join(dir, file))) execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', fmt, 'half.raw', file], { cwd: dir });
    const args = (o) => ['convert', '-f', fmt, '-O', out, file, o];
    const inputs = [path.join(dir, file)];
    const [q, b] = copyRounds(rounds, [
      { output: path.join(dir, `q.${out}`), inputs, run: () => runQemuTimed(dir, args(`q.${out}`)) },
      { output: path.join(dir, `b.${out}`), inputs, run: () => runBlocktab(dir, args(`b.${out}`)) },
    ]);
    const same = spawnSync('qemu-img', ['compare', '-f', out, '-F', out, path.join(dir, `q.${out}`), path.join(dir, `b.${out}`)]).status === 0;
    if (!same) throw new Error(`convert ${fmt}->${out}: outputs differ`);
    copyLines(`convert ${fmt}->${out} 1 GiB half allocated`, b, q, '<=1.2x qemu-img');
    bench({ name: `convert ${fmt}->${out} 1 GiB half allocated (peak RSS)`, value: +(b.rss / MiB).toFixed(1), unit: 'MiB', baseline: null, ratio: null, aim: '<200 MiB' });
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
