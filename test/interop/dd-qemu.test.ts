/**
 * blocktab dd vs qemu-img dd: the same input through both, then the same
 * exit code and messages (every line), and output images with the same
 * virtual size and data (raw outputs byte for byte; qcow2 outputs by
 * qemu-img compare, and check clean).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';
import { main } from '../../src/cli/main.js';

const dir = tmpDir('dd-qemu-');

async function bt(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const status = await main(args, { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s) });
  return { status, stdout, stderr };
}

/** A 256 KiB + 1000 byte input with data, a hole and a pattern near the end. */
function makeInput(fmt: 'raw' | 'qcow2'): string {
  const f = path.join(dir, `in.${fmt}`);
  if (fs.existsSync(f)) return f;
  qemuImg(['create', '-q', '-f', fmt, f, String(262144 + 1000)]);
  qemuIo(f, ['write -P 0xa 24 128k', 'write -P 0x5c 196608 4096', 'write -P 0x33 262144 1000'], fmt);
  return f;
}

const cases: Array<{ fmt: 'raw' | 'qcow2'; out: 'raw' | 'qcow2'; ops: string[] }> = [
  { fmt: 'qcow2', out: 'qcow2', ops: [] },
  { fmt: 'qcow2', out: 'raw', ops: ['bs=5', 'count=9000', 'skip=5000'] },
  { fmt: 'raw', out: 'raw', ops: ['bs=1999', 'count=100'] },
  { fmt: 'raw', out: 'qcow2', ops: ['bs=64K', 'skip=3'] },
  { fmt: 'raw', out: 'raw', ops: ['skip=30K'] },
  { fmt: 'qcow2', out: 'raw', ops: ['bs=1K', 'skip=1', 'count=2'] },
  { fmt: 'raw', out: 'raw', ops: ['bs=0'] },
  { fmt: 'raw', out: 'raw', ops: ['count=-1'] },
  { fmt: 'raw', out: 'raw', ops: ['bs=1x'] },
  { fmt: 'raw', out: 'raw', ops: ['foo=1'] },
  { fmt: 'raw', out: 'raw', ops: ['foo'] },
  { fmt: 'raw', out: 'raw', ops: ['NOOF'] },
];

describe('dd against qemu-img dd', () => {
  let n = 0;
  for (const c of cases) {
    it(`${c.fmt} -> ${c.out} ${c.ops.join(' ')}`, async () => {
      const id = ++n;
      const input = makeInput(c.fmt);
      const theirs = path.join(dir, `t${id}.${c.out}`);
      const ours = path.join(dir, `o${id}.${c.out}`);
      const args = (of: string) => ['dd', '-f', c.fmt, '-O', c.out, `if=${input}`, ...(c.ops[0] === 'NOOF' ? [] : [`of=${of}`, ...c.ops])];
      const t = qemuImgRun(args(theirs));
      const r = await bt(args(ours));
      expect(r.status).toBe(t.status);
      expect(r.stdout).toBe(t.stdout);
      expect(r.stderr).toBe(t.stderr.replace(/^qemu-img: /gm, 'blocktab: ').replaceAll(theirs, ours));
      expect(fs.existsSync(ours)).toBe(fs.existsSync(theirs));
      if (!fs.existsSync(theirs)) return;
      const vs = (f: string) => (JSON.parse(qemuImg(['info', '-f', c.out, '--output=json', f])) as { 'virtual-size': number })['virtual-size'];
      expect(vs(ours)).toBe(vs(theirs));
      if (c.out === 'raw') expect(Buffer.compare(fs.readFileSync(ours), fs.readFileSync(theirs))).toBe(0);
      else {
        expect(qemuImgRun(['compare', '-f', c.out, '-F', c.out, ours, theirs]).status).toBe(0);
        expect(qemuImgRun(['check', ours]).status).toBe(0);
      }
    });
  }

  it('reads --image-opts input', async () => {
    const input = makeInput('qcow2');
    const theirs = path.join(dir, 'io-t.raw');
    const ours = path.join(dir, 'io-o.raw');
    const t = qemuImgRun(['dd', '--image-opts', `if=driver=qcow2,file.filename=${input}`, `of=${theirs}`, 'bs=4K', 'count=100']);
    const r = await bt(['dd', '--image-opts', `if=driver=qcow2,file.filename=${input}`, `of=${ours}`, 'bs=4K', 'count=100']);
    expect([r.status, r.stderr]).toEqual([t.status, t.stderr]);
    expect(Buffer.compare(fs.readFileSync(ours), fs.readFileSync(theirs))).toBe(0);
  });
});
