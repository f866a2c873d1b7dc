/**
 * Checks of a parsed qcow2 header against QEMU's limits and the file's size,
 * done before anything is allocated from a size the image claims.
 *
 * The limits are QEMU's (block/qcow2.h): an L1 table of at most 32 MiB, a
 * refcount table of at most 8 MiB, 65536 snapshots in at most 64 MiB. QEMU
 * itself does not compare table offsets with the file's length (a read past
 * the end returns zeros); we do, so a truncated image fails at open with the
 * table's name instead of reading as zeros.
 */
import { BlockError, hex, type BlockErrorCode } from '../../block/errors.js';
import {
  describeFeatures,
  findExtension,
  type Qcow2Header,
  QCOW2_AUTOCLEAR_DATA_FILE_RAW,
  QCOW2_COMPRESSION_TYPE_ZLIB,
  QCOW2_COMPRESSION_TYPE_ZSTD,
  QCOW2_EXT_MAGIC_CRYPTO_HEADER,
  QCOW2_FEAT_TYPE_INCOMPATIBLE,
  QCOW2_INCOMPAT_COMPRESSION,
  QCOW2_INCOMPAT_CORRUPT,
  QCOW2_INCOMPAT_DATA_FILE,
  QCOW2_INCOMPAT_EXTL2,
  QCOW2_INCOMPAT_MASK,
} from './header.js';

export const QCOW_MAX_L1_SIZE = 32 * 1024 * 1024;
export const QCOW_MAX_REFTABLE_SIZE = 8 * 1024 * 1024;
export const QCOW_MAX_SNAPSHOTS = 65536;
export const QCOW_MAX_SNAPSHOTS_SIZE = 1024 * QCOW_MAX_SNAPSHOTS;
/** Size of a snapshot table entry without id, name and extra data. */
export const SNAPSHOT_HEADER_SIZE = 40;

function fail(code: BlockErrorCode, image: string, msg: string): never {
  throw new BlockError(code, `${image}: ${msg}`);
}

/** Entries of one L2 table. */
export function l2Entries(h: Qcow2Header): number {
  const extended = (h.incompatibleFeatures & QCOW2_INCOMPAT_EXTL2) !== 0n;
  return 2 ** h.clusterBits / (extended ? 16 : 8);
}

/** L1 entries needed to map `size` bytes (QEMU's size_to_l1). */
export function sizeToL1(h: Qcow2Header, size: number): number {
  return Math.ceil(size / (2 ** h.clusterBits * l2Entries(h)));
}

/**
 * QEMU's qcow2_validate_table, with its words as the QEMU wording: at most
 * `max` bytes of `entryLen`-byte entries ("<table> too large", ours adds `tooLarge`), an offset
 * that is cluster-aligned and leaves the table below 2^63 ("<table> offset
 * invalid"). Then ours: the table must lie inside the file (`fileSize`;
 * undefined skips it).
 */
function checkTable(
  image: string,
  what: string,
  offset: number,
  entries: number,
  entryLen: number,
  max: number,
  clusterSize: number,
  fileSize: number | undefined,
  tooLarge: string,
): void {
  if (entries > Math.floor(max / entryLen)) {
    throw new BlockError('EFBIG', `${image}: ${what} too large${tooLarge}`, { qemuMessage: `${what} too large` });
  }
  const bytes = entries * entryLen;
  const invalid = `${what} offset invalid`;
  if (offset % clusterSize !== 0) throw new BlockError('EINVAL', `${image}: ${invalid}: ${hex(offset)} is not cluster-aligned`, { qemuMessage: invalid });
  if (2 ** 63 - bytes < offset) throw new BlockError('EINVAL', `${image}: ${invalid}: ${hex(offset)} + ${bytes} bytes passes 2^63`, { qemuMessage: invalid });
  if (fileSize !== undefined && bytes > 0 && offset + bytes > fileSize) {
    fail('EINVAL', image, `${what} at ${hex(offset)} (${bytes} bytes) extends beyond the end of the file (${fileSize} bytes)`);
  }
}

/**
 * Every check the header allows before tables are read. `writable` refuses
 * the corrupt bit as QEMU does. Returns nothing; throws BlockError.
 */
export function validateHeader(h: Qcow2Header, image: string, fileSize: number, writable: boolean): void {
  const clusterSize = 2 ** h.clusterBits;

  const unknown = h.incompatibleFeatures & ~QCOW2_INCOMPAT_MASK;
  if (unknown) {
    fail('ENOTSUP', image, `Unsupported qcow2 feature(s): ${describeFeatures(h, QCOW2_FEAT_TYPE_INCOMPATIBLE, unknown).join(', ')}`);
  }
  if (writable && h.incompatibleFeatures & QCOW2_INCOMPAT_CORRUPT) {
    fail('EACCES', image, 'qcow2: Image is corrupt; cannot be opened read/write (corrupt bit set in incompatible_features at 0x48)');
  }
  // QEMU's messages: 0 none, 1 aes (legacy), 2 luks with its crypto header extension.
  if (h.cryptMethod > 2) fail('EINVAL', image, `Unsupported encryption method: ${h.cryptMethod} (crypt_method at 0x20)`);
  const cryptoExt = findExtension(h, QCOW2_EXT_MAGIC_CRYPTO_HEADER);
  if (cryptoExt && h.cryptMethod !== 2) fail('EINVAL', image, 'CRYPTO header extension only expected with LUKS encryption method');
  if (!cryptoExt && h.cryptMethod === 2) fail('EINVAL', image, 'Missing CRYPTO header for crypt method 2');
  if (cryptoExt && (cryptoExt.offset % clusterSize !== 0 || cryptoExt.offset === 0)) {
    fail('EINVAL', image, `Invalid encryption header offset ${hex(cryptoExt.offset)} (crypto header extension)`);
  }
  if (h.compressionType !== QCOW2_COMPRESSION_TYPE_ZLIB && h.compressionType !== QCOW2_COMPRESSION_TYPE_ZSTD) {
    fail('ENOTSUP', image, `qcow2: unknown compression type: ${h.compressionType} (compression_type at 0x68)`);
  }
  const compressionBit = (h.incompatibleFeatures & QCOW2_INCOMPAT_COMPRESSION) !== 0n;
  if (h.compressionType === QCOW2_COMPRESSION_TYPE_ZLIB && compressionBit) {
    fail('EINVAL', image, 'qcow2: Compression type incompatible feature bit must not be set (incompatible_features at 0x48)');
  }
  if (h.compressionType !== QCOW2_COMPRESSION_TYPE_ZLIB && !compressionBit) {
    fail('EINVAL', image, 'qcow2: Compression type incompatible feature bit must be set (incompatible_features at 0x48)');
  }
  if (h.incompatibleFeatures & QCOW2_INCOMPAT_EXTL2 && h.clusterBits < 14) {
    fail('EINVAL', image, `Extended L2 entries are only supported with cluster sizes of at least 16384 bytes (cluster_bits ${h.clusterBits} at 0x14)`);
  }
  if (!(h.incompatibleFeatures & QCOW2_INCOMPAT_DATA_FILE) && h.autoclearFeatures & QCOW2_AUTOCLEAR_DATA_FILE_RAW) {
    // QEMU refuses data-file-raw without a data file.
    fail('EINVAL', image, 'data-file-raw requires a data file (autoclear_features at 0x58)');
  }
  // Refcount table, snapshot table, active L1 table: QEMU's order.
  checkTable(
    image,
    'Reference count table',
    h.refcountTableOffset,
    h.refcountTableClusters,
    clusterSize,
    QCOW_MAX_REFTABLE_SIZE,
    clusterSize,
    fileSize,
    ` (${h.refcountTableClusters} clusters at 0x38, at most ${QCOW_MAX_REFTABLE_SIZE / clusterSize})`,
  );
  // The snapshot table's entries have variable size; the exact bound is checked while reading it.
  checkTable(
    image,
    'Snapshot table',
    h.snapshotsOffset,
    h.nbSnapshots,
    SNAPSHOT_HEADER_SIZE,
    SNAPSHOT_HEADER_SIZE * QCOW_MAX_SNAPSHOTS,
    clusterSize,
    // Not the end of the file: QEMU reads a table past it as zeros (snapshot-table.ts), and so does blocktab.
    undefined,
    `: too many snapshots (nb_snapshots ${h.nbSnapshots} at 0x3c, at most ${QCOW_MAX_SNAPSHOTS})`,
  );
  checkTable(
    image,
    'Active L1 table',
    h.l1TableOffset,
    h.l1Size,
    8,
    QCOW_MAX_L1_SIZE,
    clusterSize,
    h.l1Size > 0 ? fileSize : undefined,
    ` (l1_size ${h.l1Size} at 0x24, at most ${QCOW_MAX_L1_SIZE / 8})`,
  );
  // QEMU's words (its test 054 prints them): a size whose L1 index passes INT_MAX, or one past exact JS arithmetic.
  if (h.size > Number.MAX_SAFE_INTEGER - clusterSize || sizeToL1(h, h.size) > 2 ** 31 - 1) fail('EFBIG', image, 'Image is too big');
  const need = sizeToL1(h, h.size);
  if (h.l1Size < need) {
    throw new BlockError('EINVAL', `${image}: L1 table is too small (l1_size ${h.l1Size} at 0x24, the virtual size needs ${need})`, { qemuMessage: 'L1 table is too small' });
  }
}
