/**
 * VMDK extents: opening a sparse extent (hosted "KDMV" or ESX "COWD"), the
 * grain directory / grain table lookup, and reading grains (plain or
 * deflate-compressed behind a grain marker).
 *
 * A guest offset maps to an extent by its running end sector; inside a
 * sparse extent, grain directory entry → grain table (sectors) → grain
 * (sectors). Grain tables are cached per extent (a bounded LRU, as QEMU's
 * L2 cache of 16 tables). Every table and grain we read is checked against
 * the end of its file first: a crafted entry fails with a message naming the
 * extent, the structure and the offset instead of reading garbage.
 */
import { inflateExact } from '../../codecs/zlib-exact.js';
import { deflateZlib } from '../../codecs/deflate.js';
import { BlockError, hex } from '../../block/errors.js';
import type { BlockNode } from '../../block/node.js';
import { bdrvPread, bdrvPwrite } from '../../block/io.js';
import { bdrvDebugEvent } from '../../block/debug-event.js';
import { allocBuffer, freeBuffer } from '../../block/buffers.js';
import {
  MARKER_END_OF_STREAM,
  MARKER_FOOTER,
  SECTOR_SIZE,
  VMDK3_MAGIC,
  VMDK4_COMPRESSION_DEFLATE,
  VMDK4_FLAG_MARKER,
  VMDK4_FLAG_RGD,
  VMDK4_FLAG_ZERO_GRAIN,
  VMDK4_GD_AT_END,
  VMDK4_MAGIC,
  VMDK_GTE_ZEROED,
  serializeGrainMarker,
  parseCowdHeader,
  parseGrainMarker,
  parseSparseExtentHeader,
  type SparseExtentHeader,
} from './sparse-header.js';

export interface VmdkExtent {
  file: BlockNode;
  flat: boolean;
  compressed: boolean;
  hasMarker: boolean;
  hasZeroGrain: boolean;
  version: number;
  /** Size in sectors. */
  sectors: number;
  /** First guest sector after this extent (running sum over the extents). */
  endSector: number;
  /** Byte offset of the data in a flat extent's file. */
  flatStartOffset: number;
  /** Byte offset of the grain directory. */
  l1TableOffset: number;
  /** Grain directory entries (sector offsets of grain tables). */
  l1Table: Uint32Array;
  /** The redundant grain directory (byte offset 0 when there is none) and its entries. */
  l1BackupTableOffset: number;
  l1BackupTable: Uint32Array | null;
  /** Next free sector for a new grain (QEMU's next_cluster_sector). */
  nextClusterSector: number;
  /** Guest sectors one grain directory entry covers. */
  l1EntrySectors: number;
  /** Entries per grain table. */
  l2Size: number;
  /** Sectors per grain (a flat extent counts as one grain). */
  clusterSectors: number;
  /** The extent line's type (empty for a monolithic sparse file opened directly). */
  type: string;
  /** Grain tables by sector offset, most recently used last. */
  l2Cache: Map<number, Uint32Array>;
  /** The grain table used last (already last in l2Cache's order). */
  l2Recent: number;
  /** The last decompressed grain (stream-optimized reads often come in pieces of one grain). */
  lastGrain: { host: number; data: Uint8Array } | null;
}

/** QEMU's limits: a grain above 1 GiB or a grain directory above 32 Mi entries is refused. */
export const MAX_CLUSTER_SECTORS = 0x200000;
export const MAX_L1_ENTRIES = 32 * 1024 * 1024;
const L2_CACHE_TABLES = 16;

/** What one guest range is in one extent. */
export type GrainKind = 'data' | 'compressed' | 'zero' | 'unallocated';

export interface GrainRun {
  kind: GrainKind;
  /** Bytes from the asked offset this answer holds for (> 0). */
  bytes: number;
  /** Byte offset in `extent.file` (data: where the bytes are; compressed: the grain marker). */
  host: number;
  /** Offset inside the grain (compressed runs only). */
  inGrain: number;
}

function makeExtent(partial: Partial<VmdkExtent> & { file: BlockNode; sectors: number; clusterSectors: number }): VmdkExtent {
  return {
    flat: false,
    compressed: false,
    hasMarker: false,
    hasZeroGrain: false,
    version: 1,
    endSector: 0,
    flatStartOffset: 0,
    l1TableOffset: 0,
    l1Table: new Uint32Array(0),
    l1BackupTableOffset: 0,
    l1BackupTable: null,
    nextClusterSector: 0,
    l1EntrySectors: 0,
    l2Size: 0,
    type: '',
    l2Cache: new Map(),
    l2Recent: -1,
    lastGrain: null,
    ...partial,
  };
}

/** A flat extent: `sectors` sectors at byte `offset` of `file`. */
export function flatExtent(file: BlockNode, sectors: number, offset: number, type: string): VmdkExtent {
  return makeExtent({ file, flat: true, sectors, clusterSectors: sectors, flatStartOffset: offset, type });
}

/** Checks QEMU's limits (vmdk_add_extent) and reads the grain directory. */
async function finishSparse(ext: VmdkExtent, l1Size: number, name: string): Promise<VmdkExtent> {
  if (ext.clusterSectors > MAX_CLUSTER_SECTORS) {
    throw new BlockError('EFBIG', `${name}: Invalid granularity, image may be corrupt (grain of ${ext.clusterSectors} sectors)`, {
      qemuMessage: 'Invalid granularity, image may be corrupt',
    });
  }
  if (l1Size > MAX_L1_ENTRIES) {
    throw new BlockError('EFBIG', `${name}: L1 size too big (grain directory of ${l1Size} entries)`, { qemuMessage: 'L1 size too big' });
  }
  // The header's capacity and grainSize may be approximate past 2^53 (sparse-header.ts): refused here.
  if (!Number.isSafeInteger(ext.sectors) || !Number.isSafeInteger(ext.sectors * SECTOR_SIZE)) throw new BlockError('EFBIG', `${name}: capacity of ${ext.sectors} sectors is too large`);
  const bytes = l1Size * 4;
  const fileLen = ext.file.totalBytes;
  if (bytes > 0 && (ext.l1TableOffset >= fileLen || ext.l1TableOffset + bytes > fileLen)) {
    throw new BlockError('EINVAL', `${name}: grain directory at ${hex(ext.l1TableOffset)} (${bytes} bytes) is beyond the end of the file (${fileLen} bytes)`);
  }
  ext.l1Table = await readDirectory(ext, ext.l1TableOffset, l1Size);
  if (ext.l1BackupTableOffset) {
    if (ext.l1BackupTableOffset + bytes > fileLen) {
      throw new BlockError('EINVAL', `${name}: redundant grain directory at ${hex(ext.l1BackupTableOffset)} (${bytes} bytes) is beyond the end of the file (${fileLen} bytes)`);
    }
    ext.l1BackupTable = await readDirectory(ext, ext.l1BackupTableOffset, l1Size);
  }
  ext.nextClusterSector = Math.ceil(Math.ceil(fileLen / SECTOR_SIZE) / ext.clusterSectors) * ext.clusterSectors;
  return ext;
}

async function readDirectory(ext: VmdkExtent, at: number, entries: number): Promise<Uint32Array> {
  const raw = new Uint8Array(entries * 4);
  if (raw.length) await bdrvPread(ext.file, at, raw.length, raw);
  const dv = new DataView(raw.buffer);
  const out = new Uint32Array(entries);
  for (let i = 0; i < entries; i++) out[i] = dv.getUint32(i * 4, true);
  return out;
}

/** Reads the footer of a stream-optimized extent (gdOffset = GD_AT_END): marker, header, end-of-stream. */
async function readFooterHeader(file: BlockNode, name: string): Promise<SparseExtentHeader> {
  const len = file.totalBytes;
  const at = len - 1536;
  if (at < 0) throw new BlockError('EINVAL', `${name}: Invalid footer: the file is too short (${len} bytes)`);
  const buf = new Uint8Array(1536);
  await bdrvPread(file, at, 1536, buf);
  const footerMarker = parseGrainMarker(buf, 0, name, at);
  const eos = parseGrainMarker(buf, 1024, name, at + 1024);
  const magic = new DataView(buf.buffer, 512, 4).getUint32(0, false);
  if (magic !== VMDK4_MAGIC || footerMarker.size !== 0 || footerMarker.type !== MARKER_FOOTER || eos.val !== 0 || eos.size !== 0 || eos.type !== MARKER_END_OF_STREAM) {
    throw new BlockError('EINVAL', `${name}: Invalid footer at ${hex(at)}`);
  }
  return parseSparseExtentHeader(buf.subarray(512, 1024), name);
}

export interface SparseOpenResult {
  /** The extent, or null when the header is a capacity-0 pointer to an embedded descriptor. */
  extent: VmdkExtent | null;
  /** Byte offset of an embedded descriptor that describes the whole image instead (capacity 0). */
  descriptorAt?: number;
}

/**
 * Opens a sparse extent in `file` whose first sector is `head`. `readOnly`
 * matters for version 3 extents, which QEMU only opens read-only.
 */
export async function openSparseExtent(file: BlockNode, head: Uint8Array, type: string, readOnly: boolean): Promise<SparseOpenResult> {
  const name = file.filename;
  const magic = head.length >= 4 ? new DataView(head.buffer, head.byteOffset, 4).getUint32(0, false) : 0;
  if (magic === VMDK3_MAGIC) {
    const h = parseCowdHeader(head, name);
    const l2Size = 4096;
    const ext = makeExtent({
      file,
      sectors: h.numSectors,
      clusterSectors: h.grainSize,
      l1TableOffset: h.gdOffset * SECTOR_SIZE,
      l1EntrySectors: l2Size * h.grainSize,
      l2Size,
      type,
    });
    if (h.grainSize === 0) throw new BlockError('EINVAL', `${name}: COWD grain size is 0`);
    return { extent: await finishSparse(ext, h.numGDEntries, name) };
  }
  if (magic !== VMDK4_MAGIC) throw new BlockError('EINVAL', `${name}: Image not in VMDK format`);
  let h = parseSparseExtentHeader(head, name);
  if (h.capacity === 0 && h.descriptorOffset > 0) return { extent: null, descriptorAt: h.descriptorOffset * SECTOR_SIZE };
  if (h.gdOffset === VMDK4_GD_AT_END) h = await readFooterHeader(file, name);
  const compressed = h.compressAlgorithm === VMDK4_COMPRESSION_DEFLATE;
  if (h.version > 3) throw new BlockError('ENOTSUP', `${name}: Unsupported VMDK version ${h.version}`);
  if (h.version === 3 && !readOnly && !compressed) throw new BlockError('EINVAL', `${name}: VMDK version 3 must be read only`);
  if (h.numGTEsPerGT > 512) {
    throw new BlockError('EINVAL', `${name}: L2 table size too big (numGTEsPerGT ${h.numGTEsPerGT} in the header at 0x0)`, { qemuMessage: 'L2 table size too big' });
  }
  const l1EntrySectors = h.numGTEsPerGT * h.grainSize;
  if (l1EntrySectors === 0) throw new BlockError('EINVAL', `${name}: L1 entry size is invalid (numGTEsPerGT ${h.numGTEsPerGT}, grainSize ${h.grainSize})`);
  if (h.gdOffset < 0) throw new BlockError('EINVAL', `${name}: grain directory offset in the footer is still 'at end'`);
  const l1Size = Math.ceil(h.capacity / l1EntrySectors);
  if (Math.ceil(file.totalBytes / SECTOR_SIZE) < h.overHead) {
    throw new BlockError('EINVAL', `${name}: File truncated, expecting at least ${h.overHead * SECTOR_SIZE} bytes`);
  }
  const ext = makeExtent({
    file,
    sectors: h.capacity,
    clusterSectors: h.grainSize,
    l1TableOffset: h.gdOffset * SECTOR_SIZE,
    l1EntrySectors,
    l2Size: h.numGTEsPerGT,
    compressed,
    hasMarker: (h.flags & VMDK4_FLAG_MARKER) !== 0,
    hasZeroGrain: (h.flags & VMDK4_FLAG_ZERO_GRAIN) !== 0,
    version: h.version,
    // The redundant directory is kept up to date by writes; reads never need it.
    l1BackupTableOffset: h.flags & VMDK4_FLAG_RGD ? h.rgdOffset * SECTOR_SIZE : 0,
    type,
  });
  return { extent: await finishSparse(ext, l1Size, name) };
}

/** The cached grain table at `l2Sector`, made the most recently used (the last one set already is), or undefined. */
function cachedGrainTable(ext: VmdkExtent, l2Sector: number): Uint32Array | undefined {
  const table = ext.l2Cache.get(l2Sector);
  if (table && ext.l2Recent !== l2Sector) {
    ext.l2Cache.delete(l2Sector);
    ext.l2Cache.set(l2Sector, table);
    ext.l2Recent = l2Sector;
  }
  return table;
}

export async function loadGrainTable(ext: VmdkExtent, l2Sector: number): Promise<Uint32Array> {
  const hit = cachedGrainTable(ext, l2Sector);
  if (hit) return hit;
  const at = l2Sector * SECTOR_SIZE;
  const bytes = ext.l2Size * 4;
  if (at + bytes > ext.file.totalBytes) {
    throw new BlockError('EIO', `${ext.file.filename}: grain table at ${hex(at)} is beyond the end of the file (${ext.file.totalBytes} bytes)`);
  }
  const raw = new Uint8Array(bytes);
  await bdrvPread(ext.file, at, bytes, raw);
  const dv = new DataView(raw.buffer);
  const table = new Uint32Array(ext.l2Size);
  for (let i = 0; i < ext.l2Size; i++) table[i] = dv.getUint32(i * 4, true);
  if (ext.l2Cache.size >= L2_CACHE_TABLES) ext.l2Cache.delete(ext.l2Cache.keys().next().value!);
  ext.l2Cache.set(l2Sector, table);
  ext.l2Recent = l2Sector;
  return table;
}

/**
 * What [rel, rel + bytes) of `ext` (rel relative to the extent's start) is:
 * one answer for a run of grains of the same kind (and, for data,
 * contiguous in the file).
 */
export async function grainRun(ext: VmdkExtent, rel: number, bytes: number): Promise<GrainRun> {
  if (ext.flat) return { kind: 'data', bytes, host: ext.flatStartOffset + rel, inGrain: 0 };
  const grainBytes = ext.clusterSectors * SECTOR_SIZE;
  let first: GrainRun | null = null;
  let done = 0;
  while (done < bytes) {
    const off = rel + done;
    const sector = Math.floor(off / SECTOR_SIZE);
    const inGrain = off % grainBytes;
    const n = Math.min(bytes - done, grainBytes - inGrain);
    // A cached grain table answers without a promise (most lookups of a sequential read).
    const one = lookupGrain(ext, sector, inGrain, n) ?? (await loadGrainTable(ext, grainTableSector(ext, sector)), lookupGrain(ext, sector, inGrain, n)!);
    if (!first) {
      first = one;
      if (one.kind === 'compressed') return first;
    } else if (one.kind !== first.kind || one.kind === 'compressed' || (one.kind === 'data' && one.host !== first.host + first.bytes)) {
      break;
    } else {
      first.bytes += n;
    }
    done += n;
  }
  return first!;
}

/** The grain table's sector for guest `sector` (0: none), checked against the grain directory. */
function grainTableSector(ext: VmdkExtent, sector: number): number {
  const l1Index = Math.floor(sector / ext.l1EntrySectors);
  if (l1Index >= ext.l1Table.length) {
    throw new BlockError('EIO', `${ext.file.filename}: sector ${sector} is beyond the grain directory (${ext.l1Table.length} entries)`);
  }
  return ext.l1Table[l1Index]!;
}

/** The grain holding guest `sector` as a run of `bytes`, or undefined when its grain table is not cached yet. */
function lookupGrain(ext: VmdkExtent, sector: number, inGrain: number, bytes: number): GrainRun | undefined {
  const l2Sector = grainTableSector(ext, sector);
  if (l2Sector === 0) return { kind: 'unallocated', bytes, host: 0, inGrain };
  const table = cachedGrainTable(ext, l2Sector);
  if (!table) return undefined;
  const l2Index = Math.floor(sector / ext.clusterSectors) % ext.l2Size;
  const gte = table[l2Index]!;
  if (ext.hasZeroGrain && gte === VMDK_GTE_ZEROED) return { kind: 'zero', bytes, host: 0, inGrain };
  if (gte === 0) return { kind: 'unallocated', bytes, host: 0, inGrain };
  const host = gte * SECTOR_SIZE;
  if (host >= ext.file.totalBytes) {
    const entryAt = l2Sector * SECTOR_SIZE + l2Index * 4;
    throw new BlockError('EIO', `${ext.file.filename}: grain table entry at ${hex(entryAt)} points to ${hex(host)}, beyond the end of the file (${ext.file.totalBytes} bytes)`);
  }
  if (ext.compressed) return { kind: 'compressed', bytes, host, inGrain };
  return { kind: 'data', bytes, host: host + inGrain, inGrain };
}

/** Reads from a plain grain run, checking it lies inside the file (flat extents read zeros past the end, as QEMU does). */
export async function readData(ext: VmdkExtent, host: number, bytes: number, buf: Uint8Array): Promise<void> {
  const len = ext.file.totalBytes;
  if (!ext.flat && host + bytes > len) {
    throw new BlockError('EIO', `${ext.file.filename}: grain data at ${hex(host)} (${bytes} bytes) runs past the end of the file (${len} bytes)`);
  }
  const have = Math.max(0, Math.min(bytes, len - host));
  await bdrvDebugEvent(ext.file, 'read_aio');
  if (have > 0) await bdrvPread(ext.file, host, have, buf.subarray(0, have));
  if (have < bytes) buf.fill(0, have, bytes);
}

/** Decompresses the grain whose marker (or raw deflate stream without markers) starts at `host`. */
export async function readCompressedGrain(ext: VmdkExtent, host: number): Promise<Uint8Array> {
  if (ext.lastGrain?.host === host) return ext.lastGrain.data;
  const grainBytes = ext.clusterSectors * SECTOR_SIZE;
  // A grain marker plus its compressed data may be larger than a grain; QEMU reads two.
  const want = Math.min(grainBytes * 2, ext.file.totalBytes - host);
  const buf = new Uint8Array(want);
  await bdrvPread(ext.file, host, want, buf);
  const out = new Uint8Array(grainBytes);
  inflateGrain(ext, buf, host, out);
  ext.lastGrain = { host, data: out };
  return out;
}

/** Most file bytes one read of consecutive compressed grains may span. */
const GRAIN_SPAN_MAX_BYTES = 4 * 1024 * 1024;

/**
 * Decompresses whole compressed grains straight into `out` (guest bytes
 * [rel, rel + out.length) of `ext`, rel on a grain boundary, the first
 * grain's marker at `firstHost`). A stream-optimized file stores grains in
 * guest order, so the grains that follow lie one after the other in the
 * file: they are read with one request (each grain still sees the same two
 * grains' worth of bytes QEMU reads for it) and inflated where the guest
 * wants them, without a copy. Returns the bytes done: whole grains, at
 * least the first.
 */
export async function readCompressedGrains(ext: VmdkExtent, rel: number, firstHost: number, out: Uint8Array): Promise<number> {
  const grainBytes = ext.clusterSectors * SECTOR_SIZE;
  const hosts = [firstHost];
  while ((hosts.length + 1) * grainBytes <= out.length) {
    const next = await grainRun(ext, rel + hosts.length * grainBytes, grainBytes);
    const last = hosts[hosts.length - 1]!;
    if (next.kind !== 'compressed' || next.host <= last || next.host + 2 * grainBytes - firstHost > GRAIN_SPAN_MAX_BYTES) break;
    hosts.push(next.host);
  }
  const fileBytes = ext.file.totalBytes;
  const spanEnd = Math.min(hosts[hosts.length - 1]! + 2 * grainBytes, fileBytes);
  const span = allocBuffer(spanEnd - firstHost);
  try {
    await bdrvPread(ext.file, firstHost, span.length, span);
    for (let i = 0; i < hosts.length; i++) {
      const at = hosts[i]! - firstHost;
      const want = Math.min(grainBytes * 2, fileBytes - hosts[i]!);
      inflateGrain(ext, span.subarray(at, at + want), hosts[i]!, out.subarray(i * grainBytes, (i + 1) * grainBytes));
    }
  } finally {
    freeBuffer(span);
  }
  return hosts.length * grainBytes;
}

/** Inflates one grain (`raw`: its marker and data, or a bare deflate stream, as read from `host`) into `out`, exactly one grain. */
function inflateGrain(ext: VmdkExtent, raw: Uint8Array, host: number, out: Uint8Array): void {
  const name = ext.file.filename;
  let data = raw;
  let dataLen = out.length;
  if (ext.hasMarker) {
    const m = parseGrainMarker(raw, 0, name, host);
    data = raw.subarray(12);
    dataLen = m.size;
  }
  if (dataLen === 0 || dataLen > data.length) {
    throw new BlockError('EIO', `${name}: compressed grain at ${hex(host)} has an invalid size (${dataLen} bytes, ${data.length} available)`);
  }
  // A grain inflates to exactly one grain, as QEMU requires.
  const why = inflateExact(data.subarray(0, dataLen), out);
  if (why !== null) throw new BlockError('EIO', `${name}: compressed grain at ${hex(host)} does not decompress: ${why}`);
}

/**
 * Where guest offset `rel` of a sparse, uncompressed extent lives for a
 * write: the grain's host offset, allocating it (whole, with `fill` giving
 * the bytes around the write: the parent's or zeros) when it has none. The
 * grain is written before the grain tables point at it, so a crash leaks a
 * grain at worst.
 */
export async function allocateGrain(
  ext: VmdkExtent,
  rel: number,
  fill: (grainStart: number, grain: Uint8Array, zeroed: boolean) => Promise<void>,
): Promise<number> {
  const name = ext.file.filename;
  const sector = Math.floor(rel / SECTOR_SIZE);
  const l1Index = Math.floor(sector / ext.l1EntrySectors);
  if (l1Index >= ext.l1Table.length) throw new BlockError('EIO', `${name}: sector ${sector} is beyond the grain directory (${ext.l1Table.length} entries)`);
  const l2Sector = ext.l1Table[l1Index]!;
  if (l2Sector === 0) throw new BlockError('ENOTSUP', `${name}: grain directory entry ${l1Index} has no grain table; allocating grain tables is not supported`);
  const table = await loadGrainTable(ext, l2Sector);
  const l2Index = Math.floor(sector / ext.clusterSectors) % ext.l2Size;
  const gte = table[l2Index]!;
  const zeroed = ext.hasZeroGrain && gte === VMDK_GTE_ZEROED;
  if (gte !== 0 && !zeroed) {
    // A grain past the end of the file reads as an error (lookupGrain); writing there would grow the file to it.
    const host = gte * SECTOR_SIZE;
    const entryAt = l2Sector * SECTOR_SIZE + l2Index * 4;
    if (host >= ext.file.totalBytes) {
      throw new BlockError('EIO', `${name}: grain table entry at ${hex(entryAt)} points to ${hex(host)}, beyond the end of the file (${ext.file.totalBytes} bytes)`);
    }
    return host;
  }
  const grainBytes = ext.clusterSectors * SECTOR_SIZE;
  if (ext.nextClusterSector + ext.clusterSectors > 0xffffffff) throw new BlockError('ENOSPC', `${name}: no room for another grain (grain table entries are 32-bit sectors)`);
  const newSector = ext.nextClusterSector;
  ext.nextClusterSector += ext.clusterSectors;
  const grain = new Uint8Array(grainBytes);
  await fill(Math.floor(rel / grainBytes) * grainBytes, grain, zeroed);
  // The guest's data goes out with the grain's copied-in rest: QEMU's data write event (blkdebug's write_aio, 020).
  await bdrvDebugEvent(ext.file, 'write_aio');
  await bdrvPwrite(ext.file, newSector * SECTOR_SIZE, grainBytes, grain);
  await setGrainTableEntry(ext, l1Index, l2Sector, l2Index, newSector);
  return newSector * SECTOR_SIZE;
}

/**
 * Appends grain `rel / grainBytes` of a stream-optimized extent, compressed,
 * behind a grain marker (its guest sector and compressed length), padded to a
 * sector, and points its grain table entry at the marker. `data` is the
 * grain's bytes from its start (zeros after it). A grain is written once, as
 * QEMU's: an allocated one is refused.
 */
export async function writeCompressedGrain(ext: VmdkExtent, rel: number, data: Uint8Array): Promise<void> {
  const name = ext.file.filename;
  const grainBytes = ext.clusterSectors * SECTOR_SIZE;
  const sector = Math.floor(rel / SECTOR_SIZE);
  const l1Index = Math.floor(sector / ext.l1EntrySectors);
  if (l1Index >= ext.l1Table.length) throw new BlockError('EIO', `${name}: sector ${sector} is beyond the grain directory (${ext.l1Table.length} entries)`);
  const l2Sector = ext.l1Table[l1Index]!;
  if (l2Sector === 0) throw new BlockError('ENOTSUP', `${name}: grain directory entry ${l1Index} has no grain table; allocating grain tables is not supported`);
  const table = await loadGrainTable(ext, l2Sector);
  const l2Index = Math.floor(sector / ext.clusterSectors) % ext.l2Size;
  const gte = table[l2Index]!;
  if (gte !== 0 && !(ext.hasZeroGrain && gte === VMDK_GTE_ZEROED)) {
    throw new BlockError('EIO', `${name}: Could not write to allocated cluster for streamOptimized (grain at guest sector ${sector})`);
  }
  const grain = new Uint8Array(grainBytes);
  grain.set(data.subarray(0, grainBytes));
  const packed = deflateZlib(grain);
  const marker = ext.hasMarker ? serializeGrainMarker({ val: Math.floor(rel / grainBytes) * ext.clusterSectors, size: packed.length, type: 0 }) : new Uint8Array(0);
  const sectors = Math.ceil((marker.length + packed.length) / SECTOR_SIZE);
  if (ext.nextClusterSector + sectors > 0xffffffff) throw new BlockError('ENOSPC', `${name}: no room for another grain (grain table entries are 32-bit sectors)`);
  const out = new Uint8Array(sectors * SECTOR_SIZE);
  out.set(marker, 0);
  out.set(packed, marker.length);
  const at = ext.nextClusterSector;
  await bdrvPwrite(ext.file, at * SECTOR_SIZE, out.length, out);
  ext.nextClusterSector = at + sectors;
  await setGrainTableEntry(ext, l1Index, l2Sector, l2Index, at);
}

/** Points grain table entry `l2Index` of directory entry `l1Index` at `value`, in both directories. */
export async function setGrainTableEntry(ext: VmdkExtent, l1Index: number, l2Sector: number, l2Index: number, value: number): Promise<void> {
  const entry = new Uint8Array(4);
  new DataView(entry.buffer).setUint32(0, value >>> 0, true);
  await bdrvPwrite(ext.file, l2Sector * SECTOR_SIZE + l2Index * 4, 4, entry);
  const backup = ext.l1BackupTable?.[l1Index];
  if (backup) {
    await bdrvPwrite(ext.file, backup * SECTOR_SIZE + l2Index * 4, 4, entry);
    ext.l2Cache.get(backup)?.set([value >>> 0], l2Index);
  }
  ext.l2Cache.get(l2Sector)?.set([value >>> 0], l2Index);
  if (ext.lastGrain) ext.lastGrain = null;
}
