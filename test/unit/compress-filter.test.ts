/**
 * The compress filter (src/filters/compress.ts) and discard=unmap per node
 * (src/block/io.ts), on in-memory qcow2 images: what lands in the image
 * below, checked through block status and the guest bytes against a model.
 */
import { describe, expect, it } from 'vitest';
import { MemoryStorage, openImage, closeNode, bdrvPread, bdrvPwrite, bdrvPdiscard, type BlockNode } from '../../src/index.js';
import { BDRV_BLOCK_COMPRESSED, blockStatus } from '../../src/block/status.js';
import { createImage, planCreate } from '../../src/img/create.js';
import { BlockError } from '../../src/block/errors.js';
import { openTree } from '../../src/block/open-tree.js';
import { seededBytes } from '../helpers/random.js';

const CS = 65536;

async function image(st: MemoryStorage, name: string, size: number, format = 'qcow2'): Promise<void> {
  await createImage(st, await planCreate(st, { filename: name, format, size, options: format === 'qcow2' ? [`cluster_size=${CS}`] : [] }));
}

const tree = (name: string, format = 'qcow2') => ({ driver: 'compress', file: { driver: format, file: { filename: name } } });

async function compressedClusters(bs: BlockNode, size: number): Promise<boolean[]> {
  const out: boolean[] = [];
  for (let o = 0; o < size; o += CS) out.push(((await blockStatus(bs, true, o, CS)).status & BDRV_BLOCK_COMPRESSED) !== 0);
  return out;
}

describe('compress filter', () => {
  it('unaligned writes become whole compressed clusters; the guest reads what was written', async () => {
    const st = new MemoryStorage();
    const size = 16 * CS;
    await image(st, 'c.qcow2', size);
    const top = await openTree(st, tree('c.qcow2'), { readOnly: false });
    try {
      expect(top.driver.name).toBe('compress');
      expect(top.limits.requestAlignment).toBe(CS);
      const model = new Uint8Array(size);
      const writes: [number, number][] = [[0, 3.5 * CS], [4.25 * CS, 3.5 * CS], [10 * CS + 17, 100]];
      for (const [i, [o, n]] of writes.entries()) {
        // Compressible (a short repeating run): incompressible data would be stored plainly, as QEMU does.
        const data = new Uint8Array(n).map((_, k) => ((k >> 3) * 7 + i) % 13);
        await bdrvPwrite(top, o, n, data);
        model.set(data, o);
      }
      const got = new Uint8Array(size);
      await bdrvPread(top, 0, size, got);
      expect(Buffer.compare(got, model)).toBe(0);
      const qcow2 = top.file!.node;
      const want = [...Array(16).keys()].map((c) => c < 4 || (c >= 4 && c < 8) || c === 10);
      expect(await compressedClusters(qcow2, size)).toEqual(want);
      // A cluster the filter wrote is allocated: compressed data cannot overwrite it (QEMU's EIO).
      await expect(bdrvPwrite(top, 0, 10, new Uint8Array(10).fill(1))).rejects.toThrow(/already allocated/);
    } finally {
      await closeNode(top);
    }
  });

  it('refuses a format that does not store compressed data, and a filter over one that does', async () => {
    const st = new MemoryStorage();
    await image(st, 'r.raw', 1 << 20, 'raw');
    await expect(openTree(st, tree('r.raw', 'raw'), { readOnly: false })).rejects.toThrow('Compression is not supported for underlying format: raw');
    await image(st, 'q.qcow2', 1 << 20);
    const e = await openTree(st, { driver: 'compress', file: tree('q.qcow2') }, { readOnly: false }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(BlockError);
    expect((e as Error).message).toMatch(/underlying format: compress/);
  });
});

describe('discard=unmap per node', () => {
  it('a node without it drops a discard whole: the format keeps its clusters and data', async () => {
    const st = new MemoryStorage();
    await image(st, 'd.qcow2', 8 * CS);
    const bs = await openImage(st, 'd.qcow2', {});
    try {
      const data = seededBytes(4 * CS, 9);
      await bdrvPwrite(bs, 0, 4 * CS, data);
      bs.unmap = false;
      await bdrvPdiscard(bs, 0, 2 * CS);
      const got = new Uint8Array(4 * CS);
      await bdrvPread(bs, 0, 4 * CS, got);
      expect(Buffer.compare(got, data)).toBe(0);
      bs.unmap = true;
      await bdrvPdiscard(bs, 0, 2 * CS);
      await bdrvPread(bs, 0, 4 * CS, got);
      expect(got.subarray(0, 2 * CS).every((b) => b === 0)).toBe(true);
      expect(Buffer.compare(got.subarray(2 * CS), data.subarray(2 * CS))).toBe(0);
    } finally {
      await closeNode(bs);
    }
  });
});

describe('qcow2 compressed cluster whose descriptor runs past the end of the file (iotest 214)', () => {
  it('reads the bytes past the end as zeros: the stream still decompresses; a stream wholly past the end fails with EIO', async () => {
    const st = new MemoryStorage();
    await image(st, 'p.qcow2', 4 * CS);
    const data = new Uint8Array(CS).map((_, k) => (k >> 4) % 7);
    const q = await openImage(st, 'p.qcow2', {});
    await bdrvPwrite(q, 0, CS, data, { compressed: true });
    await closeNode(q);
    // The L2 entry of guest cluster 0: raise its sector count to the field's maximum (bits 54..61 with 64 KiB clusters).
    let raw = await openImage(st, 'p.qcow2', { format: 'raw' });
    const u64 = async (o: number): Promise<bigint> => {
      const b = new Uint8Array(8);
      await bdrvPread(raw, o, 8, b);
      return new DataView(b.buffer).getBigUint64(0);
    };
    const put = async (o: number, v: bigint): Promise<void> => {
      const b = new Uint8Array(8);
      new DataView(b.buffer).setBigUint64(0, v);
      await bdrvPwrite(raw, o, 8, b);
    };
    const l2 = Number((await u64(Number(await u64(40)))) & 0x00fffffffffffe00n);
    const entry = await u64(l2);
    expect(entry >> 62n).toBe(1n); // compressed
    const coffset = Number(entry & ((1n << 54n) - 1n));
    await put(l2, (entry & ~(0xffn << 54n)) | (0xffn << 54n));
    const fileEnd = raw.totalBytes;
    expect(coffset + 256 * 512).toBeGreaterThan(fileEnd);
    await closeNode(raw);
    const q2 = await openImage(st, 'p.qcow2', {});
    try {
      const got = new Uint8Array(CS);
      await bdrvPread(q2, 0, CS, got);
      expect(Buffer.compare(got, data)).toBe(0);
    } finally {
      await closeNode(q2);
    }
    // Now point the entry past the end of the file: nothing there to decompress.
    raw = await openImage(st, 'p.qcow2', { format: 'raw' });
    await put(l2, (entry & ~((1n << 54n) - 1n)) | BigInt(fileEnd + 4 * CS));
    await closeNode(raw);
    const q3 = await openImage(st, 'p.qcow2', {});
    try {
      await expect(bdrvPread(q3, 0, CS, new Uint8Array(CS))).rejects.toThrow(/could not decompress .*past the end of the file/);
    } finally {
      await closeNode(q3);
    }
  });
});
