#!/usr/bin/env node
// Shrinks committed fuzz findings (test/fixtures/fuzz/findings/NAME.json and
// NAME.img.gz): zeroes every block of the image it can while the replay (the
// same case as test/unit/fuzz-regressions.test.ts runs) still ends well AND
// still prints the finding's `expectLog` line, i.e. still walks the path that
// once broke. Blocks of 4 KiB, then 512 and 64 bytes; the file length is
// kept (formats read it). Uses the last build (dist/): `npm run build` first.
//   node scripts/fuzz/minimize.mjs [test/fixtures/fuzz/findings/X.json ...]
import * as fs from 'node:fs';
import * as path from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { runCase } from './case.mjs';
import { caseRng } from './mutate.mjs';
import { replaySetup, root } from './replay-setup.mjs';

const { lib, seeds } = await replaySetup();
const findingsDir = path.join(root, 'test/fixtures/fuzz/findings');
const files = process.argv.length > 2 ? process.argv.slice(2) : fs.readdirSync(findingsDir).filter((f) => f.endsWith('.json')).map((f) => path.join(findingsDir, f));

for (const f of files) {
  const info = JSON.parse(fs.readFileSync(f, 'utf8'));
  const seed = seeds.find((s) => s.name === info.seed);
  const gz = f.replace(/\.json$/, '.img.gz');
  let image = new Uint8Array(gunzipSync(fs.readFileSync(gz)));
  const holds = async (img) => {
    const r = await runCase(lib, { seed, image: img.slice(), rng: caseRng((info.runSeed ^ 0x0c0ffee) >>> 0, info.caseNo) });
    return r.verdict === 'ok' && r.log.some((l) => new RegExp(info.expectLog).test(l));
  };
  if (!(await holds(image))) {
    console.log(`${info.name}: does not replay as committed; left alone`);
    continue;
  }
  const before = fs.statSync(gz).size;
  for (const block of [4096, 512, 64]) {
    for (let at = 0; at < image.length; at += block) {
      const part = image.subarray(at, at + block);
      if (part.every((b) => b === 0)) continue;
      const trial = image.slice();
      trial.fill(0, at, at + block);
      if (await holds(trial)) image = trial;
    }
  }
  const out = gzipSync(image, { level: 9 });
  fs.writeFileSync(gz, out);
  console.log(`${info.name}: ${before} -> ${out.length} bytes gzipped (${image.filter((b) => b !== 0).length} non-zero bytes left)`);
}
