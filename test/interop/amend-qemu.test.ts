/**
 * blocktab amend vs qemu-img amend on twins: same exit code and message,
 * same `qemu-img info` afterwards, our result checks clean and the guest
 * data is unchanged (qemu-img compare). Also measure vs qemu-img measure.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';
import { main } from '../../src/cli/main.js';

const dir = tmpDir('amend-qemu-');

async function bt(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const status = await main(args, { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s) });
  return { status, stdout, stderr };
}

function info(file: string): unknown {
  const j = JSON.parse(qemuImg(['info', '--output=json', file])) as Record<string, unknown>;
  delete j['filename'];
  delete j['actual-size'];
  return j;
}

/** Data, zero clusters (plain and preallocated) and a partial overwrite. */
function make(file: string, createOpts: string[], backing?: string): void {
  qemuImg(['create', '-q', '-f', 'qcow2', ...createOpts, ...(backing ? ['-b', backing, '-F', 'qcow2'] : []), file, '4M']);
  qemuIo(file, ['write -P 0x11 0 128k', 'write -z 1M 128k', 'write -P 0x33 2M 64k', 'write -z 2M 64k'], 'qcow2');
}

let n = 0;
const amendOpts = [
  'compat=0.10',
  'compat=1.1',
  'lazy_refcounts=on',
  'lazy_refcounts=off',
  'refcount_bits=1',
  'refcount_bits=8',
  'refcount_bits=64',
  'size=8M',
  'compat=0.10,lazy_refcounts=on',
  'compat=0.10,refcount_bits=8',
  'compat=1.1,refcount_bits=2,lazy_refcounts=on',
  'refcount_bits=3',
  'cluster_size=4k',
  'backing_file=foo',
  'foo=bar',
];
const bases = [[], ['-o', 'compat=0.10'], ['-o', 'lazy_refcounts=on,cluster_size=512'], ['-o', 'compression_type=zstd']];

describe('amend against qemu-img amend', () => {
  for (const o of amendOpts) {
    for (const b of bases) {
      it(`-o ${o} on an image made with ${b.join(' ') || 'defaults'}`, async () => {
        const id = ++n;
        const theirs = path.join(dir, `t${id}.qcow2`);
        const ours = path.join(dir, `o${id}.qcow2`);
        make(theirs, b);
        fs.copyFileSync(theirs, ours);
        const t = qemuImgRun(['amend', '-o', o, theirs]);
        const r = await bt(['amend', '-o', o, ours]);
        expect(r.status).toBe(t.status);
        expect(r.stdout).toBe(t.stdout);
        expect(r.stderr.split('\n')[0]).toBe(t.stderr.split('\n')[0]!.replace(/^qemu-img: /, 'blocktab: '));
        expect(info(ours)).toEqual(info(theirs));
        expect(qemuImgRun(['check', ours]).status).toBe(0);
        expect(qemuImgRun(['compare', ours, theirs]).status).toBe(0);
      });
    }
  }

  it('downgrade with a backing file and a snapshot keeps every view of the data', async () => {
    const base = path.join(dir, 'base.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', base, '4M']);
    qemuIo(base, ['write -P 0x77 0 4M'], 'qcow2');
    const ours = path.join(dir, 'snap.qcow2');
    make(ours, [], base);
    qemuImg(['snapshot', '-c', 's1', ours]);
    qemuIo(ours, ['write -z 0 64k'], 'qcow2');
    const before = path.join(dir, 'snap-before.qcow2');
    fs.copyFileSync(ours, before);
    expect((await bt(['amend', '-o', 'compat=0.10', ours])).status).toBe(0);
    expect(qemuImgRun(['check', ours]).status).toBe(0);
    expect((info(ours) as { 'format-specific': { data: { compat: string } } })['format-specific'].data.compat).toBe('0.10');
    // Active view and snapshot view both unchanged (zero clusters read as zeros, not as the backing file).
    expect(qemuImgRun(['compare', ours, before]).status).toBe(0);
    qemuImg(['snapshot', '-a', 's1', ours]);
    qemuImg(['snapshot', '-a', 's1', before]);
    expect(qemuImgRun(['compare', ours, before]).status).toBe(0);
  });

  it('raw cannot be amended; -o is required', async () => {
    const raw = path.join(dir, 'r.raw');
    fs.writeFileSync(raw, Buffer.alloc(4096));
    const r = await bt(['amend', '-f', 'raw', '-o', 'size=1', raw]);
    const t = qemuImgRun(['amend', '-f', 'raw', '-o', 'size=1', raw]);
    expect(r.status).toBe(1);
    expect(t.status).toBe(1);
    expect(r.stderr).toBe(t.stderr.replace(/^qemu-img: /, 'blocktab: '));
    expect((await bt(['amend', raw])).stderr).toBe('blocktab: Must specify options (-o)\n');
  });

  it('-o help lists the amend options', async () => {
    const f = path.join(dir, 'help.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', f, '1M']);
    expect((await bt(['amend', '-o', 'help', f])).stdout).toBe(qemuImg(['amend', '-o', 'help', f]));
  });
});

describe('measure against qemu-img measure', () => {
  const img = path.join(dir, 'm.qcow2');
  const cases = [
    ['--size', '1G'],
    ['--size', '1G', '-O', 'qcow2', '--output=json'],
    ['--size', '100G', '-O', 'qcow2', '-o', 'cluster_size=4k,refcount_bits=64,preallocation=full'],
    ['-O', 'qcow2', '{img}'],
    ['-O', 'qcow2', '--output=json', '{img}'],
    ['-O', 'qcow2', '-o', 'compat=0.10', '{img}'],
    ['-O', 'raw', '{img}'],
    ['-O', 'qcow2', '-o', 'cluster_size=3000', '--size', '1G'],
    ['-O', 'qcow2', '-o', 'foo=bar', '--size', '1G'],
    ['-O', 'vmdk', '--size', '1G'],
    ['-O', 'vhdx', '--size', '1G'],
    ['--size', '1G', '{img}'],
    [],
  ];
  for (const c of cases) {
    it(c.join(' ') || '(no arguments)', async () => {
      if (!fs.existsSync(img)) make(img, []);
      const args = c.map((a) => a.replace('{img}', img));
      const r = await bt(['measure', ...args]);
      const t = qemuImgRun(['measure', ...args]);
      expect(r.status).toBe(t.status);
      expect(r.stdout).toBe(t.stdout);
      expect(r.stderr.split('\n')[0]).toBe(t.stderr.split('\n')[0]!.replace(/^qemu-img: /, 'blocktab: '));
    });
  }
});
