/**
 * The operations the crash tests kill mid-way (crash.test.ts runs them in a
 * worker it terminates, tab-page.ts in a tab that gets closed): write,
 * snapshot, commit, convert and amend on OPFS qcow2 images. `prepare` makes
 * the images (not counted); `run` is the operation, recording in a
 * CrashProgress what the engine said was durable (a write whose flush
 * returned, a snapshot whose create returned) so the test can demand it
 * after the kill. Guest writes go to disjoint ranges, so each one can be
 * checked on its own whatever happened to the one in flight.
 */
import type { BlocktabClient } from '../../src/client/client.js';
import { xorshift32 } from '../helpers/random.js';

export interface GuestWrite {
  offset: number;
  bytes: number;
  pattern: number;
}

export interface CrashProgress {
  /** Writes whose flush returned (or made before the operation started). */
  flushed: GuestWrite[];
  /** Snapshots that must exist / must be gone after the kill. */
  snapshotsIn: string[];
  snapshotsOut: string[];
  /** The operation returned. */
  done: boolean;
}

export const newProgress = (): CrashProgress => ({ flushed: [], snapshotsIn: [], snapshotsOut: [], done: false });

export type ScenarioName = 'write' | 'snapshot' | 'commit' | 'convert' | 'amend';

export interface CrashScenario {
  /** The image to check after the kill (also `dst` for convert, `base` for commit). */
  image: string;
  /** Makes the images with an unarmed engine; returns the writes already in them. */
  prepare(c: BlocktabClient, dir: string): Promise<GuestWrite[]>;
  run(c: BlocktabClient, dir: string, p: CrashProgress): Promise<void>;
}

const GiB = 1024 * 1024 * 1024;
/** Virtual size: the writes spread over several L2 tables (64 KiB clusters map 512 MiB per table). */
export const CRASH_DISK = 4 * GiB;

/**
 * `count` writes in disjoint slots `first`.. of `total` equal slots over the
 * disk: random offset inside the slot, 1 byte to ~150 KB (clusters shared
 * with a neighbour's slot now and then), distinct patterns.
 */
export function slotWrites(seed: number, first: number, count: number, total = 64): GuestWrite[] {
  const next = xorshift32(seed);
  const slot = CRASH_DISK / total;
  const out: GuestWrite[] = [];
  for (let i = first; i < first + count; i++) {
    const bytes = 1 + (next() % 150_000);
    // Slots end on a cluster boundary; half the writes start near the end of theirs, so neighbours share a cluster.
    const offset = i * slot + (next() % 2 === 0 ? slot - bytes - (next() % 4096) : next() % (slot - bytes));
    out.push({ offset, bytes, pattern: 1 + (i % 250) });
  }
  return out;
}

/** Writes `ws`; with `p`, flushes after each and records it there once the flush returned. */
async function writeAll(c: BlocktabClient, node: string, ws: GuestWrite[], p?: CrashProgress): Promise<void> {
  for (const w of ws) {
    await c.write(node, w.offset, new Uint8Array(w.bytes).fill(w.pattern));
    if (!p) continue;
    await c.flush(node);
    p.flushed.push(w);
  }
}

async function makeImage(c: BlocktabClient, file: string, ws: GuestWrite[], opts?: { backingFile?: string; options?: string[] }): Promise<void> {
  await c.create('opfs', file, 'qcow2', CRASH_DISK, opts?.backingFile ? { backingFile: opts.backingFile, backingFormat: 'qcow2' } : opts?.options ? { options: opts.options } : undefined);
  const n = await c.open('opfs', file, { format: 'qcow2' });
  await writeAll(c, n, ws);
  await c.close(n);
}

export const crashScenarios: Record<ScenarioName, CrashScenario> = {
  write: {
    image: 'w.qcow2',
    async prepare(c, dir) {
      await c.create('opfs', `${dir}/w.qcow2`, 'qcow2', CRASH_DISK);
      return [];
    },
    async run(c, dir, p) {
      const n = await c.open('opfs', `${dir}/w.qcow2`, { format: 'qcow2' });
      await writeAll(c, n, slotWrites(11, 0, 24), p);
      await c.close(n);
      p.done = true;
    },
  },
  snapshot: {
    image: 's.qcow2',
    async prepare(c, dir) {
      const ws = slotWrites(21, 0, 6);
      await makeImage(c, `${dir}/s.qcow2`, ws);
      return ws;
    },
    async run(c, dir, p) {
      const n = await c.open('opfs', `${dir}/s.qcow2`, { format: 'qcow2' });
      const more = slotWrites(22, 6, 8);
      const steps: ({ create: string } | { delete: string } | GuestWrite)[] = [
        { create: 's0' }, more[0]!, more[1]!, { create: 's1' }, more[2]!, more[3]!, { delete: 's0' }, more[4]!, { create: 's2' }, more[5]!, more[6]!, { delete: 's1' }, more[7]!,
      ];
      for (const s of steps) {
        if ('create' in s) {
          await c.snapshot(n, { create: s.create });
          p.snapshotsIn.push(s.create);
        } else if ('delete' in s) {
          // While the delete runs, a kill may leave the snapshot there or gone.
          p.snapshotsIn = p.snapshotsIn.filter((x) => x !== s.delete);
          await c.snapshot(n, { delete: s.delete });
          p.snapshotsOut.push(s.delete);
        } else await writeAll(c, n, [s], p);
      }
      await c.close(n);
      p.done = true;
    },
  },
  commit: {
    image: 'top.qcow2',
    async prepare(c, dir) {
      const base = slotWrites(31, 0, 8);
      const top = slotWrites(32, 8, 16);
      await makeImage(c, `${dir}/base.qcow2`, base);
      await makeImage(c, `${dir}/top.qcow2`, top, { backingFile: 'base.qcow2' });
      return [...base, ...top];
    },
    async run(c, dir, p) {
      const n = await c.open('opfs', `${dir}/top.qcow2`, { format: 'qcow2' });
      await c.commit(n);
      await c.close(n);
      p.done = true;
    },
  },
  convert: {
    image: 'src.qcow2',
    async prepare(c, dir) {
      const ws = slotWrites(41, 0, 24);
      await makeImage(c, `${dir}/src.qcow2`, ws);
      return ws;
    },
    async run(c, dir, p) {
      await c.convert([{ storage: 'opfs', filename: `${dir}/src.qcow2`, format: 'qcow2' }], { storage: 'opfs', filename: `${dir}/dst.qcow2`, format: 'qcow2' });
      p.done = true;
    },
  },
  amend: {
    image: 'a.qcow2',
    async prepare(c, dir) {
      // Data, and data zeroed again (allocated zero clusters, which the downgrade to 0.10 must write out).
      const ws = slotWrites(51, 0, 16);
      const zs = slotWrites(52, 16, 24);
      await makeImage(c, `${dir}/a.qcow2`, [...ws, ...zs]);
      const n = await c.open('opfs', `${dir}/a.qcow2`, { format: 'qcow2' });
      for (const z of zs) await c.writeZeroes(n, z.offset, z.bytes);
      await c.close(n);
      return [...ws, ...zs.map((z) => ({ ...z, pattern: 0 }))];
    },
    async run(c, dir, p) {
      // Refcount width both ways (new refcount structures, then one header switch), down to v2 and back.
      for (const o of ['refcount_bits=4', 'refcount_bits=16', 'compat=0.10', 'compat=1.1']) await c.amend({ storage: 'opfs', filename: `${dir}/a.qcow2`, format: 'qcow2' }, [o]);
      p.done = true;
    },
  },
};
