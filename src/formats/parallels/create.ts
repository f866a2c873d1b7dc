/**
 * Creating a Parallels image, as QEMU's parallels_co_create: the new-style
 * magic, legacy geometry (16 heads, 32 sectors per cylinder), a BAT of one
 * entry per cluster, and the header and BAT area rounded up to whole
 * clusters (data_off), written as zeros. No cluster is allocated.
 */
import { BlockError } from '../../block/errors.js';
import type { BlockNode } from '../../block/node.js';
import type { ImageCreateRequest } from '../../block/driver.js';
import { optNumber, type OptionDesc } from '../../block/options.js';
import { bdrvPwrite, bdrvPwriteZeroes } from '../../block/io.js';
import { HEADER_MAGIC2, HEADER_VERSION, PARALLELS_HEADER_BYTES, serializeParallelsHeader } from './header.js';

const SECTOR = 512;
const HEADS_NUMBER = 16;
const SEC_IN_CYL = 32;
export const PARALLELS_DEFAULT_CLUSTER_SIZE = 1024 * 1024;
/** QEMU's MAX_PARALLELS_IMAGE_FACTOR: at most 2^32 clusters. */
const MAX_IMAGE_FACTOR = 2 ** 32;

export interface ParallelsCreateOptions {
  /** Virtual size in bytes. */
  size: number;
  /** Cluster size in bytes (default 1 MiB). */
  clusterSize?: number;
}

/** Writes a new Parallels image into the empty protocol node `file`. */
export async function createParallels(file: BlockNode, o: ParallelsCreateOptions): Promise<void> {
  const size = o.size;
  const clusterSize = o.clusterSize ?? PARALLELS_DEFAULT_CLUSTER_SIZE;
  if (clusterSize >= 2 ** 63 / MAX_IMAGE_FACTOR) throw new BlockError('EINVAL', 'Cluster size is too large');
  if (size >= MAX_IMAGE_FACTOR * clusterSize) throw new BlockError('EFBIG', 'Image size is too large for this cluster size');
  if (size % SECTOR) throw new BlockError('EINVAL', 'Image size must be a multiple of 512 bytes');
  if (clusterSize % SECTOR || clusterSize === 0) throw new BlockError('EINVAL', 'Cluster size must be a multiple of 512 bytes');
  const batEntries = Math.ceil(size / clusterSize);
  const batSectors = (Math.ceil((PARALLELS_HEADER_BYTES + batEntries * 4) / clusterSize) * clusterSize) / SECTOR;
  if (batSectors > 0xffffffff || batEntries > 0xffffffff) throw new BlockError('EFBIG', 'Image size is too large for this cluster size');
  const header = serializeParallelsHeader({
    magic: HEADER_MAGIC2,
    version: HEADER_VERSION,
    heads: HEADS_NUMBER,
    cylinders: Math.floor(size / SECTOR / HEADS_NUMBER / SEC_IN_CYL),
    tracks: clusterSize / SECTOR,
    batEntries,
    nbSectors: size / SECTOR,
    inuse: 0,
    dataOff: batSectors,
    flags: 0,
    extOff: 0,
  });
  const first = new Uint8Array(SECTOR);
  first.set(header);
  await bdrvPwrite(file, 0, SECTOR, first);
  if (batSectors > 1) await bdrvPwriteZeroes(file, SECTOR, (batSectors - 1) * SECTOR);
}

/** QEMU's parallels_create_opts, in table order. */
export const PARALLELS_CREATE_OPTS: readonly OptionDesc[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'cluster_size', type: 'size', help: 'Parallels image cluster size', def: String(PARALLELS_DEFAULT_CLUSTER_SIZE) },
];

/** The driver's `create` hook (qemu-img create -f parallels, convert -O parallels). */
export function parallelsCreateImage(file: BlockNode, req: ImageCreateRequest): Promise<void> {
  const up = (n: number) => (req.origin === 'qemu-img' ? Math.ceil(n / SECTOR) * SECTOR : n);
  return createParallels(file, { size: up(req.size), clusterSize: up(optNumber(req.values, 'cluster_size') ?? PARALLELS_DEFAULT_CLUSTER_SIZE) });
}
