#!/usr/bin/env node
// blocktab vs qemu-img: `check` of
//  - a 4 GiB qcow2 holding 1 GiB of data (made by qemu-img convert of a raw
//    image with 1 GiB random data, 1 GiB written zeros and a 2 GiB hole),
//  - a 1 TiB qcow2 created with preallocation=metadata (16 Mi clusters to count).
// Wall time of each tool, the ratio, and blocktab's peak RSS. The two tools'
// summaries must agree, so the figures compare the same work. The floor under
// every blocktab figure (starting Node and loading the CLI, which qemu-img, a
// C binary, does not pay) is in startup.bench.mjs.
// Needs `npm run build:ts` first (bench/run.mjs's npm script does it).
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { bench, cliEntry, interleaved, MiB, ratioLine, runBlocktab, runQemu, scratchDir, writeMixedRaw } from './lib.mjs';

const dir = scratchDir();

/** Both tools must report the same thing (the last three lines of human output). */
function sameReport(image) {
  const q = spawnSync('qemu-img', ['check', image], { cwd: dir, encoding: 'utf8' });
  const b = spawnSync(process.execPath, [cliEntry, 'check', image], { cwd: dir, encoding: 'utf8' });
  if (q.stdout !== b.stdout || q.status !== b.status) throw new Error(`check reports differ for ${image}:\n${q.stdout}\n---\n${b.stdout}${b.stderr}`);
}

function measure(name, image, aim) {
  sameReport(image);
  runQemu(dir, ['check', image]); // warm the page cache for both
  const [q, b] = interleaved(3, [{ run: () => runQemu(dir, ['check', image]) }, { run: () => runBlocktab(dir, ['check', image]) }]);
  bench(ratioLine(`check ${name} (wall)`, b, q, aim));
  bench({ name: `check ${name} (peak RSS)`, value: +(b.rss / MiB).toFixed(1), unit: 'MiB', baseline: null, ratio: null, aim: '<128 MiB' });
}

try {
  const src = path.join(dir, 'src.raw');
  writeMixedRaw(src);
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', 'src.raw', 'data.qcow2'], { cwd: dir });
  fs.rmSync(src);
  measure('4 GiB qcow2 with 1 GiB data', 'data.qcow2', '<=1.5x qemu-img');
  fs.rmSync(path.join(dir, 'data.qcow2'));

  execFileSync('qemu-img', ['create', '-f', 'qcow2', '-o', 'preallocation=metadata', 'pre.qcow2', '1T'], { cwd: dir, stdio: 'ignore' });
  measure('1 TiB preallocation=metadata', 'pre.qcow2', '<=0.6x qemu-img');

} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
