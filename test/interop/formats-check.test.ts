/**
 * `check` on vdi, qed, parallels, vhdx and vmdk images agrees with qemu-img
 * check: JSON, human output, the format's messages on stderr and the exit
 * code — on clean images and on images patched to hold the corruptions and
 * leaks each format's check finds; with `-r leaks` and `-r all` the repaired
 * files are byte for byte the files qemu-img leaves.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { blocktab, qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';
import { sampleCases } from '../helpers/sample.js';

function poke(d: string, name: string, offset: number, value: bigint, bytes: 4 | 8): void {
  const b = Buffer.alloc(bytes);
  if (bytes === 4) b.writeUInt32LE(Number(value));
  else b.writeBigUInt64LE(value);
  const fd = fs.openSync(path.join(d, name), 'r+');
  fs.writeSync(fd, b, 0, bytes, offset);
  fs.closeSync(fd);
}
function peek64(d: string, name: string, offset: number): bigint {
  const b = Buffer.alloc(8);
  const fd = fs.openSync(path.join(d, name), 'r');
  fs.readSync(fd, b, 0, 8, offset);
  fs.closeSync(fd);
  return b.readBigUInt64LE();
}

const io = (d: string, f: string, fmt: string, cmds: string[]) => qemuIo(f, cmds, fmt, { cwd: d });
const vdi = (d: string, opts: string[] = []) => {
  qemuImg(['create', '-q', '-f', 'vdi', ...opts, 'a.vdi', '10M'], { cwd: d });
  io(d, 'a.vdi', 'vdi', ['write -P 1 0 4k', 'write -P 2 3M 4k', 'write -P 3 5M 1M']);
  return 'a.vdi';
};
const qed = (d: string) => {
  qemuImg(['create', '-q', '-f', 'qed', '-o', 'cluster_size=4096,table_size=2', 'a.qed', '30M'], { cwd: d });
  io(d, 'a.qed', 'qed', ['write -P 1 0 12k', 'write -P 2 9M 8k', 'write -z 20M 4k']);
  return 'a.qed';
};
/** Offset of the L2 entry for guest cluster `k` of the first L2 table (qed, 4 KiB clusters). */
const qedL2 = (d: string, k: number) => Number(peek64(d, 'a.qed', 4096)) + k * 8;

const cases: { name: string; make(d: string): string }[] = [
  { name: 'vdi dynamic, clean', make: (d) => vdi(d) },
  { name: 'vdi static, clean', make: (d) => vdi(d, ['-o', 'static=on']) },
  { name: 'vdi: one block used twice', make: (d) => { const n = vdi(d); poke(d, n, 512 + 3 * 4, 0n, 4); return n; } },
  { name: 'vdi: block index too large', make: (d) => { const n = vdi(d); poke(d, n, 512 + 3 * 4, 99n, 4); return n; } },
  { name: 'vdi: blocks_allocated mismatch', make: (d) => { const n = vdi(d); poke(d, n, 388, 7n, 4); return n; } },
  { name: 'qed, clean', make: (d) => qed(d) },
  {
    name: 'qed with a backing file, clean',
    make: (d) => {
      qemuImg(['create', '-q', '-f', 'raw', 'b.raw', '1M'], { cwd: d });
      qemuImg(['create', '-q', '-f', 'qed', '-b', 'b.raw', '-F', 'raw', 'a.qed', '1M'], { cwd: d });
      io(d, 'a.qed', 'qed', ['write -P 7 1000 100']);
      return 'a.qed';
    },
  },
  { name: 'qed: leaked clusters at the end of the file', make: (d) => { const n = qed(d); fs.truncateSync(path.join(d, n), fs.statSync(path.join(d, n)).size + 3 * 4096); return n; } },
  { name: 'qed: data cluster offset past the end of the file', make: (d) => { const n = qed(d); poke(d, n, qedL2(d, 1), 0x40000000n, 8); return n; } },
  { name: 'qed: one cluster referenced twice', make: (d) => { const n = qed(d); poke(d, n, qedL2(d, 2), peek64(d, n, qedL2(d, 0)), 8); return n; } },
  { name: 'qed: L2 table offset past the end of the file', make: (d) => { const n = qed(d); poke(d, n, 4096 + 8, 0x40000000n, 8); return n; } },
  ...(['1M', '64k'] as const).map((cluster) => ({
    name: `parallels ${cluster} clusters, clean`,
    make: (d: string) => {
      qemuImg(['create', '-q', '-f', 'parallels', '-o', `cluster_size=${cluster}`, 'a.hdd', '8M'], { cwd: d });
      io(d, 'a.hdd', 'parallels', ['write -P 1 0 4k', 'write -P 2 5M 4k', 'write -P 3 1M 4k']);
      return 'a.hdd';
    },
  })),
  {
    name: 'parallels: cluster outside the image',
    make: (d) => {
      qemuImg(['create', '-q', '-f', 'parallels', '-o', 'cluster_size=64k', 'a.hdd', '8M'], { cwd: d });
      io(d, 'a.hdd', 'parallels', ['write -P 1 0 4k', 'write -P 2 5M 4k']);
      poke(d, 'a.hdd', 64 + 4 * 3, 0x100000n, 4);
      fs.truncateSync(path.join(d, 'a.hdd'), fs.statSync(path.join(d, 'a.hdd')).size + 100000);
      return 'a.hdd';
    },
  },
  {
    name: 'parallels: space leaked at the end',
    make: (d) => {
      qemuImg(['create', '-q', '-f', 'parallels', '-o', 'cluster_size=64k', 'a.hdd', '8M'], { cwd: d });
      io(d, 'a.hdd', 'parallels', ['write -P 1 0 4k', 'write -P 2 5M 4k']);
      fs.truncateSync(path.join(d, 'a.hdd'), fs.statSync(path.join(d, 'a.hdd')).size + 100000);
      return 'a.hdd';
    },
  },
  { name: 'qed: not closed cleanly, leaked clusters', make: (d) => { const n = qed(d); poke(d, n, 16, 2n, 8); fs.truncateSync(path.join(d, n), fs.statSync(path.join(d, n)).size + 2 * 4096); return n; } },
  { name: 'qed: not closed cleanly, bad data cluster', make: (d) => { const n = qed(d); poke(d, n, 16, 2n, 8); poke(d, n, qedL2(d, 1), 0x40000000n, 8); return n; } },
  {
    name: 'parallels: not closed cleanly, a cluster outside the image and a leak',
    make: (d) => {
      qemuImg(['create', '-q', '-f', 'parallels', '-o', 'cluster_size=64k', 'a.hdd', '8M'], { cwd: d });
      io(d, 'a.hdd', 'parallels', ['write -P 1 0 128k', 'write -P 2 5M 4k']);
      poke(d, 'a.hdd', 64 + 4 * 80, 0x100n, 4);
      poke(d, 'a.hdd', 44, 0x746f6e59n, 4);
      fs.truncateSync(path.join(d, 'a.hdd'), fs.statSync(path.join(d, 'a.hdd')).size + 70000);
      return 'a.hdd';
    },
  },
  { name: 'vhdx, clean', make: (d) => { qemuImg(['create', '-q', '-f', 'vhdx', 'a.vhdx', '8M'], { cwd: d }); io(d, 'a.vhdx', 'vhdx', ['write -P 1 0 4k']); return 'a.vhdx'; } },
  { name: 'vmdk, clean', make: (d) => { qemuImg(['create', '-q', '-f', 'vmdk', 'a.vmdk', '8M'], { cwd: d }); io(d, 'a.vmdk', 'vmdk', ['write -P 1 0 4k']); return 'a.vmdk'; } },
  {
    name: 'parallels: not closed cleanly',
    make: (d) => {
      qemuImg(['create', '-q', '-f', 'parallels', 'a.hdd', '4M'], { cwd: d });
      poke(d, 'a.hdd', 44, 0x746f6e59n, 4);
      return 'a.hdd';
    },
  },
];

/** The same check run by both tools on copies of one image (each in its own directory, same names). */
function both(dir: string, args: string[], image: string) {
  const ours = path.join(dir, 'ours');
  const theirs = path.join(dir, 'theirs');
  for (const d of [ours, theirs]) {
    fs.rmSync(d, { recursive: true, force: true });
    fs.mkdirSync(d);
    for (const f of fs.readdirSync(dir)) if (fs.statSync(path.join(dir, f)).isFile()) fs.copyFileSync(path.join(dir, f), path.join(d, f));
  }
  const a = blocktab(['check', ...args, image], { cwd: ours });
  const b = qemuImgRun(['check', ...args, image], { cwd: theirs });
  return { a, b, ourFile: head(path.join(ours, image)), theirFile: head(path.join(theirs, image)) };
}

/** The file's size and its first 16 MiB (a parallels repair may leave a sparse file of many GiB, as QEMU does). */
function head(file: string): Buffer {
  const size = fs.statSync(file).size;
  const b = Buffer.alloc(Math.min(size, 16 << 20));
  const fd = fs.openSync(file, 'r');
  fs.readSync(fd, b, 0, b.length, 0);
  fs.closeSync(fd);
  return Buffer.concat([Buffer.from(`${size}\n`), b]);
}

// The cases that combine every repair of their format always run; a seeded sample of the others.
const repairSample = new Set([
  ...cases.filter((c) => c.name.includes('not closed cleanly,')),
  ...sampleCases('check-repair', cases.filter((c) => !c.name.endsWith('clean') && !c.name.includes('not closed cleanly,')), 0.4, 3),
]);

describe('check on vdi, qed, parallels, vhdx and vmdk agrees with qemu-img check', () => {
  for (const c of cases) {
    it(c.name, () => {
      const dir = tmpDir('fmt-check-');
      const image = c.make(dir);
      // Repairs on a seeded sample of the images that need one (human output for -r leaks, both for -r all).
      const runs = [[[], ['--output=json']], [[], []]];
      if (repairSample.has(c)) runs.push([['-r', 'leaks'], []], [['-r', 'all'], ['--output=json']], [['-r', 'all'], []]);
      for (const [repair, out] of runs as string[][][]) {
        {
          const { a: ours, b: theirs, ourFile, theirFile } = both(dir, [...repair, ...out], image);
          const what = `${repair.join(' ')} ${out.join(' ')}`;
          expect(ours.stdout, what).toBe(theirs.stdout);
          expect(ours.stderr.replace(/^blocktab: /gm, ''), what).toBe(theirs.stderr.replace(/^qemu-img: /gm, ''));
          expect(ours.status, what).toBe(theirs.status);
          // Repairs leave the same bytes (vhdx writes a new random header GUID on a read/write open).
          if (!image.endsWith('.vhdx')) expect(Buffer.compare(ourFile, theirFile), `${what}: the repaired file differs`).toBe(0);
        }
      }
    });
  }
});

describe('qed: a read/write open repairs an image that was not closed cleanly, as QEMU', () => {
  it('clears the bad entry and QED_F_NEED_CHECK, then writes', () => {
    const dir = tmpDir('fmt-check-');
    const image = qed(dir);
    poke(dir, image, 16, 2n, 8);
    poke(dir, image, qedL2(dir, 1), 0x40000000n, 8);
    const cmds = ['read -P 0 4k 4k', 'write -P 5 25M 64k'];
    const ours = path.join(dir, 'ours.qed');
    const theirs = path.join(dir, 'theirs.qed');
    fs.copyFileSync(path.join(dir, image), ours);
    fs.copyFileSync(path.join(dir, image), theirs);
    blocktab(['io', ...cmds.flatMap((c) => ['-c', c]), ours]);
    qemuIo(theirs, cmds, 'qed');
    expect(peek64(dir, 'ours.qed', 16)).toBe(0n);
    expect(Buffer.compare(fs.readFileSync(ours), fs.readFileSync(theirs))).toBe(0);
  });
});
