/**
 * Block status across a backing chain, end to end: base (empty) ← mid (holds
 * the data) ← top (empty), made with qemu-img/qemu-io, cluster sizes that
 * differ between layers, data that starts part-way into the top's first
 * status answer. The walks that convert, map and compare do over such a chain
 * must advance by what each answer covers, so:
 *   - `convert -O raw` of the top gives qemu-img's bytes (the mid's data);
 *   - `map --output=json` is qemu-img's, byte for byte;
 *   - `compare` against a source that differs in one sector inside the mid's
 *     data reports that sector (exit 1, qemu-img's message), both ways round;
 *     against an equal source it exits 0.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { blocktab, qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';

interface ChainCase {
  name: string;
  /** Cluster sizes (and extra -o) of base, mid, top. */
  base: string;
  mid: string;
  top: string;
  size: string;
  /** qemu-io commands on the mid. */
  midCmds: string[];
  /** Where to flip one byte of the source: inside the mid's data. */
  flipAt: number;
}

const KiB = 1024;
const MiB = 1024 * KiB;

const cases: ChainCase[] = [
  {
    name: 'small top clusters, large mid clusters, data from 40 KiB',
    base: 'cluster_size=4096',
    mid: 'cluster_size=65536',
    top: 'cluster_size=512',
    size: '4M',
    midCmds: ['write -P 0x11 40k 8k', 'write -P 0x22 1M 100k', 'write -z 2M 64k', 'write -P 0x33 3M 1k'],
    flipAt: 1 * MiB + 50 * KiB + 3,
  },
  {
    name: 'large top clusters, small mid clusters, unaligned data runs',
    base: 'cluster_size=65536',
    mid: 'cluster_size=512',
    top: 'cluster_size=2097152',
    size: '5M',
    midCmds: ['write -P 0x44 1536 2560', 'write -P 0x55 2100k 3k', 'write -z 2101k 512', 'write -P 0x66 4M 1M'],
    flipAt: 2100 * KiB + 700,
  },
  {
    name: 'data starting deep inside the top\'s first answer (one L2 table spans it)',
    base: 'cluster_size=2097152',
    mid: 'cluster_size=4096',
    top: 'cluster_size=65536',
    size: '64M',
    midCmds: ['write -P 0x77 33M 4k', 'write -P 0x78 40M 2M', 'write -z 41M 8k', 'write -P 0x79 63M 512'],
    flipAt: 40 * MiB + 1234,
  },
  {
    name: 'extended L2 in the mid (subclusters), 512-byte top',
    base: 'cluster_size=512',
    mid: 'cluster_size=65536,extended_l2=on',
    top: 'cluster_size=512',
    size: '3M',
    midCmds: ['write -P 0x81 70k 2k', 'write -P 0x82 75k 4k', 'write -z 66k 2k', 'write -P 0x83 2M 300k'],
    flipAt: 76 * KiB + 17,
  },
  {
    name: 'size not a multiple of any cluster, data up to the end',
    base: 'cluster_size=4096',
    mid: 'cluster_size=65536',
    top: 'cluster_size=4096',
    size: '3146752', // 3 MiB + 1 KiB
    midCmds: ['write -P 0x91 3145728 1024', 'write -P 0x92 100k 1k'],
    flipAt: 3145728 + 600,
  },
];

function makeChain(c: ChainCase): { dir: string; top: string; mid: string } {
  const dir = tmpDir('chain-status-');
  const p = (s: string) => path.join(dir, s);
  qemuImg(['create', '-q', '-f', 'qcow2', '-o', c.base, p('base.qcow2'), c.size]);
  qemuImg(['create', '-q', '-f', 'qcow2', '-o', c.mid, '-b', 'base.qcow2', '-F', 'qcow2', p('mid.qcow2'), c.size], { cwd: dir });
  qemuIo(p('mid.qcow2'), c.midCmds, 'qcow2');
  qemuImg(['create', '-q', '-f', 'qcow2', '-o', c.top, '-b', 'mid.qcow2', '-F', 'qcow2', p('top.qcow2'), c.size], { cwd: dir });
  // Settle the files' allocated size first: qcow2's metadata-preallocation guess (QEMU's and ours)
  // reads st_blocks, which delayed allocation can change between qemu-img's map and ours.
  for (const f of ['base.qcow2', 'mid.qcow2', 'top.qcow2']) {
    const fd = fs.openSync(p(f), 'r+');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  }
  return { dir, top: p('top.qcow2'), mid: p('mid.qcow2') };
}

describe('block status across base (empty) ← mid (data) ← top (empty)', () => {
  for (const c of cases) {
    it(c.name, () => {
      const { dir, top, mid } = makeChain(c);
      const p = (s: string) => path.join(dir, s);

      // convert -O raw: qemu-img's bytes, which are the mid's data.
      qemuImg(['convert', '-O', 'raw', top, p('qemu.raw')]);
      qemuImg(['convert', '-O', 'raw', mid, p('mid.raw')]);
      const ours = blocktab(['convert', '-O', 'raw', top, p('ours.raw')]);
      expect(ours.stderr).toBe('');
      expect(ours.status).toBe(0);
      const expected = fs.readFileSync(p('qemu.raw'));
      expect(expected.equals(fs.readFileSync(p('mid.raw')))).toBe(true);
      expect(expected.some((b) => b !== 0)).toBe(true);
      expect(fs.readFileSync(p('ours.raw')).equals(expected)).toBe(true);

      // map --output=json, byte for byte.
      let qm = qemuImg(['map', '--output=json', top]);
      const bm = blocktab(['map', '--output=json', top]);
      if (bm.stdout !== qm) {
        // qemu-img's answer for freshly written files can change once (its metadata-preallocation guess
        // and SEEK_HOLE see the file system settle); only when the oracle itself changed its mind do we
        // take its later answer.
        const again = qemuImg(['map', '--output=json', top]);
        if (again !== qm) qm = again;
      }
      expect(bm.status).toBe(0);
      expect(bm.stdout).toBe(qm);
      expect(JSON.parse(qm).some((e: { depth: number; data: boolean }) => e.depth === 1 && e.data)).toBe(true);

      // compare: equal exits 0; one flipped byte inside the mid's data is found, both ways round.
      for (const [a, b] of [
        [top, p('qemu.raw')],
        [p('qemu.raw'), top],
      ] as const) {
        const q = qemuImgRun(['compare', a, b]);
        const r = blocktab(['compare', a, b]);
        expect(q.status).toBe(0);
        expect({ status: r.status, stdout: r.stdout }).toEqual({ status: q.status, stdout: q.stdout });
      }
      const src = Buffer.from(expected);
      src[c.flipAt] ^= 0x5a;
      fs.writeFileSync(p('src.raw'), src);
      for (const [a, b] of [
        [top, p('src.raw')],
        [p('src.raw'), top],
      ] as const) {
        const q = qemuImgRun(['compare', a, b]);
        const r = blocktab(['compare', a, b]);
        expect(q.status).toBe(1);
        expect(q.stdout).toBe(`Content mismatch at offset ${c.flipAt - (c.flipAt % 512)}!\n`);
        expect({ status: r.status, stdout: r.stdout }).toEqual({ status: q.status, stdout: q.stdout });
      }
    });
  }
});
