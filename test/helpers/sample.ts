/**
 * Seeded samples of the slow interop sweeps. CI (`npm test`) runs a fixed,
 * seeded subset of each case matrix so the whole suite stays well under its
 * time budget; `BLOCKTAB_SWEEP=full` runs every case (bench/sweep.mjs does
 * that), and `BLOCKTAB_SEED=n` draws another subset. A case a sample leaves
 * out is not run and not counted: vitest never sees it.
 */
import { rng } from './random.js';

/** True when every case of every matrix must run. */
export const fullSweep = process.env.BLOCKTAB_SWEEP === 'full';

/** The seed of the CI sample (fixed, so a CI failure repeats locally). */
export const sweepSeed = Number(process.env.BLOCKTAB_SEED ?? 20261206) >>> 0;

function hash(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

/**
 * `fraction` of `cases` (at least `min`), drawn with the sweep seed salted by
 * `matrix` (so two matrices do not keep the same positions), in their order.
 */
export function sampleCases<T>(matrix: string, cases: readonly T[], fraction: number, min = 2): T[] {
  if (fullSweep || cases.length <= min) return [...cases];
  const keep = Math.min(cases.length, Math.max(min, Math.ceil(cases.length * fraction)));
  const next = rng(sweepSeed ^ hash(matrix));
  const order = cases.map((_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const chosen = new Set(order.slice(0, keep));
  return cases.filter((_, i) => chosen.has(i));
}

/** `ci` in a CI run, `full` in a full sweep: for sweeps sized by a count (cut points, iterations). */
export function sweepCount(ci: number, full: number): number {
  return fullSweep ? full : ci;
}
