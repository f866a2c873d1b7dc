/**
 * convert's cancel signal stops a copy even when neither side ever awaits
 * real I/O (memory storage, like OPFS's synchronous handles in the worker):
 * the copy loop yields to the event loop so the abort can be seen.
 */
import { describe, expect, it } from 'vitest';
import { MemoryStorage, openImage, BlockError } from '../../src/index.js';
import { convert } from '../../src/img/convert.js';

describe('convert cancel', () => {
  it('an abort set from a timer stops a memory-to-memory convert with ECANCELED', async () => {
    const st = new MemoryStorage();
    const size = 64 * 1024 * 1024;
    const src = new Uint8Array(size);
    for (let i = 0; i < size; i += 4096) src[i] = 1; // data everywhere: nothing is skipped as zero
    st.put('src.raw', src);
    st.put('dst.raw', new Uint8Array(size));
    const from = await openImage(st, 'src.raw', { format: 'raw', readOnly: true });
    const to = await openImage(st, 'dst.raw', { format: 'raw' });
    const signal = { aborted: false };
    let progressed = 0;
    setTimeout(() => (signal.aborted = true), 0);
    const err = await convert([from], to, { signal, minSparse: 0, bufferSize: 4096 }, (done) => (progressed = done)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BlockError);
    expect((err as BlockError).code).toBe('ECANCELED');
    expect(progressed).toBeLessThan(size);
  });

  it('without an abort the same convert completes and copies every byte', async () => {
    const st = new MemoryStorage();
    const src = new Uint8Array(4 * 1024 * 1024).map((_, i) => (i * 7) & 0xff);
    st.put('src.raw', src);
    st.put('dst.raw', new Uint8Array(src.length));
    const from = await openImage(st, 'src.raw', { format: 'raw', readOnly: true });
    const to = await openImage(st, 'dst.raw', { format: 'raw' });
    await convert([from], to, { signal: { aborted: false }, minSparse: 0 });
    expect(Buffer.from(st.get('dst.raw')!).equals(Buffer.from(src))).toBe(true);
  });
});
