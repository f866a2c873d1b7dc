/**
 * LUKS key-slot amend (`amend -o [encrypt.]state=active|inactive,...`) for
 * the luks format and LUKS-encrypted qcow2, against qemu-img 7.2: one
 * script of adds and erases (the refusals among them) runs on two copies of
 * one qemu-img-made image, one amended by qemu-img, one by blocktab; after
 * each step both give the same exit status and message and the same slots
 * are active. At the end, each copy opens in qemu-io and in blocktab with
 * exactly the secrets it should, and the data is intact. As iotest 294: a
 * header saved before an erase and put back after it opens nothing (the key
 * material is gone). iter-time=10 keeps PBKDF2 short; nothing depends on
 * timing (qemu-img's PBKDF2 calibration is retried when its CPU clock is too
 * coarse: qemuImgRunLuks).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { beforeAll, describe, expect, it } from 'vitest';
import { blocktab, qemuImg, qemuImgCreateLuks, qemuImgRunLuks, tmpDir } from '../helpers/qemu.js';

const SECRETS = [0, 1, 2, 3].flatMap((i) => ['--object', `secret,id=sec${i},data=hunter${i}`]);
const LUKS_MAGIC = Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]);

/** Which key slots are active, read from the LUKS header's bytes (no process to start). */
function activeSlots(file: string): boolean[] {
  const buf = fs.readFileSync(file);
  const at = buf.indexOf(LUKS_MAGIC);
  return Array.from({ length: 8 }, (_, i) => buf.readUInt32BE(at + 208 + i * 48) === 0x00ac71f3);
}

/**
 * The refusals (checked before any PBKDF2, cheap) run on the luks format
 * only: the code is shared and qcow2 only adds where the header lives,
 * which its shorter script covers.
 */
const REFUSALS: Step[] = [
  ['sec0', 'state=active,new-secret=sec2,keyslot=1'],
  ['sec0', 'state=bogus'],
  ['sec0', 'state=inactive,keyslot=3'],
  ['sec0', 'state=inactive,keyslot=1,old-secret=sec0'],
];
type Step = [sec: string, o: string, force?: boolean];

interface Fmt {
  fmt: 'luks' | 'qcow2';
  pr: string;
  create: string[];
  /** The script: add a password, erase one, (refusals), replace one with --force; sec2 alone in slot 1 at the end. */
  steps: Step[];
}
const FORMATS: Fmt[] = [
  {
    fmt: 'luks',
    pr: '',
    create: [],
    steps: [
      ['sec0', 'state=active,new-secret=sec1,iter-time=10'],
      ...REFUSALS,
      ['sec1', 'state=inactive,old-secret=sec0'],
      ['sec1', 'state=inactive,keyslot=1'],
      ['sec1', 'state=active,new-secret=sec2,iter-time=10,keyslot=1', true],
    ],
  },
  {
    fmt: 'qcow2',
    pr: 'encrypt.',
    create: ['-o', 'encrypt.format=luks'],
    steps: [
      ['sec0', 'encrypt.state=active,encrypt.new-secret=sec2,encrypt.iter-time=10,encrypt.keyslot=1'],
      ['sec2', 'encrypt.state=inactive,encrypt.old-secret=sec0'],
      ['sec2', 'encrypt.state=inactive,encrypt.old-secret=sec2'],
    ],
  },
];

/** Each format suite's directory, for the later suite that reuses the luks image. */
const madeDirs: Partial<Record<Fmt['fmt'], string>> = {};

describe.each(FORMATS)('amend of LUKS key slots: $fmt', ({ fmt, pr, create, steps }) => {
  let dir = '';
  const imageOpts = (file: string, sec: string) => ['--image-opts', `driver=${fmt},file.filename=${file},${pr}key-secret=${sec}`];
  /** Runs one amend on both copies; returns the normalised outcome of each. */
  const both = (sec: string, o: string, force = false) => {
    const args = (file: string) => ['amend', ...SECRETS, ...imageOpts(file, sec), '-o', o, ...(force ? ['--force'] : [])];
    const q = qemuImgRunLuks(args('q.img'), { cwd: dir });
    const b = blocktab(args('b.img'), { cwd: dir });
    return {
      theirs: { status: q.status, stderr: q.stderr, slots: activeSlots(path.join(dir, 'q.img')) },
      ours: { status: b.status, stderr: b.stderr.replace(/^blocktab:/gm, 'qemu-img:'), slots: activeSlots(path.join(dir, 'b.img')) },
    };
  };

  beforeAll(() => {
    dir = tmpDir('luks-amend-');
    qemuImgCreateLuks(['create', '-q', '-f', fmt, ...SECRETS, ...create, '-o', `${pr}key-secret=sec0,${pr}iter-time=10`, 'q.img', '1M'], { cwd: dir });
    const w = spawnSync('qemu-io', [...SECRETS, ...imageOpts('q.img', 'sec0'), '-c', 'write -P 0x5c 0 64k'], { cwd: dir, encoding: 'utf8' });
    expect(w.status).toBe(0);
    fs.copyFileSync(path.join(dir, 'q.img'), path.join(dir, 'b.img'));
    madeDirs[fmt] = dir;
  });

  // PBKDF2 timing in both tools (by design) makes this slow on a loaded machine.
  it('a script of adds and erases (and refusals): same status, message and active slots after every step', { timeout: 300_000 }, () => {
    const seen: boolean[][] = [];
    for (const [sec, o, force] of steps) {
      const { theirs, ours } = both(sec, o, force);
      expect(ours, `${sec} ${o}${force ? ' --force' : ''}`).toEqual(theirs);
      seen.push(theirs.slots);
    }
    // The script did what it says: a second slot, then slot 0 erased, sec2 alone in slot 1.
    expect(seen[0]!.slice(0, 3)).toEqual([true, true, false]);
    expect(seen.at(-1)!.map(Number).join('')).toBe('01000000');
  });

  it('each copy opens with the secret left (sec2) and not with a removed one, in the other tool too; the data is intact', () => {
    const cmd = ['-c', 'read -P 0x5c 0 64k'];
    const runs = [
      ['qemu-io', 'b.img'],
      ['blocktab', 'q.img'],
    ].flatMap(([tool, file]) =>
      ['sec1', 'sec2'].map((sec) => {
        const args = [...SECRETS, ...imageOpts(file!, sec), ...cmd];
        const r = tool === 'qemu-io' ? spawnSync('qemu-io', args, { cwd: dir, encoding: 'utf8' }) : blocktab(['io', ...args], { cwd: dir });
        return { what: `${tool} ${file} ${sec}`, opens: sec === 'sec2', out: r.stdout + r.stderr };
      }),
    );
    for (const { what, opens, out } of runs) {
      expect(out, what).toMatch(opens ? /^read 65536\/65536 bytes at offset 0\n/ : /Invalid password, cannot unlock any keyslot/);
    }
  });

  it('erasing wipes the key material: the header saved before the erase, put back, opens nothing (iotest 294)', () => {
    const file = path.join(dir, 'b.img');
    const at = fs.readFileSync(file).indexOf(LUKS_MAGIC);
    expect(at).toBeGreaterThanOrEqual(0);
    const saved = fs.readFileSync(file).subarray(at, at + 592);
    const erase = blocktab(['amend', ...SECRETS, ...imageOpts('b.img', 'sec2'), '-o', `${pr}state=inactive,${pr}keyslot=1`, '--force'], { cwd: dir });
    expect(erase.stderr).toBe('');
    expect(activeSlots(file).some(Boolean)).toBe(false);
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, saved, 0, saved.length, at);
    fs.closeSync(fd);
    const gone = spawnSync('qemu-io', [...SECRETS, ...imageOpts('b.img', 'sec2'), '-c', 'read 0 512'], { cwd: dir, encoding: 'utf8' });
    expect(gone.stderr).toMatch(/Invalid password, cannot unlock any keyslot/);
  });
});

describe('amend of encryption options: refusals before any key is used', () => {
  it('a full table: "Can\'t add a keyslot - all keyslots are in use" from both (slots marked active in the header)', () => {
    // The luks suite's image (sec2 in slot 1), so no second qemu-img create (PBKDF2 timing) is needed.
    const dir = madeDirs.luks!;
    for (const file of ['full-q.img', 'full-b.img']) {
      const p = path.join(dir, file);
      const buf = fs.readFileSync(path.join(dir, 'q.img'));
      const at = buf.indexOf(LUKS_MAGIC);
      // Active with 1000 iterations: they open nothing, but the table counts as full.
      for (let i = 0; i < 8; i++) {
        const slot = at + 208 + i * 48;
        if (buf.readUInt32BE(slot) !== 0x00ac71f3) buf.writeUInt32BE(1000, slot + 4);
        buf.writeUInt32BE(0x00ac71f3, slot);
      }
      fs.writeFileSync(p, buf);
    }
    const args = (file: string) => ['amend', ...SECRETS, '--image-opts', `driver=luks,file.filename=${file},key-secret=sec2`, '-o', 'state=active,new-secret=sec1,iter-time=10'];
    const q = qemuImgRunLuks(args('full-q.img'), { cwd: dir });
    const b = blocktab(args('full-b.img'), { cwd: dir });
    expect(q.stderr).toBe("qemu-img: Can't add a keyslot - all keyslots are in use\n");
    expect(b.stderr).toBe("blocktab: Can't add a keyslot - all keyslots are in use\n");
    expect(b.status).toBe(q.status);
  });

  it('plain and aes qcow2: qemu-img\'s messages', () => {
    const dir = tmpDir('luks-amend-none-');
    qemuImg(['create', '-q', '-f', 'qcow2', 'plain.qcow2', '1M'], { cwd: dir });
    qemuImg(['create', '-q', '-f', 'qcow2', ...SECRETS, '-o', 'encrypt.format=aes,encrypt.key-secret=sec0', 'aes.qcow2', '1M'], { cwd: dir });
    for (const image of [['plain.qcow2'], ['--image-opts', 'driver=qcow2,file.filename=aes.qcow2,encrypt.key-secret=sec0']]) {
      const args = ['amend', ...SECRETS, ...image, '-o', 'encrypt.state=active,encrypt.new-secret=sec1'];
      const q = spawnSync('qemu-img', args, { cwd: dir, encoding: 'utf8' });
      const b = blocktab(args, { cwd: dir });
      expect(q.stderr).toMatch(/^qemu-img: (Can't amend|Only LUKS)/);
      expect(b.stderr.replace(/^blocktab:/, 'qemu-img:')).toBe(q.stderr);
      expect(b.status).toBe(q.status);
    }
  });

  it('-o help lists the key-slot options as qemu-img does', () => {
    for (const fmt of ['luks', 'qcow2']) {
      const args = ['amend', '-f', fmt, '-o', 'help', 'x'];
      const q = spawnSync('qemu-img', args, { encoding: 'utf8' });
      expect(blocktab(args).stdout).toBe(q.stdout);
    }
  });
});
