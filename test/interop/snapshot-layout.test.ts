/**
 * qcow2 internal snapshots lay out the file as QEMU's do (iotests 217, 080,
 * 112): the same qemu-img snapshot commands run by blocktab and by qemu-img on
 * twins (guest writes by qemu-io on both) must leave the same refcount of
 * every cluster, the same header, the same L1 tables (active and each
 * snapshot's), the same L2 tables and data clusters, and the same snapshot
 * table apart from the dates; `qemu-img check` and `map` then agree too.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { blocktab, qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';

const dir = tmpDir('snapshot-layout-');
const f = (n: string) => path.join(dir, n);

type Step = { io: string[] } | { img: string[] };

/** What must agree: refcounts, the metadata QEMU writes, and the clusters the tables reach. */
function layout(file: string) {
  const d = fs.readFileSync(file);
  const cs = 2 ** d.readUInt32BE(20);
  const version = d.readUInt32BE(4);
  const bits = version >= 3 ? 2 ** d.readUInt32BE(96) : 16;
  expect(bits).toBe(16);
  const cluster = (c: number) => Buffer.concat([d.subarray(c * cs, (c + 1) * cs), Buffer.alloc(cs)]).subarray(0, cs);
  const off = (b: Buffer, p: number) => Number(b.readBigUInt64BE(p) & 0x00fffffffffffe00n);
  // Refcounts of every cluster.
  const rtOff = Number(d.readBigUInt64BE(48));
  const rtClusters = d.readUInt32BE(56);
  const refcounts: Record<number, number> = {};
  for (let i = 0; i < (rtClusters * cs) / 8; i++) {
    const rb = off(d, rtOff + i * 8);
    if (!rb) continue;
    for (let j = 0; j < cs / 2; j++) {
      const v = d.readUInt16BE(rb + j * 2);
      if (v) refcounts[i * (cs / 2) + j] = v;
    }
  }
  // L1 tables: the active one and every snapshot's, with the L2 tables and data they reach.
  const tables: string[] = [];
  const reached = new Set<number>();
  const walkL1 = (l1Off: number, l1Size: number) => {
    tables.push(`L1 ${l1Off} ${l1Size} ${d.subarray(l1Off, l1Off + l1Size * 8).toString('hex')}`);
    for (let i = 0; i < l1Size; i++) {
      const l2 = off(d, l1Off + i * 8);
      if (!l2) continue;
      reached.add(l2 / cs);
      const t = cluster(l2 / cs);
      for (let j = 0; j < cs / 8; j++) {
        const e = t.readBigUInt64BE(j * 8);
        if (e & (1n << 62n)) continue; // compressed: the bytes live inside other clusters, compared by reached clusters' content via qemu-img compare
        const host = off(t, j * 8);
        if (host) reached.add(host / cs);
      }
    }
  };
  walkL1(Number(d.readBigUInt64BE(40)), d.readUInt32BE(36));
  const nb = d.readUInt32BE(60);
  let p = Number(d.readBigUInt64BE(64));
  const snapshots: string[] = [];
  for (let k = 0; k < nb; k++) {
    const e = Buffer.from(d.subarray(p, p + 40 + d.readUInt32BE(p + 36) + d.readUInt16BE(p + 12) + d.readUInt16BE(p + 14)));
    walkL1(off(e, 0), e.readUInt32BE(8));
    e.fill(0, 16, 24); // date_sec, date_nsec: the moment each tool ran
    snapshots.push(e.toString('hex'));
    p = Math.ceil((p + e.length) / 8) * 8;
  }
  const clusters = [...reached].sort((a, b) => a - b).map((c) => `${c}:${cluster(c).toString('hex')}`);
  return { header: d.subarray(0, 104).toString('hex'), snapshotsOffset: d.readBigUInt64BE(64), refcounts, tables, snapshots, clusters };
}

function runBoth(name: string, size: string, steps: Step[]): { q: string; b: string } {
  const q = f(`${name}-qemu.qcow2`);
  const b = f(`${name}-blocktab.qcow2`);
  qemuImg(['create', '-f', 'qcow2', q, size]);
  fs.copyFileSync(q, b);
  for (const st of steps) {
    if ('io' in st) {
      qemuIo(q, st.io, 'qcow2');
      qemuIo(b, st.io, 'qcow2');
      continue;
    }
    // '@' stands for the image (appended when absent).
    const args = (file: string) => (st.img.includes('@') ? st.img.map((a) => (a === '@' ? file : a)) : [...st.img, file]);
    const rq = qemuImgRun(args(q));
    const rb = blocktab(args(b));
    expect(rb.status, `blocktab ${st.img.join(' ')}: ${rb.stderr}`).toBe(rq.status);
    const a = layout(q);
    const z = layout(b);
    expect(z, `after ${st.img.join(' ')}`).toEqual(a);
  }
  const cq = qemuImgRun(['check', '--output=json', q]);
  const cb = qemuImgRun(['check', '--output=json', b]);
  const norm = (s: string) => ({ ...JSON.parse(s), filename: '' });
  expect(norm(cb.stdout)).toEqual(norm(cq.stdout));
  expect(qemuImg(['map', '--output=json', b])).toBe(qemuImg(['map', '--output=json', q]));
  expect(qemuImgRun(['compare', q, b]).status).toBe(0);
  return { q, b };
}

describe('qcow2 snapshot layout: blocktab and qemu-img on twins', () => {
  it('create, guest writes (L2 copy-on-write), create, apply, delete: same clusters, same order (iotest 217)', () => {
    const { b } = runBoth('seq', '8M', [
      { io: ['write -P 1 0 256k', 'write -c -P 7 2M 64k', 'write -z 4M 64k'] },
      { img: ['snapshot', '-c', 'one'] },
      { io: ['write -P 2 64k 128k', 'write -P 3 6M 512'] },
      { img: ['snapshot', '-c', 'two'] },
      { io: ['write -P 4 0 1M'] },
      { img: ['snapshot', '-a', 'one'] },
      { io: ['write -P 5 128k 64k'] },
      { img: ['snapshot', '-d', 'two'] },
      { img: ['snapshot', '-c', 'three'] },
      { img: ['snapshot', '-d', 'one'] },
    ]);
    expect(qemuImgRun(['check', b]).stdout).toContain('No errors were found');
  });

  it('apply of a snapshot taken at another disk size, then delete of the last snapshot (empty table)', () => {
    runBoth('resize', '4M', [
      { io: ['write -P 9 0 1M'] },
      { img: ['snapshot', '-c', 'base'] },
      { img: ['resize', '@', '+2M'] },
      { io: ['write -P 5 5M 64k'] },
      { img: ['snapshot', '-c', 'big'] },
      { img: ['snapshot', '-a', 'base'] },
      { img: ['snapshot', '-a', 'big'] },
      { img: ['snapshot', '-d', 'base'] },
      { img: ['snapshot', '-d', 'big'] },
    ]);
  });

  it('a failed create leaks what QEMU leaks (refcount_bits=1: the second reference does not fit, iotest 112)', () => {
    const q = f('rb1-qemu.qcow2');
    const b = f('rb1-blocktab.qcow2');
    qemuImg(['create', '-f', 'qcow2', '-o', 'refcount_bits=1', q, '64M']);
    fs.copyFileSync(q, b);
    qemuIo(q, ['write 0 512'], 'qcow2');
    qemuIo(b, ['write 0 512'], 'qcow2');
    const rq = qemuImgRun(['snapshot', '-c', 'foo', q]);
    const rb = blocktab(['snapshot', '-c', 'foo', b]);
    expect(rq.status).toBe(1);
    expect(rb.status).toBe(1);
    expect(rb.stderr).toContain("Could not create snapshot 'foo': -22 (Invalid argument)");
    const cq = qemuImgRun(['check', q]);
    const cb = qemuImgRun(['check', b]);
    expect(cb.stdout.replace(b, '')).toBe(cq.stdout.replace(q, ''));
    expect(cb.status).toBe(cq.status);
  });
});
