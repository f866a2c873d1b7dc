/**
 * vdi, vpc and qed without QEMU: images made by blocktab's create functions
 * in memory, written and read back, the on-disk structures round-tripped
 * through their parser and serializer, and patched headers refused with one
 * BlockError line naming image, structure and offset. (The differential and
 * CLI-level tests against qemu-img are in test/interop/formats-*.test.ts.)
 */
import { describe, expect, it } from 'vitest';
import { BlockError, MemoryStorage, openImage, closeNode, bdrvPread, bdrvPwrite, blockStatus, BDRV_BLOCK_ZERO } from '../../src/index.js';
import { BDRV_BLOCK_DATA } from '../../src/block/status.js';
import { createVdi } from '../../src/formats/vdi/create.js';
import { createVpc } from '../../src/formats/vpc/create.js';
import { createQed } from '../../src/formats/qed/create.js';
import { parseVdiHeader, serializeVdiHeader } from '../../src/formats/vdi/header.js';
import { parseVhdDynHeader, parseVhdFooter, serializeVhdDynHeader, serializeVhdFooter, vhdChecksum } from '../../src/formats/vpc/footer.js';
import { calculateGeometry, createGeometry, vpcVirtualSectors } from '../../src/formats/vpc/geometry.js';
import { parseQedHeader, serializeQedHeader } from '../../src/formats/qed/header.js';
import { seededBytes } from '../helpers/random.js';

const MiB = 1024 * 1024;

async function make(create: (f: Parameters<typeof createVdi>[0]) => Promise<void>): Promise<MemoryStorage> {
  const st = new MemoryStorage();
  await st.createFile('img');
  const proto = await st.openProtocol('img', { readOnly: false });
  await create(proto);
  await closeNode(proto);
  return st;
}

async function openErr(st: MemoryStorage, format: string): Promise<BlockError> {
  const e = await openImage(st, 'img', { format, readOnly: true }).then(
    async (bs) => {
      await closeNode(bs);
      return undefined;
    },
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(BlockError);
  const be = e as BlockError;
  expect(be.message).toContain('img');
  expect(be.message).not.toContain('\n');
  return be;
}

function patch(st: MemoryStorage, offset: number, bytes: number[]): void {
  const b = st.get('img')!.slice();
  b.set(bytes, offset);
  st.put('img', b);
}
const le32 = (v: number) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24];
const be32 = (v: number) => [v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];

const kinds = [
  { format: 'vdi', create: (f: never) => createVdi(f, { size: 5 * MiB + 512 }) },
  { format: 'vdi', create: (f: never) => createVdi(f, { size: 5 * MiB, static: true }) },
  { format: 'vpc', create: (f: never) => createVpc(f, { size: 5 * MiB, forceSize: true }) },
  { format: 'vpc', create: (f: never) => createVpc(f, { size: 5 * MiB, subformat: 'fixed', forceSize: true }) },
  { format: 'qed', create: (f: never) => createQed(f, { size: 5 * MiB, clusterSize: 4096, tableSize: 2 }) },
];

describe('write then read back in memory', () => {
  for (const [i, k] of kinds.entries()) {
    it(`${k.format} #${i}`, async () => {
      const st = await make(k.create);
      let bs = await openImage(st, 'img', { format: k.format });
      const size = bs.totalBytes;
      const ref = new Uint8Array(size);
      for (const [n, [off, len]] of [
        [0, 100],
        [MiB - 7, 5000],
        [2 * MiB + 4096, 2 * MiB],
        [size - 3, 3],
      ].entries()) {
        const data = seededBytes(len!, n + 1);
        await bdrvPwrite(bs, off!, len!, data);
        ref.set(data, off!);
      }
      await closeNode(bs);
      bs = await openImage(st, 'img', { format: k.format, readOnly: true });
      const back = new Uint8Array(size);
      await bdrvPread(bs, 0, size, back);
      expect(Buffer.from(back).equals(Buffer.from(ref))).toBe(true);
      await closeNode(bs);
    });
  }
});

describe('parsers and serializers round-trip', () => {
  it('VDI header', async () => {
    const st = await make((f) => createVdi(f, { size: 7 * MiB }));
    const raw = st.get('img')!.subarray(0, 512);
    expect(serializeVdiHeader(parseVdiHeader(raw))).toEqual(raw);
  });
  it('VHD footer and dynamic disk header (checksums recomputed to the same values)', async () => {
    const st = await make((f) => createVpc(f, { size: 9 * MiB }));
    const b = st.get('img')!;
    const footer = b.subarray(0, 512);
    const dyn = b.subarray(512, 1536);
    expect(serializeVhdFooter(parseVhdFooter(footer))).toEqual(footer);
    expect(serializeVhdDynHeader(parseVhdDynHeader(dyn))).toEqual(dyn);
    expect(vhdChecksum(footer, 64)).toBe(parseVhdFooter(footer).checksum);
    // The trailing footer copy is the same footer.
    expect(b.subarray(b.length - 512)).toEqual(footer);
  });
  it('QED header', async () => {
    const st = await make((f) => createQed(f, { size: 7 * MiB, backingFile: 'base.raw', backingFmt: 'raw' }));
    const raw = st.get('img')!.subarray(0, 64);
    expect(serializeQedHeader(parseQedHeader(raw))).toEqual(raw);
  });
});

describe('VHD geometry', () => {
  it('covers the size asked for, as qemu-img create rounds it', () => {
    for (const mib of [1, 10, 127, 150, 300, 4096, 127 * 1024]) {
      const g = createGeometry(mib * MiB, false);
      expect(g.totalSectors * 512).toBeGreaterThanOrEqual(mib * MiB);
      expect(g.totalSectors).toBe(g.cylinders * g.heads * g.sectorsPerTrack);
      expect(g.heads).toBeLessThanOrEqual(16);
    }
    // 10 MiB: 302 cylinders, 4 heads, 17 sectors (what qemu-img 7.2 writes).
    expect(createGeometry(10 * MiB, false)).toMatchObject({ cylinders: 302, heads: 4, sectorsPerTrack: 17 });
    expect(calculateGeometry(65535 * 16 * 255 + 1000)).toEqual({ cylinders: 65535, heads: 16, sectorsPerTrack: 255 });
  });
  it('sizes by current_size for Hyper-V and qem2, by geometry for qemu and Virtual PC', () => {
    const f = { cylinders: 302, heads: 4, sectorsPerTrack: 17, currentSize: 10 * MiB };
    expect(vpcVirtualSectors({ ...f, creatorApp: 'qemu' })).toBe(302 * 4 * 17);
    expect(vpcVirtualSectors({ ...f, creatorApp: 'vpc ' })).toBe(302 * 4 * 17);
    expect(vpcVirtualSectors({ ...f, creatorApp: 'win ' })).toBe((10 * MiB) / 512);
    expect(vpcVirtualSectors({ ...f, creatorApp: 'qem2' })).toBe((10 * MiB) / 512);
    expect(vpcVirtualSectors({ ...f, creatorApp: 'win ' }, 'chs')).toBe(302 * 4 * 17);
    expect(vpcVirtualSectors({ ...f, creatorApp: 'qemu' }, 'current_size')).toBe((10 * MiB) / 512);
  });
});

describe('bad headers: one BlockError naming image, structure and offset', () => {
  it('vdi: a block map past the end of the file reads as zeros there (entry 0), as QEMU reads it (084)', async () => {
    const st = await make((f) => createVdi(f, { size: 5 * MiB }));
    patch(st, 340, le32(0x7000000));
    const bs = await openImage(st, 'img', { format: 'vdi', readOnly: true });
    try {
      const status = await blockStatus(bs, false, 0, 5 * MiB);
      // Every entry reads as 0: block 0 of the data area, as QEMU's zero-filled read of the map gives.
      expect(status.status & BDRV_BLOCK_DATA).toBe(BDRV_BLOCK_DATA);
      expect(status.map).toBe(parseVdiHeader(st.get('img')!.subarray(0, 512)).offsetData);
      expect(status.pnum).toBe(MiB);
    } finally {
      await closeNode(bs);
    }
  });
  it('vdi: the largest size QEMU takes (512 TiB - 128 MiB) opens from a 1 KiB file, the 2 GiB map past its end unread (084)', async () => {
    const st = await make((f) => createVdi(f, { size: 64 * MiB }));
    patch(st, 368, [0x00, 0x00, 0x00, 0xf8, 0xff, 0xff, 0x01, 0x00]);
    patch(st, 384, le32(0x1fffff80));
    const bs = await openImage(st, 'img', { format: 'vdi', readOnly: true });
    try {
      expect(bs.totalBytes).toBe(562949819203584);
      // An entry far past the file reads as 0 (block 0), as QEMU's zero-filled map does.
      expect((await blockStatus(bs, false, 500 * 2 ** 40, MiB)).status & BDRV_BLOCK_DATA).toBe(BDRV_BLOCK_DATA);
    } finally {
      await closeNode(bs);
    }
  });
  it('vdi: a block map entry outside the image fails the read, not the process', async () => {
    const st = await make((f) => createVdi(f, { size: 5 * MiB }));
    patch(st, 512, le32(4000));
    const bs = await openImage(st, 'img', { format: 'vdi', readOnly: true });
    await expect(bdrvPread(bs, 0, 512, new Uint8Array(512))).rejects.toThrow(/block map entry 0 \(at 0x200\) points at block 4000/);
    await closeNode(bs);
  });
  it('vpc: footer checksum', async () => {
    const st = await make((f) => createVpc(f, { size: 5 * MiB }));
    patch(st, 48, be32(0x1234));
    const e = await openErr(st, 'vpc');
    expect(e.message).toContain('Incorrect header checksum (VHD footer at 0x0)');
  });
  it('vpc: absurd max_table_entries', async () => {
    const st = await make((f) => createVpc(f, { size: 5 * MiB }));
    patch(st, 512 + 28, be32(0x40000000));
    const e = await openErr(st, 'vpc');
    expect(e.message).toContain('Max Table Entries too large');
  });
  it('qed: L1 table offset not cluster aligned', async () => {
    const st = await make((f) => createQed(f, { size: 5 * MiB }));
    patch(st, 40, le32(65536 + 8));
    const e = await openErr(st, 'qed');
    expect(e.message).toContain('invalid QED L1 table offset 0x10008');
  });
  it('qed: unallocated clusters without a backing file read and map as zeros', async () => {
    const st = await make((f) => createQed(f, { size: 5 * MiB }));
    const bs = await openImage(st, 'img', { format: 'qed', readOnly: true });
    const ans = await blockStatus(bs, true, 0, bs.totalBytes);
    expect(ans.status & BDRV_BLOCK_ZERO).toBeTruthy();
    await closeNode(bs);
  });
});
