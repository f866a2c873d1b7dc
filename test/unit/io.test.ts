import { describe, expect, it } from 'vitest';
import { MemoryStorage, openImage, BlockBackend, bdrvPread, bdrvPwrite, BlockError } from '../../src/index.js';

function pattern(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7) & 0xff;
  return b;
}

describe('request path over raw/memory', () => {
  it('reads and writes at unaligned offsets with a 512-byte alignment (read-modify-write)', async () => {
    const st = new MemoryStorage();
    st.put('d.img', pattern(8192));
    const bs = await openImage(st, 'd.img', { format: 'raw' });
    bs.file!.node.limits.requestAlignment = 512;
    bs.limits.requestAlignment = 512;
    const data = pattern(1000, 9);
    await bdrvPwrite(bs, 700, 1000, data);
    const expected = pattern(8192);
    expected.set(data, 700);
    const out = new Uint8Array(8192);
    await bdrvPread(bs, 0, 8192, out);
    expect(out).toEqual(expected);
    const part = new Uint8Array(333);
    await bdrvPread(bs, 1111, 333, part);
    expect(part).toEqual(expected.subarray(1111, 1444));
  });

  it('serialises overlapping unaligned writes so neither is lost', async () => {
    const st = new MemoryStorage();
    st.put('d.img', new Uint8Array(4096));
    const bs = await openImage(st, 'd.img', { format: 'raw' });
    bs.limits.requestAlignment = 4096;
    await Promise.all([
      bdrvPwrite(bs, 10, 10, new Uint8Array(10).fill(1)),
      bdrvPwrite(bs, 30, 10, new Uint8Array(10).fill(2)),
    ]);
    const out = st.get('d.img')!;
    expect(out.subarray(10, 20).every((b) => b === 1)).toBe(true);
    expect(out.subarray(30, 40).every((b) => b === 2)).toBe(true);
  });

  it('backend refuses requests past the end with an error naming the device and offset', async () => {
    const st = new MemoryStorage();
    st.put('d.img', new Uint8Array(1024));
    const blk = new BlockBackend(await openImage(st, 'd.img', { format: 'raw' }));
    const err = await blk.read(1000, 100, new Uint8Array(100)).catch((e) => e);
    expect(err).toBeInstanceOf(BlockError);
    expect(err.message).toMatch(/d\.img: read at 0x3e8/);
  });

  it('a guessed raw image refuses a write that would make block 0 another format', async () => {
    const st = new MemoryStorage();
    st.put('d.img', new Uint8Array(4096));
    const warnings: string[] = [];
    const bs = await openImage(st, 'd.img', { warn: (w) => warnings.push(w) });
    expect(bs.driver.name).toBe('raw');
    expect(warnings[0]).toMatch(/probing guessed raw/);
    // Harmless data is fine.
    await bdrvPwrite(bs, 0, 4, new Uint8Array([1, 2, 3, 4]));
  });
});
