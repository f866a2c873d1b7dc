// A fuzz worker process: loads the library and the seeds once, then runs the
// cases the parent sends ({ caseNo }) one at a time and answers each with its
// verdict and the peak growth of its resident memory. The parent's watchdog
// kills this process when a case runs past its time.
import { pathToFileURL } from 'node:url';
import * as path from 'node:path';
import { runCase } from './case.mjs';
import { mutateCase, seedIndexFor } from './mutate.mjs';
import { LUKS_SECRET } from './seeds.mjs';
import { loadSeeds } from './seed-files.mjs';

const [distDir, seedDir, runSeedArg] = process.argv.slice(2);
const runSeed = Number(runSeedArg);
const lib = {
  ...(await import(pathToFileURL(path.join(distDir, 'node.js')).href)),
  ...(await import(pathToFileURL(path.join(distDir, 'img/check.js')).href)),
};
await lib.initWasm?.();
lib.registerSecret(LUKS_SECRET.id, LUKS_SECRET.data);
const seeds = loadSeeds(seedDir);

let peak = 0;
let base = 0;
setInterval(() => {
  peak = Math.max(peak, process.memoryUsage.rss());
}, 5).unref();

process.on('message', async (msg) => {
  const seed = seeds[seedIndexFor(runSeed, msg.caseNo, seeds.length)];
  const { image, mutations, rng } = mutateCase(runSeed, msg.caseNo, seed);
  base = process.memoryUsage.rss();
  peak = base;
  const t0 = performance.now();
  const res = await runCase(lib, { seed, image, rng });
  peak = Math.max(peak, process.memoryUsage.rss());
  process.send({ caseNo: msg.caseNo, seed: seed.name, mutations, ms: performance.now() - t0, rssGrowth: peak - base, ...res });
});
process.send({ ready: true });
