/**
 * Builders for the formats qemu-img cannot create (dmg, cloop, bochs): test
 * images made from the specification with the drivers' own structure
 * definitions (src/formats/<name>/), so a builder and a reader share one
 * field table. Each builder returns the image bytes and the disk contents a
 * correct reader must produce. `tamper` hooks change structure values before
 * they are serialized (and before checksums are computed, unless noted), so
 * bad-input tests break images through the same definitions.
 */
import { execFileSync } from 'node:child_process';
import { deflateSync } from 'node:zlib';
import {
  BLKX_BZIP2,
  BLKX_COMMENT,
  BLKX_IGNORE,
  BLKX_LZFSE,
  BLKX_RAW,
  BLKX_TERMINATOR,
  BLKX_ZERO,
  BLKX_ZLIB,
  MISH_SIGNATURE,
  serializeBlkx,
  type BlkxChunk,
  type BlkxResource,
} from '../../src/formats/dmg/blkx.js';
import { KOLY, KOLY_SIGNATURE, KOLY_SIZE, type KolyBlock } from '../../src/formats/dmg/koly.js';
import { serializePlist } from '../../src/formats/dmg/plist.js';
import { serializeRsrcFork } from '../../src/formats/dmg/rsrc.js';
import { crc32, crc32Field, masterChecksum, UDIF_CHECKSUM_CRC32 } from '../../src/formats/dmg/udif-checksum.js';
import { CLOOP_HEAD, CLOOP_PREAMBLE_V2, serializeOffsets, type CloopHead } from '../../src/formats/cloop/header.js';
import {
  bitmapSet,
  BOCHS_GROWING_TYPE,
  BOCHS_HEADER_SIZE,
  BOCHS_HEADER_VERSION,
  BOCHS_MAGIC,
  BOCHS_NOT_ALLOCATED,
  BOCHS_REDOLOG_TYPE,
  serializeBochsHeader,
  serializeCatalog,
  type BochsHeader,
} from '../../src/formats/bochs/header.js';

const SECTOR = 512;

export interface BuiltImage {
  image: Uint8Array;
  /** What the disk must read as (virtual size bytes). */
  disk: Uint8Array;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let p = 0;
  for (const x of parts) {
    out.set(x, p);
    p += x.length;
  }
  return out;
}

export function bzip2(data: Uint8Array): Uint8Array {
  return new Uint8Array(execFileSync('bzip2', ['-c', '-9'], { input: data, maxBuffer: 1 << 30 }));
}

// ------------------------------------------------------------------ dmg

export type DmgChunkKind = 'zero' | 'ignore' | 'raw' | 'zlib' | 'bzip2' | 'lzfse' | 'comment';

export interface DmgChunkSpec {
  kind: DmgChunkKind | number;
  sectors: number;
  /** Contents for data chunks (sectors * 512 bytes); zero/ignore chunks read as zeros. */
  data?: Uint8Array;
}

export interface DmgOptions {
  /** One chunk list per blkx table (partition), laid out one after the other on the disk. */
  partitions: DmgChunkSpec[][];
  /** Where the blkx tables live: the XML property list (default) or a resource fork. */
  variant?: 'xml' | 'rsrc';
  /** Pad the file so its length is not a multiple of 512 (koly not sector-aligned). */
  oddTail?: boolean;
  tamper?: {
    blkx?: (r: BlkxResource, partition: number) => void;
    /** Runs after checksums are computed: a changed checksum stays wrong. */
    koly?: (k: KolyBlock) => void;
  };
}

const KIND_TYPE: Record<DmgChunkKind, number> = {
  zero: BLKX_ZERO,
  ignore: BLKX_IGNORE,
  raw: BLKX_RAW,
  zlib: BLKX_ZLIB,
  bzip2: BLKX_BZIP2,
  lzfse: BLKX_LZFSE,
  comment: BLKX_COMMENT,
};

/** A UDIF image with the given partitions (chunks stored as their kind says). */
export function buildDmg(opts: DmgOptions): BuiltImage {
  const fork: Uint8Array[] = [];
  let forkLen = 0;
  const diskParts: Uint8Array[] = [];
  const tables: BlkxResource[] = [];
  let sector = 0;
  opts.partitions.forEach((chunks, p) => {
    const dataOffset = forkLen;
    const partData: Uint8Array[] = [];
    const entries: BlkxChunk[] = [];
    let rel = 0;
    for (const c of chunks) {
      const type = typeof c.kind === 'number' ? c.kind : KIND_TYPE[c.kind];
      const data = c.data ?? new Uint8Array(c.sectors * SECTOR);
      let stored: Uint8Array = new Uint8Array(0);
      if (type === BLKX_RAW) stored = data;
      else if (type === BLKX_ZLIB) stored = new Uint8Array(deflateSync(data));
      else if (type === BLKX_BZIP2) stored = bzip2(data);
      else if (type === BLKX_LZFSE || (type !== BLKX_ZERO && type !== BLKX_IGNORE && type !== BLKX_COMMENT)) stored = data.subarray(0, 64);
      const sectors = type === BLKX_COMMENT ? 0 : c.sectors;
      entries.push({
        EntryType: type,
        Comment: 0,
        SectorNumber: rel,
        SectorCount: sectors,
        CompressedOffset: forkLen - dataOffset,
        CompressedLength: stored.length,
      });
      fork.push(stored);
      forkLen += stored.length;
      if (sectors) partData.push(type === BLKX_ZERO || type === BLKX_IGNORE ? new Uint8Array(sectors * SECTOR) : data);
      rel += sectors;
    }
    entries.push({ EntryType: BLKX_TERMINATOR, Comment: 0, SectorNumber: rel, SectorCount: 0, CompressedOffset: forkLen - dataOffset, CompressedLength: 0 });
    const part = concat(partData);
    const r: BlkxResource = {
      table: {
        Signature: MISH_SIGNATURE,
        Version: 1,
        SectorNumber: sector,
        SectorCount: rel,
        DataOffset: dataOffset,
        BuffersNeeded: 0x208,
        BlockDescriptors: p,
        ChecksumType: UDIF_CHECKSUM_CRC32,
        ChecksumSize: 32,
        Checksum: crc32Field(crc32(part)),
        NumberOfBlockChunks: entries.length,
      },
      chunks: entries,
    };
    opts.tamper?.blkx?.(r, p);
    tables.push(r);
    diskParts.push(part);
    sector += rel;
  });
  const dataFork = concat(fork);
  const blobs = tables.map(serializeBlkx);
  const koly: KolyBlock = {
    Signature: KOLY_SIGNATURE,
    Version: 4,
    HeaderSize: KOLY_SIZE,
    Flags: 1,
    RunningDataForkOffset: 0,
    DataForkOffset: 0,
    DataForkLength: dataFork.length,
    RsrcForkOffset: 0,
    RsrcForkLength: 0,
    SegmentNumber: 1,
    SegmentCount: 1,
    SegmentID: new Uint8Array(16).fill(0x5a),
    DataChecksumType: UDIF_CHECKSUM_CRC32,
    DataChecksumSize: 32,
    DataChecksum: crc32Field(crc32(dataFork)),
    XMLOffset: 0,
    XMLLength: 0,
    MasterChecksumType: UDIF_CHECKSUM_CRC32,
    MasterChecksumSize: 32,
    MasterChecksum: crc32Field(masterChecksum(tables.filter((t) => t.table.ChecksumType === UDIF_CHECKSUM_CRC32).map((t) => new DataView(t.table.Checksum.buffer).getUint32(0)))),
    ImageVariant: 1,
    SectorCount: sector,
  };
  let meta: Uint8Array;
  if (opts.variant === 'rsrc') {
    meta = serializeRsrcFork(blobs);
    koly.RsrcForkOffset = dataFork.length;
    koly.RsrcForkLength = meta.length;
  } else {
    const xml = serializePlist(blobs.map((b, i) => ({ Name: `disk image (Apple_HFS : ${i})`, ID: i, Attributes: 0x50, Data: b })));
    meta = new TextEncoder().encode(xml);
    koly.XMLOffset = dataFork.length;
    koly.XMLLength = meta.length;
  }
  opts.tamper?.koly?.(koly);
  const pad = opts.oddTail ? new Uint8Array(3) : new Uint8Array(0);
  return { image: concat([dataFork, meta, pad, KOLY.serialize(koly)]), disk: concat(diskParts) };
}

// ------------------------------------------------------------------ cloop

export interface CloopOptions {
  blockSize: number;
  /** Disk contents; padded with zeros to whole blocks. */
  data: Uint8Array;
  tamper?: { head?: (h: CloopHead) => void; offsets?: (o: number[]) => void };
}

export function buildCloop(opts: CloopOptions): BuiltImage {
  const n = Math.ceil(opts.data.length / opts.blockSize);
  const disk = new Uint8Array(n * opts.blockSize);
  disk.set(opts.data);
  const blocks: Uint8Array[] = [];
  for (let i = 0; i < n; i++) blocks.push(new Uint8Array(deflateSync(disk.subarray(i * opts.blockSize, (i + 1) * opts.blockSize), { level: 9 })));
  const head: CloopHead = { preamble: new TextEncoder().encode(CLOOP_PREAMBLE_V2), block_size: opts.blockSize, num_blocks: n };
  const offsets = [CLOOP_HEAD.size + (n + 1) * 8];
  for (const b of blocks) offsets.push(offsets[offsets.length - 1]! + b.length);
  opts.tamper?.head?.(head);
  opts.tamper?.offsets?.(offsets);
  return { image: concat([CLOOP_HEAD.serialize(head), serializeOffsets(offsets), ...blocks]), disk };
}

// ------------------------------------------------------------------ bochs

export interface BochsOptions {
  diskSize: number;
  extentSize: number;
  /** Disk contents (diskSize bytes); sectors not `present` must be zero. */
  data: Uint8Array;
  /** Whether a sector is written in the image (its extent is then allocated). */
  present: (sector: number) => boolean;
  version?: number;
  /** Extra catalog entries past what the disk needs. */
  extraCatalog?: number;
  tamper?: { header?: (h: BochsHeader) => void; catalog?: (c: number[]) => void };
}

export function buildBochs(opts: BochsOptions): BuiltImage {
  const spe = opts.extentSize / SECTOR;
  const nExtents = Math.ceil(opts.diskSize / opts.extentSize);
  const catalogSize = nExtents + (opts.extraCatalog ?? 0);
  const bitmapBytes = Math.max(1, Math.ceil(spe / 8));
  const bitmapBlocks = Math.ceil(bitmapBytes / SECTOR);
  const catalog: number[] = new Array(catalogSize).fill(BOCHS_NOT_ALLOCATED);
  const extents: Uint8Array[] = [];
  const disk = new Uint8Array(opts.diskSize);
  // Allocate extents in reverse disk order so the catalog is not the identity.
  for (let e = nExtents - 1; e >= 0; e--) {
    const bitmap = new Uint8Array(bitmapBlocks * SECTOR);
    const body = new Uint8Array(opts.extentSize);
    let any = false;
    for (let i = 0; i < spe; i++) {
      const s = e * spe + i;
      if (s * SECTOR >= opts.diskSize || !opts.present(s)) continue;
      any = true;
      bitmapSet(bitmap, i);
      body.set(opts.data.subarray(s * SECTOR, (s + 1) * SECTOR), i * SECTOR);
      disk.set(opts.data.subarray(s * SECTOR, (s + 1) * SECTOR), s * SECTOR);
    }
    if (!any) continue;
    catalog[e] = extents.length / 2;
    extents.push(bitmap, body);
  }
  const header: BochsHeader = {
    magic: BOCHS_MAGIC,
    type: BOCHS_REDOLOG_TYPE,
    subtype: BOCHS_GROWING_TYPE,
    version: opts.version ?? BOCHS_HEADER_VERSION,
    header: BOCHS_HEADER_SIZE,
    catalog: catalogSize,
    bitmap: bitmapBytes,
    extent: opts.extentSize,
    disk: opts.diskSize,
  };
  opts.tamper?.header?.(header);
  opts.tamper?.catalog?.(catalog);
  return { image: concat([serializeBochsHeader(header), serializeCatalog(catalog), ...extents]), disk };
}
