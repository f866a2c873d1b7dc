/**
 * A job whose I/O fails: with on-error=report (QEMU's default) the job sends
 * BLOCK_JOB_ERROR naming the operation, then concludes with
 * BLOCK_JOB_COMPLETED carrying the error; query-jobs keeps the error until
 * the job is dismissed, and the image's chain is left as it was (stream
 * changes the backing file only after a successful copy).
 */
import { describe, expect, it } from 'vitest';
import { Engine, type QmpEvent } from '../../src/engine/index.js';
import { MemoryStorage } from '../../src/node.js';
import { faultyStorage, type FaultPlan } from '../../src/filters/fault.js';
import type { Storage } from '../../src/block/open.js';
import { jobDone } from '../../src/engine/commands/jobs.js';

const MiB = 1024 * 1024;

describe('job I/O errors', () => {
  it('a failed read in a stream: BLOCK_JOB_ERROR, COMPLETED with the error, chain unchanged', async () => {
    const mem = new MemoryStorage();
    const plan: FaultPlan = {};
    const faulty = faultyStorage(mem, plan);
    // Only the base image sits on the fault filter.
    const storage: Storage = Object.create(mem) as Storage;
    storage.openProtocol = (f, o) => (f === 'base' ? faulty.openProtocol(f, o) : mem.openProtocol(f, o));
    const e = new Engine({ storages: { memory: storage } });
    await e.create('memory', 'base', 'qcow2', MiB);
    await e.open('memory', 'base', { format: 'qcow2', nodeName: 'b' });
    await e.write('b', 0, new Uint8Array(MiB).fill(7));
    // Where base keeps its data in the file: reads there fail, metadata reads (block status) still work.
    const dataAt = Math.min(...(await e.map('b')).filter((m) => m.data).map((m) => m.offset!));
    await e.close('b');
    await e.create('memory', 'top', 'qcow2', MiB, { backingFile: 'base', backingFormat: 'qcow2' });
    await e.open('memory', 'top', { format: 'qcow2', device: 'drive0' });
    const events: QmpEvent[] = [];
    e.onEvent((ev) => events.push(ev));
    plan.rules = [{ op: 'read', offset: dataAt, code: 'EIO' }];
    await e.execute('block-stream', { device: 'drive0', 'auto-dismiss': false });
    await jobDone(e, 'drive0');
    const seen = events.map((ev) => (ev.event === 'JOB_STATUS_CHANGE' ? `status:${ev.data.status as string}` : ev.event));
    expect(seen).toEqual(['status:created', 'status:running', 'BLOCK_JOB_ERROR', 'status:aborting', 'BLOCK_JOB_COMPLETED', 'status:concluded']);
    expect(events.find((ev) => ev.event === 'BLOCK_JOB_ERROR')!.data).toEqual({ device: 'drive0', operation: 'read', action: 'report' });
    const completed = events.find((ev) => ev.event === 'BLOCK_JOB_COMPLETED')!.data;
    expect(completed).toMatchObject({ type: 'stream', device: 'drive0', len: MiB, offset: 0, speed: 0 });
    expect(completed.error).toEqual(expect.any(String));
    const [job] = (await e.execute('query-jobs')) as { status: string; error?: string }[];
    expect(job).toMatchObject({ status: 'concluded', error: completed.error });
    await e.execute('job-dismiss', { id: 'drive0' });
    plan.rules = [];
    const info = await e.info('drive0');
    expect(info['backing-filename']).toBe('base');
    await e.dispose();
  });
});
