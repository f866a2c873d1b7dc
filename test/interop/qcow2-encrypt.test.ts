/**
 * Encrypted qcow2 (encrypt.format=luks and the legacy aes) against qemu-img
 * and qemu-io: images QEMU made read the same through blocktab (data and
 * `info` exactly), images blocktab makes and writes read the same through
 * QEMU (`qemu-img compare` with the key, `check` clean), convert to and
 * from encrypted images, and QEMU's messages for a missing or wrong key.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { blocktab, qemuImg, qemuImgCreateLuks, qemuImgRun, tmpDir } from '../helpers/qemu.js';
import { execFileSync } from 'node:child_process';

const dir = tmpDir('qcow2-encrypt-');
const SECRET = 'secret,id=sec0,data=astrochicken';
const WRONG = 'secret,id=sec0,data=platypus';
const spec = (f: string) => `driver=qcow2,file.filename=${f},encrypt.key-secret=sec0`;
const WRITES = ['write -P 0x5a 1000 70000', 'write -P 0x11 200k 4k', 'write -z 300k 64k', 'write -P 0x7e 1048064 512'];
const READS = ['read -P 0x5a 1000 70000', 'read -P 0 0 1000', 'read -P 0x11 200k 4k', 'read -P 0 300k 64k', 'read -P 0x7e 1048064 512'];

const formats = [
  { name: 'luks', opts: 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10' },
  { name: 'aes', opts: 'encrypt.format=aes,encrypt.key-secret=sec0' },
];

function qemuIoKey(file: string, cmds: string[]): string {
  return execFileSync('qemu-io', ['--object', SECRET, '--image-opts', spec(file), ...cmds.flatMap((c) => ['-c', c])], { encoding: 'utf8' });
}

function btIo(file: string, cmds: string[], secret = SECRET): { status: number; stdout: string; stderr: string } {
  return blocktab(['io', '--object', secret, '--image-opts', spec(file), ...cmds.flatMap((c) => ['-c', c])]);
}

const noTimes = (s: string) => s.replace(/^.*ops\/sec\)\n/gm, '');

describe('encrypted qcow2 against QEMU', () => {
  for (const f of formats) {
    it(`${f.name}: QEMU's image reads the same through blocktab (data, info, raw conversion)`, () => {
      const img = path.join(dir, `q-${f.name}.qcow2`);
      qemuImgCreateLuks(['create', '-q', '-f', 'qcow2', '--object', SECRET, '-o', f.opts, img, '1M']);
      qemuIoKey(img, WRITES);
      const r = btIo(img, READS);
      expect(r.stderr).toBe('');
      expect(noTimes(r.stdout)).not.toMatch(/Pattern verification failed/);
      expect(r.status).toBe(0);
      for (const out of ['human', 'json']) {
        expect(blocktab(['info', `--output=${out}`, img]).stdout).toBe(qemuImg(['info', `--output=${out}`, img]));
      }
      const theirs = path.join(dir, `q-${f.name}.t.raw`);
      const ours = path.join(dir, `q-${f.name}.o.raw`);
      qemuImg(['convert', '--object', SECRET, '--image-opts', spec(img), '-O', 'raw', theirs]);
      expect(blocktab(['convert', '--object', SECRET, '--image-opts', spec(img), '-O', 'raw', ours]).status).toBe(0);
      expect(Buffer.compare(fs.readFileSync(ours), fs.readFileSync(theirs))).toBe(0);
    });

    it(`${f.name}: blocktab's image and writes read the same through QEMU`, () => {
      const img = path.join(dir, `b-${f.name}.qcow2`);
      const ref = path.join(dir, `b-${f.name}.raw`);
      const c = blocktab(['create', '-f', 'qcow2', '--object', SECRET, '-o', f.opts, img, '1M']);
      expect(c.stderr).toBe('');
      expect(c.status).toBe(0);
      expect(btIo(img, WRITES).status).toBe(0);
      qemuImg(['create', '-q', '-f', 'raw', ref, '1M']);
      execFileSync('qemu-io', ['-f', 'raw', ...WRITES.flatMap((w) => ['-c', w]), ref]);
      const cmp = qemuImgRun(['compare', '--object', SECRET, '--image-opts', spec(img), `driver=raw,file.filename=${ref}`]);
      expect(cmp.stdout).toBe('Images are identical.\n');
      const chk = qemuImgRun(['check', '--object', SECRET, '--image-opts', spec(img)]);
      expect(chk.stdout).toMatch(/^No errors were found on the image\./);
      expect(chk.status).toBe(0);
      // Layout as QEMU's: the same header fields and file length as an image qemu-img makes.
      const twin = path.join(dir, `b-${f.name}.twin.qcow2`);
      qemuImgCreateLuks(['create', '-q', '-f', 'qcow2', '--object', SECRET, '-o', f.opts, twin, '1M']);
      const info = (p: string) =>
        qemuImg(['info', p])
          .replace(/^(image|disk size):.*$/gm, '')
          .replace(/(uuid|iters|master key iters): .*/g, '$1: X');
      expect(info(img)).toBe(info(twin));
    });

    it(`${f.name}: convert to an encrypted target`, () => {
      const src = path.join(dir, `c-${f.name}.raw`);
      const img = path.join(dir, `c-${f.name}.qcow2`);
      qemuImg(['create', '-q', '-f', 'raw', src, '1M']);
      execFileSync('qemu-io', ['-f', 'raw', ...WRITES.flatMap((w) => ['-c', w]), src]);
      const r = blocktab(['convert', '--object', SECRET, '-O', 'qcow2', '-o', f.opts, src, img]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const cmp = qemuImgRun(['compare', '--object', SECRET, '--image-opts', spec(img), `driver=raw,file.filename=${src}`]);
      expect(cmp.stdout).toBe('Images are identical.\n');
    });

    it(`${f.name}: convert to an encrypted target with preallocated metadata writes the zeros (iotest 188)`, () => {
      // Its clusters are mapped from the start and decrypt to noise, so the source's holes must be written.
      const src = path.join(dir, `p-${f.name}.raw`);
      const img = path.join(dir, `p-${f.name}.qcow2`);
      qemuImg(['create', '-q', '-f', 'raw', src, '1M']);
      execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x33 64k 64k', src]);
      const r = blocktab(['convert', '--object', SECRET, '-O', 'qcow2', '-o', `${f.opts},preallocation=metadata`, src, img]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const cmp = qemuImgRun(['compare', '--object', SECRET, '--image-opts', spec(img), `driver=raw,file.filename=${src}`]);
      expect(cmp.stdout).toBe('Images are identical.\n');
    });
  }

  it("QEMU's messages for a missing key and a wrong password (luks)", () => {
    const img = path.join(dir, 'q-luks.qcow2');
    if (!fs.existsSync(img)) qemuImgCreateLuks(['create', '-q', '-f', 'qcow2', '--object', SECRET, '-o', formats[0]!.opts, img, '1M']);
    const noKey = blocktab(['io', '-c', 'read 0 512', img]);
    const qNoKey = qemuImgRun(['check', img]);
    expect(noKey.status).toBe(1);
    expect(noKey.stderr).toMatch(/Parameter 'encrypt\.key-secret' is required for cipher/);
    expect(qNoKey.stderr).toMatch(/Parameter 'encrypt\.key-secret' is required for cipher/);
    const wrong = btIo(img, ['read 0 512'], WRONG);
    expect(wrong.stderr.replace(/^blocktab: |^qemu-io: /, '')).toBe("can't open: Invalid password, cannot unlock any keyslot\n");
  });
});
