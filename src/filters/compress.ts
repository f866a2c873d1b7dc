/**
 * The `compress` filter driver (QEMU's block/filter-compress.c): every write
 * through it reaches its `file` child as a compressed write. The child must
 * be a driver that stores compressed data itself (qcow2, qcow, vmdk); other
 * filters only pass the flag on, so they are refused at open as QEMU refuses
 * them. The filter's request alignment is the child's cluster size, so the
 * request path pads a partial cluster by read-modify-write and the child
 * sees whole clusters (iotest 214: a 3.5-cluster write stores 4 compressed
 * clusters). Write-zeroes and discards pass through uncompressed.
 */
import { BlockError } from '../block/errors.js';
import { registerDriver, type BlockDriver } from '../block/driver.js';
import { bdrvPdiscard, bdrvPread, bdrvPwrite, bdrvPwriteZeroes } from '../block/io.js';
import { filterFile, filterPassThrough } from './pass-through.js';

const file = filterFile;

export const compressDriver: BlockDriver = {
  name: 'compress',
  kind: 'filter',
  blockdevOptions: { file: 'BlockdevRef' },
  async open(bs) {
    const child = file(bs);
    // QEMU asks whether the child's driver compresses by itself (block_driver_can_compress); a filter that forwards does not.
    if (child.driver.kind === 'filter' || !child.driver.supportsCompressedWrites) {
      throw new BlockError('ENOTSUP', `Compression is not supported for underlying format: ${child.driver.name}`);
    }
    bs.totalBytes = child.totalBytes;
    const cluster = child.driver.getDriverInfo?.(child)?.clusterSize ?? 0;
    bs.limits = { ...child.limits };
    if (cluster > 0) {
      bs.limits.requestAlignment = cluster;
      // Transfers stay whole clusters; a cluster larger than the child's transfer limit is one request.
      bs.limits.maxTransfer = Math.max(cluster, bs.limits.maxTransfer - (bs.limits.maxTransfer % cluster));
    }
  },
  async close() {},
  async preadv(bs, offset, bytes, buf) {
    await bdrvPread(file(bs), offset, bytes, buf);
  },
  async pwritev(bs, offset, bytes, buf, flags) {
    await bdrvPwrite(file(bs), offset, bytes, buf, { ...flags, compressed: true });
  },
  async pwriteZeroes(bs, offset, bytes, flags) {
    await bdrvPwriteZeroes(file(bs), offset, bytes, flags);
  },
  async pdiscard(bs, offset, bytes) {
    await bdrvPdiscard(file(bs), offset, bytes);
  },
  ...filterPassThrough,
};

registerDriver(compressDriver);
