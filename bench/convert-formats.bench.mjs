#!/usr/bin/env node
// blocktab vs qemu-img: convert vmdk->raw, vhdx->raw and vdi->qcow2 of a 1 GiB
// image with half of it allocated (512 MiB random data in 64 MiB runs, holes between),
// made by qemu-img from a raw source. Wall and CPU time of each tool (lib.mjs's
// copyRounds: interleaved, synced, fastest and median), the ratio, and
// blocktab's peak RSS; outputs are checked against the source with qemu-img compare
// (and qemu-img check for qcow2).
// Needs `npm run build:ts` first (bench/run.mjs's npm script does it).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MiB, bench, copyLines, copyRoundCount, copyRounds, describeScratch, runBlocktab, runQemuTimed, scratchDir } from './lib.mjs';

const dir = scratchDir();
try {
  const src = path.join(dir, 'src.raw');
  const fd = fs.openSync(src, 'w');
  for (let i = 0; i < 8; i++) {
    const pos = (i * 128 + 64) * MiB;
    const chunk = Buffer.alloc(16 * MiB);
    for (let k = 0; k < 4; k++) {
      for (let o = 0; o < chunk.length; o += 65536) chunk.set(crypto.getRandomValues(new Uint8Array(65536)), o);
      fs.writeSync(fd, chunk, 0, chunk.length, pos + k * 16 * MiB);
    }
  }
  fs.ftruncateSync(fd, 1024 * MiB);
  fs.closeSync(fd);
  describeScratch(dir);

  const cases = [
    ['vmdk', [], 'raw'],
    ['vmdk', ['-o', 'subformat=streamOptimized'], 'raw'],
    ['vhdx', [], 'raw'],
    ['vdi', [], 'qcow2'],
  ];
  for (const [fmt, opts, outFmt] of cases) {
    const label = opts.length ? `${fmt} (${opts[1]})` : fmt;
    spawnSync('qemu-img', ['convert', '-f', 'raw', '-O', fmt, ...opts, 'src.raw', `img.${fmt}`], { cwd: dir });
    const args = (out) => ['convert', '-f', fmt, '-O', outFmt, `img.${fmt}`, out];
    const q0 = `q.${outFmt}`;
    const b0 = `b.${outFmt}`;
    const inputs = [path.join(dir, `img.${fmt}`)];
    const [q, b] = copyRounds(copyRoundCount(), [
      { output: path.join(dir, q0), inputs, run: () => runQemuTimed(dir, args(q0)) },
      { output: path.join(dir, b0), inputs, run: () => runBlocktab(dir, args(b0)) },
    ]);
    const c = spawnSync('qemu-img', ['compare', '-f', 'raw', '-F', outFmt, 'src.raw', b0], { cwd: dir, encoding: 'utf8' });
    if (c.status !== 0) throw new Error(`${label}: blocktab's ${outFmt} differs from the source: ${c.stdout}${c.stderr}`);
    if (outFmt === 'qcow2') {
      const k = spawnSync('qemu-img', ['check', b0], { cwd: dir, encoding: 'utf8' });
      if (k.status !== 0) throw new Error(`${label}: blocktab's ${outFmt} fails qemu-img check: ${k.stdout}${k.stderr}`);
    }
    copyLines(`convert ${label}->${outFmt} 1 GiB half allocated`, b, q, '<=1.2x qemu-img');
    bench({ name: `convert ${label}->${outFmt} 1 GiB (peak RSS)`, value: +(b.rss / MiB).toFixed(1), unit: 'MiB', baseline: null, ratio: null, aim: '<200 MiB' });
    for (const f of [q0, b0, `img.${fmt}`]) fs.rmSync(path.join(dir, f), { force: true });
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
