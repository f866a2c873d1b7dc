/**
 * A `create` that fails leaves what qemu-img 7.2 leaves: no file when the
 * format checks its options first (qcow2, luks, vmdk), the image file removed
 * — even one that existed — when qcow2's or luks's create fails (QEMU deletes
 * it), an empty file where QEMU's driver made it before failing (vpc), and
 * qemu-img create's wording for a size the format cannot hold.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { blocktab, qemuImgRun, tmpDir } from '../helpers/qemu.js';

const cases: string[][] = [
  ['-f', 'qcow2', '-o', 'cluster_size=3', 'x', '1M'],
  ['-f', 'qcow2', '-o', 'compat=0.10,lazy_refcounts=on', 'x', '1M'],
  ['-f', 'vmdk', '-o', 'subformat=foo', 'x', '1M'],
  ['-f', 'luks', '-o', 'key-secret=nope', 'x', '1M'],
  ['-f', 'vpc', 'x', '3T'],
  ['-f', 'vpc', '-o', 'subformat=fixed', 'x', '2041G'],
  ['-f', 'vpc', '-o', 'subformat=foo', 'x', '1M'],
];

/** What a create leaves: output, exit code, and the file (absent, or its size and first bytes). */
function run(tool: 'ours' | 'theirs', dir: string, args: string[], existing: boolean) {
  const d = path.join(dir, `${tool}-${existing ? 'old' : 'new'}`);
  fs.mkdirSync(d);
  if (existing) fs.writeFileSync(path.join(d, 'x'), 'an existing file\n');
  const r = tool === 'ours' ? blocktab(['create', ...args], { cwd: d }) : qemuImgRun(['create', ...args], { cwd: d });
  const file = path.join(d, 'x');
  const left = fs.existsSync(file) ? `${fs.statSync(file).size}:${fs.readFileSync(file).subarray(0, 16).toString('hex')}` : 'absent';
  return { out: r.stdout, err: r.stderr.replace(/^(blocktab|qemu-img): /gm, ''), status: r.status, left };
}

describe('a failed create leaves what qemu-img leaves', () => {
  for (const args of cases) {
    it(args.join(' '), () => {
      const dir = tmpDir('fmt-create-err-');
      for (const existing of [false, true]) {
        const ours = run('ours', dir, args, existing);
        const theirs = run('theirs', dir, args, existing);
        expect(theirs.status, 'qemu-img must fail here').toBe(1);
        expect(ours, existing ? 'over an existing file' : 'new file').toEqual(theirs);
      }
    });
  }
});
