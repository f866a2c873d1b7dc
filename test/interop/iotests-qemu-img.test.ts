/**
 * qemu-img behaviours QEMU's iotests found (issue 19), each compared with
 * qemu-img 7.2 on images it made and named after the iotest. blocktab runs
 * in-process (no build needed).
 */
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';
import * as fs from 'node:fs';
import { main } from '../../src/cli/main.js';

const dir = tmpDir('iotests-qemu-img-');

async function bt(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const status = await main(args, { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s) });
  return { status, stdout, stderr: stderr.replace(/^blocktab: /gm, 'qemu-img: ') };
}

/** Drops the lines that depend on the host file system's allocation. */
const noDiskSize = (s: string) => s.replace(/^disk size: .*\n/gm, '');

describe('info --backing-chain --image-opts (279)', () => {
  it('reads only the first name as an option list and follows the backing names as file names', async () => {
    const img = path.join(dir, 't.qcow2');
    qemuImg(['create', '-f', 'qcow2', `${img}.base`, '64M']);
    qemuImg(['create', '-f', 'qcow2', '-b', `${img}.base`, '-F', 'qcow2', `${img}.mid`]);
    qemuImg(['create', '-f', 'qcow2', '-b', `${img}.mid`, '-F', 'qcow2', img]);
    const args = ['info', '--backing-chain', '--image-opts', `driver=qcow2,file.driver=file,file.filename=${img}`];
    const o = await bt(args);
    const t = qemuImgRun(args);
    expect(t.status).toBe(0);
    expect(o.stderr).toBe(t.stderr);
    expect(noDiskSize(o.stdout)).toBe(noDiskSize(t.stdout));
    expect(o.stdout.match(/^image: /gm)).toHaveLength(3);
    // The flag does not outlive the command (main runs several in one process).
    const plain = await bt(['info', img]);
    expect(plain.status).toBe(0);
  });
});

describe('convert -l: the source as an internal snapshot shows it (029)', () => {
  it('copies the snapshot, not the current data, given by name or as snapshot.name=/snapshot.id=, as qemu-img', async () => {
    const img = path.join(dir, 'snap-src.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', img, '1M']);
    qemuIo(img, ['write -P 7 0 64k'], 'qcow2');
    qemuImg(['snapshot', '-c', 'foo', img]);
    qemuIo(img, ['write -P 8 0 64k', 'write -P 9 512k 4k'], 'qcow2');
    const want = path.join(dir, 'snap-want.raw');
    expect(qemuImgRun(['convert', '-l', 'foo', '-O', 'raw', img, want]).status).toBe(0);
    for (const param of ['foo', 'snapshot.name=foo', 'snapshot.id=1']) {
      const got = path.join(dir, 'snap-got.raw');
      const o = await bt(['convert', '-l', param, '-O', 'raw', img, got]);
      expect([o.status, o.stderr]).toEqual([0, '']);
      expect(Buffer.compare(fs.readFileSync(got), fs.readFileSync(want))).toBe(0);
    }
    expect(fs.readFileSync(want)[0]).toBe(7);
    // An unknown snapshot fails with qemu-img's prefix; several sources are refused with its message.
    const bad = await bt(['convert', '-l', 'nope', '-O', 'raw', img, path.join(dir, 'snap-bad.raw')]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/^qemu-img: Failed to load snapshot: /);
    const two = await bt(['convert', '-l', 'foo', '-O', 'raw', img, img, path.join(dir, 'snap-two.raw')]);
    const twoWant = qemuImgRun(['convert', '-l', 'foo', '-O', 'raw', img, img, path.join(dir, 'snap-two.raw')]);
    expect([two.status, two.stderr.split('\n')[0]]).toEqual([twoWant.status, twoWant.stderr.split('\n')[0]]);
  });
});

describe('compare through blkdebug (074)', () => {
  it("a read error names the image as given, and a size difference still warns after it, as qemu-img", async () => {
    const conf = path.join(dir, 'cmp-blkdebug.conf');
    fs.writeFileSync(conf, '[inject-error]\nevent = "read_aio"\nerrno = "5"\nonce ="off"\n');
    const a = path.join(dir, 'cmp-a.qcow2');
    const b = path.join(dir, 'cmp-b.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', a, '64M']);
    qemuIo(a, ['write -P 102 512 512'], 'qcow2');
    for (const size of ['64M', '0']) {
      qemuImg(['create', '-q', '-f', 'qcow2', b, size]);
      const args = ['compare', `blkdebug:${conf}:${a}`, b];
      const o = await bt(args);
      const t = qemuImgRun(args);
      expect(t.status).toBe(4);
      expect([o.status, o.stderr, o.stdout]).toEqual([t.status, t.stderr, t.stdout]);
    }
  });
});
