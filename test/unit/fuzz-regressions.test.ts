/**
 * Findings of the fuzzer (scripts/fuzz/), replayed: each image under
 * test/fixtures/fuzz/findings/ is a mutated seed that once crashed, hung,
 * grew without bound or lost writes. The case runs again exactly as the fuzzer
 * ran it (same seed image set, same case operations) on the library from src/
 * and must end with data or BlockErrors, the log line that shows the fix, and
 * no growth of the image.
 */
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import * as node from '../../src/node.js';
import { checkNode } from '../../src/img/check.js';
// @ts-expect-error plain .mjs modules of the fuzzer
import { runCase } from '../../scripts/fuzz/case.mjs';
// @ts-expect-error plain .mjs modules of the fuzzer
import { caseRng } from '../../scripts/fuzz/mutate.mjs';
// @ts-expect-error plain .mjs modules of the fuzzer
import { LUKS_SECRET, makeSeeds } from '../../scripts/fuzz/seeds.mjs';

interface Finding {
  name: string;
  broke: string;
  runSeed: number;
  caseNo: number;
  seed: string;
  expectLog: string;
}
interface Seed {
  name: string;
}

const dir = path.resolve(__dirname, '../fixtures/fuzz/findings');
const findings: Finding[] = fs
  .readdirSync(dir)
  .filter((f) => f.endsWith('.json'))
  .map((f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as Finding);
let seeds: Seed[] = [];

beforeAll(() => {
  const made = makeSeeds() as { seeds: Seed[]; dir: string };
  seeds = made.seeds;
  fs.rmSync(made.dir, { recursive: true, force: true });
  node.registerSecret(LUKS_SECRET.id, LUKS_SECRET.data);
}, 120_000);
afterAll(() => node.removeSecret(LUKS_SECRET.id));

describe('fuzz findings replayed', () => {
  it('there are findings to replay', () => expect(findings.length).toBeGreaterThan(0));
  for (const f of findings) {
    it(`${f.name}: ${f.broke}`, async () => {
      const seed = seeds.find((s) => s.name === f.seed);
      expect(seed, `seed ${f.seed}`).toBeDefined();
      const image = new Uint8Array(gunzipSync(fs.readFileSync(path.join(dir, `${f.name}.img.gz`))));
      const r = (await runCase({ ...node, checkNode }, { seed, image, rng: caseRng((f.runSeed ^ 0x0c0ffee) >>> 0, f.caseNo) })) as { verdict: string; message?: string; log: string[] };
      expect(r.verdict, r.message).toBe('ok');
      expect(r.log.some((l) => new RegExp(f.expectLog).test(l)), r.log.join('\n')).toBe(true);
    });
  }
});
