/**
 * Engine snapshot commands and `transaction`: internal and external
 * snapshots taken through QMP-style commands are what qemu-img sees; a
 * transaction whose later action fails leaves every file byte for byte as it
 * was; block-stream runs as a job.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FileStorage } from '../../src/node.js';
import { Engine, QmpError } from '../../src/engine/index.js';
import { jobDone } from '../../src/engine/commands/jobs.js';
import { qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';

const dir = tmpDir('txn-');
const p = (s: string) => path.join(dir, s);
const engineOn = () => new Engine({ storages: { file: new FileStorage() } });
const fill = (n: number, v: number) => new Uint8Array(n).fill(v);

describe('engine snapshot commands', () => {
  it('blockdev-snapshot-internal-sync / -delete-internal-sync: qemu-img sees them; QMP refuses duplicates', async () => {
    const img = p('int.qcow2');
    qemuImg(['create', '-f', 'qcow2', img, '2M']);
    const e = engineOn();
    await e.open('file', img, { format: 'qcow2', device: 'drive0' });
    await e.write('drive0', 0, fill(65536, 1));
    expect(await e.execute('blockdev-snapshot-internal-sync', { device: 'drive0', name: 'snap0' })).toEqual({});
    await expect(e.execute('blockdev-snapshot-internal-sync', { device: 'drive0', name: 'snap0' })).rejects.toThrow(
      "Snapshot with name 'snap0' already exists on device 'drive0'",
    );
    await e.write('drive0', 0, fill(65536, 2));
    await e.execute('blockdev-snapshot-internal-sync', { device: 'drive0', name: 'snap1' });
    const reply = (await e.execute('blockdev-snapshot-delete-internal-sync', { device: 'drive0', name: 'snap1' })) as Record<string, unknown>;
    expect(reply).toMatchObject({ id: '2', name: 'snap1', 'vm-state-size': 0, 'vm-clock-sec': 0, 'vm-clock-nsec': 0 });
    await expect(e.execute('blockdev-snapshot-delete-internal-sync', { device: 'drive0', name: 'nope' })).rejects.toThrow(
      "Snapshot with id 'null' and name 'nope' does not exist on device 'drive0'",
    );
    await e.dispose();
    expect(qemuImg(['snapshot', '-l', img])).toMatch(/1\s+snap0/);
    expect(qemuImgRun(['check', img]).stdout).toContain('No errors were found');
    qemuIo(img, ['read -P 2 0 64k'], 'qcow2');
  });

  it('blockdev-snapshot-sync: the device writes to the overlay, the old image is its backing', async () => {
    const img = p('ext.qcow2');
    qemuImg(['create', '-f', 'qcow2', img, '2M']);
    const e = engineOn();
    await e.open('file', img, { format: 'qcow2', device: 'drive0' });
    await e.write('drive0', 0, fill(4096, 7));
    await e.execute('blockdev-snapshot-sync', { device: 'drive0', 'snapshot-file': p('ext-overlay.qcow2'), 'snapshot-node-name': 'ov', format: 'qcow2' });
    await e.write('drive0', 4096, fill(4096, 8));
    expect(e.findNode('ov')).toBeDefined();
    const back = await e.read('drive0', 0, 8192);
    expect(back[0]).toBe(7);
    expect(back[4096]).toBe(8);
    await e.dispose();
    const info = JSON.parse(qemuImg(['info', '--output=json', p('ext-overlay.qcow2')]));
    expect(info['backing-filename']).toBe(img);
    qemuIo(p('ext-overlay.qcow2'), ['read -P 7 0 4k', 'read -P 8 4k 4k'], 'qcow2');
    qemuIo(img, ['read -P 7 0 4k', 'read -P 0 4k 4k'], 'qcow2');
  });
});

describe('transaction', () => {
  it('all actions commit together', async () => {
    const img = p('t-ok.qcow2');
    qemuImg(['create', '-f', 'qcow2', img, '2M']);
    const e = engineOn();
    await e.open('file', img, { format: 'qcow2', device: 'drive0' });
    await e.execute('block-dirty-bitmap-add', { node: 'drive0', name: 'b0' });
    await e.write('drive0', 0, fill(65536, 3));
    await e.execute('transaction', {
      actions: [
        { type: 'blockdev-snapshot-internal-sync', data: { device: 'drive0', name: 'before' } },
        { type: 'block-dirty-bitmap-clear', data: { node: 'drive0', name: 'b0' } },
        { type: 'block-dirty-bitmap-add', data: { node: 'drive0', name: 'b1' } },
      ],
    });
    const blocks = (await e.execute('query-block', {})) as { inserted: { 'dirty-bitmaps'?: { name: string; count: number }[] } }[];
    const bitmaps = blocks[0]!.inserted['dirty-bitmaps'] ?? [];
    expect(bitmaps.map((b) => [b.name, b.count]).sort()).toEqual([
      ['b0', 0],
      ['b1', 0],
    ]);
    await e.dispose();
    expect(qemuImg(['snapshot', '-l', img])).toMatch(/1\s+before/);
  });

  it('a failing later action undoes the earlier ones; the image file is byte for byte as it was', async () => {
    const img = p('t-fail.qcow2');
    qemuImg(['create', '-f', 'qcow2', img, '2M']);
    qemuIo(img, ['write -P 5 0 128k'], 'qcow2');
    const before = fs.readFileSync(img);
    const e = engineOn();
    await e.open('file', img, { format: 'qcow2', device: 'drive0' });
    await e.execute('block-dirty-bitmap-add', { node: 'drive0', name: 'keep' });
    await e.execute('blockdev-snapshot-internal-sync', { device: 'drive0', name: 'dup' }).then(() =>
      e.execute('blockdev-snapshot-delete-internal-sync', { device: 'drive0', name: 'dup' }),
    );
    const mid = fs.readFileSync(img);
    const overlay = p('t-fail-overlay.qcow2');
    const run = (last: unknown) =>
      e.execute('transaction', {
        actions: [
          { type: 'block-dirty-bitmap-clear', data: { node: 'drive0', name: 'keep' } },
          { type: 'blockdev-snapshot-sync', data: { device: 'drive0', 'snapshot-file': overlay, 'snapshot-node-name': 'ov', format: 'qcow2' } },
          last,
        ],
      });
    // Mark the bitmap through a write that goes nowhere new: a rewrite of the same bytes.
    await e.write('drive0', 0, fill(512, 5));
    await e.flush('drive0');
    const beforeTxn = fs.readFileSync(img);
    await expect(run({ type: 'blockdev-snapshot-internal-sync', data: { device: 'nosuch', name: 'x' } })).rejects.toBeInstanceOf(QmpError);
    await expect(run({ type: 'block-dirty-bitmap-add', data: { node: 'ov', name: '' } })).rejects.toThrow('Bitmap name cannot be empty');
    // Everything undone: the device is on the old image, the overlay is gone, the bitmap kept its bits.
    const blocks = (await e.execute('query-block', {})) as { inserted: { file: string; 'dirty-bitmaps'?: { name: string; count: number }[] } }[];
    expect(blocks[0]!.inserted.file).toBe(img);
    expect(blocks[0]!.inserted['dirty-bitmaps']!.find((b) => b.name === 'keep')!.count).toBeGreaterThan(0);
    expect(e.findNode('ov')).toBeUndefined();
    expect(fs.existsSync(overlay)).toBe(false);
    await e.dispose();
    expect(fs.readFileSync(img).equals(beforeTxn)).toBe(true);
    expect(mid.length).toBeGreaterThanOrEqual(before.length);
  });

  it('an internal snapshot undone by abort: qemu-img sees the image as before (the freed clusters stay in the file, as with QEMU)', async () => {
    const img = p('t-int.qcow2');
    qemuImg(['create', '-f', 'qcow2', img, '2M']);
    qemuIo(img, ['write -P 5 0 128k'], 'qcow2');
    const e = engineOn();
    await e.open('file', img, { format: 'qcow2', device: 'drive0' });
    await expect(
      e.execute('transaction', {
        actions: [
          { type: 'blockdev-snapshot-internal-sync', data: { device: 'drive0', name: 'x' } },
          { type: 'blockdev-snapshot-internal-sync', data: { device: 'drive0', name: 'x' } },
        ],
      }),
    ).rejects.toThrow("Snapshot with name 'x' already exists on device 'drive0'");
    await e.dispose();
    expect(qemuImg(['snapshot', '-l', img])).toBe('');
    expect(qemuImgRun(['check', img]).stdout).toContain('No errors were found');
    qemuIo(img, ['read -P 5 0 128k', 'read -P 0 128k 1920k'], 'qcow2');
  });
});

describe('block-stream', () => {
  it('streams the chain into the device and rebases it; events and job list as QEMU', async () => {
    qemuImg(['create', '-f', 'qcow2', p('s-base.qcow2'), '2M']);
    qemuIo(p('s-base.qcow2'), ['write -P 1 0 2M'], 'qcow2');
    qemuImg(['create', '-f', 'qcow2', '-b', 's-base.qcow2', '-F', 'qcow2', p('s-top.qcow2')]);
    qemuIo(p('s-top.qcow2'), ['write -P 2 0 64k'], 'qcow2');
    const e = engineOn();
    const events: string[] = [];
    e.onEvent((ev) => events.push(`${ev.event}:${String(ev.data.status ?? '')}`));
    await e.open('file', p('s-top.qcow2'), { format: 'qcow2', device: 'drive0' });
    await e.execute('block-stream', { device: 'drive0' });
    await jobDone(e, 'drive0');
    expect(events).toEqual([
      'JOB_STATUS_CHANGE:created',
      'JOB_STATUS_CHANGE:running',
      'JOB_STATUS_CHANGE:waiting',
      'JOB_STATUS_CHANGE:pending',
      'BLOCK_JOB_COMPLETED:',
      'JOB_STATUS_CHANGE:concluded',
      'JOB_STATUS_CHANGE:null',
    ]);
    expect(await e.execute('query-block-jobs', {})).toEqual([]);
    await e.dispose();
    const info = JSON.parse(qemuImg(['info', '--output=json', p('s-top.qcow2')]));
    expect(info['backing-filename']).toBeUndefined();
    qemuIo(p('s-top.qcow2'), ['read -P 2 0 64k', 'read -P 1 64k 1984k'], 'qcow2');
  });
});
