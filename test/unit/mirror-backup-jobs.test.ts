/**
 * Mirror and backup through the engine, where QEMU's QMP cannot be driven
 * the same way (no device, no injected errors): a mirror of a device keeps
 * copying its writes and job-complete pivots the device onto the target;
 * sync=top copies only the top layer; the error policies (report, ignore,
 * stop) on an injected target error; the sync bitmap after a failed backup
 * under each bitmap-mode; copy-before-write while the job is throttled.
 */
import { describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/index.js';
import { MemoryStorage } from '../../src/node.js';
import { faultyStorage, type FaultRule } from '../../src/filters/fault.js';
import { jobDone } from '../../src/engine/commands/jobs.js';

const MiB = 1024 * 1024;
const fill = (n: number, v: number) => new Uint8Array(n).fill(v);
const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

/** A 4 MiB qcow2 'src' on device drive0 (0x01 in the first 2 MiB), and a raw 4 MiB 'tgt' on a storage that fails as `rules` say. */
async function setup(rules: FaultRule[] = []): Promise<{ e: Engine; events: { event: string; data: Record<string, unknown> }[] }> {
  const mem = new MemoryStorage();
  const e = new Engine({ storages: { memory: mem, bad: faultyStorage(mem, { rules }) } });
  await e.create('memory', 'src', 'qcow2', 4 * MiB);
  await e.create('memory', 'tgt', 'raw', 4 * MiB);
  await e.open('memory', 'src', { format: 'qcow2', nodeName: 'src', device: 'drive0' });
  await e.write('drive0', 0, fill(2 * MiB, 1));
  await e.execute('blockdev-add', { driver: 'raw', 'node-name': 'tgt', file: { driver: 'bad', filename: 'tgt' } });
  const events: { event: string; data: Record<string, unknown> }[] = [];
  e.onEvent((ev) => events.push({ event: ev.event, data: ev.data as Record<string, unknown> }));
  return { e, events };
}

async function until(e: Engine, pred: (j: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
  for (let i = 0; i < 3000; i++) {
    const jobs = (await e.execute('query-block-jobs')) as Record<string, unknown>[];
    if (jobs[0] && pred(jobs[0])) return jobs[0];
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error('job never got there');
}

describe('mirror', () => {
  it("copies the device's writes while ready; complete pivots the device onto the target", async () => {
    const { e, events } = await setup();
    await e.execute('blockdev-mirror', { 'job-id': 'm', device: 'drive0', target: 'tgt', sync: 'full' });
    await until(e, (j) => j.ready === true);
    await e.write('drive0', 3 * MiB, fill(8192, 7));
    await e.write('drive0', 100, fill(10, 8));
    const view = await e.read('drive0', 0, 4 * MiB);
    await e.execute('job-complete', { id: 'm' });
    await jobDone(e, 'm');
    expect(events.filter((x) => x.event.startsWith('BLOCK_JOB')).map((x) => x.event)).toEqual(['BLOCK_JOB_READY', 'BLOCK_JOB_COMPLETED']);
    expect(e.device('drive0')!.backend.root.nodeName).toBe('tgt');
    expect(same(await e.read('tgt', 0, 4 * MiB), view)).toBe(true);
    // The device writes to the target now, not to src.
    await e.write('drive0', 0, fill(512, 9));
    expect((await e.read('tgt', 0, 1))[0]).toBe(9);
    expect((await e.read('src', 0, 1))[0]).toBe(1);
    await e.dispose();
  });

  it('copy-mode=write-blocking: a guest write completes only once the target has it; background catches up later', async () => {
    for (const mode of ['write-blocking', 'background'] as const) {
      const { e } = await setup();
      await e.execute('blockdev-mirror', { 'job-id': 'm', device: 'drive0', target: 'tgt', sync: 'full', 'copy-mode': mode });
      await until(e, (j) => j.ready === true);
      await e.write('drive0', 3 * MiB + 4096, fill(4096, 0x5c));
      // No wait: in write-blocking mode the bytes are on the target when the write returns.
      const now = (await e.read('tgt', 3 * MiB + 4096, 1))[0];
      expect(now).toBe(mode === 'write-blocking' ? 0x5c : 0);
      await e.execute('job-complete', { id: 'm' });
      await jobDone(e, 'm');
      expect((await e.read('tgt', 3 * MiB + 4096, 1))[0]).toBe(0x5c);
      await e.dispose();
    }
  });

  it('sync=top copies only what the top layer holds', async () => {
    const mem = new MemoryStorage();
    const e = new Engine({ storages: { memory: mem } });
    await e.create('memory', 'base', 'qcow2', 2 * MiB);
    await e.open('memory', 'base', { format: 'qcow2', nodeName: 'b' });
    await e.write('b', 0, fill(2 * MiB, 1));
    await e.close('b');
    await e.create('memory', 'top', 'qcow2', 2 * MiB, { backingFile: 'base', backingFormat: 'qcow2' });
    await e.open('memory', 'top', { format: 'qcow2', nodeName: 't' });
    await e.write('t', MiB, fill(65536, 2));
    await e.execute('drive-mirror', { 'job-id': 'm', device: 't', target: 'copy', sync: 'top', format: 'qcow2' });
    const j = await until(e, (x) => x.ready === true);
    expect(j.len).toBe(65536);
    await e.execute('block-job-cancel', { device: 'm' });
    await jobDone(e, 'm');
    // The copy is an overlay of base with the top's one cluster.
    await e.open('memory', 'copy', { format: 'qcow2', nodeName: 'c', readOnly: true });
    expect(same(await e.read('c', 0, 2 * MiB), await e.read('t', 0, 2 * MiB))).toBe(true);
    const info = (await e.info('c')) as { 'backing-filename'?: string };
    expect(info['backing-filename']).toBe('base');
    await e.dispose();
  });

  it('on-target-error=ignore retries the run; stop pauses until resume; report fails the job', async () => {
    for (const policy of ['ignore', 'stop', 'report'] as const) {
      const { e, events } = await setup([{ op: 'write', offset: MiB, bytes: 1, code: 'EIO', times: 1 }]);
      await e.execute('blockdev-mirror', { 'job-id': 'm', device: 'drive0', target: 'tgt', sync: 'full', 'on-target-error': policy });
      if (policy === 'stop') {
        const j = await until(e, (x) => x.paused === true);
        expect(j['io-status']).toBe('failed');
        await e.execute('block-job-resume', { device: 'm' });
      }
      if (policy === 'report') {
        await jobDone(e, 'm');
        const done = events.find((x) => x.event === 'BLOCK_JOB_COMPLETED')!;
        expect(done.data.error).toMatch(/EIO|error/i);
      } else {
        await until(e, (x) => x.ready === true);
        await e.execute('job-complete', { id: 'm' });
        await jobDone(e, 'm');
        expect(same(await e.read('tgt', 0, 4 * MiB), await e.read('src', 0, 4 * MiB))).toBe(true);
      }
      expect(events.find((x) => x.event === 'BLOCK_JOB_ERROR')!.data).toEqual({ device: 'm', operation: 'write', action: policy });
      await e.dispose();
    }
  });
});

describe('backup', () => {
  it('a guest write during a throttled backup never reaches the target as new data', async () => {
    const { e } = await setup();
    const before = await e.read('drive0', 0, 4 * MiB);
    await e.execute('blockdev-backup', { 'job-id': 'b', device: 'drive0', target: 'tgt', sync: 'full', speed: 1 });
    await until(e, (j) => (j.offset as number) > 0);
    for (const off of [0, MiB + 4096, 2 * MiB - 512, 3 * MiB]) await e.write('drive0', off, fill(4096, 0xee));
    await e.execute('block-job-set-speed', { device: 'b', speed: 0 });
    await jobDone(e, 'b');
    expect(same(await e.read('tgt', 0, 4 * MiB), before)).toBe(true);
    await e.dispose();
  });

  it('after a failed backup the bitmap keeps its bits (on-success, never) or only what was not copied (always)', async () => {
    const counts: Record<string, number> = {};
    for (const mode of ['on-success', 'never', 'always'] as const) {
      // The second cluster's write fails: the first one was copied.
      const { e } = await setup([{ op: 'write', offset: MiB, bytes: 1, code: 'EIO' }]);
      await e.execute('block-dirty-bitmap-add', { node: 'drive0', name: 'bm' });
      await e.write('drive0', 0, fill(4096, 3));
      await e.write('drive0', MiB, fill(4096, 3));
      await e.execute('blockdev-backup', { 'job-id': 'b', device: 'drive0', target: 'tgt', sync: 'bitmap', bitmap: 'bm', 'bitmap-mode': mode });
      await jobDone(e, 'b');
      const nodes = (await e.execute('query-named-block-nodes', { flat: true })) as { 'node-name': string; 'dirty-bitmaps'?: { count: number; busy: boolean }[] }[];
      const bm = nodes.find((n) => n['node-name'] === 'src')!['dirty-bitmaps']![0]!;
      expect(bm.busy).toBe(false);
      counts[mode] = bm.count;
      await e.dispose();
    }
    expect(counts).toEqual({ 'on-success': 2 * 65536, never: 2 * 65536, always: 65536 });
  });
});
