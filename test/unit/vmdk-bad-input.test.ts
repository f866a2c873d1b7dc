/**
 * Crafted and damaged VMDK images: each must fail with one BlockError that
 * names the image (or extent), the structure and the offset — never a crash,
 * a hang, a huge allocation or silently wrong data.
 */
import { describe, expect, it } from 'vitest';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BlockError, FileStorage, openImage, bdrvPread, closeNode } from '../../src/node.js';
import { BlobStorage } from '../../src/protocols/blob.js';
import { qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';
import { openFailure, readFailure } from '../helpers/block-errors.js';

const dir = tmpDir('vmdk-bad-');
const st = new FileStorage();
let n = 0;

function makeSparse(opts: string[] = [], size = '16M'): string {
  const f = path.join(dir, `${++n}.vmdk`);
  qemuImg(['create', '-q', '-f', 'vmdk', ...(opts.length ? ['-o', opts.join(',')] : []), f, size]);
  return f;
}

function poke(f: string, offset: number, bytes: Uint8Array | number[]): void {
  const fd = fs.openSync(f, 'r+');
  fs.writeSync(fd, Uint8Array.from(bytes), 0, bytes.length, offset);
  fs.closeSync(fd);
}
function le32(v: number): number[] {
  return [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
}
function le64(v: number): number[] {
  return [...le32(v >>> 0), ...le32(Math.floor(v / 2 ** 32))];
}
function readLe32(f: string, offset: number): number {
  const b = Buffer.alloc(4);
  const fd = fs.openSync(f, 'r');
  fs.readSync(fd, b, 0, 4, offset);
  fs.closeSync(fd);
  return b.readUInt32LE(0);
}

async function openErr(f: string, storage: FileStorage | BlobStorage = st): Promise<BlockError> {
  return openFailure(storage, f, { format: 'vmdk' });
}

async function readErr(f: string, offset: number, bytes: number): Promise<BlockError> {
  return readFailure(st, f, 'vmdk', offset, bytes);
}

/** The header's gdOffset (sectors) → the first grain table's sector. */
function firstGrainTable(f: string): number {
  const gd = readLe32(f, 56) * 512;
  return readLe32(f, gd) * 512;
}

describe('vmdk bad input', () => {
  it('a grain table entry beyond the end of the file fails the read, naming the entry', async () => {
    const f = makeSparse();
    qemuIo(f, ['write -P 0x11 0 64k'], 'vmdk');
    const gt = firstGrainTable(f);
    poke(f, gt, le32(0x7fffffff));
    const e = await readErr(f, 0, 4096);
    expect(e.message).toContain(path.basename(f));
    expect(e.message).toMatch(/grain table entry at 0x[0-9a-f]+ points to 0x[0-9a-f]+, beyond the end of the file/);
  });

  it('a grain table beyond the end of the file fails the read', async () => {
    const f = makeSparse();
    const gd = readLe32(f, 56) * 512;
    poke(f, gd, le32(0x10000000));
    const e = await readErr(f, 0, 512);
    expect(e.message).toMatch(/grain table at 0x2000000000 is beyond the end of the file/);
  });

  it('a grain directory beyond the end of the file fails the open', async () => {
    const f = makeSparse();
    poke(f, 56, le64(0x100000));
    const e = await openErr(f);
    expect(e.message).toMatch(/grain directory at 0x20000000 .* is beyond the end of the file/);
  });

  it('an absurd capacity is refused before anything is allocated', async () => {
    const f = makeSparse();
    poke(f, 12, le64(2 ** 52));
    const e = await openErr(f);
    expect(e.code).toBe('EFBIG');
    expect(e.message).toMatch(/L1 size too big|too large/);
  });

  it("numGTEsPerGT above 512 is refused as QEMU does ('L2 table size too big')", async () => {
    const f = makeSparse();
    poke(f, 44, le32(4096));
    expect((await openErr(f)).message).toMatch(/L2 table size too big/);
    expect(qemuImgRun(['info', f]).stderr).toMatch(/L2 table size too big/);
  });

  it('a grain of more than 1 GiB is refused', async () => {
    const f = makeSparse();
    poke(f, 20, le64(0x400000));
    poke(f, 44, le32(1));
    expect((await openErr(f)).message).toMatch(/Invalid granularity/);
  });

  it('a compressed grain that does not inflate fails the read, naming the grain', async () => {
    const src = path.join(dir, 'src.raw');
    qemuImg(['create', '-q', '-f', 'raw', src, '1M']);
    qemuIo(src, ['write -P 0x5a 0 1M'], 'raw');
    const f = path.join(dir, `${++n}.vmdk`);
    qemuImg(['convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', src, f]);
    const grain = readLe32(f, firstGrainTable(f)) * 512;
    poke(f, grain + 12, new Array(16).fill(0xff));
    const e = await readErr(f, 0, 512);
    expect(e.message).toMatch(/compressed grain at 0x[0-9a-f]+ does not decompress/);
    // Whole grains are read together and inflated in place: the bad one still fails the read, named by its offset.
    expect((await readErr(f, 0, 1 << 20)).message).toContain(`compressed grain at 0x${grain.toString(16)} does not decompress`);
    expect(qemuImgRun(['convert', '-O', 'raw', f, path.join(dir, 'x.raw')]).status).not.toBe(0);
  });

  it('overlapping flat extents in one file are refused', async () => {
    fs.writeFileSync(path.join(dir, 'flat.bin'), Buffer.alloc(1 << 20));
    const f = path.join(dir, 'overlap.vmdk');
    fs.writeFileSync(f, descriptor('monolithicFlat', ['RW 1024 FLAT "flat.bin" 0', 'RW 1024 FLAT "flat.bin" 512']));
    expect((await openErr(f)).message).toMatch(/overlapping extents in '.*flat\.bin'/);
  });

  it('a FLAT extent line without its offset is an invalid extent line, as in QEMU', async () => {
    const f = path.join(dir, 'nooffset.vmdk');
    fs.writeFileSync(f, descriptor('monolithicFlat', ['RW 1024 FLAT "flat.bin"']));
    expect((await openErr(f)).message).toContain('Invalid extent line: RW 1024 FLAT "flat.bin"');
    // qemu-img 7.2 says the same but loses the line's text.
    expect(qemuImgRun(['info', f]).stderr).toContain('Invalid extent line');
  });

  it('an unsupported create type is refused with its name', async () => {
    const f = path.join(dir, 'ct.vmdk');
    fs.writeFileSync(f, descriptor('fullDevice', ['RW 1024 FLAT "flat.bin" 0']));
    expect((await openErr(f)).message).toContain("Unsupported image type 'fullDevice'");
  });

  it('a descriptor naming a file outside a browser namespace is refused', async () => {
    const blobs = new BlobStorage();
    blobs.add(new Blob([descriptor('monolithicFlat', ['RW 1024 FLAT "../secret.bin" 0'])]), 'disk.vmdk');
    const e = await openErr('disk.vmdk', blobs);
    expect(e.code).toBe('EPERM');
    expect(e.message).toMatch(/refusing to open '\.\.\/secret\.bin'.*outside the blob namespace/);
    const blobs2 = new BlobStorage();
    blobs2.add(new Blob([descriptor('monolithicFlat', ['RW 1024 FLAT "/etc/passwd" 0'])]), 'disk.vmdk');
    expect((await openErr('disk.vmdk', blobs2)).message).toMatch(/No such file|outside/);
  });

  it("on the host file system '../' extents are read as qemu-img reads them", async () => {
    const sub = path.join(dir, 'sub');
    fs.mkdirSync(sub, { recursive: true });
    const flat = path.join(dir, 'up.bin');
    fs.writeFileSync(flat, Buffer.alloc(512 * 64, 0x77));
    const f = path.join(sub, 'up.vmdk');
    fs.writeFileSync(f, descriptor('monolithicFlat', ['RW 64 FLAT "../up.bin" 0']));
    const bs = await openImage(st, f, { readOnly: true });
    try {
      const buf = new Uint8Array(512 * 64);
      await bdrvPread(bs, 0, buf.length, buf);
      expect(buf.every((b) => b === 0x77)).toBe(true);
    } finally {
      await closeNode(bs);
    }
    expect(qemuImgRun(['convert', '-O', 'raw', f, path.join(dir, 'up.raw')]).status).toBe(0);
    expect(fs.readFileSync(path.join(dir, 'up.raw')).every((b) => b === 0x77)).toBe(true);
  });

  it('a parent whose CID changed fails reads of unallocated grains, as in QEMU', async () => {
    const base = path.join(dir, 'cidbase.vmdk');
    qemuImg(['create', '-q', '-f', 'vmdk', base, '4M']);
    qemuIo(base, ['write -P 0x31 0 4M'], 'vmdk');
    const top = path.join(dir, 'cidtop.vmdk');
    qemuImg(['create', '-q', '-f', 'vmdk', '-b', 'cidbase.vmdk', '-F', 'vmdk', top]);
    // A write through the base changes its CID.
    qemuIo(base, ['write -P 0x32 0 512'], 'vmdk');
    const e = await readErr(top, 0, 512);
    expect(e.code).toBe('EINVAL');
    expect(e.message).toMatch(/parentCID [0-9a-f]{8} does not match the CID [0-9a-f]{8}/);
    expect(qemuImgRun(['convert', '-O', 'raw', top, path.join(dir, 'cid.raw')]).status).not.toBe(0);
  });
});

function descriptor(createType: string, extents: string[]): string {
  return ['# Disk DescriptorFile', 'version=1', 'CID=12345678', 'parentCID=ffffffff', `createType="${createType}"`, '', ...extents, ''].join('\n');
}

describe('vmdk stream-optimized footer', () => {
  it('a grain directory given by the footer (gdOffset = GD_AT_END) reads as qemu-img reads it', async () => {
    const src = path.join(dir, 'footsrc.raw');
    qemuImg(['create', '-q', '-f', 'raw', src, '2M']);
    qemuIo(src, ['write -P 0x61 0 64k', 'write -P 0x62 1M 128k'], 'raw');
    const f = path.join(dir, 'foot.vmdk');
    qemuImg(['convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', src, f]);
    const header = Buffer.alloc(512);
    const fd = fs.openSync(f, 'r+');
    fs.readSync(fd, header, 0, 512, 0);
    const size = fs.statSync(f).size;
    const footerMarker = Buffer.alloc(512);
    footerMarker.writeUInt32LE(1, 0); // val: one sector of metadata follows
    footerMarker.writeUInt32LE(3, 12); // MARKER_FOOTER
    fs.writeSync(fd, Buffer.concat([footerMarker, header, Buffer.alloc(512)]), 0, 1536, size);
    fs.writeSync(fd, Buffer.alloc(8, 0xff), 0, 8, 56); // the header's gdOffset: at end
    fs.closeSync(fd);
    const bs = await openImage(st, f, { readOnly: true });
    const buf = new Uint8Array(2 << 20);
    try {
      await bdrvPread(bs, 0, buf.length, buf);
    } finally {
      await closeNode(bs);
    }
    const out = path.join(dir, 'foot.raw');
    qemuImg(['convert', '-O', 'raw', f, out]);
    expect(Buffer.from(buf).equals(fs.readFileSync(out))).toBe(true);
    expect(Buffer.from(buf).equals(fs.readFileSync(src))).toBe(true);
  });

  it('a footer without its markers is refused as an invalid footer', async () => {
    const f = makeSparse(['subformat=streamOptimized'], '1M');
    poke(f, 56, new Array(8).fill(0xff));
    expect((await openErr(f)).message).toMatch(/Invalid footer at 0x[0-9a-f]+/);
    expect(qemuImgRun(['info', f]).stderr).toContain('Invalid footer');
  });
});
