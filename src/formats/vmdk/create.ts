/**
 * Creating VMDK images with QEMU's layout (block/vmdk.c vmdk_init_extent and
 * the descriptor template), so qemu-img and VMware read them:
 *
 *   monolithicSparse: sector 0 header · sectors 1-20 descriptor · redundant
 *     grain directory and its grain tables · grain directory and its grain
 *     tables (all tables preallocated, empty) · grains from a 64 KiB boundary
 *   monolithicFlat: a descriptor file plus NAME-flat.vmdk of the full size
 *
 * Options are qemu-img's: subformat, adapter_type (ide, lsilogic, buslogic,
 * legacyESX), hwversion, toolsversion, zeroed_grain, backing_file (a VMDK
 * whose CID becomes our parentCID). A plain function for now; it becomes the
 * driver's `create` hook when the contract has one.
 */
import { BlockError } from '../../block/errors.js';
import type { Storage } from '../../block/open.js';
import { openImage, closeNode, pathCombine } from '../../block/open.js';
import { bdrvPwrite, bdrvTruncate, bdrvFlush } from '../../block/io.js';
import {
  SECTOR_SIZE,
  serializeSparseExtentHeader,
  VMDK4_FLAG_NL_DETECT,
  VMDK4_FLAG_RGD,
  VMDK4_FLAG_ZERO_GRAIN,
  VMDK4_MAGIC,
} from './sparse-header.js';

export type VmdkAdapterType = 'ide' | 'lsilogic' | 'buslogic' | 'legacyESX';

export interface VmdkCreateOptions {
  subformat?: 'monolithicSparse' | 'monolithicFlat';
  adapterType?: VmdkAdapterType;
  hwversion?: string;
  toolsversion?: string;
  zeroedGrain?: boolean;
  /** Backing file name as stored (relative to the new image); must be a VMDK. */
  backingFile?: string;
}

const GRANULARITY = 128; // sectors per grain (64 KiB)
const NUM_GTES_PER_GT = 512;
const DESC_OFFSET = 1;
const DESC_SIZE = 20;

/** The sparse extent's header fields and where its tables go (vmdk_init_extent). */
export function sparseLayout(size: number, zeroedGrain: boolean) {
  const capacity = size / SECTOR_SIZE;
  const grains = Math.ceil(capacity / GRANULARITY);
  const gtSize = Math.ceil((NUM_GTES_PER_GT * 4) / SECTOR_SIZE);
  const gtCount = Math.ceil(grains / NUM_GTES_PER_GT);
  const gdSectors = Math.ceil((gtCount * 4) / SECTOR_SIZE);
  const rgdOffset = DESC_OFFSET + DESC_SIZE;
  const gdOffset = rgdOffset + gdSectors + gtSize * gtCount;
  const grainOffset = Math.ceil((gdOffset + gdSectors + gtSize * gtCount) / GRANULARITY) * GRANULARITY;
  return {
    header: {
      magicNumber: VMDK4_MAGIC,
      version: zeroedGrain ? 2 : 1,
      flags: VMDK4_FLAG_RGD | VMDK4_FLAG_NL_DETECT | (zeroedGrain ? VMDK4_FLAG_ZERO_GRAIN : 0),
      capacity,
      grainSize: GRANULARITY,
      descriptorOffset: DESC_OFFSET,
      descriptorSize: DESC_SIZE,
      numGTEsPerGT: NUM_GTES_PER_GT,
      rgdOffset,
      gdOffset,
      overHead: grainOffset,
      uncleanShutdown: 0,
      compressAlgorithm: 0,
    },
    gtSize,
    gtCount,
    gdSectors,
  };
}

/** The grain directory pointing at its `gtCount` tables, which follow it. */
function directory(at: number, gdSectors: number, gtCount: number, gtSize: number): Uint8Array {
  const buf = new Uint8Array(gdSectors * SECTOR_SIZE);
  const dv = new DataView(buf.buffer);
  for (let i = 0; i < gtCount; i++) dv.setUint32(i * 4, at + gdSectors + i * gtSize, true);
  return buf;
}

/** The descriptor text, laid out as QEMU writes it. */
export function vmdkDescriptorText(o: {
  cid: number;
  parentCid: number;
  createType: string;
  parentFileNameHint?: string;
  extentLines: string[];
  hwversion: string;
  capacity: number;
  adapterType: VmdkAdapterType;
  toolsversion: string;
}): string {
  const heads = o.adapterType === 'ide' ? 16 : 255;
  const cylinders = Math.floor(o.capacity / (heads * 63));
  return (
    '# Disk DescriptorFile\n' +
    'version=1\n' +
    `CID=${o.cid.toString(16).padStart(8, '0')}\n` +
    `parentCID=${o.parentCid.toString(16).padStart(8, '0')}\n` +
    `createType="${o.createType}"\n` +
    (o.parentFileNameHint !== undefined ? `parentFileNameHint="${o.parentFileNameHint}"\n` : '') +
    '\n# Extent description\n' +
    o.extentLines.map((l) => l + '\n').join('') +
    '\n# The Disk Data Base\n#DDB\n\n' +
    `ddb.virtualHWVersion = "${o.hwversion}"\n` +
    `ddb.geometry.cylinders = "${cylinders}"\n` +
    `ddb.geometry.heads = "${heads}"\n` +
    'ddb.geometry.sectors = "63"\n' +
    `ddb.adapterType = "${o.adapterType}"\n` +
    `ddb.toolsVersion = "${o.toolsversion}"\n`
  );
}

function ascii(s: string): Uint8Array {
  const b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i) & 0xff;
  return b;
}

/** Creates a VMDK image `filename` of `size` bytes (rounded up to 512) in `storage`. */
export async function createVmdk(storage: Storage, filename: string, size: number, opts: VmdkCreateOptions = {}): Promise<void> {
  const subformat = opts.subformat ?? 'monolithicSparse';
  const adapterType = opts.adapterType ?? 'ide';
  if (!['ide', 'lsilogic', 'buslogic', 'legacyESX'].includes(adapterType)) throw new BlockError('EINVAL', `Invalid adapter type '${adapterType}'. Allowed values: ide, buslogic, lsilogic, legacyESX`);
  if (!Number.isSafeInteger(size) || size < 0) throw new BlockError('EINVAL', `${filename}: invalid size ${size}`);
  size = Math.ceil(size / SECTOR_SIZE) * SECTOR_SIZE;
  if (subformat === 'monolithicSparse' && size / SECTOR_SIZE > 0xffffffff * GRANULARITY) throw new BlockError('EFBIG', `${filename}: size ${size} is too large for a sparse VMDK`);
  if (!storage.createFile) throw new BlockError('ENOTSUP', `${filename}: the ${storage.name} storage cannot create files`);

  let parentCid = 0xffffffff;
  if (opts.backingFile !== undefined) {
    const parent = await openImage(storage, storage.resolve(filename, opts.backingFile), { readOnly: true, backing: false });
    try {
      if (parent.driver.name !== 'vmdk') throw new BlockError('EINVAL', `${filename}: backing_file must be a vmdk image`);
      parentCid = parent.state<{ cid: number }>().cid;
      if (size === 0) size = parent.totalBytes;
    } finally {
      await closeNode(parent);
    }
  }
  const cid = (Math.random() * 0x100000000) >>> 0;
  const common = {
    cid,
    parentCid,
    parentFileNameHint: opts.backingFile,
    hwversion: opts.hwversion ?? '4',
    capacity: size / SECTOR_SIZE,
    adapterType,
    toolsversion: opts.toolsversion ?? '2147483647',
  };
  const base = filename.slice(filename.lastIndexOf('/') + 1);

  if (subformat === 'monolithicFlat') {
    const stem = base.replace(/\.vmdk$/i, '');
    const flatName = `${stem}-flat.vmdk`;
    const flatPath = pathCombine(filename, flatName);
    await storage.createFile(flatPath);
    const flat = await storage.openProtocol(flatPath, { readOnly: false });
    try {
      await bdrvTruncate(flat, size);
    } finally {
      await closeNode(flat);
    }
    const text = vmdkDescriptorText({ ...common, createType: 'monolithicFlat', extentLines: [`RW ${size / SECTOR_SIZE} FLAT "${flatName}" 0`] });
    await storage.createFile(filename);
    const desc = await storage.openProtocol(filename, { readOnly: false });
    try {
      await bdrvPwrite(desc, 0, text.length, ascii(text));
      await bdrvFlush(desc);
    } finally {
      await closeNode(desc);
    }
    return;
  }

  if (subformat !== 'monolithicSparse') throw new BlockError('ENOTSUP', `${filename}: creating subformat '${subformat}' is not supported`);
  const zeroedGrain = opts.zeroedGrain ?? false;
  const l = sparseLayout(size, zeroedGrain);
  const text = vmdkDescriptorText({ ...common, createType: 'monolithicSparse', extentLines: [`RW ${size / SECTOR_SIZE} SPARSE "${base}"`] });
  if (text.length > DESC_SIZE * SECTOR_SIZE) throw new BlockError('EINVAL', `${filename}: the descriptor does not fit its ${DESC_SIZE} sectors`);
  await storage.createFile(filename);
  const file = await storage.openProtocol(filename, { readOnly: false });
  try {
    await bdrvPwrite(file, 0, SECTOR_SIZE, serializeSparseExtentHeader(l.header));
    await bdrvTruncate(file, l.header.overHead * SECTOR_SIZE);
    const rgd = directory(l.header.rgdOffset, l.gdSectors, l.gtCount, l.gtSize);
    await bdrvPwrite(file, l.header.rgdOffset * SECTOR_SIZE, rgd.length, rgd);
    const gd = directory(l.header.gdOffset, l.gdSectors, l.gtCount, l.gtSize);
    await bdrvPwrite(file, l.header.gdOffset * SECTOR_SIZE, gd.length, gd);
    await bdrvPwrite(file, DESC_OFFSET * SECTOR_SIZE, text.length, ascii(text));
    await bdrvFlush(file);
  } finally {
    await closeNode(file);
  }
}
