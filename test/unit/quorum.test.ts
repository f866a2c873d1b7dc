/**
 * The quorum driver in-process, on memory children: voting, the tie rule,
 * thresholds, rewrite-corrupted, fifo, events, blkverify, and the two
 * wordings of its errors. test/interop/quorum.test.ts holds the same
 * behaviours against qemu-io.
 */
import { afterEach, describe, expect, it } from 'vitest';
import '../../src/drivers.js';
import { MemoryStorage } from '../../src/protocols/memory.js';
import { openTree } from '../../src/block/open-tree.js';
import { bdrvDirname, closeNode } from '../../src/block/open.js';
import { bdrvPread, bdrvPwrite } from '../../src/block/io.js';
import { BlockError, setErrorWording } from '../../src/block/errors.js';
import type { OptionsTree } from '../../src/block/options-tree.js';

const SIZE = 64 * 1024;

function storage(fills: number[]): MemoryStorage {
  const st = new MemoryStorage();
  fills.forEach((v, i) => st.put(`c${i}.raw`, new Uint8Array(SIZE).fill(v)));
  return st;
}

function tree(n: number, opts: OptionsTree): OptionsTree {
  return { driver: 'quorum', ...opts, children: Array.from({ length: n }, (_, i) => ({ driver: 'raw', file: { filename: `c${i}.raw` } })) };
}

async function read(st: MemoryStorage, n: number, opts: OptionsTree, events?: unknown[]): Promise<Uint8Array> {
  const t = tree(n, opts);
  const bs = await openTree(st, events ? { ...t, quorumEvents: (e: string, d: unknown) => events.push([e, d]) } : t);
  try {
    const buf = new Uint8Array(512);
    await bdrvPread(bs, 0, 512, buf);
    return buf;
  } finally {
    await closeNode(bs);
  }
}

afterEach(() => setErrorWording('detailed'));

describe('quorum', () => {
  it('returns the version most children agree on and reports the others', async () => {
    const events: unknown[] = [];
    expect((await read(storage([7, 9, 7]), 3, { 'vote-threshold': 2 }, events))[0]).toBe(7);
    expect(events).toEqual([['QUORUM_REPORT_BAD', { type: 'read', 'node-name': expect.any(String), 'sector-num': 0, 'sectors-count': 1 }]]);
  });

  it('on a tie takes the version first seen on the highest child, as QEMU', async () => {
    expect((await read(storage([1, 2]), 2, { 'vote-threshold': 1 }))[0]).toBe(2);
    expect((await read(storage([1, 2, 2, 1]), 4, { 'vote-threshold': 1 }))[0]).toBe(2);
    expect((await read(storage([1, 2, 1, 2]), 4, { 'vote-threshold': 1 }))[0]).toBe(2);
    expect((await read(storage([2, 1, 1, 2]), 4, { 'vote-threshold': 1 }))[0]).toBe(1);
  });

  it('fails with EIO and QUORUM_FAILURE when no version reaches the threshold', async () => {
    const events: [string, unknown][] = [];
    const e = await read(storage([1, 2, 3]), 3, { 'vote-threshold': 2 }, events).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(BlockError);
    expect((e as BlockError).code).toBe('EIO');
    expect((e as BlockError).qemuMessage).toBe('Input/output error');
    expect((e as BlockError).message).toMatch(/no version of the data has 2 votes/);
    expect(events.map((x) => x[0])).toContain('QUORUM_FAILURE');
  });

  it('rewrite-corrupted writes the winner over the outvoted child', async () => {
    const st = storage([5, 5, 6]);
    await read(st, 3, { 'vote-threshold': 2, 'rewrite-corrupted': 'on' });
    expect(st.get('c2.raw')!.subarray(0, 512).every((x) => x === 5)).toBe(true);
    expect(st.get('c2.raw')![512]).toBe(6);
  });

  it('read-pattern fifo reads the first child only', async () => {
    expect((await read(storage([3, 4, 4]), 3, { 'vote-threshold': 2, 'read-pattern': 'fifo' }))[0]).toBe(3);
  });

  it('writes to every child', async () => {
    const st = storage([0, 0, 0]);
    const bs = await openTree(st, tree(3, { 'vote-threshold': 3 }));
    await bdrvPwrite(bs, 512, 512, new Uint8Array(512).fill(0xab));
    await closeNode(bs);
    for (let i = 0; i < 3; i++) expect(st.get(`c${i}.raw`)![512]).toBe(0xab);
  });

  it('blkverify names the first differing offset', async () => {
    const st = storage([1, 1]);
    const b = st.get('c1.raw')!;
    b[300] = 9;
    st.put('c1.raw', b);
    await expect(read(st, 2, { 'vote-threshold': 2, blkverify: 'on' })).rejects.toThrow('quorum: offset=0 bytes=512 contents mismatch at offset 300');
  });

  it('refuses options with QEMU texts', async () => {
    const st = storage([0, 0]);
    const refuse = (opts: OptionsTree, n = 2) => expect(openTree(st, tree(n, opts))).rejects.toThrow();
    await expect(openTree(st, tree(2, {}))).rejects.toThrow("Parameter 'vote-threshold' expects a value >= 1");
    await expect(openTree(st, tree(2, { 'vote-threshold': 3 }))).rejects.toThrow('threshold may not exceed children count');
    await expect(openTree(st, tree(2, { 'vote-threshold': 1, 'read-pattern': 'x' }))).rejects.toThrow('Please set read-pattern as fifo or quorum');
    await expect(openTree(st, tree(2, { 'vote-threshold': 1, blkverify: 'on' }))).rejects.toThrow('blkverify=on can only be set if there are exactly two files and vote-threshold is 2');
    await expect(openTree(st, tree(2, { 'vote-threshold': 2, blkverify: 'on', 'rewrite-corrupted': 'on' }))).rejects.toThrow('rewrite-corrupted=on cannot be used with blkverify=on');
    await expect(openTree(st, { driver: 'quorum', 'vote-threshold': 1 })).rejects.toThrow('Number of provided children must be 1 or more');
    await expect(openTree(st, { driver: 'quorum', 'vote-threshold': 1, children: { 0: { filename: 'c0.raw' }, 2: { filename: 'c1.raw' } } })).rejects.toThrow('Option children is not a valid array');
    await refuse({ 'vote-threshold': 0 });
  });

  it('has no directory for names stored above it', async () => {
    const st = storage([0, 0]);
    const bs = await openTree(st, tree(2, { 'vote-threshold': 1 }));
    expect(() => bdrvDirname(bs)).toThrow('Cannot generate a base directory for quorum nodes');
    expect(bs.filename).toMatch(/^json:\{"children": \[/);
    await closeNode(bs);
  });
});

describe('BlockError wording', () => {
  it('takes QEMU text as its message only under the qemu wording, and keeps both', () => {
    const a = new BlockError('EINVAL', 'x.bochs: bochs header: catalog size 9 at 0x48 is too large', { qemuMessage: 'Catalog size is too large' });
    expect(a.message).toBe('x.bochs: bochs header: catalog size 9 at 0x48 is too large');
    setErrorWording('qemu');
    const b = new BlockError('EINVAL', 'x.bochs: bochs header: catalog size 9 at 0x48 is too large', { qemuMessage: 'Catalog size is too large' });
    expect(b.message).toBe('Catalog size is too large');
    expect(b.detail).toBe(a.message);
    expect(new BlockError('EIO', 'no QEMU text').message).toBe('no QEMU text');
  });
});
