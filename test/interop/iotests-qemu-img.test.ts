/**
 * qemu-img behaviours QEMU's iotests found (issue 19), each compared with
 * qemu-img 7.2 on images it made and named after the iotest. blocktab runs
 * in-process (no build needed).
 */
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { qemuImg, qemuImgRun, tmpDir } from '../helpers/qemu.js';
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
