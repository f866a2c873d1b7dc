#!/usr/bin/env node
// blocktab's structure-aware fuzzer (npm run fuzz [-- --cases N --seed S --jobs J]).
// Seeds: real images of every format (scripts/fuzz/seeds.mjs). Each case
// mutates one seed (scripts/fuzz/mutate.mjs) and runs open / read all / map /
// check / write on it (scripts/fuzz/case.mjs) in a worker process. A case must
// end within --timeout ms (2000) with its resident memory grown by less than
// --memory MiB (256), with data or BlockErrors; anything else is a finding,
// saved to --out (fuzz-findings/) as the image plus a .json that says how to
// replay it. A timed-out case is run once more alone before it counts, so a
// busy machine does not make findings. Prints cases run, findings and a BENCH
// line with cases per second.
import { fork } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeSeeds } from './seeds.mjs';
import { saveSeeds } from './seed-files.mjs';
import { mutateCase, seedIndexFor } from './mutate.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const MiB = 1024 * 1024;

const CLK_TCK = 100;
/** User + system CPU time of process `pid` in ms, or null where /proc is not there. */
function cpuMs(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK;
  } catch {
    return null;
  }
}

class Worker {
  constructor(opts) {
    this.opts = opts;
    this.proc = fork(path.join(here, 'child.mjs'), [opts.distDir, opts.seedDir, String(opts.seed)], {
      execArgv: ['--max-old-space-size=' + opts.memoryMiB],
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    });
    this.stderr = '';
    this.proc.stderr.on('data', (d) => (this.stderr = (this.stderr + d).slice(-4000)));
    this.ready = new Promise((resolve, reject) => {
      this.proc.once('message', (m) => (m.ready ? resolve() : reject(new Error('bad hello'))));
      this.proc.once('exit', (code) => reject(new Error(`fuzz worker exited (${code}) before it was ready: ${this.stderr}`)));
    });
  }
  /** Runs one case; resolves to the child's answer, or a hang/crash verdict. */
  run(caseNo, timeoutMs) {
    return new Promise((resolve) => {
      const done = (v) => {
        clearInterval(timer);
        this.proc.off('message', onMsg);
        this.proc.off('exit', onExit);
        resolve(v);
      };
      const onMsg = (m) => m.caseNo === caseNo && done(m);
      const onExit = (code, signal) =>
        done({ caseNo, verdict: 'finding', kind: 'crash', message: `worker died (${code ?? signal}): ${this.stderr.trim().split('\n').slice(-6).join('\n')}`, dead: true });
      // The watchdog counts the worker's CPU time (from /proc where there is one), so a machine busy
      // with other work does not turn slow cases into findings; a case also ends at 5x the limit in wall time.
      const cpu0 = cpuMs(this.proc.pid);
      const t0 = performance.now();
      const timer = setInterval(() => {
        const wall = performance.now() - t0;
        const cpu = cpu0 === null ? wall : cpuMs(this.proc.pid) - cpu0;
        if (cpu <= timeoutMs && wall <= 5 * timeoutMs) return;
        this.proc.off('exit', onExit);
        this.proc.kill('SIGKILL');
        done({ caseNo, verdict: 'finding', kind: 'hang', message: `no answer within ${timeoutMs} ms (${Math.round(cpu)} ms of CPU, ${Math.round(wall)} ms of wall time)`, dead: true });
      }, 50);
      this.proc.on('message', onMsg);
      this.proc.on('exit', onExit);
      this.proc.send({ caseNo });
    });
  }
  stop() {
    this.proc.kill('SIGKILL');
  }
}

/**
 * Runs `cases` cases from `seed` with `jobs` workers over the built library
 * in `distDir`. Returns { cases, findings: [...], seconds, perFormat }.
 */
export async function fuzz({ cases = 2000, seed = 1, jobs = Math.min(2, os.availableParallelism()), timeoutMs = 2000, memoryMiB = 256, distDir = path.join(root, 'dist'), out = path.join(root, 'fuzz-findings'), first = 0, log = () => {} } = {}) {
  const { seeds, dir } = makeSeeds();
  const seedDir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocktab-fuzz-'));
  saveSeeds(seedDir, seeds);
  fs.rmSync(dir, { recursive: true, force: true });
  const opts = { distDir, seedDir, seed, memoryMiB };
  const findings = [];
  const perFormat = {};
  let next = first;
  let ran = 0;
  let opened = 0;
  const t0 = performance.now();
  const save = (r) => {
    const s = seeds[seedIndexFor(seed, r.caseNo, seeds.length)];
    const { image, mutations } = mutateCase(seed, r.caseNo, s);
    fs.mkdirSync(out, { recursive: true });
    const base = path.join(out, `${seed}-${r.caseNo}-${s.name}`);
    fs.writeFileSync(base, image);
    const info = { runSeed: seed, caseNo: r.caseNo, seed: s.name, format: s.format, kind: r.kind, message: r.message, mutations, log: r.log };
    fs.writeFileSync(base + '.json', JSON.stringify(info, null, 2));
    findings.push({ ...info, file: base });
    log(`FINDING case ${r.caseNo} (${s.name}): ${r.kind}: ${r.message.split('\n')[0]}\n  mutations: ${mutations.join('; ')}\n  saved: ${base}`);
  };
  const lane = async () => {
    let w = new Worker(opts);
    await w.ready;
    while (next < first + cases) {
      const caseNo = next++;
      let r = await w.run(caseNo, timeoutMs);
      if (r.dead) {
        w = new Worker(opts);
        await w.ready;
        if (r.kind === 'hang') {
          // once more, alone in a fresh worker: a finding only if it hangs again
          r = await w.run(caseNo, timeoutMs);
          if (r.dead) {
            w = new Worker(opts);
            await w.ready;
          }
        }
      }
      if (r.verdict === 'ok' && r.rssGrowth > memoryMiB * MiB) Object.assign(r, { verdict: 'finding', kind: 'memory', message: `resident memory grew by ${Math.round(r.rssGrowth / MiB)} MiB` });
      ran++;
      if (r.log && !r.log.some((l) => l.startsWith('open:'))) opened++;
      const fmt = seeds[seedIndexFor(seed, caseNo, seeds.length)].format;
      perFormat[fmt] = (perFormat[fmt] ?? 0) + 1;
      if (r.verdict !== 'ok') save(r);
      if (ran % 1000 === 0) log(`${ran} cases, ${findings.length} findings, ${(ran / ((performance.now() - t0) / 1000)).toFixed(1)} cases/s`);
    }
    w.stop();
  };
  try {
    await Promise.all(Array.from({ length: jobs }, lane));
  } finally {
    fs.rmSync(seedDir, { recursive: true, force: true });
  }
  return { cases: ran, opened, findings, seconds: (performance.now() - t0) / 1000, perFormat, seeds: seeds.length };
}

function parseArgs(argv) {
  const o = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => argv[++i];
    if (a === '--cases') o.cases = Number(val());
    else if (a === '--seed') o.seed = Number(val());
    else if (a === '--jobs') o.jobs = Number(val());
    else if (a === '--timeout') o.timeoutMs = Number(val());
    else if (a === '--memory') o.memoryMiB = Number(val());
    else if (a === '--first') o.first = Number(val());
    else if (a === '--out') o.out = path.resolve(val());
    else throw new Error(`unknown option ${a}`);
  }
  return o;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const o = parseArgs(process.argv.slice(2));
  const r = await fuzz({ ...o, log: (s) => console.log(s) });
  console.log(`fuzz: ${r.cases} cases (${r.opened} opened) over ${r.seeds} seeds (${Object.entries(r.perFormat).map(([k, v]) => `${k} ${v}`).join(', ')}), ${r.findings.length} findings, ${r.seconds.toFixed(1)} s`);
  const rate = r.cases / r.seconds;
  console.log('BENCH ' + JSON.stringify({ name: 'fuzz cases per second', value: Number(rate.toFixed(1)), unit: 'cases/s', baseline: null, ratio: null, aim: 'higher' }));
  console.log('BENCH ' + JSON.stringify({ name: 'fuzz findings', value: r.findings.length, unit: 'findings', baseline: 0, ratio: null, aim: 'equal' }));
  process.exitCode = r.findings.length ? 1 : 0;
}
