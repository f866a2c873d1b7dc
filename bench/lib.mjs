// Helpers shared by the benchmarks: run blocktab's CLI (its bin) in a child and
// qemu-img as a process, time both, keep the best of a few runs, print
// `BENCH {json}` lines. Everything runs in a scratch directory `dir`.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const MiB = 1024 * 1024;
/** The CLI as installed: package.json's bin (the bundle `npm run build` makes in dist/bin/). */
export const cliEntry = path.join(root, JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).bin.blocktab);

/** A fresh scratch directory for one bench file. */
export function scratchDir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'blocktab-bench-'));
}

export function bench(line) {
  console.log('BENCH ' + JSON.stringify(line));
}

/** The median of a list of numbers (the upper one of the middle two for an even count). */
export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** This process's CPU time (user + system) since `c0` (a process.cpuUsage() reading), in ms. */
export function cpuMs(c0) {
  const u = process.cpuUsage(c0);
  return (u.user + u.system) / 1000;
}

/** GNU time, for a child's peak RSS (Node's spawnSync reports none); without it RSS figures are NaN. */
const gnuTime = fs.existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;

/**
 * Runs blocktab as a user does (package.json's bin run as a program: the
 * launcher, then the bundle); returns wall ms and the child's peak RSS in
 * bytes. BENCH_NODE_ARGS (node flags) runs `node <flags> <bin>` instead.
 */
export function runBlocktab(dir, args) {
  const nodeArgs = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const argv = nodeArgs.length ? [process.execPath, ...nodeArgs, cliEntry, ...args] : [cliEntry, ...args];
  const [cmd, ...rest] = gnuTime ? [gnuTime, '-f', 'MAXRSS %M', ...argv] : argv;
  const t0 = performance.now();
  const r = spawnSync(cmd, rest, { cwd: dir, encoding: 'utf8', maxBuffer: 1 << 30, stdio: ['ignore', 'ignore', 'pipe'] });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`blocktab ${args.join(' ')} failed: ${r.stderr}`);
  const kb = Number(/MAXRSS (\d+)/.exec(r.stderr)?.[1] ?? NaN);
  return { ms, rss: kb * 1024 };
}

/** Runs qemu-img; returns wall ms. */
export function runQemu(dir, args) {
  const t0 = performance.now();
  // Under GNU time as blocktab runs (runBlocktab), so both pay the same wrapper.
  const [cmd, ...rest] = gnuTime ? [gnuTime, '-f', '', 'qemu-img', ...args] : ['qemu-img', ...args];
  const r = spawnSync(cmd, rest, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', maxBuffer: 1 << 30 });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`qemu-img ${args.join(' ')} failed: ${r.stderr}`);
  return ms;
}

/** Best of `n` runs (less noise from the shared machine); fn returns ms or { ms, … }. */
export function best(n, fn) {
  let b;
  const msOf = (r) => (typeof r === 'number' ? r : r.ms);
  for (let i = 0; i < n; i++) {
    const r = fn();
    if (!b || msOf(r) < msOf(b)) b = r;
  }
  return b;
}

/** Writes `mib` MiB of random bytes to `fd` at the current position. */
export function writeRandom(fd, mib) {
  const chunk = Buffer.alloc(16 * MiB);
  for (let i = 0; i < mib / 16; i++) {
    for (let o = 0; o < chunk.length; o += 65536) chunk.set(crypto.getRandomValues(new Uint8Array(65536)), o);
    fs.writeSync(fd, chunk);
  }
}

/** The 4 GiB raw of the write-path benches: 1 GiB random data, 1 GiB of written zeros, 2 GiB hole. */
export function writeMixedRaw(file) {
  const fd = fs.openSync(file, 'w');
  writeRandom(fd, 1024);
  const zeros = Buffer.alloc(16 * MiB);
  for (let i = 0; i < 64; i++) fs.writeSync(fd, zeros);
  fs.ftruncateSync(fd, 4096 * MiB);
  fs.closeSync(fd);
}

/** The `BENCH` line comparing a blocktab run with qemu-img's. */
export function ratioLine(name, b, q, aim = '<=1.5x qemu-img') {
  return { name, value: Math.round(b.ms), unit: 'ms', baseline: Math.round(q), ratio: +(b.ms / q).toFixed(2), aim };
}

/**
 * Runs each contender `n` times, interleaved (a, b, a, b, …), and keeps each
 * one's best. Every contender first runs once untimed, then before every
 * timed run the page cache's dirty pages are written back (`sync`, not
 * timed) and only then the contender's previous output is removed, so no run
 * pays for another's writeback of a gigabyte it just wrote, and every run
 * writes into the page-cache pages its own previous output just gave back.
 * The order matters in a VM with free page reporting (virtio-balloon): pages
 * freed before a long `sync` are handed back to the host meanwhile, and the
 * next writer faults every one of them in again, several times slower. The
 * former order (remove, then sync) gave that cost to every run but the
 * first contender's first one, which then won its best-of-n by 4x.
 */
export function interleaved(n, contenders) {
  const bestOf = contenders.map(() => undefined);
  const msOf = (r) => (typeof r === 'number' ? r : r.ms);
  for (const c of contenders) c.run();
  for (let i = 0; i < n; i++) {
    contenders.forEach((c, k) => {
      spawnSync('sync');
      if (c.output) fs.rmSync(c.output, { force: true });
      const r = c.run();
      if (bestOf[k] === undefined || msOf(r) < msOf(bestOf[k])) bestOf[k] = r;
    });
  }
  return bestOf;
}
