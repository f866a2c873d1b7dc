#!/usr/bin/env node
// The BlockBackend request path: 4 KiB random reads from a memory raw image
// through a backend (1) plain, (2) accounted in the statistics as a device's
// requests are, (3) in a throttle group whose limits never bite. The aims
// (issue 14): accounting ≤ 2 % and an idle throttle ≤ 3 % over the plain path.
// Rounds interleave the three so machine noise hits them alike; best of each.
// Needs `npm run build` (reads dist/).
import { bench } from './lib.mjs';

const { MemoryStorage } = await import('../dist/node.js');
const { Engine } = await import('../dist/engine/index.js');

const SIZE = 64 * 1024 * 1024;
const N = 100_000;
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
  const t0 = performance.now();
  for (const off of offsets) await blk.read(off, 4096, buf, opts);
  return performance.now() - t0;
}

const best = { plain: Infinity, acct: Infinity, thr: Infinity };
for (let round = 0; round < 5; round++) {
  best.plain = Math.min(best.plain, await run(plain, {}));
  best.acct = Math.min(best.acct, await run(acct, { account: true }));
  best.thr = Math.min(best.thr, await run(thr, { account: true }));
}
const line = (name, ms, base, aim) =>
  bench({ name, value: +((N / ms) * 1000).toFixed(0), unit: 'req/s', baseline: +((N / base) * 1000).toFixed(0), ratio: +(base / ms).toFixed(3), aim });
line('backend 4k random read, accounted vs plain', best.acct, best.plain, '>=0.98');
line('backend 4k random read, idle throttle group (accounted) vs accounted', best.thr, best.acct, '>=0.97');
await engine.dispose();
