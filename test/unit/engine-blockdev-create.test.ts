/**
 * blockdev-create through the driver registry: a format's QAPI members come
 * from its creation options (qcow2's `compat` is `version`, `data_file` a
 * node reference `data-file`), so the engine names no format. Checked against
 * qemu-img's view of the images made.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MemoryStorage } from '../../src/node.js';
import { FileStorage } from '../../src/protocols/file.js';
import { Engine } from '../../src/engine/index.js';
import { jobDone } from '../../src/engine/commands/jobs.js';
import type { QmpError } from '../../src/engine/qmp-error.js';
import { qemuImg, qemuImgRun, tmpDir } from '../helpers/qemu.js';

const MiB = 1024 * 1024;
const newEngine = () => new Engine({ storages: { file: new FileStorage(), memory: new MemoryStorage() } });

async function create(e: Engine, id: string, options: Record<string, unknown>): Promise<{ status: string; error?: string }> {
  await e.execute('blockdev-create', { 'job-id': id, options });
  await jobDone(e, id);
  const job = ((await e.execute('query-jobs')) as { id: string; status: string; error?: string }[]).find((j) => j.id === id)!;
  await e.execute('job-dismiss', { id });
  return job;
}

describe('blockdev-create for registered formats', () => {
  const dir = tmpDir();
  const at = (n: string) => path.join(dir, n);

  it('qcow2 with an external data file given as a node reference: qemu-img sees the data file and a clean image', async () => {
    const e = newEngine();
    // As in QEMU, the protocol files exist first (made by blockdev-create of driver `file`, or here by hand).
    for (const f of ['d.qcow2', 'd.data']) fs.writeFileSync(at(f), '');
    const job = await create(e, 'q', {
      driver: 'qcow2',
      file: { driver: 'file', filename: at('d.qcow2') },
      'data-file': { driver: 'file', filename: at('d.data') },
      'data-file-raw': true,
      size: 3 * MiB,
      version: 'v3',
      'cluster-size': 4096,
    });
    expect(job).toEqual({ id: 'q', type: 'create', status: 'concluded', 'current-progress': 1, 'total-progress': 1 });
    await e.dispose();
    const info = JSON.parse(qemuImg(['info', '--output=json', at('d.qcow2')])) as Record<string, any>;
    expect(info['virtual-size']).toBe(3 * MiB);
    expect(info['cluster-size']).toBe(4096);
    expect(info['format-specific'].data).toMatchObject({ 'data-file': at('d.data'), 'data-file-raw': true });
    expect(fs.statSync(at('d.data')).size).toBe(3 * MiB);
    expect(qemuImgRun(['check', at('d.qcow2')]).status).toBe(0);
  });

  it("QAPI checks from the option table (unknown member, enum), the format's own checks in the job", async () => {
    const e = newEngine();
    const bad = (await e.execute('blockdev-create', { 'job-id': 'x', options: { driver: 'qcow2', file: 'p', size: 1, nocow: true } }).catch((x) => x)) as QmpError;
    expect(bad.desc).toBe("Parameter 'options.nocow' is unexpected");
    const badC = (await e.execute('blockdev-create', { 'job-id': 'x', options: { driver: 'qcow2', file: 'p', size: 1, 'compression-type': 'lz4' } }).catch((x) => x)) as QmpError;
    expect(badC.desc).toBe("Parameter 'options.compression-type' does not accept value 'lz4'");
    for (const f of ['odd.qcow2', 'r.raw']) fs.writeFileSync(at(f), 'old contents');
    const job = await create(e, 'odd', { driver: 'qcow2', file: { driver: 'file', filename: at('odd.qcow2') }, size: MiB + 1 });
    expect(job.error).toBe('Image size must be a multiple of 512 bytes');
    const raw = await create(e, 'r', { driver: 'raw', file: { driver: 'file', filename: at('r.raw') }, size: MiB + 1, preallocation: 'full' });
    expect(raw.status).toBe('concluded');
    expect(raw.error).toBeUndefined();
    await e.dispose();
    // blockdev-create takes the size as given (qemu-img create would round it up to a sector).
    expect(fs.statSync(at('r.raw')).size).toBe(MiB + 1);
    // The image starts empty: what the file held before is gone.
    expect(fs.readFileSync(at('r.raw')).subarray(0, 16).every((b) => b === 0)).toBe(true);
  });
});
