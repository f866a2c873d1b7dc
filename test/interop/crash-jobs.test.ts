/**
 * Crash-point sweeps of the jobs that write a target's metadata (mirror,
 * backup): the power is cut after write N of the whole run (FaultPlan's
 * dropWritesAfter), for a small sample of N by default and every N with
 * BLOCKTAB_SWEEP=full. After each cut the target must pass qemu-img check
 * (leaked clusters allowed); uncut, it must equal the source.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Storage } from '../../src/block/open.js';
import { Engine } from '../../src/engine/index.js';
import { jobDone } from '../../src/engine/commands/jobs.js';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu.js';
import { checkNoCorruption, sweep } from '../helpers/crash.js';
import { sweepCount } from '../helpers/sample.js';

const MiB = 1024 * 1024;
const addNode = (e: Engine, name: string, file: string) =>
  e.execute('blockdev-add', { driver: 'qcow2', 'node-name': name, file: { driver: 'file', filename: file } });

/** Cut points tried: a small sample in CI, every one with BLOCKTAB_SWEEP=full. */
const MAX_CUTS = sweepCount(10, Infinity);

/** Sweeps `op`: after each cut `target` passes qemu-img check; uncut, it equals `src`. */
async function sweepTarget(setup: () => string[], op: (storage: Storage) => Promise<void>, target: string, src: string): Promise<void> {
  const res = await sweep(
    setup,
    op,
    (_files, completed) => {
      checkNoCorruption(target);
      if (completed) expect(qemuImg(['compare', target, src])).toContain('Images are identical');
    },
    { maxCuts: MAX_CUTS, edge: 3 },
  );
  expect(res.cuts).toBeGreaterThan(3);
}


describe('incremental backup, crash-point sweep', () => {
  it('a power cut at any write of the job leaves a target qemu-img check accepts; uncut, the chain equals the source', async () => {
    const d = tmpDir('incbk-crash-');
    const at = (f: string) => path.join(d, f);
    const setup = () => {
      for (const f of fs.readdirSync(d)) fs.rmSync(at(f));
      qemuImg(['create', '-f', 'qcow2', at('src.qcow2'), '4M']);
      qemuIo(at('src.qcow2'), ['write -P 1 0 4M'], 'qcow2');
      qemuImg(['convert', '-O', 'qcow2', at('src.qcow2'), at('full.qcow2')]);
      qemuImg(['create', '-f', 'qcow2', '-F', 'qcow2', '-b', 'full.qcow2', at('inc.qcow2')]);
      return [at('src.qcow2'), at('full.qcow2'), at('inc.qcow2')];
    };
    const op = async (storage: Storage) => {
      const e = new Engine({ storages: { file: storage } });
      try {
        await addNode(e, 'src', at('src.qcow2'));
        await addNode(e, 'inc', at('inc.qcow2'));
        await e.execute('block-dirty-bitmap-add', { node: 'src', name: 'bm' });
        for (const off of [0, 1 * MiB + 4096, 3 * MiB]) await e.write('src', off, new Uint8Array(8192).fill(0x5a));
        await e.execute('blockdev-backup', { 'job-id': 'b', device: 'src', target: 'inc', sync: 'incremental', bitmap: 'bm' });
        await jobDone(e, 'b');
      } finally {
        await e.dispose().catch(() => {});
      }
    };
    await sweepTarget(setup, op, at('inc.qcow2'), at('src.qcow2'));
  });
});

describe('mirror, crash-point sweep', () => {
  it('a power cut at any write of a mirror (bulk copy, writes while ready, complete) leaves a target qemu-img check accepts', async () => {
    const d = tmpDir('mirror-crash-');
    const at = (f: string) => path.join(d, f);
    const setup = () => {
      for (const f of fs.readdirSync(d)) fs.rmSync(at(f));
      qemuImg(['create', '-f', 'qcow2', at('src.qcow2'), '4M']);
      qemuIo(at('src.qcow2'), ['write -P 1 0 1M', 'write -P 2 3M 64k'], 'qcow2');
      qemuImg(['create', '-f', 'qcow2', at('mir.qcow2'), '4M']);
      return [at('src.qcow2'), at('mir.qcow2')];
    };
    const op = async (storage: Storage) => {
      const e = new Engine({ storages: { file: storage } });
      try {
        await addNode(e, 'src', at('src.qcow2'));
        await addNode(e, 'mir', at('mir.qcow2'));
        let ready!: () => void;
        const isReady = new Promise<void>((r) => (ready = r));
        e.onEvent((ev) => ev.event === 'BLOCK_JOB_READY' && ready());
        await e.execute('blockdev-mirror', { 'job-id': 'm', device: 'src', target: 'mir', sync: 'full' });
        await Promise.race([isReady, jobDone(e, 'm')]);
        await e.write('src', 2 * MiB, new Uint8Array(8192).fill(0x33));
        await e.execute('job-complete', { id: 'm' }).catch(() => {});
        await jobDone(e, 'm');
      } finally {
        await e.dispose().catch(() => {});
      }
    };
    await sweepTarget(setup, op, at('mir.qcow2'), at('src.qcow2'));
  });
});
