/**
 * convert's requests in flight: a failing read among several in flight ends
 * the copy with that error (no worker left waiting for a write turn that
 * never comes), and the deflate worker pool gives Node's zlib bytes.
 */
import { describe, expect, it } from 'vitest';
import { deflateRawSync } from 'node:zlib';
import { MemoryStorage, openImage, BlockError } from '../../src/index.js';
import { convert } from '../../src/img/convert.js';
import { faultyStorage } from '../../src/filters/fault.js';
import { createNodeDeflatePool } from '../../src/codecs/deflate-pool-node.js';
import { createDeflatePool, installDeflatePool } from '../../src/codecs/deflate-pool.js';
import { compressCluster } from '../../src/formats/qcow2/compressed.js';

const MiB = 1024 * 1024;

describe('convert with requests in flight', () => {
  for (const outOfOrder of [false, true]) {
    it(`a read error in the middle fails the copy${outOfOrder ? ' (-W)' : ''}`, async () => {
      const st = new MemoryStorage();
      const size = 12 * MiB;
      st.put('src.raw', new Uint8Array(size).fill(7));
      st.put('dst.raw', new Uint8Array(size));
      const bad = faultyStorage(st, { rules: [{ op: 'read', offset: 5 * MiB, bytes: 1, code: 'EIO' }] });
      const from = await openImage(bad, 'src.raw', { format: 'raw', readOnly: true });
      const to = await openImage(st, 'dst.raw', { format: 'raw' });
      let progressed = 0;
      const err = await convert([from], to, { parallel: 8, outOfOrder }, (d) => (progressed = d)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BlockError);
      expect((err as BlockError).code).toBe('EIO');
      expect(progressed).toBeLessThan(size);
      // In order, nothing past the failed step is written.
      if (!outOfOrder) expect(st.get('dst.raw')!.subarray(6 * MiB).every((b) => b === 0)).toBe(true);
    }, 30_000);
  }

  it('copies the same bytes with 1 and 16 requests in flight', async () => {
    const st = new MemoryStorage();
    const src = new Uint8Array(9 * MiB + 512).map((_, i) => ((i >> 20) % 3 === 0 ? 0 : (i * 31) & 0xff));
    st.put('src.raw', src);
    for (const parallel of [1, 16]) {
      st.put('dst.raw', new Uint8Array(src.length).fill(0xee));
      const from = await openImage(st, 'src.raw', { format: 'raw', readOnly: true });
      const to = await openImage(st, 'dst.raw', { format: 'raw' });
      await convert([from], to, { parallel });
      expect(Buffer.from(st.get('dst.raw')!).equals(Buffer.from(src))).toBe(true);
    }
  }, 30_000);

  it('refuses 0 or 17 requests in flight', async () => {
    const st = new MemoryStorage();
    st.put('a.raw', new Uint8Array(4096));
    const a = await openImage(st, 'a.raw', { format: 'raw' });
    for (const parallel of [0, 17]) {
      await expect(convert([a], a, { parallel })).rejects.toThrow(/requests in flight/);
    }
  });
});

describe('node deflate pool', () => {
  it("gives zlib's raw deflate (4 KiB window) for many clusters at once", async () => {
    const pool = createNodeDeflatePool(2);
    try {
      const inputs = Array.from({ length: 40 }, (_, k) => new Uint8Array(65536).map((_, i) => (i % (k + 3)) * k));
      const outs = await Promise.all(inputs.map((b) => pool.deflateRaw4k(b)));
      outs.forEach((o, k) => {
        expect(Buffer.from(o).equals(deflateRawSync(inputs[k]!, { windowBits: 12, level: 6, memLevel: 9 }))).toBe(true);
      });
    } finally {
      pool.close();
    }
  });
});

describe('deflate pool failures', () => {
  it('a pool whose workers cannot start leaves compression on the calling thread, same bytes', async () => {
    const input = new Uint8Array(65536).map((_, i) => (i * 13) % 7);
    const inThread = await compressCluster(0, input, 65535);
    let spawned = 0;
    installDeflatePool(
      createDeflatePool((events) => {
        spawned++;
        return {
          post: () => queueMicrotask(() => events.error(new Error('cannot start'))),
          terminate: () => {},
        };
      }, 2),
    );
    try {
      const viaPool = await compressCluster(0, input, 65535);
      expect(spawned).toBeGreaterThan(0);
      expect(viaPool).not.toBeNull();
      expect(Buffer.from(viaPool!).equals(Buffer.from(inThread!))).toBe(true);
    } finally {
      installDeflatePool(null);
    }
  });
});
