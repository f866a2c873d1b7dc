#!/usr/bin/env node
// CLI start-up: `blocktab --version`, `blocktab info` of a small qcow2 and
// `blocktab convert` of a small qcow2 to raw (start-up is all it costs), run
// as a user runs them (package.json's bin as a program: the shell launcher,
// then the bundle in dist/bin/), beside qemu-img's same commands and the
// floor under every blocktab figure, a bare `node -e 0`. Wall time and CPU
// time (user + system, from GNU time when present: the machine may be shared).
// Contenders interleave. Needs `npm run build` first (bench/run.mjs's npm
// script does it).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { bench, cliEntry, interleaved, scratchDir } from './lib.mjs';

const dir = scratchDir();
const gnuTime = fs.existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;

function timed(cmd, args, env = process.env) {
  const [c, ...rest] = gnuTime ? [gnuTime, '-f', 'CPU %U %S', cmd, ...args] : [cmd, ...args];
  const t0 = performance.now();
  const r = spawnSync(c, rest, { cwd: dir, encoding: 'utf8', env });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  const m = /CPU ([\d.]+) ([\d.]+)/.exec(r.stderr);
  return { ms, cpu: m ? (Number(m[1]) + Number(m[2])) * 1000 : NaN, stdout: r.stdout };
}

try {
  spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', 'small.qcow2', '64M'], { cwd: dir });
  spawnSync('qemu-io', ['-c', 'write -P 0x5a 0 1M', 'small.qcow2'], { cwd: dir });
  const info = ['info', 'small.qcow2'];
  const convert = ['convert', '-O', 'raw', 'small.qcow2', 'out.raw'];
  const a = timed(cliEntry, info).stdout;
  const b = timed('qemu-img', info).stdout;
  if (a !== b) throw new Error(`info outputs differ:\n${a}\n---\n${b}`);
  timed(cliEntry, convert); // writes the compile cache of convert's chunks
  // The first runs above wrote the compile cache (src/cli/compile-cache.ts); `cold` is info without it.
  const noCache = { ...process.env, NODE_DISABLE_COMPILE_CACHE: '1' };
  const [node, v, qv, i, qi, c, qc, cold] = interleaved(7, [
    { run: () => timed(process.execPath, ['-e', '0']) },
    { run: () => timed(cliEntry, ['--version']) },
    { run: () => timed('qemu-img', ['--version']) },
    { run: () => timed(cliEntry, info) },
    { run: () => timed('qemu-img', info) },
    { run: () => timed(cliEntry, convert) },
    { run: () => timed('qemu-img', convert) },
    { run: () => timed(cliEntry, info, noCache) },
  ]);
  const line = (name, r, q, aim = '<=150 ms') => ({ name, value: Math.round(r.ms), unit: 'ms', baseline: Math.round(q.ms), ratio: +(r.ms / q.ms).toFixed(2), aim });
  const cpu = (name, r, q) => ({ name, value: Math.round(r.cpu), unit: 'ms', baseline: Math.round(q.cpu), ratio: +(r.cpu / q.cpu).toFixed(2), aim: null });
  bench(line('blocktab --version (wall, baseline qemu-img --version)', v, qv));
  bench(line('blocktab info, 64 MiB qcow2 (wall, baseline qemu-img info)', i, qi));
  bench(line('blocktab convert -O raw, 64 MiB qcow2 with 1 MiB of data: start-up (wall, baseline qemu-img convert)', c, qc, null));
  bench(line('blocktab info without the compile cache (wall, baseline qemu-img info)', cold, qi));
  if (gnuTime) {
    bench(cpu('blocktab --version (CPU user+sys, baseline qemu-img --version)', v, qv));
    bench(cpu('blocktab info, 64 MiB qcow2 (CPU user+sys, baseline qemu-img info)', i, qi));
    bench(cpu('blocktab convert -O raw, 1 MiB of data: start-up (CPU user+sys, baseline qemu-img convert)', c, qc));
  }
  bench({ name: 'node -e 0 (the floor under every blocktab figure)', value: Math.round(node.ms), unit: 'ms', baseline: null, ratio: null, aim: null });
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
