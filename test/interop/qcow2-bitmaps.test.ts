/**
 * Persistent qcow2 dirty bitmaps against QEMU 7.2, both directions:
 * - bitmaps qemu-img adds and qemu-io writes mark load in blocktab with the
 *   dirty ranges QEMU sees (x-debug-block-dirty-bitmap-sha256 and the
 *   query-named-block-nodes counts of qemu-system-x86_64 over QMP);
 * - bitmaps `blocktab bitmap` / `blocktab io` write are listed by
 *   `qemu-img info` as on a twin image qemu-img made, pass `qemu-img check`,
 *   hash the same in QEMU, and `qemu-img bitmap --merge` takes them;
 * - bad directories fail with the image and the bitmap named and leave the
 *   file as it was; in-use bitmaps load inconsistent; a stale extension
 *   (autoclear bit clear) is ignored as QEMU ignores it.
 */
/* eslint-disable @typescript-eslint/no-explicit-any */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FileStorage } from '../../src/node.js';
import { Engine } from '../../src/engine/index.js';
import { openImage, closeNode } from '../../src/block/open.js';
import { bdrvPwrite, bdrvTruncate } from '../../src/block/io.js';
import { listDirtyBitmaps } from '../../src/block/dirty-bitmap.js';
import { imgBitmap } from '../../src/img/bitmap.js';
import { blocktab, qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';
import { sampleCases } from '../helpers/sample.js';
import { engineTranscript, haveQemuSystem, qemuTranscript, type QmpCommandLine, type QmpStep } from '../helpers/qmp.js';

const MiB = 1024 * 1024;

function info(file: string): any {
  return JSON.parse(qemuImg(['info', '--output=json', file]));
}
function ourInfo(file: string): any {
  const r = blocktab(['info', '--output=json', file]);
  expect(r.stderr).toBe('');
  return JSON.parse(r.stdout);
}

let qemuMadeBase: string | undefined;
/** Bitmaps b1 (64k, auto), b2 (4k, auto), b3 (512, disabled) with qemu-io writes marking the enabled ones (made once, copied). */
function qemuMade(file: string): void {
  if (!qemuMadeBase) {
    qemuMadeBase = path.join(tmpDir('bm-base-'), 'a.qcow2');
    qemuMadeOnce(qemuMadeBase);
  }
  fs.copyFileSync(qemuMadeBase, file);
}
function qemuMadeOnce(file: string): void {
  qemuImg(['create', '-f', 'qcow2', file, '16M']);
  qemuImg(['bitmap', '--add', file, 'b1']);
  qemuImg(['bitmap', '--add', '-g', '4k', file, 'b2']);
  qemuImg(['bitmap', '--add', '-g', '512', '--disable', file, 'b3']);
  qemuIo(file, ['write 0 64k', 'write 1M 3k', 'write 7340033 1', 'write 15M 1M'], 'qcow2');
  // b3 was disabled: enable it, mark something else, and clear b1's first write through qemu-img.
  qemuImg(['bitmap', '--enable', file, 'b3']);
  qemuIo(file, ['write 3M 1536'], 'qcow2');
  qemuImg(['bitmap', '--disable', file, 'b3']);
}

const node = (file: string, name: string, readOnly = false): QmpCommandLine => ({
  execute: 'blockdev-add',
  arguments: { driver: 'qcow2', 'node-name': name, 'read-only': readOnly, file: { driver: 'file', filename: file } },
});
const sha = (n: string, name: string): QmpCommandLine => ({ execute: 'x-debug-block-dirty-bitmap-sha256', arguments: { node: n, name } });

/** The named nodes' dirty-bitmaps from a query-named-block-nodes reply. */
function bitmapsOf(step: QmpStep): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const n of (step.reply as { return: any[] }).return) if (!String(n['node-name']).startsWith('#')) out[n['node-name']] = n['dirty-bitmaps'] ?? [];
  return out;
}

/** Runs `script(dir)` in QEMU and in an Engine on twin copies of `files` (names relative to the dir). */
async function twin(files: Record<string, string>, script: (dir: string) => QmpCommandLine[]): Promise<{ qd: string; ed: string; theirs: QmpStep[]; ours: QmpStep[] }> {
  const qd = tmpDir('bm-q-');
  const ed = tmpDir('bm-e-');
  for (const [name, src] of Object.entries(files)) {
    fs.copyFileSync(src, path.join(qd, name));
    fs.copyFileSync(src, path.join(ed, name));
  }
  const theirs = await qemuTranscript(script(qd), { cwd: qd, settleMs: 20 });
  const engine = new Engine({ storages: { file: new FileStorage() } });
  const ours = await engineTranscript(engine, script(ed));
  await engine.dispose();
  return { qd, ed, theirs, ours };
}

function expectSameSteps(ours: QmpStep[], theirs: QmpStep[], only: (s: QmpStep) => boolean = () => true): void {
  for (let i = 0; i < theirs.length; i++) {
    if (!only(theirs[i]!)) continue;
    const strip = (st: QmpStep) => (st.cmd === 'query-named-block-nodes' ? bitmapsOf(st) : st.reply);
    expect({ i, cmd: ours[i]!.cmd, r: strip(ours[i]!) }).toEqual({ i, cmd: theirs[i]!.cmd, r: strip(theirs[i]!) });
  }
}

describe('persistent bitmaps qemu-img made, read by blocktab', () => {
  it('info lists them as qemu-img 7.2 does (human and json)', () => {
    const d = tmpDir('bm-');
    const f = path.join(d, 'a.qcow2');
    qemuMade(f);
    expect(ourInfo(f)['format-specific']).toEqual(info(f)['format-specific']);
    const human = blocktab(['info', f]);
    expect(human.stdout.replace(/^disk size: .*$/m, '')).toBe(qemuImg(['info', f]).replace(/^disk size: .*$/m, ''));
  });

  it('loads the dirty ranges qemu-io marked', async () => {
    const d = tmpDir('bm-');
    const f = path.join(d, 'a.qcow2');
    qemuMade(f);
    const bs = await openImage(new FileStorage(), f, { readOnly: true });
    try {
      const got = Object.fromEntries(
        listDirtyBitmaps(bs).map((b) => [b.name, { g: b.granularity, on: b.enabled, ro: b.readonly, ext: [...b.dirtyExtents()].map((e) => [e.offset, e.bytes]) }]),
      );
      expect(got).toEqual({
        b1: { g: 65536, on: true, ro: true, ext: [[0, 65536], [MiB, 65536], [7 * MiB, 65536], [3 * MiB, 65536], [15 * MiB, MiB]].sort((a, b) => a[0]! - b[0]!) },
        b2: { g: 4096, on: true, ro: true, ext: [[0, 65536], [MiB, 4096], [3 * MiB, 4096], [7 * MiB, 4096], [15 * MiB, MiB]] },
        b3: { g: 512, on: false, ro: true, ext: [[3 * MiB, 1536]] },
      });
    } finally {
      await closeNode(bs);
    }
  });

  it.runIf(haveQemuSystem())('hashes and counts as QEMU over QMP', async () => {
    const d = tmpDir('bm-');
    const f = path.join(d, 'a.qcow2');
    qemuMade(f);
    const script = (dir: string): QmpCommandLine[] => [
      node(path.join(dir, 'a.qcow2'), 'n'),
      sha('n', 'b1'),
      sha('n', 'b2'),
      sha('n', 'b3'),
      sha('n', 'nope'),
      { execute: 'query-named-block-nodes' },
      { execute: 'blockdev-del', arguments: { 'node-name': 'n' } },
    ];
    const { qd, ed, theirs, ours } = await twin({ 'a.qcow2': f }, script);
    expectSameSteps(ours, theirs, (s) => s.cmd !== 'blockdev-add');
    // Both closed the node: the same bitmaps, not in use, stored.
    expect(info(path.join(ed, 'a.qcow2'))['format-specific']).toEqual(info(path.join(qd, 'a.qcow2'))['format-specific']);
    expect(qemuImg(['check', path.join(ed, 'a.qcow2')])).toContain('No errors were found');
  });
});

describe('convert --bitmaps', () => {
  it('copies the bitmaps as qemu-img convert --bitmaps does, refuses inconsistent ones unless skipped', async () => {
    const d = tmpDir('bm-');
    const f = path.join(d, 'a.qcow2');
    qemuMade(f);
    const ours = path.join(d, 'ours.qcow2');
    const theirs = path.join(d, 'theirs.qcow2');
    expect(blocktab(['convert', '--bitmaps', '-O', 'qcow2', f, ours]).stderr).toBe('');
    qemuImg(['convert', '--bitmaps', '-O', 'qcow2', f, theirs]);
    expect(info(ours)['format-specific']).toEqual(info(theirs)['format-specific']);
    const ranges = async (file: string) => {
      const bs = await openImage(new FileStorage(), file, { readOnly: true });
      try {
        return listDirtyBitmaps(bs).map((b) => [b.name, b.enabled, [...b.dirtyExtents()]]);
      } finally {
        await closeNode(bs);
      }
    };
    expect(await ranges(ours)).toEqual(await ranges(f));
    expect(await ranges(theirs)).toEqual(await ranges(f));
    expect(blocktab(['convert', '--bitmaps', '-O', 'raw', f, path.join(d, 'r.raw')]).stderr).toBe("blocktab: Format driver 'raw' does not support bitmaps\n");
    // b2 in use: refused, or skipped with qemu-img's warning.
    patch(f, entry(layout(f), 1) + 15, [3]);
    const r = blocktab(['convert', '--bitmaps', '-O', 'qcow2', f, path.join(d, 'x.qcow2')]);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe("blocktab: Cannot copy inconsistent bitmap 'b2'\nTry --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to delete it\n");
    expect(fs.existsSync(path.join(d, 'x.qcow2'))).toBe(false);
    const k = blocktab(['convert', '--bitmaps', '--skip-broken-bitmaps', '-O', 'qcow2', f, path.join(d, 'x.qcow2')]);
    expect(k.stderr).toBe("blocktab: warning: Skipping inconsistent bitmap 'b2'\n");
    expect(info(path.join(d, 'x.qcow2'))['format-specific'].data.bitmaps.map((b: any) => b.name)).toEqual(['b1', 'b3']);
  });
});

describe('resize with bitmaps', () => {
  it('shrinks and grows them with the disk as qemu-img resize does; an inconsistent one stops the resize', async () => {
    const d = tmpDir('bm-');
    const ours = path.join(d, 'ours.qcow2');
    const theirs = path.join(d, 'theirs.qcow2');
    qemuMade(ours);
    fs.copyFileSync(ours, theirs);
    qemuImg(['resize', '--shrink', theirs, '10M']);
    qemuImg(['resize', theirs, '20M']);
    const bs = await openImage(new FileStorage(), ours, { readOnly: false });
    try {
      await bdrvTruncate(bs, 10 * MiB, false, 'off');
      await bdrvTruncate(bs, 20 * MiB, false, 'off');
    } finally {
      await closeNode(bs);
    }
    expect(info(ours)['format-specific']).toEqual(info(theirs)['format-specific']);
    expect(qemuImg(['check', ours])).toContain('No errors were found');
    const ranges = async (file: string) => {
      const n = await openImage(new FileStorage(), file, { readOnly: true });
      try {
        return listDirtyBitmaps(n).map((b) => [b.name, b.size, [...b.dirtyExtents()]]);
      } finally {
        await closeNode(n);
      }
    };
    expect(await ranges(ours)).toEqual(await ranges(theirs));
    patch(ours, entry(layout(ours), 1) + 15, [3]);
    const before = fs.readFileSync(ours);
    const r = blocktab(['resize', ours, '30M']);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("Bitmap 'b2' is inconsistent and cannot be used");
    expect(qemuImgRun(['resize', ours, '30M']).stderr).toContain("Bitmap 'b2' is inconsistent and cannot be used");
    expect(info(ours)['virtual-size']).toBe(20 * MiB);
    expect(fs.readFileSync(ours).length).toBe(before.length);
  });
});

describe('persistent bitmaps blocktab writes, read by QEMU', () => {
  /** The same bitmap operations by qemu-img/qemu-io (`tool` = 'qemu') or by blocktab. */
  function make(file: string, tool: 'qemu' | 'ours'): void {
    const run = (args: string[]) => {
      if (tool === 'qemu') qemuImg(args);
      else {
        const r = blocktab(args);
        expect(r.stderr).toBe('');
        expect(r.status).toBe(0);
      }
    };
    const io = (cmds: string[]) => {
      if (tool === 'qemu') qemuIo(file, cmds, 'qcow2');
      else expect(blocktab(['io', '-f', 'qcow2', ...cmds.flatMap((c) => ['-c', c]), file]).status).toBe(0);
    };
    qemuImg(['create', '-f', 'qcow2', '-o', 'cluster_size=4k', file, '40M']);
    run(['bitmap', '--add', '-g', '16k', file, 'm1']);
    io(['write 2M 100k', 'write 9437185 1', 'write 39M 1M']);
    // Several actions in one call, in order: add disabled, merge m1 in, then m3 cleared after a merge.
    run(['bitmap', '--add', '--disable', '-g', '16k', '--merge', 'm1', file, 'm2']);
    run(['bitmap', '--add', '-g', '1M', '--merge', 'm1', '--clear', '--merge', 'm2', '--disable', file, 'm3']);
    io(['write 20M 4k']);
  }

  it('qemu-img info, check and QEMU\'s hashes agree with a twin qemu-img made', async () => {
    const d = tmpDir('bm-');
    const theirs = path.join(d, 'theirs.qcow2');
    const ours = path.join(d, 'ours.qcow2');
    make(theirs, 'qemu');
    make(ours, 'ours');
    expect(info(ours)['format-specific']).toEqual(info(theirs)['format-specific']);
    expect(qemuImg(['check', ours])).toContain('No errors were found');
    expect(qemuImg(['compare', ours, theirs])).toContain('Images are identical');
    if (haveQemuSystem()) {
      const script = (): QmpCommandLine[] => [
        node(ours, 'o', true),
        node(theirs, 't', true),
        ...['m1', 'm2', 'm3'].flatMap((m) => [sha('o', m), sha('t', m)]),
        { execute: 'query-named-block-nodes' },
      ];
      const q = await qemuTranscript(script(), { settleMs: 20 });
      const replies = q.slice(2, 8).map((s) => (s.reply as any).return.sha256);
      for (let i = 0; i < 6; i += 2) expect(replies[i]).toBe(replies[i + 1]);
      const bm = bitmapsOf(q[8]!);
      expect(bm.o).toEqual(bm.t);
    }
    // qemu-img merges a bitmap of ours into its image, and the result checks clean.
    qemuImg(['bitmap', '--merge', 'm1', '-b', ours, '-F', 'qcow2', theirs, 'm3']);
    expect(qemuImg(['check', theirs])).toContain('No errors were found');
    // blocktab merges across files too (-b/-F), the source untouched.
    const before = fs.readFileSync(theirs);
    const r = blocktab(['bitmap', '--merge', 'm3', '-b', theirs, '-F', 'qcow2', ours, 'm1']);
    expect(r.stderr).toBe('');
    expect(fs.readFileSync(theirs).equals(before)).toBe(true);
    expect(qemuImg(['check', ours])).toContain('No errors were found');
  });

  it.runIf(haveQemuSystem())('block-dirty-bitmap-add persistent, merge across nodes: replies, stored bitmaps and hashes as QEMU', async () => {
    const d = tmpDir('bm-');
    const a = path.join(d, 'a.qcow2');
    qemuMade(a);
    const b = path.join(d, 'b.qcow2');
    qemuImg(['create', '-f', 'qcow2', b, '16M']);
    const v2 = path.join(d, 'v2.qcow2');
    qemuImg(['create', '-f', 'qcow2', '-o', 'compat=0.10', v2, '16M']);
    const x = (execute: string, args: Record<string, unknown>): QmpCommandLine => ({ execute, arguments: args });
    const script = (dir: string): QmpCommandLine[] => [
      node(path.join(dir, 'a.qcow2'), 'a'),
      node(path.join(dir, 'b.qcow2'), 'b'),
      node(path.join(dir, 'v2.qcow2'), 'v2'),
      x('block-dirty-bitmap-add', { node: 'b', name: 'p', persistent: true, granularity: 4096 }),
      x('block-dirty-bitmap-add', { node: 'b', name: 'q', persistent: true, disabled: true }),
      x('block-dirty-bitmap-add', { node: 'b', name: 'tmp', granularity: 4096 }),
      x('block-dirty-bitmap-add', { node: 'v2', name: 'p', persistent: true }),
      x('block-dirty-bitmap-add', { node: 'b', name: 'p', persistent: true }),
      x('block-dirty-bitmap-merge', { node: 'b', target: 'p', bitmaps: [{ node: 'a', name: 'b2' }, { node: 'a', name: 'b3' }] }),
      x('block-dirty-bitmap-merge', { node: 'b', target: 'tmp', bitmaps: ['p'] }),
      x('block-dirty-bitmap-merge', { node: 'b', target: 'q', bitmaps: [{ node: 'a', name: 'b1' }] }),
      sha('b', 'p'),
      sha('b', 'q'),
      sha('b', 'tmp'),
      { execute: 'query-named-block-nodes' },
      x('blockdev-del', { 'node-name': 'b' }),
      x('blockdev-del', { 'node-name': 'a' }),
      x('blockdev-del', { 'node-name': 'v2' }),
    ];
    const { qd, ed, theirs, ours } = await twin({ 'a.qcow2': a, 'b.qcow2': b, 'v2.qcow2': v2 }, script);
    expectSameSteps(ours, theirs, (s) => s.cmd !== 'blockdev-add' && !('error' in s.reply));
    // Where QEMU refuses, blocktab refuses (the wording may name the node differently).
    theirs.forEach((s, i) => expect({ i, failed: 'error' in ours[i]!.reply }).toEqual({ i, failed: 'error' in s.reply }));
    for (const f of ['a.qcow2', 'b.qcow2']) {
      expect(info(path.join(ed, f))['format-specific']).toEqual(info(path.join(qd, f))['format-specific']);
      expect(qemuImg(['check', path.join(ed, f)])).toContain('No errors were found');
    }
  });
});

// ------------------------------------------------------------------ bad input

/** Offsets of the bitmaps extension's fields and of the directory, read from a qemu-img-made image. */
function layout(file: string): { ext: number; dirOffset: number; dirSize: number } {
  const b = fs.readFileSync(file);
  for (let p = b.readUInt32BE(100); ; ) {
    const type = b.readUInt32BE(p);
    const len = b.readUInt32BE(p + 4);
    if (type === 0) throw new Error('no bitmaps extension');
    if (type === 0x23852875) return { ext: p + 8, dirOffset: Number(b.readBigUInt64BE(p + 24)), dirSize: Number(b.readBigUInt64BE(p + 16)) };
    p += 8 + ((len + 7) & ~7);
  }
}

function patch(file: string, offset: number, bytes: number[] | Buffer): void {
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, Buffer.from(bytes), 0, bytes.length, offset);
  fs.closeSync(fd);
}

let twoBitmapsBase: string | undefined;
/** b1 (64k) and b2 (4k) with one write marked; made once by qemu-img and copied. */
function twoBitmaps(d: string): string {
  if (!twoBitmapsBase) {
    twoBitmapsBase = path.join(tmpDir('bm-base-'), 'base.qcow2');
    qemuImg(['create', '-f', 'qcow2', twoBitmapsBase, '8M']);
    qemuImg(['bitmap', '--add', twoBitmapsBase, 'b1']);
    qemuImg(['bitmap', '--add', '-g', '4k', twoBitmapsBase, 'b2']);
    qemuIo(twoBitmapsBase, ['write 64k 64k'], 'qcow2');
  }
  const f = path.join(d, 'bad.qcow2');
  fs.copyFileSync(twoBitmapsBase, f);
  return f;
}

/** A directory entry's byte offset (entries of qemu-img-made one-letter-plus-digit names are 32 bytes). */
const entry = (l: ReturnType<typeof layout>, i: number) => l.dirOffset + 32 * i;

describe('bad bitmap directories', () => {
  const cases: { name: string; bitmap: string | null; qemuOpens?: boolean; want: RegExp; mutate(f: string, l: ReturnType<typeof layout>): void }[] = [
    { name: 'granularity out of range', bitmap: 'b2', want: /granularity_bits 40/, mutate: (f, l) => patch(f, entry(l, 1) + 17, [40]) },
    { name: 'unaligned table offset', bitmap: 'b1', want: /bitmap_table_offset 0x[0-9a-f]+ is not cluster aligned/, mutate: (f, l) => patch(f, entry(l, 0) + 7, [0x08]) },
    // QEMU opens the next two and would free the shared or missing clusters when it stores; blocktab refuses them.
    {
      name: 'overlapping tables',
      bitmap: 'b2',
      qemuOpens: true,
      want: /overlaps the bitmap table of 'b1'/,
      mutate: (f, l) => patch(f, entry(l, 1), fs.readFileSync(f).subarray(entry(l, 0), entry(l, 0) + 8)),
    },
    {
      name: 'data cluster past the end',
      bitmap: 'b1',
      qemuOpens: true,
      want: /data cluster 0x[0-9a-f]+ .*beyond the end of the file/,
      mutate: (f, l) => patch(f, Number(fs.readFileSync(f).readBigUInt64BE(entry(l, 0))), [0, 0, 0, 0x10, 0, 0, 0, 0]),
    },
    { name: 'zero table offset', bitmap: 'b1', want: /bitmap_table_offset is 0/, mutate: (f, l) => patch(f, entry(l, 0), Buffer.alloc(8)) },
    { name: 'too many bitmaps', bitmap: null, want: /65536 bitmaps, exceeding the QEMU supported maximum of 65535/, mutate: (f, l) => patch(f, l.ext, [0, 1, 0, 0]) },
    { name: 'reserved flags', bitmap: 'b1', want: /reserved flags set/, mutate: (f, l) => patch(f, entry(l, 0) + 12, [0x80, 0, 0, 2]) },
    {
      name: 'table entry reserved bits',
      bitmap: 'b2',
      want: /bitmap table entry 0 at 0x[0-9a-f]+ is invalid: reserved bits set/,
      mutate: (f, l) => patch(f, Number(fs.readFileSync(f).readBigUInt64BE(entry(l, 1))), [0xff, 0, 0, 0, 0, 0, 0, 0]),
    },
  ];

  // A seeded half in CI; BLOCKTAB_SWEEP=full runs them all.
  const sampled = sampleCases('qcow2-bitmaps-bad-directory', cases, 0.5, 3);
  for (const c of sampled) {
    it(`${c.name}: a clear error naming the image${c.bitmap ? ' and the bitmap' : ''}, nothing written`, async () => {
      const d = tmpDir('bm-bad-');
      const f = twoBitmaps(d);
      c.mutate(f, layout(f));
      if (!c.qemuOpens) expect(qemuImgRun(['info', f]).status).not.toBe(0); // QEMU refuses it too
      const before = fs.readFileSync(f);
      if (c === sampled[0]) {
        // The CLI's wording once (each run costs a process); the library's errors below carry the same message.
        const r = blocktab(['info', f]);
        expect(r.status).toBe(1);
        expect(r.stderr).toContain(`Could not open '${f}'`);
        expect(r.stderr).toMatch(c.want);
      }
      // Read-only (info) and read/write opens (io, bitmap, check -r) fail before anything is written.
      for (const readOnly of [false, true]) {
        const err = await openImage(new FileStorage(), f, { readOnly }).then(
          async (bs) => {
            await closeNode(bs);
            return null;
          },
          (e: Error) => e,
        );
        expect(err?.message).toMatch(c.want);
        expect(err?.message).toContain(f);
        if (c.bitmap) expect(err?.message).toContain(`'${c.bitmap}'`);
      }
      expect(fs.readFileSync(f).equals(before)).toBe(true);
    });
  }

  it('a name over 1023 bytes: refused naming the bitmap, nothing written', () => {
    const d = tmpDir('bm-bad-');
    const f = twoBitmaps(d);
    const l = layout(f);
    // A one-entry directory with a 1024-byte name, in a fresh cluster at the end of the file.
    const name = Buffer.alloc(1024, 'n');
    const dir = Buffer.alloc((24 + name.length + 7) & ~7);
    fs.readFileSync(f).copy(dir, 0, entry(l, 0), entry(l, 0) + 24);
    dir.writeUInt16BE(name.length, 18);
    name.copy(dir, 24);
    const at = Math.ceil(fs.statSync(f).size / 65536) * 65536;
    patch(f, at, dir);
    const ext = Buffer.alloc(24);
    ext.writeUInt32BE(1, 0);
    ext.writeBigUInt64BE(BigInt(dir.length), 8);
    ext.writeBigUInt64BE(BigInt(at), 16);
    patch(f, l.ext, ext);
    expect(qemuImgRun(['info', f]).stderr).toContain("doesn't satisfy the constraints");
    const before = fs.readFileSync(f);
    const r = blocktab(['info', f]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(f);
    expect(r.stderr).toContain("Bitmap 'nnnn");
    expect(r.stderr).toContain('name_size exceeds 1023');
    expect(fs.readFileSync(f).equals(before)).toBe(true);
  });

  it('names over 1023 bytes and granularity out of range are refused when added', async () => {
    const d = tmpDir('bm-');
    const f = path.join(d, 'a.qcow2');
    qemuImg(['create', '-f', 'qcow2', f, '8M']);
    const before = fs.readFileSync(f);
    const long = 'x'.repeat(1024);
    const bs = await openImage(new FileStorage(), f, { readOnly: false });
    try {
      for (const [name, granularity, want] of [
        [long, undefined, /Operation add on bitmap x+ failed: Bitmap name too long/],
        ['g', 256, /Operation add on bitmap g failed: Granularity must be power of 2 and at least 512/],
        ['g', 2 ** 32, /Operation add on bitmap g failed: Granularity must be at most 2147483648/],
      ] as const) {
        const q = qemuImgRun(['bitmap', '--add', ...(granularity ? ['-g', String(granularity)] : []), f, name]);
        expect(q.status).toBe(1);
        await expect(imgBitmap(bs, name, [{ op: 'add', granularity }])).rejects.toThrow(want);
      }
    } finally {
      await closeNode(bs);
    }
    expect(fs.readFileSync(f).equals(before)).toBe(true);
  });

  it('an in-use bitmap loads inconsistent: listed in use as qemu-img lists it, refused for use, removable', async () => {
    const d = tmpDir('bm-');
    const f = twoBitmaps(d);
    patch(f, entry(layout(f), 1) + 15, [3]); // b2: in_use | auto
    expect(ourInfo(f)['format-specific']).toEqual(info(f)['format-specific']);
    expect(info(f)['format-specific'].data.bitmaps[1].flags).toEqual(['in-use', 'auto']);
    const before = fs.readFileSync(f);
    const r = blocktab(['bitmap', '--clear', f, 'b2']);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("Bitmap 'b2' is inconsistent and cannot be used");
    expect(qemuImgRun(['bitmap', '--clear', f, 'b2']).stderr).toContain("Bitmap 'b2' is inconsistent and cannot be used");
    // Refused before any change: only the in-use flags of the open came and went.
    expect(info(f)['format-specific'].data.bitmaps[1].flags).toEqual(['in-use', 'auto']);
    expect(fs.readFileSync(f).length).toBe(before.length);
    const bs = await openImage(new FileStorage(), f, { readOnly: false });
    try {
      await imgBitmap(bs, 'b2', [{ op: 'remove' }]);
    } finally {
      await closeNode(bs);
    }
    expect(info(f)['format-specific'].data.bitmaps.map((b: any) => b.name)).toEqual(['b1']);
    expect(qemuImg(['check', f])).toContain('No errors were found');
  });
  it('check counts a bad table entry of an in-use bitmap as qemu-img check does', () => {
    const d = tmpDir('bm-');
    const f = twoBitmaps(d);
    const l = layout(f);
    patch(f, entry(l, 1) + 15, [3]); // b2 in use: opens, its table is only read by check
    patch(f, Number(fs.readFileSync(f).readBigUInt64BE(entry(l, 1))), [0xff, 0, 0, 0, 0, 0, 0, 0]);
    // QEMU counts, then stops: the leaked data cluster, then "Check failed: Invalid argument", exit 1.
    const theirs = qemuImgRun(['check', f]);
    const ours = blocktab(['check', f]);
    expect(theirs.status).toBe(1);
    expect({ status: ours.status, out: ours.stdout, err: ours.stderr.split('\n').sort() }).toEqual({
      status: theirs.status,
      out: theirs.stdout,
      err: theirs.stderr.replaceAll('qemu-img:', 'blocktab:').split('\n').sort(),
    });
  });
});

describe('the autoclear bit', () => {
  it('an extension a bitmap-unaware writer left is ignored as QEMU does; check counts the same leaks', () => {
    const d = tmpDir('bm-');
    const f = twoBitmaps(d);
    patch(f, 95, [0]); // autoclear_features bit 0 off
    // QEMU warns on every open of such an image; the same two lines (QEMU leaves the second without its newline).
    const warned = (stderr: string) => stderr.replace(/^(blocktab|qemu-img): /, 'TOOL: ').replace(/fix\.$/, 'fix.\n');
    const q = qemuImgRun(['info', '--output=json', f]);
    const b = blocktab(['info', '--output=json', f]);
    expect(warned(q.stderr)).toContain('a program lacking bitmap support modified this file');
    expect(warned(b.stderr)).toBe(warned(q.stderr));
    expect(JSON.parse(b.stdout)['format-specific']).toEqual(JSON.parse(q.stdout)['format-specific']);
    const ours = JSON.parse(blocktab(['check', '--output=json', f]).stdout);
    const theirs = JSON.parse(qemuImgRun(['check', '--output=json', f]).stdout);
    expect(ours['leaks']).toBe(theirs['leaks']);
    expect(ours['leaks']).toBeGreaterThan(0);
    // A read/write open drops the stale extension; check -r then leaves a clean image QEMU agrees with.
    expect(blocktab(['check', '-r', 'all', f]).status).toBe(0);
    expect(qemuImg(['check', f])).toContain('No errors were found');
    expect(info(f)['format-specific'].data.bitmaps).toBeUndefined();
  });

  it('a node that loaded its bitmaps read-only and then writes clears the bit: the stale bitmaps are not left valid', async () => {
    const d = tmpDir('bm-');
    const f = twoBitmaps(d);
    // The file writable, the qcow2 node read-only, then made writable: what commit's reopen does.
    const files = new FileStorage();
    const rwFiles = Object.assign(Object.create(files) as FileStorage, { openProtocol: (n: string) => files.openProtocol(n, { readOnly: false }) });
    const bs = await openImage(rwFiles, f, { readOnly: true });
    bs.readOnly = false;
    try {
      await bdrvPwrite(bs, 0, 512, new Uint8Array(512).fill(7));
    } finally {
      await closeNode(bs);
    }
    expect(info(f)['format-specific'].data.bitmaps).toBeUndefined();
    expect(qemuImgRun(['check', f]).stdout).toMatch(/leaked clusters/);
  });

  it('a read/write open marks the bitmaps in use until close', async () => {
    const d = tmpDir('bm-');
    const f = twoBitmaps(d);
    const bs = await openImage(new FileStorage(), f, { readOnly: false });
    try {
      expect(info(f)['format-specific'].data.bitmaps.map((b: any) => b.flags)).toEqual([['in-use', 'auto'], ['in-use', 'auto']]);
    } finally {
      await closeNode(bs);
    }
    expect(info(f)['format-specific'].data.bitmaps.map((b: any) => b.flags)).toEqual([['auto'], ['auto']]);
  });
});
