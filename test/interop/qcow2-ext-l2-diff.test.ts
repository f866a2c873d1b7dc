/**
 * qcow2 extended L2 (subclusters), differential: the same qemu-io command
 * lines go to qemu-io and to blocktab io on twin images made by qemu-img;
 * afterwards the L2 tables must be equal byte for byte (host offsets, COPIED,
 * both bitmap halves), so allocation, zeroing, unmapping and reuse of freed
 * clusters happen per subcluster as QEMU 7.2 does them. The scripts are the
 * parts of iotest 271 that found differences, kept short.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu.js';
import { runIo } from '../../src/cli/qemu-io/main.js';

const dir = tmpDir('qcow2-ext-l2-diff-');
const K = 1024;

async function ours(file: string, cmds: string[]): Promise<void> {
  let err = '';
  const args = ['-f', 'qcow2', ...cmds.flatMap((c) => ['-c', c]), file];
  const status = await runIo(args, { out: () => undefined, err: (t) => (err += t) }, Readable.from([]));
  if (status !== 0) throw new Error(`blocktab io ${cmds.join('; ')}: ${err}`);
}

/** Every nonzero 16-byte entry of the first L2 table ("index: entry bitmap"), host offsets masked unless `hosts`. */
function l2Dump(file: string, hosts: boolean): string[] {
  const f = fs.readFileSync(file);
  const l1 = Number(f.readBigUInt64BE(40));
  const l2 = Number(f.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
  const out: string[] = [];
  for (let i = 0; l2 && i < 4096; i++) {
    const raw = f.readBigUInt64BE(l2 + i * 16);
    const e = hosts ? raw : raw & ~0x00fffffffffffe00n;
    const b = f.readBigUInt64BE(l2 + i * 16 + 8);
    if (raw || b) out.push(`${i}: ${e.toString(16).padStart(16, '0')} ${b.toString(16).padStart(16, '0')}`);
  }
  return out;
}

/** Runs `steps` (each one qemu-io invocation) on twins of a new image and compares their L2 tables. */
async function compare(name: string, size: string, backing: boolean, steps: string[][], hosts = true): Promise<string[]> {
  const base = path.join(dir, `${name}.base`);
  const opts = backing ? ['-F', 'raw', '-b', base] : [];
  if (backing) {
    qemuImg(['create', '-q', '-f', 'raw', base, size]);
    qemuIo(base, [`write -q -P 0xff 0 ${size}`], 'raw');
  }
  const q = path.join(dir, `${name}-q.qcow2`);
  const b = path.join(dir, `${name}-b.qcow2`);
  for (const f of [q, b]) qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on', ...opts, f, size]);
  for (const cmds of steps) {
    qemuIo(q, cmds, 'qcow2');
    await ours(b, cmds);
  }
  const theirs = l2Dump(q, hosts);
  expect(l2Dump(b, hosts)).toEqual(theirs);
  expect(qemuImg(['check', b])).toMatch(/No errors were found/);
  return theirs;
}

describe('qcow2 extended L2 against qemu-io (271)', () => {
  it('zero+unmap over compressed clusters, and writes that reuse the clusters decompression frees', async () => {
    const steps: string[][] = [];
    for (let c = 21; c <= 26; c++) steps.push([`write -q -c -P ${c} ${c * 64}k 64k`]);
    steps.push(['write -q -z -u 1376k 128k'], ['write -q -z -u 1567k 129k'], ['write -q -P 7 1856k 4k']);
    const dump = await compare('compressed', '2083k', true, steps);
    expect(dump.length).toBe(7);
  });

  it('zero writes that reach an image end inside a cluster', async () => {
    for (const backing of [true, false]) {
      await compare(`end-${backing}`, '2083k', backing, [['write -q -z 2048k 35k', 'write -q -z 991k 128k', 'write -q -z -u 1567k 129k']]);
    }
  });

  it('resize with preallocation, with and without a backing file', async () => {
    for (const [mode, backing] of [['metadata', true], ['full', false]] as const) {
      {
        const fill = backing ? [] : [[`write -q -P 0xff 0 ${503 * K}`]];
        // Where the new clusters land is not compared: QEMU's order of table and data allocation is its own here.
        await compare(`resize-${mode}-${backing}`, `${503 * K}`, backing, [...fill, [`truncate -m ${mode} ${1013 * K}`]], false);
      }
    }
  });
});
