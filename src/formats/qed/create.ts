/**
 * Creating a QED image (QEMU's bdrv_qed_co_create): a one-cluster header
 * area holding the header and the backing file name, then an empty L1 table.
 * A raw backing file sets QED_F_BACKING_FORMAT_NO_PROBE; any other format is
 * probed when the image is opened (QED stores no format name).
 */
import { BlockError } from '../../block/errors.js';
import type { BlockNode } from '../../block/node.js';
import type { ImageCreateRequest } from '../../block/driver.js';
import { optNumber, type OptionDesc } from '../../block/options.js';
import { bdrvPwrite } from '../../block/io.js';
import {
  qedMaxImageSize,
  QED_DEFAULT_CLUSTER_SIZE,
  QED_DEFAULT_TABLE_SIZE,
  QED_F_BACKING_FILE,
  QED_F_BACKING_FORMAT_NO_PROBE,
  QED_HEADER_BYTES,
  QED_MAGIC,
  QED_MAX_CLUSTER_SIZE,
  QED_MAX_TABLE_SIZE,
  QED_MIN_CLUSTER_SIZE,
  QED_MIN_TABLE_SIZE,
  serializeQedHeader,
} from './header.js';

export interface QedCreateOptions {
  size: number;
  clusterSize?: number;
  tableSize?: number;
  backingFile?: string;
  backingFmt?: string;
}

const isPow2 = (v: number) => Number.isSafeInteger(v) && v > 0 && (v & (v - 1)) === 0;

/** Writes a new QED image into the empty protocol node `file`. */
export async function createQed(file: BlockNode, o: QedCreateOptions): Promise<void> {
  const clusterSize = o.clusterSize ?? QED_DEFAULT_CLUSTER_SIZE;
  const tableSize = o.tableSize ?? QED_DEFAULT_TABLE_SIZE;
  if (!isPow2(clusterSize) || clusterSize < QED_MIN_CLUSTER_SIZE || clusterSize > QED_MAX_CLUSTER_SIZE) {
    throw new BlockError('EINVAL', `QED cluster size must be within range [${QED_MIN_CLUSTER_SIZE}, ${QED_MAX_CLUSTER_SIZE}] and power of 2`);
  }
  if (!isPow2(tableSize) || tableSize < QED_MIN_TABLE_SIZE || tableSize > QED_MAX_TABLE_SIZE) {
    throw new BlockError('EINVAL', `QED table size must be within range [${QED_MIN_TABLE_SIZE}, ${QED_MAX_TABLE_SIZE}] and power of 2`);
  }
  const max = qedMaxImageSize(clusterSize, tableSize);
  if (!Number.isSafeInteger(o.size) || o.size % 512 || o.size > max) {
    throw new BlockError('EINVAL', `QED image size must be a non-zero multiple of cluster size and less than ${max} bytes`);
  }
  const name = o.backingFile !== undefined ? new TextEncoder().encode(o.backingFile) : undefined;
  if (name && QED_HEADER_BYTES + name.length > clusterSize) throw new BlockError('EINVAL', `QED backing file name is too long (${name.length} bytes)`);
  let features = 0;
  if (name) features |= QED_F_BACKING_FILE;
  if (name && o.backingFmt === 'raw') features |= QED_F_BACKING_FORMAT_NO_PROBE;
  const header = serializeQedHeader({
    magic: QED_MAGIC,
    clusterSize,
    tableSize,
    headerSize: 1,
    features,
    compatFeatures: 0,
    autoclearFeatures: 0,
    l1TableOffset: clusterSize,
    imageSize: o.size,
    backingFilenameOffset: name ? QED_HEADER_BYTES : 0,
    backingFilenameSize: name ? name.length : 0,
  });
  await bdrvPwrite(file, 0, header.length, header);
  if (name && name.length) await bdrvPwrite(file, QED_HEADER_BYTES, name.length, name);
  await bdrvPwrite(file, clusterSize, clusterSize * tableSize, new Uint8Array(clusterSize * tableSize));
}

/** QEMU's qed_create_opts, in table order. */
export const QED_CREATE_OPTS: readonly OptionDesc[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'backing_file', type: 'str', help: 'File name of a base image' },
  { name: 'backing_fmt', type: 'str', help: 'Image format of the base image' },
  { name: 'cluster_size', type: 'size', help: 'Cluster size (in bytes)', def: String(QED_DEFAULT_CLUSTER_SIZE) },
  { name: 'table_size', type: 'size', help: 'L1/L2 table size (in clusters)' },
];

/** The driver's `create` hook (qemu-img create -f qed, convert -O qed). */
export function qedCreateImage(file: BlockNode, req: ImageCreateRequest): Promise<void> {
  const size = req.origin === 'qemu-img' ? Math.ceil(req.size / 512) * 512 : req.size;
  return createQed(file, {
    size,
    clusterSize: optNumber(req.values, 'cluster_size'),
    tableSize: optNumber(req.values, 'table_size'),
    backingFile: req.values.get('backing_file'),
    backingFmt: req.values.get('backing_fmt'),
  });
}
