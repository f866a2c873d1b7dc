/**
 * LUKS1 written and created by blocktab, checked with QEMU's tools and the
 * same `--object secret`: a blocktab-made image has qemu-img's layout
 * (format-specific info equal but for uuid, salts and iteration counts,
 * which depend on the machine's speed), qemu-img and qemu-io read and
 * write it; blocktab's writes (unaligned too) into a qemu-img-made image
 * read back in qemu-io; convert -O luks and resize as qemu-img's.
 * iter-time=10 keeps PBKDF2 short; no assertion depends on timing.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { beforeAll, describe, expect, it } from 'vitest';
import { blocktab, qemuImg, qemuImgRun, seededBytes, tmpDir, qemuImgCreateLuks, qemuImgRunLuks } from '../helpers/qemu.js';

const secret = ['--object', 'secret,id=sec0,data=open sesame'];
const opts = (file: string) => `driver=luks,key-secret=sec0,file.filename=${file}`;
const SIZE = 4 << 20;

function qemuIo(file: string, cmds: string[], cwd: string): { status: number; out: string } {
  const r = spawnSync('qemu-io', [...secret, '--image-opts', opts(file), ...cmds.flatMap((c) => ['-c', c])], { cwd, encoding: 'utf8' });
  return { status: r.status ?? -1, out: r.stdout + r.stderr };
}

function theirRaw(dir: string, file: string): Buffer {
  const out = path.join(dir, `${file}.theirs.raw`);
  qemuImg(['convert', ...secret, '--image-opts', opts(file), '-O', 'raw', out], { cwd: dir });
  return fs.readFileSync(out);
}

function ourRaw(dir: string, file: string): Buffer {
  const r = blocktab(['convert', ...secret, '--image-opts', opts(file), '-O', 'raw', `${file}.ours.raw`], { cwd: dir });
  expect(r.stderr).toBe('');
  return fs.readFileSync(path.join(dir, `${file}.ours.raw`));
}

/** qemu-img info's format-specific, without what is random or timed. */
function layout(dir: string, file: string): unknown {
  const info = JSON.parse(qemuImg(['info', '--output=json', file], { cwd: dir })) as { 'format-specific': { data: Record<string, unknown> } };
  const d = info['format-specific'].data;
  d.uuid = 'UUID';
  d['master-key-iters'] = 'ITERS';
  for (const s of d.slots as Record<string, unknown>[]) if ('iters' in s) s.iters = 'ITERS';
  return info['format-specific'];
}

describe('luks: blocktab creates and writes, QEMU reads', () => {
  let dir = '';
  beforeAll(() => {
    dir = tmpDir('luks-write-');
    qemuImgCreateLuks(['create', '-q', '-f', 'luks', ...secret, '-o', 'key-secret=sec0,iter-time=10', 'theirs.luks', String(SIZE)], { cwd: dir });
    const made = blocktab(['create', '-f', 'luks', ...secret, '-o', 'key-secret=sec0,iter-time=10', 'ours.luks', String(SIZE)], { cwd: dir });
    expect(made.stderr).toBe('');
    expect(made.stdout).toBe("Formatting 'ours.luks', fmt=luks size=4194304 key-secret=sec0 iter-time=10\n");
  });

  it('a blocktab-made image has qemu-img\'s layout: format-specific info equal but for uuid and iterations', () => {
    expect(layout(dir, 'ours.luks')).toEqual(layout(dir, 'theirs.luks'));
    expect(fs.statSync(path.join(dir, 'ours.luks')).size).toBe(fs.statSync(path.join(dir, 'theirs.luks')).size);
    const a = blocktab(['info', '--output=json', 'ours.luks'], { cwd: dir });
    const b = qemuImgRun(['info', '--output=json', 'ours.luks'], { cwd: dir });
    expect(a.stdout.replace(/"actual-size": \d+/, '')).toBe(b.stdout.replace(/"actual-size": \d+/, ''));
  });

  it('blocktab writes (unaligned too) into its image; qemu-img reads the same bytes; qemu-io writes and blocktab reads', () => {
    const w = blocktab(['io', ...secret, '--image-opts', opts('ours.luks'), '-c', 'write -P 0x5a 1000 5000', '-c', 'write -P 0xa5 0 512', '-c', `write -P 0x11 ${SIZE - 700} 700`], { cwd: dir });
    expect(w.status).toBe(0);
    const r = qemuIo('ours.luks', ['read -P 0xa5 0 512', 'read -P 0x5a 1000 5000', `read -P 0x11 ${SIZE - 700} 700`], dir);
    expect(r.out).not.toMatch(/fail|error/i);
    expect(r.status).toBe(0);
    expect(qemuIo('ours.luks', ['write -P 0x77 3000 10000'], dir).status).toBe(0);
    const theirs = theirRaw(dir, 'ours.luks');
    expect(Buffer.compare(ourRaw(dir, 'ours.luks'), theirs)).toBe(0);
    expect(theirs[3000]).toBe(0x77);
    expect(theirs[12999]).toBe(0x77);
    expect(theirs[2999]).toBe(0x5a);
    expect(theirs[0]).toBe(0xa5);
  });

  it('blocktab writes unaligned into a qemu-img-made image; qemu-io reads them', () => {
    const w = blocktab(['io', ...secret, '--image-opts', opts('theirs.luks'), '-c', 'write -P 0x3c 777 1234', '-c', 'write -P 0xc3 1048575 2'], { cwd: dir });
    expect(w.status).toBe(0);
    const r = qemuIo('theirs.luks', ['read -P 0x3c 777 1234', 'read -P 0xc3 1048575 2'], dir);
    expect(r.out).not.toMatch(/fail|error/i);
    expect(Buffer.compare(ourRaw(dir, 'theirs.luks'), theirRaw(dir, 'theirs.luks'))).toBe(0);
  });

  it('a wrong secret is refused by qemu-img and blocktab alike', () => {
    const args = ['convert', '--object', 'secret,id=sec0,data=nope', '--image-opts', opts('ours.luks'), '-O', 'raw', 'x.raw'];
    const a = blocktab(args, { cwd: dir });
    const b = qemuImgRun(args, { cwd: dir });
    expect(b.status).toBe(1);
    expect(b.stderr).toMatch(/^qemu-img: Could not open .*: Invalid password, cannot unlock any keyslot\n$/);
    expect(a.status).toBe(1);
    expect(a.stderr).toBe("blocktab: Could not open 'ours.luks': Invalid password, cannot unlock any keyslot\n");
  });

  it('resize grows the payload as qemu-img does; check is not supported for luks (exit 63) in both', () => {
    fs.copyFileSync(path.join(dir, 'ours.luks'), path.join(dir, 'grown.luks'));
    fs.copyFileSync(path.join(dir, 'ours.luks'), path.join(dir, 'grown-q.luks'));
    expect(blocktab(['resize', ...secret, '--image-opts', opts('grown.luks'), '+1M'], { cwd: dir }).status).toBe(0);
    qemuImg(['resize', ...secret, '--image-opts', opts('grown-q.luks'), '+1M'], { cwd: dir });
    expect(fs.statSync(path.join(dir, 'grown.luks')).size).toBe(fs.statSync(path.join(dir, 'grown-q.luks')).size);
    const info = JSON.parse(qemuImg(['info', '--output=json', ...secret, '--image-opts', opts('grown.luks')], { cwd: dir })) as { 'virtual-size': number };
    expect(info['virtual-size']).toBe(SIZE + (1 << 20));
    const r = qemuIo('grown.luks', ['read -P 0xa5 0 512', `read -P 0x11 ${SIZE - 700} 700`], dir);
    expect(r.out).not.toMatch(/fail|error/i);
    const check = ['check', ...secret, '--image-opts', opts('ours.luks')];
    const a = blocktab(check, { cwd: dir });
    const b = qemuImgRun(check, { cwd: dir });
    expect(b.status).toBe(63);
    expect(a.status).toBe(63);
    expect(a.stderr.replace(/^blocktab/, 'qemu-img')).toBe(b.stderr);
  });
});

describe('luks: convert -O luks and create options', () => {
  it('convert -O luks -o key-secret=... (aes-128, sha512, a size that is not whole sectors): qemu-img compare says identical', () => {
    const dir = tmpDir('luks-convert-');
    fs.writeFileSync(path.join(dir, 'src.raw'), seededBytes(3_000_000, 12));
    const r = blocktab(['convert', ...secret, '-O', 'luks', '-o', 'key-secret=sec0,iter-time=10,cipher-alg=aes-128,hash-alg=sha512', 'src.raw', 'out.luks'], { cwd: dir });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const cmp = qemuImgRun(['compare', ...secret, '--image-opts', 'driver=raw,file.filename=src.raw', opts('out.luks')], { cwd: dir });
    expect(cmp.stdout).toBe('Images are identical.\n');
    const info = JSON.parse(qemuImg(['info', '--output=json', 'out.luks'], { cwd: dir })) as { 'format-specific': { data: Record<string, unknown> } };
    expect(info['format-specific'].data).toMatchObject({ 'cipher-alg': 'aes-128', 'cipher-mode': 'xts', 'ivgen-alg': 'plain64', 'hash-alg': 'sha512', 'payload-offset': 1052672 });
  });

  it('-o help and bad option values: qemu-img\'s text and exit codes', () => {
    const dir = tmpDir('luks-opts-');
    const help = ['create', '-f', 'luks', '-o', 'help'];
    expect(blocktab(help).stdout).toBe(qemuImgRun(help).stdout);
    const cases = ['cipher-alg=foo', 'cipher-alg=des'].map((o) => [...secret, '-o', `key-secret=sec0,${o}`]);
    cases.push([...secret, '-o', 'key-secret=nope'], ['-o', 'iter-time=10']);
    for (const c of cases) {
      const args = ['create', '-q', '-f', 'luks', ...c, 'x.luks', '1M'];
      const a = blocktab(args, { cwd: dir });
      const b = qemuImgRun(args, { cwd: dir });
      expect(b.status, c.join(' ')).toBe(1);
      expect(a.status, c.join(' ')).toBe(1);
      expect(a.stderr.replace(/^blocktab/, 'qemu-img'), c.join(' ')).toBe(b.stderr);
    }
    // What QEMU makes but blocktab cannot read is refused, not made.
    const tf = blocktab(['create', '-q', '-f', 'luks', ...secret, '-o', 'key-secret=sec0,cipher-alg=twofish-256', 'y.luks', '1M'], { cwd: dir });
    expect(tf.status).toBe(1);
    expect(tf.stderr).toMatch(/cipher twofish-256-xts-plain64 is not supported/);
  });
});

describe('luks: measure -O luks as qemu-img 7.2', () => {
  it('the payload offset of each cipher plus the size (or the input image\'s size); the secret is required', () => {
    const dir = tmpDir('luks-measure-');
    qemuImg(['create', '-q', '-f', 'qcow2', 'src.qcow2', '5M'], { cwd: dir });
    const runs = [
      ['-o', 'key-secret=sec0', '--size', '1G'],
      ['-o', 'key-secret=sec0,cipher-alg=aes-128', '--size', '1000'],
      ['-o', 'key-secret=sec0,cipher-alg=aes-192,hash-alg=sha512', '--output=json', 'src.qcow2'],
      ['--size', '1G'],
      ['-o', 'key-secret=nope', '--size', '1G'],
    ];
    for (const r of runs) {
      const ours = blocktab(['measure', ...secret, '-O', 'luks', ...r], { cwd: dir });
      const theirs = qemuImgRunLuks(['measure', ...secret, '-O', 'luks', ...r], { cwd: dir });
      expect(ours.stdout, r.join(' ')).toBe(theirs.stdout);
      expect(ours.stderr.replace(/^blocktab: /, ''), r.join(' ')).toBe(theirs.stderr.replace(/^qemu-img: /, ''));
      expect(ours.status, r.join(' ')).toBe(theirs.status);
    }
  }, 120_000); // qemu-img measure -O luks times PBKDF2 for each run (about 2 s each)
});
