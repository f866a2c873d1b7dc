// The Engine's typed qemu-img operations (info, map, convert, compare,
// measure) on images made by qemu-img, checked against qemu-img's own JSON
// and bytes. Images may be named by node-name or by storage + filename.
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MemoryStorage } from '../../src/node.js';
import { FileStorage } from '../../src/protocols/file.js';
import { driverInfo } from '../../src/block/driver.js';
import { Engine } from '../../src/engine/index.js';
import { qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';

const hasQcow2 = driverInfo('qcow2') !== undefined;
const newEngine = () => new Engine({ storages: { file: new FileStorage(), memory: new MemoryStorage() } });

function makeImages(): { dir: string; raw: string; qcow2: string } {
  const dir = tmpDir();
  const raw = path.join(dir, 'data.raw');
  const qcow2 = path.join(dir, 'data.qcow2');
  qemuImg(['create', '-f', 'raw', raw, '3M']);
  qemuIo(raw, ['write -P 0x5a 0 64k', 'write -P 0xa5 1000000 70000'], 'raw');
  qemuImg(['create', '-f', 'qcow2', qcow2, '3M']);
  qemuIo(qcow2, ['write -P 0x11 0 64k', 'write -P 0x22 1M 100k', 'write -z 2M 64k'], 'qcow2');
  return { dir, raw, qcow2 };
}

describe.runIf(hasQcow2)('engine: qemu-img operations against qemu-img', () => {
  const { dir, raw, qcow2 } = makeImages();

  it('info matches qemu-img info --output=json (filename, format, sizes, format-specific)', async () => {
    const engine = newEngine();
    const ours = await engine.info({ storage: 'file', filename: qcow2 });
    const theirs = JSON.parse(qemuImg(['info', '--output=json', qcow2])) as Record<string, unknown>;
    for (const k of ['filename', 'format', 'virtual-size', 'cluster-size', 'dirty-flag']) expect(ours[k], k).toEqual(theirs[k]);
    expect((ours['format-specific'] as { type: string }).type).toBe('qcow2');
  });

  it('info with backingChain nests the backing image, as QAPI ImageInfo does', async () => {
    const top = path.join(dir, 'top.qcow2');
    qemuImg(['create', '-f', 'qcow2', '-b', 'data.qcow2', '-F', 'qcow2', top]);
    const engine = newEngine();
    const info = await engine.info({ storage: 'file', filename: top }, { backingChain: true });
    expect(info['backing-filename']).toBe('data.qcow2');
    expect(info['backing-image']).toMatchObject({ filename: qcow2, format: 'qcow2' });
    expect((await engine.info({ storage: 'file', filename: top }))['backing-image']).toBeUndefined();
  });

  it('map of an open node matches qemu-img map --output=json', async () => {
    const engine = newEngine();
    await engine.open('file', qcow2, { format: 'qcow2', readOnly: true, nodeName: 'q' });
    const ours = await engine.map('q');
    const theirs = JSON.parse(qemuImg(['map', '--output=json', '-f', 'qcow2', qcow2])) as Record<string, unknown>[];
    expect(ours.map(({ start, length, depth, present, zero, data, offset }) => ({ start, length, depth, present, zero, data, offset }))).toEqual(
      theirs.map(({ start, length, depth, present, zero, data, offset }) => ({ start, length, depth, present, zero, data, offset })),
    );
    await engine.dispose();
  });

  it('convert qcow2 → raw file: qemu-img compare says identical; progress ends at the total', async () => {
    const engine = newEngine();
    const out = path.join(dir, 'out.raw');
    const progress: number[] = [];
    const res = await engine.convert([{ storage: 'file', filename: qcow2 }], { storage: 'file', filename: out }, {}, (d, t) => {
      expect(t).toBe(3 * 1024 * 1024);
      progress.push(d);
    });
    expect(res.bytes).toBe(3 * 1024 * 1024);
    expect(progress[progress.length - 1]).toBe(3 * 1024 * 1024);
    expect(qemuImgRun(['compare', '-f', 'qcow2', '-F', 'raw', qcow2, out]).status).toBe(0);
    expect(engine.allNodes()).toHaveLength(0); // temporary nodes were closed
  });

  it('convert into an existing node, and into a new qcow2 target that qemu-img finds clean and equal', async () => {
    const engine = newEngine();
    const target = path.join(dir, 'into.raw');
    fs.writeFileSync(target, new Uint8Array(3 * 1024 * 1024));
    await engine.open('file', target, { format: 'raw', nodeName: 't' });
    await engine.convert([{ storage: 'file', filename: raw, format: 'raw' }], 't');
    await engine.flush('t');
    // Buffer.equals: vitest's deep equality over 3 MiB takes seconds.
    expect(fs.readFileSync(target).equals(fs.readFileSync(raw))).toBe(true);
    const q2 = path.join(dir, 'x.qcow2');
    await engine.convert([{ storage: 'file', filename: raw, format: 'raw' }], { storage: 'file', filename: q2, format: 'qcow2' });
    await engine.dispose();
    expect(qemuImgRun(['check', q2]).status).toBe(0);
    expect(qemuImgRun(['compare', '-f', 'raw', '-F', 'qcow2', raw, q2]).status).toBe(0);
  });

  it('compare finds the first differing offset as qemu-img compare does', async () => {
    const engine = newEngine();
    const other = path.join(dir, 'other.raw');
    fs.copyFileSync(raw, other);
    qemuIo(other, ['write -P 0x01 1500000 1'], 'raw');
    const res = await engine.compare({ storage: 'file', filename: raw, format: 'raw' }, { storage: 'file', filename: other, format: 'raw' });
    const q = qemuImgRun(['compare', '-f', 'raw', '-F', 'raw', raw, other]);
    expect(q.status).toBe(1);
    expect(res).toEqual({ kind: 'content-mismatch', offset: Number(/offset (\d+)/.exec(q.stdout)![1]), sizeMismatch: false });
  });

  it('measure matches qemu-img measure, from a size and from an image', async () => {
    const engine = newEngine();
    const fromSize = JSON.parse(qemuImg(['measure', '--output=json', '-O', 'qcow2', '--size', '1G'])) as Record<string, number>;
    const ours = await engine.measure({ format: 'qcow2', size: 1 << 30 });
    expect([ours.required, ours.fullyAllocated]).toEqual([fromSize.required, fromSize['fully-allocated']]);
    const fromImg = JSON.parse(qemuImg(['measure', '--output=json', '-O', 'qcow2', '-f', 'raw', raw])) as Record<string, number>;
    const ours2 = await engine.measure({ format: 'qcow2', image: { storage: 'file', filename: raw, format: 'raw' } });
    expect([ours2.required, ours2.fullyAllocated]).toEqual([fromImg.required, fromImg['fully-allocated']]);
  });
});
