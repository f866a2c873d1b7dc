/**
 * Internal snapshots made, applied and deleted by blocktab, checked with
 * qemu-img (listing, content per snapshot, check), and qemu-img's snapshots
 * handled by blocktab compared with qemu-img doing the same on a twin.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { blocktab, qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';

const dir = tmpDir('snapshot-diff-');
const f = (n: string) => path.join(dir, n);

function bt(args: string[]) {
  const r = blocktab(args);
  if (r.status !== 0) throw new Error(`blocktab ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** qemu-img snapshot -l rows without the date columns: [id, name, vm size, vm clock, icount]. */
function listing(file: string): string[][] {
  return qemuImg(['snapshot', '-l', file])
    .split('\n')
    .slice(2)
    .filter(Boolean)
    .map((l) => {
      const t = l.trim().split(/\s+/);
      return [t[0]!, t[1]!, t.slice(2, 4).join(' '), t[6]!, t[7] ?? ''];
    });
}

function checkClean(file: string): void {
  const r = qemuImgRun(['check', file]);
  expect(r.stdout + r.stderr).toContain('No errors were found on the image.');
  expect(r.status).toBe(0);
}

/** The raw content of snapshot `name` as qemu-img reads it. */
function snapshotContent(file: string, name: string): Buffer {
  const out = f(`content-${Math.random().toString(36).slice(2)}.raw`);
  qemuImg(['convert', '-f', 'qcow2', '-l', `snapshot.name=${name}`, '-O', 'raw', file, out]);
  const b = fs.readFileSync(out);
  fs.rmSync(out);
  return b;
}

function activeContent(file: string): Buffer {
  const out = f(`active-${Math.random().toString(36).slice(2)}.raw`);
  qemuImg(['convert', '-f', 'qcow2', '-O', 'raw', file, out]);
  const b = fs.readFileSync(out);
  fs.rmSync(out);
  return b;
}

describe('blocktab snapshot: sequences checked by qemu-img', () => {
  it('create / write / create / apply / delete keeps every snapshot readable and the image clean', () => {
    const img = f('seq.qcow2');
    qemuImg(['create', '-f', 'qcow2', img, '8M']);
    qemuIo(img, ['write -P 1 0 256k', 'write -c -P 7 2M 64k', 'write -z 4M 64k'], 'qcow2');
    bt(['snapshot', '-c', 'one', img]);
    const one = activeContent(img);
    checkClean(img);
    qemuIo(img, ['write -P 2 64k 128k', 'write -P 3 6M 512', 'discard 2M 64k'], 'qcow2');
    bt(['snapshot', '-c', 'two', img]);
    const two = activeContent(img);
    qemuIo(img, ['write -P 4 0 8M'], 'qcow2');
    const four = activeContent(img);
    checkClean(img);

    expect(listing(img)).toEqual([
      ['1', 'one', '0 B', '00:00:00.000', '0'],
      ['2', 'two', '0 B', '00:00:00.000', '0'],
    ]);
    expect(snapshotContent(img, 'one').equals(one)).toBe(true);
    expect(snapshotContent(img, 'two').equals(two)).toBe(true);
    expect(activeContent(img).equals(four)).toBe(true);

    bt(['snapshot', '-a', 'one', img]);
    checkClean(img);
    expect(activeContent(img).equals(one)).toBe(true);
    expect(snapshotContent(img, 'two').equals(two)).toBe(true);

    bt(['snapshot', '-d', 'one', img]);
    checkClean(img);
    expect(listing(img).map((r) => r[1])).toEqual(['two']);
    expect(activeContent(img).equals(one)).toBe(true);
    // Writes after the delete go in place where the snapshot no longer shares clusters.
    qemuIo(img, ['write -P 5 0 64k'], 'qcow2');
    checkClean(img);

    bt(['snapshot', '-a', '2', img]);
    expect(activeContent(img).equals(two)).toBe(true);
    bt(['snapshot', '-c', 'three', img]);
    expect(listing(img).map((r) => r[0])).toEqual(['2', '3']);
    bt(['snapshot', '-d', 'two', img]);
    bt(['snapshot', '-d', 'three', img]);
    checkClean(img);
    expect(qemuImg(['snapshot', '-l', img])).toBe('');
    expect(activeContent(img).equals(two)).toBe(true);
  });

  it('the snapshot table entry has the layout qemu-img writes (sizes, extra data)', () => {
    const a = f('layout-a.qcow2');
    const b = f('layout-b.qcow2');
    qemuImg(['create', '-f', 'qcow2', a, '1M']);
    qemuImg(['create', '-f', 'qcow2', b, '1M']);
    bt(['snapshot', '-c', 'snap', a]);
    qemuImg(['snapshot', '-c', 'snap', b]);
    const entry = (file: string) => {
      const d = fs.readFileSync(file);
      const off = Number(d.readBigUInt64BE(64));
      const len = 40 + d.readUInt32BE(off + 36) + d.readUInt16BE(off + 12) + d.readUInt16BE(off + 14);
      const e = Buffer.from(d.subarray(off, off + len));
      e.fill(0, 0, 8); // l1_table_offset
      e.fill(0, 16, 24); // date
      return { e, nb: d.readUInt32BE(60), tail: d.length - off };
    };
    const ea = entry(a);
    const eb = entry(b);
    expect(ea.nb).toBe(1);
    expect(ea.e.toString('hex')).toBe(eb.e.toString('hex'));
  });

  it('snapshots made by qemu-img: blocktab lists, applies and deletes them as qemu-img does on a twin', () => {
    const mine = f('twin-a.qcow2');
    const twin = f('twin-b.qcow2');
    qemuImg(['create', '-f', 'qcow2', mine, '4M']);
    qemuIo(mine, ['write -P 9 0 1M'], 'qcow2');
    qemuImg(['snapshot', '-c', 'base', mine]);
    qemuIo(mine, ['write -P 8 512k 1M', 'write -c -P 6 3M 64k'], 'qcow2');
    qemuImg(['snapshot', '-c', 'mid', mine]);
    qemuImg(['resize', mine, '6M']);
    qemuIo(mine, ['write -P 5 5M 64k'], 'qcow2');
    fs.copyFileSync(mine, twin);

    const ours = bt(['snapshot', '-l', mine]).split('\n');
    const theirs = qemuImg(['snapshot', '-l', twin]).split('\n');
    expect(ours).toEqual(theirs);

    // 'base' was taken at 4 MiB: applying it shrinks the disk back, as QEMU does.
    bt(['snapshot', '-a', 'base', mine]);
    qemuImg(['snapshot', '-a', 'base', twin]);
    checkClean(mine);
    expect(qemuImgRun(['compare', mine, twin]).status).toBe(0);
    expect(JSON.parse(qemuImg(['info', '--output=json', mine]))['virtual-size']).toBe(4 * 1024 * 1024);

    bt(['snapshot', '-d', 'mid', mine]);
    qemuImg(['snapshot', '-d', 'mid', twin]);
    checkClean(mine);
    expect(qemuImgRun(['compare', mine, twin]).status).toBe(0);
    expect(listing(mine)).toEqual(listing(twin));
    // The active image owns its clusters again: a write and a check stay clean.
    qemuIo(mine, ['write -P 1 0 4M'], 'qcow2');
    checkClean(mine);
  });
});

describe('blocktab snapshot: bad input changes nothing', () => {
  const bytes = (p: string) => fs.readFileSync(p);

  it('applying or deleting a missing snapshot fails with qemu-img\'s messages', () => {
    const img = f('missing.qcow2');
    qemuImg(['create', '-f', 'qcow2', img, '1M']);
    qemuImg(['snapshot', '-c', 'a', img]);
    const before = bytes(img);
    const ap = blocktab(['snapshot', '-a', 'nope', img]);
    expect(ap.status).toBe(1);
    expect(ap.stderr).toContain("Could not apply snapshot 'nope': Failed to load snapshot: No such file or directory");
    const del = blocktab(['snapshot', '-d', 'nope', img]);
    expect(del.status).toBe(1);
    expect(del.stderr).toContain("Could not delete snapshot 'nope': snapshot not found");
    // qemu-img deletes by name only: an id is "not found".
    expect(blocktab(['snapshot', '-d', '1', img]).status).toBe(1);
    expect(bytes(img).equals(before)).toBe(true);
    expect(blocktab(['snapshot', '-l', '-c', 'x', img]).stderr).toContain("Cannot mix '-l', '-a', '-c', '-d'");
  });

  it('a duplicate name is accepted, as qemu-img 7.2 does (ids differ)', () => {
    const a = f('dup-a.qcow2');
    const b = f('dup-b.qcow2');
    qemuImg(['create', '-f', 'qcow2', a, '1M']);
    qemuImg(['create', '-f', 'qcow2', b, '1M']);
    bt(['snapshot', '-c', 'x', a]);
    bt(['snapshot', '-c', 'x', a]);
    qemuImg(['snapshot', '-c', 'x', b]);
    qemuImg(['snapshot', '-c', 'x', b]);
    expect(listing(a)).toEqual(listing(b));
    bt(['snapshot', '-d', 'x', a]);
    qemuImg(['snapshot', '-d', 'x', b]);
    expect(listing(a)).toEqual(listing(b));
    checkClean(a);
  });

  it('a snapshot table at QEMU\'s limit (65536 entries) refuses one more, file unchanged', () => {
    const img = f('full.qcow2');
    qemuImg(['create', '-f', 'qcow2', img, '1M']);
    // Append a table of 65536 minimal entries (l1_size 0) and point the header at it.
    const d = fs.readFileSync(img);
    const cs = 65536;
    const tableOff = Math.ceil(d.length / cs) * cs;
    const n = 65536;
    const entry = 40 + 24 + 8; // header, extra data, id + name padded to 8
    const table = Buffer.alloc(n * entry);
    for (let i = 0; i < n; i++) {
      const p = i * entry;
      const id = String(i + 1).padStart(4, '0').slice(-4);
      table.writeUInt16BE(4, p + 12);
      table.writeUInt16BE(4, p + 14);
      table.writeUInt32BE(24, p + 36);
      table.writeBigUInt64BE(1048576n, p + 48);
      table.write(id, p + 64, 'latin1');
      table.write(id, p + 68, 'latin1');
    }
    const out = Buffer.concat([d, Buffer.alloc(tableOff - d.length), table]);
    out.writeUInt32BE(n, 60);
    out.writeBigUInt64BE(BigInt(tableOff), 64);
    fs.writeFileSync(img, out);
    const twin = f('full-twin.qcow2');
    fs.copyFileSync(img, twin);
    const r = blocktab(['snapshot', '-c', 'one-more', img]);
    const q = qemuImgRun(['snapshot', '-c', 'one-more', twin]);
    expect(q.status).toBe(1);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("Could not create snapshot 'one-more': -27 (File too large)");
    expect(q.stderr).toContain("Could not create snapshot 'one-more': -27 (File too large)");
    expect(bytes(img).equals(out)).toBe(true);
  });

  it('a raw image has no snapshots: -c fails with ENOTSUP, -l prints nothing', () => {
    const img = f('plain.raw');
    qemuImg(['create', '-f', 'raw', img, '1M']);
    const r = blocktab(['snapshot', '-f', 'raw', '-c', 'x', img]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("Could not create snapshot 'x': -95 (Operation not supported)");
    expect(blocktab(['snapshot', '-f', 'raw', '-l', img]).stdout).toBe('');
  });
});
