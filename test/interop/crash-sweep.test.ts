/**
 * Crash-point sweep of the qcow2 write path: a workload (allocation, L2
 * allocation, refcount-table growth, compressed writes and copy-on-write from
 * them, zero writes, discard, L1 growth by resize) runs on a fault filter
 * that cuts the power after the Nth write, for every N. After each cut
 * `qemu-img check` must find no corruption (leaks are allowed), and every
 * write made before the last flush that fully reached the disk must read
 * back with qemu-io, unless a later operation touched the same bytes.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FileStorage, openImage, closeNode } from '../../src/node.js';
import { BlockBackend } from '../../src/block/backend.js';
import { faultyStorage, newCounters, type FaultCounters } from '../../src/filters/fault.js';
import { qemuImg, tmpDir } from '../helpers/qemu.js';
import { sweepCount, sweepSeed } from '../helpers/sample.js';

const dir = tmpDir('crash-sweep-');
const K = 1024;
const M = 1024 * 1024;

/** What a step leaves in the guest: [offset, bytes, pattern byte]. */
type Region = [number, number, number];

interface Step {
  run(blk: BlockBackend): Promise<void>;
  /** Bytes the step sets, with the pattern they must read back as. */
  writes?: Region[];
  flush?: boolean;
}

const fill = (n: number, v: number) => new Uint8Array(n).fill(v);

const steps: Step[] = [
  { run: (b) => b.write(0, 64 * K, fill(64 * K, 1)), writes: [[0, 64 * K, 1]] },
  { run: (b) => b.flush(), flush: true },
  ...[0, 1, 2, 3].map((i): Step => ({
    run: (b) => b.write(384 * K + i * 640 * K, 640 * K, fill(640 * K, 2)),
    writes: [[384 * K + i * 640 * K, 640 * K, 2]],
  })),
  { run: (b) => b.flush(), flush: true },
  { run: (b) => b.write(3 * M, 4 * K, fill(4 * K, 3), { compressed: true }), writes: [[3 * M, 4 * K, 3]] },
  { run: (b) => b.write(3 * M + 512, 100, fill(100, 4)), writes: [[3 * M + 512, 100, 4]] },
  { run: (b) => b.flush(), flush: true },
  { run: (b) => b.writeZeroes(0, 4 * K, {}), writes: [[0, 4 * K, 0]] },
  { run: (b) => b.discard(8 * K, 8 * K), writes: [[8 * K, 8 * K, 0]] },
  { run: (b) => b.truncate(64 * M) },
  { run: (b) => b.write(60 * M, 4 * K, fill(4 * K, 5)), writes: [[60 * M, 4 * K, 5]] },
  { run: (b) => b.flush(), flush: true },
  { run: (b) => b.write(10 * K, 2 * K, fill(2 * K, 6)), writes: [[10 * K, 2 * K, 6]] },
  { run: (b) => b.write(3 * M + 1024, 512, fill(512, 7)), writes: [[3 * M + 1024, 512, 7]] },
];

/** Runs the workload; returns the index of the last flush step that fully reached the disk (-1 if none). */
async function runWorkload(file: string, dropAfter: number | undefined, counters: FaultCounters): Promise<number> {
  const storage = faultyStorage(new FileStorage(), dropAfter === undefined ? {} : { dropWritesAfter: dropAfter }, counters);
  const bs = await openImage(storage, file, { format: 'qcow2' });
  const blk = new BlockBackend(bs);
  let durable = -1;
  try {
    for (const [i, st] of steps.entries()) {
      await st.run(blk);
      if (st.flush && counters.dropped === 0) durable = i;
    }
  } finally {
    await closeNode(bs);
  }
  if (counters.dropped === 0) durable = steps.length;
  return durable;
}

/** Regions that must read back: written at or before `durable`, minus bytes any later step touches. */
function mustReadBack(durable: number): Region[] {
  const out: Region[] = [];
  for (const [k, s] of steps.slice(0, durable + 1).entries()) {
    const later = steps.slice(k + 1).flatMap((x) => x.writes ?? []);
    for (const [o, n, p] of s.writes ?? []) {
      let pieces: [number, number][] = [[o, o + n]];
      for (const [lo, ln] of later) {
        pieces = pieces.flatMap(([a, b]): [number, number][] => {
          if (lo >= b || lo + ln <= a) return [[a, b]];
          const r: [number, number][] = [];
          if (a < lo) r.push([a, lo]);
          if (lo + ln < b) r.push([lo + ln, b]);
          return r;
        });
      }
      for (const [a, b] of pieces) out.push([a, b - a, p]);
    }
  }
  return out;
}

describe('qcow2 crash-point sweep', () => {
  it('every cut leaves a consistent image with the flushed data', async () => {
    const template = path.join(dir, 'template.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512,refcount_bits=64', template, '4M']);

    const full = newCounters();
    const clean = path.join(dir, 'clean.qcow2');
    fs.copyFileSync(template, clean);
    await runWorkload(clean, undefined, full);
    const total = full.writes;
    expect(total).toBeGreaterThan(20);
    // The workload really grew the refcount table and the L1 table.
    const hdr = fs.readFileSync(clean).subarray(0, 64);
    expect(hdr.readUInt32BE(56)).toBeGreaterThan(fs.readFileSync(template).readUInt32BE(56));
    expect(hdr.readUInt32BE(36)).toBeGreaterThan(fs.readFileSync(template).readUInt32BE(36));

    // Every cut point when the workload is short, else a stride plus the edges.
    // CI: a seeded subset of the cut points; BLOCKTAB_SWEEP=full: 250 strides and 10 at each edge.
    const stride = Math.max(1, Math.ceil(total / sweepCount(60, 250)));
    const edge = sweepCount(5, 10);
    const cuts = new Set<number>();
    for (let n = sweepSeed % stride; n <= total; n += stride) cuts.add(n);
    for (let n = 0; n < edge; n++) cuts.add(n), cuts.add(Math.max(0, total - n));

    const failures: string[] = [];
    for (const n of [...cuts].sort((a, b) => a - b)) {
      const file = path.join(dir, `cut-${n}.qcow2`);
      fs.copyFileSync(template, file);
      const durable = await runWorkload(file, n, newCounters());
      const chk = spawnSync('qemu-img', ['check', '--output=json', file], { encoding: 'utf8' });
      const j = chk.stdout ? JSON.parse(chk.stdout) : {};
      if ((j.corruptions ?? 0) !== 0 || (j['check-errors'] ?? 0) !== 0 || (chk.status !== 0 && chk.status !== 3)) {
        failures.push(`cut after write ${n}: qemu-img check status ${chk.status}: ${chk.stdout}${chk.stderr}`);
        continue;
      }
      const regions = mustReadBack(durable);
      if (regions.length) {
        const args = ['-r', '-f', 'qcow2', ...regions.flatMap(([o, len, p]) => ['-c', `read -P ${p} ${o} ${len}`]), file];
        const r = spawnSync('qemu-io', args, { encoding: 'utf8' });
        const out = r.stdout + r.stderr;
        if (r.status !== 0 || /Pattern verification failed|error/i.test(out)) failures.push(`cut after write ${n} (durable step ${durable}): ${out.split('\n').filter((l) => /fail|error/i.test(l)).join(' | ')}`);
      }
      fs.rmSync(file);
    }
    expect(failures).toEqual([]);
  }, 300_000);
});
