/**
 * Read-modify-write through block/io.ts for storage with a request alignment
 * above 1 (512- and 4096-byte sectors, as O_DIRECT on such disks). The test
 * protocol (test/helpers/aligned-protocol.ts) refuses any unaligned request,
 * so every shape below proves the core aligned it; contents are checked
 * against a plain byte-array model, and a property test drives random
 * sequences of reads, writes and write-zeroes, some of them concurrent and
 * overlapping (tracked requests must keep every write's bytes).
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { bdrvPread, bdrvPwrite, bdrvPwriteZeroes } from '../../src/block/io.js';
import { closeNode, openImage } from '../../src/block/open.js';
import type { BlockNode } from '../../src/block/node.js';
import { createImage, planCreate } from '../../src/img/create.js';
import { AlignedStorage, type AlignedOptions } from '../helpers/aligned-protocol.js';
import '../../src/drivers.js';

const SIZE = 64 * 1024;

function fill(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed * 2654435761 + 1;
  for (let i = 0; i < n; i++) {
    x = (x ^ (x << 13)) >>> 0;
    x = (x ^ (x >>> 17)) >>> 0;
    x = (x ^ (x << 5)) >>> 0;
    b[i] = x & 0xff;
  }
  return b;
}

/** A raw image of SIZE bytes of a known pattern on an aligned protocol; the model holds the same bytes. */
async function rawOn(opts: AlignedOptions): Promise<{ st: AlignedStorage; bs: BlockNode; model: Uint8Array }> {
  const st = new AlignedStorage(opts);
  const model = fill(SIZE, 7);
  st.put('d.img', model);
  const bs = await openImage(st, 'd.img', { format: 'raw' });
  // raw is byte-granular as QEMU's; the aligned file node pads requests itself.
  expect(bs.limits.requestAlignment).toBe(1);
  expect(bs.file!.node.limits.requestAlignment).toBe(opts.align);
  return { st, bs, model: model.slice() };
}

async function expectContents(bs: BlockNode, model: Uint8Array, st: AlignedStorage): Promise<void> {
  const out = new Uint8Array(model.length);
  await bdrvPread(bs, 0, model.length, out);
  expect(st.violations).toEqual([]);
  expect(Buffer.from(out).equals(Buffer.from(model))).toBe(true);
}

/** Write shapes relative to one alignment `a` (offset, bytes). */
function shapes(a: number): [string, number, number][] {
  return [
    ['aligned start, mid-block end', 2 * a, a + 100],
    ['unaligned start, aligned end', 3 * a + 7, a - 7],
    ['unaligned start and end', a + 300, 2 * a + 5],
    ['inside one block', 5 * a + 10, 20],
    ['one byte at a block end', 6 * a - 1, 1],
    ['spanning many blocks', a / 2 + 3, 9 * a + 11],
    ['from 0 to a mid-block end', 0, 3],
    ['ending at the image end', SIZE - a - 33, a + 33],
    ['fully aligned', 4 * a, 2 * a],
  ];
}

for (const align of [512, 4096]) {
  for (const writeZeroes of [false, true]) {
    describe(`${align}-byte alignment${writeZeroes ? ', driver write-zeroes' : ''}`, () => {
      for (const [name, offset, bytes] of shapes(align)) {
        it(`write: ${name}`, async () => {
          const { st, bs, model } = await rawOn({ align, writeZeroes });
          const data = fill(bytes, offset);
          await bdrvPwrite(bs, offset, bytes, data);
          model.set(data, offset);
          await expectContents(bs, model, st);
        });

        it(`write-zeroes: ${name}`, async () => {
          const { st, bs, model } = await rawOn({ align, writeZeroes });
          await bdrvPwriteZeroes(bs, offset, bytes);
          model.fill(0, offset, offset + bytes);
          await expectContents(bs, model, st);
          if (writeZeroes && bytes >= 2 * align) {
            // The aligned middle went to the driver's write-zeroes, not as a buffer of zeros.
            expect(st.seen.some((r) => r.op === 'zero')).toBe(true);
          }
        });

        it(`read: ${name}`, async () => {
          const { st, bs, model } = await rawOn({ align, writeZeroes });
          const out = new Uint8Array(bytes + 8).fill(0xee);
          await bdrvPread(bs, offset, bytes, out);
          expect(st.violations).toEqual([]);
          expect(Buffer.from(out.subarray(0, bytes)).equals(Buffer.from(model.subarray(offset, offset + bytes)))).toBe(true);
          // Bytes past the request are not touched.
          expect(out.subarray(bytes).every((b) => b === 0xee)).toBe(true);
        });
      }

      it('the same shapes straight on the protocol node', async () => {
        const { st, bs, model } = await rawOn({ align, writeZeroes });
        const proto = bs.file!.node;
        for (const [, offset, bytes] of shapes(align)) {
          const data = fill(bytes, offset + 1);
          await bdrvPwrite(proto, offset, bytes, data);
          model.set(data, offset);
          await bdrvPwriteZeroes(proto, offset + (bytes >> 2), bytes >> 1);
          model.fill(0, offset + (bytes >> 2), offset + (bytes >> 2) + (bytes >> 1));
        }
        await expectContents(proto, model, st);
      });

      it('a small maxTransfer splits the aligned middle into aligned pieces', async () => {
        const { st, bs, model } = await rawOn({ align, writeZeroes, maxTransfer: 2 * align });
        const data = fill(11 * align + 77, 3);
        await bdrvPwrite(bs, align - 5, data.length, data);
        model.set(data, align - 5);
        await bdrvPwriteZeroes(bs, 3 * align + 1, 6 * align);
        model.fill(0, 3 * align + 1, 9 * align + 1);
        await expectContents(bs, model, st);
        expect(st.seen.every((r) => r.bytes <= 2 * align)).toBe(true);
      });

      it('concurrent overlapping unaligned writes and write-zeroes keep every byte of each', async () => {
        // Each request yields at every driver call, so their read-modify-write cycles interleave.
        const turn = () => new Promise<void>((r) => setImmediate(r));
        const { st, bs, model } = await rawOn({ align, writeZeroes, delay: turn });
        const a = fill(align + 300, 1);
        const b = fill(200, 2);
        await Promise.all([
          bdrvPwrite(bs, align - 100, a.length, a), // ends mid-block 2
          bdrvPwrite(bs, 2 * align + 250, b.length, b), // inside block 2, after a's end
          bdrvPwriteZeroes(bs, 3 * align - 50, 100), // straddles blocks 2 and 3
          bdrvPwrite(bs, 3 * align + 60, 10, fill(10, 4)), // inside block 3
          bdrvPwrite(bs, 4 * align, align, fill(align, 5)), // aligned block 4, next to block 3's cycles
        ]);
        model.set(a, align - 100);
        model.set(b, 2 * align + 250);
        model.fill(0, 3 * align - 50, 3 * align + 50);
        model.set(fill(10, 4), 3 * align + 60);
        model.set(fill(align, 5), 4 * align);
        await expectContents(bs, model, st);
      });

      it('an aligned write that overlaps a read-modify-write cycle in flight is not undone by it', async () => {
        // The unaligned write reads block 1 first; the aligned write of block 1 lands while
        // that read is pending; the cycle must not then write block 1's old bytes back.
        const turn = () => new Promise<void>((r) => setImmediate(r));
        const { st, bs, model } = await rawOn({ align, writeZeroes, delay: turn });
        const small = fill(10, 8);
        const whole = fill(align, 9);
        await Promise.all([bdrvPwrite(bs, align + 100, 10, small), bdrvPwrite(bs, align, align, whole)]);
        // Either order is a valid outcome; a mix of old bytes is not.
        const afterBoth = model.slice();
        afterBoth.set(whole, align);
        const smallLast = afterBoth.slice();
        smallLast.set(small, align + 100);
        const out = new Uint8Array(SIZE);
        await bdrvPread(bs, 0, SIZE, out);
        expect(st.violations).toEqual([]);
        const got = Buffer.from(out);
        expect(got.equals(Buffer.from(afterBoth)) || got.equals(Buffer.from(smallLast))).toBe(true);
      });

      it('property: random reads, writes and write-zeroes (some concurrent) match the model', async () => {
        const op = fc.record({
          kind: fc.constantFrom('write', 'zero', 'read'),
          offset: fc.integer({ min: 0, max: SIZE - 1 }),
          bytes: fc.integer({ min: 1, max: 3 * align + 17 }),
          seed: fc.integer({ min: 1, max: 1 << 30 }),
        });
        await fc.assert(
          fc.asyncProperty(fc.array(fc.array(op, { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 6 }), async (batches) => {
            const turn = () => new Promise<void>((r) => setImmediate(r));
            const { st, bs, model } = await rawOn({ align, writeZeroes, delay: turn });
            for (const batch of batches) {
              // A batch runs concurrently; the model allows, per byte, any writer of that byte.
              const before = model.slice();
              const writers: { offset: number; data: Uint8Array }[] = [];
              const reads: { offset: number; out: Uint8Array }[] = [];
              await Promise.all(
                batch.map((o) => {
                  const bytes = Math.min(o.bytes, SIZE - o.offset);
                  if (o.kind === 'read') {
                    const out = new Uint8Array(bytes);
                    reads.push({ offset: o.offset, out });
                    return bdrvPread(bs, o.offset, bytes, out);
                  }
                  const data = o.kind === 'zero' ? new Uint8Array(bytes) : fill(bytes, o.seed);
                  writers.push({ offset: o.offset, data });
                  return o.kind === 'zero' ? bdrvPwriteZeroes(bs, o.offset, bytes) : bdrvPwrite(bs, o.offset, bytes, data);
                }),
              );
              expect(st.violations).toEqual([]);
              const now = new Uint8Array(SIZE);
              await bdrvPread(bs, 0, SIZE, now);
              for (let i = 0; i < SIZE; i++) {
                const options = writers.filter((w) => i >= w.offset && i < w.offset + w.data.length).map((w) => w.data[i - w.offset]!);
                const ok = options.length === 0 ? now[i] === before[i] : options.includes(now[i]!);
                if (!ok) expect.fail(`byte ${i}: ${now[i]}, expected ${options.length ? options.join(' or ') : before[i]}`);
              }
              // A read in the batch sees, per byte, the old value or one of the writers'.
              for (const r of reads) {
                for (let k = 0; k < r.out.length; k++) {
                  const i = r.offset + k;
                  const options = [before[i], ...writers.filter((w) => i >= w.offset && i < w.offset + w.data.length).map((w) => w.data[i - w.offset])];
                  if (!options.includes(r.out[k])) expect.fail(`read byte ${i}: ${r.out[k]}, expected one of ${options.join(' ')}`);
                }
              }
              model.set(now);
            }
          }),
          { numRuns: 20 },
        );
      }, 180_000);
    });
  }
}

describe('qcow2 on an aligned protocol', () => {
  for (const align of [512, 4096]) {
    for (const clusterSize of [512, 4096, 65536]) {
      it(`${align}-byte sectors, ${clusterSize}-byte clusters: create, unaligned guest writes, reopen, read back`, async () => {
        const st = new AlignedStorage({ align, writeZeroes: true });
        const size = 4 * 1024 * 1024;
        const plan = await planCreate(st, { filename: 'd.qcow2', format: 'qcow2', size, options: [`cluster_size=${clusterSize}`] });
        await createImage(st, plan);
        const model = new Uint8Array(size);
        let bs = await openImage(st, 'd.qcow2', { format: 'qcow2' });
        const writes: [number, number][] = [
          [0, 3],
          [511, 2],
          [4097, 9000],
          [65536 - 10, 70000],
          [size - 777, 777],
          [1_000_003, 3 * 65536 + 5],
        ];
        for (const [i, [offset, bytes]] of writes.entries()) {
          const data = fill(bytes, i + 1);
          await bdrvPwrite(bs, offset, bytes, data);
          model.set(data, offset);
        }
        await bdrvPwriteZeroes(bs, 4100, 3000);
        model.fill(0, 4100, 7100);
        await bdrvPwriteZeroes(bs, 1_000_000, 2 * 65536 + 1);
        model.fill(0, 1_000_000, 1_000_000 + 2 * 65536 + 1);
        await closeNode(bs);
        expect(st.violations).toEqual([]);
        expect(st.get('d.qcow2')!.length % align).toBe(0);

        bs = await openImage(st, 'd.qcow2', { readOnly: true });
        expect(bs.driver.name).toBe('qcow2');
        const out = new Uint8Array(size);
        await bdrvPread(bs, 0, size, out);
        expect(st.violations).toEqual([]);
        expect(Buffer.from(out).equals(Buffer.from(model))).toBe(true);
        const check = await bs.driver.check!(bs, { leaks: false, errors: false }, () => {});
        expect(check.corruptions).toBe(0);
        await closeNode(bs);
      });
    }
  }
});
