/**
 * convert's requests in flight: a failing read among several in flight ends
 * the copy with that error (no worker left waiting for a write turn that
 * never comes), and the deflate worker pool gives Node's zlib bytes.
 */
import { describe, expect, it } from 'vitest';
import { deflateRawSync } from 'node:zlib';
import { MemoryStorage, openImage, BlockError, bdrvPread } from '../../src/index.js';
import { closeNode } from '../../src/block/open.js';
import { createImage, planCreate } from '../../src/img/create.js';
import { convert } from '../../src/img/convert.js';
import { faultyStorage } from '../../src/filters/fault.js';
import { createNodeDeflatePool } from '../../src/codecs/deflate-pool-node.js';
import { createDeflatePool, installDeflatePool } from '../../src/codecs/deflate-pool.js';
import { compressCluster } from '../../src/formats/qcow2/compressed.js';
import { guestBytes } from '../helpers/guest-bytes.js';

const MiB = 1024 * 1024;

type AsyncCall = (...args: never[]) => Promise<void>;
/**
 * Makes every call of a driver's `method` take `delayMs(call)` ms more
 * (the memory protocol answers at once) and counts how many run at once:
 * `most` is the peak since it was last set to 0; `restore` puts the method back.
 */
function countInFlight(driver: object, method: 'preadv' | 'pwritev', delayMs: (call: number) => number = () => 2) {
  const d = driver as Record<string, AsyncCall>;
  const plain = d[method]!;
  let running = 0;
  let calls = 0;
  const counter = { most: 0, restore: () => void (d[method] = plain) };
  d[method] = (async (...args: never[]) => {
    counter.most = Math.max(counter.most, ++running);
    await new Promise((r) => setTimeout(r, delayMs(calls++)));
    try {
      return await plain(...args);
    } finally {
      running--;
    }
  }) as AsyncCall;
  return counter;
}

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

  it('has one write in flight on a target whose writes land in place and on qcow2 when steps end mid-cluster, and copies the same bytes', async () => {
    const st = new MemoryStorage();
    const src = new Uint8Array(16 * MiB).map((_, i) => (i >> 12) % 5 === 0 ? 0 : (i * 7) & 0xff);
    st.put('src.raw', src);
    st.put('dst.raw', new Uint8Array(src.length));
    const from = await openImage(st, 'src.raw', { format: 'raw', readOnly: true });
    const raw = await openImage(st, 'dst.raw', { format: 'raw' });
    // Every write of the memory protocol takes a few ms: count how many run at once.
    const writes = countInFlight(raw.file!.node.driver, 'pwritev', () => 3);
    try {
      await convert([from], raw, { parallel: 8, targetHasZeroInit: true });
      expect(writes.most).toBe(1);
      expect(Buffer.from(st.get('dst.raw')!).equals(Buffer.from(src))).toBe(true);
      writes.most = 0;
      await createImage(st, await planCreate(st, { filename: 'dst.qcow2', format: 'qcow2', size: src.length }));
      const q = await openImage(st, 'dst.qcow2', { format: 'qcow2' });
      await convert([from], q, { parallel: 8, targetHasZeroInit: true });
      expect(writes.most).toBe(1);
      const back = new Uint8Array(src.length);
      await bdrvPread(q, 0, src.length, back);
      expect(Buffer.from(back).equals(Buffer.from(src))).toBe(true);
    } finally {
      writes.restore();
    }
  }, 30_000);

  it('copies in steps of up to 8 MiB (two workers) onto a target whose writes land in place, leaving zero blocks out as 2 MiB steps do', async () => {
    const st = new MemoryStorage();
    // Data everywhere but one 4 KiB block inside the second 8 MiB step; the size is not a multiple of a step.
    const size = 24 * MiB + 64 * 1024;
    const src = new Uint8Array(size).fill(0x5a);
    for (let i = 0; i < size; i += 4096) src[i] = ((i >> 12) & 0xff) | 1;
    const hole = 9 * MiB + 4096;
    src.fill(0, hole, hole + 4096);
    st.put('src.raw', src);
    const from = await openImage(st, 'src.raw', { format: 'raw', readOnly: true });
    for (const [parallel, largest] of [
      [8, 8 * MiB],
      [4, 4 * MiB],
      [1, 2 * MiB],
    ] as const) {
      st.put('dst.raw', new Uint8Array(size));
      const raw = await openImage(st, 'dst.raw', { format: 'raw' });
      const drv = raw.file!.node.driver as { pwritev: NonNullable<typeof raw.driver.pwritev> };
      const plain = drv.pwritev;
      const writes: [number, number][] = [];
      drv.pwritev = (bs, offset, bytes, ...rest) => {
        writes.push([offset, bytes]);
        return plain(bs, offset, bytes, ...rest);
      };
      try {
        await convert([from], raw, { parallel, targetHasZeroInit: true });
      } finally {
        drv.pwritev = plain;
      }
      expect(Math.max(...writes.map(([, n]) => n))).toBe(largest);
      // The zero block is never written; everything else is, once.
      expect(writes.filter(([o, n]) => o < hole + 4096 && o + n > hole)).toEqual([]);
      expect(writes.reduce((t, [, n]) => t + n, 0)).toBe(size - 4096);
      expect(Buffer.from(st.get('dst.raw')!).equals(Buffer.from(src))).toBe(true);
    }
    // Progress comes in 2 MiB steps as with 2 MiB buffers (qemu-img's -p lines).
    const seen = async (opts: { bufferSize?: number }) => {
      st.put('dst.raw', new Uint8Array(size));
      const raw = await openImage(st, 'dst.raw', { format: 'raw' });
      const values: number[] = [];
      await convert([from], raw, { targetHasZeroInit: true, ...opts }, (d) => values.push(d));
      return values;
    };
    const twoMiB = await seen({ bufferSize: 2 * MiB });
    expect(twoMiB.length).toBeGreaterThan(12);
    expect(await seen({})).toEqual(twoMiB);
  }, 30_000);

  it('has two steps in flight on a fresh qcow2 target (whole clusters) and lays it out as one request at a time does', async () => {
    const st = new MemoryStorage();
    // Whole 64 KiB clusters of data and of zeros, so every data write is of fresh whole clusters.
    const src = new Uint8Array(24 * MiB).map((_, i) => ((i >> 16) % 7 === 3 ? 0 : ((i * 13) >> 3) & 0xff));
    st.put('src.raw', src);
    const from = await openImage(st, 'src.raw', { format: 'raw', readOnly: true });
    const images: Uint8Array[] = [];
    for (const parallel of [1, 8]) {
      const name = `dst${parallel}.qcow2`;
      await createImage(st, await planCreate(st, { filename: name, format: 'qcow2', size: src.length }));
      const q = await openImage(st, name, { format: 'qcow2' });
      // Writes of the image file take an uneven few ms, so data writes end out of order.
      const writes = countInFlight(q.file!.node.driver, 'pwritev', (k) => 1 + ((k * 5) % 7));
      try {
        await convert([from], q, { parallel, targetHasZeroInit: true });
        await closeNode(q);
      } finally {
        writes.restore();
      }
      expect(writes.most).toBe(parallel === 1 ? 1 : 2);
      images.push(st.get(name)!.slice());
      expect(Buffer.from(await guestBytes(st, name, 'qcow2')).equals(Buffer.from(src))).toBe(true);
    }
    expect(Buffer.from(images[1]!).equals(Buffer.from(images[0]!))).toBe(true);
  }, 30_000);

  it('reads at most four steps ahead on a qcow2 target (two writing, two read), fewer with a lower -m', async () => {
    const st = new MemoryStorage();
    // Data everywhere (no zero read-ahead: the target is not known to read as zeros).
    const src = new Uint8Array(32 * MiB).map((_, i) => ((i * 13) >> 3) | 1);
    st.put('src.raw', src);
    const from = await openImage(st, 'src.raw', { format: 'raw', readOnly: true });
    const reads = countInFlight(from.file!.node.driver, 'preadv');
    try {
      for (const [parallel, want] of [
        [8, 4],
        [16, 4],
        [2, 2],
      ] as const) {
        reads.most = 0;
        const name = `m${parallel}.qcow2`;
        await createImage(st, await planCreate(st, { filename: name, format: 'qcow2', size: src.length }));
        const q = await openImage(st, name, { format: 'qcow2' });
        await convert([from], q, { parallel });
        const back = new Uint8Array(src.length);
        await bdrvPread(q, 0, src.length, back);
        await closeNode(q);
        expect(reads.most).toBe(want);
        expect(Buffer.from(back).equals(Buffer.from(src))).toBe(true);
      }
    } finally {
      reads.restore();
    }
  }, 30_000);

  it('with -c keeps two batches per compression thread in flight, and writes the same image', async () => {
    const st = new MemoryStorage();
    const src = new Uint8Array(12 * MiB).map((_, i) => ((i >> 9) * 7) & 0xff);
    st.put('src.raw', src);
    const from = await openImage(st, 'src.raw', { format: 'raw', readOnly: true });
    const reads = countInFlight(from.file!.node.driver, 'preadv');
    const images: Uint8Array[] = [];
    try {
      for (const [threads, want] of [
        [1, 2],
        [3, 6],
      ] as const) {
        const pool = createNodeDeflatePool(threads);
        installDeflatePool(pool);
        try {
          reads.most = 0;
          const name = `c${threads}.qcow2`;
          await createImage(st, await planCreate(st, { filename: name, format: 'qcow2', size: src.length }));
          const q = await openImage(st, name, { format: 'qcow2' });
          await convert([from], q, { parallel: 8, compressed: true });
          await closeNode(q);
          expect(reads.most).toBe(want);
          images.push(st.get(name)!.slice());
        } finally {
          installDeflatePool(null);
          pool.close();
        }
      }
    } finally {
      reads.restore();
    }
    expect(Buffer.from(images[1]!).equals(Buffer.from(images[0]!))).toBe(true);
    st.put('back.qcow2', images[0]!);
    expect(Buffer.from(await guestBytes(st, 'back.qcow2', 'qcow2')).equals(Buffer.from(src))).toBe(true);
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

describe('node deflate pool reusing its buffers', () => {
  const zlib4k = (b: Uint8Array) => deflateRawSync(b, { windowBits: 12, level: 6, memLevel: 9 });
  // Distinct contents per cluster: some compress, some (random) do not.
  const cluster = (k: number, size = 65536) => {
    const b = new Uint8Array(size);
    if (k % 3 === 0) crypto.getRandomValues(b.subarray(0, Math.min(size, 65536)));
    else b.forEach((_, i) => (b[i] = (i % (k + 5)) ^ k));
    return b;
  };

  it('gives every cluster its own stream across many batches in flight, the caller reusing its buffer at once', async () => {
    const pool = createNodeDeflatePool(2);
    try {
      const inputs = Array.from({ length: 120 }, (_, k) => cluster(k, k % 7 === 0 ? 4096 * (1 + (k % 5)) : 65536));
      // One buffer for every request, overwritten right after each call (the pool must have copied it).
      const scratch = new Uint8Array(65536);
      const outs: (Uint8Array | null)[] = [];
      for (let turn = 0; turn < 12; turn++) {
        const pending: Promise<Uint8Array | null>[] = [];
        // Two batches in flight, then the next turn's reuse what these leave (streams must not change after).
        for (let half = 0; half < 2; half++) {
          for (let k = turn * 10 + half * 5; k < turn * 10 + half * 5 + 5; k++) {
            const view = scratch.subarray(0, inputs[k]!.length);
            view.set(inputs[k]!);
            pending.push(pool.deflateRaw4k(view));
            scratch.fill(0xa5);
          }
          await new Promise((r) => setTimeout(r, 0));
        }
        outs.push(...(await Promise.all(pending)));
      }
      outs.forEach((o, k) => expect(Buffer.from(o!).equals(zlib4k(inputs[k]!)), `cluster ${k}`).toBe(true));
    } finally {
      pool.close();
    }
  });

  it('hands back null for a stream longer than the limit, and the stream when it fits', async () => {
    const pool = createNodeDeflatePool(2);
    try {
      const inputs = Array.from({ length: 30 }, (_, k) => cluster(k));
      const outs = await Promise.all(inputs.map((b) => pool.deflateRaw4k(b, 65535)));
      outs.forEach((o, k) => {
        const z = zlib4k(inputs[k]!);
        if (z.length > 65535) expect(o, `cluster ${k}`).toBeNull();
        else expect(Buffer.from(o!).equals(z), `cluster ${k}`).toBe(true);
      });
      expect(outs.some((o) => o === null)).toBe(true);
      expect(outs.some((o) => o !== null)).toBe(true);
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
