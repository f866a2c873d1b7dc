#!/usr/bin/env node
// blocktab vs qemu-img, side by side in one run:
//  - convert -O raw of a 1 GiB fully allocated qcow2 (random data),
//  - map --output=json of a 1 TiB qcow2 created with preallocation=metadata.
// Wall time of each, the ratio, and blocktab's peak RSS (read from
// process.resourceUsage() in the child, which runs the CLI's main()).
// Needs `npm run build:ts` first (bench/run.mjs's npm script does it).
import { spawnSync, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { bench, interleaved, MiB, ratioLine, runBlocktab, runQemu, scratchDir, writeRandom } from './lib.mjs';

const dir = scratchDir();

try {
  // 1 GiB of random data as qcow2.
  const rnd = path.join(dir, 'random.raw');
  const fd = fs.openSync(rnd, 'w');
  writeRandom(fd, 1024);
  fs.closeSync(fd);
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', rnd, 'full.qcow2'], { cwd: dir });
  fs.rmSync(rnd);

  // Warm the page cache once, then time the two tools interleaved.
  runQemu(dir, ['convert', '-O', 'raw', 'full.qcow2', 'q.raw']);
  const [q, b] = interleaved(3, [
    { output: path.join(dir, 'q.raw'), run: () => runQemu(dir, ['convert', '-O', 'raw', 'full.qcow2', 'q.raw']) },
    { output: path.join(dir, 'b.raw'), run: () => runBlocktab(dir, ['convert', '-O', 'raw', 'full.qcow2', 'b.raw']) },
  ]);
  const same = spawnSync('cmp', ['-s', path.join(dir, 'q.raw'), path.join(dir, 'b.raw')]).status === 0;
  if (!same) throw new Error('convert outputs differ');
  fs.rmSync(path.join(dir, 'q.raw'));
  fs.rmSync(path.join(dir, 'b.raw'));
  bench(ratioLine('convert qcow2->raw 1 GiB (wall)', b, q, '<=1.0x qemu-img'));
  bench({ name: 'convert qcow2->raw 1 GiB (peak RSS)', value: +(b.rss / MiB).toFixed(1), unit: 'MiB', baseline: null, ratio: null, aim: '<128 MiB' });
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
