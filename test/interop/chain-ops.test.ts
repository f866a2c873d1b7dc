/**
 * rebase, commit and stream on backing chains, compared with qemu-img doing
 * the same on a twin chain (qemu-img compare, check, header fields), and the
 * refusals that must leave every file as it was.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FileStorage, openImage, closeNode } from '../../src/node.js';
import { Job } from '../../src/jobs/job.js';
import { runStream } from '../../src/jobs/stream.js';
import { commitImage } from '../../src/img/commit.js';
import type { Storage } from '../../src/block/open.js';
import type { BlockDriver } from '../../src/block/driver.js';
import { BlockError } from '../../src/block/errors.js';
import { blocktab, qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';

let n = 0;

/** base ← mid ← top, each with its own patterns; returns the directory. */
function makeChain(): { dir: string; p: (s: string) => string } {
  const dir = tmpDir(`chain-${n++}-`);
  const p = (s: string) => path.join(dir, s);
  qemuImg(['create', '-f', 'qcow2', p('base.qcow2'), '4M']);
  qemuIo(p('base.qcow2'), ['write -P 1 0 4M'], 'qcow2');
  qemuImg(['create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', p('mid.qcow2')]);
  qemuIo(p('mid.qcow2'), ['write -P 2 1M 1M', 'write -z 3M 64k'], 'qcow2');
  qemuImg(['create', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', p('top.qcow2')]);
  qemuIo(p('top.qcow2'), ['write -P 3 1536k 64k', 'write -P 4 100k 3k'], 'qcow2');
  qemuImg(['create', '-f', 'qcow2', p('other.qcow2'), '4M']);
  qemuIo(p('other.qcow2'), ['write -P 1 0 1M', 'write -P 9 2M 64k'], 'qcow2');
  return { dir, p };
}

/** A twin copy of the chain in a fresh directory (relative backing names keep working). */
function twin(dir: string): (s: string) => string {
  const t = tmpDir(`chain-twin-${n++}-`);
  for (const f of fs.readdirSync(dir)) fs.copyFileSync(path.join(dir, f), path.join(t, f));
  return (s: string) => path.join(t, s);
}

const raw = (file: string) => {
  const out = `${file}.${n++}.raw`;
  qemuImg(['convert', '-O', 'raw', file, out]);
  const b = fs.readFileSync(out);
  fs.rmSync(out);
  return b;
};
const info = (file: string) => JSON.parse(qemuImg(['info', '--output=json', file])) as Record<string, unknown>;
const clean = (file: string) => expect(qemuImgRun(['check', file]).stdout).toContain('No errors were found');
const same = (a: string, b: string) => expect(raw(a).equals(raw(b))).toBe(true);

function bt(args: string[]) {
  const r = blocktab(args);
  if (r.status !== 0) throw new Error(`blocktab ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

describe('rebase', () => {
  it('safe rebase onto another image: same guest view, same header as qemu-img', () => {
    const { dir, p } = makeChain();
    const q = twin(dir);
    const before = raw(p('top.qcow2'));
    bt(['rebase', '-b', 'other.qcow2', '-F', 'qcow2', p('top.qcow2')]);
    qemuImg(['rebase', '-b', 'other.qcow2', '-F', 'qcow2', q('top.qcow2')]);
    expect(raw(p('top.qcow2')).equals(before)).toBe(true);
    same(p('top.qcow2'), q('top.qcow2'));
    expect(info(p('top.qcow2'))['backing-filename']).toBe('other.qcow2');
    expect(info(p('top.qcow2'))['backing-filename-format']).toBe('qcow2');
    clean(p('top.qcow2'));
  });

  it('safe rebase with -b "" copies the whole old chain and drops the backing file', () => {
    const { dir, p } = makeChain();
    const q = twin(dir);
    const before = raw(p('top.qcow2'));
    bt(['rebase', '-b', '', p('top.qcow2')]);
    qemuImg(['rebase', '-b', '', q('top.qcow2')]);
    expect(raw(p('top.qcow2')).equals(before)).toBe(true);
    expect(info(p('top.qcow2'))['backing-filename']).toBeUndefined();
    expect(qemuImgRun(['compare', p('top.qcow2'), q('top.qcow2')]).status).toBe(0);
    clean(p('top.qcow2'));
  });

  it('unsafe rebase only rewrites the header, as qemu-img -u', () => {
    const { dir, p } = makeChain();
    const q = twin(dir);
    bt(['rebase', '-u', '-b', 'base.qcow2', '-F', 'qcow2', p('top.qcow2')]);
    qemuImg(['rebase', '-u', '-b', 'base.qcow2', '-F', 'qcow2', q('top.qcow2')]);
    same(p('top.qcow2'), q('top.qcow2'));
    expect(info(p('top.qcow2'))['backing-filename']).toBe('base.qcow2');
    clean(p('top.qcow2'));
  });

  it('rebase onto a missing image or without -F fails and changes nothing', () => {
    const { p } = makeChain();
    const before = fs.readFileSync(p('top.qcow2'));
    const r = blocktab(['rebase', '-b', 'missing.qcow2', '-F', 'qcow2', p('top.qcow2')]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("Could not open new backing file 'missing.qcow2'");
    const r2 = blocktab(['rebase', '-b', 'other.qcow2', p('top.qcow2')]);
    expect(r2.status).toBe(1);
    expect(r2.stderr).toContain("Could not change the backing file to 'other.qcow2': backing format must be specified");
    expect(fs.readFileSync(p('top.qcow2')).equals(before)).toBe(true);
  });
});

describe('commit', () => {
  it('default base: mid gets top\'s data, top is emptied, as qemu-img commit', () => {
    const { dir, p } = makeChain();
    const q = twin(dir);
    const before = raw(p('top.qcow2'));
    expect(bt(['commit', p('top.qcow2')])).toBe('Image committed.\n');
    qemuImg(['commit', q('top.qcow2')]);
    expect(raw(p('top.qcow2')).equals(before)).toBe(true);
    same(p('mid.qcow2'), q('mid.qcow2'));
    same(p('top.qcow2'), q('top.qcow2'));
    // top is empty again: nothing allocated in it.
    const map = JSON.parse(qemuImg(['map', '--output=json', p('top.qcow2')])) as { depth: number }[];
    expect(map.every((e) => e.depth > 0)).toBe(true);
    for (const f of ['top.qcow2', 'mid.qcow2', 'base.qcow2']) clean(p(f));
  });

  it('-b base commits through mid into base; -d keeps top', () => {
    const { dir, p } = makeChain();
    const q = twin(dir);
    const before = raw(p('top.qcow2'));
    bt(['commit', '-q', '-b', 'base.qcow2', p('top.qcow2')]);
    qemuImg(['commit', '-q', '-b', 'base.qcow2', q('top.qcow2')]);
    same(p('base.qcow2'), q('base.qcow2'));
    expect(raw(p('base.qcow2')).equals(before)).toBe(true);
    same(p('top.qcow2'), q('top.qcow2'));
    clean(p('base.qcow2'));

    const r = makeChain();
    const r2 = twin(r.dir);
    bt(['commit', '-d', r.p('top.qcow2')]);
    qemuImg(['commit', '-d', r2('top.qcow2')]);
    same(r.p('mid.qcow2'), r2('mid.qcow2'));
    expect(fs.statSync(r.p('top.qcow2')).size).toBeGreaterThan(0);
    expect(JSON.parse(qemuImg(['map', '--output=json', r.p('top.qcow2')])).some((e: { depth: number }) => e.depth === 0)).toBe(true);
  });

  it('errors: no backing file, base not in the chain, read-only base — nothing changed', async () => {
    const { p } = makeChain();
    const files = ['top.qcow2', 'mid.qcow2', 'base.qcow2'].map((f) => [f, fs.readFileSync(p(f))] as const);
    const lone = blocktab(['commit', p('other.qcow2')]);
    expect(lone.stderr).toContain('Image does not have a backing file');
    const nope = blocktab(['commit', '-b', 'nope', p('top.qcow2')]);
    expect(nope.status).toBe(1);
    expect(nope.stderr).toContain(`Did not find 'nope' in the backing chain of '${p('top.qcow2')}'`);
    // A storage whose mid file cannot become writable (as a read-only file would refuse): open read-write and reopen are refused.
    const fsStorage = new FileStorage();
    const ro: Storage = {
      name: 'ro',
      resolve: (a, b) => fsStorage.resolve(a, b),
      openProtocol: async (name, o) => {
        if (name.endsWith('mid.qcow2') && !o.readOnly) throw new BlockError('EACCES', `${name}: Permission denied`);
        const node = await fsStorage.openProtocol(name, o);
        if (name.endsWith('mid.qcow2')) {
          const refuse: BlockDriver['reopen'] = async (_bs, readOnly) => {
            if (!readOnly) throw new BlockError('EACCES', `${name}: Permission denied`);
          };
          (node as { driver: BlockDriver }).driver = { ...node.driver, reopen: refuse };
        }
        return node;
      },
    };
    await expect(commitImage(ro, { filename: p('top.qcow2') })).rejects.toThrow(/Could not reopen .*mid\.qcow2' read-write/);
    for (const [f, b] of files) expect(fs.readFileSync(p(f)).equals(b)).toBe(true);
  });
});

describe('stream (library job)', () => {
  it('streams mid into top and rebases onto base; same as qemu-img rebase onto base', async () => {
    const { dir, p } = makeChain();
    const q = twin(dir);
    const before = raw(p('top.qcow2'));
    const top = await openImage(new FileStorage(), p('top.qcow2'), { readOnly: false });
    const base = top.backing!.node.backing!.node;
    const seen: string[] = [];
    const job = new Job('s', 'stream', (j) => seen.push(j.status));
    await job.start((j) => runStream(j, top, { base }));
    expect(job.current).toBe(job.total);
    expect(top.backing!.node).toBe(base);
    await closeNode(top);
    expect(seen).toEqual(['created', 'running', 'waiting', 'pending', 'concluded', 'null']);
    qemuImg(['rebase', '-b', 'base.qcow2', '-F', 'qcow2', q('top.qcow2')]);
    expect(raw(p('top.qcow2')).equals(before)).toBe(true);
    same(p('top.qcow2'), q('top.qcow2'));
    expect(info(p('top.qcow2'))['backing-filename']).toBe('base.qcow2');
    clean(p('top.qcow2'));
  });

  it('a cancelled stream stops with ECANCELED and leaves the header alone', async () => {
    const { p } = makeChain();
    const top = await openImage(new FileStorage(), p('top.qcow2'), { readOnly: false });
    const job = new Job('s', 'stream');
    job.cancel();
    await expect(job.start((j) => runStream(j, top, { base: null }))).rejects.toMatchObject({ code: 'ECANCELED' });
    await closeNode(top);
    expect(info(p('top.qcow2'))['backing-filename']).toBe('mid.qcow2');
    clean(p('top.qcow2'));
  });
});
