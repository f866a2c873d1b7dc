/**
 * Large writes on an ext4 host file allocate their range first
 * (src/protocols/file.ts allocateBeforeWrite: fallocate KEEP_SIZE, then the
 * write), which spares the page cache ext4's delayed allocation. Checked
 * here: which writes ask (1 MiB and up, on ext4 only), that they ask for
 * exactly the range written (the file ends with the blocks a plain write
 * leaves, no more), that the bytes read back, and that a host refusing once
 * stops the asking for that node while the writes go on.
 */
import { afterAll, beforeEach, describe, expect, it, vi } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const calls: [number, number][] = [];
let refuse = false;
vi.mock('../../src/protocols/seek-hole.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../src/protocols/seek-hole.js')>();
  return {
    ...real,
    allocateRange: (fd: number, offset: number, length: number) => {
      calls.push([offset, length]);
      return refuse ? false : real.allocateRange(fd, offset, length);
    },
  };
});

const { FileStorage } = await import('../../src/protocols/file.js');
const { bdrvPread, bdrvPwrite } = await import('../../src/block/io.js');
const { closeNode } = await import('../../src/block/open.js');
const { seekHoleSupported } = await import('../../src/protocols/seek-hole.js');

const MiB = 1024 * 1024;
const EXT4 = 0xef53;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocktab-allocate-'));
const onExt4 = fs.statfsSync(dir).type === EXT4;
const shm = fs.existsSync('/dev/shm') && fs.statfsSync('/dev/shm').type !== EXT4 ? fs.mkdtempSync('/dev/shm/blocktab-allocate-') : null;

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
  if (shm) fs.rmSync(shm, { recursive: true, force: true });
});
beforeEach(() => {
  calls.length = 0;
  refuse = false;
});

function pattern(bytes: number, seed: number): Uint8Array {
  const b = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) b[i] = ((i * 31 + seed) & 0xff) | 1;
  return b;
}
/** Byte equality of two large buffers (toEqual walks them element by element, slowly). */
const same = (a: Uint8Array, b: Uint8Array) => Buffer.compare(a, b) === 0;

async function writable(where: string, name: string) {
  const f = path.join(where, name);
  fs.writeFileSync(f, new Uint8Array(0));
  return { f, bs: await new FileStorage().openProtocol(f, { readOnly: false }) };
}

describe('file protocol: allocate before a large write', () => {
  it.runIf(onExt4 && seekHoleSupported())('on ext4 asks for exactly each large write, and the file keeps only the blocks written', async () => {
    const { f, bs } = await writable(dir, 'a.raw');
    const big = pattern(3 * MiB, 7);
    await bdrvPwrite(bs, 5 * MiB, big.length, big); // past the end: the way a qcow2 target grows
    await bdrvPwrite(bs, 1 * MiB, MiB, pattern(MiB, 9)); // into the hole before it
    await bdrvPwrite(bs, 0, 512 * 1024, pattern(512 * 1024, 3)); // small: no allocation asked
    expect(calls).toEqual([
      [5 * MiB, 3 * MiB],
      [1 * MiB, MiB],
    ]);
    const back = new Uint8Array(3 * MiB);
    await bdrvPread(bs, 5 * MiB, back.length, back);
    expect(same(back, big)).toBe(true);
    const hole = new Uint8Array(MiB);
    await bdrvPread(bs, 2 * MiB, MiB, hole);
    expect(hole.every((b) => b === 0)).toBe(true);
    await closeNode(bs);
    const st = fs.statSync(f);
    expect(st.size).toBe(8 * MiB);
    // 3 MiB + 1 MiB + 512 KiB written, plus at most one block of extent tree.
    expect(st.blocks * 512).toBeGreaterThanOrEqual(4.5 * MiB);
    expect(st.blocks * 512).toBeLessThanOrEqual(4.5 * MiB + 4096);
  });

  it.runIf(onExt4 && seekHoleSupported())('stops asking after the host refuses once, and the writes still land', async () => {
    refuse = true;
    const { bs } = await writable(dir, 'b.raw');
    await bdrvPwrite(bs, 0, 2 * MiB, pattern(2 * MiB, 1));
    await bdrvPwrite(bs, 2 * MiB, 2 * MiB, pattern(2 * MiB, 2));
    expect(calls).toEqual([[0, 2 * MiB]]);
    const back = new Uint8Array(2 * MiB);
    await bdrvPread(bs, 2 * MiB, back.length, back);
    expect(same(back, pattern(2 * MiB, 2))).toBe(true);
    await closeNode(bs);
  });

  it.runIf(shm !== null)('elsewhere (tmpfs) never asks', async () => {
    const { bs } = await writable(shm!, 'c.raw');
    await bdrvPwrite(bs, 0, 4 * MiB, pattern(4 * MiB, 5));
    expect(calls).toEqual([]);
    await closeNode(bs);
  });
});
