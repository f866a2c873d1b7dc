/**
 * Creating VMDK images with QEMU's layout (block/vmdk.c vmdk_init_extent and
 * the descriptor template), so qemu-img and VMware read them:
 *
 *   monolithicSparse: sector 0 header · sectors 1-20 descriptor · redundant
 *     grain directory and its grain tables · grain directory and its grain
 *     tables (all tables preallocated, empty) · grains from a 64 KiB boundary
 *   streamOptimized: the same layout, version 3 with the compressed and
 *     marker flags; the driver appends each grain compressed behind a marker
 *   monolithicFlat: a descriptor file plus NAME-flat.vmdk of the full size
 *   twoGbMaxExtentSparse / twoGbMaxExtentFlat: a descriptor file plus one
 *     extent per 2 GiB (NAME-s001.vmdk… sparse, with the monolithicSparse
 *     layout and an empty descriptor area; NAME-f001.vmdk… flat), the last
 *     one holding the rest; a 0-byte image has no extent at all
 *
 * Options are qemu-img's: subformat, adapter_type (ide, lsilogic, buslogic,
 * legacyESX), hwversion, toolsversion, zeroed_grain, backing_file (a VMDK
 * whose CID becomes our parentCID). create-options.ts turns qemu-img's
 * option values into these and is the driver's `create` hook.
 */
import { BlockError } from '../../block/errors.js';
import type { Storage } from '../../block/open.js';
import { openImage, closeNode, pathCombine } from '../../block/open.js';
import { bdrvPwrite, bdrvTruncate, bdrvFlush } from '../../block/io.js';
import type { BlockNode } from '../../block/node.js';
import {
  SECTOR_SIZE,
  serializeSparseExtentHeader,
  VMDK4_FLAG_NL_DETECT,
  VMDK4_FLAG_RGD,
  VMDK4_FLAG_ZERO_GRAIN,
  VMDK4_FLAG_COMPRESS,
  VMDK4_FLAG_MARKER,
  VMDK4_COMPRESSION_DEFLATE,
  VMDK4_MAGIC,
} from './sparse-header.js';

export type VmdkAdapterType = 'ide' | 'lsilogic' | 'buslogic' | 'legacyESX';

/** The subformats QEMU creates. */
export const VMDK_SUBFORMATS = ['monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat', 'streamOptimized'] as const;
export type VmdkSubformat = (typeof VMDK_SUBFORMATS)[number];

/** The most one extent of a split (twoGbMaxExtent*) image holds. */
const SPLIT_EXTENT_BYTES = 2 * 1024 * 1024 * 1024;

export interface VmdkCreateOptions {
  subformat?: VmdkSubformat;
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
export function sparseLayout(size: number, zeroedGrain: boolean, compressed = false) {
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
      version: compressed ? 3 : zeroedGrain ? 2 : 1,
      flags: VMDK4_FLAG_RGD | VMDK4_FLAG_NL_DETECT | (zeroedGrain ? VMDK4_FLAG_ZERO_GRAIN : 0) | (compressed ? VMDK4_FLAG_COMPRESS | VMDK4_FLAG_MARKER : 0),
      capacity,
      grainSize: GRANULARITY,
      descriptorOffset: DESC_OFFSET,
      descriptorSize: DESC_SIZE,
      numGTEsPerGT: NUM_GTES_PER_GT,
      rgdOffset,
      gdOffset,
      overHead: grainOffset,
      uncleanShutdown: 0,
      compressAlgorithm: compressed ? VMDK4_COMPRESSION_DEFLATE : 0,
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
    `CID=${o.cid.toString(16)}\n` + // QEMU prints the CIDs unpadded (%x)
    `parentCID=${o.parentCid.toString(16)}\n` +
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

/** What creating a VMDK needs besides its own file: extent files beside it, and the parent's CID. */
export interface VmdkCreateIo {
  /** Creates the extent file `name` (relative to the image), opened read-write; the caller closes it. */
  createExtent(name: string): Promise<BlockNode>;
  /** Opens the backing image `name` (relative to the image) read-only; the caller closes it. */
  openBacking(name: string): Promise<BlockNode>;
}

/** QEMU's filename_decompose: an extent's name is the base name's stem + `suffix` + its extension. */
function extentName(filename: string, suffix: string): string {
  const base = filename.slice(filename.lastIndexOf('/') + 1);
  const dot = base.lastIndexOf('.');
  return dot < 0 ? `${base}${suffix}` : `${base.slice(0, dot)}${suffix}${base.slice(dot)}`;
}

/** The extent of a monolithicFlat image: NAME-flat.vmdk. */
export function flatExtentName(filename: string): string {
  return extentName(filename, '-flat');
}

/** Creates a VMDK image `filename` of `size` bytes (rounded up to 512) in `storage`. */
export async function createVmdk(storage: Storage, filename: string, size: number, opts: VmdkCreateOptions = {}): Promise<void> {
  if (!storage.createFile) throw new BlockError('ENOTSUP', `${filename}: the ${storage.name} storage cannot create files`);
  const opened: BlockNode[] = [];
  try {
    await storage.createFile(filename);
    const file = await storage.openProtocol(filename, { readOnly: false });
    opened.push(file);
    await createVmdkOn(file, filename, size, opts, {
      async createExtent(name) {
        const path = pathCombine(filename, name);
        await storage.createFile!(path);
        const bs = await storage.openProtocol(path, { readOnly: false });
        opened.push(bs);
        return bs;
      },
      async openBacking(name) {
        const bs = await openImage(storage, storage.resolve(filename, name), { readOnly: true, backing: false });
        opened.push(bs);
        return bs;
      },
    });
  } finally {
    for (const bs of opened.reverse()) await closeNode(bs);
  }
}

/** Writes a new VMDK image into `file` (empty, read-write); `filename` names it in messages and extent names. */
export async function createVmdkOn(file: BlockNode, filename: string, size: number, opts: VmdkCreateOptions, io: VmdkCreateIo): Promise<void> {
  const subformat = opts.subformat ?? 'monolithicSparse';
  const adapterType = opts.adapterType ?? 'ide';
  if (!['ide', 'lsilogic', 'buslogic', 'legacyESX'].includes(adapterType)) throw new BlockError('EINVAL', `Invalid adapter type '${adapterType}'. Allowed values: ide, buslogic, lsilogic, legacyESX`);
  const flat = subformat === 'monolithicFlat' || subformat === 'twoGbMaxExtentFlat';
  // QEMU's words (059): a flat extent has neither grain tables for a parent nor zeroed grains.
  if (flat && opts.backingFile !== undefined) throw new BlockError('ENOTSUP', `${filename}: Flat image can't have backing file`);
  if (flat && opts.zeroedGrain) throw new BlockError('ENOTSUP', `${filename}: Flat image can't enable zeroed grain`);
  if (!Number.isSafeInteger(size) || size < 0) throw new BlockError('EINVAL', `${filename}: invalid size ${size}`);
  size = Math.ceil(size / SECTOR_SIZE) * SECTOR_SIZE;
  if (subformat !== 'monolithicFlat' && size / SECTOR_SIZE > 0xffffffff * GRANULARITY) throw new BlockError('EFBIG', `${filename}: size ${size} is too large for a sparse VMDK`);

  let parentCid = 0xffffffff;
  if (opts.backingFile !== undefined) {
    const parent = await io.openBacking(opts.backingFile);
    if (parent.driver.name !== 'vmdk') throw new BlockError('EINVAL', 'backing_file must be a vmdk image');
    parentCid = parent.state<{ cid: number }>().cid;
    if (size === 0) size = parent.totalBytes;
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
    const flatName = flatExtentName(filename);
    const flat = await io.createExtent(flatName);
    await bdrvTruncate(flat, size);
    await bdrvFlush(flat);
    const text = vmdkDescriptorText({ ...common, createType: 'monolithicFlat', extentLines: [`RW ${size / SECTOR_SIZE} FLAT "${flatName}" 0`] });
    await bdrvPwrite(file, 0, text.length, ascii(text));
    await bdrvFlush(file);
    return;
  }

  const zeroedGrain = opts.zeroedGrain ?? false;
  if (subformat === 'twoGbMaxExtentSparse' || subformat === 'twoGbMaxExtentFlat') {
    const sparse = subformat === 'twoGbMaxExtentSparse';
    const extentLines: string[] = [];
    for (let done = 0, i = 1; done < size; done += SPLIT_EXTENT_BYTES, i++) {
      const bytes = Math.min(SPLIT_EXTENT_BYTES, size - done);
      const name = extentName(filename, `-${sparse ? 's' : 'f'}${String(i).padStart(3, '0')}`);
      const extent = await io.createExtent(name);
      if (sparse) {
        await writeSparseExtent(extent, bytes, zeroedGrain, false);
        extentLines.push(`RW ${bytes / SECTOR_SIZE} SPARSE "${name}"`);
      } else {
        await bdrvTruncate(extent, bytes);
        await bdrvFlush(extent);
        extentLines.push(`RW ${bytes / SECTOR_SIZE} FLAT "${name}" 0`);
      }
    }
    const text = vmdkDescriptorText({ ...common, createType: subformat, extentLines });
    await bdrvPwrite(file, 0, text.length, ascii(text));
    await bdrvFlush(file);
    return;
  }

  if (subformat !== 'monolithicSparse' && subformat !== 'streamOptimized') throw new BlockError('ENOTSUP', `${filename}: creating subformat '${subformat}' is not supported`);
  const text = vmdkDescriptorText({ ...common, createType: subformat, extentLines: [`RW ${size / SECTOR_SIZE} SPARSE "${base}"`] });
  if (text.length > DESC_SIZE * SECTOR_SIZE) throw new BlockError('EINVAL', `${filename}: the descriptor does not fit its ${DESC_SIZE} sectors`);
  await writeSparseExtent(file, size, zeroedGrain, subformat === 'streamOptimized', text);
}

/**
 * A hosted sparse extent of `size` bytes in the empty `file`: header, both
 * grain directories with their (empty) tables, and the embedded descriptor
 * `text` when given (split extents leave the descriptor area zeroed).
 */
async function writeSparseExtent(file: BlockNode, size: number, zeroedGrain: boolean, compressed: boolean, text?: string): Promise<void> {
  const l = sparseLayout(size, zeroedGrain, compressed);
  await bdrvPwrite(file, 0, SECTOR_SIZE, serializeSparseExtentHeader(l.header));
  await bdrvTruncate(file, l.header.overHead * SECTOR_SIZE);
  const rgd = directory(l.header.rgdOffset, l.gdSectors, l.gtCount, l.gtSize);
  await bdrvPwrite(file, l.header.rgdOffset * SECTOR_SIZE, rgd.length, rgd);
  const gd = directory(l.header.gdOffset, l.gdSectors, l.gtCount, l.gtSize);
  await bdrvPwrite(file, l.header.gdOffset * SECTOR_SIZE, gd.length, gd);
  if (text !== undefined) await bdrvPwrite(file, DESC_OFFSET * SECTOR_SIZE, text.length, ascii(text));
  await bdrvFlush(file);
}
