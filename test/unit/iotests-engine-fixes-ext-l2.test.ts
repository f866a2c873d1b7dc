/**
 * qcow2 extended L2 behaviours that QEMU's iotest 271 found (issue 19), each
 * reproduced on images made in memory. The expected bitmaps are the ones
 * 271.out records for QEMU 7.2; the L2 table of a fresh 1 MiB image sits at
 * 0x40000 (first cluster after header, refcount table, refcount block, L1).
 */
import { describe, expect, it } from 'vitest';
import '../../src/drivers.js';
import { MemoryStorage } from '../../src/protocols/memory.js';
import { createImage, planCreate } from '../../src/img/create.js';
import { closeNode, openImage } from '../../src/block/open.js';
import { checkNode } from '../../src/img/check.js';
import { bdrvPread, bdrvPwrite, bdrvPwriteZeroes, bdrvTruncate } from '../../src/block/io.js';
import type { BlockError } from '../../src/block/errors.js';

const KIB = 1024;
const L2 = 0x40000;

/** Bit list → the 64-bit bitmap word 271 prints (zero bits high, allocation bits low). */
function bitmap(alloc: number[], zero: number[]): bigint {
  let v = 0n;
  for (const b of alloc) v |= 1n << BigInt(b);
  for (const b of zero) v |= 1n << BigInt(32 + b);
  return v;
}
const seq = (a: number, b: number): number[] => Array.from({ length: b - a + 1 }, (_, i) => a + i);

function entry(st: MemoryStorage, name: string, n: number): { entry: bigint; bitmap: bigint } {
  const f = st.get(name)!;
  const v = new DataView(f.buffer, f.byteOffset, f.byteLength);
  return { entry: v.getBigUint64(L2 + n * 16), bitmap: v.getBigUint64(L2 + n * 16 + 8) };
}

function poke(st: MemoryStorage, name: string, at: number, bytes: number[]): void {
  const f = st.get(name)!;
  f.set(bytes, at);
}

async function makeImage(st: MemoryStorage, size: number, backing?: { name: string; size: number }): Promise<void> {
  if (backing) {
    await createImage(st, await planCreate(st, { filename: backing.name, format: 'raw', size: backing.size }));
    const b = await openImage(st, backing.name, { format: 'raw', readOnly: false });
    await bdrvPwrite(b, 0, backing.size, new Uint8Array(backing.size).fill(0xff));
    await closeNode(b);
  }
  const options = ['extended_l2=on', ...(backing ? [`backing_file=${backing.name}`, 'backing_fmt=raw'] : [])];
  await createImage(st, await planCreate(st, { filename: 't.qcow2', format: 'qcow2', size, options }));
}

async function withImage<T>(st: MemoryStorage, fn: (bs: Awaited<ReturnType<typeof openImage>>, warnings: string[]) => Promise<T>, readOnly = false): Promise<T> {
  const warnings: string[] = [];
  const bs = await openImage(st, 't.qcow2', { format: 'qcow2', readOnly, warn: (m) => warnings.push(m) });
  try {
    return await fn(bs, warnings);
  } finally {
    await closeNode(bs).catch(() => undefined);
  }
}

describe('extended L2 zero writes at the image end (271)', () => {
  it('a 35k zero write over the last cluster of a 2083k image sets zero bits 0..17 only', async () => {
    const st = new MemoryStorage();
    await makeImage(st, 2083 * KIB);
    await withImage(st, (bs) => bdrvPwriteZeroes(bs, 2048 * KIB, 35 * KIB));
    expect(entry(st, 't.qcow2', 32).bitmap).toBe(bitmap([], seq(0, 17)));
    // The same with a backing file (no copy-on-write: nothing follows the image's end).
    const st2 = new MemoryStorage();
    await makeImage(st2, 2083 * KIB, { name: 'b.raw', size: 2083 * KIB });
    await withImage(st2, (bs) => bdrvPwriteZeroes(bs, 2048 * KIB, 35 * KIB));
    expect(entry(st2, 't.qcow2', 32).bitmap).toBe(bitmap([], seq(0, 17)));
  });

  it('an image ending on a subcluster boundary still gets the whole cluster zeroed', async () => {
    const st = new MemoryStorage();
    await makeImage(st, 2082 * KIB);
    await withImage(st, (bs) => bdrvPwriteZeroes(bs, 2048 * KIB, 34 * KIB));
    expect(entry(st, 't.qcow2', 32).bitmap).toBe(bitmap([], seq(0, 31)));
  });
});

describe('invalid extended L2 bitmaps (271)', () => {
  async function corruptCluster1(st: MemoryStorage): Promise<void> {
    await makeImage(st, 1024 * KIB);
    await withImage(st, (bs) => bdrvPwrite(bs, 32 * KIB, 128 * KIB, new Uint8Array(128 * KIB)));
    // Cluster 1: every subcluster allocated, and subcluster 0 also zero.
    poke(st, 't.qcow2', L2 + 24, [0, 0, 0, 1]);
    expect(entry(st, 't.qcow2', 1).bitmap).toBe(bitmap(seq(0, 31), [0]));
  }

  it('a read marks the image corrupt in QEMU words (two spaces) and fails with EIO', async () => {
    const st = new MemoryStorage();
    await corruptCluster1(st);
    await withImage(st, async (bs, warnings) => {
      const err = (await bdrvPread(bs, 0, 192 * KIB, new Uint8Array(192 * KIB)).catch((e: unknown) => e)) as BlockError;
      expect(err.code).toBe('EIO');
      expect(warnings).toEqual([
        'qcow2: Marking image as corrupt: Invalid cluster entry found  (L2 offset: 0x40000, L2 index: 0x1); further corruption events will be suppressed',
      ]);
    });
    // The corrupt bit is set on disk (incompatible feature bit 1 at 0x4f).
    expect(st.get('t.qcow2')![0x4f]! & 2).toBe(2);
  });

  it('a read-only open reports it once as non-fatal', async () => {
    const st = new MemoryStorage();
    await corruptCluster1(st);
    await withImage(
      st,
      async (bs, warnings) => {
        for (let i = 0; i < 2; i++) {
          const err = (await bdrvPread(bs, 64 * KIB, 4 * KIB, new Uint8Array(4 * KIB)).catch((e: unknown) => e)) as BlockError;
          expect(err.code).toBe('EIO');
        }
        expect(warnings).toEqual([
          'qcow2: Image is corrupt: Invalid cluster entry found  (L2 offset: 0x40000, L2 index: 0x1); further non-fatal corruption events will be suppressed',
        ]);
      },
      true,
    );
    expect(st.get('t.qcow2')![0x4f]! & 2).toBe(0);
  });

  it('a write over it fails before writing (one space), and so does a write to an unallocated cluster with allocation bits', async () => {
    const st = new MemoryStorage();
    await corruptCluster1(st);
    await withImage(st, async (bs, warnings) => {
      const err = (await bdrvPwrite(bs, 0, 192 * KIB, new Uint8Array(192 * KIB).fill(7)).catch((e: unknown) => e)) as BlockError;
      expect(err.code).toBe('EIO');
      expect(warnings).toEqual([
        'qcow2: Marking image as corrupt: Invalid cluster entry found (L2 offset: 0x40000, L2 index: 0x1); further corruption events will be suppressed',
      ]);
    });
    expect(entry(st, 't.qcow2', 0).bitmap).toBe(bitmap(seq(16, 31), []));

    const st2 = new MemoryStorage();
    await makeImage(st2, 1024 * KIB);
    await withImage(st2, (bs) => bdrvPwrite(bs, 256 * KIB, KIB, new Uint8Array(KIB)));
    poke(st2, 't.qcow2', L2 + 15, [1]);
    await withImage(st2, async (bs, warnings) => {
      const err = (await bdrvPwrite(bs, 0, KIB, new Uint8Array(KIB)).catch((e: unknown) => e)) as BlockError;
      expect(err.code).toBe('EIO');
      expect(warnings[0]).toBe('qcow2: Marking image as corrupt: Invalid cluster entry found (L2 offset: 0x40000, L2 index: 0); further corruption events will be suppressed');
    });
  });

  it('a compressed cluster with bits in its unused bitmap is valid', async () => {
    const st = new MemoryStorage();
    await makeImage(st, 1024 * KIB);
    await withImage(st, (bs) => bdrvPwrite(bs, 0, 64 * KIB, new Uint8Array(64 * KIB).fill(11), { compressed: true }));
    poke(st, 't.qcow2', L2 + 11, [1, 0x80]);
    await withImage(st, async (bs) => {
      await bdrvPwrite(bs, 0, 64 * KIB, new Uint8Array(64 * KIB).fill(11));
    });
    expect(entry(st, 't.qcow2', 0).bitmap).toBe(bitmap(seq(0, 31), []));
  });
});

describe('check repairs an unaligned entry without allocated subclusters (271)', () => {
  it('the entry loses its offset, zero subclusters stay zero and the others show the backing file again', async () => {
    const st = new MemoryStorage();
    await makeImage(st, 128 * KIB, { name: 'b.raw', size: 128 * KIB });
    await withImage(st, async (bs) => {
      await bdrvPwrite(bs, 4 * KIB, 2 * KIB, new Uint8Array(2 * KIB).fill(1));
      await bdrvPwriteZeroes(bs, 4 * KIB, 2 * KIB);
    });
    poke(st, 't.qcow2', L2 + 6, [2]);
    const messages: string[] = [];
    await withImage(st, (bs) => checkNode(bs, 't.qcow2', { leaks: true, errors: true }, { line: (m) => messages.push(m) }));
    expect(messages[0]).toBe('Repairing offset=50200: Preallocated cluster is not properly aligned; L2 entry corrupted.');
    expect(entry(st, 't.qcow2', 0)).toEqual({ entry: 0n, bitmap: bitmap([], [2]) });
    await withImage(st, async (bs) => {
      const buf = new Uint8Array(128 * KIB);
      await bdrvPread(bs, 0, buf.length, buf);
      expect(buf.subarray(0, 4 * KIB).every((b) => b === 0xff)).toBe(true);
      expect(buf.subarray(4 * KIB, 6 * KIB).every((b) => b === 0)).toBe(true);
      expect(buf.subarray(6 * KIB).every((b) => b === 0xff)).toBe(true);
    });
  });
});

describe('resize with preallocation (271)', () => {
  for (const prealloc of ['metadata', 'falloc', 'full'] as const) {
    for (const backing of [true, false]) {
      it(`${prealloc}, ${backing ? 'over a backing file' : 'no backing file'}: old data stays, the new area reads zeros, check is clean`, async () => {
        const st = new MemoryStorage();
        await makeImage(st, 503 * KIB, backing ? { name: 'b.raw', size: 1024 * KIB } : undefined);
        if (!backing) await withImage(st, (bs) => bdrvPwrite(bs, 0, 503 * KIB, new Uint8Array(503 * KIB).fill(0xff)));
        await withImage(st, (bs) => bdrvTruncate(bs, 1013 * KIB, false, prealloc));
        await withImage(st, async (bs) => {
          const buf = new Uint8Array(1013 * KIB);
          await bdrvPread(bs, 0, buf.length, buf);
          expect(buf.subarray(0, 503 * KIB).every((b) => b === 0xff)).toBe(true);
          expect(buf.subarray(503 * KIB).every((b) => b === 0)).toBe(true);
          const c = (await checkNode(bs, 't.qcow2', { leaks: false, errors: false })).check;
          expect([c.corruptions ?? 0, c.leaks ?? 0]).toEqual([0, 0]);
        });
        // Every cluster of the new area has a host cluster; data modes allocate its subclusters when a backing file must be hidden.
        const last = entry(st, 't.qcow2', 15);
        expect(last.entry & 0x00fffffffffffe00n).not.toBe(0n);
        const allocBits = last.bitmap & 0xffffffffn;
        expect(allocBits).toBe(prealloc !== 'metadata' && backing ? 0xffffffffn : 0n);
        if (prealloc === 'metadata' && backing) expect(last.bitmap >> 32n).toBe(0xffffffffn);
      });
    }
  }

  it('shrinking with preallocation is refused', async () => {
    const st = new MemoryStorage();
    await makeImage(st, 1024 * KIB);
    await withImage(st, async (bs) => {
      const err = (await bdrvTruncate(bs, 512 * KIB, false, 'falloc').catch((e: unknown) => e)) as BlockError;
      expect(err.code).toBe('ENOTSUP');
      expect(err.message).toMatch(/Preallocation can't be used for shrinking an image/);
    });
  });
});

describe('clusters freed by a write are reused by the next allocation (271)', () => {
  it('decompressing a cluster frees its compressed data for the clusters allocated next', async () => {
    const st = new MemoryStorage();
    await makeImage(st, 1024 * KIB);
    await withImage(st, async (bs) => {
      for (let c = 0; c < 4; c++) await bdrvPwrite(bs, c * 64 * KIB, 64 * KIB, new Uint8Array(64 * KIB).fill(c + 1), { compressed: true });
    });
    const hostOf = (n: number): bigint => entry(st, 't.qcow2', n).entry & 0x00fffffffffffe00n;
    const compressed0 = entry(st, 't.qcow2', 0).entry & ((1n << 54n) - 1n);
    await withImage(st, async (bs) => {
      // Cluster 0 is decompressed (its compressed bytes are let go), then clusters 8 and 9 are allocated.
      await bdrvPwrite(bs, KIB, KIB, new Uint8Array(KIB).fill(9));
      await bdrvPwrite(bs, 8 * 64 * KIB, 128 * KIB, new Uint8Array(128 * KIB).fill(8));
    });
    // All four compressed clusters share one host cluster; only when its last user goes is it free.
    const shared = compressed0 - (compressed0 % 0x10000n);
    expect(hostOf(8)).not.toBe(shared);
    await withImage(st, async (bs) => {
      for (let c = 1; c < 4; c++) await bdrvPwrite(bs, c * 64 * KIB, KIB, new Uint8Array(KIB).fill(9));
      await bdrvPwrite(bs, 12 * 64 * KIB, 64 * KIB, new Uint8Array(64 * KIB).fill(12));
    });
    expect(hostOf(12)).toBe(shared);
    await withImage(st, async (bs) => {
      const c = (await checkNode(bs, 't.qcow2', { leaks: false, errors: false })).check;
      expect([c.corruptions ?? 0, c.leaks ?? 0]).toEqual([0, 0]);
    });
  });
});
