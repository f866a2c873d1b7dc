#!/usr/bin/env node
// blocktab vs qemu-img: convert vmdk->raw and vhdx->raw of a 1 GiB image with
// half of it allocated (512 MiB random data in 64 MiB runs, holes between),
// made by qemu-img from a raw source. Wall time of each tool, the ratio, and
// blocktab's peak RSS; outputs are checked against the source with qemu-img compare.
// Needs `npm run build:ts` first (bench/run.mjs's npm script does it).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MiB, bench, interleaved, ratioLine, runBlocktab, runQemu, scratchDir } from './lib.mjs';

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

  for (const [fmt, opts] of [['vmdk', []], ['vmdk', ['-o', 'subformat=streamOptimized']], ['vhdx', []]]) {
    const label = opts.length ? `${fmt} (${opts[1]})` : fmt;
    spawnSync('qemu-img', ['convert', '-f', 'raw', '-O', fmt, ...opts, 'src.raw', `img.${fmt}`], { cwd: dir });
    const args = (out) => ['convert', '-f', fmt, '-O', 'raw', `img.${fmt}`, out];
    runQemu(dir, args('q.raw')); // warms the page cache for both
    const [q, b] = interleaved(3, [
      { output: path.join(dir, 'q.raw'), run: () => runQemu(dir, args('q.raw')) },
      { output: path.join(dir, 'b.raw'), run: () => runBlocktab(dir, args('b.raw')) },
    ]);
    const c = spawnSync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', 'src.raw', 'b.raw'], { cwd: dir, encoding: 'utf8' });
    if (c.status !== 0) throw new Error(`${label}: blocktab's raw differs from the source: ${c.stdout}${c.stderr}`);
    bench(ratioLine(`convert ${label}->raw 1 GiB half allocated (wall)`, b, q, '<=1.2x qemu-img'));
    bench({ name: `convert ${label}->raw 1 GiB (peak RSS)`, value: +(b.rss / MiB).toFixed(1), unit: 'MiB', baseline: null, ratio: null, aim: '<200 MiB' });
    for (const f of ['q.raw', 'b.raw', `img.${fmt}`]) fs.rmSync(path.join(dir, f), { force: true });
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
