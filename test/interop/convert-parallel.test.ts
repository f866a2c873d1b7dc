/**
 * convert with several requests in flight (-m, default 8) and out-of-order
 * writes (-W), differential against qemu-img on a source large enough for
 * many 2 MiB steps to overlap. In order (the default, any -m), the target is
 * byte-for-byte the one a single request in flight makes and the one
 * qemu-img makes; with -W the layout may differ (qemu-img's does too), so
 * only the contents and a clean `qemu-img check` are asked for. -c goes
 * through the deflate worker pool: the image must not depend on -m.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { blocktab, cliEntry, qemuImg, qemuImgRun, seededBytes, tmpDir } from '../helpers/qemu.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const dir = tmpDir('convert-parallel-');
const at = (name: string) => path.join(dir, name);

const same = (a: string, b: string) => Buffer.compare(fs.readFileSync(at(a)), fs.readFileSync(at(b))) === 0;

function run(args: string[]): void {
  const r = blocktab(args, { cwd: dir });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
}

function clean(file: string): void {
  const r = qemuImgRun(['check', at(file)]);
  expect(r.stdout).toContain('No errors were found on the image.');
  expect(r.status).toBe(0);
}

beforeAll(() => {
  // 40 MiB + 3 KiB raw: random runs, written zeros and holes of uneven sizes, so steps end mid-cluster.
  const size = 40 * MiB + 3 * KiB;
  const fd = fs.openSync(at('src.raw'), 'w');
  fs.ftruncateSync(fd, size);
  let pos = 0;
  let seed = 1;
  while (pos < size) {
    const len = Math.min(size - pos, (1 + ((seed * 7919) % 13)) * 300 * KiB + 512);
    const kind = seed % 3; // 0 data, 1 written zeros, 2 hole
    if (kind === 0) fs.writeSync(fd, seededBytes(len, seed), 0, len, pos);
    else if (kind === 1) fs.writeSync(fd, new Uint8Array(len), 0, len, pos);
    pos += len;
    seed++;
  }
  fs.closeSync(fd);
  // Compressible data for -c: text-like runs with holes between them.
  const text = Buffer.from('blocktab compresses qcow2 clusters in parallel workers; ');
  const comp = Buffer.alloc(12 * MiB + 4 * KiB);
  for (let o = 0; o < comp.length; o += text.length) text.copy(comp, o, 0, Math.min(text.length, comp.length - o));
  comp.fill(0, 3 * MiB, 5 * MiB);
  comp.set(seededBytes(1 * MiB, 99), 8 * MiB); // incompressible clusters are stored uncompressed
  fs.writeFileSync(at('text.raw'), comp);
});

describe('convert -m / -W', () => {
  it('raw→qcow2: every -m writes in order the bytes qemu-img writes', () => {
    qemuImg(['convert', '-f', 'raw', '-O', 'qcow2', at('src.raw'), at('q.qcow2')]);
    for (const m of ['1', '8', '16']) {
      run(['convert', '-m', m, '-f', 'raw', '-O', 'qcow2', 'src.raw', `m${m}.qcow2`]);
      expect(same(`m${m}.qcow2`, 'q.qcow2'), `-m ${m} differs from qemu-img's target`).toBe(true);
    }
    clean('m8.qcow2');
  });

  it('raw→qcow2 with -W: same contents, clean image', () => {
    run(['convert', '-W', '-m', '16', '-f', 'raw', '-O', 'qcow2', 'src.raw', 'w.qcow2']);
    expect(qemuImgRun(['compare', '-f', 'raw', '-F', 'qcow2', at('src.raw'), at('w.qcow2')]).status).toBe(0);
    clean('w.qcow2');
  });

  it('qcow2→raw with any -m and -W equals the source', () => {
    qemuImg(['convert', '-f', 'raw', '-O', 'qcow2', at('src.raw'), at('s.qcow2')]);
    for (const args of [['-m', '1'], [], ['-m', '16', '-W']]) {
      run(['convert', ...args, '-O', 'raw', 's.qcow2', 'out.raw']);
      expect(same('out.raw', 'src.raw'), `convert ${args.join(' ')} differs`).toBe(true);
    }
  });

  it('-c (compressed through the worker pool): the same image for any -m, as many compressed clusters as qemu-img', () => {
    qemuImg(['convert', '-c', '-f', 'raw', '-O', 'qcow2', at('text.raw'), at('qc.qcow2')]);
    run(['convert', '-c', '-f', 'raw', '-O', 'qcow2', 'text.raw', 'c8.qcow2']);
    run(['convert', '-c', '-m', '1', '-f', 'raw', '-O', 'qcow2', 'text.raw', 'c1.qcow2']);
    const compressedClusters = (f: string) => (JSON.parse(qemuImg(['check', '--output=json', at(f)])) as { 'compressed-clusters': number })['compressed-clusters'];
    // Node's zlib is Chromium's, whose streams differ from the system zlib's by a few bytes: same clusters, not the same bytes.
    expect(compressedClusters('c8.qcow2')).toBe(compressedClusters('qc.qcow2'));
    expect(compressedClusters('c8.qcow2')).toBeGreaterThan(100);
    expect(same('c8.qcow2', 'c1.qcow2'), '-c differs between -m 8 and -m 1').toBe(true);
    expect(qemuImgRun(['compare', '-f', 'raw', '-F', 'qcow2', at('text.raw'), at('c8.qcow2')]).status).toBe(0);
    clean('c8.qcow2');
  });

  it('-c -W: same contents, clean image', () => {
    run(['convert', '-c', '-W', '-f', 'raw', '-O', 'qcow2', 'text.raw', 'cw.qcow2']);
    expect(qemuImgRun(['compare', '-f', 'raw', '-F', 'qcow2', at('text.raw'), at('cw.qcow2')]).status).toBe(0);
    clean('cw.qcow2');
  });

  it('-c from a parent started as an ES module (--input-type=module) writes the same image', () => {
    const code = `const { main } = await import(${JSON.stringify(pathToFileURL(cliEntry).href)});
      const out = { stdout: (s) => process.stdout.write(s), stderr: (s) => process.stderr.write(s) };
      process.exitCode = await main(['convert', '-c', '-f', 'raw', '-O', 'qcow2', 'text.raw', 'esm.qcow2'], out);`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { cwd: dir, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(same('esm.qcow2', 'c8.qcow2')).toBe(true);
  });
});
