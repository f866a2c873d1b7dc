/**
 * Metadata overlap protection (src/formats/qcow2/overlap.ts) on the images
 * QEMU's iotests 060 crafts: qemu-img makes a 64 MiB image (refcount table at
 * 0x10000, refcount block at 0x20000, L1 at 0x30000), the test pokes a table
 * entry onto metadata, then the same write goes through qemu-io and through
 * blocktab on two copies. Both must refuse (or allow) alike, name the same
 * metadata kind, and leave the corrupt bit set alike.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { BlockError, FileStorage, openImage, bdrvPwrite, bdrvPread, closeNode } from '../../src/node.js';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu.js';

const dir = tmpDir('qcow2-overlap-');
const RT = 0x10000;
const RB = 0x20000;
const L1 = 0x30000;
const L2 = 0x40000;
const L2_AFTER_SNAPSHOT = 0x80000;
let n = 0;

function poke(f: string, offset: number, bytes: number[]): void {
  const fd = fs.openSync(f, 'r+');
  fs.writeSync(fd, Uint8Array.from(bytes), 0, bytes.length, offset);
  fs.closeSync(fd);
}
const be64 = (hi: number, lo: number) => [hi >>> 24, (hi >>> 16) & 255, (hi >>> 8) & 255, hi & 255, lo >>> 24, (lo >>> 16) & 255, (lo >>> 8) & 255, lo & 255];
const COPIED = 0x80000000;

/** Two identical crafted images (theirs for qemu-io, ours for blocktab). */
function craft(make: (f: string) => void): { theirs: string; ours: string } {
  const theirs = path.join(dir, `${++n}-theirs.qcow2`);
  qemuImg(['create', '-q', '-f', 'qcow2', theirs, '64M']);
  make(theirs);
  const ours = theirs.replace('-theirs', '-ours');
  fs.copyFileSync(theirs, ours);
  return { theirs, ours };
}

/** qemu-io's answer to `write` after `open -o OPTS`: the corruption line, or null when the write went through. */
function qemuWrite(f: string, opts: string, cmd: string): string | null {
  const r = spawnSync('qemu-io', ['-c', `open -o ${opts} ${f}`, '-c', cmd], { encoding: 'utf8' });
  const out = r.stdout + r.stderr;
  const m = /Preventing invalid write on metadata \(overlaps with ([^)]+)\)/.exec(out);
  if (m) return m[1]!;
  expect(out).toMatch(/wrote \d+\/\d+ bytes/);
  return null;
}

/** blocktab's answer to the same write. */
async function ourWrite(f: string, options: Record<string, unknown>, offset: number, bytes: number): Promise<string | null> {
  const bs = await openImage(new FileStorage(), f, { format: 'qcow2', driverOptions: options });
  try {
    await bdrvPwrite(bs, offset, bytes, new Uint8Array(bytes).fill(0x2a));
    return null;
  } catch (e) {
    expect(e).toBeInstanceOf(BlockError);
    const err = e as BlockError;
    expect(err.message).toContain(f);
    const m = /Preventing invalid write on metadata \(overlaps with ([^)]+)\)/.exec(err.message);
    expect(m, `${err.code} ${err.message}`).not.toBeNull();
    expect(err.code).toBe('EIO');
    return m![1]!;
  } finally {
    await closeNode(bs).catch(() => {});
  }
}

function corrupt(f: string): boolean {
  const info = JSON.parse(qemuImg(['info', '--output=json', '-U', f])) as { 'format-specific': { data: { corrupt?: boolean } } };
  return info['format-specific'].data.corrupt === true;
}

/** Writes the same thing both ways and compares the outcome and the corrupt bit. */
async function same(c: { theirs: string; ours: string }, qemuOpts: string, ourOpts: Record<string, unknown>, offset: number, bytes: number): Promise<string | null> {
  const theirs = qemuWrite(c.theirs, qemuOpts, `write -P 0x2a ${offset} ${bytes}`);
  const ours = await ourWrite(c.ours, ourOpts, offset, bytes);
  expect(ours).toBe(theirs);
  expect(corrupt(c.ours)).toBe(corrupt(c.theirs));
  return ours;
}

// 060 "Testing L2 reference into L1": the first L1 entry names the L1 table's own cluster.
// (The file is grown to hold the whole L1 cluster: blocktab refuses a table that ends past the file, QEMU reads zeros there.)
const l2IntoL1 = (f: string) => {
  fs.truncateSync(f, L1 + 65536);
  poke(f, L1, be64(COPIED, L1));
};
// 060 "Testing cluster data reference into refcount block".
const dataIntoRefblock = (f: string) => {
  fs.truncateSync(f, L2 + 65536);
  poke(f, L1, be64(COPIED, L2));
  poke(f, RB + 8, [0, 1]);
  poke(f, L2, be64(COPIED, RB));
};

// An L1 entry (COPIED) names the refcount table's cluster as its L2 table, whose entries then point at
// the refcount block: a write there copies the cluster and must change the "L2 table" in place.
const l2IntoRefTable = (f: string) => {
  qemuIo(f, ['write -P 1 0 64k'], 'qcow2');
  poke(f, L1, be64(COPIED, RT));
};

describe('qcow2 overlap checks (iotests 060)', { timeout: 60_000 }, () => {
  it('L2 reference into L1: refused as an active L1 overlap, corrupt bit set, still readable read-only', async () => {
    const c = craft(l2IntoL1);
    expect(await same(c, 'overlap-check=all', { 'overlap-check': 'all' }, 0, 512)).toBe('active L1 table');
    expect(corrupt(c.ours)).toBe(true);
    // A corrupt image opens read-only (and refuses read-write), as QEMU's.
    await expect(openImage(new FileStorage(), c.ours, { format: 'qcow2' })).rejects.toThrow(/corrupt/i);
    const ro = await openImage(new FileStorage(), c.ours, { format: 'qcow2', readOnly: true });
    await bdrvPread(ro, 0, 512, new Uint8Array(512));
    await closeNode(ro);
  });

  it('blocktab io prints what qemu-io prints: the corruption notice once on stderr, then "No medium found" for every later request', async () => {
    const { runIo } = await import('../../src/cli/qemu-io/main.js');
    const { Readable } = await import('node:stream');
    // l2IntoRefTable: the write fails at once, as qemu-io's, though the L2 table is written back only later
    // (before, blocktab reported the writes done and lost them when the write-back was refused at close).
    for (const make of [l2IntoL1, dataIntoRefblock, l2IntoRefTable]) {
      const c = craft(make);
      const cmds = ['write -P 0x2a 0 512', 'write -P 0x2a 0 512', 'read 0 512'].flatMap((x) => ['-c', x]);
      const q = spawnSync('qemu-io', [...cmds, c.theirs], { encoding: 'utf8' });
      let stdout = '';
      let stderr = '';
      const status = await runIo([...cmds, c.ours], { out: (t) => (stdout += t), err: (t) => (stderr += t) }, Readable.from([]));
      expect(q.stderr).toMatch(/^qcow2: Marking image as corrupt: Preventing invalid write on metadata \(overlaps with [^)]+\); further corruption events will be suppressed\n$/);
      expect(stderr).toBe(q.stderr);
      expect(stdout).toBe(q.stdout);
      expect(status).toBe(q.status);
    }
  });

  it('cluster data reference into a refcount block: refused under the default (cached)', async () => {
    const c = craft(dataIntoRefblock);
    expect(await same(c, 'overlap-check=cached', {}, 0, 512)).toBe('refcount block');
  });

  it('data reference into an inactive L2 table: only overlap-check=all looks', async () => {
    const mk = (f: string) => {
      qemuIo(f, ['write -P 1 0 512'], 'qcow2');
      qemuImg(['snapshot', '-c', 'foo', f]);
      qemuIo(f, ['write -P 2 0 512'], 'qcow2');
      poke(f, L2_AFTER_SNAPSHOT, be64(COPIED, L2));
    };
    expect(await same(craft(mk), 'overlap-check=all', { 'overlap-check': 'all' }, 0, 512)).toBe('inactive L2 table');
    expect(await same(craft(mk), 'overlap-check=cached', { 'overlap-check': 'cached' }, 0, 512)).toBeNull();
  });

  it('overlap-check=none and a per-kind off let the write through, as QEMU does', async () => {
    expect(await same(craft(l2IntoL1), 'overlap-check=none', { 'overlap-check': 'none' }, 0, 512)).toBeNull();
    // The cluster is the active L1 table and (through L1[0]) an active L2 table: with the L1 kind off, QEMU names the L2 kind.
    expect(await same(craft(l2IntoL1), 'overlap-check.active-l1=off', { 'overlap-check.active-l1': 'off' }, 0, 512)).toBe('active L2 table');
    expect(await same(craft(l2IntoL1), 'overlap-check.active-l1=off,overlap-check.active-l2=off', { 'overlap-check.active-l1': false, 'overlap-check.active-l2': 'off' }, 0, 512)).toBeNull();
    // constant leaves the refcount block out
    expect(await same(craft(dataIntoRefblock), 'overlap-check=constant', { 'overlap-check': 'constant' }, 0, 512)).toBeNull();
    // a per-kind on adds to a template
    expect(await same(craft(dataIntoRefblock), 'overlap-check.template=constant,overlap-check.refcount-block=on', { 'overlap-check.template': 'constant', 'overlap-check.refcount-block': 'on' }, 0, 512)).toBe('refcount block');
  });

  it('an unknown template is refused at open', async () => {
    const c = craft(() => {});
    await expect(openImage(new FileStorage(), c.ours, { format: 'qcow2', driverOptions: { 'overlap-check': 'sometimes' } })).rejects.toThrow(/overlap-check/);
  });

  it('a refcount of 0 on the header cluster: the new L2 table is refused as a header overlap (fuzz finding)', async () => {
    // Refcount of cluster 0 set to zero: the allocator hands out cluster 0 for the first L2 table.
    // QEMU stops it one step earlier ("Preventing invalid allocation of L2 table at offset 0"); both refuse and mark corrupt.
    const c = craft((f) => poke(f, RB, [0, 0]));
    const r = spawnSync('qemu-io', ['-c', `write -P 0x2a 0 512`, c.theirs], { encoding: 'utf8' });
    expect(r.stdout + r.stderr).toMatch(/Marking image as corrupt: Preventing invalid allocation of L2 table at offset 0/);
    expect(await ourWrite(c.ours, {}, 0, 512)).toBe('qcow2_header');
    expect(corrupt(c.ours)).toBe(true);
    expect(corrupt(c.theirs)).toBe(true);
  });
  it('a refcount table entry past 2^53 (unused, as qemu-io leaves it) does not hang the overlap map (fuzz finding)', async () => {
    // 0x8000000000000000 with 1 KiB clusters: its cluster numbers (2^53) are not exact doubles, so walking
    // its range never ended.
    const theirs = path.join(dir, `${++n}-theirs.qcow2`);
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=1024', theirs, '1M']);
    const rt = Number(fs.readFileSync(theirs).readBigUInt64BE(48));
    poke(theirs, rt + 8 * 84, be64(0x80000000, 0));
    const ours = theirs.replace('-theirs', '-ours');
    fs.copyFileSync(theirs, ours);
    const r = spawnSync('qemu-io', ['-c', 'write -P 0x2a 64k 4k', theirs], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(await ourWrite(ours, {}, 65536, 4096)).toBeNull();
  }, 20_000);
});
