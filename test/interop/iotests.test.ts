/**
 * Regression guard for QEMU's own qemu-iotests run with blocktab as qemu-img
 * and qemu-io (scripts/iotests/run.mjs): the tests listed in
 * test/iotests/passing.json passed with blocktab when the list was made, and
 * must keep passing. A seeded sample of the list's quick-group tests keeps the run to a few
 * minutes (IOTESTS_SAMPLE / IOTESTS_SEED change it; IOTESTS_SAMPLE=all runs
 * the whole list). The first run on a machine fetches QEMU's source package
 * with apt-get (see the script's header); it needs the built CLI (npm run build).
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { repoRoot } from '../helpers/qemu.js';

const list = path.join(repoRoot, 'test', 'iotests', 'passing.json');
const sampleSize = process.env.IOTESTS_SAMPLE ?? '5';
const seed = process.env.IOTESTS_SEED ?? '1';

function runIotests(fmt: string): { status: number | null; output: string } {
  // CI replays a sample of the quick group (issue 19: "CI runs the quick group"); IOTESTS_SAMPLE=all runs the whole list.
  const sample = sampleSize === 'all' ? [] : ['-g', 'quick', '--sample', sampleSize, '--seed', seed];
  const r = spawnSync(process.execPath, [path.join(repoRoot, 'scripts', 'iotests', 'run.mjs'), `-${fmt}`, '--blocktab-only', '--tests-from', list, ...sample], {
    cwd: repoRoot,
    encoding: 'utf8',
    maxBuffer: 1 << 26,
  });
  return { status: r.status, output: `${r.stdout}\n${r.stderr}` };
}

describe("QEMU's qemu-iotests that pass with blocktab keep passing", () => {
  for (const fmt of ['qcow2', 'raw']) {
    it(`-${fmt}`, { timeout: 900_000 }, () => {
      const r = runIotests(fmt);
      if (r.status !== 0) console.log(r.output);
      expect(r.output).toMatch(new RegExp(`iotests -${fmt}: \\d+ selected`));
      expect(r.status, r.output).toBe(0);
    });
  }
});
