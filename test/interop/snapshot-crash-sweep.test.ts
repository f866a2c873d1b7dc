/**
 * Crash-point sweeps over snapshot create / apply / delete, commit and
 * rebase: the operation runs on a fault filter that cuts the power after the
 * Nth write, for every N until it completes. After each cut qemu-img check
 * must find no corruption (leaks allowed) and the guest must read either the
 * state before or the state after the operation.
 *
 * One exception, explained in src/formats/qcow2/snapshot.ts: create and
 * delete have an unavoidable window where a data cluster's refcount and the
 * COPIED flag of its active L2 entry disagree (they live in different
 * sectors; QEMU has the same windows). qemu-img check reports "ERROR
 * OFLAG_COPIED data cluster ... refcount=2" (create, before the header
 * switch: the snapshot does not exist yet) or "... refcount=1" (delete,
 * after the snapshot left the table). Exactly those reports are accepted, in
 * exactly those states; apply, commit and rebase must be clean.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FileStorage, openImage, closeNode } from '../../src/node.js';
import { faultyStorage, newCounters } from '../../src/filters/fault.js';
import { applySnapshot, createSnapshot, deleteSnapshot } from '../../src/img/snapshot.js';
import { commitImage } from '../../src/img/commit.js';
import { rebaseImage } from '../../src/img/rebase.js';
import type { Storage } from '../../src/block/open.js';
import { qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';

const dir = tmpDir('sn-crash-');
const p = (s: string) => path.join(dir, s);

function guest(file: string, snapshot?: string): Buffer {
  const out = `${file}.view.raw`;
  qemuImg(['convert', '-U', '-f', 'qcow2', ...(snapshot ? ['-l', `snapshot.name=${snapshot}`] : []), '-O', 'raw', file, out]);
  const b = fs.readFileSync(out);
  fs.rmSync(out);
  return b;
}

/** `allowCopied`: the refcount an OFLAG_COPIED data-cluster report may name (the operation's window), or none. */
function checkNoCorruption(file: string, allowCopied: 1 | 2 | false): void {
  const r = qemuImgRun(['check', file]);
  const errors = (r.stdout + r.stderr).split('\n').filter((l) => l.startsWith('ERROR'));
  const bad = errors.filter((l) => !(allowCopied && new RegExp(`^ERROR OFLAG_COPIED data cluster: .* refcount=${allowCopied}$`).test(l)));
  expect(bad, `${file}: ${r.stdout}${r.stderr}`).toEqual([]);
  expect(r.stdout + r.stderr).not.toMatch(/Leaked cluster.*refcount=0|references? .* beyond|Marking image as corrupt/);
}

/** Runs `op` with the power cut after write N for N = 0, 1, … until it completes; `verify` checks each result. */
async function sweep(setup: () => string[], op: (storage: Storage, files: string[]) => Promise<void>, verify: (files: string[], completed: boolean) => void): Promise<number> {
  const pristine = setup();
  const saved = pristine.map((f) => fs.readFileSync(f));
  let cuts = 0;
  for (let n = 0; ; n++) {
    pristine.forEach((f, i) => fs.writeFileSync(f, saved[i]!));
    const counters = newCounters();
    const storage = faultyStorage(new FileStorage(), { dropWritesAfter: n }, counters);
    try {
      await op(storage, pristine);
    } catch {
      // A failure after the cut is expected: what reached the disk is what is checked.
    }
    const completed = counters.dropped === 0;
    verify(pristine, completed);
    if (completed) return cuts;
    cuts++;
    if (n > 2000) throw new Error('sweep did not converge');
  }
}

async function withImage(storage: Storage, file: string, fn: (bs: Awaited<ReturnType<typeof openImage>>) => Promise<void>): Promise<void> {
  const bs = await openImage(storage, file, { format: 'qcow2' });
  try {
    await fn(bs);
  } finally {
    await closeNode(bs).catch(() => {});
  }
}

function baseImage(name: string): string {
  const f = p(name);
  fs.rmSync(f, { force: true });
  qemuImg(['create', '-f', 'qcow2', f, '4M']);
  qemuIo(f, ['write -P 1 0 1M', 'write -c -P 3 2M 64k', 'write -P 4 3M 128k'], 'qcow2');
  return f;
}

describe('crash sweeps', () => {
  it('snapshot create', async () => {
    let before!: Buffer;
    const cuts = await sweep(
      () => {
        const f = baseImage('create.qcow2');
        before = guest(f);
        return [f];
      },
      (st, [f]) => withImage(st, f!, async (bs) => void (await createSnapshot(bs, 'snap', { icount: 0 }))),
      ([f], completed) => {
        const list = qemuImg(['snapshot', '-l', '-U', f!]);
        checkNoCorruption(f!, /snap/.test(list) ? false : 2);
        expect(guest(f!).equals(before)).toBe(true);
        if (completed) expect(list).toMatch(/1\s+snap/);
        if (/snap/.test(list)) expect(guest(f!, 'snap').equals(before)).toBe(true);
      },
    );
    expect(cuts).toBeGreaterThan(3);
  });

  it('snapshot apply', async () => {
    let atSnap!: Buffer;
    let now!: Buffer;
    const cuts = await sweep(
      () => {
        const f = baseImage('apply.qcow2');
        qemuImg(['snapshot', '-c', 'old', f]);
        atSnap = guest(f);
        qemuIo(f, ['write -P 9 512k 1M', 'write -z 3M 64k'], 'qcow2');
        now = guest(f);
        return [f];
      },
      (st, [f]) => withImage(st, f!, (bs) => applySnapshot(bs, 'old')),
      ([f], completed) => {
        checkNoCorruption(f!, false);
        const g = guest(f!);
        expect(g.equals(atSnap) || (!completed && g.equals(now))).toBe(true);
        expect(guest(f!, 'old').equals(atSnap)).toBe(true);
      },
    );
    expect(cuts).toBeGreaterThan(3);
  });

  it('snapshot delete', async () => {
    let active!: Buffer;
    await sweep(
      () => {
        const f = baseImage('delete.qcow2');
        qemuImg(['snapshot', '-c', 'gone', f]);
        qemuIo(f, ['write -P 7 0 64k'], 'qcow2');
        active = guest(f);
        return [f];
      },
      (st, [f]) => withImage(st, f!, (bs) => deleteSnapshot(bs, '1', 'gone')),
      ([f], completed) => {
        const list = qemuImg(['snapshot', '-l', '-U', f!]);
        checkNoCorruption(f!, /gone/.test(list) ? false : 1);
        expect(guest(f!).equals(active)).toBe(true);
        if (completed) expect(list).toBe('');
      },
    );
  });

  it('commit', async () => {
    let view!: Buffer;
    await sweep(
      () => {
        const base = baseImage('c-base.qcow2');
        const top = p('c-top.qcow2');
        fs.rmSync(top, { force: true });
        qemuImg(['create', '-f', 'qcow2', '-b', 'c-base.qcow2', '-F', 'qcow2', top]);
        qemuIo(top, ['write -P 6 256k 512k', 'write -z 3M 64k'], 'qcow2');
        view = guest(top);
        return [top, base];
      },
      (st, [top]) => commitImage(st, { filename: top! }),
      ([top, base], completed) => {
        checkNoCorruption(top!, false);
        checkNoCorruption(base!, false);
        expect(guest(top!).equals(view)).toBe(true);
        if (completed) expect(guest(base!).equals(view)).toBe(true);
      },
    );
  });

  it('rebase (safe, onto another image)', async () => {
    let view!: Buffer;
    await sweep(
      () => {
        const base = baseImage('r-base.qcow2');
        const other = p('r-other.qcow2');
        fs.rmSync(other, { force: true });
        qemuImg(['create', '-f', 'qcow2', other, '4M']);
        qemuIo(other, ['write -P 1 0 512k'], 'qcow2');
        const top = p('r-top.qcow2');
        fs.rmSync(top, { force: true });
        qemuImg(['create', '-f', 'qcow2', '-b', 'r-base.qcow2', '-F', 'qcow2', top]);
        qemuIo(top, ['write -P 6 64k 64k'], 'qcow2');
        view = guest(top);
        return [top, base, other];
      },
      (st, [top]) => rebaseImage(st, { filename: top!, backing: 'r-other.qcow2', backingFormat: 'qcow2' }),
      ([top], completed) => {
        checkNoCorruption(top!, false);
        expect(guest(top!).equals(view)).toBe(true);
        const b = JSON.parse(qemuImg(['info', '-U', '--output=json', top!]))['backing-filename'];
        if (completed) expect(b).toBe('r-other.qcow2');
      },
    );
  });
});
