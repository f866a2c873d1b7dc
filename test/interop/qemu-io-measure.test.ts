/** measure's arithmetic against `qemu-img measure --output=json` over a grid of sizes and options, and on real images. */
import { describe, expect, it } from 'vitest';
import * as path from 'node:path';
import '../../src/node.js';
import { FileStorage } from '../../src/protocols/file.js';
import { openImage, closeNode } from '../../src/block/open.js';
import { collectDataRanges, measureQcow2, type Qcow2MeasureOptions } from '../../src/formats/qcow2/measure.js';
import { measureRaw } from '../../src/formats/raw/create.js';
import { qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';

const dir = tmpDir('blocktab-measure-');

function qemuMeasure(args: string[]): { required: number; 'fully-allocated': number; bitmaps?: number } {
  return JSON.parse(qemuImg(['measure', '--output=json', ...args]));
}

function optString(o: Qcow2MeasureOptions): string[] {
  const parts: string[] = [];
  if (o.clusterSize !== undefined) parts.push(`cluster_size=${o.clusterSize}`);
  if (o.refcountBits !== undefined) parts.push(`refcount_bits=${o.refcountBits}`);
  if (o.extendedL2 !== undefined) parts.push(`extended_l2=${o.extendedL2 ? 'on' : 'off'}`);
  if (o.preallocation !== undefined) parts.push(`preallocation=${o.preallocation}`);
  if (o.compat !== undefined) parts.push(`compat=${o.compat}`);
  return parts.length ? ['-o', parts.join(',')] : [];
}

describe('qemu-img measure arithmetic', () => {
  const sizes = [0, 1, 512, 65535, 65536, 1 << 20, 1000 * 1000 * 1000, 2 ** 30 + 1, 100 * 2 ** 30, 2 ** 40 + 12345, 16 * 2 ** 40];
  const optionSets: Qcow2MeasureOptions[] = [
    {},
    { clusterSize: 512 },
    { clusterSize: 4096, refcountBits: 1 },
    { clusterSize: 2 * 1024 * 1024, refcountBits: 64 },
    { clusterSize: 16384, extendedL2: true },
    { clusterSize: 65536, extendedL2: true, refcountBits: 8 },
    { preallocation: 'metadata' },
    { preallocation: 'falloc', clusterSize: 8192 },
    { preallocation: 'full', refcountBits: 32 },
    { compat: '0.10' },
  ];

  it('matches qemu-img for --size over the grid (qcow2)', () => {
    let compared = 0;
    for (const o of optionSets) {
      for (const size of sizes) {
        const r = qemuImgRun(['measure', '--output=json', '--size', String(size), '-O', 'qcow2', ...optString(o)]);
        let ours: ReturnType<typeof measureQcow2> | Error;
        try {
          ours = measureQcow2({ ...o, size });
        } catch (e) {
          ours = e as Error;
        }
        if (r.status !== 0) {
          expect(ours, `qemu-img failed (${r.stderr.trim()}) for ${JSON.stringify(o)} size ${size}`).toBeInstanceOf(Error);
          expect(r.stderr).toContain((ours as Error).message);
          continue;
        }
        const q = JSON.parse(r.stdout);
        expect(ours, JSON.stringify({ o, size })).toEqual({ required: q.required, fullyAllocated: q['fully-allocated'] });
        compared++;
      }
    }
    expect(compared).toBeGreaterThan(80);
  });

  it('gives qemu-img the same errors for bad options', () => {
    for (const o of [{ clusterSize: 1024, extendedL2: true }, { clusterSize: 3000 }, { clusterSize: 4 * 1024 * 1024 }, { compat: '0.10', refcountBits: 8 }, { refcountBits: 3 }, { compat: '2.0' }] as Qcow2MeasureOptions[]) {
      const r = qemuImgRun(['measure', '--size', '1G', '-O', 'qcow2', ...optString(o)]);
      expect(r.status).not.toBe(0);
      expect(() => measureQcow2({ ...o, size: 2 ** 30 })).toThrow();
      let msg = '';
      try {
        measureQcow2({ ...o, size: 2 ** 30 });
      } catch (e) {
        msg = (e as Error).message;
      }
      expect(r.stderr, JSON.stringify(o)).toContain(msg);
    }
    const big = qemuImgRun(['measure', '--size', '16E', '-O', 'qcow2', '-o', 'cluster_size=512']);
    expect(big.status).not.toBe(0);
  });

  it('matches qemu-img for raw --size', () => {
    for (const size of [0, 1, 511, 512, 1000, 2 ** 30 + 3]) {
      const q = qemuMeasure(['--size', String(size), '-O', 'raw']);
      expect(measureRaw({ size })).toEqual({ required: q.required, fullyAllocated: q['fully-allocated'], exact: true });
    }
  });

  it('matches qemu-img for input images (sparse raw and qcow2 with data, zeros and holes)', async () => {
    const raw = path.join(dir, 'in.raw');
    qemuImg(['create', '-q', '-f', 'raw', raw, '10M']);
    qemuIo(raw, ['write -P 1 0 1000', 'write -P 2 65000 2000', 'write -P 3 3M 1M', 'write -P 4 10239k 1k'], 'raw');
    const qc = path.join(dir, 'in.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', qc, '5M']);
    qemuIo(qc, ['write -P 1 0 4k', 'write -z 1M 64k', 'write -P 2 2M 200k', 'write -P 3 5242879 1'], 'qcow2');
    const storage = new FileStorage();
    for (const [file, fmt] of [[raw, 'raw'], [qc, 'qcow2']] as const) {
      const bs = await openImage(storage, file, { format: fmt, readOnly: true });
      const ranges = await collectDataRanges(bs);
      for (const o of [{}, { clusterSize: 4096 }, { clusterSize: 512, refcountBits: 2 }, { preallocation: 'full' as const }]) {
        const q = qemuMeasure(['-f', fmt, file, '-O', 'qcow2', ...optString(o)]);
        const ours = measureQcow2(o, { size: bs.totalBytes, dataRanges: ranges, bitmapsSize: fmt === 'qcow2' ? 0 : undefined });
        expect(ours, `${fmt} ${JSON.stringify(o)}`).toEqual({ required: q.required, fullyAllocated: q['fully-allocated'], ...(q.bitmaps !== undefined ? { bitmaps: q.bitmaps } : {}) });
      }
      const qr = qemuMeasure(['-f', fmt, file, '-O', 'raw']);
      expect(measureRaw({}, { size: bs.totalBytes })).toEqual({ required: qr.required, fullyAllocated: qr['fully-allocated'], exact: true });
      await closeNode(bs);
    }
  });
});
