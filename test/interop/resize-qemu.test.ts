/**
 * blocktab resize vs qemu-img resize on twins (raw and qcow2): same exit
 * code, output and first error line, same virtual size and data afterwards.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';
import { main } from '../../src/cli/main.js';

const dir = tmpDir('resize-qemu-');

async function bt(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const status = await main(args, { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s) });
  return { status, stdout, stderr };
}

const cases: Array<{ fmt: 'raw' | 'qcow2'; args: string[] }> = [
  { fmt: 'qcow2', args: ['+1M'] },
  { fmt: 'qcow2', args: ['1M'] },
  { fmt: 'qcow2', args: ['--shrink', '2M'] },
  { fmt: 'qcow2', args: ['--shrink', '-1M'] },
  { fmt: 'qcow2', args: ['-100M'] },
  { fmt: 'qcow2', args: ['abc'] },
  { fmt: 'qcow2', args: ['-q', '+1M'] },
  { fmt: 'qcow2', args: ['7M'] },
  { fmt: 'raw', args: ['2M'] },
  { fmt: 'raw', args: ['1000'] },
  { fmt: 'raw', args: ['--shrink', '1000'] },
  { fmt: 'raw', args: ['--preallocation=full', '5M'] },
  { fmt: 'raw', args: ['--preallocation=foo', '5M'] },
];

describe('resize against qemu-img resize', () => {
  let n = 0;
  for (const c of cases) {
    it(`${c.fmt} ${c.args.join(' ')}`, async () => {
      const id = ++n;
      const theirs = path.join(dir, `t${id}.img`);
      const ours = path.join(dir, `o${id}.img`);
      qemuImg(['create', '-q', '-f', c.fmt, theirs, '4M']);
      qemuIo(theirs, ['write -P 0x5a 0 3M'], c.fmt);
      fs.copyFileSync(theirs, ours);
      const size = c.args[c.args.length - 1]!;
      const opts = c.args.slice(0, -1);
      const t = qemuImgRun(['resize', '-f', c.fmt, ...opts, theirs, ...(size.startsWith('-') ? ['--'] : []), size]);
      const r = await bt(['resize', '-f', c.fmt, ...opts, ours, size]);
      expect(r.status).toBe(t.status);
      expect(r.stdout).toBe(t.stdout);
      expect(r.stderr.split('\n')[0]).toBe(t.stderr.split('\n')[0]!.replace(/^qemu-img: /, 'blocktab: '));
      const vs = (f: string) => (JSON.parse(qemuImg(['info', '-f', c.fmt, '--output=json', f])) as { 'virtual-size': number })['virtual-size'];
      expect(vs(ours)).toBe(vs(theirs));
      expect(qemuImgRun(['compare', '-f', c.fmt, '-F', c.fmt, ours, theirs]).status).toBe(0);
      if (c.fmt === 'qcow2') expect(qemuImgRun(['check', ours]).status).toBe(0);
    });
  }
});
