/**
 * Images blocktab creates and writes (vdi static and dynamic, vpc dynamic and
 * fixed with and without force_size, qed and qcow with and without a backing
 * file, parallels with two cluster sizes)
 * pass `qemu-img check` where qemu-img checks the format (vdi, qed, parallels) and
 * compare equal with `qemu-img compare` to a raw file holding the same
 * writes. Freshly created images get the same virtual size, cluster size and
 * map from qemu-img as the images qemu-img creates with the same options.
 */
import * as fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileStorage, openImage, closeNode, bdrvPwrite, bdrvPread, type BlockNode } from '../../src/node.js';
import { createVdi } from '../../src/formats/vdi/create.js';
import { createVpc } from '../../src/formats/vpc/create.js';
import { createQed } from '../../src/formats/qed/create.js';
import { createQcow } from '../../src/formats/qcow/create.js';
import { createParallels } from '../../src/formats/parallels/create.js';
import { blocktab, qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';
import { rng, seededBytes } from '../helpers/random.js';

const MiB = 1024 * 1024;
const storage = new FileStorage();

interface WriteCase {
  name: string;
  format: string;
  size: number;
  /** qemu-img create options that make the same kind of image. */
  qemuOpts: string[];
  create(file: BlockNode, size: number, dir: string): Promise<void>;
  /** Makes a backing file in `dir` and returns the guest's initial content (zeros otherwise). */
  backing?(dir: string, size: number): Uint8Array;
  /** qemu-img check supports the format. */
  checked: boolean;
}

const cases: WriteCase[] = [
  { name: 'vdi dynamic', format: 'vdi', size: 9 * MiB + 512, qemuOpts: [], create: (f, size) => createVdi(f, { size }), checked: true },
  { name: 'vdi static', format: 'vdi', size: 5 * MiB, qemuOpts: ['-o', 'static=on'], create: (f, size) => createVdi(f, { size, static: true }), checked: true },
  { name: 'vpc dynamic', format: 'vpc', size: 11 * MiB, qemuOpts: [], create: (f, size) => createVpc(f, { size }), checked: false },
  {
    name: 'vpc dynamic force_size',
    format: 'vpc',
    size: 11 * MiB + 512,
    qemuOpts: ['-o', 'force_size=on'],
    create: (f, size) => createVpc(f, { size, forceSize: true }),
    checked: false,
  },
  { name: 'vpc fixed', format: 'vpc', size: 7 * MiB, qemuOpts: ['-o', 'subformat=fixed'], create: (f, size) => createVpc(f, { size, subformat: 'fixed' }), checked: false },
  { name: 'qed', format: 'qed', size: 10 * MiB, qemuOpts: [], create: (f, size) => createQed(f, { size }), checked: true },
  {
    name: 'qed 4 KiB clusters',
    format: 'qed',
    size: 40 * MiB,
    qemuOpts: ['-o', 'cluster_size=4096,table_size=2'],
    create: (f, size) => createQed(f, { size, clusterSize: 4096, tableSize: 2 }),
    checked: true,
  },
  {
    name: 'qed over a raw backing file (copy-on-write of partial clusters)',
    format: 'qed',
    size: 6 * MiB,
    qemuOpts: ['-b', 'base.raw', '-F', 'raw'],
    create: (f, size) => createQed(f, { size, backingFile: 'base.raw', backingFmt: 'raw' }),
    backing: (dir, size) => {
      qemuImg(['create', '-q', '-f', 'raw', path.join(dir, 'base.raw'), String(size - MiB)]);
      qemuIo(path.join(dir, 'base.raw'), ['write -P 0x5b 0 3M'], 'raw');
      const b = new Uint8Array(size);
      b.fill(0x5b, 0, 3 * MiB);
      return b;
    },
    checked: true,
  },
  { name: 'qcow', format: 'qcow', size: 9 * MiB + 512, qemuOpts: [], create: (f, size) => createQcow(f, { size }), checked: false },
  {
    name: 'qcow over a raw backing file (512-byte clusters)',
    format: 'qcow',
    size: 6 * MiB,
    qemuOpts: ['-b', 'base.raw', '-F', 'raw'],
    create: (f, size) => createQcow(f, { size, backingFile: 'base.raw' }),
    backing: (dir, size) => {
      qemuImg(['create', '-q', '-f', 'raw', path.join(dir, 'base.raw'), String(size - MiB)]);
      qemuIo(path.join(dir, 'base.raw'), ['write -P 0x5c 0 3M'], 'raw');
      const b = new Uint8Array(size);
      b.fill(0x5c, 0, 3 * MiB);
      return b;
    },
    checked: false,
  },
  { name: 'parallels', format: 'parallels', size: 9 * MiB + 512, qemuOpts: [], create: (f, size) => createParallels(f, { size }), checked: true },
  {
    name: 'parallels 64 KiB clusters',
    format: 'parallels',
    size: 7 * MiB,
    qemuOpts: ['-o', 'cluster_size=64k'],
    create: (f, size) => createParallels(f, { size, clusterSize: 65536 }),
    checked: true,
  },
];

/** Writes at the start, across block and cluster boundaries, unaligned, rewrites, a large run and the last byte. */
function workload(size: number, seed: number): { offset: number; data: Uint8Array }[] {
  const r = rng(seed);
  const ops: { offset: number; length: number }[] = [
    { offset: 0, length: 4096 },
    { offset: 2 * MiB - 1000, length: 3000 },
    { offset: MiB + 17, length: 100 },
    { offset: 0, length: 512 },
    { offset: 3 * MiB, length: Math.min(2 * MiB + 4096, size - 3 * MiB) },
    { offset: size - 1, length: 1 },
  ];
  for (let i = 0; i < 12; i++) {
    const offset = Math.floor(r() * (size - 1));
    ops.push({ offset, length: Math.min(size - offset, 1 + Math.floor(r() * 70000)) });
  }
  return ops.map((o, i) => ({ offset: o.offset, data: seededBytes(o.length, seed * 100 + i + 1) }));
}

describe('images blocktab writes, checked by qemu-img', () => {
  for (const c of cases) {
    it(c.name, async () => {
      const dir = tmpDir('fmt-write-');
      const image = path.join(dir, `ours.${c.format}`);
      const ref = c.backing ? c.backing(dir, c.size) : new Uint8Array(c.size);

      await storage.createFile(image);
      const proto = await storage.openProtocol(image, { readOnly: false });
      await c.create(proto, c.size, dir);
      await closeNode(proto);

      // A fresh image looks to qemu-img like one qemu-img made with the same options.
      qemuImg(['create', '-q', '-f', c.format, ...c.qemuOpts, path.join(dir, `theirs.${c.format}`), String(c.size)], { cwd: dir });
      const info = (f: string) => {
        const j = JSON.parse(qemuImg(['info', '-f', c.format, '--output=json', f], { cwd: dir })) as Record<string, unknown>;
        return { size: j['virtual-size'], cluster: j['cluster-size'], backing: j['backing-filename'], fmt: j['backing-filename-format'] };
      };
      expect(info(`ours.${c.format}`)).toEqual(info(`theirs.${c.format}`));
      const map = (f: string) => qemuImg(['map', '-f', c.format, '--output=json', f], { cwd: dir }).replace(/"offset": \d+/g, '"offset": X');
      // A fixed VHD's map is the host file's allocation, and qemu-img allocates a new file's first 4 KiB.
      if (c.qemuOpts.join() !== '-o,subformat=fixed') expect(map(`ours.${c.format}`)).toBe(map(`theirs.${c.format}`));
      if (c.checked) expect(qemuImgRun(['check', '-f', c.format, image]).status).toBe(0);

      const bs = await openImage(storage, image, { format: c.format });
      const virtual = bs.totalBytes;
      try {
        for (const w of workload(Math.min(virtual, c.size), c.size % 9973)) {
          await bdrvPwrite(bs, w.offset, w.data.length, w.data);
          ref.set(w.data, w.offset);
        }
        // Read back through blocktab before closing.
        const back = new Uint8Array(c.size);
        await bdrvPread(bs, 0, c.size, back);
        expect(Buffer.from(back).equals(Buffer.from(ref))).toBe(true);
      } finally {
        await closeNode(bs);
      }
      const refFile = path.join(dir, 'ref.raw');
      const padded = new Uint8Array(virtual);
      padded.set(ref.subarray(0, Math.min(virtual, ref.length)));
      fs.writeFileSync(refFile, padded);

      if (c.checked) {
        const chk = qemuImgRun(['check', '-f', c.format, image]);
        expect(chk.stdout + chk.stderr).toContain('No errors were found on the image.');
        expect(chk.status).toBe(0);
      }
      const cmp = qemuImgRun(['compare', '-f', c.format, '-F', 'raw', image, refFile]);
      expect(cmp.stdout + cmp.stderr).toBe('Images are identical.\n');
      expect(cmp.status).toBe(0);
    });
  }
});

describe('create -f and convert -O through the CLI (the driver create hook)', () => {
  const targets: [string, string[]][] = [
    ['vdi', []],
    ['vdi', ['-o', 'static=on']],
    ['vpc', []],
    ['vpc', ['-o', 'subformat=fixed']],
    ['vpc', ['-o', 'force_size=on']],
    ['qed', []],
    ['qed', ['-o', 'cluster_size=4096,table_size=2']],
    ['qcow', []],
    ['parallels', []],
    ['parallels', ['-o', 'cluster_size=4k']],
  ];
  for (const [fmt, opts] of targets) {
    it(`${fmt} ${opts.join(' ')}`, () => {
      const dir = tmpDir('fmt-cli-');
      qemuImg(['create', '-q', '-f', 'qcow2', 'src.qcow2', '20M'], { cwd: dir });
      qemuIo('src.qcow2', ['write -P 0x21 0 3M', 'write -P 0x22 9M 100k', 'write -P 0x23 19M 1M'], 'qcow2', { cwd: dir });
      const conv = blocktab(['convert', '-O', fmt, ...opts, 'src.qcow2', `out.${fmt}`], { cwd: dir });
      expect(conv.stderr).toBe('');
      expect(conv.status).toBe(0);
      const cmp = qemuImgRun(['compare', '-f', 'qcow2', '-F', fmt, 'src.qcow2', `out.${fmt}`], { cwd: dir });
      expect(cmp.stdout).toMatch(/Images are identical\.\n$/);
      if (fmt !== 'vpc' && fmt !== 'qcow') expect(qemuImgRun(['check', '-f', fmt, `out.${fmt}`], { cwd: dir }).status).toBe(0);

      const ours = blocktab(['create', '-f', fmt, ...opts, 'ours', '10M'], { cwd: dir });
      const theirs = qemuImgRun(['create', '-f', fmt, ...opts, 'theirs', '10M'], { cwd: dir });
      expect(ours.stdout.replace("'ours'", "'X'")).toBe(theirs.stdout.replace("'theirs'", "'X'"));
      expect(ours.status).toBe(0);
      const size = (f: string) => (JSON.parse(qemuImg(['info', '-f', fmt, '--output=json', f], { cwd: dir })) as { 'virtual-size': number })['virtual-size'];
      expect(size('ours')).toBe(size('theirs'));
    });
  }
});

describe('qcow compressed writes (convert -c -O qcow), then writes into compressed clusters', () => {
  it('blocktab and qemu-io leave images qemu-img compares equal, and blocktab reads qemu-img-made ones byte-equal', () => {
    const dir = tmpDir('fmt-qcow-c-');
    qemuImg(['create', '-q', '-f', 'raw', 'src.raw', '3M'], { cwd: dir });
    qemuIo('src.raw', ['write -P 0x41 0 1M', 'write -P 0x42 1536k 4k', 'write -P 0 2M 64k', 'write -P 0x44 3068k 4k'], 'raw', { cwd: dir });
    const conv = blocktab(['convert', '-c', '-O', 'qcow', 'src.raw', 'ours.qcow'], { cwd: dir });
    expect(conv.stderr).toBe('');
    qemuImgRun(['convert', '-c', '-O', 'qcow', 'src.raw', 'theirs.qcow'], { cwd: dir });
    const compressed = (f: string) => (JSON.parse(qemuImg(['map', '--output=json', f], { cwd: dir })) as { data: boolean; offset?: number }[]).filter((e) => e.data && e.offset === undefined).length;
    expect(compressed('ours.qcow')).toBeGreaterThan(0);
    expect(compressed('ours.qcow')).toBe(compressed('theirs.qcow'));
    expect(qemuImgRun(['compare', '-f', 'qcow', '-F', 'raw', 'ours.qcow', 'src.raw'], { cwd: dir }).stdout).toBe('Images are identical.\n');
    // A sector into a compressed cluster: the rest of it must survive (decompressed into a new cluster).
    const writes = ['write -P 0x51 4608 512', 'write -P 0x52 1536k 512', 'write -P 0x53 2900k 8k'];
    expect(blocktab(['io', '-f', 'qcow', ...writes.flatMap((w) => ['-c', w]), 'ours.qcow'], { cwd: dir }).status).toBe(0);
    qemuIo('theirs.qcow', writes, 'qcow', { cwd: dir });
    expect(qemuImgRun(['compare', '-f', 'qcow', '-F', 'qcow', 'ours.qcow', 'theirs.qcow'], { cwd: dir }).stdout).toBe('Images are identical.\n');
    const read = (tool: 'ours' | 'theirs') => {
      const args = ['convert', '-f', 'qcow', '-O', 'raw', 'theirs.qcow', `${tool}.raw`];
      if (tool === 'ours') blocktab(args, { cwd: dir });
      else qemuImg(args, { cwd: dir });
      return fs.readFileSync(path.join(dir, `${tool}.raw`));
    };
    expect(read('ours').equals(read('theirs'))).toBe(true);
  });
});

describe('qcow legacy AES encryption', () => {
  it('an encrypted image blocktab creates and writes is byte-identical to the one qemu-img and qemu-io make, and reads back through QEMU', () => {
    const dir = tmpDir('fmt-qcow-aes-');
    const secret = ['--object', 'secret,id=sec0,data=astrochicken'];
    const opts = ['-o', 'encryption=on,encrypt.key-secret=sec0'];
    expect(blocktab(['create', ...secret, '-f', 'qcow', ...opts, 'ours.qcow', '4M'], { cwd: dir }).status).toBe(0);
    qemuImg(['create', '-q', ...secret, '-f', 'qcow', ...opts, 'theirs.qcow', '4M'], { cwd: dir });
    const writes = ['write -P 0xb 512 512', 'write -P 0xc 1M 70k', 'write -P 0xd 4190208 4096'];
    const spec = (f: string) => ['--image-opts', `driver=qcow,file.filename=${f},encrypt.key-secret=sec0`];
    expect(blocktab(['io', ...secret, ...writes.flatMap((w) => ['-c', w]), ...spec('ours.qcow')], { cwd: dir }).status).toBe(0);
    expect(qemuIoRun([...secret, ...writes.flatMap((w) => ['-c', w]), ...spec('theirs.qcow')], dir).status).toBe(0);
    expect(fs.readFileSync(path.join(dir, 'ours.qcow')).equals(fs.readFileSync(path.join(dir, 'theirs.qcow')))).toBe(true);
    const check = qemuIoRun([...secret, '-c', 'read -P 0 0 512', '-c', 'read -P 0xb 512 512', '-c', 'read -P 0xc 1M 70k', ...spec('ours.qcow')], dir);
    expect(check.status).toBe(0);
    expect(check.out).not.toMatch(/Pattern verification failed/);
  });
});

/** qemu-io with arguments of its own (--object, --image-opts), which the qemuIo helper does not take. */
function qemuIoRun(args: string[], cwd: string): { status: number | null; out: string } {
  const r = spawnSync('qemu-io', args, { cwd, encoding: 'utf8' });
  return { status: r.status, out: r.stdout + r.stderr };
}
