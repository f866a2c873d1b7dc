import { expect, it } from 'vitest';
import { MemoryStorage, openImage, bdrvPread } from '../../src/index.js';

it('the engine runs in Chromium: raw over memory reads back what was stored', async () => {
  const st = new MemoryStorage();
  st.put('a.img', new Uint8Array([1, 2, 3, 4]));
  const bs = await openImage(st, 'a.img', { format: 'raw' });
  const out = new Uint8Array(4);
  await bdrvPread(bs, 0, 4, out);
  expect([...out]).toEqual([1, 2, 3, 4]);
  expect(typeof navigator.storage.getDirectory).toBe('function');
});
