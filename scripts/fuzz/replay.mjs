#!/usr/bin/env node
// Replays saved findings in this process: node scripts/fuzz/replay.mjs
// fuzz-findings/<case>.json... Prints each case's verdict, time and log.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runCase } from './case.mjs';
import { caseRng } from './mutate.mjs';
import { replaySetup } from './replay-setup.mjs';

const { lib, seeds } = await replaySetup();
for (const f of process.argv.slice(2)) {
  const info = JSON.parse(fs.readFileSync(f, 'utf8'));
  const seed = seeds.find((s) => s.name === info.seed);
  const image = new Uint8Array(fs.readFileSync(f.replace(/\.json$/, '')));
  // the case's generator, advanced past the mutations as the fuzzer's was
  const t0 = performance.now();
  const r = await runCase(lib, { seed, image, rng: rngAfterMutations(info) });
  console.log(`${path.basename(f)}: ${r.verdict} ${r.kind ?? ''} in ${(performance.now() - t0).toFixed(0)} ms\n  ${r.message ?? ''}\n  log: ${r.log.join('\n       ')}`);
}

function rngAfterMutations(info) {
  return caseRng((info.runSeed ^ 0x0c0ffee) >>> 0, info.caseNo);
}
