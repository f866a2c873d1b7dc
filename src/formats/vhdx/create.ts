/**
 * Creating VHDX images with QEMU's layout (block/vhdx.c vhdx_co_create):
 *
 *   0 file identifier · 64 KiB header 1 · 128 KiB header 2 · 192 KiB region
 *   table · 256 KiB its copy · 1 MiB the log (log_size) · the BAT (rounded to
 *   1 MiB) · the metadata region (1 MiB: table, then file parameters, virtual
 *   disk size, page 83 data, logical and physical sector size) · payload blocks
 *   from 5 MiB past the BAT.
 *
 * Dynamic images start with every payload block ZERO (QEMU's default
 * block_state_zero=on) or NOT_PRESENT; fixed images with every block present.
 * Options are qemu-img's: subformat (dynamic | fixed), block_size (0: by
 * size), log_size, block_state_zero. A plain function until the driver
 * contract has a `create` hook.
 */
import { BlockError } from '../../block/errors.js';
import type { Storage } from '../../block/open.js';
import { closeNode } from '../../block/open.js';
import { bdrvFlush, bdrvPwrite, bdrvTruncate } from '../../block/io.js';
import {
  MiB,
  serializeFileIdentifier,
  serializeHeader,
  serializeRegionTable,
  VHDX_HEADER1_OFFSET,
  VHDX_HEADER2_OFFSET,
  VHDX_HEADER_SECTION_END,
  VHDX_HEADER_SIGNATURE,
  VHDX_REGION_TABLE2_OFFSET,
  VHDX_REGION_TABLE_OFFSET,
} from './header.js';
import {
  BAT_GUID,
  FILE_PARAMETERS_GUID,
  LOGICAL_SECTOR_SIZE_GUID,
  METADATA_GUID,
  PAGE83_DATA_GUID,
  PHYSICAL_SECTOR_SIZE_GUID,
  randomGuid,
  serializeGuid,
  VIRTUAL_DISK_SIZE_GUID,
  ZERO_GUID,
} from './guid.js';
import {
  serializeFileParameters,
  serializeMetadataTable,
  serializeSectorSize,
  serializeVirtualDiskSize,
  VHDX_METADATA_TABLE_SIZE,
} from './metadata.js';
import {
  batEntries,
  chunkRatio,
  PAYLOAD_BLOCK_FULLY_PRESENT,
  PAYLOAD_BLOCK_NOT_PRESENT,
  PAYLOAD_BLOCK_ZERO,
  payloadIndex,
  serializeBatEntry,
  VHDX_BLOCK_SIZE_MAX,
  VHDX_MAX_IMAGE_SIZE,
} from './bat.js';

export interface VhdxCreateOptions {
  subformat?: 'dynamic' | 'fixed';
  /** Bytes; 0 or absent chooses by size as QEMU does. Rounded up to 1 MiB, at most 256 MiB. */
  blockSize?: number;
  /** Bytes; rounded up to 1 MiB (default 1 MiB). */
  logSize?: number;
  /** Dynamic images: mark blocks ZERO rather than NOT_PRESENT (QEMU's default: on). */
  blockStateZero?: boolean;
}

const TiB = 1024 * 1024 * MiB;
const GiB = 1024 * MiB;
const roundUp = (v: number, to: number) => Math.ceil(v / to) * to;

export async function createVhdx(storage: Storage, filename: string, size: number, opts: VhdxCreateOptions = {}): Promise<void> {
  if (!Number.isSafeInteger(size) || size < 0) throw new BlockError('EINVAL', `${filename}: invalid size ${size}`);
  size = roundUp(size, 512);
  if (size > VHDX_MAX_IMAGE_SIZE) throw new BlockError('EINVAL', `${filename}: Image size too large; max of 64TB`);
  const type = opts.subformat ?? 'dynamic';
  if (type !== 'dynamic' && type !== 'fixed') throw new BlockError('EINVAL', `${filename}: unknown VHDX subformat '${type as string}'`);
  let blockSize = opts.blockSize ?? 0;
  if (blockSize === 0) blockSize = size > 32 * TiB ? 64 * MiB : size > 100 * GiB ? 32 * MiB : size > GiB ? 16 * MiB : 8 * MiB;
  blockSize = Math.min(roundUp(blockSize, MiB), VHDX_BLOCK_SIZE_MAX);
  if (blockSize & (blockSize - 1)) throw new BlockError('EINVAL', `${filename}: Block size must be a power of two`);
  const logSize = roundUp(opts.logSize ?? MiB, MiB);
  if (logSize === 0 || logSize > 0xfff00000) throw new BlockError('EINVAL', `${filename}: invalid log size ${logSize}`);
  if (!storage.createFile) throw new BlockError('ENOTSUP', `${filename}: the ${storage.name} storage cannot create files`);
  const sectorSize = 512;
  const ratio = chunkRatio(sectorSize, blockSize);
  const entries = batEntries(size, blockSize, ratio, false);
  const batOffset = roundUp(VHDX_HEADER_SECTION_END + logSize, MiB);
  const batLength = roundUp(entries * 8, MiB);
  const metadataOffset = roundUp(batOffset + batLength, MiB);
  const dataStart = batOffset + batLength + 5 * MiB;

  await storage.createFile(filename);
  const file = await storage.openProtocol(filename, { readOnly: false });
  try {
    await bdrvPwrite(file, 0, 65536, serializeFileIdentifier('blocktab'));
    const seq = BigInt(Math.floor(Math.random() * 0x7fffffff));
    const header = {
      signature: VHDX_HEADER_SIGNATURE,
      checksum: 0,
      sequenceNumber: seq,
      fileWriteGuid: randomGuid(),
      dataWriteGuid: randomGuid(),
      logGuid: ZERO_GUID,
      logVersion: 0,
      version: 1,
      logLength: logSize,
      logOffset: VHDX_HEADER_SECTION_END,
    };
    await bdrvPwrite(file, VHDX_HEADER1_OFFSET, 4096, serializeHeader(header));
    await bdrvPwrite(file, VHDX_HEADER2_OFFSET, 4096, serializeHeader({ ...header, sequenceNumber: seq + 1n }));

    // The BAT (and the file's length), then the region tables pointing at it.
    const state = type === 'fixed' ? PAYLOAD_BLOCK_FULLY_PRESENT : opts.blockStateZero === false ? PAYLOAD_BLOCK_NOT_PRESENT : PAYLOAD_BLOCK_ZERO;
    await bdrvTruncate(file, type === 'fixed' ? dataStart + size : dataStart);
    if (state !== PAYLOAD_BLOCK_NOT_PRESENT) {
      const bat = new Uint8Array(entries * 8);
      const blocks = Math.ceil(size / blockSize);
      for (let b = 0; b < blocks; b++) {
        const fileOffset = state === PAYLOAD_BLOCK_FULLY_PRESENT ? roundUp(dataStart + b * blockSize, MiB) : 0;
        serializeBatEntry({ state, fileOffset }, bat, payloadIndex(b, ratio));
      }
      if (bat.length) await bdrvPwrite(file, batOffset, bat.length, bat);
    }
    const rt = serializeRegionTable([
      { guid: BAT_GUID, fileOffset: batOffset, length: batLength, required: true },
      { guid: METADATA_GUID, fileOffset: metadataOffset, length: MiB, required: true },
    ]);
    await bdrvPwrite(file, VHDX_REGION_TABLE_OFFSET, rt.length, rt);
    await bdrvPwrite(file, VHDX_REGION_TABLE2_OFFSET, rt.length, rt);

    // Metadata: the table, then the five items back to back from 64 KiB.
    const page83 = new Uint8Array(16);
    serializeGuid(randomGuid(), page83, 0);
    const items: [string, Uint8Array, boolean][] = [
      [FILE_PARAMETERS_GUID, serializeFileParameters({ blockSize, leaveBlockAllocated: type === 'fixed', hasParent: false }), false],
      [VIRTUAL_DISK_SIZE_GUID, serializeVirtualDiskSize(size), true],
      [PAGE83_DATA_GUID, page83, true],
      [LOGICAL_SECTOR_SIZE_GUID, serializeSectorSize(sectorSize), true],
      [PHYSICAL_SECTOR_SIZE_GUID, serializeSectorSize(sectorSize), true],
    ];
    let at = VHDX_METADATA_TABLE_SIZE;
    const table = items.map(([itemId, data, isVirtualDisk]) => {
      const e = { itemId, offset: at, length: data.length, isUser: false, isVirtualDisk, isRequired: true };
      at += data.length;
      return e;
    });
    await bdrvPwrite(file, metadataOffset, VHDX_METADATA_TABLE_SIZE, serializeMetadataTable(table));
    const blob = new Uint8Array(at - VHDX_METADATA_TABLE_SIZE);
    let o = 0;
    for (const [, data] of items) {
      blob.set(data, o);
      o += data.length;
    }
    await bdrvPwrite(file, metadataOffset + VHDX_METADATA_TABLE_SIZE, blob.length, blob);
    await bdrvFlush(file);
  } finally {
    await closeNode(file);
  }
}
