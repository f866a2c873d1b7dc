#!/usr/bin/env node
// The full interop sweep: every case of every matrix and every crash cut point
// (BLOCKTAB_SWEEP=full), where `npm test` runs a seeded sample. Not a *.bench.mjs
// file, so `npm run bench` does not start it: run `npm run sweep` (after
// `npm run build`); extra arguments go to vitest (a file filter, say).
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const t0 = performance.now();
const r = spawnSync('npx', ['vitest', 'run', '--project', 'interop', ...process.argv.slice(2)], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, BLOCKTAB_SWEEP: 'full', IOTESTS_SAMPLE: process.env.IOTESTS_SAMPLE ?? 'all' },
});
const s = (performance.now() - t0) / 1000;
console.log('BENCH ' + JSON.stringify({ name: 'full interop sweep (BLOCKTAB_SWEEP=full)', value: Math.round(s), unit: 's', baseline: null, ratio: null, aim: null, exit: r.status }));
process.exit(r.status ?? 1);
