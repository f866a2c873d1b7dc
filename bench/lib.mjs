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
 * Runs `argv` in `dir` under GNU time when present: wall ms, the child's CPU
 * time (user and system, ms) and peak RSS (bytes); without GNU time the CPU
 * and RSS figures are NaN. Throws with the child's stderr when it fails.
 */
export function runTimed(dir, argv, what = argv.join(' ')) {
  const [cmd, ...rest] = gnuTime ? [gnuTime, '-f', 'TIMED %U %S %M', ...argv] : argv;
  const t0 = performance.now();
  const r = spawnSync(cmd, rest, { cwd: dir, encoding: 'utf8', maxBuffer: 1 << 30, stdio: ['ignore', 'ignore', 'pipe'] });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${what} failed: ${r.stderr}`);
  const m = /TIMED ([\d.]+) ([\d.]+) (\d+)/.exec(r.stderr ?? '');
  const user = m ? Number(m[1]) * 1000 : NaN;
  const sys = m ? Number(m[2]) * 1000 : NaN;
  return { ms, user, sys, cpu: user + sys, rss: m ? Number(m[3]) * 1024 : NaN };
}

/**
 * Runs blocktab as a user does (package.json's bin run as a program: the
 * launcher, then the bundle); returns wall ms, CPU ms and the child's peak
 * RSS in bytes (runTimed). BENCH_NODE_ARGS (node flags) runs
 * `node <flags> <bin>` instead.
 */
export function runBlocktab(dir, args) {
  const nodeArgs = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const argv = nodeArgs.length ? [process.execPath, ...nodeArgs, cliEntry, ...args] : [cliEntry, ...args];
  return runTimed(dir, argv, `blocktab ${args.join(' ')}`);
}

/** Runs qemu-img (under the same GNU time wrapper as blocktab); returns wall ms. */
export function runQemu(dir, args) {
  return runQemuTimed(dir, args).ms;
}

/** Runs qemu-img as runTimed: wall ms, CPU ms, peak RSS. */
export function runQemuTimed(dir, args) {
  return runTimed(dir, ['qemu-img', ...args], `qemu-img ${args.join(' ')}`);
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

/** Rounds of the copy benches (BENCH_ROUNDS, default 5). */
export const copyRoundCount = () => Math.max(1, Number(process.env.BENCH_ROUNDS ?? 5));

let dropWarned = false;
/**
 * Before a timed copy: the page cache's dirty pages are written back (`sync`,
 * system-wide: the previous run's gigabyte and whatever else the machine
 * wrote), so the next run does not pay for them. With BENCH_DROP_CACHES=1
 * (needs root) the clean page cache is dropped too and `inputs` are read back
 * in, so every run starts from the same cache: only the inputs cached, no
 * other pages to reclaim first.
 */
function settle(inputs) {
  spawnSync('sync');
  if (process.env.BENCH_DROP_CACHES !== '1') return;
  try {
    fs.writeFileSync('/proc/sys/vm/drop_caches', '1');
  } catch (e) {
    if (!dropWarned) console.log(`# BENCH_DROP_CACHES: cannot drop caches (${e.code ?? e.message}); only syncing`);
    dropWarned = true;
    return;
  }
  const buf = Buffer.alloc(16 * MiB);
  for (const f of inputs) {
    const fd = fs.openSync(f, 'r');
    while (fs.readSync(fd, buf, 0, buf.length, null) > 0);
    fs.closeSync(fd);
  }
}

/**
 * The copy benches' method: each contender ({ run, output?, keep?, inputs? })
 * runs once untimed (its caches and its output file exist), then `n` timed
 * rounds interleave the contenders, the first contender of a round rotating.
 * Before every timed run the page cache is settled (`settle`: sync, not
 * timed) and only then the contender's previous output is removed (unless
 * `keep`, for a copy into an existing target): no run pays for another's
 * writeback, and every run writes into page-cache pages its own previous
 * output just gave back. The order matters in a VM with free page reporting
 * (virtio-balloon): pages freed before a long `sync` are handed back to the
 * host meanwhile, and the next writer faults every one of them in again,
 * several times slower.
 *
 * Returns, per contender: `ms` the fastest wall time (noise on a shared
 * machine only adds time), `median` the median wall, `cpu`/`user`/`sys` the
 * median CPU times of the child (GNU time; NaN without it), `rss` the
 * largest peak RSS, and `samples`.
 */
export function copyRounds(n, contenders) {
  const samples = contenders.map(() => []);
  for (const c of contenders) c.run();
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < contenders.length; j++) {
      const k = (i + j) % contenders.length;
      const c = contenders[k];
      settle(c.inputs ?? []);
      if (c.output && !c.keep) fs.rmSync(c.output, { force: true });
      const r = c.run();
      samples[k].push(typeof r === 'number' ? { ms: r, user: NaN, sys: NaN, cpu: NaN, rss: NaN } : r);
    }
  }
  return samples.map((s) => ({
    ms: Math.min(...s.map((r) => r.ms)),
    median: median(s.map((r) => r.ms)),
    cpu: median(s.map((r) => r.cpu)),
    user: median(s.map((r) => r.user)),
    sys: median(s.map((r) => r.sys)),
    rss: Math.max(...s.map((r) => r.rss)),
    samples: s,
  }));
}

/**
 * The BENCH lines of a copyRounds pair: `NAME (wall)` (fastest runs, as
 * before; the medians beside them) and `NAME (CPU user+sys)` (medians, and
 * user and system apart: the system part is the kernel's page-cache copy,
 * the same work for both tools).
 */
export function copyLines(name, b, q, aim) {
  const r = (x) => Math.round(x);
  const ratio = (x, y) => +(x / y).toFixed(2);
  bench({ ...ratioLine(`${name} (wall)`, b, q.ms, aim), median: r(b.median), baselineMedian: r(q.median), ratioMedian: ratio(b.median, q.median), rounds: b.samples.length });
  if (Number.isNaN(b.cpu)) return;
  bench({ name: `${name} (CPU user+sys, median)`, value: r(b.cpu), unit: 'ms', baseline: r(q.cpu), ratio: ratio(b.cpu, q.cpu), aim: null, user: r(b.user), sys: r(b.sys), baselineUser: r(q.user), baselineSys: r(q.sys) });
}

/** Filesystem names of statfs's f_type, for the scratch directory's `#` line. */
const FS_TYPES = { 0xef53: 'ext2/3/4', 0x01021994: 'tmpfs', 0x9123683e: 'btrfs', 0x58465342: 'xfs', 0x794c7630: 'overlayfs', 0x65735546: 'fuse' };

/**
 * Prints which filesystem the bench's files live on (sources and targets of
 * the copies are all in `dir`; `files` that are elsewhere, e.g. a symlink
 * into another mount, are named). A tmpfs measures no writeback at all, a
 * different filesystem for source and target measures two of them.
 */
export function describeScratch(dir, files = []) {
  let kind = 'unknown';
  try {
    const t = fs.statfsSync(dir).type;
    kind = `${FS_TYPES[t] ?? 'type'} 0x${t.toString(16)}`;
  } catch {
    /* statfs needs Node 18.15 */
  }
  const dev = fs.statSync(dir).dev;
  const elsewhere = files.filter((f) => fs.existsSync(f) && fs.statSync(f).dev !== dev);
  console.log(`# scratch ${dir} on ${kind}; ${elsewhere.length ? `on another filesystem: ${elsewhere.join(', ')}` : 'sources and targets on the same filesystem'}${process.env.BENCH_DROP_CACHES === '1' ? '; page cache dropped before every run' : ''}`);
}
