/**
 * The `vdi` format driver (VirtualBox Disk Image), read and write.
 *
 * A VDI image is a header, a block map and data blocks of 1 MiB. The block
 * map has one entry per guest block: the index of the data block that holds
 * it (data lives at offset_data + index × block_size), or "unallocated" /
 * "discarded", both of which read as zeros. A static image has every block
 * allocated at creation, in order.
 *
 * As QEMU's block/vdi.c: probing needs the signature, open refuses what QEMU
 * refuses (with its limits: 1 MiB blocks, 512-byte sectors, no link/parent
 * UUID), an unallocated block answers block status as ZERO (allocated, so the
 * map shows it present), and static images ask the generic layer to look at
 * the file (BDRV_BLOCK_RECURSE) so holes there read as zeros in `map`. QEMU
 * trusts block map entries; we check each one we use against blocks_in_image
 * and the file's end, so a broken map fails with one clear error.
 *
 * Writes (QEMU's order): a new block is written whole (zeros around the
 * guest data), then the header (blocks_allocated), then the block map sectors
 * that changed — a crash leaves at worst an unreferenced block.
 */
import { BlockError, hex } from '../../block/errors.js';
import { type BlockDriver, type CheckReport, type CheckResult, type DriverInfo } from '../../block/driver.js';
import type { BlockNode } from '../../block/node.js';
import { bdrvPread, bdrvPwrite } from '../../block/io.js';
import { BDRV_BLOCK_DATA, BDRV_BLOCK_OFFSET_VALID, BDRV_BLOCK_RECURSE, BDRV_BLOCK_ZERO } from '../../block/status.js';
import { checkDataInFile, readStructure } from '../on-disk.js';
import { VDI_CREATE_OPTS, vdiCreateImage } from './create.js';
import {
  parseVdiHeader,
  serializeVdiHeader,
  VDI_BLOCKS_IN_IMAGE_MAX,
  VDI_DEFAULT_BLOCK_SIZE,
  VDI_DISK_SIZE_MAX,
  VDI_HEADER_BYTES,
  VDI_SECTOR_SIZE,
  VDI_SIGNATURE,
  VDI_TYPE_STATIC,
  VDI_VERSION_1_1,
  vdiIsAllocated,
  type VdiHeader,
} from './header.js';
import { vdiProbe } from './probe.js';
import { VdiBlockMap } from './block-map.js';

interface VdiState {
  image: string;
  file: BlockNode;
  header: VdiHeader;
  blockSize: number;
  bmap: VdiBlockMap;
  /** Serializes allocating writes (header and block map updates). */
  lock: Promise<void>;
}

function st(bs: BlockNode): VdiState {
  return bs.state<VdiState>();
}

function isNull(u: Uint8Array): boolean {
  return u.every((x) => x === 0);
}

/** QEMU's checks, in QEMU's order, with its messages prefixed by the image name. */
function validate(image: string, h: VdiHeader): void {
  const unsupported = (why: string) => new BlockError('ENOTSUP', `${image}: unsupported VDI image (${why})`);
  if (h.diskSize > VDI_DISK_SIZE_MAX) {
    throw new BlockError('ENOTSUP', `${image}: Unsupported VDI image size (size is ${hex(h.diskSize)}, max supported is ${hex(VDI_DISK_SIZE_MAX)})`);
  }
  if (h.signature !== VDI_SIGNATURE) {
    throw new BlockError('EINVAL', `${image}: Image not in VDI format (bad signature ${h.signature.toString(16).padStart(8, '0')})`);
  }
  if (h.version !== VDI_VERSION_1_1) throw unsupported(`version ${h.version >>> 16}.${h.version & 0xffff}`);
  if (h.offsetBmap % VDI_SECTOR_SIZE) throw unsupported(`unaligned block map offset ${hex(h.offsetBmap)}`);
  if (h.offsetData % VDI_SECTOR_SIZE) throw unsupported(`unaligned data offset ${hex(h.offsetData)}`);
  if (h.sectorSize !== VDI_SECTOR_SIZE) throw unsupported(`sector size ${h.sectorSize} is not ${VDI_SECTOR_SIZE}`);
  if (h.blockSize !== VDI_DEFAULT_BLOCK_SIZE) throw unsupported(`block size ${h.blockSize} is not ${VDI_DEFAULT_BLOCK_SIZE}`);
  const room = h.blocksInImage * h.blockSize;
  if (Math.ceil(h.diskSize / VDI_SECTOR_SIZE) * VDI_SECTOR_SIZE > room) {
    throw unsupported(`disk size ${h.diskSize}, image bitmap has room for ${room}`);
  }
  if (!isNull(h.uuidLink)) throw unsupported('non-NULL link UUID');
  if (!isNull(h.uuidParent)) throw unsupported('non-NULL parent UUID');
  if (h.blocksInImage > VDI_BLOCKS_IN_IMAGE_MAX) throw unsupported(`too many blocks ${h.blocksInImage}, max is ${VDI_BLOCKS_IN_IMAGE_MAX}`);
}

/** Host offset of guest `offset` inside allocated block map entry `entry`, checked against the image. */
function hostOffset(s: VdiState, index: number, entry: number, inBlock: number): number {
  if (entry >= s.header.blocksInImage) {
    throw new BlockError(
      'ECORRUPT',
      `${s.image}: block map entry ${index} (at ${hex(s.header.offsetBmap + index * 4)}) points at block ${entry}, beyond the ${s.header.blocksInImage} blocks of the image`,
    );
  }
  return s.header.offsetData + entry * s.blockSize + inBlock;
}

/** Runs `fn` after every earlier allocating write finished. */
function locked(s: VdiState, fn: () => Promise<void>): Promise<void> {
  const next = s.lock.then(fn);
  s.lock = next.catch(() => {});
  return next;
}

export const vdiDriver: BlockDriver = {
  name: 'vdi',
  kind: 'format',
  createOptions: VDI_CREATE_OPTS,
  create: vdiCreateImage,

  probe: vdiProbe,

  async open(bs) {
    const file = bs.file!.node;
    const image = bs.filename;
    const header = parseVdiHeader(await readStructure(file, image, 'VDI header', 0, VDI_HEADER_BYTES));
    validate(image, header);
    // Odd sizes ('VBoxManage convertfromraw') round up to a sector, as in QEMU.
    const diskSize = Math.ceil(header.diskSize / VDI_SECTOR_SIZE) * VDI_SECTOR_SIZE;
    // Only the entries that cover the disk are used; reading those bounds memory by the disk size and the file.
    const entries = Math.min(header.blocksInImage, Math.ceil(diskSize / header.blockSize));
    // QEMU reads a map that runs past the end of the file as zeros there; only the part inside the file is read.
    const inFile = Math.max(0, Math.min(entries * 4, Math.floor((file.totalBytes - header.offsetBmap) / 4) * 4));
    const raw = inFile ? await readStructure(file, image, 'VDI block map', header.offsetBmap, inFile) : new Uint8Array(0);
    bs.opaque = {
      image,
      file,
      header,
      blockSize: header.blockSize,
      bmap: new VdiBlockMap(raw, entries),
      lock: Promise.resolve(),
    } satisfies VdiState;
    bs.totalBytes = diskSize;
  },

  /**
   * Runs of blocks that lie one after the other in the file are read with one
   * request, and runs of unallocated blocks are one fill: a 2 MiB read of a
   * converted image is one pread, not one per 1 MiB block. Each block is
   * checked (map entry, end of file) as it joins a run, so a bad entry fails
   * with the same message whatever the request's size.
   */
  async preadv(bs, offset, bytes, buf) {
    const s = st(bs);
    const bsz = s.blockSize;
    let done = 0;
    while (done < bytes) {
      const off = offset + done;
      let index = Math.floor(off / bsz);
      const entry = s.bmap.get(index)!;
      let n = Math.min(bytes - done, bsz - (off % bsz));
      if (!vdiIsAllocated(entry)) {
        while (done + n < bytes && !vdiIsAllocated(s.bmap.get(++index)!)) n += Math.min(bytes - done - n, bsz);
        buf.fill(0, done, done + n);
      } else {
        const host = hostOffset(s, index, entry, off % bsz);
        checkDataInFile(s.file, s.image, `VDI block ${entry}`, off, host, n);
        for (let next = entry + 1; done + n < bytes && s.bmap.get(++index) === next; next++) {
          const k = Math.min(bytes - done - n, bsz);
          checkDataInFile(s.file, s.image, `VDI block ${next}`, off + n, hostOffset(s, index, next, 0), k);
          n += k;
        }
        await bdrvPread(s.file, host, n, buf.subarray(done, done + n));
      }
      done += n;
    }
  },

  async blockStatus(bs, _wantZero, offset, bytes) {
    const s = st(bs);
    const index = Math.floor(offset / s.blockSize);
    const inBlock = offset % s.blockSize;
    const entry = s.bmap.get(index)!;
    // Runs of blocks with the same answer are merged (qemu-img map merges them too).
    let pnum = Math.min(bytes, s.blockSize - inBlock);
    if (!vdiIsAllocated(entry)) {
      for (let i = index + 1; pnum < bytes && !vdiIsAllocated(s.bmap.get(i)!); i++) pnum = Math.min(bytes, pnum + s.blockSize);
      return { status: BDRV_BLOCK_ZERO, pnum };
    }
    const map = hostOffset(s, index, entry, inBlock);
    for (let i = index + 1, e = entry + 1; pnum < bytes && s.bmap.get(i) === e && e < s.header.blocksInImage; i++, e++) {
      pnum = Math.min(bytes, pnum + s.blockSize);
    }
    const recurse = s.header.imageType === VDI_TYPE_STATIC ? BDRV_BLOCK_RECURSE : 0;
    return { status: BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID | recurse, pnum, map, file: s.file };
  },

  async pwritev(bs, offset, bytes, buf) {
    const s = st(bs);
    await locked(s, () => vdiWrite(s, offset, bytes, buf));
  },

  getDriverInfo(bs): DriverInfo {
    return { clusterSize: st(bs).blockSize, isDirty: false };
  },

  async check(bs, fix, report) {
    if (fix.leaks || fix.errors) throw new BlockError('ENOTSUP', 'This image format does not support checks');
    return vdiCheck(st(bs), report);
  },
};

/**
 * QEMU's vdi_co_check: every allocated entry must name a block inside the
 * image, no block may be used twice, and blocks_allocated must match. (The
 * entries beyond the disk size, which open does not load, are not checked.)
 */
function vdiCheck(s: VdiState, report: CheckReport): CheckResult {
  const r: CheckResult = { corruptions: 0, leaks: 0, checkErrors: 0, corruptionsFixed: 0, leaksFixed: 0 };
  // One bit per block of the image (entries past blocksInImage are refused first): a bounded set, 1/32 of the block map.
  const used = new Uint8Array(Math.ceil(s.header.blocksInImage / 8));
  let allocated = 0;
  for (let block = 0; block < s.bmap.length; block++) {
    const entry = s.bmap.get(block)!;
    if (!vdiIsAllocated(entry)) continue;
    if (entry >= s.header.blocksInImage) {
      report(`ERROR: block index ${block} too large, is ${entry}`);
      r.corruptions++;
      continue;
    }
    allocated++;
    // QEMU's check keeps the entry itself as the block's owner, so both numbers are the entry.
    if (used[entry >>> 3]! & (1 << (entry & 7))) {
      report(`ERROR: block index ${entry} also used by ${entry}`);
      r.corruptions++;
    } else {
      used[entry >>> 3]! |= 1 << (entry & 7);
    }
  }
  if (allocated !== s.header.blocksAllocated) {
    report(`ERROR: allocated blocks mismatch, is ${allocated}, should be ${s.header.blocksAllocated}`);
    r.corruptions++;
  }
  return r;
}

async function vdiWrite(s: VdiState, offset: number, bytes: number, buf: Uint8Array): Promise<void> {
  let first = -1;
  let last = -1;
  let done = 0;
  try {
    while (done < bytes) {
      const off = offset + done;
      const index = Math.floor(off / s.blockSize);
      const inBlock = off % s.blockSize;
      const n = Math.min(bytes - done, s.blockSize - inBlock);
      const data = buf.subarray(done, done + n);
      let entry = s.bmap.get(index)!;
      if (vdiIsAllocated(entry)) {
        const host = hostOffset(s, index, entry, inBlock);
        // A block past the end of the file (a crafted data offset) would grow the file to it: refused.
        if (host >= s.file.totalBytes) {
          throw new BlockError('ECORRUPT', `${s.image}: block map entry ${index} (at ${hex(s.header.offsetBmap + index * 4)}) points at ${hex(host)}, past the end of the file (${s.file.totalBytes} bytes)`);
        }
        await bdrvPwrite(s.file, host, n, data);
      } else {
        entry = s.header.blocksAllocated;
        if (entry >= s.header.blocksInImage) {
          throw new BlockError('ECORRUPT', `${s.image}: VDI header blocks_allocated (${entry}) leaves no free block for block map entry ${index}`);
        }
        if (s.header.offsetData + entry * s.blockSize > s.file.totalBytes) {
          // QEMU appends blocks at the end of the data area, which is never past the end of the file.
          throw new BlockError('ECORRUPT', `${s.image}: VDI data offset ${hex(s.header.offsetData)} and blocks_allocated (${entry}) put a new block at ${hex(s.header.offsetData + entry * s.blockSize)}, past the end of the file (${s.file.totalBytes} bytes)`);
        }
        const block = new Uint8Array(s.blockSize);
        block.set(data, inBlock);
        await bdrvPwrite(s.file, s.header.offsetData + entry * s.blockSize, s.blockSize, block);
        s.bmap.set(index, entry);
        s.header.blocksAllocated++;
        if (first < 0) first = index;
        last = index;
      }
      done += n;
    }
  } finally {
    if (first >= 0) {
      await bdrvPwrite(s.file, 0, VDI_HEADER_BYTES, serializeVdiHeader(s.header));
      const count = last - first + 1;
      await bdrvPwrite(s.file, s.header.offsetBmap + first * 4, count * 4, s.bmap.serialize(first, count));
    }
  }
}

