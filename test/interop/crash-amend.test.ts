/**
 * Crash-point sweeps over qemu-img amend and resize: each operation runs
 * through the library on a fault filter that cuts the power after the Nth
 * write, for every N. After each cut:
 *  - `qemu-img check` finds no corruption (leaks allowed); an image left
 *    dirty (lazy refcounts) must instead repair cleanly, as QEMU repairs it
 *    on the next read/write open;
 *  - the guest (and every snapshot) reads the state before or the state
 *    after the operation, never a mix;
 *  - `qemu-img info` opens it and shows the old or the new compat /
 *    refcount_bits / lazy_refcounts / size, and the new ones once the
 *    operation completed.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { bdrvTruncate } from '../../src/block/io.js';
import { amendImage, parseAmendOptions } from '../../src/img/amend.js';
import { qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';
import { checkNoCorruption, guest, sweep, withImage } from '../helpers/crash.js';

const dir = tmpDir('crash-amend-');
const p = (s: string) => path.join(dir, s);
const M = 1024 * 1024;

interface Header {
  compat: string;
  refcountBits: number;
  lazy: boolean;
  size: number;
  dirty: boolean;
  snapshots: string[];
}

function header(file: string): Header {
  const r = qemuImgRun(['info', '-U', '--output=json', file]);
  expect(r.status, `${file}: qemu-img info: ${r.stderr}`).toBe(0);
  const j = JSON.parse(r.stdout);
  const d = j['format-specific'].data;
  return {
    compat: d.compat,
    refcountBits: d['refcount-bits'],
    lazy: d['lazy-refcounts'] ?? false,
    size: j['virtual-size'],
    dirty: j['dirty-flag'] ?? false,
    snapshots: (j.snapshots ?? []).map((s: { name: string }) => s.name),
  };
}

/**
 * The image is consistent: clean for qemu-img check (leaks allowed), or, if
 * it was left dirty, repairable by the repair QEMU runs on the next open.
 */
function consistent(file: string): void {
  if (!header(file).dirty) return checkNoCorruption(file);
  const copy = `${file}.repair.qcow2`;
  fs.copyFileSync(file, copy);
  const r = qemuImgRun(['check', '-r', 'all', copy]);
  expect(r.status, `${file} (dirty): qemu-img check -r all: ${r.stdout}${r.stderr}`).toBe(0);
  checkNoCorruption(copy);
  fs.rmSync(copy);
}

/** Runs the sweep of `amend -o opts` (through parseAmendOptions, as the CLI does) and checks every cut. */
async function amendSweep(
  make: () => string[],
  opts: string,
  expectBefore: Partial<Header>,
  expectAfter: Partial<Header>,
  views: { snapshots?: string[] } = {},
): Promise<{ total: number; cuts: number }> {
  const o = await parseAmendOptions('qcow2', [opts]);
  let before!: Buffer;
  const snaps = new Map<string, Buffer>();
  const res = await sweep(
    () => {
      const files = make();
      before = guest(files[0]!);
      for (const sn of views.snapshots ?? []) snaps.set(sn, guest(files[0]!, sn));
      expect(header(files[0]!)).toMatchObject(expectBefore);
      return files;
    },
    (st, [f]) => withImage(st, f!, (bs) => amendImage(bs, o)),
    ([f], completed, n) => {
      const what = `amend -o ${opts}, cut after write ${n}`;
      consistent(f!);
      const h = header(f!);
      for (const k of Object.keys(expectAfter) as (keyof Header)[]) {
        const v = h[k];
        expect([expectBefore[k] ?? v, expectAfter[k]], `${what}: ${k}`).toContainEqual(v);
      }
      if (completed) expect(h, what).toMatchObject(expectAfter);
      expect(guest(f!).equals(before), `${what}: guest data changed`).toBe(true);
      for (const [sn, b] of snaps) expect(guest(f!, sn).equals(b), `${what}: snapshot ${sn} changed`).toBe(true);
    },
    { maxCuts: 120 },
  );
  expect(res.total).toBeGreaterThan(0);
  return res;
}

/** An image with data, plain zero clusters and preallocated zero clusters (qemu-io write -z over data). */
function zeroImage(name: string, createOpts: string[], backing?: string): string {
  const f = p(name);
  fs.rmSync(f, { force: true });
  qemuImg(['create', '-q', '-f', 'qcow2', ...createOpts, ...(backing ? ['-b', path.basename(backing), '-F', 'qcow2'] : []), f, '4M']);
  qemuIo(f, ['write -P 0x11 0 128k', 'write -z 1M 128k', 'write -P 0x33 2M 64k', 'write -z 2M 64k', 'write -P 0x44 3M 64k'], 'qcow2');
  return f;
}

function backingFile(name: string): string {
  const b = p(name);
  fs.rmSync(b, { force: true });
  qemuImg(['create', '-q', '-f', 'qcow2', b, '4M']);
  qemuIo(b, ['write -P 0xbb 0 4M'], 'qcow2');
  return b;
}

describe('amend crash sweeps', () => {
  it('compat 1.1 -> 0.10 expanding zero clusters over a backing file', async () => {
    const res = await amendSweep(
      () => {
        const b = backingFile('dz-base.qcow2');
        return [zeroImage('dz.qcow2', ['-o', 'cluster_size=4k'], b), b];
      },
      'compat=0.10',
      { compat: '1.1' },
      { compat: '0.10' },
    );
    expect(res.cuts).toBeGreaterThan(5);
  });

  it('compat 1.1 -> 0.10 with a snapshot sharing zero clusters and an L2 table', async () => {
    await amendSweep(
      () => {
        const b = backingFile('ds-base.qcow2');
        const f = zeroImage('ds.qcow2', ['-o', 'cluster_size=4k'], b);
        qemuImg(['snapshot', '-c', 'snap', f]);
        // Only the second L2 table (2M..4M) is copied; the first stays shared with the snapshot.
        qemuIo(f, ['write -z 2M 4k', 'write -z 3M 8k', 'write -P 0x55 3M 4k'], 'qcow2');
        return [f, b];
      },
      'compat=0.10',
      { compat: '1.1', snapshots: ['snap'] },
      { compat: '0.10', snapshots: ['snap'] },
      { snapshots: ['snap'] },
    );
  });

  it('compat 0.10 -> 1.1', async () => {
    await amendSweep(() => [zeroImage('up.qcow2', ['-o', 'compat=0.10,cluster_size=4k'])], 'compat=1.1', { compat: '0.10' }, { compat: '1.1' });
  });

  it('lazy_refcounts on -> off on an image left dirty', async () => {
    await amendSweep(
      () => {
        const f = p('lazy.qcow2');
        fs.rmSync(f, { force: true });
        qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on,cluster_size=4k', f, '4M']);
        // qemu-io's abort leaves the dirty bit set and the refcounts behind the L2 tables.
        const io = spawnSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 128k', '-c', 'write -P 2 1M 64k', '-c', 'abort', f]);
        expect(io.status).not.toBe(0);
        return [f];
      },
      'lazy_refcounts=off',
      { lazy: true, dirty: true },
      { lazy: false, dirty: false },
    );
  });

  it('lazy_refcounts on -> off on a clean image', async () => {
    await amendSweep(() => [zeroImage('lazy-clean.qcow2', ['-o', 'lazy_refcounts=on,cluster_size=4k'])], 'lazy_refcounts=off', { lazy: true }, { lazy: false });
  });

  for (const [from, to] of [
    [16, 1],
    [16, 64],
    [64, 8],
  ] as const) {
    it(`refcount_bits ${from} -> ${to}`, async () => {
      await amendSweep(
        () => [zeroImage(`rc${from}-${to}.qcow2`, ['-o', `cluster_size=4k,refcount_bits=${from}`])],
        `refcount_bits=${to}`,
        { refcountBits: from },
        { refcountBits: to },
      );
    });
  }
});

describe('resize crash sweeps', () => {
  async function resizeSweep(make: () => string, newSize: number): Promise<void> {
    let before!: Buffer;
    let oldSize = 0;
    await sweep(
      () => {
        const f = make();
        before = guest(f);
        oldSize = before.length;
        return [f];
      },
      (st, [f]) => withImage(st, f!, (bs) => bdrvTruncate(bs, newSize, false, 'off')),
      ([f], completed, n) => {
        const what = `resize to ${newSize}, cut after write ${n}`;
        checkNoCorruption(f!);
        const g = guest(f!);
        // The old or the new size, with the old content up to the smaller one and zeros past it.
        const after = Buffer.alloc(newSize);
        before.copy(after, 0, 0, Math.min(oldSize, newSize));
        expect(g.equals(before) || g.equals(after), `${what}: guest is neither the old nor the new state (${g.length} bytes)`).toBe(true);
        if (completed) expect(g.length, what).toBe(newSize);
      },
      { maxCuts: 120 },
    );
  }

  it('grow with L1 table growth', async () => {
    let l1Before = 0;
    await resizeSweep(() => {
      const f = zeroImage('grow.qcow2', ['-o', 'cluster_size=512']);
      l1Before = fs.readFileSync(f).readUInt32BE(36);
      return f;
    }, 64 * M);
    // 512-byte clusters: one L2 table covers 32 KiB, so 64 MiB needs 2048 L1 entries (4 MiB needed 128).
    expect(l1Before).toBe(128);
    expect(fs.readFileSync(p('grow.qcow2')).readUInt32BE(36)).toBe(2048);
  });

  it('--shrink dropping clusters and L2 tables past the new end', async () => {
    await resizeSweep(() => zeroImage('shrink.qcow2', ['-o', 'cluster_size=4k']), 1 * M + 64 * 1024);
  });
});
