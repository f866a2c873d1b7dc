import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BlockError, FileStorage, openImage, bdrvPread, closeNode } from '../../src/node.js';
import { qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';
import { openFailure, readFailure } from '../helpers/block-errors.js';

const dir = tmpDir('qcow2-bad-');
const st = new FileStorage();
let n = 0;

/** A qemu-img-made image (64 KiB clusters, 128 MiB) with data at 0 and a compressed cluster at 1 MiB. */
function makeImage(opts: string[] = []): string {
  const f = path.join(dir, `${++n}.qcow2`);
  qemuImg(['create', '-q', '-f', 'qcow2', ...opts, f, '128M']);
  qemuIo(f, ['write -P 0x11 0 65536', 'write -c -P 0x22 1M 64k'], 'qcow2');
  return f;
}

function poke(f: string, offset: number, bytes: number[] | Uint8Array): void {
  const fd = fs.openSync(f, 'r+');
  fs.writeSync(fd, Uint8Array.from(bytes), 0, bytes.length, offset);
  fs.closeSync(fd);
}
function u32(v: number): number[] {
  return [v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];
}
function u64(v: number): number[] {
  return [...u32(Math.floor(v / 2 ** 32)), ...u32(v >>> 0)];
}
function read64(f: string, offset: number): number {
  const b = Buffer.alloc(8);
  const fd = fs.openSync(f, 'r');
  fs.readSync(fd, b, 0, 8, offset);
  fs.closeSync(fd);
  return b.readUInt32BE(0) * 2 ** 32 + b.readUInt32BE(4);
}
const L1_MASK_LO = 0xfffffe00;
function l2Offset(f: string): number {
  const e = read64(f, read64(f, 40));
  return (Math.floor(e / 2 ** 32) & 0xffffff) * 2 ** 32 + ((e % 2 ** 32) & L1_MASK_LO >>> 0);
}

async function openErr(f: string, readOnly = true): Promise<BlockError> {
  return openFailure(st, f, { format: 'qcow2', readOnly });
}

async function readErr(f: string, offset: number, bytes: number): Promise<BlockError> {
  return readFailure(st, f, 'qcow2', offset, bytes);
}

/** qemu-img refuses the image too (the case is QEMU's, not only ours). */
function qemuRefuses(f: string): string {
  const r = qemuImgRun(['info', f]);
  expect(r.status).not.toBe(0);
  return r.stderr;
}

describe('qcow2 bad input: each a BlockError naming image, structure and offset', () => {
  it('truncated header', async () => {
    const f = makeImage();
    fs.truncateSync(f, 50);
    const e = await openErr(f);
    expect(e.code).toBe('EINVAL');
    // The file reads as its length rounded up to 512 bytes, zeros past the end (as QEMU): header_length reads 0.
    expect(e.message).toMatch(new RegExp(`^${f}: qcow2 header: qcow2 header too short \\(header_length 0 < 104\\) at 0x64`));
  });

  it('bad magic (with an explicit format) and bad version', async () => {
    const f = makeImage();
    poke(f, 0, u32(0x12345678));
    expect((await openErr(f)).message).toMatch(/Image is not in qcow2 format .*at 0x0/);
    const g = makeImage();
    poke(g, 4, u32(4));
    const e = await openErr(g);
    expect(e.code).toBe('ENOTSUP');
    expect(e.message).toMatch(/Unsupported qcow2 version 4 at 0x4/);
    expect(qemuRefuses(g)).toMatch(/Unsupported qcow2 version 4/);
  });

  for (const bits of [8, 22]) {
    it(`cluster_bits ${bits}`, async () => {
      const f = makeImage();
      poke(f, 20, u32(bits));
      const e = await openErr(f);
      expect(e.code).toBe('EINVAL');
      expect(e.message).toMatch(new RegExp(`Unsupported cluster size: 2\\^${bits}.* at 0x14`));
      expect(qemuRefuses(f)).toMatch(/Unsupported cluster size/);
    });
  }

  it('header_length below 104 (v3) and above the cluster size', async () => {
    const f = makeImage();
    poke(f, 100, u32(96));
    expect((await openErr(f)).message).toMatch(/header too short .* at 0x64/);
    expect(qemuRefuses(f)).toMatch(/header too short/);
    const g = makeImage(['-o', 'cluster_size=512']);
    poke(g, 100, u32(1024));
    expect((await openErr(g)).message).toMatch(/header exceeds cluster size .* at 0x64/);
    expect(qemuRefuses(g)).toMatch(/exceeds cluster size/);
  });

  it('backing file name offset beyond the header cluster, and a name over 1023 bytes', async () => {
    const f = makeImage();
    poke(f, 8, u64(0x20000));
    poke(f, 16, u32(10));
    expect((await openErr(f)).message).toMatch(/Invalid backing file offset 0x20000.* at 0x8/);
    expect(qemuRefuses(f)).toMatch(/Invalid backing file offset/);
    const g = makeImage();
    poke(g, 8, u64(0x1000));
    poke(g, 16, u32(1024));
    expect((await openErr(g)).message).toMatch(/Backing file name too long \(1024 bytes\) at 0x10/);
    expect(qemuRefuses(g)).toMatch(/Backing file name too long/);
  });

  it('L1 table offset not cluster-aligned', async () => {
    const f = makeImage();
    poke(f, 40, u64(read64(f, 40) + 512));
    const e = await openErr(f);
    expect(e.message).toMatch(/Active L1 table offset invalid: 0x[0-9a-f]+ is not cluster-aligned/);
    expect(qemuRefuses(f)).toMatch(/Active L1 table offset invalid/);
  });

  it('L1 table too large (QCOW_MAX_L1_SIZE) and too small for the virtual size', async () => {
    const f = makeImage();
    poke(f, 36, u32(32 * 1024 * 1024 / 8 + 1));
    const e = await openErr(f);
    expect(e.code).toBe('EFBIG');
    expect(e.message).toMatch(/Active L1 table too large .* at 0x24/);
    expect(qemuRefuses(f)).toMatch(/Active L1 table too large/);
    const g = makeImage();
    poke(g, 24, u64(2 ** 40)); // 1 TiB needs 2048 L1 entries, the image has 1
    expect((await openErr(g)).message).toMatch(/L1 table is too small .* at 0x24/);
    expect(qemuRefuses(g)).toMatch(/L1 table is too small/);
  });

  it('L1 table beyond the end of the file', async () => {
    const f = makeImage();
    poke(f, 40, u64(1 << 30));
    const e = await openErr(f);
    expect(e.message).toMatch(new RegExp(`^${f}: Active L1 table at 0x40000000 .*extends beyond the end of the file`));
  });

  it('refcount table offset unaligned and size beyond QCOW_MAX_REFTABLE_SIZE', async () => {
    const f = makeImage();
    poke(f, 48, u64(read64(f, 48) + 8));
    expect((await openErr(f)).message).toMatch(/Reference count table offset invalid: 0x[0-9a-f]+ is not cluster-aligned/);
    expect(qemuRefuses(f)).toMatch(/Reference count table offset invalid/);
    const g = makeImage();
    poke(g, 56, u32(8 * 1024 * 1024 / 65536 + 1));
    expect((await openErr(g)).message).toMatch(/Reference count table too large .* at 0x38/);
    expect(qemuRefuses(g)).toMatch(/Reference count table too large/);
  });

  it('snapshot count over 65536 and snapshot table beyond the end of the file', async () => {
    const f = makeImage();
    poke(f, 60, u32(65537));
    expect((await openErr(f)).message).toMatch(/Snapshot table too large: too many snapshots .* at 0x3c/);
    expect(qemuRefuses(f)).toMatch(/Snapshot table too large/);
    // A table past the end of the file reads as zeros, as qemu-img reads it (iotest 080); nothing is written from it.
    const g = makeImage();
    poke(g, 60, u32(3));
    poke(g, 64, u64(1 << 30));
    expect(qemuImgRun(['info', g]).status).toBe(0);
    const bs = await openImage(st, g, { format: 'qcow2', readOnly: false });
    try {
      expect(bs.driver.listSnapshots?.(bs)).toHaveLength(3);
    } finally {
      await closeNode(bs);
    }
  });

  it('refcount_order above 6', async () => {
    const f = makeImage();
    poke(f, 96, u32(7));
    expect((await openErr(f)).message).toMatch(/Reference count entry width too large.* at 0x60/);
    expect(qemuRefuses(f)).toMatch(/Reference count entry width too large/);
  });

  it('unknown incompatible feature refused with ENOTSUP, named as qemu-img names it', async () => {
    const f = makeImage();
    poke(f, 0x4e, [0x04]); // bit 10
    const e = await openErr(f);
    expect(e.code).toBe('ENOTSUP');
    expect(e.message).toContain('Unsupported qcow2 feature(s): Unknown incompatible feature: 400');
    expect(qemuRefuses(f)).toContain('Unsupported qcow2 feature(s): Unknown incompatible feature: 400');
  });

  it('encrypted image (crypt_method 1) without a key: QEMU\'s message that encrypt.key-secret is required', async () => {
    const f = makeImage();
    poke(f, 32, u32(1));
    const e = await openErr(f);
    expect(e.code).toBe('EINVAL');
    expect(e.message).toMatch(/Parameter 'encrypt\.key-secret' is required for cipher/);
  });

  it('unknown crypt_method refused as QEMU does, naming the field and offset', async () => {
    const f = makeImage();
    poke(f, 32, u32(3));
    const e = await openErr(f);
    expect(e.code).toBe('EINVAL');
    expect(e.message).toMatch(/Unsupported encryption method: 3 \(crypt_method at 0x20\)/);
    expect(qemuRefuses(f)).toMatch(/Unsupported encryption method 3/);
  });

  it('compression type other than zlib/zstd refused', async () => {
    const f = makeImage(['-o', 'compression_type=zstd']);
    poke(f, 104, [7]);
    const e = await openErr(f);
    expect(e.code).toBe('ENOTSUP');
    expect(e.message).toMatch(/unknown compression type: 7 .*at 0x68/);
    expect(qemuRefuses(f)).toMatch(/compression type/);
  });

  it('corrupt bit: read-only open works, writable open is refused with EACCES', async () => {
    const f = makeImage();
    poke(f, 0x4f, [0x02]);
    const e = await openErr(f, false);
    expect(e.code).toBe('EACCES');
    expect(e.message).toMatch(/Image is corrupt; cannot be opened read\/write \(corrupt bit/);
    const bs = await openImage(st, f, { readOnly: true });
    expect(bs.driver.getInfo!(bs)!.data.corrupt).toBe(true);
    const buf = new Uint8Array(65536);
    await bdrvPread(bs, 0, 65536, buf);
    expect(buf.every((b) => b === 0x11)).toBe(true);
    await closeNode(bs);
  });

  it('L2 table beyond the end of the file', async () => {
    const f = makeImage();
    const l1 = read64(f, 40);
    poke(f, l1, u64(2 ** 63 / 2 ** 32 > 0 ? 0x8000000040000000 : 0)); // COPIED | 1 GiB
    const e = await readErr(f, 0, 512);
    expect(e.code).toBe('ECORRUPT');
    expect(e.message).toMatch(new RegExp(`^${f}: L2 table at 0x40000000 extends beyond the end of the file`));
  });

  it('unaligned L2 table offset', async () => {
    const f = makeImage();
    const l1 = read64(f, 40);
    poke(f, l1, u64(l2Offset(f) + 512));
    const e = await readErr(f, 0, 512);
    expect(e.code).toBe('ECORRUPT');
    expect(e.message).toMatch(/L2 table offset 0x[0-9a-f]+ unaligned \(L1 index 0x0/);
  });

  it('compressed cluster beyond the end of the file', async () => {
    const f = makeImage();
    const entryAt = l2Offset(f) + 16 * 8; // guest 1 MiB = cluster 16
    const e0 = read64(f, entryAt);
    expect(Math.floor(e0 / 2 ** 62)).toBe(1); // compressed flag
    // Keep the flag and sector count, point the data 1 GiB away (x = 62 - 8 = 54 offset bits).
    const hi = Math.floor(e0 / 2 ** 32);
    const newHi = (hi & ~0x3fffff) | 0x0; // clear offset bits 32..53
    poke(f, entryAt, [...u32(newHi >>> 0), ...u32(0x40000000)]);
    const err = await readErr(f, 1 << 20, 4096);
    // As QEMU: bytes past the end of the file read as zeros, which do not decompress (EIO).
    expect(err.code).toBe('EIO');
    expect(err.message).toMatch(/cluster for guest offset 0x100000 at host offset 0x40000000 \(\d+ bytes, \d+ of them past the end of the file \(\d+ bytes\)\)/);
  });

  it('compressed data that does not decompress', async () => {
    const f = makeImage();
    const entryAt = l2Offset(f) + 16 * 8;
    const e0 = read64(f, entryAt);
    const coffset = e0 % 2 ** 32; // small image: the offset fits in the low half
    poke(f, coffset, new Uint8Array(64).fill(0xff));
    const err = await readErr(f, (1 << 20) + 100, 100);
    expect(err.code).toBe('EIO');
    expect(err.message).toMatch(/could not decompress the zlib cluster for guest offset 0x100064 at host offset 0x/);
  });

  it('unaligned data cluster offset in an L2 entry', async () => {
    const f = makeImage();
    const entryAt = l2Offset(f);
    const e0 = read64(f, entryAt);
    poke(f, entryAt + 4, u32(((e0 % 2 ** 32) + 512) >>> 0));
    const err = await readErr(f, 0, 512);
    // QEMU's qcow2_get_host_offset: EIO, with its words (read-only open: a non-fatal notice).
    expect(err.code).toBe('EIO');
    expect(err.message).toMatch(/image is corrupt: Cluster allocation offset 0x[0-9a-f]+ unaligned \(L2 offset: 0x[0-9a-f]+, L2 index: 0\)/);
  });
});
