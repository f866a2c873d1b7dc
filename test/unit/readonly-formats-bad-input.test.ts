/**
 * Broken and hostile dmg, cloop and bochs images (built through the drivers'
 * own structure definitions, then tampered with): open or read must fail with
 * one BlockError line that names the image, the structure and the offset;
 * never a crash, a hang or an allocation the format's limits do not allow.
 */
import { describe, expect, it } from 'vitest';
import { BlockError, MemoryStorage, openImage, bdrvPread, closeNode, type BlockNode } from '../../src/node.js';
import '../../src/drivers.js';
import { buildBochs, buildCloop, buildDmg, type BuiltImage } from '../helpers/readonly-images.js';
import { seededBytes } from '../helpers/random.js';
import { BLKX_ZLIB } from '../../src/formats/dmg/blkx.js';

const S = 512;
const st = new MemoryStorage();
let n = 0;

function put(format: string, img: Uint8Array): string {
  const name = `bad-${++n}.${format}`;
  st.put(name, img);
  return name;
}

async function openOk(format: string, img: Uint8Array): Promise<{ bs: BlockNode; name: string }> {
  const name = put(format, img);
  return { bs: await openImage(st, name, { format, readOnly: true }), name };
}

/** Opening must fail with `code`; the one-line message names the image, `what` and an offset. */
async function openFails(format: string, img: Uint8Array, code: string, what: RegExp, offset = true): Promise<BlockError> {
  const name = put(format, img);
  const e = await openImage(st, name, { format, readOnly: true }).then(
    async (bs) => {
      await closeNode(bs);
      return undefined;
    },
    (e: unknown) => e,
  );
  expect(e, 'open should fail').toBeInstanceOf(BlockError);
  const err = e as BlockError;
  expect(err.code).toBe(code);
  expect(err.message).toContain(name);
  expect(err.message).toMatch(what);
  if (offset) expect(err.message).toMatch(/0x[0-9a-f]+/);
  expect(err.message).not.toContain('\n');
  return err;
}

async function readFails(bs: BlockNode, offset: number, bytes: number, code: string, what: RegExp): Promise<BlockError> {
  const e = await bdrvPread(bs, offset, bytes, new Uint8Array(bytes)).catch((e: unknown) => e);
  expect(e, 'read should fail').toBeInstanceOf(BlockError);
  const err = e as BlockError;
  expect(err.code).toBe(code);
  expect(err.message).toContain(bs.filename);
  expect(err.message).toMatch(what);
  expect(err.message).not.toContain('\n');
  return err;
}

async function readAll(bs: BlockNode): Promise<Uint8Array> {
  const out = new Uint8Array(bs.totalBytes);
  await bdrvPread(bs, 0, out.length, out);
  return out;
}

// ------------------------------------------------------------------ dmg

const zlibPart = (sectors: number, seed: number) => ({ kind: 'zlib' as const, sectors, data: seededBytes(sectors * S, seed) });
const dmg = (tamper: Parameters<typeof buildDmg>[0]['tamper'], extra: Partial<Parameters<typeof buildDmg>[0]> = {}): Uint8Array =>
  buildDmg({ partitions: [[zlibPart(8, 1), { kind: 'raw', sectors: 4, data: seededBytes(4 * S, 2) }], [zlibPart(4, 3)]], tamper, ...extra }).image;

describe('dmg: bad input', () => {
  it('the untampered image reads back (the baseline the cases break)', async () => {
    const built = buildDmg({ partitions: [[zlibPart(8, 1), { kind: 'raw', sectors: 4, data: seededBytes(4 * S, 2) }], [zlibPart(4, 3)]] });
    const { bs } = await openOk('dmg', built.image);
    expect(Buffer.compare(await readAll(bs), built.disk)).toBe(0);
    await closeNode(bs);
  });

  it('a file shorter than a sector', () => openFails('dmg', new Uint8Array(100), 'EINVAL', /at least 512 bytes/, false));

  it('no koly trailer', () => openFails('dmg', seededBytes(4096, 9), 'EINVAL', /UDIF trailer/));

  it('property list past the trailer', () => openFails('dmg', dmg({ koly: (k) => void (k.XMLOffset = 1 << 30) }), 'EINVAL', /XMLOffset/));

  it('data fork past the trailer', () => openFails('dmg', dmg({ koly: (k) => void (k.DataForkOffset = 2 ** 40) }), 'EINVAL', /DataForkOffset/));

  it('absurd sector count', () => openFails('dmg', dmg({ koly: (k) => void (k.SectorCount = 2 ** 60) }), 'EFBIG', /SectorCount/));

  it('neither property list nor resource fork', () =>
    openFails('dmg', dmg({ koly: (k) => void ((k.XMLLength = 0), (k.XMLOffset = 0)) }), 'EINVAL', /neither a resource fork nor a property list/));

  it('truncated property list (unclosed <data>)', () =>
    openFails('dmg', dmg({ koly: (k) => void (k.XMLLength -= 400) }), 'ECORRUPT', /property list.*not closed/));

  it('truncated blkx table (more chunks declared than stored)', () =>
    openFails('dmg', dmg({ blkx: (r) => void (r.table.NumberOfBlockChunks = 1000) }), 'ECORRUPT', /blkx table .*NumberOfBlockChunks is 1000/));

  it('truncated resource fork', () =>
    openFails('dmg', dmg({ koly: (k) => void (k.RsrcForkLength -= 300) }, { variant: 'rsrc' }), 'ECORRUPT', /resource fork at 0x[0-9a-f]+: .*(past the end|does not fit)/));

  it('chunk data beyond the end of the file', () =>
    openFails('dmg', dmg({ blkx: (r, p) => void (p === 1 && (r.chunks[0]!.CompressedOffset = 1 << 30)) }), 'ECORRUPT', /chunk 0 of blkx table .* past the end of the file/));

  it('chunk longer than QEMU allows (64 MiB)', () =>
    openFails('dmg', dmg({ blkx: (r) => void (r.chunks[0]!.CompressedLength = 65 * 1024 * 1024) }), 'EINVAL', /length 68157440 is larger than max/));

  it('chunk of more sectors than QEMU allows', () =>
    openFails('dmg', dmg({ blkx: (r) => void (r.chunks[0]!.SectorCount = 131073) }), 'EINVAL', /sector count 131073 is larger than max \(131072\)/));

  it('overlapping chunks (two tables claiming the same sectors)', () =>
    openFails('dmg', dmg({ blkx: (r, p) => void (p === 1 && (r.table.SectorNumber = 4)) }), 'ECORRUPT', /overlaps/));

  it('bad master checksum', () =>
    openFails('dmg', dmg({ koly: (k) => void (k.MasterChecksum[3] ^= 0x40) }), 'ECORRUPT', /MasterChecksum at 0x[0-9a-f]+: stored CRC-32 .* does not match/));

  it('a blkx checksum changed after the master checksum was made', () =>
    openFails(
      'dmg',
      dmg({ koly: (k) => void (k.MasterChecksum = new Uint8Array(128).fill(0).map((_, i) => (i < 4 ? 0x11 : 0))) }),
      'ECORRUPT',
      /MasterChecksum/,
    ));

  it('unknown chunk type', () =>
    openFails('dmg', buildDmg({ partitions: [[zlibPart(2, 4), { kind: 0x12345678, sectors: 2, data: seededBytes(2 * S, 5) }]] }).image, 'ECORRUPT', /unknown chunk type 0x12345678/));

  it('raw chunk shorter than its sectors', () =>
    openFails('dmg', dmg({ blkx: (r, p) => void (p === 0 && (r.chunks[1]!.CompressedLength = 100)) }), 'ECORRUPT', /raw chunk of 100 bytes/));

  it('lzfse chunk: ENOTSUP naming the chunk and offset on read; other chunks still read', async () => {
    const built = buildDmg({ partitions: [[zlibPart(2, 6), { kind: 'lzfse', sectors: 4, data: seededBytes(4 * S, 7) }, zlibPart(2, 8)]] });
    const { bs } = await openOk('dmg', built.image);
    await readFails(bs, 2 * S, S, 'ENOTSUP', /chunk 1 of blkx table .* at 0x[0-9a-f]+: lzfse-compressed chunks are not supported/);
    const tail = new Uint8Array(2 * S);
    await bdrvPread(bs, 6 * S, tail.length, tail);
    expect(Buffer.compare(tail, built.disk.subarray(6 * S))).toBe(0);
    await closeNode(bs);
  });

  it('truncated zlib stream: EIO naming the chunk', async () => {
    const { bs } = await openOk('dmg', dmg({ blkx: (r, p) => void (p === 0 && (r.chunks[0]!.CompressedLength -= 20)) }));
    await readFails(bs, 0, S, 'EIO', /zlib chunk 0 of blkx table .* at 0x0 .*: the stream (is truncated|does not inflate)/);
    await closeNode(bs);
  });

  it('zlib chunk that inflates past its sectors is stopped at the chunk size', async () => {
    const img = buildDmg({ partitions: [[zlibPart(2048, 10)]], tamper: { blkx: (r) => void (r.chunks[0]!.SectorCount = 1) } }).image;
    const { bs } = await openOk('dmg', img);
    await readFails(bs, 0, S, 'EIO', /inflates to more than 512 bytes/);
    await closeNode(bs);
  });

  it('sectors no chunk maps: EIO naming the sector', async () => {
    const { bs } = await openOk('dmg', dmg({ koly: (k) => void (k.SectorCount += 8) }));
    await readFails(bs, 16 * S, S, 'EIO', /no chunk maps sector 16/);
    await closeNode(bs);
  });

  it('corrupt bzip2 stream: EIO', async () => {
    const img = buildDmg({
      partitions: [[{ kind: 'bzip2', sectors: 8, data: seededBytes(8 * S, 11) }]],
      tamper: { blkx: (r) => void (r.chunks[0]!.CompressedLength -= 40) },
    }).image;
    const { bs } = await openOk('dmg', img);
    await readFails(bs, 0, S, 'EIO', /bzip2 chunk 0 .*: the stream does not decompress/);
    await closeNode(bs);
  });

  it('opening read-write is refused (EACCES, as QEMU without auto-read-only)', async () => {
    const name = put('dmg', dmg(undefined));
    const e = await openImage(st, name, { format: 'dmg', readOnly: false }).catch((e: unknown) => e);
    expect(e).toBeInstanceOf(BlockError);
    expect((e as BlockError).code).toBe('EACCES');
    expect((e as BlockError).message).toContain('Image is read-only');
  });

  it('a chunk entry type in the zlib slot with a raw payload fails on read, not open', async () => {
    const img = buildDmg({ partitions: [[{ kind: 'raw', sectors: 2, data: seededBytes(2 * S, 12) }]], tamper: { blkx: (r) => void (r.chunks[0]!.EntryType = BLKX_ZLIB) } }).image;
    const { bs } = await openOk('dmg', img);
    await readFails(bs, 0, S, 'EIO', /zlib chunk 0/);
    await closeNode(bs);
  });
});

// ------------------------------------------------------------------ cloop

const cloop = (tamper: Parameters<typeof buildCloop>[0]['tamper'], blockSize = 4096): Uint8Array =>
  buildCloop({ blockSize, data: seededBytes(5 * blockSize, 20), tamper }).image;

describe('cloop: bad input', () => {
  it('the untampered image reads back', async () => {
    const built = buildCloop({ blockSize: 4096, data: seededBytes(5 * 4096, 20) });
    const { bs } = await openOk('cloop', built.image);
    expect(Buffer.compare(await readAll(bs), built.disk)).toBe(0);
    await closeNode(bs);
  });
  it('file shorter than the header', () => openFails('cloop', cloop(undefined).subarray(0, 100), 'ECORRUPT', /shorter than the 136-byte header/, false));
  it('block_size not a multiple of 512', () => openFails('cloop', cloop({ head: (h) => void (h.block_size = 1000) }), 'EINVAL', /block_size 1000 at 0x80 must be a multiple of 512/));
  it('block_size zero', () => openFails('cloop', cloop({ head: (h) => void (h.block_size = 0) }), 'EINVAL', /block_size at 0x80 cannot be zero/));
  it('absurd block_size', () => openFails('cloop', cloop({ head: (h) => void (h.block_size = 0xfffffe00) }), 'EINVAL', /must be 64 MB or less/));
  // iotest 075 pokes these; the checks come in QEMU's order, each naming its entry and offset.
  it('num_blocks whose table size overflows 32 bits (075)', () =>
    openFails('cloop', cloop({ head: (h) => void (h.num_blocks = 0xffffffff) }), 'EINVAL', /num_blocks 4294967295 at 0x84 must be 536870911 or less/));
  it('absurd num_blocks (offset table over 512 MiB, 075)', () =>
    openFails('cloop', cloop({ head: (h) => void (h.num_blocks = 0x04000001) }), 'EINVAL', /num_blocks 67108865 at 0x84 needs too many offsets/));
  it('offset table past the end of the file', () =>
    openFails('cloop', cloop({ head: (h) => void (h.num_blocks = 1000000) }), 'ECORRUPT', /offset table at 0x88 .* runs past the end of the file/));
  it('offsets going backwards', () =>
    openFails('cloop', cloop({ offsets: (o) => void (o[3] = o[1]! - 1) }), 'ECORRUPT', /entry 3 at 0xa0: offsets not monotonically increasing/));
  it('offsets going backwards at index 1, entry 0 past the end of the file (075): the order is reported', () =>
    openFails('cloop', cloop({ offsets: (o) => ((o[0] = 0xffffffff), (o[1] = 0xfffe0000)) }), 'ECORRUPT', /entry 1 at 0x90: offsets not monotonically increasing/));
  it('compressed block over 128 MiB at index 1, entry 1 past the end of the file (075): the size is reported', () =>
    openFails('cloop', cloop({ offsets: (o) => ((o[0] = 0), (o[1] = 2 ** 63)) }), 'ECORRUPT', /entry 1 at 0x90: invalid compressed block size/));
  it('last offset beyond the end of the file: open as QEMU does, EIO when that block is read', async () => {
    const { bs } = await openOk('cloop', cloop({ offsets: (o) => void (o[5] = o[4]! + 100000) }));
    await bdrvPread(bs, 0, 4 * 4096, new Uint8Array(4 * 4096));
    await readFails(bs, 4 * 4096, S, 'EIO', /offset table entry 5 at 0xb0: block 4 at 0x[0-9a-f]+ \(100000 bytes\) runs past the end of the file/);
    await closeNode(bs);
  });
  it('cloop V4.0 preamble: not supported', () =>
    openFails('cloop', cloop({ head: (h) => void (h.preamble = new TextEncoder().encode('#!/bin/sh\n#V4.0 Format\n')) }), 'ENOTSUP', /V4\.0/, false));
  it('block that inflates short of block_size: EIO on read', async () => {
    const { bs } = await openOk('cloop', buildCloop({ blockSize: 4096, data: seededBytes(2 * 4096, 21), tamper: { head: (h) => void (h.block_size = 8192) } }).image);
    await readFails(bs, 0, S, 'EIO', /cloop block 0 at 0x[0-9a-f]+ .*inflates to 4096 bytes, not 8192/);
    await closeNode(bs);
  });
  it('block boundaries shifted: EIO on read', async () => {
    const { bs } = await openOk('cloop', cloop({ offsets: (o) => void (o[1] = o[1]! - 7) }));
    await readFails(bs, 0, S, 'EIO', /cloop block 0/);
    await closeNode(bs);
  });
});

// ------------------------------------------------------------------ bochs

const bochs = (tamper: Parameters<typeof buildBochs>[0]['tamper']): Uint8Array =>
  buildBochs({ diskSize: 64 * 1024, extentSize: 4096, data: seededBytes(64 * 1024, 30), present: (s) => s % 2 === 0, tamper }).image;

describe('bochs: bad input', () => {
  it('the untampered image reads back', async () => {
    const built: BuiltImage = buildBochs({ diskSize: 64 * 1024, extentSize: 4096, data: seededBytes(64 * 1024, 30), present: (s) => s % 2 === 0 });
    const { bs } = await openOk('bochs', built.image);
    expect(Buffer.compare(await readAll(bs), built.disk)).toBe(0);
    await closeNode(bs);
  });
  it('not a bochs image (with -f)', () => openFails('bochs', seededBytes(1024, 31), 'EINVAL', /Image not in Bochs format/));
  it('catalog too large', () => openFails('bochs', bochs({ header: (h) => void (h.catalog = 0x100001) }), 'EFBIG', /catalog size 1048577 at 0x48 is too large/));
  it('extent size below 512', () => openFails('bochs', bochs({ header: (h) => void (h.extent = 256) }), 'EINVAL', /extent size 256 at 0x50 must be at least 512/));
  it('extent size not a power of two', () => openFails('bochs', bochs({ header: (h) => void (h.extent = 3072) }), 'EINVAL', /not a power of two/));
  it('extent size too large', () => openFails('bochs', bochs({ header: (h) => void (h.extent = 0x1000000) }), 'EINVAL', /is too large/));
  it('catalog too small for the disk size', () => openFails('bochs', bochs({ header: (h) => void (h.disk = 2 ** 40) }), 'EINVAL', /too small for this disk size/));
  // QEMU's order: no catalog (at most 1M entries of 8 MiB) covers a disk past 2^53, so the catalog check answers first.
  it('absurd disk size', () => openFails('bochs', bochs({ header: (h) => void (h.disk = 2 ** 62) }), 'EINVAL', /catalog size \d+ at 0x48 is too small for this disk size/));
  it('bitmap too small for the extent', () => openFails('bochs', bochs({ header: (h) => void (h.bitmap = 0) }), 'EINVAL', /bitmap size 0 at 0x4c/));
  it('catalog past the end of the file', () => openFails('bochs', bochs({ header: (h) => void (h.header = 1 << 20) }), 'ECORRUPT', /catalog at 0x100000 .* runs past the end/));
  it('catalog entry pointing past the end of the file', () =>
    openFails('bochs', bochs({ catalog: (c) => void (c[2] = 100000) }), 'ECORRUPT', /catalog entry 2 at 0x208: extent 100000 at 0x[0-9a-f]+ is past the end/));
  it('two catalog entries sharing an extent', () =>
    openFails('bochs', bochs({ catalog: (c) => void (c[3] = c[1]!) }), 'ECORRUPT', /catalog entry 3 at 0x20c: extent \d+ is already used by entry 1/));
  it('last extent cut short: EIO-free open, ECORRUPT naming the extent on read', async () => {
    const img = bochs(undefined);
    const { bs } = await openOk('bochs', img.subarray(0, img.length - 1024));
    // Extent 0 of the disk is stored last (the builder allocates in reverse); its last sectors are gone.
    await readFails(bs, 6 * S, S, 'ECORRUPT', /bochs extent \d+ \(catalog entry 0\): sector data at 0x[0-9a-f]+ is past the end of the file/);
    await closeNode(bs);
  });
});

// ------------------------------------------------------------------ luks (header checks; no key is needed to reach them)

import { LUKS_HEADER, LUKS_KEY_SLOT, LUKS_KEY_SLOT_OFFSET, LUKS_MAGIC, LUKS_KEY_ENABLED, LUKS_KEY_DISABLED, type LuksHeader, type LuksKeySlot } from '../../src/crypto/luks-header.js';
import { registerSecret } from '../../src/node.js';

function luksImage(tamper: (h: LuksHeader, slots: LuksKeySlot[]) => void = () => {}): Uint8Array {
  const h: LuksHeader = {
    magic: Uint8Array.from(LUKS_MAGIC),
    version: 1,
    cipher_name: 'aes',
    cipher_mode: 'xts-plain64',
    hash_spec: 'sha256',
    payload_offset: 4040,
    key_bytes: 64,
    mk_digest: new Uint8Array(20),
    mk_digest_salt: new Uint8Array(32),
    mk_digest_iter: 1000,
    uuid: '00000000-0000-0000-0000-000000000000',
  };
  const slots: LuksKeySlot[] = [];
  for (let i = 0; i < 8; i++) slots.push({ active: i === 0 ? LUKS_KEY_ENABLED : LUKS_KEY_DISABLED, iterations: 1000, salt: new Uint8Array(32), key_material_offset: 8 + i * 504, stripes: 4000 });
  tamper(h, slots);
  const img = new Uint8Array(4040 * 512 + 65536);
  LUKS_HEADER.serialize(h, img);
  slots.forEach((s, i) => LUKS_KEY_SLOT.serialize(s, img, LUKS_KEY_SLOT_OFFSET + i * LUKS_KEY_SLOT.size));
  return img;
}

async function luksOpenFails(img: Uint8Array, code: string, what: RegExp, key = true): Promise<void> {
  registerSecret('bad-luks', 'password');
  const name = put('luks', img);
  const e = await openImage(st, name, { format: 'luks', readOnly: true, driverOptions: key ? { 'key-secret': 'bad-luks' } : {} }).catch((e: unknown) => e);
  expect(e).toBeInstanceOf(BlockError);
  expect((e as BlockError).code).toBe(code);
  expect((e as BlockError).message).toContain(name);
  expect((e as BlockError).message).toMatch(what);
  expect((e as BlockError).message).not.toContain('\n');
}

describe('luks: bad input', () => {
  it('no LUKS magic', () => luksOpenFails(luksImage((h) => void (h.magic = new Uint8Array(6))), 'EINVAL', /not in LUKS format/));
  it('LUKS2 (version 2)', () => luksOpenFails(luksImage((h) => void (h.version = 2)), 'ENOTSUP', /LUKS version 2 is not supported/));
  it('unsupported cipher', () => luksOpenFails(luksImage((h) => void (h.cipher_name = 'twofish')), 'ENOTSUP', /cipher twofish-xts-plain64 is not supported/));
  it('unsupported hash', () => luksOpenFails(luksImage((h) => void (h.hash_spec = 'md5')), 'ENOTSUP', /hash md5 is not supported/));
  it('absurd key_bytes', () => luksOpenFails(luksImage((h) => void (h.key_bytes = 0x7fffffff)), 'EINVAL', /key_bytes 2147483647/));
  it('payload past the end of the file', () => luksOpenFails(luksImage((h) => void (h.payload_offset = 0x7fffffff)), 'ECORRUPT', /payload at 0x[0-9a-f]+ is past the end of the file/));
  it('stripes other than 4000', () => luksOpenFails(luksImage((_h, s) => void (s[0]!.stripes = 4000000)), 'ECORRUPT', /key slot 0 at 0xd0 is corrupted \(stripes 4000000 != 4000\)/));
  it('key material over the header', () => luksOpenFails(luksImage((_h, s) => void (s[0]!.key_material_offset = 0)), 'ECORRUPT', /key slot 0 at 0xd0 is overlapping with the LUKS header/));
  it('key material over the payload', () => luksOpenFails(luksImage((_h, s) => void (s[0]!.key_material_offset = 4000)), 'ECORRUPT', /overlapping with the encrypted payload area/));
  it('slot state neither enabled nor disabled', () => luksOpenFails(luksImage((_h, s) => void (s[3]!.active = 7)), 'ECORRUPT', /key slot 3 at 0x160 is corrupted/));
  it('no key slot opens with the password', () => luksOpenFails(luksImage(), 'EPERM', /Invalid password, cannot unlock any keyslot/));
  it('no key-secret for I/O', () => luksOpenFails(luksImage(), 'EINVAL', /Parameter 'key-secret' is required for cipher/, false));
});

// ------------------------------------------------------------------ the environment-neutral inflate (browsers)

import { pakoInflateExact } from '../../src/codecs/zlib-exact.js';
import { deflateSync } from 'node:zlib';

describe('pakoInflateExact (the browser path for dmg and cloop chunks)', () => {
  const data = seededBytes(4096, 60).map((b, i) => (i % 3 ? b : 0));
  const z = new Uint8Array(deflateSync(data));
  it('fills the buffer exactly', () => {
    const out = new Uint8Array(4096);
    expect(pakoInflateExact(z, out)).toBeNull();
    expect(Buffer.compare(out, data)).toBe(0);
  });
  it('stops a stream that inflates past the buffer', () => expect(pakoInflateExact(new Uint8Array(deflateSync(new Uint8Array(1 << 24))), new Uint8Array(512))).toMatch(/more than 512 bytes/));
  it('refuses a short stream', () => expect(pakoInflateExact(z, new Uint8Array(8192))).toMatch(/inflates to 4096 bytes, not 8192/));
  it('refuses a truncated stream', () => expect(pakoInflateExact(z.subarray(0, z.length - 30), new Uint8Array(4096))).toMatch(/truncated|does not inflate/));
  it('refuses garbage', () => expect(pakoInflateExact(seededBytes(100, 61), new Uint8Array(4096))).toMatch(/does not inflate/));
});
