/**
 * qcow2's cache options as qemu-io's `open -o` passes them (iotest 103):
 * cache-size, l2-cache-size, refcount-cache-size, l2-cache-entry-size, with
 * QemuOpts sizes ("0.25M", "128k") and QEMU's checks and words for bad
 * combinations. One qemu-io and one blocktab run over every case.
 */
import { describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { blocktab, qemuImg, tmpDir } from '../helpers/qemu.js';
import { spawnSync } from 'node:child_process';

const CASES = [
  'cache-size=1.25M,l2-cache-size=1M,refcount-cache-size=0.25M',
  'cache-size=1M,l2-cache-size=2M',
  'cache-size=1M,refcount-cache-size=2M',
  'cache-size=0,l2-cache-size=0,refcount-cache-size=0',
  'l2-cache-entry-size=256',
  'l2-cache-entry-size=4242',
  'l2-cache-entry-size=128k',
  'cache-size=0',
  'l2-cache-size=0',
  'refcount-cache-size=0',
  'cache-size=2M',
  'cache-size=2M,l2-cache-size=1M',
  'cache-size=2M,refcount-cache-size=1M',
  'l2-cache-size=1M,refcount-cache-size=0.25M',
  'l2-cache-entry-size=512',
  'l2-cache-entry-size=16k',
  'l2-cache-entry-size=64k',
];

describe('qcow2 cache options through qemu-io open -o (103)', () => {
  it('accepts and refuses what qemu-io does, with its messages', () => {
    const dir = tmpDir('blocktab-cacheopts-');
    const img = path.join(dir, 'a.qcow2');
    qemuImg(['create', '-f', 'qcow2', img, '64M']);
    const cmds = CASES.flatMap((o) => ['-c', `open -o ${o} ${img}`, '-c', 'read -P 0 0 64k', '-c', 'close']);
    const q = spawnSync('qemu-io', cmds, { encoding: 'utf8' });
    const b = blocktab(['io', ...cmds]);
    const norm = (t: string) => t.replace(/^(qemu-io|blocktab): /gm, 'PROG: ').replace(/\d+\.\d+ sec.*$/gm, 'TIME');
    expect(norm(b.stdout + b.stderr)).toBe(norm(q.stdout + q.stderr));
    expect(q.stderr).toContain('may not be set at the same time');
  });
});
