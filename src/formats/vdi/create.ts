/**
 * Creating a VDI image (QEMU's vdi_co_do_create): header, block map and, for
 * a static image (`static=on`, or preallocation=metadata), every block
 * allocated in order with the file grown to its full size.
 */
import { BlockError, hex } from '../../block/errors.js';
import type { BlockNode } from '../../block/node.js';
import type { ImageCreateRequest } from '../../block/driver.js';
import { optBool, type OptionDesc } from '../../block/options.js';
import { bdrvPwrite, bdrvTruncate } from '../../block/io.js';
import { randomUuid } from '../on-disk.js';
import {
  serializeVdiBlockMap,
  serializeVdiHeader,
  VDI_DEFAULT_BLOCK_SIZE,
  VDI_DISK_SIZE_MAX,
  VDI_SECTOR_SIZE,
  VDI_SIGNATURE,
  VDI_TEXT,
  VDI_TYPE_DYNAMIC,
  VDI_TYPE_STATIC,
  VDI_UNALLOCATED,
  VDI_VERSION_1_1,
} from './header.js';

export interface VdiCreateOptions {
  /** Virtual size in bytes. */
  size: number;
  /** A static (preallocated) image. */
  static?: boolean;
}

/** A random UUID in VirtualBox's layout (the first three fields little-endian). */
function vdiUuid(): Uint8Array {
  const u = randomUuid();
  u.subarray(0, 4).reverse();
  u.subarray(4, 6).reverse();
  u.subarray(6, 8).reverse();
  return u;
}

/** Writes a new VDI image into the empty protocol node `file`. */
export async function createVdi(file: BlockNode, o: VdiCreateOptions): Promise<void> {
  const bytes = o.size;
  if (!Number.isSafeInteger(bytes) || bytes < 0) throw new BlockError('EINVAL', `Invalid VDI image size ${bytes}`);
  if (bytes > VDI_DISK_SIZE_MAX) {
    throw new BlockError('ENOTSUP', `Unsupported VDI image size (size is ${hex(bytes)}, max supported is ${hex(VDI_DISK_SIZE_MAX)})`);
  }
  const blockSize = VDI_DEFAULT_BLOCK_SIZE;
  const blocks = Math.ceil(bytes / blockSize);
  const bmapSize = Math.ceil((blocks * 4) / VDI_SECTOR_SIZE) * VDI_SECTOR_SIZE;
  const isStatic = o.static === true;
  const offsetData = 0x200 + bmapSize;
  const text = new Uint8Array(64);
  text.set(new TextEncoder().encode(VDI_TEXT));
  const header = serializeVdiHeader({
    text,
    signature: VDI_SIGNATURE,
    version: VDI_VERSION_1_1,
    headerSize: 0x180,
    imageType: isStatic ? VDI_TYPE_STATIC : VDI_TYPE_DYNAMIC,
    imageFlags: 0,
    description: new Uint8Array(256),
    offsetBmap: 0x200,
    offsetData,
    cylinders: 0,
    heads: 0,
    sectors: 0,
    sectorSize: VDI_SECTOR_SIZE,
    diskSize: bytes,
    blockSize,
    blockExtra: 0,
    blocksInImage: blocks,
    blocksAllocated: isStatic ? blocks : 0,
    uuidImage: vdiUuid(),
    uuidLastSnap: vdiUuid(),
    uuidLink: new Uint8Array(16),
    uuidParent: new Uint8Array(16),
  });
  await bdrvPwrite(file, 0, header.length, header);
  if (bmapSize) {
    const bmap = new Uint32Array(bmapSize / 4);
    for (let i = 0; i < blocks; i++) bmap[i] = isStatic ? i : VDI_UNALLOCATED;
    await bdrvPwrite(file, 0x200, bmapSize, serializeVdiBlockMap(bmap, 0, bmap.length));
  }
  if (isStatic) await bdrvTruncate(file, offsetData + blocks * blockSize);
}

/** QEMU's vdi_create_opts, in table order. */
export const VDI_CREATE_OPTS: readonly OptionDesc[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'static', type: 'bool', help: 'VDI static (pre-allocated) image', def: 'off', qapi: false },
];

/** The driver's `create` hook (qemu-img create -f vdi, convert -O vdi). */
export function vdiCreateImage(file: BlockNode, req: ImageCreateRequest): Promise<void> {
  const size = req.origin === 'qemu-img' ? Math.ceil(req.size / VDI_SECTOR_SIZE) * VDI_SECTOR_SIZE : req.size;
  return createVdi(file, { size, static: optBool(req.values, 'static') ?? false });
}
