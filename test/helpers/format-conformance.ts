/**
 * The format conformance suite, as a function of a format driver's name (the
 * way the storage suite in test/browser/conformance.ts is a function of a
 * storage factory): every writable format driver must pass the same cases.
 * The driver is found in the registry, so a new format gets the suite by
 * registering a driver with `create` and `pwritev`.
 *
 * Each case creates an image through qemu-img's create path (img/create.ts,
 * which calls the driver's `create` hook), drives it through the request
 * path (block/io.ts) and keeps an in-memory model of the guest's bytes:
 * reads must equal the model, block status must agree with it (a range the
 * format calls zero or unallocated must be zeros in the model), and after a
 * close and reopen the same must hold and the format's own check must find
 * nothing wrong. `env.verifyClosed` lets a caller look at the closed image
 * with other tools (the interop variant runs qemu-img check and compare).
 *
 * Offsets are chosen around 64 KiB (qcow2's default cluster) and 512-byte
 * sectors, so writes are unaligned, cross cluster boundaries and cover whole
 * clusters in one test.
 */
import { expect } from 'vitest';
import { BlockError } from '../../src/block/errors.js';
import { findDriver, loadDrivers, type BlockDriver } from '../../src/block/driver.js';
import type { BlockNode } from '../../src/block/node.js';
import { bdrvFlush, bdrvGetLength, bdrvPdiscard, bdrvPread, bdrvPwrite, bdrvPwriteZeroes, bdrvTruncate } from '../../src/block/io.js';
import { closeNode, openImage, type Storage } from '../../src/block/open.js';
import { BDRV_BLOCK_DATA, BDRV_BLOCK_ZERO, blockStatusAbove } from '../../src/block/status.js';
import { createImage, planCreate } from '../../src/img/create.js';
import { checkNode } from '../../src/img/check.js';
import { seededBytes } from './random.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const CLUSTER = 64 * KiB;

export interface FormatEnv {
  /** A namespace to create the image in (fresh per case or shared: file names differ per case). */
  storage(): Storage | Promise<Storage>;
  /** Name of the image file for a case. */
  filename(caseName: string): string;
  /** -o options for create (default none). */
  createOptions?: string[];
  /** Called with the closed image and the bytes the guest must see (interop: qemu-img check and compare). */
  verifyClosed?(filename: string, model: Uint8Array): Promise<void> | void;
}

export interface FormatCase {
  name: string;
  run(): Promise<void>;
}

/**
 * Format drivers the suite applies to: they can create images and write them.
 * Not those whose new space does not read as zeros (hasZeroInit false: luks,
 * which also needs a secret to create): the model starts from zeros. luks has
 * its own differential suite (test/interop/formats-luks-write.test.ts).
 */
export async function writableFormatDrivers(): Promise<BlockDriver[]> {
  return (await loadDrivers('format')).filter((d) => d.create !== undefined && d.pwritev !== undefined && d.hasZeroInit !== false);
}

/** The guest's bytes as they must read. */
class Model {
  bytes: Uint8Array;
  constructor(size: number) {
    this.bytes = new Uint8Array(size);
  }
  write(offset: number, data: Uint8Array): void {
    this.bytes.set(data, offset);
  }
  zero(offset: number, bytes: number): void {
    this.bytes.fill(0, offset, offset + bytes);
  }
  resize(size: number): void {
    const next = new Uint8Array(size);
    next.set(this.bytes.subarray(0, Math.min(size, this.bytes.length)));
    this.bytes = next;
  }
}

async function readAll(bs: BlockNode): Promise<Uint8Array> {
  const out = new Uint8Array(bs.totalBytes);
  // In pieces, so a failing read names a small range.
  for (let off = 0; off < out.length; off += 4 * MiB) await bdrvPread(bs, off, Math.min(4 * MiB, out.length - off), out.subarray(off));
  return out;
}

/** First offset where two buffers differ, or -1. */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

async function expectModel(bs: BlockNode, model: Model, what: string): Promise<void> {
  expect(await bdrvGetLength(bs), `${what}: length`).toBe(model.bytes.length);
  const got = await readAll(bs);
  const at = firstDifference(got, model.bytes);
  expect(at, `${what}: first byte that differs from the model (-1: none)`).toBe(-1);
}

/**
 * Walks block status over the whole image: the extents must tile it, and
 * every extent the format calls zero, or does not call data (unallocated, no
 * backing file), must be zeros in the model. Returns the bytes called data.
 */
async function expectStatusAgrees(bs: BlockNode, model: Model, what: string): Promise<number> {
  const size = bs.totalBytes;
  let dataBytes = 0;
  for (let off = 0; off < size; ) {
    const st = await blockStatusAbove(bs, null, true, off, size - off);
    expect(st.pnum, `${what}: block status at ${off} answers for some bytes`).toBeGreaterThan(0);
    expect(off + st.pnum, `${what}: block status at ${off} stays inside the image`).toBeLessThanOrEqual(size);
    const isData = (st.status & BDRV_BLOCK_DATA) !== 0 && (st.status & BDRV_BLOCK_ZERO) === 0;
    if (isData) dataBytes += st.pnum;
    else {
      const slice = model.bytes.subarray(off, off + st.pnum);
      const nonZero = slice.findIndex((b) => b !== 0);
      expect(nonZero, `${what}: [${off}, +${st.pnum}) has status 0x${st.status.toString(16)} (zero or unallocated) but the model holds data at +${nonZero}`).toBe(-1);
    }
    off += st.pnum;
  }
  return dataBytes;
}

async function expectCheckClean(bs: BlockNode, what: string): Promise<void> {
  if (!bs.driver.check) return; // formats without a check (raw): nothing to ask
  const messages: string[] = [];
  const run = await checkNode(bs, bs.filename, { leaks: false, errors: false }, { line: (m) => messages.push(m) });
  expect({ ...run.check, messages }, `${what}: the format's check`).toMatchObject({ 'check-errors': 0, messages: [] });
  expect(run.check.corruptions ?? 0, `${what}: corruptions`).toBe(0);
  expect(run.check.leaks ?? 0, `${what}: leaks`).toBe(0);
}

/**
 * The virtual size the format gave an image asked to be `asked` bytes: at
 * least that, rounded up as the format rounds (vpc's CHS geometry); the
 * model follows the image from there.
 */
function givenSize(bs: BlockNode, asked: number, what: string): number {
  expect(bs.totalBytes, `${what}: the size is at least the ${asked} bytes asked`).toBeGreaterThanOrEqual(asked);
  return bs.totalBytes;
}

async function create(format: string, env: FormatEnv, filename: string, size: number): Promise<{ storage: Storage; bs: BlockNode }> {
  const storage = await env.storage();
  const plan = await planCreate(storage, { filename, format, size, options: env.createOptions });
  await createImage(storage, plan);
  const bs = await openImage(storage, filename, { format, readOnly: false });
  return { storage, bs };
}

async function reopen(storage: Storage, bs: BlockNode, format: string): Promise<BlockNode> {
  const name = bs.filename;
  await bdrvFlush(bs);
  await closeNode(bs);
  return openImage(storage, name, { format, readOnly: false });
}

/** The cases for format driver `format` (registered and loaded, with create and pwritev). */
export function formatConformance(format: string, env: FormatEnv): FormatCase[] {
  const drv = findDriver(format);
  if (!drv || drv.kind !== 'format' || !drv.create || !drv.pwritev) throw new Error(`${format} is not a registered writable format driver`);
  const cases: FormatCase[] = [];
  const add = (name: string, run: () => Promise<void>) => cases.push({ name, run });

  add('a new image has the asked size (rounded up as the format rounds it), reads as zeros, holds no data, checks clean', async () => {
    const filename = env.filename('fresh');
    const { storage, bs } = await create(format, env, filename, 3 * MiB + 512);
    const size = givenSize(bs, 3 * MiB + 512, 'new image');
    let node = bs;
    try {
      const model = new Model(size);
      await expectModel(node, model, 'new image');
      await expectStatusAgrees(node, model, 'new image');
      await expectCheckClean(node, 'new image');
      node = await reopen(storage, node, format);
      await expectModel(node, model, 'new image, reopened');
      await expectCheckClean(node, 'new image, reopened');
    } finally {
      await closeNode(node);
    }
    await env.verifyClosed?.(filename, new Model(size).bytes);
  });

  add('write patterns (unaligned, cluster-crossing, zeros, discard) read back as the model; block status agrees; survive a reopen', async () => {
    const filename = env.filename('patterns');
    const { storage, bs } = await create(format, env, filename, 4 * MiB);
    const size = givenSize(bs, 4 * MiB, 'new image');
    const model = new Model(size);
    let node = bs;
    let step = 0;
    const write = async (offset: number, bytes: number, what: string) => {
      const data = seededBytes(bytes, 1000 + step++);
      data[0] = data[0]! | 1; // never all zeros, so the write is data whatever detect-zeroes says
      await bdrvPwrite(node, offset, bytes, data);
      model.write(offset, data);
      await expectModel(node, model, what);
    };
    try {
      await write(1000, 3000, 'unaligned write inside the first cluster');
      await write(CLUSTER - 700, 2000, 'unaligned write across a cluster boundary');
      await write(3 * CLUSTER - 123, 200_000, 'unaligned write across several clusters');
      await write(size - 5000, 5000, 'write that ends at the end of the image');
      await write(2 * MiB, 2 * CLUSTER, 'aligned write of two whole clusters');

      await bdrvPwriteZeroes(node, CLUSTER + 100, 5000);
      model.zero(CLUSTER + 100, 5000);
      await expectModel(node, model, 'unaligned write-zeroes over data');

      await bdrvPwriteZeroes(node, 4 * CLUSTER, CLUSTER, { mayUnmap: true });
      model.zero(4 * CLUSTER, CLUSTER);
      await expectModel(node, model, 'write-zeroes (may unmap) of a whole cluster of data');

      const zeros = new Uint8Array(10_000);
      await bdrvPwrite(node, 3 * MiB + 77, zeros.length, zeros);
      model.write(3 * MiB + 77, zeros);
      await expectModel(node, model, 'a buffer of zeros written where nothing was');

      // Discard is a hint: afterwards each byte reads as before or as zero, never anything else.
      const before = model.bytes.slice(2 * MiB, 2 * MiB + 2 * CLUSTER);
      await bdrvPdiscard(node, 2 * MiB, 2 * CLUSTER);
      const after = new Uint8Array(2 * CLUSTER);
      await bdrvPread(node, 2 * MiB, after.length, after);
      const bad = after.findIndex((b, i) => b !== 0 && b !== before[i]);
      expect(bad, 'discard: a byte neither kept nor zeroed (-1: none)').toBe(-1);
      model.write(2 * MiB, after);
      await expectModel(node, model, 'after a discard of two whole clusters');

      const dataBytes = await expectStatusAgrees(node, model, 'after the writes');
      expect(dataBytes, 'block status reports the written data as data').toBeGreaterThan(0);

      node = await reopen(storage, node, format);
      await expectModel(node, model, 'reopened');
      await expectStatusAgrees(node, model, 'reopened');
      await expectCheckClean(node, 'reopened');
    } finally {
      await closeNode(node);
    }
    await env.verifyClosed?.(filename, model.bytes);
  });

  add('resize (where the driver can): grow reads zeros past the old end; shrink (where the format can) keeps the head and a later grow reads zeros', async () => {
    const filename = env.filename('resize');
    const { storage, bs } = await create(format, env, filename, 2 * MiB);
    const size = givenSize(bs, 2 * MiB, 'new image');
    const model = new Model(size);
    let node = bs;
    try {
      const data = seededBytes(size, 7);
      await bdrvPwrite(node, 0, size, data);
      model.write(0, data);

      if (!drv.truncate) {
        // The driver says it cannot resize (qemu-img's vmdk, vhdx): the request is refused and nothing changes.
        const refused = await bdrvTruncate(node, size + MiB + 512, false, 'off').then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(refused instanceof BlockError && refused.code, 'a resize of a format without a truncate hook').toBe('ENOTSUP');
        await expectModel(node, model, 'after a refused resize');
      } else {
        await bdrvTruncate(node, size + MiB + 512, false, 'off');
        model.resize(givenSize(node, size + MiB + 512, 'grown'));
        await expectModel(node, model, 'grown');
        await expectStatusAgrees(node, model, 'grown');

        // A cluster-aligned size (for clusters up to 1 MiB): qemu-img 7.2's qcow2 keeps the data of a partly
        // cut cluster, and a later grow shows it again, so only whole cut clusters must read as zeros.
        const shrinkTo = MiB;
        let shrunk = true;
        try {
          await bdrvTruncate(node, shrinkTo, false, 'off');
        } catch (e) {
          // A format that cannot shrink must say so, and leave the image as it was.
          if (!(e instanceof BlockError && e.code === 'ENOTSUP')) throw e;
          shrunk = false;
        }
        if (shrunk) model.resize(shrinkTo);
        await expectModel(node, model, shrunk ? 'shrunk' : 'after a refused shrink');

        if (shrunk) {
          await bdrvTruncate(node, size, false, 'off');
          model.resize(size);
          await expectModel(node, model, 'shrunk, then grown again: the cut tail reads as zeros');
        }
        await expectStatusAgrees(node, model, 'after resizing');
      }

      node = await reopen(storage, node, format);
      await expectModel(node, model, 'resized, reopened');
      await expectStatusAgrees(node, model, 'resized, reopened');
      await expectCheckClean(node, 'resized, reopened');
    } finally {
      await closeNode(node);
    }
    await env.verifyClosed?.(filename, model.bytes);
  });

  return cases;
}
