import { beforeAll, describe, expect, it } from 'vitest';
import { MemoryStorage, openImage, bdrvPwrite, bdrvPwriteZeroes, bdrvPdiscard, BlockError, type BlockNode } from '../../src/index.js';
import {
  addDirtyBitmap,
  clearDirtyBitmap,
  disableDirtyBitmap,
  enableDirtyBitmap,
  findDirtyBitmap,
  listDirtyBitmaps,
  mergeDirtyBitmaps,
  removeDirtyBitmap,
  truncateDirtyBitmaps,
  defaultBitmapGranularity,
  releaseNamedDirtyBitmaps,
} from '../../src/block/dirty-bitmap.js';
import { initWasm } from '../../src/wasm/index.js';

async function rawNode(size: number): Promise<BlockNode> {
  const st = new MemoryStorage();
  st.put('d.img', new Uint8Array(size));
  return openImage(st, 'd.img', { format: 'raw' });
}

const extents = (bs: BlockNode, name: string) => [...findDirtyBitmap(bs, name)!.dirtyExtents()];

describe.each([false, true])('dirty bitmaps on a raw/memory node (wasm loaded: %s)', (withWasm) => {
  beforeAll(async () => {
    if (withWasm) await initWasm();
  });

  it('records writes, write-zeroes and discards at the bitmap granularity', async () => {
    const bs = await rawNode(1 << 20);
    const bm = addDirtyBitmap(bs, 'b0', { granularity: 4096 });
    expect(bm.bitmap.backend).toBe(withWasm ? 'wasm' : 'js');
    await bdrvPwrite(bs, 5000, 10, new Uint8Array(10).fill(1));
    expect(extents(bs, 'b0')).toEqual([{ offset: 4096, bytes: 4096 }]);
    await bdrvPwrite(bs, 8191, 2, new Uint8Array(2).fill(1)); // straddles chunks 1 and 2
    await bdrvPwriteZeroes(bs, 65536, 65536);
    await bdrvPdiscard(bs, (1 << 20) - 100, 100);
    expect(extents(bs, 'b0')).toEqual([
      { offset: 4096, bytes: 8192 },
      { offset: 65536, bytes: 65536 },
      { offset: (1 << 20) - 4096, bytes: 4096 },
    ]);
    expect(bm.count()).toBe(8192 + 65536 + 4096);
    expect(bm.info()).toEqual({ name: 'b0', count: 77824, granularity: 4096, recording: true, busy: false, persistent: false });
    releaseNamedDirtyBitmaps(bs);
  });

  it('a disabled bitmap ignores writes; enabling resumes recording; clear empties it', async () => {
    const bs = await rawNode(1 << 20);
    addDirtyBitmap(bs, 'on');
    addDirtyBitmap(bs, 'off', { disabled: true });
    await bdrvPwrite(bs, 0, 512, new Uint8Array(512).fill(7));
    expect(findDirtyBitmap(bs, 'on')!.count()).toBe(65536); // default granularity: 64 KiB for raw
    expect(findDirtyBitmap(bs, 'off')!.count()).toBe(0);
    enableDirtyBitmap(bs, 'off');
    await bdrvPwrite(bs, 200_000, 1, new Uint8Array(1).fill(7));
    expect(extents(bs, 'off')).toEqual([{ offset: 196608, bytes: 65536 }]);
    disableDirtyBitmap(bs, 'on');
    await bdrvPwrite(bs, 500_000, 1, new Uint8Array(1).fill(7));
    expect(findDirtyBitmap(bs, 'on')!.count()).toBe(2 * 65536);
    clearDirtyBitmap(bs, 'on'); // QEMU allows clearing a disabled bitmap
    expect(findDirtyBitmap(bs, 'on')!.count()).toBe(0);
    expect(listDirtyBitmaps(bs).map((b) => b.name)).toEqual(['off', 'on']); // newest first
    releaseNamedDirtyBitmaps(bs);
  });

  it('merges bitmaps of different granularity and leaves the target unchanged when a source is missing', async () => {
    const bs = await rawNode(1 << 20);
    addDirtyBitmap(bs, 'fine', { granularity: 512, disabled: true });
    addDirtyBitmap(bs, 'coarse', { granularity: 65536 });
    addDirtyBitmap(bs, 'target', { granularity: 4096, disabled: true });
    await bdrvPwrite(bs, 1000, 10, new Uint8Array(10).fill(1));
    enableDirtyBitmap(bs, 'fine');
    await bdrvPwrite(bs, 300_000, 10, new Uint8Array(10).fill(1));
    expect(() => mergeDirtyBitmaps(bs, 'target', ['fine', 'nope'])).toThrow("Dirty bitmap 'nope' not found");
    expect(findDirtyBitmap(bs, 'target')!.count()).toBe(0);
    mergeDirtyBitmaps(bs, 'target', ['fine', 'coarse']);
    expect(extents(bs, 'target')).toEqual([
      { offset: 0, bytes: 65536 },
      { offset: 262144, bytes: 65536 },
    ]);
    releaseNamedDirtyBitmaps(bs);
  });

  it('reports QEMU errors: empty name, duplicate, bad granularity, missing, busy, persistent on raw', async () => {
    const bs = await rawNode(65536);
    const err = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        expect(e).toBeInstanceOf(BlockError);
        return `${(e as BlockError).code}: ${(e as BlockError).message}`;
      }
      return 'no error';
    };
    expect(err(() => addDirtyBitmap(bs, ''))).toBe('EINVAL: Bitmap name cannot be empty');
    addDirtyBitmap(bs, 'a');
    expect(err(() => addDirtyBitmap(bs, 'a'))).toBe('EEXIST: Bitmap already exists: a');
    expect(err(() => addDirtyBitmap(bs, 'b', { granularity: 256 }))).toBe('EINVAL: Granularity must be power of 2 and at least 512');
    expect(err(() => addDirtyBitmap(bs, 'b', { granularity: 3000 }))).toBe('EINVAL: Granularity must be power of 2 and at least 512');
    expect(err(() => addDirtyBitmap(bs, 'b', { granularity: 2 ** 32 }))).toMatch(/^EINVAL: Granularity must be at most/);
    expect(err(() => addDirtyBitmap(bs, 'x'.repeat(1024)))).toMatch(/^EINVAL: Bitmap name too long/);
    expect(err(() => clearDirtyBitmap(bs, 'zz'))).toBe("ENOENT: Dirty bitmap 'zz' not found");
    expect(err(() => addDirtyBitmap(bs, 'p', { persistent: true }))).toBe(`ENOTSUP: Can't store persistent bitmaps to ${bs.nodeName}`);
    findDirtyBitmap(bs, 'a')!.busy = true;
    expect(err(() => clearDirtyBitmap(bs, 'a'))).toBe("EBUSY: Bitmap 'a' is currently in use by another operation and cannot be used");
    expect(err(() => disableDirtyBitmap(bs, 'a'))).toMatch(/^EBUSY/);
    await expect(removeDirtyBitmap(bs, 'a')).rejects.toThrow(/in use by another operation/);
    findDirtyBitmap(bs, 'a')!.busy = false;
    await removeDirtyBitmap(bs, 'a');
    expect(findDirtyBitmap(bs, 'a')).toBeUndefined();
    expect(listDirtyBitmaps(bs)).toEqual([]);
  });

  it('default granularity is the cluster size clamped to 4 KiB..64 KiB, or 64 KiB without one', async () => {
    const bs = await rawNode(65536);
    expect(defaultBitmapGranularity(bs)).toBe(65536);
    const withCluster = (clusterSize: number) =>
      defaultBitmapGranularity({ ...bs, driver: { ...bs.driver, getDriverInfo: () => ({ clusterSize }) } } as unknown as BlockNode);
    expect(withCluster(512)).toBe(4096);
    expect(withCluster(16384)).toBe(16384);
    expect(withCluster(2 * 1024 * 1024)).toBe(65536);
  });

  it('resizes with the node: shrink drops bits past the end, grow adds clean space that later writes mark', async () => {
    const bs = await rawNode(1 << 20);
    const bm = addDirtyBitmap(bs, 'r', { granularity: 4096 });
    await bdrvPwrite(bs, 900_000, 4096, new Uint8Array(4096).fill(3));
    await bdrvPwrite(bs, 0, 1, new Uint8Array(1).fill(3));
    truncateDirtyBitmaps(bs, 512 * 1024);
    expect(bm.size).toBe(512 * 1024);
    expect(extents(bs, 'r')).toEqual([{ offset: 0, bytes: 4096 }]);
    truncateDirtyBitmaps(bs, 2 << 20);
    expect(bm.size).toBe(2 << 20);
    expect(bm.count()).toBe(4096);
    releaseNamedDirtyBitmaps(bs);
  });
});
