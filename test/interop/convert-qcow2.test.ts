/**
 * convert -O qcow2, differential: for a grid of sources (qemu-made qcow2 with
 * data, compressed, zero and unallocated clusters; a backing chain; raw with
 * holes and written zeros) and options (-o cluster_size/compat/refcount_bits/
 * extended_l2/compression_type/lazy_refcounts/preallocation, -c, -S, -B,
 * several sources, -n), `blocktab convert` and `qemu-img convert` run on the
 * same input. Ours must pass `qemu-img check`, equal the source and qemu-img's
 * output by `qemu-img compare`, have the same allocation map (present / zero /
 * data per range) and the same format-specific info. Bad option combinations
 * must fail with qemu-img's message and exit code.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { blocktab, qemuImg, qemuImgRun, qemuIo, seededBytes, tmpDir } from '../helpers/qemu.js';
import { FileStorage } from '../../src/node.js';
import { Engine } from '../../src/engine/index.js';
import { sampleCases } from '../helpers/sample.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const dir = tmpDir('convert-qcow2-');
const at = (name: string) => path.join(dir, name);

interface MapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
}

/** The allocation map without host offsets, adjacent equal ranges merged. */
function allocationMap(file: string): Array<Omit<MapEntry, 'depth'> & { depth: number }> {
  const raw = JSON.parse(qemuImg(['map', '--output=json', file])) as MapEntry[];
  const out: MapEntry[] = [];
  for (const e of raw) {
    const last = out[out.length - 1];
    const m = { start: e.start, length: e.length, depth: e.depth, present: e.present, zero: e.zero, data: e.data };
    if (last && last.start + last.length === m.start && last.present === m.present && last.zero === m.zero && last.data === m.data && last.depth === m.depth) {
      last.length += m.length;
    } else {
      out.push(m);
    }
  }
  return out;
}

function info(file: string): Record<string, unknown> {
  return JSON.parse(qemuImg(['info', '--output=json', file])) as Record<string, unknown>;
}

beforeAll(() => {
  // mixed.qcow2: 4 MiB + 7.5 KiB (a partial last cluster) with every kind of cluster.
  qemuImg(['create', '-f', 'qcow2', at('mixed.qcow2'), String(4 * MiB + 7680)]);
  qemuIo(
    at('mixed.qcow2'),
    [
      'write -P 0x11 0 192k', // data
      'write -c -P 0x22 256k 64k', // compressed
      'write -c -P 0x23 320k 64k',
      'write -z 512k 128k', // zero clusters
      'write -P 0 768k 64k', // data that is zeros
      'write -P 0x33 1m 4k', // one small write in a cluster
      'write -P 0 1040k 8k', // zeros in the middle of ...
      'write -P 0x34 1048k 12k', // ... data in the same cluster
      'write -P 0x44 3m 512k',
      'write -P 0x55 4194304 7680', // the partial last cluster
    ],
    'qcow2',
  );
  // A backing chain: base with data everywhere it matters, top overriding part of it.
  qemuImg(['create', '-f', 'qcow2', at('base.qcow2'), String(4 * MiB)]);
  qemuIo(at('base.qcow2'), ['write -P 0xa1 0 2m', 'write -P 0xa2 3m 1m'], 'qcow2');
  qemuImg(['create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', at('top.qcow2')]);
  qemuIo(at('top.qcow2'), ['write -P 0xb1 64k 64k', 'write -z 1m 256k', 'write -P 0xb2 2m 128k', 'write -P 0 3m 64k'], 'qcow2');
  // A raw file with a hole, written zeros and data, its size not a multiple of 64 KiB.
  const rawData = new Uint8Array(3 * MiB + 4608);
  rawData.set(seededBytes(512 * KiB, 5), 0);
  rawData.set(seededBytes(300 * KiB, 6), 2 * MiB);
  rawData.set(seededBytes(4608, 8), 3 * MiB);
  fs.writeFileSync(at('holes.raw'), rawData);
  // Punch the hole back: truncate + write only the data ranges.
  const fd = fs.openSync(at('holes.raw'), 'w');
  fs.ftruncateSync(fd, rawData.length);
  fs.writeSync(fd, rawData, 0, 512 * KiB, 0);
  fs.writeSync(fd, rawData, 512 * KiB, 512 * KiB, 512 * KiB); // 512 KiB of written zeros
  fs.writeSync(fd, rawData, 2 * MiB, 300 * KiB, 2 * MiB);
  fs.writeSync(fd, rawData, 3 * MiB, 4608, 3 * MiB);
  fs.closeSync(fd);
  // A second, small raw source for concatenation.
  fs.writeFileSync(at('small.raw'), seededBytes(192 * KiB, 11));
});

interface Case {
  name: string;
  sources: string[];
  args: string[];
  /** Compare ours with the source (single source without -B), or only with qemu-img's output. */
  compareSource?: boolean;
}

const cases: Case[] = [
  { name: 'mixed qcow2, defaults', sources: ['mixed.qcow2'], args: [] },
  { name: 'mixed qcow2, cluster_size=4k', sources: ['mixed.qcow2'], args: ['-o', 'cluster_size=4k'] },
  { name: 'mixed qcow2, cluster_size=2M', sources: ['mixed.qcow2'], args: ['-o', 'cluster_size=2M'] },
  { name: 'mixed qcow2, compat=0.10', sources: ['mixed.qcow2'], args: ['-o', 'compat=0.10'] },
  { name: 'mixed qcow2, refcount_bits=1', sources: ['mixed.qcow2'], args: ['-o', 'refcount_bits=1'] },
  { name: 'mixed qcow2, refcount_bits=64, lazy_refcounts', sources: ['mixed.qcow2'], args: ['-o', 'refcount_bits=64,lazy_refcounts=on'] },
  { name: 'mixed qcow2, extended_l2', sources: ['mixed.qcow2'], args: ['-o', 'extended_l2=on'] },
  { name: 'mixed qcow2, extended_l2 with -S 0', sources: ['mixed.qcow2'], args: ['-o', 'extended_l2=on', '-S', '0'] },
  { name: 'mixed qcow2, -c', sources: ['mixed.qcow2'], args: ['-c'] },
  { name: 'mixed qcow2, -c zstd 4k clusters', sources: ['mixed.qcow2'], args: ['-c', '-o', 'compression_type=zstd,cluster_size=4k'] },
  { name: 'mixed qcow2, -c compat=0.10', sources: ['mixed.qcow2'], args: ['-c', '-o', 'compat=0.10'] },
  { name: 'mixed qcow2, -S 0', sources: ['mixed.qcow2'], args: ['-S', '0'] },
  { name: 'mixed qcow2, -S 64k', sources: ['mixed.qcow2'], args: ['-S', '64k'] },
  { name: 'mixed qcow2, preallocation=metadata', sources: ['mixed.qcow2'], args: ['-o', 'preallocation=metadata'] },
  { name: 'raw with holes, defaults', sources: ['holes.raw'], args: ['-f', 'raw'] },
  { name: 'raw with holes, -S 0', sources: ['holes.raw'], args: ['-f', 'raw', '-S', '0'] },
  { name: 'raw with holes, -S 64k, 4k clusters', sources: ['holes.raw'], args: ['-f', 'raw', '-S', '64k', '-o', 'cluster_size=4k'] },
  { name: 'raw with holes, -c', sources: ['holes.raw'], args: ['-f', 'raw', '-c'] },
  { name: 'backing chain, flattened', sources: ['top.qcow2'], args: [] },
  { name: 'backing chain, -B base', sources: ['top.qcow2'], args: ['-B', 'base.qcow2', '-F', 'qcow2'] },
  { name: 'backing chain, -B base -c', sources: ['top.qcow2'], args: ['-B', 'base.qcow2', '-F', 'qcow2', '-c'] },
  { name: 'raw with holes, -B a shorter backing file', sources: ['holes.raw'], args: ['-f', 'raw', '-B', 'small.raw', '-F', 'raw'] },
  { name: 'several sources', sources: ['small.raw', 'mixed.qcow2', 'holes.raw'], args: [] },
  { name: 'several sources, -c', sources: ['small.raw', 'mixed.qcow2', 'holes.raw'], args: ['-c'] },
];

describe('convert -O qcow2 matches qemu-img convert', () => {
  for (const c of sampleCases('convert -O qcow2', cases, 0.5)) {
    it(c.name, () => {
      const slug = c.name.replace(/[^a-z0-9]+/gi, '-');
      const ours = `ours-${slug}.qcow2`;
      const theirs = `theirs-${slug}.qcow2`;
      const r = blocktab(['convert', '-O', 'qcow2', ...c.args, ...c.sources, ours], { cwd: dir });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      qemuImg(['convert', '-O', 'qcow2', ...c.args, ...c.sources, theirs], { cwd: dir });

      const check = qemuImgRun(['check', at(ours)]);
      expect(check.stdout).toContain('No errors were found on the image.');
      expect(check.status).toBe(0);
      expect(qemuImgRun(['compare', at(ours), at(theirs)]).stdout).toBe('Images are identical.\n');
      if (c.sources.length === 1) {
        const f = c.args.includes('-f') ? ['-f', 'raw'] : [];
        expect(qemuImgRun(['compare', ...f, at(c.sources[0]!), at(ours)]).stdout).toBe('Images are identical.\n');
      }
      expect(allocationMap(at(ours))).toEqual(allocationMap(at(theirs)));
      const a = info(at(ours));
      const b = info(at(theirs));
      expect(a['format-specific']).toEqual(b['format-specific']);
      expect(a['cluster-size']).toEqual(b['cluster-size']);
      expect(a['virtual-size']).toEqual(b['virtual-size']);
      expect(a['backing-filename']).toEqual(b['backing-filename']);
      expect(a['backing-filename-format']).toEqual(b['backing-filename-format']);
      // Compression is real: the same number of compressed clusters as qemu-img's (qemu-img check counts them).
      const stat = (f: string) => /([\d.]+)% compressed/.exec(qemuImg(['check', at(f)]))?.[1];
      expect(stat(ours)).toBe(stat(theirs));
    });
  }
});

describe('convert -n into an existing image', () => {
  it('copies into a larger pre-made qcow2 as qemu-img does', () => {
    for (const who of ['ours', 'theirs']) qemuImg(['create', '-f', 'qcow2', '-o', 'cluster_size=16k', at(`n-${who}.qcow2`), String(8 * MiB)]);
    // Something already there that the copy leaves alone (past the source's end) or overwrites.
    for (const who of ['ours', 'theirs']) qemuIo(at(`n-${who}.qcow2`), ['write -P 0x77 0 64k', 'write -P 0x78 6m 64k'], 'qcow2');
    const r = blocktab(['convert', '-n', '-O', 'qcow2', 'mixed.qcow2', 'n-ours.qcow2'], { cwd: dir });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    qemuImg(['convert', '-n', '-O', 'qcow2', 'mixed.qcow2', 'n-theirs.qcow2'], { cwd: dir });
    expect(qemuImgRun(['check', at('n-ours.qcow2')]).status).toBe(0);
    expect(qemuImgRun(['compare', at('n-ours.qcow2'), at('n-theirs.qcow2')]).stdout).toBe('Images are identical.\n');
    expect(allocationMap(at('n-ours.qcow2'))).toEqual(allocationMap(at('n-theirs.qcow2')));
  });

  it('refuses a target smaller than the sources', () => {
    qemuImg(['create', '-f', 'qcow2', at('n-small.qcow2'), '1M']);
    const r = blocktab(['convert', '-n', '-O', 'qcow2', 'mixed.qcow2', 'n-small.qcow2'], { cwd: dir });
    const q = qemuImgRun(['convert', '-n', '-O', 'qcow2', 'mixed.qcow2', 'n-small.qcow2'], { cwd: dir });
    expect(q.stderr).toBe('qemu-img: output file is smaller than input file\n');
    expect(r.stderr).toBe('blocktab: output file is smaller than input file\n');
    expect(r.status).toBe(q.status);
  });
});

describe('convert refuses what qemu-img refuses, with its message', () => {
  const bad: string[][] = [
    ['-c', '-O', 'raw', 'small.raw', 'e1'],
    ['-B', 'base.qcow2', '-O', 'raw', 'small.raw', 'e2'],
    ['-B', 'base.qcow2', '-O', 'qcow2', 'small.raw', 'e3'],
    ['-O', 'qcow2', '-o', 'backing_file=base.qcow2', 'small.raw', 'e3b'],
    ['-B', 'base.qcow2', '-F', 'qcow2', '-O', 'qcow2', 'small.raw', 'small.raw', 'e4'],
    ['-n', '-o', 'cluster_size=4k', '-O', 'qcow2', 'small.raw', 'e5'],
    ['-c', '-o', 'preallocation=metadata', '-O', 'qcow2', 'small.raw', 'e6'],
    ['-F', 'qcow2', '-O', 'qcow2', 'small.raw', 'e7'],
    ['-m', '0', 'small.raw', 'e8'],
    ['-m', '17', 'small.raw', 'e8'],
    ['-S', '1000', 'small.raw', 'e9'],
    ['-S', '32M', 'small.raw', 'e9'],
    ['-O', 'foo', 'small.raw', 'e10'],
    ['-O', 'qcow2', '-o', 'foo=1', 'small.raw', 'e11'],
    ['-O', 'qcow2', '-o', 'compat=0.2', 'small.raw', 'e12'],
    ['-O', 'qcow2', '-o', 'cluster_size=3k', 'small.raw', 'e13'],
    ['-O', 'raw', '-o', 'cluster_size=4k', 'small.raw', 'e14'],
    ['-T', 'foo', 'small.raw', 'e15'],
    ['-c', '-C', '-O', 'qcow2', 'small.raw', 'e16'],
    ['--target-is-zero', 'small.raw', 'e17'],
    ['small.raw'],
  ];
  for (const args of bad) {
    it(args.join(' '), () => {
      const q = qemuImgRun(['convert', ...args], { cwd: dir });
      const r = blocktab(['convert', ...args], { cwd: dir });
      expect(q.status).not.toBe(0);
      expect(r.status).toBe(q.status);
      // The first line of qemu-img's message, program name aside (hints may follow).
      const first = q.stderr.split('\n')[0]!.replace(/^qemu-img: /, '');
      expect(r.stderr.split('\n')[0]).toBe(`blocktab: ${first}`);
    });
  }
});

describe('convert -p', () => {
  it('prints qemu-img progress lines', () => {
    const r = blocktab(['convert', '-p', '-O', 'qcow2', 'mixed.qcow2', 'p-ours.qcow2'], { cwd: dir });
    const q = qemuImgRun(['convert', '-p', '-O', 'qcow2', 'mixed.qcow2', 'p-theirs.qcow2'], { cwd: dir });
    expect(r.status).toBe(0);
    const lines = (s: string) => s.split('\r').map((l) => l.trim()).filter(Boolean);
    expect(lines(r.stdout)[0]).toBe('(0.00/100%)');
    expect(lines(r.stdout).at(-1)).toBe(lines(q.stdout).at(-1));
    expect(r.stdout.endsWith('\n')).toBe(true);
  });
});

describe('Engine.convert creates qcow2 targets', () => {
  it('with -o options and -c, equal to qemu-img convert', async () => {
    const engine = new Engine({ storages: { file: new FileStorage() } });
    const out = at('engine.qcow2');
    const seen: number[] = [];
    await engine.convert(
      [{ storage: 'file', filename: at('mixed.qcow2') }],
      { storage: 'file', filename: out, format: 'qcow2', options: ['cluster_size=16k,refcount_bits=8'] },
      { compressed: true },
      (done) => seen.push(done),
    );
    await engine.dispose();
    qemuImg(['convert', '-c', '-O', 'qcow2', '-o', 'cluster_size=16k,refcount_bits=8', at('mixed.qcow2'), at('engine-theirs.qcow2')]);
    expect(qemuImgRun(['check', out]).status).toBe(0);
    expect(qemuImgRun(['compare', at('mixed.qcow2'), out]).stdout).toBe('Images are identical.\n');
    expect(allocationMap(out)).toEqual(allocationMap(at('engine-theirs.qcow2')));
    expect(info(out)['format-specific']).toEqual(info(at('engine-theirs.qcow2'))['format-specific']);
    expect(seen.at(-1)).toBe(4 * MiB + 7680);
  });

  it('refuses -c for a raw target with qemu-img\'s message', async () => {
    const engine = new Engine({ storages: { file: new FileStorage() } });
    await expect(
      engine.convert([{ storage: 'file', filename: at('small.raw'), format: 'raw' }], { storage: 'file', filename: at('engine.raw') }, { compressed: true }),
    ).rejects.toMatchObject({ message: 'Compression not supported for this file format' });
    await engine.dispose();
  });
});
