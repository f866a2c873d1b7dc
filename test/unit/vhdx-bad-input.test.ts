/**
 * Crafted and damaged VHDX images: each must fail with one BlockError naming
 * the image, the structure and the offset (QEMU's wording where QEMU has
 * one). Also differencing images, which qemu-img cannot open: built here from
 * the specification out of images qemu-img made, read through the parent.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BlockError, FileStorage, openImage, bdrvPread, closeNode } from '../../src/node.js';
import { mapExtents } from '../../src/img/map.js';
import { qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';
import { batEntry, vhdxLayout, writeDirtyLog } from '../helpers/vhdx-log.js';
import { parseRegionTable, serializeRegionTable, VHDX_REGION_TABLE_OFFSET } from '../../src/formats/vhdx/header.js';
import { BAT_GUID, METADATA_GUID, PARENT_LOCATOR_GUID, VHDX_PARENT_LOCATOR_TYPE } from '../../src/formats/vhdx/guid.js';
import { parseMetadataTable, serializeMetadataTable, serializeParentLocator, VHDX_PARAMS_HAS_PARENT } from '../../src/formats/vhdx/metadata.js';
import { openFailure, readFailure } from '../helpers/block-errors.js';

const dir = tmpDir('vhdx-bad-');
const st = new FileStorage();
const MiB = 1024 * 1024;
let n = 0;

function make(opts: string[] = ['block_size=1M'], size = '8M', writes: string[] = ['write -P 0x11 0 1M']): string {
  const f = path.join(dir, `${++n}.vhdx`);
  qemuImg(['create', '-q', '-f', 'vhdx', ...(opts.length ? ['-o', opts.join(',')] : []), f, size]);
  if (writes.length) qemuIo(f, writes, 'vhdx');
  return f;
}

function readAt(f: string, at: number, len: number): Uint8Array {
  const b = Buffer.alloc(len);
  const fd = fs.openSync(f, 'r');
  fs.readSync(fd, b, 0, len, at);
  fs.closeSync(fd);
  return new Uint8Array(b.buffer, b.byteOffset, len);
}
function writeAt(f: string, at: number, data: Uint8Array): void {
  const fd = fs.openSync(f, 'r+');
  fs.writeSync(fd, data, 0, data.length, at);
  fs.closeSync(fd);
}
function setBat(f: string, i: number, state: number, fileOffset: number): void {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(((fileOffset % 2 ** 32) | state) >>> 0, 0);
  b.writeUInt32LE(Math.floor(fileOffset / 2 ** 32), 4);
  writeAt(f, vhdxLayout(f).batOffset + i * 8, b);
}
function regions(f: string) {
  return parseRegionTable(readAt(f, VHDX_REGION_TABLE_OFFSET, 65536), f, VHDX_REGION_TABLE_OFFSET).entries;
}
function metadataOffset(f: string): number {
  return regions(f).find((r) => r.guid === METADATA_GUID)!.fileOffset;
}

async function openErr(f: string, readOnly = true): Promise<BlockError> {
  return openFailure(st, f, { format: 'vhdx', readOnly });
}

describe('vhdx bad input', () => {
  it("a BAT entry beyond the end of the file is refused with QEMU's words", async () => {
    const f = make();
    setBat(f, 0, 6, 4096 * MiB);
    const e = await openErr(f);
    expect(e.message).toContain(path.basename(f));
    expect(e.message).toMatch(/VHDX BAT entry 0 start offset 4294967296 points after end of file \(\d+\)\. Image has probably been truncated\./);
    expect(qemuImgRun(['info', f]).stderr).toMatch(/VHDX BAT entry 0 start offset 4294967296 points after end of file/);
  });

  it('a payload block inside the BAT region (overlap) is refused', async () => {
    const f = make();
    setBat(f, 0, 6, vhdxLayout(f).batOffset);
    expect((await openErr(f)).message).toMatch(/block of BAT entry 0 at 0x[0-9a-f]+ \(1048576 bytes\) overlaps the BAT region/);
    expect(qemuImgRun(['info', f]).status).not.toBe(0);
  });

  it('overlapping regions in the region table are refused', async () => {
    const f = make();
    const rt = regions(f);
    const bat = rt.find((r) => r.guid === BAT_GUID)!;
    const meta = rt.find((r) => r.guid === METADATA_GUID)!;
    meta.fileOffset = bat.fileOffset;
    writeAt(f, VHDX_REGION_TABLE_OFFSET, serializeRegionTable(rt));
    expect((await openErr(f)).message).toMatch(/metadata region at 0x[0-9a-f]+ .* overlaps the BAT region/);
    expect(qemuImgRun(['info', f]).status).not.toBe(0);
  });

  it('a region table with a bad checksum is refused', async () => {
    const f = make();
    writeAt(f, VHDX_REGION_TABLE_OFFSET + 100, new Uint8Array([0x42]));
    expect((await openErr(f)).message).toMatch(/region table at 0x30000 has a bad checksum/);
  });

  it('two broken headers: No valid VHDX header found', async () => {
    const f = make();
    writeAt(f, 64 * 1024 + 8, new Uint8Array([1]));
    writeAt(f, 128 * 1024 + 8, new Uint8Array([1]));
    expect((await openErr(f)).message).toMatch(/No valid VHDX header found/);
    expect(qemuImgRun(['info', f]).stderr).toMatch(/No valid VHDX header found/);
  });

  it('an absurd virtual disk size is refused before the BAT is read', async () => {
    const f = make();
    const table = parseMetadataTable(readAt(f, metadataOffset(f), 65536), f);
    const size = table.find((e) => e.itemId === '2FA54224-CD1B-4876-B211-5DBED83BF4B8')!;
    const b = Buffer.alloc(8);
    b.writeUInt32LE(0, 0);
    b.writeUInt32LE(0x100000, 4); // 2^52 bytes
    writeAt(f, metadataOffset(f) + size.offset, b);
    const e = await openErr(f);
    expect(e.code).toBe('EFBIG');
    expect(e.message).toMatch(/VirtualDiskSize 4503599627370496 is above the 64 TiB maximum/);
  });

  it('a block size that is not a power of two is refused', async () => {
    const f = make();
    const table = parseMetadataTable(readAt(f, metadataOffset(f), 65536), f);
    const fp = table.find((e) => e.itemId === 'CAA16737-FA36-4D43-B3B6-33F0AA44E76B')!;
    const b = Buffer.alloc(4);
    b.writeUInt32LE(3 * MiB, 0);
    writeAt(f, metadataOffset(f) + fp.offset, b);
    expect((await openErr(f)).message).toMatch(/BlockSize 3145728 is not a power of two/);
    expect(qemuImgRun(['info', f]).status).not.toBe(0);
  });

  it('a log entry whose descriptor does not match its entry does not replay: one clear error', async () => {
    const f = make();
    const [, block0] = batEntry(f, 0);
    writeDirtyLog(f, [[{ fileOffset: block0, data: new Uint8Array(4096).fill(9) }]], {
      mutate: (entry) => {
        entry[64 + 24] ^= 0xff; // the descriptor's SequenceNumber
      },
    });
    const e = await openErr(f, false);
    expect(e.message).toMatch(/log entry at \+0x0 \(sequence 1\): descriptor 0 is invalid; the log does not replay/);
    expect(qemuImgRun(['check', '-r', 'all', f]).status).not.toBe(0);
  });
});

describe('vhdx differencing images (no qemu-img oracle: built from the specification)', () => {
  it('reads present blocks, partially present sectors and absent blocks through the parent', async () => {
    const base = path.join(dir, 'diffbase.vhdx');
    qemuImg(['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', base, '8M']);
    qemuIo(base, ['write -P 0xbb 0 8M'], 'vhdx');
    const child = path.join(dir, 'diffchild.vhdx');
    qemuImg(['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', child, '8M']);
    qemuIo(child, ['write -P 0xc0 0 1M', 'write -P 0xc1 1M 1M', 'write -P 0xc2 2M 1M'], 'vhdx');
    const [, block1] = batEntry(child, 1);

    // File parameters: HasParent. Metadata table: a parent locator item.
    const mo = metadataOffset(child);
    const table = parseMetadataTable(readAt(child, mo, 65536), child);
    const fp = table.find((e) => e.itemId === 'CAA16737-FA36-4D43-B3B6-33F0AA44E76B')!;
    const params = Buffer.from(readAt(child, mo + fp.offset, 8));
    params.writeUInt32LE(params.readUInt32LE(4) | VHDX_PARAMS_HAS_PARENT, 4);
    writeAt(child, mo + fp.offset, params);
    const locator = serializeParentLocator({
      locatorType: VHDX_PARENT_LOCATOR_TYPE,
      entries: [
        ['parent_linkage', '{00000000-0000-0000-0000-000000000000}'],
        ['relative_path', '.\\diffbase.vhdx'],
      ],
    });
    const locAt = 128 * 1024;
    writeAt(child, mo + locAt, locator);
    table.push({ itemId: PARENT_LOCATOR_GUID, offset: locAt, length: locator.length, isUser: false, isVirtualDisk: true, isRequired: true });
    writeAt(child, mo, serializeMetadataTable(table));

    // BAT: chunk ratio 4096 for 1 MiB blocks and 512-byte sectors; the sector bitmap entry is index 4096.
    const size = fs.statSync(child).size;
    const bitmapAt = Math.ceil(size / MiB) * MiB;
    const bitmap = new Uint8Array(MiB);
    bitmap[2048 / 8] = 0x0f; // sectors 2048..2051 (the first 2 KiB of block 1) are present: bit 0 is the first sector
    writeAt(child, bitmapAt, bitmap);
    setBat(child, 4096, 6, bitmapAt);
    setBat(child, 1, 7, block1); // block 1: partially present
    setBat(child, 2, 0, 0); // block 2: not present (parent)
    for (let i = 3; i < 8; i++) setBat(child, i, 0, 0);

    const bs = await openImage(st, child, { readOnly: true });
    try {
      expect(bs.backing?.node.filename).toBe(path.join(dir, 'diffbase.vhdx'));
      const buf = new Uint8Array(8 * MiB);
      await bdrvPread(bs, 0, buf.length, buf);
      const expected = new Uint8Array(8 * MiB).fill(0xbb);
      expected.fill(0xc0, 0, MiB);
      expected.fill(0xc1, MiB, MiB + 2048);
      expect(Buffer.from(buf).equals(Buffer.from(expected))).toBe(true);
      const map = [];
      for await (const e of mapExtents(bs)) map.push([e.start, e.length, e.depth, e.data]);
      expect(map).toEqual([
        [0, MiB + 2048, 0, true],
        [MiB + 2048, 7 * MiB - 2048, 1, true],
      ]);
    } finally {
      await closeNode(bs);
    }
    // qemu-img cannot open differencing VHDX at all.
    expect(qemuImgRun(['info', child]).status).not.toBe(0);
    // A read/write open is refused as QEMU refuses any open, before anything is written.
    const before = fs.readFileSync(child);
    const err = await openImage(st, child, { readOnly: false }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(BlockError);
    expect((err as BlockError).code).toBe('ENOTSUP');
    expect((err as BlockError).message).toBe(`${child}: Operation not supported`);
    expect(Buffer.compare(fs.readFileSync(child), before)).toBe(0);
  });
});
