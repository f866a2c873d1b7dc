/**
 * The quorum driver against qemu-io 7.2: the same command lines run with
 * Debian's qemu-io on one set of raw children and with blocktab speaking as
 * qemu-io on a twin set; outputs (timings filtered) and the children's bytes
 * afterwards must be equal. Covers writes to every child, reads that vote
 * with one child corrupted, threshold failures, the tie rule, rewrite-corrupted,
 * read-pattern fifo, the option errors, and qemu-img info over a quorum
 * (iotest 110's "cannot determine actual path").
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { qemuImg, tmpDir } from '../helpers/qemu.js';
import { filterTimings, persona, qemuTool } from '../helpers/persona.js';

const dir = tmpDir('blocktab-quorum-');
const SIZE = 1024 * 1024;

/** Two sets of three raw children: `q` for qemu-io, `b` for blocktab. */
function children(tag: string): { q: string[]; b: string[] } {
  const make = (side: string) =>
    [0, 1, 2].map((i) => {
      const f = path.join(dir, `${tag}-${side}${i}.raw`);
      fs.writeFileSync(f, '');
      fs.truncateSync(f, SIZE);
      return f;
    });
  return { q: make('q'), b: make('b') };
}

function imageOpts(files: string[], extra = ''): string {
  const kids = files.map((f, i) => `file.children.${i}.driver=raw,file.children.${i}.file.filename=${f}`).join(',');
  return `driver=raw,file.driver=quorum,${kids}${extra}`;
}

/** Runs the same qemu-io commands on both sides (on one child file each with `child`). */
function both(cmds: string[], sets: { q: string[]; b: string[] }, extra = ''): { q: string; b: string } {
  const run = (tool: (args: string[]) => { stdout: string; stderr: string }, files: string[]) => {
    const r = tool([...cmds.flatMap((c) => ['-c', c]), '--image-opts', imageOpts(files, extra)]);
    return filterTimings(r.stdout + r.stderr).split(files[0]!.replace(/[qb]0\.raw$/, '')).join('DIR/');
  };
  return { q: run((a) => qemuTool('qemu-io', a), sets.q), b: run((a) => persona('qemu-io', a), sets.b) };
}

/** Writes on one child alone, on both sides. */
function onChild(sets: { q: string[]; b: string[] }, i: number, cmd: string): void {
  for (const f of [sets.q[i]!, sets.b[i]!]) expect(qemuTool('qemu-io', ['-f', 'raw', '-c', cmd, f]).status).toBe(0);
}

function sameChildren(sets: { q: string[]; b: string[] }): void {
  for (let i = 0; i < 3; i++) expect(fs.readFileSync(sets.b[i]!).equals(fs.readFileSync(sets.q[i]!)), `child ${i}`).toBe(true);
}

describe('quorum vs qemu-io', () => {
  it('writes reach every child; one corrupted child is outvoted', () => {
    const s = children('vote');
    const w = both(['write -P 0x32 0 64k', 'write -z 128k 4k'], s, ',file.vote-threshold=2');
    expect(w.b).toBe(w.q);
    sameChildren(s);
    onChild(s, 1, 'write -P 0x42 0 4k');
    const r = both(['read -P 0x32 0 64k', 'read -P 0 128k 4k'], s, ',file.vote-threshold=2');
    expect(r.q).not.toContain('fail');
    expect(r.b).toBe(r.q);
  });

  it('fails a read when no version has vote-threshold votes; with threshold 1 a tie goes as in QEMU', () => {
    const s = children('tie');
    onChild(s, 0, 'write -P 0x11 0 4k');
    onChild(s, 1, 'write -P 0x22 0 4k');
    onChild(s, 2, 'write -P 0x33 0 4k');
    const fail = both(['read 0 4k'], s, ',file.vote-threshold=2');
    expect(fail.q).toContain('read failed');
    expect(fail.b).toBe(fail.q);
    const tie = both(['read -v 0 16'], s, ',file.vote-threshold=1');
    expect(tie.b).toBe(tie.q);
  });

  it('rewrite-corrupted puts the winning data back into the outvoted child', () => {
    const s = children('rewrite');
    both(['write -P 0x5a 0 256k'], s, ',file.vote-threshold=2');
    onChild(s, 2, 'write -P 0x66 64k 8k');
    const r = both(['read -P 0x5a 0 256k'], s, ',file.vote-threshold=2,file.rewrite-corrupted=on');
    expect(r.b).toBe(r.q);
    sameChildren(s);
    expect(fs.readFileSync(s.b[2]!).subarray(64 * 1024, 72 * 1024).every((x) => x === 0x5a)).toBe(true);
  });

  it('read-pattern fifo reads the first child', () => {
    const s = children('fifo');
    onChild(s, 0, 'write -P 0x71 0 4k');
    const r = both(['read -P 0x71 0 4k'], s, ',file.vote-threshold=1,file.read-pattern=fifo');
    expect(r.q).not.toContain('fail');
    expect(r.b).toBe(r.q);
  });

  it('refuses options as QEMU does', () => {
    const s = children('opts');
    for (const extra of ['', ',file.vote-threshold=4', ',file.vote-threshold=1,file.read-pattern=random', ',file.vote-threshold=2,file.blkverify=on']) {
      const r = both(['read 0 512'], s, extra);
      expect(r.q, extra).toMatch(/^qemu-io: /);
      expect(r.b, extra).toBe(r.q);
    }
  });

  it('qemu-img info over a quorum cannot resolve a relative backing name (iotest 110)', () => {
    const base = path.join(dir, 'base.qcow2');
    const top = path.join(dir, 'top.qcow2');
    qemuImg(['create', '-f', 'qcow2', base, '1M']);
    qemuImg(['create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', top]);
    fs.copyFileSync(top, `${top}.copy`);
    const name = `json:${JSON.stringify({ driver: 'qcow2', file: { driver: 'quorum', 'vote-threshold': 1, children: [{ driver: 'file', filename: top }, { driver: 'file', filename: `${top}.copy` }] } })}`;
    const theirs = qemuTool('qemu-img', ['info', name]);
    const ours = persona('qemu-img', ['info', name]);
    expect(theirs.stdout).toContain('(cannot determine actual path)');
    // The json: name's key order is QEMU's hash order; the rest is line for line.
    const rest = (s: string) => s.split('\n').filter((l) => !l.startsWith('image: ')).join('\n');
    expect(rest(ours.stdout)).toBe(rest(theirs.stdout));
    expect(ours.stdout).toMatch(/^image: json:\{/);
  });
});
