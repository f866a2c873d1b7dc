/**
 * The VHDX format driver (Microsoft MS-VHDX; QEMU's block/vhdx*.c is the
 * behaviour we match where QEMU has one).
 *
 * Open: the file identifier, the current header (valid checksum, higher
 * sequence number), the log (a pending log is replayed on a read/write open;
 * a read-only open of such an image is refused with QEMU's message), the
 * region table (BAT and metadata regions, no overlaps with each other or the
 * log), the metadata items (block size, virtual disk size, sector sizes,
 * page 83 data, parent locator), then the BAT, whose present blocks must lie
 * inside the file and outside every region.
 *
 * Writes: a new payload block's BAT entry reaches the file through the log
 * (logWriteAndFlush), as QEMU's vhdx_log_write_and_flush.
 *
 * Reads go block by block through the BAT. Differencing images (HasParent),
 * which QEMU cannot open or create, are read here (a read/write open is
 * refused with QEMU's "Operation not supported"): a partially present block consults
 * its sector bitmap, sectors not present come from the parent named by the
 * parent locator's relative_path (opened in the same storage namespace).
 *
 * Block status: QEMU's driver has none, so qemu-img reports every byte of a
 * dynamic or fixed image as data; we answer the same so `map` agrees. For
 * differencing images we answer precisely (absent ranges fall to the parent).
 *
 * Module map: header.ts (file identifier, headers, region table), metadata.ts,
 * bat.ts, log.ts (log structures, search and replay), crc32c.ts, guid.ts.
 */
import { BlockError, hex } from '../../block/errors.js';
import { type BlockDriver, type CheckResult, type DriverInfo } from '../../block/driver.js';
import type { BlockNode } from '../../block/node.js';
import { bdrvFlush, bdrvPread, bdrvPwrite, bdrvTruncate, readBacking } from '../../block/io.js';
import { BDRV_BLOCK_DATA, BDRV_BLOCK_ZERO, zeroRunByUnit } from '../../block/status.js';
import {
  isVhdxSignature,
  MiB,
  parseHeader,
  parseRegionTable,
  serializeHeader,
  VHDX_HEADER1_OFFSET,
  VHDX_HEADER2_OFFSET,
  VHDX_HEADER_SECTION_END,
  VHDX_HEADER_SIZE,
  VHDX_REGION_TABLE_OFFSET,
  VHDX_HEADER_BLOCK_SIZE,
  type VhdxHeader,
} from './header.js';
import {
  BAT_GUID,
  FILE_PARAMETERS_GUID,
  LOGICAL_SECTOR_SIZE_GUID,
  METADATA_GUID,
  PAGE83_DATA_GUID,
  PARENT_LOCATOR_GUID,
  PHYSICAL_SECTOR_SIZE_GUID,
  randomGuid,
  VHDX_PARENT_LOCATOR_TYPE,
  VIRTUAL_DISK_SIZE_GUID,
  ZERO_GUID,
} from './guid.js';
import {
  parseFileParameters,
  parseMetadataTable,
  parseParentLocator,
  parseSectorSize,
  parseVirtualDiskSize,
  VHDX_METADATA_TABLE_SIZE,
  type FileParameters,
  type MetadataTableEntry,
} from './metadata.js';
import {
  batEntries,
  bitmapIndex,
  chunkRatio,
  PAYLOAD_BLOCK_FULLY_PRESENT,
  PAYLOAD_BLOCK_NOT_PRESENT,
  PAYLOAD_BLOCK_PARTIALLY_PRESENT,
  PAYLOAD_BLOCK_UNDEFINED,
  PAYLOAD_BLOCK_UNMAPPED,
  PAYLOAD_BLOCK_UNMAPPED_V095,
  PAYLOAD_BLOCK_ZERO,
  parseBatEntry,
  payloadIndex,
  serializeBatEntry,
  SB_BLOCK_PRESENT,
  VHDX_BLOCK_SIZE_MAX,
  VHDX_BLOCK_SIZE_MIN,
  VHDX_MAX_IMAGE_SIZE,
  VHDX_MAX_SECTORS_PER_BLOCK,
} from './bat.js';
import {
  findActiveSequence,
  MAX_REPLAY_LOG_BYTES,
  parseLogEntryHeader,
  serializeLogEntry,
  VHDX_LOG_MIN_SIZE,
  VHDX_LOG_SECTOR_SIZE,
  type LogSequence,
  type NewLogEntry,
} from './log.js';
import { VHDX_CREATE_OPTS, vhdxCreateImage } from './create-options.js';
import { vhdxProbe } from './probe.js';

export interface VhdxState {
  image: string;
  headers: [VhdxHeader | null, VhdxHeader | null];
  currentHeader: 0 | 1;
  /**
   * This open's FileWriteGuid, made by the first header update (a read-only
   * open never needs one, and the first use of the platform's random source
   * costs a few milliseconds in Node).
   */
  sessionGuid: string | null;
  batOffset: number;
  /** The BAT as raw little-endian bytes (bat entries × 8). */
  bat: Uint8Array;
  batCount: number;
  params: FileParameters;
  virtualDiskSize: number;
  logicalSectorSize: number;
  physicalSectorSize: number;
  page83: string;
  blockSize: number;
  chunkRatio: number;
  /** File ranges owned by structures ([start, end)), for overlap checks. */
  regions: { start: number; end: number; what: string }[];
  /** The parent locator's entries (differencing images). */
  parentLocator: [string, string][] | null;
  logReplayedOnOpen: boolean;
  /** Sector bitmap blocks read so far (differencing images), by BAT index. */
  bitmaps: Map<number, Uint8Array>;
  /** Cleared by the first guest-visible write, which gets a new DataWriteGuid (QEMU's first_visible_write). */
  firstVisibleWrite: boolean;
  /** The SequenceNumber of the next log entry (QEMU's log.sequence: 1, or one past a replayed sequence; +1 per entry). */
  logSequence: bigint;
}

/** The largest BAT we hold in memory (a 64 TiB disk of 1 MiB blocks needs 512 MiB; QEMU holds it too). */
const MAX_BAT_BYTES = 512 * MiB;

function regionCheck(s: VhdxState, start: number, length: number, what: string): void {
  const end = start + length;
  for (const r of s.regions) {
    if (start < r.end && r.start < end) {
      throw new BlockError('EINVAL', `${s.image}: ${what} at ${hex(start)} (${length} bytes) overlaps the ${r.what} at ${hex(r.start)}`);
    }
  }
}

function regionRegister(s: VhdxState, start: number, length: number, what: string): void {
  s.regions.push({ start, end: start + length, what });
}

/** Reads both headers and picks the current one (QEMU's vhdx_parse_header). */
async function readHeaders(file: BlockNode, image: string): Promise<{ headers: [VhdxHeader | null, VhdxHeader | null]; current: 0 | 1 }> {
  const read = async (at: number) => {
    if (at + VHDX_HEADER_SIZE > file.totalBytes) return { h: null, raw: null };
    const raw = new Uint8Array(VHDX_HEADER_SIZE);
    await bdrvPread(file, at, VHDX_HEADER_SIZE, raw);
    return { h: parseHeader(raw), raw };
  };
  const one = await read(VHDX_HEADER1_OFFSET);
  const two = await read(VHDX_HEADER2_OFFSET);
  const h1 = one.h;
  const h2 = two.h;
  let current: 0 | 1;
  if (h1 && !h2) current = 0;
  else if (!h1 && h2) current = 1;
  else if (!h1 || !h2) throw new BlockError('EINVAL', `${image}: No valid VHDX header found (headers at ${hex(VHDX_HEADER1_OFFSET)} and ${hex(VHDX_HEADER2_OFFSET)})`);
  else if (h1.sequenceNumber > h2.sequenceNumber) current = 0;
  else if (h2.sequenceNumber > h1.sequenceNumber) current = 1;
  else if (one.raw!.subarray(0, 80).every((b, i) => b === two.raw![i])) current = 0; // Disk2VHD writes two identical headers
  else throw new BlockError('EINVAL', `${image}: No valid VHDX header found (both headers have sequence number ${h1.sequenceNumber})`);
  return { headers: [h1, h2], current };
}

/** Writes the non-current header as the new current one (QEMU's vhdx_update_header). */
async function updateHeader(bs: BlockNode, s: VhdxState, logGuid: string | null, newDataWriteGuid = false): Promise<void> {
  const file = bs.file!.node;
  const active = s.headers[s.currentHeader]!;
  const idx: 0 | 1 = s.currentHeader === 0 ? 1 : 0;
  const next: VhdxHeader = {
    ...active,
    sequenceNumber: active.sequenceNumber + 1n,
    fileWriteGuid: (s.sessionGuid ??= randomGuid()),
    dataWriteGuid: newDataWriteGuid ? randomGuid() : active.dataWriteGuid,
    logGuid: logGuid ?? active.logGuid,
  };
  const at = idx === 0 ? VHDX_HEADER1_OFFSET : VHDX_HEADER2_OFFSET;
  await bdrvPwrite(file, at, VHDX_HEADER_SIZE, serializeHeader(next));
  await bdrvFlush(file);
  s.headers[idx] = next;
  s.currentHeader = idx;
}

/** Both headers, as the specification asks after a change. */
async function updateHeaders(bs: BlockNode, s: VhdxState, logGuid: string | null, newDataWriteGuid = false): Promise<void> {
  await updateHeader(bs, s, logGuid, newDataWriteGuid);
  await updateHeader(bs, s, logGuid, newDataWriteGuid);
}

/** QEMU's vhdx_parse_log: check the log fields; replay a pending log (read/write) or refuse (read-only). */
async function parseLog(bs: BlockNode, s: VhdxState): Promise<void> {
  const file = bs.file!.node;
  const h = s.headers[s.currentHeader]!;
  const where = `${s.image}: log at ${hex(h.logOffset)}`;
  if (h.logOffset < VHDX_LOG_MIN_SIZE || h.logOffset % VHDX_LOG_MIN_SIZE) throw new BlockError('EINVAL', `${where}: LogOffset is not a multiple of 1 MiB past the header section`);
  if (h.logVersion !== 0) throw new BlockError('EINVAL', `${where}: unsupported LogVersion ${h.logVersion}`);
  if (h.logGuid === ZERO_GUID || h.logLength === 0) return;
  if (h.logLength % VHDX_LOG_MIN_SIZE) throw new BlockError('EINVAL', `${where}: LogLength ${h.logLength} is not a multiple of 1 MiB`);
  if (h.logLength > MAX_REPLAY_LOG_BYTES) throw new BlockError('ENOTSUP', `${where}: a log of ${h.logLength} bytes is too large to replay`);
  if (h.logOffset + h.logLength > file.totalBytes) throw new BlockError('EINVAL', `${where}: the log (${h.logLength} bytes) runs past the end of the file (${file.totalBytes} bytes)`);
  const log = new Uint8Array(h.logLength);
  await bdrvPread(file, h.logOffset, h.logLength, log);
  const seq = findActiveSequence(log, h.logGuid, s.image);
  if (!seq) return;
  if (bs.readOnly) {
    throw new BlockError(
      'EPERM',
      `VHDX image file '${s.image}' opened read-only, but contains a log that needs to be replayed\nTo replay the log, run:\nqemu-img check -r all '${s.image}'`,
    );
  }
  await replayLog(bs, s, seq);
  s.logReplayedOnOpen = true;
  s.logSequence = seq.entries.at(-1)!.header.sequenceNumber + 1n;
}

/** Writes every descriptor of the sequence, extends the file, flushes, then empties the log. */
async function replayLog(bs: BlockNode, s: VhdxState, seq: LogSequence): Promise<void> {
  const file = bs.file!.node;
  for (const e of seq.entries) {
    const where = `${s.image}: log entry (sequence ${e.header.sequenceNumber})`;
    const len = file.totalBytes;
    if (e.header.flushedFileOffset > len) {
      throw new BlockError('EINVAL', `${where}: FlushedFileOffset ${hex(e.header.flushedFileOffset)} is past the end of the file (${len} bytes); the image was truncated and the log does not replay`);
    }
    const limit = Math.max(len, Math.ceil(e.header.lastFileOffset / MiB) * MiB);
    for (const w of e.writes) {
      const bytes = w.data ? w.data.length : w.zeroLength;
      if (w.fileOffset + bytes > limit || w.fileOffset < VHDX_HEADER_SECTION_END) {
        throw new BlockError('EINVAL', `${where}: a descriptor writes ${bytes} bytes at ${hex(w.fileOffset)}, outside the file's structures; the log does not replay`);
      }
    }
    for (const w of e.writes) {
      if (w.data) {
        await bdrvPwrite(file, w.fileOffset, w.data.length, w.data);
      } else {
        const chunk = new Uint8Array(Math.min(w.zeroLength, MiB));
        for (let done = 0; done < w.zeroLength; done += chunk.length) {
          const n = Math.min(chunk.length, w.zeroLength - done);
          await bdrvPwrite(file, w.fileOffset + done, n, chunk.subarray(0, n));
        }
      }
    }
    if (file.totalBytes < e.header.lastFileOffset) {
      await bdrvTruncate(file, Math.ceil(e.header.lastFileOffset / MiB) * MiB);
    }
  }
  await bdrvFlush(file);
  await updateHeaders(bs, s, ZERO_GUID);
}

/**
 * QEMU's vhdx_log_write_and_flush: a metadata update (`data` for the file at
 * `offset`) reaches the file through the log. In order, each step made
 * stable before the next: what the update depends on (new payload blocks);
 * both headers naming a new LogGuid; one log entry at the start of the log
 * (each update is a sequence of its own, the log being emptied after each)
 * holding the update's whole 4 KiB sectors, merged with the file's bytes
 * where the update covers part of one; then the entry is applied as a
 * replay applies it, and both headers clear the LogGuid. A crash before the
 * LogGuid is cleared leaves a log that the next read/write open (ours or
 * QEMU's) replays.
 */
async function logWriteAndFlush(bs: BlockNode, s: VhdxState, offset: number, data: Uint8Array): Promise<void> {
  const file = bs.file!.node;
  const h = s.headers[s.currentHeader]!;
  const where = `${s.image}: log at ${hex(h.logOffset)}`;
  await bdrvFlush(file);
  if (h.logGuid !== ZERO_GUID) throw new BlockError('ENOTSUP', `${where}: the log is not empty, so the update at ${hex(offset)} cannot be logged`);
  const first = Math.floor(offset / VHDX_LOG_SECTOR_SIZE) * VHDX_LOG_SECTOR_SIZE;
  const end = offset + data.length;
  const sectors: NewLogEntry['sectors'] = [];
  for (let at = first; at < end; at += VHDX_LOG_SECTOR_SIZE) {
    const sector = new Uint8Array(VHDX_LOG_SECTOR_SIZE);
    const from = Math.max(at, offset);
    const to = Math.min(at + VHDX_LOG_SECTOR_SIZE, end);
    if (from > at || to < at + VHDX_LOG_SECTOR_SIZE) await bdrvPread(file, at, VHDX_LOG_SECTOR_SIZE, sector);
    sector.set(data.subarray(from - offset, to - offset), from - at);
    sectors.push({ fileOffset: at, data: sector });
  }
  const logGuid = randomGuid();
  const entry = serializeLogEntry({ sequenceNumber: s.logSequence, logGuid, tail: 0, fileLength: file.totalBytes, sectors });
  if (entry.length > h.logLength) throw new BlockError('EINVAL', `${where}: an update of ${data.length} bytes at ${hex(offset)} needs ${entry.length} bytes, more than the log's ${h.logLength}`);
  await updateHeaders(bs, s, logGuid);
  await bdrvPwrite(file, h.logOffset, entry.length, entry);
  s.logSequence++;
  await bdrvFlush(file);
  const header = parseLogEntryHeader(entry, 0, where);
  await replayLog(bs, s, { entries: [{ at: 0, header, writes: sectors.map((x) => ({ fileOffset: x.fileOffset, data: x.data, zeroLength: 0 })) }] });
}

async function readRegionTable(bs: BlockNode, s: VhdxState): Promise<{ bat: { fileOffset: number; length: number }; metadata: { fileOffset: number; length: number } }> {
  const file = bs.file!.node;
  if (VHDX_REGION_TABLE_OFFSET + VHDX_HEADER_BLOCK_SIZE > file.totalBytes) throw new BlockError('EINVAL', `${s.image}: region table at ${hex(VHDX_REGION_TABLE_OFFSET)} is beyond the end of the file`);
  const raw = new Uint8Array(VHDX_HEADER_BLOCK_SIZE);
  await bdrvPread(file, VHDX_REGION_TABLE_OFFSET, raw.length, raw);
  const rt = parseRegionTable(raw, s.image, VHDX_REGION_TABLE_OFFSET);
  let bat: { fileOffset: number; length: number } | null = null;
  let metadata: { fileOffset: number; length: number } | null = null;
  for (const e of rt.entries) {
    const what = e.guid === BAT_GUID ? 'BAT region' : e.guid === METADATA_GUID ? 'metadata region' : `region ${e.guid}`;
    regionCheck(s, e.fileOffset, e.length, what);
    regionRegister(s, e.fileOffset, e.length, what);
    if (e.guid === BAT_GUID) {
      if (bat) throw new BlockError('EINVAL', `${s.image}: region table at ${hex(VHDX_REGION_TABLE_OFFSET)} lists the BAT twice`);
      bat = e;
    } else if (e.guid === METADATA_GUID) {
      if (metadata) throw new BlockError('EINVAL', `${s.image}: region table at ${hex(VHDX_REGION_TABLE_OFFSET)} lists the metadata region twice`);
      metadata = e;
    } else if (e.required) {
      throw new BlockError('ENOTSUP', `${s.image}: region table at ${hex(VHDX_REGION_TABLE_OFFSET)} has a required region ${e.guid} this driver does not know`);
    }
  }
  if (!bat || !metadata) throw new BlockError('EINVAL', `${s.image}: region table at ${hex(VHDX_REGION_TABLE_OFFSET)} has no ${bat ? 'metadata' : 'BAT'} region`);
  return { bat, metadata };
}

async function readMetadata(bs: BlockNode, s: VhdxState, region: { fileOffset: number; length: number }): Promise<void> {
  const file = bs.file!.node;
  const where = `${s.image}: metadata region at ${hex(region.fileOffset)}`;
  if (region.length < VHDX_METADATA_TABLE_SIZE || region.fileOffset + region.length > file.totalBytes) {
    throw new BlockError('EINVAL', `${where} (${region.length} bytes) is too small or runs past the end of the file (${file.totalBytes} bytes)`);
  }
  const table = new Uint8Array(VHDX_METADATA_TABLE_SIZE);
  await bdrvPread(file, region.fileOffset, table.length, table);
  const entries = parseMetadataTable(table, where);
  const found = new Map<string, MetadataTableEntry>();
  const known = [FILE_PARAMETERS_GUID, VIRTUAL_DISK_SIZE_GUID, PAGE83_DATA_GUID, LOGICAL_SECTOR_SIZE_GUID, PHYSICAL_SECTOR_SIZE_GUID, PARENT_LOCATOR_GUID];
  for (const e of entries) {
    if (known.includes(e.itemId)) {
      if (found.has(e.itemId)) throw new BlockError('EINVAL', `${where}: metadata item ${e.itemId} appears twice`);
      found.set(e.itemId, e);
    } else if (e.isRequired) {
      throw new BlockError('ENOTSUP', `${where}: required metadata item ${e.itemId} is not supported`);
    }
  }
  for (const id of known.slice(0, 5)) {
    if (!found.has(id)) throw new BlockError('ENOTSUP', `${where}: required metadata item ${id} is missing`);
  }
  const item = async (id: string, min: number): Promise<Uint8Array> => {
    const e = found.get(id)!;
    if (e.length < min || e.offset < VHDX_METADATA_TABLE_SIZE || e.offset + e.length > region.length) {
      throw new BlockError('EINVAL', `${where}: metadata item ${id} at +${hex(e.offset)} (${e.length} bytes) is outside the region or too short`);
    }
    const buf = new Uint8Array(e.length);
    await bdrvPread(file, region.fileOffset + e.offset, e.length, buf);
    return buf;
  };
  s.params = parseFileParameters(await item(FILE_PARAMETERS_GUID, 8));
  if (s.params.hasParent) {
    if (!found.has(PARENT_LOCATOR_GUID)) throw new BlockError('EINVAL', `${where}: HasParent is set but there is no parent locator`);
    const loc = parseParentLocator(await item(PARENT_LOCATOR_GUID, 20), `${where}: parent locator`);
    if (loc.locatorType !== VHDX_PARENT_LOCATOR_TYPE) throw new BlockError('ENOTSUP', `${where}: parent locator type ${loc.locatorType} is not a VHDX parent`);
    s.parentLocator = loc.entries;
  }
  s.virtualDiskSize = parseVirtualDiskSize(await item(VIRTUAL_DISK_SIZE_GUID, 8), where);
  s.logicalSectorSize = parseSectorSize(await item(LOGICAL_SECTOR_SIZE_GUID, 4));
  s.physicalSectorSize = parseSectorSize(await item(PHYSICAL_SECTOR_SIZE_GUID, 4));
  const p83 = await item(PAGE83_DATA_GUID, 16);
  s.page83 = [...p83.subarray(0, 16)].map((b) => b.toString(16).padStart(2, '0')).join('');
  const bsz = s.params.blockSize;
  if (bsz < VHDX_BLOCK_SIZE_MIN || bsz > VHDX_BLOCK_SIZE_MAX || bsz & (bsz - 1)) {
    throw new BlockError('EINVAL', `${where}: BlockSize ${bsz} is not a power of two between 1 MiB and 256 MiB`);
  }
  if (s.logicalSectorSize !== 512 && s.logicalSectorSize !== 4096) throw new BlockError('EINVAL', `${where}: LogicalSectorSize ${s.logicalSectorSize} is neither 512 nor 4096`);
  if (s.physicalSectorSize !== 512 && s.physicalSectorSize !== 4096) throw new BlockError('EINVAL', `${where}: PhysicalSectorSize ${s.physicalSectorSize} is neither 512 nor 4096`);
  if (s.virtualDiskSize % s.logicalSectorSize) throw new BlockError('EINVAL', `${where}: VirtualDiskSize ${s.virtualDiskSize} is not a multiple of the logical sector size`);
  if (s.virtualDiskSize > VHDX_MAX_IMAGE_SIZE) throw new BlockError('EFBIG', `${where}: VirtualDiskSize ${s.virtualDiskSize} is above the 64 TiB maximum`);
  s.blockSize = bsz;
  s.chunkRatio = chunkRatio(s.logicalSectorSize, bsz);
}

/** QEMU's vhdx_check_bat_entries: present blocks inside the file and outside every region. Returns error lines. */
/** Each bad BAT entry's line goes to `found` (which returns true to stop there); returns how many were found. */
function checkBatEntries(s: VhdxState, fileSize: number, found: (line: string) => boolean): number {
  let count = 0;
  const error = (line: string): boolean => {
    count++;
    return found(line);
  };
  for (let i = 0; i < s.batCount; i++) {
    const e = parseBatEntry(s.bat, i);
    const isBitmap = (i + 1) % (s.chunkRatio + 1) === 0;
    const present = isBitmap ? e.state === SB_BLOCK_PRESENT : e.state === PAYLOAD_BLOCK_FULLY_PRESENT || e.state === PAYLOAD_BLOCK_PARTIALLY_PRESENT;
    if (!present) continue;
    const block = i - Math.floor(i / (s.chunkRatio + 1));
    const length = isBitmap ? MiB : Math.min(s.blockSize, s.virtualDiskSize - block * s.blockSize);
    let stop = false;
    if (e.fileOffset > Number.MAX_SAFE_INTEGER - s.blockSize) {
      stop = error(`VHDX BAT entry ${i} offset overflow.`);
    } else if (e.fileOffset >= fileSize) {
      stop = error(`VHDX BAT entry ${i} start offset ${e.fileOffset} points after end of file (${fileSize}). Image has probably been truncated.`);
    } else if (e.fileOffset + length > fileSize) {
      stop = error(`VHDX BAT entry ${i} end offset ${e.fileOffset + length - 1} points after end of file (${fileSize}). Image has probably been truncated.`);
    } else if (!isBitmap) {
      try {
        regionCheck(s, e.fileOffset, s.blockSize, `block of BAT entry ${i}`);
      } catch (err) {
        stop = error((err as Error).message.replace(`${s.image}: `, ''));
      }
    }
    if (stop) break;
  }
  return count;
}

/** The sector bitmap block of a differencing image covering payload block `block`. */
async function sectorBitmap(bs: BlockNode, s: VhdxState, block: number): Promise<Uint8Array | null> {
  const idx = bitmapIndex(block, s.chunkRatio);
  const cached = s.bitmaps.get(idx);
  if (cached) return cached;
  const e = parseBatEntry(s.bat, idx);
  if (e.state !== SB_BLOCK_PRESENT) return null;
  const buf = new Uint8Array(MiB);
  await bdrvPread(bs.file!.node, e.fileOffset, MiB, buf);
  if (s.bitmaps.size >= 8) s.bitmaps.delete(s.bitmaps.keys().next().value!);
  s.bitmaps.set(idx, buf);
  return buf;
}

/**
 * Whether a payload block in BAT state `state` reads as zeros by the state
 * alone (no data of its own in the file): the zero, unmapped and undefined
 * states, and an absent block where there is no parent to read it from.
 */
function stateReadsAsZeros(state: number, hasParent: boolean): boolean {
  switch (state) {
    case PAYLOAD_BLOCK_NOT_PRESENT:
      return !hasParent;
    case PAYLOAD_BLOCK_UNDEFINED:
    case PAYLOAD_BLOCK_UNMAPPED:
    case PAYLOAD_BLOCK_UNMAPPED_V095:
    case PAYLOAD_BLOCK_ZERO:
      return true;
    default:
      return false;
  }
}

type Run = { kind: 'data' | 'zero' | 'parent'; bytes: number; host: number };

/** What [offset, offset + bytes) is, for one payload block at most (and one bitmap state at most). */
async function blockRun(bs: BlockNode, s: VhdxState, offset: number, bytes: number): Promise<Run> {
  const block = Math.floor(offset / s.blockSize);
  const inBlock = offset - block * s.blockSize;
  const n = Math.min(bytes, s.blockSize - inBlock);
  const idx = payloadIndex(block, s.chunkRatio);
  const e = parseBatEntry(s.bat, idx);
  const diff = s.params.hasParent;
  if (stateReadsAsZeros(e.state, diff)) return { kind: 'zero', bytes: n, host: 0 };
  switch (e.state) {
    case PAYLOAD_BLOCK_FULLY_PRESENT:
      return { kind: 'data', bytes: n, host: e.fileOffset + inBlock };
    case PAYLOAD_BLOCK_NOT_PRESENT:
      return { kind: 'parent', bytes: n, host: 0 };
    case PAYLOAD_BLOCK_PARTIALLY_PRESENT: {
      if (!diff) break;
      const bitmap = await sectorBitmap(bs, s, block);
      if (!bitmap) throw new BlockError('EIO', `${s.image}: BAT entry ${idx} is partially present but its sector bitmap block is not present`);
      const ss = s.logicalSectorSize;
      const sectorInChunk = (off: number) => Math.floor(off / ss) % VHDX_MAX_SECTORS_PER_BLOCK;
      const bit = (off: number) => (bitmap[sectorInChunk(off) >> 3]! >> (sectorInChunk(off) & 7)) & 1;
      const first = bit(offset);
      let len = Math.min(n, ss - (offset % ss));
      while (len < n && bit(offset + len) === first) len += Math.min(ss, n - len);
      return first ? { kind: 'data', bytes: len, host: e.fileOffset + inBlock } : { kind: 'parent', bytes: len, host: 0 };
    }
  }
  throw new BlockError('EIO', `${s.image}: BAT entry ${idx} at ${hex(s.batOffset + idx * 8)} has an invalid state ${e.state}`);
}

export const vhdxDriver: BlockDriver = {
  name: 'vhdx',
  kind: 'format',
  supportsBacking: true,
  createOptions: VHDX_CREATE_OPTS,
  create: vhdxCreateImage,

  probe: vhdxProbe,

  async open(bs, options) {
    const file = bs.file!.node;
    const image = bs.filename;
    const sig = new Uint8Array(Math.min(8, file.totalBytes));
    await bdrvPread(file, 0, sig.length, sig);
    if (!isVhdxSignature(sig)) throw new BlockError('EINVAL', `${image}: no 'vhdxfile' signature at 0x0`);
    const { headers, current } = await readHeaders(file, image);
    const s: VhdxState = {
      image,
      headers,
      currentHeader: current,
      sessionGuid: null,
      batOffset: 0,
      bat: new Uint8Array(0),
      batCount: 0,
      params: { blockSize: 0, leaveBlockAllocated: false, hasParent: false },
      virtualDiskSize: 0,
      logicalSectorSize: 512,
      physicalSectorSize: 512,
      page83: '',
      blockSize: 0,
      chunkRatio: 1,
      regions: [],
      parentLocator: null,
      logReplayedOnOpen: false,
      bitmaps: new Map(),
      firstVisibleWrite: true,
      logSequence: 1n,
    };
    const h = headers[current]!;
    regionRegister(s, h.logOffset, h.logLength, 'log');
    await parseLog(bs, s);
    const { bat, metadata } = await readRegionTable(bs, s);
    await readMetadata(bs, s, metadata);
    // QEMU refuses differencing images here (ENOTSUP, no message of its own); we read them but never write them.
    if (s.params.hasParent && !bs.readOnly) throw new BlockError('ENOTSUP', `${image}: Operation not supported`);

    s.batCount = batEntries(s.virtualDiskSize, s.blockSize, s.chunkRatio, s.params.hasParent);
    s.batOffset = bat.fileOffset;
    if (s.batCount > Math.floor(bat.length / 8)) {
      throw new BlockError('EINVAL', `${image}: BAT region at ${hex(bat.fileOffset)} (${bat.length} bytes) is too small for ${s.batCount} entries`);
    }
    const batBytes = s.batCount * 8;
    if (batBytes > MAX_BAT_BYTES) throw new BlockError('EFBIG', `${image}: BAT of ${batBytes} bytes is too large`);
    if (bat.fileOffset + batBytes > file.totalBytes) {
      throw new BlockError('EINVAL', `${image}: BAT at ${hex(bat.fileOffset)} (${batBytes} bytes) runs past the end of the file (${file.totalBytes} bytes)`);
    }
    s.bat = new Uint8Array(batBytes);
    if (batBytes) await bdrvPread(file, bat.fileOffset, batBytes, s.bat);
    // Under qemu-img check the check itself reports bad entries (QEMU's BDRV_O_CHECK).
    if (options['check'] !== true) {
      let err: string | undefined;
      checkBatEntries(s, file.totalBytes, (line) => ((err = line), true));
      if (err !== undefined) throw new BlockError('EINVAL', `${image}: ${err}`);
    }

    bs.opaque = s;
    bs.totalBytes = s.virtualDiskSize;
    if (s.params.hasParent) {
      const rel = s.parentLocator!.find(([k]) => k === 'relative_path')?.[1];
      if (!rel) throw new BlockError('ENOTSUP', `${image}: the parent locator has no relative_path`);
      bs.backingFile = rel.replace(/\\/g, '/').replace(/^\.\//, '');
      bs.backingFormat = 'vhdx';
    }
    if (!bs.readOnly && options['check'] !== true) await updateHeaders(bs, s, null);
  },

  /**
   * Consecutive runs of one kind are served together: blocks that lie one
   * after the other in the file are one read, absent blocks one fill, parent
   * ranges one backing read (a converted image's 1 MiB blocks are one pread
   * per request, not one per block).
   */
  async preadv(bs, offset, bytes, buf) {
    const s = bs.state<VhdxState>();
    const file = bs.file!.node;
    let run: Run | null = null;
    for (let done = 0; done < bytes; ) {
      const cur: Run = run ?? (await blockRun(bs, s, offset + done, bytes - done));
      run = null;
      let n = cur.bytes;
      while (done + n < bytes) {
        const next = await blockRun(bs, s, offset + done + n, bytes - done - n);
        if (next.kind !== cur.kind || (cur.kind === 'data' && next.host !== cur.host + n)) {
          run = next;
          break;
        }
        n += next.bytes;
      }
      const out = buf.subarray(done, done + n);
      if (cur.kind === 'data') {
        if (cur.host + n > file.totalBytes) {
          throw new BlockError('EIO', `${s.image}: payload data at ${hex(cur.host)} (${n} bytes) runs past the end of the file (${file.totalBytes} bytes)`);
        }
        await bdrvPread(file, cur.host, n, out);
      } else if (cur.kind === 'parent') {
        await readBacking(bs, offset + done, n, out);
      } else {
        out.fill(0);
      }
      done += n;
    }
  },

  /**
   * Writes guest data. A block without data gets a new one at the end of the
   * file (1 MiB aligned, zero-filled by growing the file); the data goes in
   * first and the BAT entry after it, through the log as QEMU does
   * (logWriteAndFlush), so a crash can only leak a block.
   */
  async pwritev(bs, offset, bytes, buf) {
    const s = bs.state<VhdxState>();
    const file = bs.file!.node;
    if (s.params.hasParent) throw new BlockError('ENOTSUP', `${s.image}: writes to differencing VHDX images are not supported`);
    if (s.firstVisibleWrite) {
      s.firstVisibleWrite = false;
      await updateHeaders(bs, s, null, true);
    }
    for (let done = 0; done < bytes; ) {
      const off = offset + done;
      const block = Math.floor(off / s.blockSize);
      const inBlock = off - block * s.blockSize;
      const n = Math.min(bytes - done, s.blockSize - inBlock);
      const idx = payloadIndex(block, s.chunkRatio);
      const e = parseBatEntry(s.bat, idx);
      let host: number;
      if (e.state === PAYLOAD_BLOCK_FULLY_PRESENT) {
        host = e.fileOffset;
      } else if (e.state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
        throw new BlockError('EIO', `${s.image}: BAT entry ${idx} is partially present in an image without a parent`);
      } else {
        host = Math.ceil(file.totalBytes / MiB) * MiB;
        regionCheck(s, host, s.blockSize, `new block of BAT entry ${idx}`);
        await bdrvTruncate(file, host + s.blockSize);
        await bdrvPwrite(file, host + inBlock, n, buf.subarray(done, done + n));
        serializeBatEntry({ state: PAYLOAD_BLOCK_FULLY_PRESENT, fileOffset: host }, s.bat, idx);
        await logWriteAndFlush(bs, s, s.batOffset + idx * 8, s.bat.subarray(idx * 8, idx * 8 + 8));
        done += n;
        continue;
      }
      await bdrvPwrite(file, host + inBlock, n, buf.subarray(done, done + n));
      done += n;
    }
  },

  async blockStatus(bs, _wantZero, offset, bytes) {
    const s = bs.state<VhdxState>();
    if (!s.params.hasParent) return { status: BDRV_BLOCK_DATA, pnum: bytes };
    const run = await blockRun(bs, s, offset, bytes);
    if (run.kind === 'data') return { status: BDRV_BLOCK_DATA, pnum: run.bytes };
    if (run.kind === 'zero') return { status: BDRV_BLOCK_ZERO, pnum: run.bytes };
    return { status: 0, pnum: run.bytes };
  },

  /**
   * Absent blocks of an image without a parent read as zeros, and so do
   * blocks in a zero or unmapped state: convert need not read, fill and scan
   * them (block status above still says data, as QEMU's). A differencing
   * image's block status is already precise, so it gives no hint.
   */
  async readsAsZeros(bs, offset, bytes) {
    const s = bs.state<VhdxState>();
    if (s.params.hasParent) return { zero: false, pnum: bytes };
    return zeroRunByUnit(offset, bytes, s.blockSize, (block) => stateReadsAsZeros(parseBatEntry(s.bat, payloadIndex(block, s.chunkRatio)).state, false));
  },

  async check(bs, _fix, report): Promise<CheckResult> {
    const s = bs.state<VhdxState>();
    const corruptions = checkBatEntries(s, bs.file!.node.totalBytes, (line) => (report(line), false));
    return {
      corruptions,
      leaks: 0,
      checkErrors: 0,
      corruptionsFixed: s.logReplayedOnOpen ? 1 : 0,
      leaksFixed: 0,
    };
  },

  getDriverInfo(bs): DriverInfo {
    return { clusterSize: bs.state<VhdxState>().blockSize, isDirty: false };
  },
};


