/**
 * Incremental backup end to end, as the README's recipe does it, through
 * the engine's QMP dispatch: a transaction adds a dirty bitmap and starts a
 * full backup at the same instant; the guest writes; each incremental
 * backup goes into a new qcow2 overlay whose backing file is the previous
 * backup (`drive-backup` mode=existing, sync=incremental). qemu-img checks
 * every link: each rebuilt chain equals the source as it was at that
 * backup, each overlay holds only the clusters the bitmap marked, and every
 * image is clean. (The jobs' crash-point sweeps are in crash-jobs.test.ts.)
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FileStorage } from '../../src/node.js';
import { Engine } from '../../src/engine/index.js';
import { jobDone } from '../../src/engine/commands/jobs.js';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu.js';
import { guest } from '../helpers/crash.js';
import { rng } from '../helpers/random.js';

const MiB = 1024 * 1024;
const CLUSTER = 65536;
const SIZE = 16 * MiB;

const addNode = (e: Engine, name: string, file: string) =>
  e.execute('blockdev-add', { driver: 'qcow2', 'node-name': name, file: { driver: 'file', filename: file } });

/** A finished job, or its error. */
async function finished(e: Engine, id: string): Promise<void> {
  const errors: string[] = [];
  const off = e.onEvent((ev) => {
    if (ev.event === 'BLOCK_JOB_COMPLETED' && (ev.data as { device: string; error?: string }).device === id && ev.data.error) errors.push(String(ev.data.error));
  });
  await jobDone(e, id);
  off();
  expect(errors).toEqual([]);
}

/** Writes `n` 4 KiB blocks of `pattern` at random offsets; returns the clusters touched. */
async function guestWrites(e: Engine, node: string, rnd: () => number, n: number, pattern: number): Promise<Set<number>> {
  const touched = new Set<number>();
  for (let i = 0; i < n; i++) {
    const off = Math.floor(rnd() * (SIZE / 4096)) * 4096;
    await e.write(node, off, new Uint8Array(4096).fill(pattern));
    touched.add(Math.floor(off / CLUSTER) * CLUSTER);
  }
  return touched;
}

function dataClusters(file: string): Set<number> {
  const map = JSON.parse(qemuImg(['map', '--output=json', file])) as { start: number; length: number; data: boolean; depth: number }[];
  const out = new Set<number>();
  for (const m of map) if (m.data && m.depth === 0) for (let o = m.start; o < m.start + m.length; o += CLUSTER) out.add(o);
  return out;
}

describe('incremental backup, end to end', () => {
  it('full + bitmap in one transaction, then two incrementals into overlays of the previous backup; each chain equals the source at its time', async () => {
    const d = tmpDir('incbk-');
    const at = (f: string) => path.join(d, f);
    qemuImg(['create', '-f', 'qcow2', at('disk.qcow2'), String(SIZE)]);
    qemuIo(at('disk.qcow2'), ['write -P 1 0 4M', 'write -P 2 8M 2M'], 'qcow2');
    const e = new Engine({ storages: { file: new FileStorage() } });
    const rnd = rng(13);
    const views: Buffer[] = [];
    try {
      await addNode(e, 'disk', at('disk.qcow2'));
      await e.execute('transaction', {
        actions: [
          { type: 'block-dirty-bitmap-add', data: { node: 'disk', name: 'bm0' } },
          { type: 'drive-backup', data: { 'job-id': 'full', device: 'disk', target: at('full.qcow2'), sync: 'full', format: 'qcow2' } },
        ],
      });
      await finished(e, 'full');
      views.push(Buffer.from(await e.read('disk', 0, SIZE)));
      const chain = ['full.qcow2'];
      for (const [i, pattern] of [
        [1, 0x41],
        [2, 0x42],
      ] as const) {
        // About 1% of the clusters change.
        const touched = await guestWrites(e, 'disk', rnd, Math.ceil(SIZE / CLUSTER / 100) + 1, pattern);
        const name = `inc${i}.qcow2`;
        qemuImg(['create', '-f', 'qcow2', '-F', 'qcow2', '-b', chain[chain.length - 1]!, at(name)]);
        await e.execute('drive-backup', { 'job-id': `inc${i}`, device: 'disk', target: at(name), sync: 'incremental', bitmap: 'bm0', format: 'qcow2', mode: 'existing' });
        await finished(e, `inc${i}`);
        views.push(Buffer.from(await e.read('disk', 0, SIZE)));
        chain.push(name);
        // Only the clusters the guest touched went into the overlay.
        expect(dataClusters(at(name))).toEqual(touched);
        const bm = (await e.execute('query-named-block-nodes', { flat: true })) as { 'node-name': string; 'dirty-bitmaps'?: { name: string; count: number }[] }[];
        expect(bm.find((n) => n['node-name'] === 'disk')!['dirty-bitmaps']).toEqual([expect.objectContaining({ name: 'bm0', count: 0 })]);
      }
    } finally {
      await e.dispose();
    }
    for (const f of ['full.qcow2', 'inc1.qcow2', 'inc2.qcow2']) expect(qemuImg(['check', at(f)])).toContain('No errors were found');
    // Each chain is the source at the time of its backup; the last one is the source now.
    expect(qemuImg(['compare', at('inc2.qcow2'), at('disk.qcow2')])).toContain('Images are identical');
    for (const [i, f] of ['full.qcow2', 'inc1.qcow2'].entries()) {
      fs.writeFileSync(at('view.raw'), views[i]!);
      expect(qemuImg(['compare', '-f', 'raw', '-F', 'qcow2', at('view.raw'), at(f)]), f).toContain('Images are identical');
    }
    expect(views[1]!.equals(views[2]!)).toBe(false);
    // full.qcow2 alone is the source before the first writes.
    expect(guest(at('full.qcow2')).subarray(0, 4 * MiB).every((b) => b === 1)).toBe(true);
  });
});
