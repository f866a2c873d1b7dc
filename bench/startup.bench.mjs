#!/usr/bin/env node
// CLI start-up: `blocktab --version` and `blocktab info` of a small qcow2,
// run as a user runs them (node on package.json's bin, the bundle in
// dist/bin/), beside `qemu-img --version` / `qemu-img info` and the floor
// under every blocktab figure, a bare `node -e 0`. Contenders interleave.
// Needs `npm run build` first (bench/run.mjs's npm script does it).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { bench, cliEntry, interleaved, scratchDir } from './lib.mjs';

const dir = scratchDir();

function timed(cmd, args, env = process.env) {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { cwd: dir, encoding: 'utf8', env });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  return { ms, stdout: r.stdout };
}

try {
  spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', 'small.qcow2', '64M'], { cwd: dir });
  const info = ['info', 'small.qcow2'];
  const a = timed(process.execPath, [cliEntry, ...info]).stdout;
  const b = timed('qemu-img', info).stdout;
  if (a !== b) throw new Error(`info outputs differ:\n${a}\n---\n${b}`);
  // The first run above wrote the compile cache (src/cli/compile-cache.ts); `cold` is info without it.
  const noCache = { ...process.env, NODE_DISABLE_COMPILE_CACHE: '1' };
  const [node, v, qv, i, qi, cold] = interleaved(7, [
    { run: () => timed(process.execPath, ['-e', '0']) },
    { run: () => timed(process.execPath, [cliEntry, '--version']) },
    { run: () => timed('qemu-img', ['--version']) },
    { run: () => timed(process.execPath, [cliEntry, ...info]) },
    { run: () => timed('qemu-img', info) },
    { run: () => timed(process.execPath, [cliEntry, ...info], noCache) },
  ]);
  const line = (name, r, q) => ({ name, value: Math.round(r.ms), unit: 'ms', baseline: Math.round(q.ms), ratio: +(r.ms / q.ms).toFixed(2), aim: '<=150 ms' });
  bench(line('blocktab --version (wall, baseline qemu-img --version)', v, qv));
  bench(line('blocktab info, 64 MiB qcow2 (wall, baseline qemu-img info)', i, qi));
  bench(line('blocktab info without the compile cache (wall, baseline qemu-img info)', cold, qi));
  bench({ name: 'node -e 0 (the floor under every blocktab figure)', value: Math.round(node.ms), unit: 'ms', baseline: null, ratio: null, aim: null });
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
