/**
 * The fuzzer's seeded CI sample: 2,000 cases (FUZZ_CASES to change; BLOCKTAB_SWEEP=full
 * runs 100,000, BLOCKTAB_SEED draws another sample; test/helpers/sample.ts) of
 * scripts/fuzz/ over the built library, every format's seeds, two worker
 * processes with the 2 s / 256 MiB watchdog. Any finding fails the test and
 * is listed with the file it was saved to. The full run is
 * `npm run fuzz -- --cases 100000` (README, "Fuzzing").
 */
import { expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot, tmpDir } from '../helpers/qemu.js';
import { fullSweep, sweepCount, sweepSeed } from '../helpers/sample.js';
// @ts-expect-error the fuzzer is a plain .mjs script
import { fuzz } from '../../scripts/fuzz/run.mjs';

it('a seeded sample of fuzz cases ends with data or BlockErrors only', async () => {
  const out = tmpDir('fuzz-sample-');
  const cases = Number(process.env.FUZZ_CASES ?? sweepCount(2000, 100_000));
  const r = (await fuzz({ cases, seed: sweepSeed, distDir: path.join(repoRoot, 'dist'), out })) as {
    cases: number;
    findings: { file: string; kind: string; message: string; mutations: string[] }[];
    perFormat: Record<string, number>;
  };
  expect(r.cases).toBe(cases);
  // every format family was exercised
  for (const f of ['qcow2', 'raw', 'vmdk', 'vpc', 'vhdx', 'vdi', 'qed', 'qcow', 'parallels', 'dmg', 'cloop', 'bochs', 'luks']) expect(r.perFormat[f], f).toBeGreaterThan(0);
  expect(r.findings.map((f) => `${f.kind}: ${f.message.split('\n')[0]} [${f.mutations.join('; ')}] saved as ${f.file}`)).toEqual([]);
  if (!r.findings.length) fs.rmSync(out, { recursive: true, force: true });
}, fullSweep ? 7_200_000 : 300_000);
