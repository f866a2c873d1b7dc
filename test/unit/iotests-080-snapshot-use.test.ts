/**
 * QEMU's qcow2 iotest 080, the snapshot cases (issue 19): a snapshot entry
 * whose L1 table is misaligned or too large does not keep the image from
 * opening; each use of that snapshot is refused with QEMU's texts (compared
 * with Debian's qemu-img on a copy of the same image). A snapshot table past
 * the end of the file reads as zeros, as in QEMU, and nothing is written from
 * it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { main, type Output } from '../../src/cli/main.js';
import { setErrorWording } from '../../src/block/errors.js';
import { qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';

async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const out: Output = { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s) };
  // The engine's error_report lines go to the process's stderr (cliWarn): collected in order with the rest.
  const write = process.stderr.write;
  process.stderr.write = ((s: string | Uint8Array) => {
    stderr += String(s);
    return true;
  }) as typeof process.stderr.write;
  try {
    const code = await main(args, out);
    return { code, stdout, stderr };
  } finally {
    process.stderr.write = write;
  }
}

/** stderr without the program name, one entry per line. */
function messages(stderr: string): string[] {
  return stderr.split('\n').filter(Boolean).map((l) => l.replace(/^(qemu-img|blocktab): /, ''));
}

function poke(file: string, offset: number, bytes: string): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, Buffer.from(bytes, 'hex'), 0, bytes.length / 2, offset);
  } finally {
    fs.closeSync(fd);
  }
}

/** The header's snapshots_offset (u64 at 64). */
function snapshotsOffset(file: string): number {
  return Number(fs.readFileSync(file).readBigUInt64BE(64));
}

afterEach(() => setErrorWording('detailed'));

/** A 64M image with one written cluster and snapshot 'test', then `bad` applied to the snapshot entry. */
function imageWithBadSnapshot(d: string, name: string, bad: (img: string, entry: number) => void): string {
  const img = path.join(d, name);
  qemuImg(['create', '-q', '-f', 'qcow2', img, '64M']);
  qemuIo(img, ['write 0 512']);
  qemuImg(['snapshot', '-c', 'test', img]);
  bad(img, snapshotsOffset(img));
  return img;
}

const badEntries: Array<{ name: string; bad: (img: string, entry: number) => void }> = [
  { name: 'misaligned L1 table offset', bad: (img, e) => poke(img, e, '0000000000400200') },
  { name: 'L1 table too large', bad: (img, e) => poke(img, e + 8, '10000000') },
];

const uses: Array<{ name: string; args: (img: string) => string[] }> = [
  { name: 'convert -l', args: (img) => ['convert', '-l', 'test', img, `${img}.snap`] },
  { name: 'amend -o compat=0.10', args: (img) => ['amend', '-o', 'compat=0.10', img] },
  { name: 'snapshot -a', args: (img) => ['snapshot', '-a', 'test', img] },
  { name: 'snapshot -d', args: (img) => ['snapshot', '-d', 'test', img] },
  { name: 'check', args: (img) => ['check', img] },
];

describe('a snapshot with a bad L1 table: the image opens, the snapshot is refused where used (080)', () => {
  for (const b of badEntries) {
    it(`${b.name}: the image opens and reads`, async () => {
      const d = tmpDir();
      const img = imageWithBadSnapshot(d, 't.qcow2', b.bad);
      const before = fs.readFileSync(img);
      const info = await run(['info', '--output=json', img]);
      expect(info.code).toBe(0);
      expect(JSON.parse(info.stdout)['virtual-size']).toBe(64 * 1024 * 1024);
      const read = await run(['convert', '-O', 'raw', img, path.join(d, 'out.raw')]);
      expect(read.code).toBe(0);
      expect(fs.readFileSync(img).equals(before)).toBe(true);
    });
    for (const u of uses) {
      it(`${b.name}: ${u.name} as qemu-img`, async () => {
        const d = tmpDir();
        const theirs = imageWithBadSnapshot(d, 'q.qcow2', b.bad);
        const ours = path.join(d, 'o.qcow2');
        fs.copyFileSync(theirs, ours);
        const q = qemuImgRun(u.args(theirs));
        setErrorWording('qemu');
        const o = await run(u.args(ours));
        setErrorWording('detailed');
        expect(o.code).toBe(q.status);
        expect(q.status).not.toBe(0);
        expect(messages(o.stderr)).toEqual(messages(q.stderr.replaceAll(theirs, ours)));
        expect(o.stdout.replaceAll(ours, 'IMG')).toEqual(q.stdout.replaceAll(theirs, 'IMG'));
        // Nothing was written from the bad entry: both images are still byte for byte what they were.
        expect(fs.readFileSync(ours).equals(fs.readFileSync(theirs))).toBe(true);
      });
    }
  }

  it("blocktab's own wording names the snapshot and the offset", async () => {
    const d = tmpDir();
    const img = imageWithBadSnapshot(d, 't.qcow2', badEntries[0]!.bad);
    const o = await run(['snapshot', '-d', 'test', img]);
    expect(o.code).not.toBe(0);
    expect(o.stderr).toContain("snapshot 1 ('test'): L1 table offset 0x400200 is not cluster-aligned");
  });
});

describe('a snapshot table past the end of the file (080)', () => {
  it('65536 entries past the end: the image reads; creating a snapshot fails with -27 as in qemu-img', async () => {
    const d = tmpDir();
    const theirs = path.join(d, 'q.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', theirs, '64M']);
    poke(theirs, 64, '0000000001000000');
    poke(theirs, 60, '00010000');
    const ours = path.join(d, 'o.qcow2');
    fs.copyFileSync(theirs, ours);
    const q = qemuImgRun(['snapshot', '-c', 'test', theirs]);
    setErrorWording('qemu');
    const o = await run(['snapshot', '-c', 'test', ours]);
    setErrorWording('detailed');
    expect(q.status).not.toBe(0);
    expect(o.code).toBe(q.status);
    expect(messages(o.stderr)).toEqual(messages(q.stderr.replaceAll(theirs, ours)));
    const info = await run(['info', '--output=json', ours]);
    expect(info.code).toBe(0);
    expect(fs.readFileSync(ours).equals(fs.readFileSync(theirs))).toBe(true);
  });

  it('one entry past the end: listed as QEMU reads it (zeros), but nothing is written from it', async () => {
    const d = tmpDir();
    const img = path.join(d, 't.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', img, '64M']);
    poke(img, 64, '0000000001000000');
    poke(img, 60, '00000001');
    const before = fs.readFileSync(img);
    const list = await run(['snapshot', '-l', img]);
    expect(list.code).toBe(0);
    // qemu-img would write a table holding the zero entry; blocktab refuses (-22) before writing anything.
    const create = await run(['snapshot', '-c', 'new', img]);
    expect(create.code).not.toBe(0);
    expect(create.stderr).toContain("Could not create snapshot 'new': -22 (Invalid argument)");
    // The upgrade would rewrite the table with the entries' version 3 extra data.
    const amend = await run(['amend', '-o', 'compat=1.1', img]);
    expect(amend.code).not.toBe(0);
    expect(amend.stderr).toContain('the snapshot table at 0x1000000 extends beyond the end of the file');
    expect(fs.readFileSync(img).equals(before)).toBe(true);
  });
});

describe('a snapshot of an L2 entry far past the refcount table (080)', () => {
  /** A 64M image with one written cluster, then L2 entry 0 set to `entry`. */
  function imageWithL2Entry(d: string, name: string, entry: string): string {
    const img = path.join(d, name);
    qemuImg(['create', '-q', '-f', 'qcow2', img, '64M']);
    qemuIo(img, ['write 0 512']);
    const buf = fs.readFileSync(img);
    const l1 = Number(buf.readBigUInt64BE(40));
    const l2 = Number(buf.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
    poke(img, l2, entry);
    return img;
  }
  for (const c of [
    { name: 'a new refcount block would be needed: -11 (EAGAIN) as qemu-img', entry: '800000ffffff0000' },
    { name: 'the refcount table cannot grow that far: -27 (EFBIG) as qemu-img', entry: 'bfffffffffff0000' },
  ]) {
    it(c.name, async () => {
      const d = tmpDir();
      const theirs = imageWithL2Entry(d, 'q.qcow2', c.entry);
      const ours = imageWithL2Entry(d, 'o.qcow2', c.entry);
      const q = qemuImgRun(['snapshot', '-c', 'test', theirs]);
      setErrorWording('qemu');
      const o = await run(['snapshot', '-c', 'test', ours]);
      setErrorWording('detailed');
      expect(q.status).not.toBe(0);
      expect(o.code).toBe(q.status);
      expect(messages(o.stderr)).toEqual(messages(q.stderr.replaceAll(theirs, ours)));
      // No snapshot was recorded, and the guest still reads.
      const list = await run(['snapshot', '-l', ours]);
      expect(list.stdout).toBe('');
    });
  }
});
