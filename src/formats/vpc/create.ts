/**
 * Creating a VHD image (QEMU's vpc_co_create): the footer with the CHS
 * geometry that covers the size (or the maximum geometry and the exact size
 * with force_size, creator_app "qem2"), then either the raw data area and
 * the footer (fixed) or the footer copy, dynamic disk header, an empty BAT
 * and the trailing footer (dynamic, 2 MiB blocks).
 */
import { BlockError } from '../../block/errors.js';
import type { BlockNode } from '../../block/node.js';
import type { ImageCreateRequest } from '../../block/driver.js';
import { optBool, type OptionDesc } from '../../block/options.js';
import { bdrvPwrite, bdrvTruncate } from '../../block/io.js';
import { randomUuid } from '../on-disk.js';
import {
  serializeVhdDynHeader,
  serializeVhdFooter,
  VHD_DYNAMIC,
  VHD_FIXED,
  VHD_FOOTER_BYTES,
  VHD_TIMESTAMP_BASE,
} from './footer.js';
import { createGeometry, VHD_MAX_GEOMETRY, VHD_MAX_SECTORS } from './geometry.js';

export interface VpcCreateOptions {
  size: number;
  subformat?: 'dynamic' | 'fixed';
  /** Keep the size as given (current_size) instead of rounding it to a CHS geometry. */
  forceSize?: boolean;
}

const DYNAMIC_BLOCK_SIZE = 0x200000;
const ALL_ONES = 2 ** 64;
const BAT_OFFSET = 3 * 512;

/** Writes a new VHD image into the empty protocol node `file`. */
export async function createVpc(file: BlockNode, o: VpcCreateOptions): Promise<void> {
  const fixed = o.subformat === 'fixed';
  const forceSize = o.forceSize === true;
  if (!Number.isSafeInteger(o.size) || o.size < 0) throw new BlockError('EINVAL', `Invalid VHD image size ${o.size}`);
  const g = createGeometry(o.size, forceSize);
  if (g.cylinders * g.heads * g.sectorsPerTrack === VHD_MAX_GEOMETRY && g.totalSectors > VHD_MAX_SECTORS) {
    throw new BlockError('EFBIG', 'Disk size is too large, max size is 2040 GiB');
  }
  // With force_size the footer keeps the size asked for; otherwise the geometry's.
  const totalSize = forceSize ? o.size : g.totalSectors * 512;
  const footer = serializeVhdFooter({
    cookie: 'conectix',
    features: 2,
    fileFormatVersion: 0x00010000,
    dataOffset: fixed ? ALL_ONES : 512,
    timeStamp: (Math.floor(Date.now() / 1000) - VHD_TIMESTAMP_BASE) >>> 0,
    creatorApp: forceSize ? 'qem2' : 'qemu',
    creatorVersion: 0x00050003,
    creatorHostOs: 'Wi2k',
    originalSize: totalSize,
    currentSize: totalSize,
    cylinders: g.cylinders,
    heads: g.heads,
    sectorsPerTrack: g.sectorsPerTrack,
    diskType: fixed ? VHD_FIXED : VHD_DYNAMIC,
    checksum: 0,
    uniqueId: randomUuid(),
    savedState: 0,
  });
  if (fixed) {
    await bdrvTruncate(file, totalSize);
    await bdrvPwrite(file, totalSize, VHD_FOOTER_BYTES, footer);
    return;
  }
  const entries = Math.ceil(g.totalSectors / (DYNAMIC_BLOCK_SIZE / 512));
  const batBytes = Math.ceil((entries * 4) / 512) * 512;
  await bdrvPwrite(file, 0, VHD_FOOTER_BYTES, footer);
  const dyn = serializeVhdDynHeader({
    cookie: 'cxsparse',
    dataOffset: ALL_ONES,
    tableOffset: BAT_OFFSET,
    headerVersion: 0x00010000,
    maxTableEntries: entries,
    blockSize: DYNAMIC_BLOCK_SIZE,
    checksum: 0,
    parentUniqueId: new Uint8Array(16),
    parentTimeStamp: 0,
    rest: new Uint8Array(1024 - 64),
  });
  await bdrvPwrite(file, 512, dyn.length, dyn);
  if (batBytes) await bdrvPwrite(file, BAT_OFFSET, batBytes, new Uint8Array(batBytes).fill(0xff));
  await bdrvPwrite(file, BAT_OFFSET + batBytes, VHD_FOOTER_BYTES, footer);
}

/** QEMU's vpc_create_opts, in table order. */
export const VPC_CREATE_OPTS: readonly OptionDesc[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'subformat', type: 'str', help: 'Type of virtual hard disk format. Supported formats are {dynamic (default) | fixed} ', qapi: { enum: ['dynamic', 'fixed'] } },
  { name: 'force_size', type: 'bool', help: 'Force disk size calculation to use the actual size specified, rather than using the nearest CHS-based calculation' },
];

/** The driver's `create` hook (qemu-img create -f vpc, convert -O vpc). */
export function vpcCreateImage(file: BlockNode, req: ImageCreateRequest): Promise<void> {
  const sub = req.values.get('subformat') ?? 'dynamic';
  if (sub !== 'dynamic' && sub !== 'fixed') throw new BlockError('EINVAL', `Parameter 'subformat' does not accept value '${sub}'`);
  const size = req.origin === 'qemu-img' ? Math.ceil(req.size / 512) * 512 : req.size;
  return createVpc(file, { size, subformat: sub, forceSize: optBool(req.values, 'force_size') ?? false });
}
