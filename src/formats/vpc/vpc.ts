/**
 * The `vpc` format driver (Microsoft VHD), read and write.
 *
 * A fixed VHD is the raw disk followed by a 512-byte footer; a dynamic VHD
 * has a footer copy at offset 0, a dynamic disk header, a block allocation
 * table (BAT) and blocks of 2 MiB, each preceded by a sector bitmap. As QEMU
 * (block/vpc.c): the bitmap is ignored when reading (an allocated block is
 * read whole), unallocated blocks read as zeros and answer block status as
 * ZERO, a differencing disk is read like a dynamic one (no parent), and the
 * virtual size follows the CHS geometry or current_size by creator_app
 * (geometry.ts). Probing finds only images with a footer copy at offset 0, so
 * fixed images open as raw unless `-f vpc` is given — exactly as qemu-img.
 *
 * Writes to a dynamic image that need a new block append it where the footer
 * was: the block's bitmap (all ones), then the footer after the block, then
 * the BAT entry — QEMU's order, so a crash leaves at worst an unused block.
 */
import { BlockError, hex } from '../../block/errors.js';
import { type BlockDriver, type DriverInfo } from '../../block/driver.js';
import type { BlockNode } from '../../block/node.js';
import { bdrvPread, bdrvPwrite, bdrvPwriteZeroes } from '../../block/io.js';
import { BDRV_BLOCK_DATA, BDRV_BLOCK_OFFSET_VALID, BDRV_BLOCK_RECURSE, BDRV_BLOCK_ZERO } from '../../block/status.js';
import { readStructure } from '../on-disk.js';
import { VPC_CREATE_OPTS, vpcCreateImage } from './create.js';
import {
  parseVhdBat,
  parseVhdDynHeader,
  parseVhdFooter,
  serializeVhdBat,
  serializeVhdFooter,
  VHD_BAT_UNALLOCATED,
  VHD_DYN_HEADER_BYTES,
  VHD_FIXED,
  VHD_FOOTER_BYTES,
  vhdChecksum,
  type VhdFooter,
} from './footer.js';
import { VHD_MAX_SECTORS, vpcVirtualSectors } from './geometry.js';
import { vpcProbe } from './probe.js';

interface VpcState {
  image: string;
  file: BlockNode;
  footer: VhdFooter;
  fixed: boolean;
  blockSize: number;
  bitmapSize: number;
  batOffset: number;
  bat: Uint32Array;
  /** Where the next new block goes (the trailing footer sits there). */
  freeDataBlockOffset: number;
  lock: Promise<void>;
}

function st(bs: BlockNode): VpcState {
  return bs.state<VpcState>();
}

/** Host offset of guest `offset`, or -1 when its block is not allocated. */
function imageOffset(s: VpcState, offset: number): number {
  const index = Math.floor(offset / s.blockSize);
  if (index >= s.bat.length || s.bat[index] === VHD_BAT_UNALLOCATED) return -1;
  return s.bat[index]! * 512 + s.bitmapSize + (offset % s.blockSize);
}

function sizeCalcOption(bs: BlockNode, options: Record<string, unknown>): 'chs' | 'current_size' | undefined {
  const v = options['force_size_calc'];
  if (v === undefined || v === 'none') return undefined;
  if (v === 'chs' || v === 'current_size') return v;
  throw new BlockError('EINVAL', `${bs.filename}: Invalid value '${String(v)}' for vpc option 'force_size_calc' (expected none, chs or current_size)`);
}

export const vpcDriver: BlockDriver = {
  name: 'vpc',
  kind: 'format',
  createOptions: VPC_CREATE_OPTS,
  create: vpcCreateImage,

  probe: vpcProbe,

  async open(bs, options) {
    const file = bs.file!.node;
    const image = bs.filename;
    const fileSize = file.totalBytes;
    const invalid = (why: string, code: 'EINVAL' | 'EFBIG' = 'EINVAL') => new BlockError(code, `${image}: ${why}`);

    let footerOffset = 0;
    let raw: Uint8Array = new Uint8Array(VHD_FOOTER_BYTES);
    await bdrvPread(file, 0, Math.min(VHD_FOOTER_BYTES, fileSize), raw);
    let footer = parseVhdFooter(raw);
    if (footer.cookie !== 'conectix') {
      // A fixed disk has its footer only at the end.
      if (fileSize < VHD_FOOTER_BYTES) throw invalid('File too small for a VHD header');
      footerOffset = fileSize - VHD_FOOTER_BYTES;
      raw = await readStructure(file, image, 'VHD footer', footerOffset, VHD_FOOTER_BYTES);
      footer = parseVhdFooter(raw);
      if (footer.cookie !== 'conectix' || footer.diskType !== VHD_FIXED) throw invalid('invalid VPC image');
    }
    if (vhdChecksum(raw, 64) !== footer.checksum) throw invalid(`Incorrect header checksum (VHD footer at ${hex(footerOffset)})`);

    const sectors = vpcVirtualSectors(footer, sizeCalcOption(bs, options));
    if (sectors > VHD_MAX_SECTORS) throw invalid('Disk size is too large', 'EFBIG');

    const s: VpcState = {
      image,
      file,
      footer,
      fixed: footer.diskType === VHD_FIXED,
      blockSize: 0,
      bitmapSize: 0,
      batOffset: 0,
      bat: new Uint32Array(0),
      freeDataBlockOffset: 0,
      lock: Promise.resolve(),
    };
    if (!s.fixed) {
      const dyn = parseVhdDynHeader(await readStructure(file, image, 'VHD dynamic disk header', footer.dataOffset, VHD_DYN_HEADER_BYTES));
      if (dyn.cookie !== 'cxsparse') throw invalid(`Invalid header magic (VHD dynamic disk header at ${hex(footer.dataOffset)})`);
      const bsz = dyn.blockSize;
      if (bsz < 512 || (bsz & (bsz - 1)) !== 0) throw invalid(`Invalid block size ${bsz}`);
      s.blockSize = bsz;
      s.bitmapSize = Math.ceil(bsz / (8 * 512) / 512) * 512;
      if (Math.floor((sectors * 512) / bsz) > 0xffffffff) throw invalid('Too many blocks');
      if (dyn.maxTableEntries * bsz < sectors * 512) throw invalid('Page table too small');
      if (dyn.maxTableEntries > 0x7fffffff / 4) throw invalid(`Max Table Entries too large (${dyn.maxTableEntries | 0})`);
      s.batOffset = dyn.tableOffset;
      const batBytes = dyn.maxTableEntries * 4;
      s.bat = parseVhdBat(await readStructure(file, image, 'VHD block allocation table', dyn.tableOffset, batBytes), dyn.maxTableEntries);
      let free = Math.ceil((dyn.tableOffset + batBytes) / 512) * 512;
      let worst = -1;
      for (let i = 0; i < s.bat.length; i++) {
        if (s.bat[i] === VHD_BAT_UNALLOCATED) continue;
        const next = s.bat[i]! * 512 + s.bitmapSize + bsz;
        if (next > free) {
          free = next;
          worst = i;
        }
      }
      if (free > fileSize) {
        const where = worst >= 0 ? `BAT entry ${worst} (at ${hex(dyn.tableOffset + worst * 4)}) points at a block` : 'the block allocation table';
        throw invalid(`${where} ending at ${hex(free)}, after the end of the file (${fileSize} bytes): the image has been truncated`);
      }
      s.freeDataBlockOffset = free;
    }
    bs.opaque = s;
    bs.totalBytes = sectors * 512;
  },

  async preadv(bs, offset, bytes, buf) {
    const s = st(bs);
    if (s.fixed) return bdrvPread(s.file, offset, bytes, buf);
    let done = 0;
    while (done < bytes) {
      const off = offset + done;
      const n = Math.min(bytes - done, s.blockSize - (off % s.blockSize));
      const host = imageOffset(s, off);
      const out = buf.subarray(done, done + n);
      if (host < 0) out.fill(0);
      else await bdrvPread(s.file, host, n, out);
      done += n;
    }
  },

  async blockStatus(bs, _wantZero, offset, bytes) {
    const s = st(bs);
    // Fixed: the data is the file's; QEMU lets the file say where it reads as zeros (RECURSE).
    if (s.fixed) return { status: BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID | BDRV_BLOCK_RECURSE, pnum: bytes, map: offset, file: s.file };
    let pnum = 0;
    let off = offset;
    // Unallocated blocks merge; an allocated block ends the answer (its bitmap separates it from the next).
    for (;;) {
      const host = imageOffset(s, off);
      const n = Math.min(bytes - pnum, s.blockSize - (off % s.blockSize));
      if (host >= 0) {
        if (pnum > 0) return { status: BDRV_BLOCK_ZERO, pnum };
        return { status: BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID, pnum: n, map: host, file: s.file };
      }
      pnum += n;
      off += n;
      if (pnum >= bytes) return { status: BDRV_BLOCK_ZERO, pnum };
    }
  },

  async pwritev(bs, offset, bytes, buf) {
    const s = st(bs);
    if (s.fixed) return bdrvPwrite(s.file, offset, bytes, buf);
    const next = s.lock.then(() => vpcWrite(bs, s, offset, bytes, buf));
    s.lock = next.catch(() => {});
    return next;
  },

  getDriverInfo(bs): DriverInfo {
    const s = st(bs);
    return s.fixed ? { isDirty: false } : { clusterSize: s.blockSize, isDirty: false };
  },
};

/** Appends a block for guest `offset` (QEMU's alloc_block order) and returns its host offset. */
async function allocBlock(bs: BlockNode, s: VpcState, offset: number): Promise<number> {
  const index = Math.floor(offset / s.blockSize);
  if (index >= s.bat.length) {
    throw new BlockError('ECORRUPT', `${s.image}: guest offset ${hex(offset)} has no entry in the VHD block allocation table (${s.bat.length} entries)`);
  }
  const at = s.freeDataBlockOffset;
  if (at % 512 || at / 512 >= VHD_BAT_UNALLOCATED) throw new BlockError('EFBIG', `${s.image}: no room for a new VHD block at ${hex(at)}`);
  await bdrvPwrite(s.file, at, s.bitmapSize, new Uint8Array(s.bitmapSize).fill(0xff));
  // The block's data area between bitmap and footer must read as zeros.
  await bdrvPwriteZeroes(s.file, at + s.bitmapSize, s.blockSize);
  s.freeDataBlockOffset = at + s.bitmapSize + s.blockSize;
  await bdrvPwrite(s.file, s.freeDataBlockOffset, VHD_FOOTER_BYTES, serializeVhdFooter(s.footer));
  s.bat[index] = at / 512;
  await bdrvPwrite(s.file, s.batOffset + index * 4, 4, serializeVhdBat(s.bat, index, 1));
  return imageOffset(s, offset);
}

async function vpcWrite(bs: BlockNode, s: VpcState, offset: number, bytes: number, buf: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes) {
    const off = offset + done;
    const n = Math.min(bytes - done, s.blockSize - (off % s.blockSize));
    let host = imageOffset(s, off);
    if (host < 0) host = await allocBlock(bs, s, off);
    await bdrvPwrite(s.file, host, n, buf.subarray(done, done + n));
    done += n;
  }
}

