#!/usr/bin/env node
// The BlockBackend request path: 4 KiB random reads from a memory raw image
// through a backend (1) plain, (2) accounted in the statistics as a device's
// requests are, (3) in a throttle group whose limits never bite. The aims
// (issue 14): accounting ≤ 2 % and an idle throttle ≤ 3 % over the plain path.
// Each round runs the three once, in an order that rotates from round to round
// (so warm-up and machine noise hit them alike), and times each run by this
// process's CPU time (wall time on a shared machine counts other processes'
// turns). A figure is the median over the rounds of the per-round ratio.
// BENCH_BACKEND_ROUNDS (default 15) and BENCH_BACKEND_N (requests per run,
// default 50000) set the size. Needs `npm run build` (reads dist/).
import { bench, cpuMs, median } from './lib.mjs';

const { MemoryStorage } = await import('../dist/node.js');
const { Engine } = await import('../dist/engine/index.js');

const SIZE = 64 * 1024 * 1024;
const N = Number(process.env.BENCH_BACKEND_N ?? 50_000);
const ROUNDS = Number(process.env.BENCH_BACKEND_ROUNDS ?? 15);
const mem = new MemoryStorage();
mem.put('d.img', new Uint8Array(SIZE));
const engine = new Engine({ storages: { memory: mem } });
await engine.open('memory', 'd.img', { format: 'raw', device: 'plain' });
const bs = engine.device('plain').backend.root;
const acct = engine.addDevice('acct', bs);
const thr = engine.addDevice('thr', bs);
await engine.execute('block_set_io_throttle', { device: 'thr', bps: 1e15, bps_rd: 0, bps_wr: 0, iops: 1e15, iops_rd: 0, iops_wr: 0 });
const plain = engine.device('plain').backend;

const buf = new Uint8Array(4096);
let seed = 1;
const offsets = Array.from({ length: N }, () => ((seed = (seed * 1103515245 + 12345) >>> 0) % (SIZE / 4096)) * 4096);

async function run(blk, opts) {
  const c0 = process.cpuUsage();
  for (const off of offsets) await blk.read(off, 4096, buf, opts);
  return cpuMs(c0);
}

const contenders = [
  ['plain', plain, {}],
  ['acct', acct, { account: true }],
  ['thr', thr, { account: true }],
];
// Warm-up: every path compiled before the first timed round.
for (const [, blk, opts] of contenders) await run(blk, opts);
const ms = { plain: [], acct: [], thr: [] };
for (let round = 0; round < ROUNDS; round++) {
  for (let k = 0; k < contenders.length; k++) {
    const [name, blk, opts] = contenders[(round + k) % contenders.length];
    ms[name].push(await run(blk, opts));
  }
}
const line = (name, key, baseKey, aim) => {
  const ratio = median(ms[key].map((v, i) => ms[baseKey][i] / v));
  const rate = (xs) => +((N / median(xs)) * 1000).toFixed(0);
  bench({ name: `${name} (CPU time, median of ${ROUNDS} rounds)`, value: rate(ms[key]), unit: 'req/s', baseline: rate(ms[baseKey]), ratio: +ratio.toFixed(3), aim });
};
line('backend 4k random read, accounted vs plain', 'acct', 'plain', '>=0.98');
line('backend 4k random read, idle throttle group (accounted) vs accounted', 'thr', 'acct', '>=0.97');
await engine.dispose();
