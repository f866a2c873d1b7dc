#!/usr/bin/env node
/**
 * `npm run iotests -- [-qcow2|-raw|-vmdk|…] [options] [TEST…]`: QEMU's own
 * qemu-iotests with blocktab in the place of qemu-img and qemu-io.
 *
 * Why a script and not a vitest file: the tests are QEMU's, run by QEMU's own
 * `check` driver, which compares each test's whole output with its golden
 * `.out` file. We only supply the tools. The same tests run first with
 * Debian's qemu-img/qemu-io 7.2 (cached per format and QEMU version), so the
 * figure we print is "of the tests that pass with QEMU, how many pass with
 * blocktab" — a test that fails with QEMU on this machine says nothing about us.
 *
 * Where the tests come from: Debian's `qemu` source package of the installed
 * qemu-utils version (`apt-get source`, after enabling deb-src for the same
 * suites), unpacked once into build/iotests/src. Only tests/qemu-iotests and
 * python/ are kept. Nothing of QEMU's is committed.
 *
 * Which tests: the shell tests that start no QEMU system emulator, NBD server
 * or storage daemon (the tools under test are only qemu-img and qemu-io);
 * `check` still wants those binaries to exist, so Debian's are named.
 *
 * Options:
 *   -FMT            image format (default qcow2), as check takes it
 *   -g GROUP        only tests in QEMU's group (e.g. quick)
 *   --sample N      a seeded sample of N tests (CI), --seed S (default 1)
 *   --tests-from F  only the tests listed in file F (JSON: {"FMT": ["001", …]})
 *   --blocktab-only do not run (or read the cache of) the QEMU baseline
 *   --baseline-only only run (and cache) the QEMU baseline
 *   -j N            parallel jobs for check (default 2)
 *   --json F        also write the per-test results to F
 *   --test-dir D    scratch images under D (check's TEST_DIR; default: the
 *                   run's own scratch dir under IOTESTS_DIR). For tests that
 *                   need a file system allowing huge sparse files, which ext4
 *                   refuses (qcow2 220's 513 TiB file): e.g. /dev/shm. The
 *                   QEMU baseline of such a run is cached apart, as a test
 *                   check did not run on one file system may run on another.
 * Exit status: 0 when every selected test that passes with QEMU passes with
 * blocktab (or, with --blocktab-only, every selected test passes), else 1.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync, chmodSync, lstatSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseTap } from './tap.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const work = process.env.IOTESTS_DIR ?? join(root, 'build', 'iotests');
const FORMATS = ['raw', 'bochs', 'cloop', 'parallels', 'qcow', 'qcow2', 'qed', 'vdi', 'vpc', 'vhdx', 'vmdk', 'luks', 'dmg'];

// ------------------------------------------------------------------ options
function parseArgs(argv) {
  const o = { fmt: 'qcow2', group: undefined, sample: undefined, seed: 1, jobs: 2, tests: [], blocktabOnly: false, baselineOnly: false, json: undefined, testsFrom: undefined, testDir: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a.startsWith('-') && FORMATS.includes(a.slice(1))) o.fmt = a.slice(1);
    else if (a === '-g') o.group = next();
    else if (a === '--sample') o.sample = Number(next());
    else if (a === '--seed') o.seed = Number(next());
    else if (a === '-j') o.jobs = Number(next());
    else if (a === '--blocktab-only') o.blocktabOnly = true;
    else if (a === '--baseline-only') o.baselineOnly = true;
    else if (a === '--json') o.json = next();
    else if (a === '--tests-from') o.testsFrom = next();
    else if (a === '--test-dir') o.testDir = resolve(next());
    else if (a === '-h' || a === '--help') {
      process.stdout.write(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0].replace(/^#!.*\n\/\*\*\n/, '').replace(/^ \* ?/gm, ''));
      process.exit(0);
    } else if (/^[\w-]+$/.test(a)) o.tests.push(a);
    else throw new Error(`unknown option ${a}`);
  }
  return o;
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 28, ...opts });
  if (r.error) throw r.error;
  return r;
}

function must(cmd, args, opts) {
  const r = run(cmd, args, opts);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${(r.stderr || r.stdout || '').trim().split('\n').slice(-3).join(' | ')}`);
  return r.stdout;
}

// ------------------------------------------------------------------ QEMU's source
function qemuSourceVersion() {
  const v = run('dpkg-query', ['-W', '-f=${source:Version}', 'qemu-utils']);
  if (v.status !== 0 || !v.stdout) throw new Error('qemu-utils is not installed (apt-get install qemu-utils)');
  return v.stdout.trim();
}

/** Enables deb-src for the suites the machine's debian.sources names (once). */
function enableDebSrc() {
  const listDir = '/etc/apt/sources.list.d';
  const ours = join(listDir, 'blocktab-deb-src.sources');
  if (existsSync(ours)) return;
  const src = join(listDir, 'debian.sources');
  if (!existsSync(src)) throw new Error(`cannot enable deb-src: ${src} not found; enable deb-src for qemu by hand`);
  writeFileSync(ours, readFileSync(src, 'utf8').replace(/^Types: deb$/gm, 'Types: deb-src'));
  must('apt-get', ['update', '-qq']);
}

function ensureSource() {
  const version = qemuSourceVersion();
  const dir = join(work, 'src');
  const stamp = join(dir, '.version');
  if (existsSync(stamp) && readFileSync(stamp, 'utf8') === version) return { dir, version };
  rmSync(dir, { recursive: true, force: true });
  const dl = join(work, 'download');
  rmSync(dl, { recursive: true, force: true });
  mkdirSync(dl, { recursive: true });
  process.stderr.write(`iotests: fetching QEMU's source package ${version} (Debian)\n`);
  let got = run('apt-get', ['source', '--download-only', `qemu=${version}`], { cwd: dl });
  if (got.status !== 0) {
    enableDebSrc();
    got = run('apt-get', ['source', '--download-only', `qemu=${version}`], { cwd: dl });
  }
  if (got.status !== 0) throw new Error(`apt-get source qemu=${version} failed: ${got.stderr.trim().split('\n').slice(-2).join(' | ')}`);
  const dsc = readdirSync(dl).find((f) => f.endsWith('.dsc'));
  if (!dsc) throw new Error('apt-get source left no .dsc');
  must('dpkg-source', ['--no-check', '-x', dsc, 'tree'], { cwd: dl });
  mkdirSync(join(dir, 'tests'), { recursive: true });
  must('mv', [join(dl, 'tree', 'tests', 'qemu-iotests'), join(dir, 'tests', 'qemu-iotests')]);
  must('mv', [join(dl, 'tree', 'python'), join(dir, 'python')]);
  rmSync(dl, { recursive: true, force: true });
  writeFileSync(stamp, version);
  return { dir, version };
}

// ------------------------------------------------------------------ selection
const NEEDS_MORE_THAN_TOOLS =
  /_launch_qemu|_send_qemu_cmd|QEMU_PROG|qemu-nbd|QEMU_NBD|_launch_qsd|QSD_PROG|_qemu_storage_daemon|\bnbd\b|run_qemu|\$QEMU |common\.qemu|QMP|qmp/;

/** The shell tests whose only tools are qemu-img and qemu-io, with their groups. */
function selectTests(iotests) {
  const names = [
    ...readdirSync(iotests).filter((f) => /^\d{3}$/.test(f)),
    ...readdirSync(join(iotests, 'tests')).filter((f) => !f.includes('.')).map((f) => `tests/${f}`),
  ];
  const out = [];
  for (const name of names.sort()) {
    const text = readFileSync(join(iotests, name), 'utf8');
    if (!text.startsWith('#!/usr/bin/env bash')) continue;
    if (NEEDS_MORE_THAN_TOOLS.test(text)) continue;
    const groups = (/^# group: (.*)$/m.exec(text)?.[1] ?? '').split(/\s+/).filter(Boolean);
    const fmts = /_supported_fmt\s+(.*)$/m.exec(text)?.[1]?.split(/\s+/) ?? ['generic'];
    out.push({ name: name.replace(/^tests\//, ''), path: name, groups, fmts });
  }
  return out;
}

function sample(list, n, seed) {
  let x = seed >>> 0 || 1;
  const rnd = () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
  const a = [...list];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a.slice(0, n).sort();
}

// ------------------------------------------------------------------ tools
function cliEntry() {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
  const bin = typeof pkg.bin === 'string' ? pkg.bin : pkg.bin.blocktab;
  const entry = join(root, bin);
  if (!existsSync(entry)) throw new Error(`${bin} is missing: run npm run build first`);
  chmodSync(entry, 0o755);
  return entry;
}

/** A directory holding qemu-img and qemu-io: links to blocktab's CLI, which speaks as the tool it is invoked as. */
function toolDir(which) {
  if (which === 'qemu') return { img: '/usr/bin/qemu-img', io: '/usr/bin/qemu-io' };
  const dir = join(work, 'bin-blocktab');
  mkdirSync(dir, { recursive: true });
  const entry = cliEntry();
  for (const tool of ['qemu-img', 'qemu-io']) {
    const p = join(dir, tool);
    try {
      lstatSync(p);
      rmSync(p);
    } catch {}
    symlinkSync(entry, p);
  }
  return { img: join(dir, 'qemu-img'), io: join(dir, 'qemu-io') };
}

/** Runs QEMU's check with `tools` for `tests`, in a build-like tree of its own; returns name → 'pass'|'fail'|'skip'. */
function runCheck(src, which, fmt, tests, jobs, testDir) {
  const tools = toolDir(which);
  const buildIotests = join(work, `run-${which}-${fmt}`, 'tests', 'qemu-iotests');
  rmSync(join(work, `run-${which}-${fmt}`), { recursive: true, force: true });
  mkdirSync(buildIotests, { recursive: true });
  symlinkSync(join(src, 'tests', 'qemu-iotests', 'check'), join(buildIotests, 'check'));
  const env = {
    ...process.env,
    QEMU_PROG: '/usr/bin/qemu-system-x86_64',
    QEMU_IMG_PROG: tools.img,
    QEMU_IO_PROG: tools.io,
    QEMU_NBD_PROG: '/usr/bin/qemu-nbd',
    QSD_PROG: '/usr/bin/qemu-storage-daemon',
    TEST_DIR: testDir ? join(testDir, `iotests-${which}-${fmt}`) : join(buildIotests, 'scratch'),
  };
  if (testDir) {
    rmSync(env.TEST_DIR, { recursive: true, force: true });
    mkdirSync(env.TEST_DIR, { recursive: true });
  }
  delete env.CI; // check's output does not depend on it; keep the tests' environment plain
  const r = run(join(buildIotests, 'check'), [`-${fmt}`, '-tap', '-j', String(jobs), ...tests], { cwd: buildIotests, env });
  writeFileSync(join(buildIotests, 'check.log'), `${r.stdout}\n${r.stderr}`);
  const results = parseTap(r.stdout);
  if (results.size === 0) throw new Error(`check printed no results:\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`);
  return { results, dir: buildIotests, log: r.stdout };
}

// ------------------------------------------------------------------ main
function main() {
  const o = parseArgs(process.argv.slice(2));
  const { dir: src, version } = ensureSource();
  const iotests = join(src, 'tests', 'qemu-iotests');
  let tests = selectTests(iotests).filter((t) => t.fmts.includes(o.fmt) || t.fmts.includes('generic'));
  if (o.group) tests = tests.filter((t) => t.groups.includes(o.group));
  if (o.testsFrom) {
    const listed = new Set(JSON.parse(readFileSync(o.testsFrom, 'utf8'))[o.fmt] ?? []);
    tests = tests.filter((t) => listed.has(t.name));
  }
  if (o.tests.length) tests = tests.filter((t) => o.tests.includes(t.name));
  let names = tests.map((t) => t.name);
  if (o.sample !== undefined) names = sample(names, o.sample, o.seed);
  if (names.length === 0) throw new Error('no test selected');

  let qemu;
  if (!o.blocktabOnly) {
    const where = o.testDir ? `@${o.testDir.replace(/[^\w.-]+/g, '_')}` : '';
    const cacheFile = join(work, `baseline-${o.fmt}-${version}${where}.json`);
    const cache = existsSync(cacheFile) ? JSON.parse(readFileSync(cacheFile, 'utf8')) : {};
    const missing = names.filter((n) => !(n in cache));
    if (missing.length) {
      process.stderr.write(`iotests: running ${missing.length} tests with QEMU ${version} (cached afterwards)\n`);
      const { results } = runCheck(src, 'qemu', o.fmt, missing, o.jobs, o.testDir);
      for (const n of missing) cache[n] = results.get(n) ?? 'fail';
      writeFileSync(cacheFile, JSON.stringify(cache, null, 1));
    }
    qemu = new Map(names.map((n) => [n, cache[n]]));
  }
  if (o.baselineOnly) {
    const qPass = names.filter((n) => qemu?.get(n) === 'pass');
    process.stdout.write(`iotests -${o.fmt}: ${qPass.length} of ${names.length} pass with QEMU ${version}\n`);
    return 0;
  }
  const considered = qemu ? names.filter((n) => qemu.get(n) === 'pass') : names;
  process.stderr.write(`iotests: running ${considered.length} tests with blocktab\n`);
  const { results: ours, dir, log } = considered.length ? runCheck(src, 'blocktab', o.fmt, considered, o.jobs, o.testDir) : { results: new Map(), dir: '', log: '' };
  const passed = considered.filter((n) => ours.get(n) === 'pass');
  // "not run" is check's own verdict (a test's requirement this machine lacks): neither a pass nor a failure.
  const notRun = considered.filter((n) => ours.get(n) === 'skip');
  const failed = considered.filter((n) => ours.get(n) !== 'pass' && ours.get(n) !== 'skip');

  const lines = [
    `iotests -${o.fmt}: ${names.length} selected (shell tests using only qemu-img/qemu-io${o.group ? `, group ${o.group}` : ''}${o.sample !== undefined ? `, sample of ${o.sample} seed ${o.seed}` : ''})`,
  ];
  if (qemu) {
    const qPass = names.filter((n) => qemu.get(n) === 'pass').length;
    const qSkip = names.filter((n) => qemu.get(n) === 'skip').length;
    lines.push(`  with QEMU ${version}: ${qPass} pass, ${qSkip} not run, ${names.length - qPass - qSkip} fail`);
    const qFail = names.filter((n) => qemu.get(n) === 'fail');
    if (qFail.length) lines.push(`  fail with QEMU too: ${qFail.join(' ')}`);
  }
  lines.push(`  with blocktab: ${passed.length} of ${considered.length} pass`);
  if (notRun.length) lines.push(`  not run here (check's verdict): ${notRun.join(' ')}`);
  const scratch = o.testDir ? join(o.testDir, `iotests-blocktab-${o.fmt}`) : `${dir}/scratch`;
  if (failed.length) lines.push(`  fail with blocktab: ${failed.join(' ')}`, `  (diffs: ${scratch}/TEST/TEST.out.bad; check's output: ${dir}/check.log)`);
  // check's own words on each failure (TAP lines and their comments).
  if (failed.length) lines.push(...log.split('\n').filter((l) => failed.some((n) => l.includes(` ${n}`)) || l.startsWith('#')).map((l) => `  | ${l}`));
  process.stdout.write(lines.join('\n') + '\n');
  const bench = { name: `iotests-${o.fmt}`, value: passed.length, unit: 'tests', baseline: considered.length, ratio: considered.length ? +(passed.length / considered.length).toFixed(3) : 1, aim: 1 };
  process.stdout.write(`BENCH ${JSON.stringify(bench)}\n`);
  if (o.json) writeFileSync(o.json, JSON.stringify({ fmt: o.fmt, qemu: qemu ? Object.fromEntries(qemu) : undefined, blocktab: Object.fromEntries(considered.map((n) => [n, ours.get(n) ?? 'fail'])) }, null, 1));
  return failed.length === 0 ? 0 : 1;
}

try {
  process.exitCode = main();
} catch (e) {
  process.stderr.write(`iotests: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 2;
}
