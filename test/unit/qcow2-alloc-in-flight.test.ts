/**
 * qcow2 writes of whole fresh clusters with their data in flight outside the
 * lock (alloc-in-flight.ts): several data writes run at once, clusters are
 * handed out in call order (the file equals the one made by the same writes
 * one at a time), a write over clusters still in flight waits for them
 * instead of allocating again, and a flush issued meanwhile finds the new
 * entries. Every image is then checked: no leaks, no errors.
 */
import { describe, expect, it } from 'vitest';
import { MemoryStorage } from '../../src/protocols/memory.js';
import '../../src/drivers.js';
import { createImage, planCreate } from '../../src/img/create.js';
import { openImage, closeNode } from '../../src/block/open.js';
import { bdrvFlush, bdrvPwrite } from '../../src/block/io.js';
import type { BlockNode } from '../../src/block/node.js';
import { seededBytes } from '../helpers/qemu.js';
import { check, guest } from '../helpers/qcow2-check.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const none = { leaks: false, errors: false };

async function fresh(st: MemoryStorage): Promise<BlockNode> {
  await createImage(st, await planCreate(st, { filename: 'a.qcow2', format: 'qcow2', size: 8 * MiB }));
  return openImage(st, 'a.qcow2', { format: 'qcow2' });
}

/** Makes the image file's data writes slow, the earlier ones slower; returns the most that ran at once. */
function slowData(bs: BlockNode): { most: () => number; restore: () => void } {
  const drv = bs.file!.node.driver as { pwritev: NonNullable<BlockNode['driver']['pwritev']> };
  const plain = drv.pwritev;
  let running = 0;
  let most = 0;
  let k = 0;
  drv.pwritev = async (...args) => {
    if (args[2] < 64 * KiB) return plain(...args);
    most = Math.max(most, ++running);
    await new Promise((r) => setTimeout(r, Math.max(1, 12 - 3 * k++)));
    try {
      return await plain(...args);
    } finally {
      running--;
    }
  };
  return { most: () => most, restore: () => (drv.pwritev = plain) };
}

const writes = [0, 3 * MiB, 1 * MiB, 5 * MiB + 64 * KiB].map((offset, i) => ({ offset, data: seededBytes(192 * KiB, i + 1) }));

describe('qcow2 allocating writes in flight', () => {
  it('run their data writes at once and lay the file out as the same writes one at a time', async () => {
    const one = new MemoryStorage();
    const a = await fresh(one);
    for (const w of writes) await bdrvPwrite(a, w.offset, w.data.length, w.data);
    await closeNode(a);

    const many = new MemoryStorage();
    const b = await fresh(many);
    const slow = slowData(b);
    try {
      await Promise.all(writes.map((w) => bdrvPwrite(b, w.offset, w.data.length, w.data)));
    } finally {
      slow.restore();
    }
    await closeNode(b);
    expect(slow.most()).toBe(writes.length);
    expect(Buffer.from(many.get('a.qcow2')!).equals(Buffer.from(one.get('a.qcow2')!))).toBe(true);
    expect((await check(many, none)).corruptions).toBe(0);
    expect((await check(many, none)).leaks).toBe(0);
    const g = await guest(many);
    for (const w of writes) expect(Buffer.from(g.subarray(w.offset, w.offset + w.data.length)).equals(Buffer.from(w.data))).toBe(true);
  });

  it('a write over clusters still in flight waits for them: one allocation, the later write wins', async () => {
    const st = new MemoryStorage();
    const bs = await fresh(st);
    const first = seededBytes(128 * KiB, 11);
    const second = seededBytes(128 * KiB, 12);
    const slow = slowData(bs);
    try {
      await Promise.all([bdrvPwrite(bs, 1 * MiB, first.length, first), bdrvPwrite(bs, 1 * MiB, second.length, second)]);
    } finally {
      slow.restore();
    }
    await closeNode(bs);
    const r = await check(st, none);
    expect(r.leaks).toBe(0);
    expect(r.corruptions).toBe(0);
    expect(Buffer.from((await guest(st)).subarray(1 * MiB, 1 * MiB + second.length)).equals(Buffer.from(second))).toBe(true);
  });

  it('a flush issued while data is in flight writes the entries that point at it', async () => {
    const st = new MemoryStorage();
    const bs = await fresh(st);
    const data = seededBytes(256 * KiB, 21);
    const slow = slowData(bs);
    try {
      const w = bdrvPwrite(bs, 2 * MiB, data.length, data);
      await bdrvFlush(bs);
      await w;
    } finally {
      slow.restore();
    }
    // The file as the flush left it, before close writes anything more.
    const copy = new MemoryStorage();
    copy.put('a.qcow2', st.get('a.qcow2')!.slice());
    await closeNode(bs);
    expect(Buffer.from((await guest(copy)).subarray(2 * MiB, 2 * MiB + data.length)).equals(Buffer.from(data))).toBe(true);
    expect((await check(copy, none)).corruptions).toBe(0);
  });
});
