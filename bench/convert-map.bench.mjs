#!/usr/bin/env node
// blocktab vs qemu-img, side by side in one run:
//  - convert -O raw of a 1 GiB fully allocated qcow2 (random data),
//  - map --output=json of a 1 TiB qcow2 created with preallocation=metadata.
// Wall time of each, the ratio, and blocktab's peak RSS (read from
// process.resourceUsage() in the child, which runs the CLI's main()).
// Needs `npm run build:ts` first (bench/run.mjs's npm script does it).
import { spawnSync, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const mainUrl = pathToFileURL(path.join(root, 'dist/cli/main.js')).href;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocktab-bench-'));
const MiB = 1024 * 1024;

function bench(name, line) {
  console.log('BENCH ' + JSON.stringify(line));
  return name;
}

/** Runs blocktab's main() in a child; returns wall ms and the child's peak RSS in bytes. */
function runBlocktab(args) {
  const code = `
    const { main } = await import(${JSON.stringify(mainUrl)});
    const out = { stdout: (s) => void process.stdout.write(s), stderr: (s) => void process.stderr.write(s) };
    const rc = await main(${JSON.stringify(args)}, out);
    process.stderr.write('MAXRSS ' + process.resourceUsage().maxRSS + '\\n');
    process.exitCode = rc;`;
  const t0 = performance.now();
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { cwd: dir, encoding: 'utf8', maxBuffer: 1 << 30, stdio: ['ignore', 'ignore', 'pipe'] });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`blocktab ${args.join(' ')} failed: ${r.stderr}`);
  const kb = Number(/MAXRSS (\d+)/.exec(r.stderr)?.[1] ?? NaN);
  return { ms, rss: kb * 1024 };
}

function runQemu(args) {
  const t0 = performance.now();
  const r = spawnSync('qemu-img', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', maxBuffer: 1 << 30 });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`qemu-img ${args.join(' ')} failed: ${r.stderr}`);
  return ms;
}

/** Best of `n` runs (less noise from the shared machine). */
function best(n, fn) {
  let b;
  for (let i = 0; i < n; i++) {
    const r = fn();
    const ms = typeof r === 'number' ? r : r.ms;
    if (!b || ms < (typeof b === 'number' ? b : b.ms)) b = r;
  }
  return b;
}

try {
  // 1 GiB of random data as qcow2.
  const rnd = path.join(dir, 'random.raw');
  const fd = fs.openSync(rnd, 'w');
  const chunk = Buffer.alloc(16 * MiB);
  for (let i = 0; i < 64; i++) {
    for (let o = 0; o < chunk.length; o += 65536) chunk.set(crypto.getRandomValues(new Uint8Array(65536)), o);
    fs.writeSync(fd, chunk);
  }
  fs.closeSync(fd);
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', rnd, 'full.qcow2'], { cwd: dir });
  fs.rmSync(rnd);

  // Warm the page cache once for both, then time each tool.
  runQemu(['convert', '-O', 'raw', 'full.qcow2', 'q.raw']);
  const q = best(2, () => runQemu(['convert', '-O', 'raw', 'full.qcow2', 'q.raw']));
  const b = best(2, () => runBlocktab(['convert', '-O', 'raw', 'full.qcow2', 'b.raw']));
  const same = spawnSync('cmp', ['-s', path.join(dir, 'q.raw'), path.join(dir, 'b.raw')]).status === 0;
  if (!same) throw new Error('convert outputs differ');
  fs.rmSync(path.join(dir, 'q.raw'));
  fs.rmSync(path.join(dir, 'b.raw'));
  bench('convert', { name: 'convert qcow2->raw 1 GiB (wall)', value: Math.round(b.ms), unit: 'ms', baseline: Math.round(q), ratio: +(b.ms / q).toFixed(2), aim: '<=1.5x qemu-img' });
  bench('convert-rss', { name: 'convert qcow2->raw 1 GiB (peak RSS)', value: +(b.rss / MiB).toFixed(1), unit: 'MiB', baseline: null, ratio: null, aim: '<150 MiB' });
  fs.rmSync(path.join(dir, 'full.qcow2'));

  // 1 TiB, metadata preallocated.
  execFileSync('qemu-img', ['create', '-f', 'qcow2', '-o', 'preallocation=metadata', 'pre.qcow2', '1T'], { cwd: dir, stdio: 'ignore' });
  runQemu(['map', '--output=json', 'pre.qcow2']);
  const qm = best(2, () => runQemu(['map', '--output=json', 'pre.qcow2']));
  const bm = best(2, () => runBlocktab(['map', '--output=json', 'pre.qcow2']));
  bench('map', { name: 'map --output=json 1 TiB preallocation=metadata (wall)', value: Math.round(bm.ms), unit: 'ms', baseline: Math.round(qm), ratio: +(bm.ms / qm).toFixed(2), aim: '<=1.5x qemu-img' });
  bench('map-rss', { name: 'map 1 TiB preallocation=metadata (peak RSS)', value: +(bm.rss / MiB).toFixed(1), unit: 'MiB', baseline: null, ratio: null, aim: '<150 MiB' });
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
