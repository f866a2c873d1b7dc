/**
 * qcow2 writes, differential: the same seeded qemu-io command lines (pattern
 * writes aligned and not, zero writes with and without unmap, discards,
 * compressed writes, resize) go to qemu-io on one qemu-img-created image and
 * to blocktab io on an identically created twin. Both images must then be
 * equal by `qemu-img compare` and clean by `qemu-img check`, and the command
 * output (timings aside) and exit status must match.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { qemuImg, qemuImgRun, tmpDir } from '../helpers/qemu.js';
import { runIo } from '../../src/cli/qemu-io/main.js';
import { rng } from '../helpers/random.js';

const dir = tmpDir('qcow2-write-diff-');

function normalise(text: string): string {
  return text
    .split('\n')
    .map((l) => l.replace(/^(.*, \d+ ops); .* \(.*\/sec and .* ops\/sec\)$/, '$1; <timing>'))
    .join('\n');
}


function workload(seed: number, size: number, cs: number, n: number, opts: { compressed: boolean; truncate: boolean }): string[] {
  const r = rng(seed);
  const pick = (k: number) => Math.floor(r() * k);
  const cmds: string[] = [];
  let cur = size;
  for (let i = 0; i < n; i++) {
    const aligned = r() < 0.5;
    const off = aligned ? pick(cur / 512) * 512 : pick(cur);
    let len = aligned ? (1 + pick((3 * cs) / 512)) * 512 : 1 + pick(3 * cs);
    len = Math.min(len, cur - off);
    if (len <= 0) continue;
    const op = pick(12);
    if (op < 5) cmds.push(`write -P ${1 + pick(250)} ${off} ${len}`);
    else if (op === 5) cmds.push(`write -z ${off} ${len}`);
    else if (op === 6) cmds.push(`write -z -u ${off} ${len}`);
    else if (op === 7) cmds.push(`discard ${off} ${len}`);
    else if (op === 8 && opts.compressed) {
      const c = pick(Math.floor(cur / cs)) * cs;
      cmds.push(`write -c -P ${1 + pick(250)} ${c} ${cs}`);
    } else if (op === 9 && opts.truncate && r() < 0.3) {
      cur += (1 + pick(64)) * cs;
      cmds.push(`truncate ${cur}`);
    } else if (op === 10) cmds.push('flush');
    else cmds.push(`write -P ${1 + pick(250)} ${off} ${len}`);
  }
  return cmds;
}

async function ours(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const status = await runIo(args, { out: (t) => (stdout += t), err: (t) => (stderr += t) }, Readable.from([]));
  return { status, stdout, stderr };
}

interface Case {
  opts: string;
  size: number;
  cs: number;
  backing?: boolean;
  compressed?: boolean;
}

const cases: Case[] = [
  { opts: 'cluster_size=65536', size: 8 << 20, cs: 65536, compressed: true },
  { opts: 'cluster_size=512', size: 1 << 20, cs: 512, compressed: true },
  { opts: 'cluster_size=4096,refcount_bits=1', size: 2 << 20, cs: 4096 },
  { opts: 'cluster_size=4096,refcount_bits=64', size: 2 << 20, cs: 4096, compressed: true },
  { opts: 'compat=0.10,cluster_size=4096', size: 2 << 20, cs: 4096, compressed: true },
  { opts: 'extended_l2=on,cluster_size=65536', size: 8 << 20, cs: 65536, compressed: true },
  { opts: 'extended_l2=on,cluster_size=16384', size: 4 << 20, cs: 16384 },
  { opts: 'lazy_refcounts=on,cluster_size=4096', size: 2 << 20, cs: 4096 },
  { opts: 'compression_type=zstd,cluster_size=4096', size: 2 << 20, cs: 4096, compressed: true },
  { opts: 'cluster_size=2097152', size: 16 << 20, cs: 2097152 },
  { opts: 'cluster_size=65536', size: 8 << 20, cs: 65536, backing: true, compressed: true },
  { opts: 'extended_l2=on,cluster_size=32768', size: 4 << 20, cs: 32768, backing: true },
  { opts: 'cluster_size=4096', size: 2 << 20, cs: 4096, backing: true },
  { opts: 'compat=0.10,cluster_size=4096', size: 2 << 20, cs: 4096, backing: true },
];

describe('qcow2 writes: blocktab io vs qemu-io', () => {
  for (const [i, c] of cases.entries()) {
    for (const seed of [1, 2]) {
      it(`${c.opts}${c.backing ? ' + backing' : ''} seed ${seed}`, async () => {
        const name = `${i}-${seed}`;
        const a = path.join(dir, `${name}-qemu.qcow2`);
        const b = path.join(dir, `${name}-ours.qcow2`);
        const create = ['create', '-q', '-f', 'qcow2', '-o', c.opts];
        if (c.backing) {
          const base = path.join(dir, `${name}-base.qcow2`);
          qemuImg(['create', '-q', '-f', 'qcow2', base, String(c.size)]);
          spawnSync('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x5c 0 ${c.size}`, '-c', `write -z ${c.size / 4} ${c.size / 8}`, base]);
          create.push('-b', base, '-F', 'qcow2');
        }
        qemuImg([...create, a, String(c.size)]);
        qemuImg([...create, b, String(c.size)]);
        const cmds = workload(seed * 7919 + i, c.size, c.cs, 80, { compressed: !!c.compressed, truncate: !c.backing });
        if (process.env.QDIFF_DEBUG) console.log(cmds.join('\n'));
        const cmdArgs = ['-f', 'qcow2', ...cmds.flatMap((x) => ['-c', x])];
        const q = spawnSync('qemu-io', [...cmdArgs, a], { encoding: 'utf8' });
        const o = await ours([...cmdArgs, b]);
        expect(normalise(o.stdout)).toBe(normalise(q.stdout));
        expect(o.stderr.replaceAll(b, a)).toBe(q.stderr);
        expect(o.status).toBe(q.status);
        for (const f of [a, b]) {
          const r = qemuImgRun(['check', '--output=json', f]);
          const j = JSON.parse(r.stdout);
          expect({ f, status: r.status, corruptions: j.corruptions ?? 0, leaks: j.leaks ?? 0 }).toEqual({ f, status: 0, corruptions: 0, leaks: 0 });
        }
        const cmp = qemuImgRun(['compare', '-f', 'qcow2', '-F', 'qcow2', a, b]);
        expect(cmp.stdout + cmp.stderr).toContain('Images are identical');
      }, 60_000);
    }
  }
});
