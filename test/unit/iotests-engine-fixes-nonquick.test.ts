/**
 * qemu-img measure and amend behaviours QEMU's non-quick iotests 178 and 061
 * found (issue 19), reproduced on our own images and compared with
 * Debian's qemu-img where it can run the same command.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { main, type Output } from '../../src/cli/main.js';
import { qemuImg, qemuImgRun, qemuImgRunLuks, qemuIo, tmpDir } from '../helpers/qemu.js';

async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const out: Output = { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s) };
  const code = await main(args, out);
  return { code, stdout, stderr };
}

/** stderr without the program name, one entry per line (qemu-img's "qemu-img: ", ours "blocktab: "). */
function messages(stderr: string): string[] {
  return stderr.split('\n').filter(Boolean).map((l) => l.replace(/^[^:]+: /, ''));
}

describe('qemu-img measure checks its arguments in qemu-img\'s order (178)', () => {
  const cases: string[][] = [
    ['measure', '-l', 'snap1'],
    ['measure', '-f', 'qcow2'],
    ['measure', '-o', ','],
    ['measure', '-l', 'snapshot.foo=bar'],
    ['measure', '--size', '-1'],
    ['measure', '-O', 'qcow2', '--size', '7E'],
  ];
  for (const args of cases) {
    it(args.join(' '), async () => {
      const q = qemuImgRun(args);
      const ours = await run(args);
      expect(ours.code).toBe(q.status);
      expect(messages(ours.stderr)).toEqual(messages(q.stderr));
    });
  }

  // raw's figures past 2^53 are exact (sector rounding of an exact size): printed as the integers they are.
  for (const size of ['7E', '9007199254740994', '4611686018427387904']) {
    for (const fmt of ['human', 'json']) {
      it(`-O raw --size ${size} --output=${fmt} prints qemu-img's figures`, async () => {
        const args = ['measure', '-O', 'raw', '--size', size, `--output=${fmt}`];
        const q = qemuImgRun(args);
        const ours = await run(args);
        expect(ours.stderr).toBe('');
        expect(ours.code).toBe(q.status);
        expect(ours.stdout).toBe(q.stdout);
      });
    }
  }

  it('two filenames and --image-opts without one', async () => {
    const d = tmpDir();
    const img = path.join(d, 'a.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', img, '1M']);
    for (const args of [['measure', img, 'a'], ['measure', '--image-opts']]) {
      const q = qemuImgRun(args);
      const ours = await run(args);
      expect(messages(ours.stderr)).toEqual(messages(q.stderr));
    }
  });

  it('-l measures what the snapshot holds; LUKS encryption adds its header clusters to both sizes', async () => {
    const d = tmpDir();
    const img = path.join(d, 'a.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', img, '1G']);
    qemuIo(img, ['write 512 512', 'write 64K 64K'], 'qcow2');
    qemuImg(['snapshot', '-c', 'snapshot1', img]);
    qemuIo(img, ['write 128M 63K'], 'qcow2');
    const variants = [
      ['-l', 'snapshot1'],
      ['-l', 'snapshot.name=snapshot1'],
      ['--object', 'secret,id=sec0,data=base', '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.cipher-alg=aes-128,encrypt.iter-time=10,cluster_size=4k'],
    ];
    for (const v of variants) {
      const args = ['measure', '--output=json', '-f', 'qcow2', '-O', 'qcow2', ...v, img];
      const ours = await run(args);
      expect(ours.stderr).toBe('');
      expect(JSON.parse(ours.stdout)).toEqual(JSON.parse(qemuImgRunLuks(args).stdout));
    }
  }, 60_000);
});

describe('qemu-img amend (061)', () => {
  it('refuses a downgrade when a snapshot has another disk size, after the resize; allows it once they agree', async () => {
    const d = tmpDir();
    const img = path.join(d, 'a.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', img, '32M']);
    qemuImg(['snapshot', '-c', 'foo', img]);
    qemuImg(['amend', '-o', 'compat=1.1,size=128M', img]);
    qemuImg(['snapshot', '-c', 'bar', img]);
    const bad = await run(['amend', '-o', 'compat=0.10,size=32M', img]);
    expect(bad.code).toBe(1);
    expect(messages(bad.stderr)).toEqual(['Internal snapshots prevent downgrade of image']);
    let info = JSON.parse(qemuImg(['info', '--output=json', img]));
    expect([info['format-specific'].data.compat, info['virtual-size']]).toEqual(['1.1', 32 << 20]);
    qemuImg(['snapshot', '-d', 'bar', img]);
    expect((await run(['amend', '-o', 'compat=0.10', img])).code).toBe(0);
    info = JSON.parse(qemuImg(['info', '--output=json', img]));
    expect(info['format-specific'].data.compat).toBe('0.10');
    expect(qemuImg(['check', img])).toContain('No errors were found');
  });

  it('accepts the backing file and format the image already has, refuses another', async () => {
    const d = tmpDir();
    const base = path.join(d, 'base.qcow2');
    const img = path.join(d, 'a.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', base, '1M']);
    qemuImg(['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', img, '1M']);
    expect((await run(['amend', '-o', `backing_file=${base},backing_fmt=qcow2`, img])).code).toBe(0);
    const other = await run(['amend', '-o', `backing_file=${base}`, img]);
    expect(other.stderr).toContain('Cannot amend the backing file');
  });

  it('sets and drops the data file name, clears data_file_raw, never sets it', async () => {
    const d = tmpDir();
    const img = path.join(d, 'a.qcow2');
    const data = path.join(d, 'a.data');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', `data_file=${data},data_file_raw=on`, img, '1M']);
    const spec = () => JSON.parse(qemuImg(['info', '--output=json', img]))['format-specific'].data;
    expect((await run(['amend', '-o', 'data_file_raw=on', img])).code).toBe(0);
    expect((await run(['amend', '-o', 'data_file_raw=off', img])).code).toBe(0);
    expect(spec()['data-file-raw']).toBe(false);
    expect(messages((await run(['amend', '-o', 'data_file_raw=on', img])).stderr)).toEqual(['data-file-raw cannot be set on existing images']);
    expect((await run(['amend', '-o', 'data_file=foo', img])).code).toBe(0);
    expect(spec()['data-file']).toBe('foo');
    expect((await run(['amend', '-o', 'data_file=', '--image-opts', `data-file.filename=${data},file.filename=${img}`])).code).toBe(0);
    expect(spec()['data-file']).toBeUndefined();
    const plain = path.join(d, 'plain.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', plain, '1M']);
    expect(messages((await run(['amend', '-o', 'data_file=foo', plain])).stderr)).toEqual(['data-file can only be set for images that use an external data file']);
  });

  it('-p prints progress over the L1 entries of the downgrade', async () => {
    const d = tmpDir();
    const img = path.join(d, 'a.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', img, '4G']);
    qemuIo(img, ['write -z 0 64k', 'write -z 1G 64k'], 'qcow2');
    const twin = path.join(d, 'b.qcow2');
    fs.copyFileSync(img, twin);
    const ours = await run(['amend', '-p', '-o', 'compat=0.10', img]);
    expect(ours.stdout).toBe(qemuImg(['amend', '-p', '-o', 'compat=0.10', twin]));
  });
});
