/**
 * Shared harness for crash-point sweeps: an operation runs on a fault filter
 * that cuts the power after the Nth write (FaultPlan.dropWritesAfter), for
 * every N (or a stride plus the edges when there are too many), and a
 * verifier looks at what reached the disk with qemu-img.
 */
import { expect } from 'vitest';
import * as fs from 'node:fs';
import { FileStorage, openImage, closeNode } from '../../src/node.js';
import { faultyStorage, newCounters } from '../../src/filters/fault.js';
import type { Storage } from '../../src/block/open.js';
import type { BlockNode } from '../../src/block/node.js';
import { qemuImg, qemuImgRun } from './qemu.js';
import { sweepCount, sweepSeed } from './sample.js';

/** The guest's bytes (`qemu-img convert -O raw`), optionally of an internal snapshot. */
export function guest(file: string, snapshot?: string): Buffer {
  const out = `${file}.view.raw`;
  qemuImg(['convert', '-U', '-f', 'qcow2', ...(snapshot ? ['-l', `snapshot.name=${snapshot}`] : []), '-O', 'raw', file, out]);
  const b = fs.readFileSync(out);
  fs.rmSync(out);
  return b;
}

/**
 * `qemu-img check` finds no corruption (leaks are allowed). `allowCopied`:
 * the refcount an "ERROR OFLAG_COPIED data cluster" report may name (an
 * operation's known window, see snapshot-crash-sweep.test.ts), or none.
 */
export function checkNoCorruption(file: string, allowCopied: 1 | 2 | false = false): void {
  const r = qemuImgRun(['check', file]);
  const errors = (r.stdout + r.stderr).split('\n').filter((l) => l.startsWith('ERROR'));
  const bad = errors.filter((l) => !(allowCopied && new RegExp(`^ERROR OFLAG_COPIED (data|L2) cluster: .* refcount=${allowCopied}$`).test(l)));
  expect(bad, `${file}: ${r.stdout}${r.stderr}`).toEqual([]);
  expect(r.stdout + r.stderr).not.toMatch(/Leaked cluster.*refcount=0|references? .* beyond|Marking image as corrupt/);
  // 0: clean, 3: leaks only; anything else is corruption or a failure to check (unless it was the allowed window).
  if (errors.length === 0) expect([0, 3], `${file}: qemu-img check exit ${r.status}: ${r.stdout}${r.stderr}`).toContain(r.status);
}

/** qcow2's dirty bit (incompatible_features bit 0, header offset 72): the refcounts on disk may be stale. */
export function qcow2Dirty(file: string): boolean {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(8);
    fs.readSync(fd, b, 0, 8, 72);
    return (b[7]! & 1) === 1;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * For operations that, as QEMU's, rebuild refcounts under the dirty bit
 * (qcow2's make_completely_empty after a commit): a cut image either has no
 * corruption, or has the dirty bit set and `qemu-img check -r all` (what
 * QEMU's next writable open does) leaves it clean. Refcount errors without
 * the dirty bit are corruption.
 */
export function checkNoCorruptionOrDirty(file: string): void {
  if (!qcow2Dirty(file)) return checkNoCorruption(file, false);
  qemuImgRun(['check', '-r', 'all', file]);
  expect(qcow2Dirty(file), `${file}: the repair left the dirty bit`).toBe(false);
  checkNoCorruption(file, false);
}

export interface SweepResult {
  /** Writes the uncut operation makes. */
  total: number;
  /** Cut points tried (the uncut run not counted). */
  cuts: number;
}

/**
 * Runs `op` once uncut to count its writes, then with the power cut after
 * write N for N in [0, total) — every N when there are at most `maxCuts`,
 * else a stride plus the first and last `edge` — and the uncut run last.
 * `setup` makes the files and returns them; they are restored before each
 * run. `verify` sees the files after each run (`completed`: nothing was lost).
 */
export async function sweep(
  setup: () => string[],
  op: (storage: Storage, files: string[]) => Promise<void>,
  verify: (files: string[], completed: boolean, cut: number) => void | Promise<void>,
  { maxCuts: fullCuts = Infinity, edge: fullEdge = 10 }: { maxCuts?: number; edge?: number } = {},
): Promise<SweepResult> {
  // CI tries a seeded subset of the cut points (the stride starts at a seeded offset); a full sweep tries them all.
  const maxCuts = sweepCount(Math.min(fullCuts, 40), fullCuts);
  const edge = sweepCount(Math.min(fullEdge, 4), fullEdge);
  const files = setup();
  const saved = files.map((f) => fs.readFileSync(f));
  const restore = () => files.forEach((f, i) => fs.writeFileSync(f, saved[i]!));

  const full = newCounters();
  await op(faultyStorage(new FileStorage(), {}, full), files);
  const total = full.writes;
  const cuts = new Set<number>();
  if (total <= maxCuts) {
    for (let n = 0; n < total; n++) cuts.add(n);
  } else {
    const stride = Math.ceil(total / maxCuts);
    for (let n = sweepSeed % stride; n < total; n += stride) cuts.add(n);
    for (let n = 0; n < edge; n++) cuts.add(Math.min(n, total - 1)), cuts.add(Math.max(0, total - 1 - n));
  }
  for (const n of [...cuts].sort((a, b) => a - b)) {
    restore();
    const counters = newCounters();
    try {
      await op(faultyStorage(new FileStorage(), { dropWritesAfter: n }, counters), files);
    } catch {
      // A failure after the cut is possible: what reached the disk is what is checked.
    }
    // A run that lost nothing is not a cut (the operation's write count can only be the same or lower).
    await verify(files, counters.dropped === 0, n);
  }
  restore();
  await op(faultyStorage(new FileStorage(), {}, newCounters()), files);
  await verify(files, true, total);
  return { total, cuts: cuts.size };
}

/** Opens `file` as qcow2 on `storage` (backing chain included), runs `fn`, closes it even on failure. */
export async function withImage(storage: Storage, file: string, fn: (bs: BlockNode) => Promise<void>): Promise<void> {
  const bs = await openImage(storage, file, { format: 'qcow2' });
  try {
    await fn(bs);
  } finally {
    await closeNode(bs).catch(() => {});
  }
}
