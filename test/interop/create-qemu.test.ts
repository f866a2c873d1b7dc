/**
 * blocktab create vs qemu-img create on twins: the same "Formatting" line
 * and error text, a clean `qemu-img check` of our image, equal
 * `qemu-img info --output=json`, and byte-identical files where we replay
 * QEMU's layout (which is every case below marked `identical`).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { blocktab, qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';
import { main } from '../../src/cli/main.js';

const dir = tmpDir('create-qemu-');

/** Runs our CLI in-process (no build needed) and collects its output. */
export async function bt(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const status = await main(args, { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s) });
  return { status, stdout, stderr };
}

function info(file: string): Record<string, unknown> {
  // QEMU opens a relative data file name from its working directory: run it beside the image.
  const j = JSON.parse(qemuImg(['info', '--output=json', file], { cwd: path.dirname(file) })) as Record<string, unknown>;
  delete j['filename'];
  delete j['actual-size'];
  return j;
}

/** Byte equality of two (possibly large, sparse) files, with cmp(1). */
function sameBytes(a: string, b: string): boolean {
  return spawnSync('cmp', ['-s', a, b]).status === 0;
}

fs.mkdirSync(path.join(dir, 'o'));
fs.mkdirSync(path.join(dir, 't'));
let n = 0;
/**
 * Creates twins with the same names in two directories (dir/o ours, dir/t
 * qemu-img's), each tool run in its directory so relative data file names land beside the image.
 */
async function twins(args: string[], size?: string) {
  const id = ++n;
  const ours = path.join(dir, 'o', `img${id}`);
  const theirs = path.join(dir, 't', `img${id}`);
  const a = args.map((x) => x.replace('{id}', String(id)));
  // A relative data file name is made from the working directory (as qemu-img): run the built CLI there.
  const argv = ['create', ...a, ours, ...(size ? [size] : [])];
  const o = a.some((x) => x.includes('data_file')) ? blocktab(argv, { cwd: path.join(dir, 'o') }) : await bt(argv);
  const t = qemuImgRun(['create', ...a, theirs, ...(size ? [size] : [])], { cwd: path.join(dir, 't') });
  return { ours, theirs, o, t };
}

const grid: Array<{ args: string[]; size?: string; identical: boolean }> = [
  { args: ['-f', 'qcow2'], size: '1M', identical: true },
  { args: ['-f', 'qcow2'], size: '0', identical: true },
  { args: ['-f', 'qcow2'], size: '100T', identical: true },
  { args: ['-f', 'qcow2', '-o', 'compat=0.10'], size: '3M', identical: true },
  { args: ['-f', 'qcow2', '-o', 'compat=v3,lazy_refcounts=on'], size: '1G', identical: true },
  { args: ['-f', 'qcow2', '-o', 'cluster_size=512'], size: '64M', identical: true },
  { args: ['-f', 'qcow2', '-o', 'cluster_size=2M,refcount_bits=64'], size: '10G', identical: true },
  { args: ['-f', 'qcow2', '-o', 'refcount_bits=1'], size: '1M', identical: true },
  { args: ['-f', 'qcow2', '-o', 'extended_l2=on,compression_type=zstd'], size: '5M', identical: true },
  { args: ['-f', 'qcow2', '-o', 'preallocation=metadata,cluster_size=4k'], size: '200M', identical: true },
  { args: ['-f', 'qcow2', '-o', 'preallocation=metadata,cluster_size=512'], size: '1M', identical: true },
  { args: ['-f', 'qcow2', '-o', 'preallocation=metadata,refcount_bits=64,cluster_size=512'], size: '4M', identical: false },
  { args: ['-f', 'qcow2', '-o', 'preallocation=metadata'], size: '1000', identical: true },
  { args: ['-f', 'qcow2', '-o', 'preallocation=falloc'], size: '100M', identical: true },
  { args: ['-f', 'qcow2', '-o', 'preallocation=full,cluster_size=4k'], size: '3M', identical: true },
  { args: ['-f', 'qcow2', '-o', 'extended_l2=on,preallocation=falloc'], size: '3M', identical: true },
  { args: ['-f', 'qcow2', '-o', 'data_file=img{id}.raw,data_file_raw=on,cluster_size=32k,refcount_bits=8'], size: '2M', identical: true },
  { args: ['-f', 'qcow2', '-o', 'data_file=img{id}.raw,preallocation=full'], size: '2M', identical: true },
  { args: ['-f', 'raw'], size: '1000', identical: true },
  { args: ['-f', 'raw', '-o', 'preallocation=full'], size: '1M', identical: true },
];

describe('create: a grid of options against qemu-img', () => {
  for (const g of grid) {
    it(`${g.args.join(' ')} ${g.size ?? ''}`, async () => {
      const { ours, theirs, o, t } = await twins(g.args, g.size);
      expect(t.status).toBe(0);
      expect(o.stderr).toBe('');
      expect(o.status).toBe(0);
      expect(o.stdout.replace('/o/', '/t/')).toBe(t.stdout);
      const fmt = g.args[1]!;
      if (fmt === 'qcow2') {
        const chk = qemuImgRun(['check', ours], { cwd: path.dirname(ours) });
        expect(chk.stderr).toBe('');
        expect(chk.status).toBe(0);
      }
      expect(info(ours)).toEqual(info(theirs));
      if (g.identical) expect(sameBytes(ours, theirs)).toBe(true);
      if (g.args.some((x) => x.includes('data_file'))) {
        expect(sameBytes(`${ours}.raw`, `${theirs}.raw`)).toBe(true);
      }
    });
  }

  it('takes the size from a backing file and stores the names as given', async () => {
    const base = path.join(dir, 'base.qcow2');
    qemuImg(['create', '-f', 'qcow2', base, '5M']);
    const { ours, theirs, o, t } = await twins(['-f', 'qcow2', '-b', base, '-F', 'qcow2']);
    expect(o.status).toBe(t.status);
    expect(o.stdout.replace('/o/', '/t/')).toBe(t.stdout);
    expect(info(ours)).toEqual(info(theirs));
    expect(sameBytes(ours, theirs)).toBe(true);
  });

  // falloc allocates the area without writing it (fallocate), as QEMU's posix_fallocate: on a file system
  // that reports such blocks as holes (ext4's SEEK_DATA), qemu-img map shows them as zeros, the first
  // block of a raw file (written, as QEMU does) as data. Writing zeros instead mapped it all as data.
  for (const args of [['-f', 'raw', '-o', 'preallocation=falloc'], ['-f', 'qcow2', '-o', 'preallocation=falloc,cluster_size=4k']]) {
    it(`${args.join(' ')}: qemu-img map of our image equals that of its own`, async () => {
      const { ours, theirs, o, t } = await twins(args, '4M');
      expect([o.status, t.status]).toEqual([0, 0]);
      const map = (f: string) => qemuImg(['map', '--output=json', '-f', args[1]!, f]);
      expect(map(ours)).toBe(map(theirs));
      expect(sameBytes(ours, theirs)).toBe(true);
      expect(fs.statSync(ours).blocks).toBe(fs.statSync(theirs).blocks);
    });
  }

  it('-o help lists what qemu-img lists', async () => {
    for (const f of ['qcow2', 'raw']) {
      for (const file of [[], [path.join(dir, 'help.img')]]) {
        const o = await bt(['create', '-f', f, '-o', 'help', ...file]);
        const t = qemuImgRun(['create', '-f', f, '-o', 'help', ...file]);
        expect(o.stdout).toBe(t.stdout);
      }
    }
  });
});

describe('create: bad options give qemu-img\'s messages', () => {
  const bad: Array<{ args: string[]; size?: string }> = [
    { args: ['-o', 'cluster_size=3000'], size: '1M' },
    { args: ['-o', 'cluster_size=256'], size: '1M' },
    { args: ['-o', 'refcount_bits=3'], size: '1M' },
    { args: ['-o', 'refcount_bits=128'], size: '1M' },
    { args: ['-o', 'compat=0.10,lazy_refcounts=on'], size: '1M' },
    { args: ['-o', 'extended_l2=on,cluster_size=8k'], size: '1M' },
    { args: ['-o', 'extended_l2=on,compat=0.10'], size: '1M' },
    { args: ['-o', 'data_file_raw=on'], size: '1M' },
    { args: ['-o', 'compression_type=zstd,compat=0.10'], size: '1M' },
    { args: ['-o', 'compression_type=lz4'], size: '1M' },
    { args: ['-o', 'backing_fmt=qcow2'], size: '1M' },
    { args: ['-o', 'compat=0.10,refcount_bits=8'], size: '1M' },
    { args: ['-o', 'compat=1.2'], size: '1M' },
    { args: ['-o', 'preallocation=foo'], size: '1M' },
    { args: ['-o', 'lazy_refcounts=maybe'], size: '1M' },
    { args: ['-o', 'foo=bar'], size: '1M' },
    { args: ['-o', 'data_file=x.raw,compat=0.10'], size: '1M' },
    { args: ['-b', 'b.qcow2', '-F', 'qcow2', '-o', 'preallocation=metadata'], size: '1M' },
    { args: ['-b', 'b.qcow2'], size: '1M' },
    { args: [] },
    // iotest 054: a size past 2^53, too large for 64 KiB clusters; the "Formatting" line shows it exactly.
    { args: [], size: '1024P' },
  ];
  for (const b of bad) {
    it(`${b.args.join(' ')} ${b.size ?? '(no size)'}`, async () => {
      const ours = path.join(dir, `bad-ours.qcow2`);
      const theirs = path.join(dir, `bad-theirs.qcow2`);
      const o = await bt(['create', '-f', 'qcow2', ...b.args, ours, ...(b.size ? [b.size] : [])]);
      const t = qemuImgRun(['create', '-f', 'qcow2', ...b.args, theirs, ...(b.size ? [b.size] : [])]);
      expect(t.status).toBe(1);
      expect(o.status).toBe(1);
      expect(o.stdout.replace(/bad-ours/, 'X')).toBe(t.stdout.replace(/bad-theirs/, 'X'));
      // qemu-img's first line of the message (hints follow it where we know them).
      const first = t.stderr.split('\n')[0]!.replace(/^qemu-img: /, 'blocktab: ').replace(/bad-theirs/, 'X');
      expect(o.stderr.replace(/bad-ours/, 'X').split('\n')[0]).toBe(first);
    });
  }
});

describe("create: sizes as qemu-img reads them (iotest 049)", () => {
  // Fractions without a unit but equal to a whole number, rounding of scaled fractions,
  // hex, out-of-range values, and text that is no size: as the size argument and as -o size.
  const sizes = ['1024.0', '1024.0b', '1.5k', '0.5k', '1.k', '1.0005k', '0x1b', '+5', '1.5b', '-1k', '1kilobyte', '1 k', '1e3k', '20E', '9223372036854775808'];
  const ours = path.join(dir, 'size-ours.qcow2');
  const theirs = path.join(dir, 'size-theirs.qcow2');
  const same = (s: string, name: string) => s.replace(/^blocktab: /gm, 'qemu-img: ').replaceAll(name, 'X');
  for (const size of sizes) {
    for (const how of ['argument', '-o'] as const) {
      it(`${how} ${JSON.stringify(size)}`, async () => {
        const argv = (file: string) =>
          how === '-o' ? ['create', '-f', 'qcow2', '-o', `size=${size}`, file] : ['create', '-f', 'qcow2', file, '--', size];
        const o = await bt(argv(ours));
        const t = qemuImgRun(argv(theirs));
        if (size === '9223372036854775808' && how === '-o') return; // qemu-img 7.2 wraps it to a negative size
        expect(same(o.stdout, ours)).toBe(same(t.stdout, theirs));
        expect(same(o.stderr, ours)).toBe(same(t.stderr, theirs));
        expect(o.status).toBe(t.status);
      });
    }
  }
  it('a size both as -o size and as the argument is refused', async () => {
    const o = await bt(['create', '-f', 'qcow2', '-o', 'size=10M', ours, '20M']);
    const t = qemuImgRun(['create', '-f', 'qcow2', '-o', 'size=10M', theirs, '20M']);
    expect(same(o.stderr, ours)).toBe(same(t.stderr, theirs));
    expect(o.stdout).toBe(t.stdout);
    expect(o.status).toBe(1);
  });
  it('measure --size words a bad size the same way', async () => {
    for (const size of ['foo', '20E', '1.5k']) {
      const o = await bt(['measure', '-O', 'qcow2', '--size', size]);
      const t = qemuImgRun(['measure', '-O', 'qcow2', '--size', size]);
      expect(same(o.stderr, '')).toBe(same(t.stderr, ''));
      expect(o.stdout).toBe(t.stdout);
    }
  });
});

describe('info of an image with an external data file (opened for metadata only)', () => {
  it('does not open the data file: a missing one gives the same info as qemu-img, other commands refuse', async () => {
    const sub = path.join(dir, 'df');
    fs.mkdirSync(sub);
    const img = path.join(sub, 'a.qcow2');
    qemuImg(['create', '-f', 'qcow2', '-o', 'data_file=a.data', img, '1M'], { cwd: sub });
    qemuImg(['create', '-f', 'qcow2', '-o', 'data_file=b.data', path.join(sub, 'b.qcow2'), '1M'], { cwd: sub });
    fs.unlinkSync(path.join(sub, 'a.data'));
    for (const args of [['info', img], ['info', '--output=json', img]]) {
      const t = qemuImgRun(args, { cwd: sub });
      const o = await bt(args);
      expect(t.status).toBe(0);
      expect(o.stderr).toBe('');
      expect(o.status).toBe(0);
      expect(o.stdout).toBe(t.stdout);
    }
    // A data file that exists is not touched by info either: the same answer with it in place.
    const withFile = await bt(['info', '--output=json', path.join(sub, 'b.qcow2')]);
    expect(withFile.stdout).toBe(qemuImgRun(['info', '--output=json', path.join(sub, 'b.qcow2')], { cwd: sub }).stdout);
    // Commands that read still need it.
    const map = await bt(['map', img]);
    expect(map.status).toBe(1);
    expect(map.stderr).toContain("Could not open 'a.data'");
  });
});

describe('create: a relative data file name', () => {
  it('is made from the working directory, where qemu-io then finds it', () => {
    const top = path.join(dir, 'cwd');
    fs.mkdirSync(path.join(top, 'o', 'sub'), { recursive: true });
    fs.mkdirSync(path.join(top, 't', 'sub'), { recursive: true });
    const o = blocktab(['create', '-f', 'qcow2', '-o', 'data_file=d.raw', 'sub/a.qcow2', '1M'], { cwd: path.join(top, 'o') });
    const t = qemuImgRun(['create', '-f', 'qcow2', '-o', 'data_file=d.raw', 'sub/a.qcow2', '1M'], { cwd: path.join(top, 't') });
    expect(o.stdout).toBe(t.stdout);
    expect(o.status).toBe(0);
    for (const side of ['o', 't']) {
      expect(fs.existsSync(path.join(top, side, 'd.raw'))).toBe(true);
      expect(fs.existsSync(path.join(top, side, 'sub', 'd.raw'))).toBe(false);
    }
    expect(sameBytes(path.join(top, 'o', 'sub', 'a.qcow2'), path.join(top, 't', 'sub', 'a.qcow2'))).toBe(true);
    expect(qemuIo('sub/a.qcow2', ['write -P 7 0 4k'], 'qcow2', { cwd: path.join(top, 'o') })).toContain('wrote 4096/4096');
  });
});
