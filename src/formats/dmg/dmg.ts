/**
 * The `dmg` format driver (read-only): Apple UDIF disk images, as QEMU's
 * block/dmg.c reads them.
 *
 * Module map (src/formats/dmg/):
 *   koly.ts           the 512-byte UDIF trailer and where to find it
 *   blkx.ts           blkx ("mish") tables and their chunk entries
 *   plist.ts          the XML property list holding base64 blkx tables
 *   rsrc.ts           the older resource-fork variant
 *   udif-checksum.ts  CRC-32 and the master checksum
 *   chunk-codecs.ts   zlib / bzip2 decompressors (lzfse, adc: none)
 *
 * Probe: QEMU probes dmg by file name only (".dmg" scores 2, just above raw):
 * a DMG's only signature is its trailer, which the probe buffer does not see.
 *
 * Open follows QEMU's checks (trailer in the last 515 bytes; data fork,
 * resource fork and XML before the trailer; XML at most 16 MiB; no chunk
 * longer than 64 MiB or, unless zero, than 64 MiB of sectors) and adds its own
 * so that no read is silently wrong: unknown chunk types (QEMU warns and
 * drops them, failing reads there later), chunk data past the end of the
 * file, raw chunks shorter than their sectors, overlapping chunks and a bad
 * master checksum are refused when the image is opened, naming the table and
 * offset. Reads map a sector to its chunk by binary search; raw chunks are
 * read in place, compressed ones go through a one-chunk cache (chunk-cache.ts)
 * as QEMU's current_chunk does. QEMU has no block-status callback for dmg, so
 * every range is "data", which is what `qemu-img map` prints.
 */
import { BlockError, hex } from '../../block/errors.js';
import { type BlockDriver } from '../../block/driver.js';
import type { BlockNode } from '../../block/node.js';
import { bdrvPread } from '../../block/io.js';
import { BDRV_BLOCK_DATA } from '../../block/status.js';
import { ChunkCache } from '../chunk-cache.js';
import { requireReadOnly } from '../read-only.js';
import { findKoly, KOLY, KOLY_SIZE, type KolyBlock } from './koly.js';
import {
  BLKX_ADC,
  BLKX_BZIP2,
  BLKX_COMMENT,
  BLKX_IGNORE,
  BLKX_LZFSE,
  BLKX_RAW,
  BLKX_TERMINATOR,
  BLKX_ZERO,
  BLKX_ZLIB,
  isMish,
  parseBlkx,
  type BlkxResource,
} from './blkx.js';
import { plistDataElements } from './plist.js';
import { parseRsrcResources } from './rsrc.js';
import { crc32OfField, masterChecksum, UDIF_CHECKSUM_CRC32 } from './udif-checksum.js';
import { chunkCodec } from './chunk-codecs.js';
import { dmgProbe } from './probe.js';

const SECTOR = 512;
/** QEMU's DMG_LENGTHS_MAX: the largest chunk in the data fork. */
export const DMG_LENGTHS_MAX = 64 * 1024 * 1024;
/** QEMU's DMG_SECTORCOUNTS_MAX: the most sectors a non-zero chunk may expand to. */
export const DMG_SECTORCOUNTS_MAX = DMG_LENGTHS_MAX / SECTOR;
/** QEMU's cap on the XML property list. */
export const DMG_MAX_XML_LENGTH = 16 * 1024 * 1024;

const KNOWN_TYPES = new Set([BLKX_ZERO, BLKX_RAW, BLKX_IGNORE, BLKX_ADC, BLKX_ZLIB, BLKX_BZIP2, BLKX_LZFSE]);

/** One chunk in disk order, with absolute sector and file positions. */
interface Chunk {
  type: number;
  /** First disk sector. */
  sector: number;
  sectorCount: number;
  /** File offset of the chunk's data. */
  offset: number;
  length: number;
  /** Where the chunk entry came from, for messages. */
  origin: string;
}

interface DmgState {
  chunks: Chunk[];
  cache: ChunkCache;
}

function corrupt(image: string, what: string): BlockError {
  return new BlockError('ECORRUPT', `${image}: dmg ${what}`);
}

function typeName(t: number): string {
  switch (t) {
    case BLKX_ZERO:
      return 'zero';
    case BLKX_RAW:
      return 'raw';
    case BLKX_IGNORE:
      return 'ignore';
    default:
      return chunkCodec(t)?.name ?? `0x${t.toString(16)}`;
  }
}

async function readKoly(bs: BlockNode): Promise<{ koly: KolyBlock; kolyOffset: number }> {
  const image = bs.filename;
  const file = bs.file!.node;
  const length = file.totalBytes;
  if (length < SECTOR) throw new BlockError('EINVAL', `${image}: dmg file must be at least 512 bytes long (it is ${length})`);
  const tailOffset = length > 511 + 512 ? length - 511 - 512 : 0;
  const tail = new Uint8Array(Math.min(length, 515));
  await bdrvPread(file, tailOffset, tail.length, tail);
  const kolyOffset = findKoly(tail, tailOffset);
  if (kolyOffset < 0) throw new BlockError('EINVAL', `${image}: Could not locate UDIF trailer in dmg file (no "koly" in the last 515 bytes from ${hex(tailOffset)})`);
  // A trailer that starts in the last sector's first bytes runs past the end: the missing bytes read as zeros.
  const buf = new Uint8Array(KOLY_SIZE);
  await bdrvPread(file, kolyOffset, Math.min(KOLY_SIZE, length - kolyOffset), buf.subarray(0, Math.min(KOLY_SIZE, length - kolyOffset)));
  return { koly: KOLY.parse(buf), kolyOffset };
}

/** The blkx tables of the image, with where each came from. */
async function readBlkxTables(bs: BlockNode, koly: KolyBlock, kolyOffset: number): Promise<{ blkx: BlkxResource; origin: string }[]> {
  const image = bs.filename;
  const file = bs.file!.node;
  const field = (f: keyof KolyBlock & string) => `koly ${f} at ${hex(kolyOffset + KOLY.offsetOf(f))}`;
  const out: { blkx: BlkxResource; origin: string }[] = [];
  const take = (bytes: Uint8Array, origin: string) => {
    if (!isMish(bytes)) return;
    try {
      out.push({ blkx: parseBlkx(bytes), origin });
    } catch (e) {
      throw corrupt(image, `blkx table (${origin}): ${(e as Error).message}`);
    }
  };
  if (koly.RsrcForkLength !== 0) {
    if (koly.RsrcForkLength > DMG_MAX_XML_LENGTH * 4) {
      throw new BlockError('EFBIG', `${image}: dmg ${field('RsrcForkLength')}: resource fork of ${koly.RsrcForkLength} bytes is too large`);
    }
    const fork = new Uint8Array(koly.RsrcForkLength);
    await bdrvPread(file, koly.RsrcForkOffset, fork.length, fork);
    let resources;
    try {
      resources = parseRsrcResources(fork);
    } catch (e) {
      throw corrupt(image, `resource fork at ${hex(koly.RsrcForkOffset)}: ${(e as Error).message}`);
    }
    for (const r of resources) take(r.bytes, `resource at ${hex(koly.RsrcForkOffset + r.at)}`);
  } else if (koly.XMLLength !== 0) {
    if (koly.XMLLength > DMG_MAX_XML_LENGTH) {
      throw new BlockError('EFBIG', `${image}: dmg ${field('XMLLength')}: property list of ${koly.XMLLength} bytes is larger than ${DMG_MAX_XML_LENGTH}`);
    }
    const raw = new Uint8Array(koly.XMLLength);
    await bdrvPread(file, koly.XMLOffset, raw.length, raw);
    const xml = new TextDecoder('latin1').decode(raw);
    let elements;
    try {
      elements = plistDataElements(xml);
    } catch (e) {
      throw corrupt(image, `property list at ${hex(koly.XMLOffset)}: ${(e as Error).message}`);
    }
    for (const d of elements) take(d.bytes, `property list <data> at ${hex(koly.XMLOffset + d.at)}`);
  } else {
    throw new BlockError('EINVAL', `${image}: dmg trailer at ${hex(kolyOffset)} names neither a resource fork nor a property list`);
  }
  return out;
}

function buildChunkTable(image: string, fileSize: number, koly: KolyBlock, tables: { blkx: BlkxResource; origin: string }[]): Chunk[] {
  const chunks: Chunk[] = [];
  for (const { blkx, origin } of tables) {
    const t = blkx.table;
    blkx.chunks.forEach((c, i) => {
      const where = `chunk ${i} of blkx table (${origin})`;
      if (c.EntryType === BLKX_COMMENT || c.EntryType === BLKX_TERMINATOR) return;
      if (!KNOWN_TYPES.has(c.EntryType)) throw corrupt(image, `${where}: unknown chunk type 0x${c.EntryType.toString(16)}`);
      const zero = c.EntryType === BLKX_ZERO || c.EntryType === BLKX_IGNORE;
      if (!zero && c.SectorCount > DMG_SECTORCOUNTS_MAX) {
        throw new BlockError('EINVAL', `${image}: dmg ${where}: sector count ${c.SectorCount} is larger than max (${DMG_SECTORCOUNTS_MAX})`);
      }
      if (c.CompressedLength > DMG_LENGTHS_MAX) {
        throw new BlockError('EINVAL', `${image}: dmg ${where}: length ${c.CompressedLength} is larger than max (${DMG_LENGTHS_MAX})`);
      }
      const sector = t.SectorNumber + c.SectorNumber;
      const offset = koly.DataForkOffset + t.DataOffset + c.CompressedOffset;
      if ((sector + c.SectorCount) * SECTOR > Number.MAX_SAFE_INTEGER) {
        throw corrupt(image, `${where}: sectors ${sector}+${c.SectorCount} are out of range`);
      }
      if (!zero && offset + c.CompressedLength > fileSize) {
        throw corrupt(image, `${where}: data at ${hex(offset)} (${c.CompressedLength} bytes) is past the end of the file (${fileSize} bytes)`);
      }
      if (c.EntryType === BLKX_RAW && c.CompressedLength < c.SectorCount * SECTOR) {
        throw corrupt(image, `${where}: raw chunk of ${c.CompressedLength} bytes at ${hex(offset)} is shorter than its ${c.SectorCount} sectors`);
      }
      if (c.SectorCount === 0) return;
      chunks.push({ type: c.EntryType, sector, sectorCount: c.SectorCount, offset, length: c.CompressedLength, origin: where });
    });
  }
  chunks.sort((a, b) => a.sector - b.sector);
  for (let i = 1; i < chunks.length; i++) {
    const p = chunks[i - 1]!;
    const c = chunks[i]!;
    if (c.sector < p.sector + p.sectorCount) {
      throw corrupt(image, `${c.origin} (sectors ${c.sector}+${c.sectorCount}) overlaps ${p.origin} (sectors ${p.sector}+${p.sectorCount})`);
    }
  }
  return chunks;
}

function checkMasterChecksum(image: string, koly: KolyBlock, kolyOffset: number, tables: { blkx: BlkxResource }[]): void {
  if (koly.MasterChecksumType !== UDIF_CHECKSUM_CRC32) return;
  const crcs = tables.filter((t) => t.blkx.table.ChecksumType === UDIF_CHECKSUM_CRC32).map((t) => crc32OfField(t.blkx.table.Checksum));
  const want = crc32OfField(koly.MasterChecksum);
  const got = masterChecksum(crcs);
  if (want !== got) {
    throw corrupt(
      image,
      `koly MasterChecksum at ${hex(kolyOffset + KOLY.offsetOf('MasterChecksum'))}: stored CRC-32 0x${want.toString(16).padStart(8, '0')} does not match the blkx tables (0x${got.toString(16).padStart(8, '0')})`,
    );
  }
}

/** Index of the chunk holding `sector`, or -1. */
function findChunk(chunks: Chunk[], sector: number): number {
  let lo = 0;
  let hi = chunks.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const c = chunks[mid]!;
    if (sector < c.sector) hi = mid - 1;
    else if (sector >= c.sector + c.sectorCount) lo = mid + 1;
    else return mid;
  }
  return -1;
}

async function decompressChunk(bs: BlockNode, c: Chunk): Promise<Uint8Array> {
  const codec = chunkCodec(c.type)!;
  const input = new Uint8Array(c.length);
  await bdrvPread(bs.file!.node, c.offset, c.length, input);
  const out = new Uint8Array(c.sectorCount * SECTOR);
  const why = await codec.decompress!(input, out);
  if (why) throw new BlockError('EIO', `${bs.filename}: dmg ${codec.name} ${c.origin} at ${hex(c.offset)} (${c.length} bytes): ${why}`);
  return out;
}

export const dmgDriver: BlockDriver = {
  name: 'dmg',
  kind: 'format',

  probe: dmgProbe,

  async open(bs) {
    requireReadOnly(bs, 'dmg');
    const image = bs.filename;
    const fileSize = bs.file!.node.totalBytes;
    const { koly, kolyOffset } = await readKoly(bs);
    const field = (f: keyof KolyBlock & string) => `koly ${f} at ${hex(kolyOffset + KOLY.offsetOf(f))}`;
    if (koly.DataForkOffset > kolyOffset) {
      throw new BlockError('EINVAL', `${image}: dmg ${field('DataForkOffset')}: data fork at ${hex(koly.DataForkOffset)} is past the trailer`);
    }
    if (koly.RsrcForkOffset >= kolyOffset || koly.RsrcForkLength > kolyOffset - koly.RsrcForkOffset) {
      throw new BlockError('EINVAL', `${image}: dmg ${field('RsrcForkOffset')}: resource fork ${hex(koly.RsrcForkOffset)}+${koly.RsrcForkLength} does not end before the trailer`);
    }
    if (koly.XMLOffset >= kolyOffset || koly.XMLLength > kolyOffset - koly.XMLOffset) {
      throw new BlockError('EINVAL', `${image}: dmg ${field('XMLOffset')}: property list ${hex(koly.XMLOffset)}+${koly.XMLLength} does not end before the trailer`);
    }
    if (koly.SectorCount * SECTOR > Number.MAX_SAFE_INTEGER) {
      throw new BlockError('EFBIG', `${image}: dmg ${field('SectorCount')}: ${koly.SectorCount} sectors is too large`);
    }
    const tables = await readBlkxTables(bs, koly, kolyOffset);
    checkMasterChecksum(image, koly, kolyOffset, tables);
    const chunks = buildChunkTable(image, fileSize, koly, tables);
    bs.opaque = { chunks, cache: new ChunkCache() } satisfies DmgState;
    bs.totalBytes = koly.SectorCount * SECTOR;
    bs.limits = { ...bs.limits, requestAlignment: SECTOR };
  },

  async close(bs) {
    bs.state<DmgState>().cache.clear();
  },

  async preadv(bs, offset, bytes, buf) {
    const s = bs.state<DmgState>();
    let done = 0;
    while (done < bytes) {
      const sector = (offset + done) / SECTOR;
      const i = findChunk(s.chunks, sector);
      if (i < 0) throw new BlockError('EIO', `${bs.filename}: dmg: no chunk maps sector ${sector} (offset ${hex(offset + done)})`);
      const c = s.chunks[i]!;
      const skip = (sector - c.sector) * SECTOR;
      const n = Math.min(bytes - done, c.sectorCount * SECTOR - skip);
      const out = buf.subarray(done, done + n);
      if (c.type === BLKX_ZERO || c.type === BLKX_IGNORE) {
        out.fill(0);
      } else if (c.type === BLKX_RAW) {
        await bdrvPread(bs.file!.node, c.offset + skip, n, out);
      } else {
        const codec = chunkCodec(c.type)!;
        if (!codec.decompress) {
          throw new BlockError('ENOTSUP', `${bs.filename}: dmg ${c.origin} at ${hex(c.offset)}: ${codec.name}-compressed chunks are not supported`);
        }
        await s.cache.with(
          i,
          () => decompressChunk(bs, c),
          (data) => out.set(data.subarray(skip, skip + n)),
        );
      }
      done += n;
    }
  },

  async blockStatus(_bs, _wantZero, _offset, bytes) {
    // QEMU has no block-status callback for dmg: the generic answer is "data".
    return { status: BDRV_BLOCK_DATA, pnum: bytes };
  },

  async getAllocatedFileSize(bs) {
    const file = bs.file!.node;
    return file.driver.getAllocatedFileSize?.(file);
  },
};


