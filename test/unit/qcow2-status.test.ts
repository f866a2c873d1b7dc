import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  BDRV_BLOCK_ALLOCATED,
  BDRV_BLOCK_COMPRESSED,
  BDRV_BLOCK_DATA,
  BDRV_BLOCK_OFFSET_VALID,
  BDRV_BLOCK_ZERO,
  FileStorage,
  blockStatus,
  blockStatusAbove,
  isAllocatedAbove,
  closeNode,
  openImage,
  type BlockNode,
} from '../../src/node.js';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu.js';

const dir = tmpDir('qcow2-status-');
const st = new FileStorage();

interface MapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

/** A minimal generic extent walk merged as qemu-img map merges (the CLI owns the real command). */
async function walk(top: BlockNode): Promise<MapEntry[]> {
  const out: MapEntry[] = [];
  for (let o = 0; o < top.totalBytes; ) {
    // qemu-img map's own loop (get_block_status): descend while a layer says neither DATA nor ZERO.
    // Unlike blockStatusAbove it stops at a layer whose backing is shorter (ZERO there, not allocated).
    let a = { ...(await blockStatus(top, true, o, top.totalBytes - o)), depth: 0 };
    for (let p = top.cowNode(); !(a.status & (BDRV_BLOCK_DATA | BDRV_BLOCK_ZERO)) && p; p = p.cowNode()) {
      a = { ...(await blockStatus(p, true, o, a.pnum)), depth: a.depth + 1 };
    }
    const e: MapEntry = {
      start: o,
      length: a.pnum,
      depth: a.depth,
      present: (a.status & BDRV_BLOCK_ALLOCATED) !== 0,
      zero: (a.status & BDRV_BLOCK_ZERO) !== 0,
      data: (a.status & BDRV_BLOCK_DATA) !== 0,
    };
    if (a.status & BDRV_BLOCK_OFFSET_VALID && a.map !== undefined) e.offset = a.map;
    const last = out.at(-1);
    if (
      last &&
      last.depth === e.depth &&
      last.present === e.present &&
      last.zero === e.zero &&
      last.data === e.data &&
      (last.offset === undefined) === (e.offset === undefined) &&
      (e.offset === undefined || last.offset! + last.length === e.offset)
    ) {
      last.length += e.length;
    } else {
      out.push(e);
    }
    o += a.pnum;
  }
  return out;
}

async function expectMapLikeQemu(file: string): Promise<void> {
  const expected = JSON.parse(qemuImg(['map', '--output=json', file], { cwd: dir })) as MapEntry[];
  const bs = await openImage(st, file, { readOnly: true });
  try {
    expect(JSON.stringify(await walk(bs), null, 0).replaceAll("},", "},\n")).toEqual(JSON.stringify(expected, null, 0).replaceAll("},", "},\n"));
  } finally {
    await closeNode(bs);
  }
}

describe('qcow2 block status vs qemu-img map', () => {
  it('data, zero (plain and allocated), compressed and unallocated clusters', async () => {
    const f = path.join(dir, 'mix.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', f, '8M']);
    qemuIo(f, ['write -c 0 64k', 'write -z 128k 64k', 'write 256k 1M', 'write 2M 64k', 'write -z -u 2M 64k', 'write 3M 4k'], 'qcow2');
    await expectMapLikeQemu(f);
    const bs = await openImage(st, f, { readOnly: true });
    const c = await blockStatus(bs, true, 0, 65536);
    expect(c.status & BDRV_BLOCK_COMPRESSED).toBeTruthy();
    await closeNode(bs);
  });

  it('extended L2 subclusters and a 3-deep chain with different cluster sizes', async () => {
    const base = path.join(dir, 'b.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', base, '6M']);
    qemuIo(base, ['write 0 1M', 'write -z 1M 8k'], 'qcow2');
    const mid = path.join(dir, 'm.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on', '-b', 'b.qcow2', '-F', 'qcow2', mid, '4M'], { cwd: dir });
    qemuIo(mid, ['write 4k 2k', 'write -z 64k 8k', 'write 200k 100k'], 'qcow2');
    const top = path.join(dir, 't.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', '-b', 'm.qcow2', '-F', 'qcow2', top, '8M'], { cwd: dir });
    qemuIo(top, ['write 512 512', 'write 5M 4k'], 'qcow2');
    await expectMapLikeQemu(mid);
    await expectMapLikeQemu(top);
    // The generic chain walk agrees with qemu-io's view of allocation in the top layer.
    const bs = await openImage(st, top, { readOnly: true });
    const a = await blockStatusAbove(bs, null, true, 512, 512);
    expect(a.depth).toBe(0);
    expect((await isAllocatedAbove(bs, null, false, 204800, 4096)).depth).toBe(1);
    await closeNode(bs);
  });

  it('metadata-preallocated image: RECURSE finds the file holes (one answer per contiguous run)', async () => {
    const f = path.join(dir, 'prealloc.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', f, '1T']);
    qemuIo(f, ['write -P 1 1M 64k'], 'qcow2');
    // How fast this is lives in bench/convert-map.bench.mjs (map of a 1 TiB preallocation=metadata image);
    // the timeout only guards against a hang, generously, since a loaded shared machine runs this 10x slower.
    await expectMapLikeQemu(f);
  }, 300_000);
});

describe('qcow2 info and snapshots vs qemu-img', () => {
  it('format-specific info matches qemu-img info --output=json', async () => {
    const cases: string[][] = [
      [],
      ['-o', 'compat=0.10'],
      ['-o', 'compression_type=zstd,extended_l2=on,lazy_refcounts=on,refcount_bits=1'],
      ['-o', 'data_file=inf.data,data_file_raw=on'],
    ];
    for (const [i, opts] of cases.entries()) {
      const f = path.join(dir, `info${i}.qcow2`);
      qemuImg(['create', '-q', '-f', 'qcow2', ...opts, f, '64M'], { cwd: dir });
      if (i === 2) qemuImg(['bitmap', '--add', f, 'b0'], { cwd: dir });
      if (i === 2) qemuImg(['bitmap', '--add', '-g', '1M', '--disable', f, 'b1'], { cwd: dir });
      const q = JSON.parse(qemuImg(['info', '--output=json', f], { cwd: dir }));
      const bs = await openImage(st, f, { readOnly: true });
      const info = bs.driver.getInfo!(bs)!;
      expect(JSON.stringify(info)).toBe(JSON.stringify(q['format-specific']));
      expect(bs.driver.getDriverInfo!(bs).clusterSize).toBe(q['cluster-size']);
      expect(bs.driver.getDriverInfo!(bs).isDirty).toBe(q['dirty-flag']);
      await closeNode(bs);
    }
  });

  it('internal snapshots listed with the fields qemu-img shows', async () => {
    const f = path.join(dir, 'snap.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', f, '16M']);
    qemuIo(f, ['write -P 1 0 64k'], 'qcow2');
    qemuImg(['snapshot', '-c', 'first', f]);
    qemuIo(f, ['write -P 2 0 64k'], 'qcow2');
    qemuImg(['snapshot', '-c', 'second snapshot', f]);
    qemuImg(['resize', f, '32M']);
    const q = JSON.parse(qemuImg(['info', '--output=json', f]));
    const bs = await openImage(st, f, { readOnly: true });
    const list = bs.driver.listSnapshots!(bs);
    expect(list.map((s) => ({
      id: s.id,
      name: s.name,
      'vm-state-size': s.vmStateSize,
      'date-sec': s.dateSec,
      'date-nsec': s.dateNsec,
      'vm-clock-sec': Math.floor(s.vmClockNsec / 1e9),
      'vm-clock-nsec': s.vmClockNsec % 1e9,
      icount: s.icount,
    }))).toEqual(q.snapshots.map((s: Record<string, unknown>) => ({ ...s })));
    expect(list.map((s) => s.diskSize)).toEqual([16 << 20, 16 << 20]);
    await closeNode(bs);
    expect(fs.existsSync(f)).toBe(true);
  });
});
