/**
 * What QEMU's iotests found in the file protocol and qemu-io's open flags
 * (issue 19, raw 150 171 197 215 253, qcow2 189 198), each against qemu-img / qemu-io 7.2
 * on twin images:
 * - 150, 253: growing an empty host file allocates its first block (file-posix's
 *   allocate_first_block), so a new raw image maps 4 KiB of data.
 * - 171: qemu-io opens with discard=unmap: a discard punches a hole in the
 *   host file (reads as zeros, maps as a hole); qemu-img's opens do not.
 * - 253: cache.direct=on aligns a host file's requests, so a data extent at an
 *   unaligned end of file maps as a whole sector.
 * - 197: qemu-io -C copies what reads find in the backing file into the
 *   image, and is refused on a read-only open.
 * - 215: a read-only copy-on-read filter is refused.
 * - 189, 198: create -b and info open without I/O (no key needed or looked
 *   up); commit takes --image-opts.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { blocktab, cliEntry, qemuImg, qemuImgCreateLuks, tmpDir } from '../helpers/qemu.js';
import { runIo } from '../../src/cli/qemu-io/main.js';

const dir = tmpDir('blocktab-iot-raw-');
let seq = 0;
const twin = (ext: string) => {
  const n = ++seq;
  return [path.join(dir, `${n}-qemu.${ext}`), path.join(dir, `${n}-ours.${ext}`)] as const;
};

const timing = (t: string) => t.replace(/^(.*, \d+ ops); .* \(.*\/sec and .* ops\/sec\)$/gm, '$1; <timing>');

async function ours(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const status = await runIo(['-t', 'writeback', ...args], { out: (t) => (stdout += t), err: (t) => (stderr += t) }, Readable.from([]));
  return { status, stdout, stderr };
}

/** qemu-io on `a`, blocktab io on `b`: same output (timings aside), same status. */
async function sameIo(a: string, b: string, args: (img: string) => string[]): Promise<string> {
  const r = spawnSync('qemu-io', ['-t', 'writeback', ...args(a)], { encoding: 'utf8' });
  const o = await ours(args(b));
  expect(timing(o.stdout).replaceAll(b, a)).toBe(timing(r.stdout));
  expect(o.stderr.replaceAll(b, a)).toBe(r.stderr);
  expect(o.status).toBe(r.status);
  return r.stdout;
}

/** qemu-img map --output=json of both files (each the same tool), offsets included. */
function sameMap(a: string, b: string, args: string[] = ['-f', 'raw']): string {
  const q = qemuImg(['map', '--output=json', ...args, a]);
  expect(qemuImg(['map', '--output=json', ...args, b])).toBe(q);
  return q;
}

const cmds = (...c: string[]) => c.flatMap((x) => ['-c', x]);

describe('raw images on host files (150, 253)', () => {
  it('blocktab create allocates the first block as qemu-img create does, 4 KiB or one sector', () => {
    for (const size of ['8k', '1023']) {
      const [a, b] = twin('raw');
      qemuImg(['create', '-q', '-f', 'raw', a, size]);
      expect(blocktab(['create', '-q', '-f', 'raw', b, size]).status).toBe(0);
      expect(fs.statSync(b).size).toBe(fs.statSync(a).size);
      const map = sameMap(a, b);
      if (size !== '1023') expect(map).toContain('"start": 0, "length": 4096, "depth": 0, "present": true, "zero": false, "data": true');
    }
  });

  it('cache.direct=on maps a data extent at an unaligned end of file as whole sectors (253)', async () => {
    const [a, b] = twin('raw');
    for (const f of [a, b]) qemuImg(['create', '-q', '-f', 'raw', f, `${(1 << 20) - 1}`]);
    await sameIo(a, b, (img) => ['-f', 'raw', ...cmds(`write ${(1 << 20) - 65536} 65535`), img]);
    for (const f of [a, b]) fs.truncateSync(f, (1 << 20) - 1);
    const opts = (f: string) => `driver=raw,file.driver=file,file.filename=${f},cache.direct=on`;
    const q = qemuImg(['map', '--output=json', '--image-opts', opts(a)]);
    const o = blocktab(['map', '--output=json', '--image-opts', opts(b)]);
    expect(o.stdout.replaceAll(b, a)).toBe(q);
    expect(q).toContain('"start": 983040, "length": 65536');
    // Without cache.direct the tail past the end of file is its own zero extent (221).
    const plain = blocktab(['map', '--output=json', '-f', 'raw', b]).stdout.replaceAll(b, a);
    expect(plain).toBe(qemuImg(['map', '--output=json', '-f', 'raw', a]));
    expect(plain).toContain('"start": 983040, "length": 65535');
  });
});

describe('qemu-io discards punch holes in the host file (171)', () => {
  it('through raw, and through raw with an offset and size, as qemu-io', async () => {
    const [a, b] = twin('raw');
    for (const f of [a, b]) {
      qemuImg(['create', '-q', '-f', 'raw', f, '64k']);
      spawnSync('qemu-io', ['-f', 'raw', '-c', 'write -P 10 0 64k', f]);
    }
    const out = await sameIo(a, b, (img) => ['-f', 'raw', ...cmds('discard 4096 8192', 'read -v 4094 4', 'read -P 0 4096 8192', 'map'), img]);
    expect(out).toContain('00000ffe:  0a 0a 00 00');
    sameMap(a, b);
    const opts = (f: string) => `driver=raw,offset=16384,size=8192,file.filename=${f}`;
    await sameIo(a, b, (img) => ['--image-opts', ...cmds('discard 0 512', 'read -v 510 4', 'discard 8190 2', 'read -v 8190 2'), opts(img)]);
    sameMap(a, b);
  });

  it('qemu-img opens without unmap: its discards leave the file as it was (rebase/convert keep data)', async () => {
    const [, b] = twin('raw');
    qemuImg(['create', '-q', '-f', 'raw', b, '64k']);
    spawnSync('qemu-io', ['-f', 'raw', '-c', 'write -P 10 0 64k', b]);
    // discard=ignore (qemu-io -d ignore) leaves the data.
    await ours(['-d', 'ignore', '-f', 'raw', ...cmds('discard 0 64k'), b]);
    const opts = `driver=raw,discard=ignore,file.filename=${b}`;
    const o = await ours(['--image-opts', ...cmds('discard 0 64k', 'read -P 10 0 64k'), opts]);
    expect(o.stdout).not.toContain('Pattern verification failed');
    expect(fs.readFileSync(b).every((x) => x === 10)).toBe(true);
  });
});

describe('copy-on-read from qemu-io (197, 215)', () => {
  function chain(): readonly [string, string] {
    const [a, b] = twin('qcow2');
    for (const f of [a, b]) {
      qemuImg(['create', '-q', '-f', 'qcow2', `${f}.base`, '4M']);
      spawnSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 55 1M 64k', `${f}.base`]);
      qemuImg(['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', `${f}.base`, f]);
    }
    return [a, b];
  }

  it('-C reads copy the backing data into the image, cluster by cluster (197)', async () => {
    const [a, b] = chain();
    await sameIo(a, b, (img) => ['-f', 'qcow2', '-C', ...cmds('read -P 55 1M 4k', 'read -P 0 0 512'), img]);
    qemuImg(['rebase', '-u', '-b', '', '-f', 'qcow2', a]);
    qemuImg(['rebase', '-u', '-b', '', '-f', 'qcow2', b]);
    const map = await sameIo(a, b, (img) => ['-f', 'qcow2', ...cmds('map'), img]);
    expect(map).toContain('64 KiB (0x10000) bytes     allocated at offset 1 MiB (0x100000)');
    expect(qemuImg(['compare', '-f', 'qcow2', '-F', 'qcow2', a, b])).toContain('Images are identical');
  });

  it("-C with -r is refused with qemu-io's words (197)", async () => {
    const [a, b] = chain();
    const r = await sameIo(a, b, (img) => ['-f', 'qcow2', '-C', '-r', img]);
    expect(r).toBe('');
  });

  it('a read-only copy-on-read filter is refused: Block node is read-only (215)', async () => {
    const [a, b] = chain();
    await sameIo(a, b, (img) => cmds(`open -r -o driver=copy-on-read,file.driver=qcow2 ${img}`));
  });
});

describe('create over an encrypted backing file (189, 198)', () => {
  it("needs only the new image's key: the backing file is opened for its size without I/O, as qemu-img", () => {
    const base = path.join(dir, 'enc-base.qcow2');
    const sec0 = 'secret,id=sec0,data=12345678';
    const sec1 = 'secret,id=sec1,data=abcdefgh';
    qemuImgCreateLuks(['create', '-q', '--object', sec0, '-f', 'qcow2', '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10', base, '1M']);
    const top = path.join(dir, 'enc-top.qcow2');
    const args = (f: string) => ['create', '--object', sec1, '-f', 'qcow2', '-o', 'encrypt.format=luks,encrypt.key-secret=sec1,encrypt.iter-time=10', '-b', base, '-F', 'qcow2', f];
    const twinTop = path.join(dir, 'enc-top-qemu.qcow2');
    const q = qemuImgCreateLuks(args(twinTop));
    const o = blocktab(args(top));
    expect(o.stderr).toBe('');
    expect(o.stdout.replaceAll(top, twinTop)).toBe(q);
    // QEMU opens the pair with both keys.
    const spec = `driver=qcow2,file.filename=${top},encrypt.key-secret=sec1,backing.encrypt.key-secret=sec0`;
    const r = spawnSync('qemu-io', ['--object', sec0, '--object', sec1, '--image-opts', '-c', 'read -P 0 0 1M', spec], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('read 1048576/1048576 bytes at offset 0');
    // info opens without I/O: a key-secret naming no object is not looked up (198).
    const info = (tool: string[], f: string) => spawnSync(tool[0]!, [...tool.slice(1), 'info', '--image-opts', `driver=qcow2,file.filename=${f},encrypt.key-secret=sec0`], { encoding: 'utf8' });
    const qi = info(['qemu-img'], base);
    const oi = info([process.execPath, cliEntry], base);
    expect(oi.stderr).toBe(qi.stderr);
    // (QEMU names the image json:{…} for options beyond the file name; blocktab names the file: the image line differs.)
    const body = (t: string) => t.replace(/^(image|disk size): .*\n/gm, '');
    expect(body(oi.stdout)).toBe(body(qi.stdout));
    expect(oi.status).toBe(qi.status);
  });
});

describe('qemu-img commit --image-opts (198)', () => {
  it('commits the image the options name, as qemu-img', () => {
    const [a, b] = twin('qcow2');
    for (const f of [a, b]) {
      qemuImg(['create', '-q', '-f', 'qcow2', `${f}.base`, '1M']);
      qemuImg(['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', `${f}.base`, f]);
      spawnSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 14 0 64k', f]);
    }
    const q = spawnSync('qemu-img', ['commit', '--image-opts', `driver=qcow2,file.filename=${a}`], { encoding: 'utf8' });
    const o = blocktab(['commit', '--image-opts', `driver=qcow2,file.filename=${b}`]);
    expect([o.status, o.stdout, o.stderr]).toEqual([q.status, q.stdout, q.stderr]);
    expect(qemuImg(['compare', '-f', 'qcow2', '-F', 'qcow2', `${a}.base`, `${b}.base`])).toContain('Images are identical');
    expect(qemuIoRead(`${b}.base`)).toContain('read 65536/65536 bytes at offset 0');
  });
});

const qemuIoRead = (f: string) => spawnSync('qemu-io', ['-f', 'qcow2', '-c', 'read -P 14 0 64k', f], { encoding: 'utf8' }).stdout;
