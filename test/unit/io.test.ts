import { describe, expect, it } from 'vitest';
import { MemoryStorage, openImage, BlockBackend, bdrvPread, bdrvPwrite, BlockError } from '../../src/index.js';
import { probeFormat } from '../../src/block/driver.js';

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
    // A qcow2 header is not, whole or completing one piece by piece.
    const header = new Uint8Array([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3]);
    const whole = await bdrvPwrite(bs, 0, 8, header).catch((e: unknown) => e);
    expect(whole).toBeInstanceOf(BlockError);
    expect((whole as BlockError).code).toBe('EPERM');
    expect((whole as BlockError).message).toMatch(/d\.img: write to block 0 refused/);
    await bdrvPwrite(bs, 0, 4, header.subarray(0, 4));
    expect(((await bdrvPwrite(bs, 4, 4, header.subarray(4)).catch((e: unknown) => e)) as BlockError).code).toBe('EPERM');
    const head = new Uint8Array(8);
    await bdrvPread(bs, 0, 8, head);
    expect([...head]).toEqual([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 0]);
    // Past the probed head anything goes.
    await bdrvPwrite(bs, 2048, 8, header);
  });

  it('a guessed raw image: two concurrent writes that each look harmless cannot build a header together', async () => {
    const st = new MemoryStorage();
    st.put('c.img', new Uint8Array(4096));
    const bs = await openImage(st, 'c.img');
    const results = await Promise.allSettled([
      bdrvPwrite(bs, 0, 4, new Uint8Array([0x51, 0x46, 0x49, 0xfb])),
      bdrvPwrite(bs, 4, 4, new Uint8Array([0, 0, 0, 3])),
    ]);
    expect(results.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
    expect(((results.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason as BlockError).code).toBe('EPERM');
    const head = new Uint8Array(2048);
    await bdrvPread(bs, 0, head.length, head);
    expect(probeFormat(head, 'c.img').driver.name).toBe('raw');
  });
});

describe('write-zeroes fallback', () => {
  it('a zero write that arrives while a write-zeroes fallback is in flight is still detected as zeros', async () => {
    // A protocol whose data writes wait until the test releases them, and whose
    // write-zeroes are recorded: detection shows as a pwriteZeroes call.
    const { BlockNode } = await import('../../src/block/node.js');
    const { bdrvPwriteZeroes } = await import('../../src/block/io.js');
    const gates: (() => void)[] = [];
    const zeroCalls: number[] = [];
    const data = new Uint8Array(8192).fill(0xaa);
    const drv = {
      name: 'gated',
      kind: 'protocol' as const,
      async open() {},
      async preadv(_bs: unknown, offset: number, bytes: number, buf: Uint8Array) {
        buf.set(data.subarray(offset, offset + bytes));
      },
      async pwritev(_bs: unknown, offset: number, bytes: number, buf: Uint8Array) {
        await new Promise<void>((r) => gates.push(r));
        data.set(buf.subarray(0, bytes), offset);
      },
      async pwriteZeroes(_bs: unknown, offset: number, bytes: number) {
        zeroCalls.push(offset);
        data.fill(0, offset, offset + bytes);
      },
    };
    const bs = new BlockNode(drv, 'gated.img');
    bs.totalBytes = data.length;
    bs.limits.requestAlignment = 512;
    bs.detectZeroes = 'unmap';
    // Unaligned: the fallback writes a buffer of zeros through the data path (and waits at the gate).
    const fallback = bdrvPwriteZeroes(bs, 100, 200);
    while (gates.length < 1) await new Promise((r) => setTimeout(r, 0));
    const zeroWrite = bdrvPwrite(bs, 2048, 512, new Uint8Array(512));
    for (let settled = false; !settled; ) {
      gates.splice(0).forEach((g) => g());
      settled = await Promise.race([Promise.all([fallback, zeroWrite]).then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5))]);
    }
    expect(zeroCalls).toEqual([2048]);
    expect(bs.detectZeroes).toBe('unmap');
    expect(data.subarray(100, 300).every((x) => x === 0)).toBe(true);
    expect(data[99]).toBe(0xaa);
    expect(data[300]).toBe(0xaa);
  });
});
