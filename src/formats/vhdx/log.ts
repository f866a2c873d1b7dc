/**
 * The VHDX metadata log (MS-VHDX 2.3): a circular buffer of 4 KiB sectors
 * holding entries that must be replayed before the file is used, or the
 * metadata (BAT, region table, metadata region) may be half-updated.
 *
 *   Entry header (64 bytes): Signature "loge" · Checksum u32 · EntryLength u32 ·
 *     Tail u32 · SequenceNumber u64 · DescriptorCount u32 · Reserved u32 ·
 *     LogGuid · FlushedFileOffset u64 · LastFileOffset u64
 *   Descriptors (32 bytes, after the header, then 128 per further sector):
 *     zero: "zero" · Reserved u32 · ZeroLength u64 · FileOffset u64 · SequenceNumber u64
 *     data: "desc" · TrailingBytes[4] · LeadingBytes[8] · FileOffset u64 · SequenceNumber u64
 *   Data sector (4 KiB, one per data descriptor, after the descriptor sectors):
 *     "data" · SequenceHigh u32 · Data[4084] · SequenceLow u32 — the target
 *     sector is LeadingBytes + Data + TrailingBytes.
 * The checksum is CRC-32C over the whole entry with the field zeroed.
 *
 * Replay finds the valid sequence of consecutive entries (sequence numbers
 * +1 each, matching the header's LogGuid, checksums right) with the highest
 * sequence number, writes every descriptor in order, extends the file to
 * LastFileOffset and empties the log (LogGuid zero in both headers). A read-
 * only open of an image that needs a replay is refused, as in QEMU.
 *
 * Writing: serializeLogEntry makes the one-entry sequence a metadata update
 * goes through (vhdx.ts logWriteAndFlush, QEMU's vhdx_log_write).
 */
import { BlockError, hex } from '../../block/errors.js';
import { vhdxChecksum } from './crc32c.js';
import { parseGuid, serializeGuid } from './guid.js';
import { putU64, u64 } from './header.js';

export const VHDX_LOG_SECTOR_SIZE = 4096;
export const VHDX_LOG_HDR_SIZE = 64;
export const VHDX_LOG_DESC_SIZE = 32;
export const VHDX_LOG_MIN_SIZE = 1024 * 1024;
export const VHDX_LOG_SIGNATURE = 0x65676f6c; // "loge"
export const VHDX_LOG_DESC_SIGNATURE = 0x63736564; // "desc"
export const VHDX_LOG_ZERO_SIGNATURE = 0x6f72657a; // "zero"
export const VHDX_LOG_DATA_SIGNATURE = 0x61746164; // "data"
/** Largest log we read into memory to replay (the log is rarely above a few MiB). */
export const MAX_REPLAY_LOG_BYTES = 256 * 1024 * 1024;

export interface LogEntryHeader {
  signature: number;
  checksum: number;
  entryLength: number;
  tail: number;
  sequenceNumber: bigint;
  descriptorCount: number;
  logGuid: string;
  flushedFileOffset: number;
  lastFileOffset: number;
}

export interface LogDescriptor {
  signature: number;
  /** Data descriptors: bytes 4092..4095 of the target sector. */
  trailingBytes: Uint8Array;
  /** Data descriptors: bytes 0..7 of the target sector. */
  leadingBytes: Uint8Array;
  /** Zero descriptors: bytes to zero. */
  zeroLength: number;
  fileOffset: number;
  sequenceNumber: bigint;
}

export interface LogDataSector {
  dataSignature: number;
  sequenceHigh: number;
  data: Uint8Array;
  sequenceLow: number;
}

export function parseLogEntryHeader(buf: Uint8Array, at: number, where: string): LogEntryHeader {
  const dv = new DataView(buf.buffer, buf.byteOffset + at, VHDX_LOG_HDR_SIZE);
  return {
    signature: dv.getUint32(0, true),
    checksum: dv.getUint32(4, true),
    entryLength: dv.getUint32(8, true),
    tail: dv.getUint32(12, true),
    sequenceNumber: dv.getBigUint64(16, true),
    descriptorCount: dv.getUint32(24, true),
    logGuid: parseGuid(buf, at + 32),
    flushedFileOffset: u64(dv, 48, `${where}: FlushedFileOffset`),
    lastFileOffset: u64(dv, 56, `${where}: LastFileOffset`),
  };
}

/** Serializes an entry header (checksum as given; the caller checksums the whole entry). */
export function serializeLogEntryHeader(h: LogEntryHeader, buf: Uint8Array, at: number): void {
  const dv = new DataView(buf.buffer, buf.byteOffset + at, VHDX_LOG_HDR_SIZE);
  dv.setUint32(0, h.signature, true);
  dv.setUint32(4, h.checksum, true);
  dv.setUint32(8, h.entryLength, true);
  dv.setUint32(12, h.tail, true);
  dv.setBigUint64(16, h.sequenceNumber, true);
  dv.setUint32(24, h.descriptorCount, true);
  serializeGuid(h.logGuid, buf, at + 32);
  putU64(dv, 48, h.flushedFileOffset);
  putU64(dv, 56, h.lastFileOffset);
}

export function parseLogDescriptor(buf: Uint8Array, at: number, where: string): LogDescriptor {
  const dv = new DataView(buf.buffer, buf.byteOffset + at, VHDX_LOG_DESC_SIZE);
  const signature = dv.getUint32(0, true);
  return {
    signature,
    trailingBytes: buf.slice(at + 4, at + 8),
    leadingBytes: buf.slice(at + 8, at + 16),
    // ZeroLength shares its bytes with LeadingBytes: only a zero descriptor has one.
    zeroLength: signature === VHDX_LOG_ZERO_SIGNATURE ? u64(dv, 8, `${where}: ZeroLength`) : 0,
    fileOffset: u64(dv, 16, `${where}: FileOffset`),
    sequenceNumber: dv.getBigUint64(24, true),
  };
}

export function serializeLogDescriptor(d: LogDescriptor, buf: Uint8Array, at: number): void {
  const dv = new DataView(buf.buffer, buf.byteOffset + at, VHDX_LOG_DESC_SIZE);
  dv.setUint32(0, d.signature, true);
  if (d.signature === VHDX_LOG_ZERO_SIGNATURE) {
    putU64(dv, 8, d.zeroLength);
  } else {
    buf.set(d.trailingBytes.subarray(0, 4), at + 4);
    buf.set(d.leadingBytes.subarray(0, 8), at + 8);
  }
  putU64(dv, 16, d.fileOffset);
  dv.setBigUint64(24, d.sequenceNumber, true);
}

export function parseLogDataSector(buf: Uint8Array, at: number): LogDataSector {
  const dv = new DataView(buf.buffer, buf.byteOffset + at, VHDX_LOG_SECTOR_SIZE);
  return { dataSignature: dv.getUint32(0, true), sequenceHigh: dv.getUint32(4, true), data: buf.subarray(at + 8, at + 4092), sequenceLow: dv.getUint32(4092, true) };
}

export function serializeLogDataSector(s: LogDataSector, buf: Uint8Array, at: number): void {
  const dv = new DataView(buf.buffer, buf.byteOffset + at, VHDX_LOG_SECTOR_SIZE);
  dv.setUint32(0, s.dataSignature, true);
  dv.setUint32(4, s.sequenceHigh, true);
  buf.set(s.data.subarray(0, 4084), at + 8);
  dv.setUint32(4092, s.sequenceLow, true);
}

/** Sectors the header and `count` descriptors take (the first sector holds 126 descriptors, the others 128). */
export function descriptorSectors(count: number): number {
  return Math.ceil((count + 2) / 128);
}

/** One replayable write, in order. */
export interface LogWrite {
  fileOffset: number;
  /** A 4 KiB data sector, or null for `zeroLength` zero bytes. */
  data: Uint8Array | null;
  zeroLength: number;
}

/** The active sequence, ready to replay. */
export interface LogSequence {
  /** Entries in replay order, with their log offsets. */
  entries: { at: number; header: LogEntryHeader; writes: LogWrite[] }[];
}

/** Reads `n` sectors of the circular log starting at `at` into one buffer. */
function sectors(log: Uint8Array, at: number, n: number): Uint8Array {
  const out = new Uint8Array(n * VHDX_LOG_SECTOR_SIZE);
  for (let i = 0; i < n; i++) {
    const o = (at + i * VHDX_LOG_SECTOR_SIZE) % log.length;
    out.set(log.subarray(o, o + VHDX_LOG_SECTOR_SIZE), i * VHDX_LOG_SECTOR_SIZE);
  }
  return out;
}

type Validated = { valid: false; next: number } | { valid: true; next: number; header: LogEntryHeader; writes: LogWrite[] };

/**
 * Validates the entry at `at` of the log (QEMU's vhdx_validate_log_entry):
 * an entry whose header does not belong to this log is skipped one sector at
 * a time; one whose header is right but whose descriptors are not is an error
 * (the log does not replay); a checksum mismatch ends a sequence.
 */
function validateEntry(log: Uint8Array, at: number, logGuid: string, prevSeq: bigint | null, where: string): Validated {
  const inc = (at + VHDX_LOG_SECTOR_SIZE) % log.length;
  const h = (() => {
    try {
      return parseLogEntryHeader(log, at, `${where}: log entry at +${hex(at)}`);
    } catch {
      return null;
    }
  })();
  if (
    !h ||
    h.signature !== VHDX_LOG_SIGNATURE ||
    h.entryLength > log.length ||
    h.entryLength === 0 ||
    h.entryLength % VHDX_LOG_SECTOR_SIZE !== 0 ||
    h.sequenceNumber === 0n ||
    h.logGuid !== logGuid ||
    h.descriptorCount * VHDX_LOG_DESC_SIZE > h.entryLength ||
    (prevSeq !== null && h.sequenceNumber !== prevSeq + 1n)
  ) {
    return { valid: false, next: inc };
  }
  const total = h.entryLength / VHDX_LOG_SECTOR_SIZE;
  const descSectors = descriptorSectors(h.descriptorCount);
  const entryWhere = `${where}: log entry at +${hex(at)} (sequence ${h.sequenceNumber})`;
  if (descSectors > total) throw new BlockError('EINVAL', `${entryWhere}: ${h.descriptorCount} descriptors do not fit its ${h.entryLength} bytes`);
  const entry = sectors(log, at, total);
  const descs: LogDescriptor[] = [];
  for (let i = 0; i < h.descriptorCount; i++) {
    const d = parseLogDescriptor(entry, VHDX_LOG_HDR_SIZE + i * VHDX_LOG_DESC_SIZE, entryWhere);
    const ok =
      d.sequenceNumber === h.sequenceNumber &&
      d.fileOffset % VHDX_LOG_SECTOR_SIZE === 0 &&
      (d.signature === VHDX_LOG_DESC_SIGNATURE || (d.signature === VHDX_LOG_ZERO_SIGNATURE && d.zeroLength % VHDX_LOG_SECTOR_SIZE === 0));
    if (!ok) throw new BlockError('EINVAL', `${entryWhere}: descriptor ${i} is invalid; the log does not replay`);
    descs.push(d);
  }
  const next = (at + h.entryLength) % log.length;
  if (vhdxChecksum(entry, 4) !== h.checksum) return { valid: false, next };
  // Data sectors follow the descriptor sectors, one per data descriptor, in order.
  const writes: LogWrite[] = [];
  let dataAt = descSectors;
  for (const [i, d] of descs.entries()) {
    if (d.signature === VHDX_LOG_ZERO_SIGNATURE) {
      writes.push({ fileOffset: d.fileOffset, data: null, zeroLength: d.zeroLength });
      continue;
    }
    if (dataAt >= total) throw new BlockError('EINVAL', `${entryWhere}: data descriptor ${i} has no data sector; the log does not replay`);
    const s = parseLogDataSector(entry, dataAt * VHDX_LOG_SECTOR_SIZE);
    const seq = (BigInt(s.sequenceHigh) << 32n) | BigInt(s.sequenceLow);
    if (s.dataSignature !== VHDX_LOG_DATA_SIGNATURE || seq !== d.sequenceNumber) {
      throw new BlockError('EINVAL', `${entryWhere}: data sector ${dataAt} does not match descriptor ${i}; the log does not replay`);
    }
    const sector = new Uint8Array(VHDX_LOG_SECTOR_SIZE);
    sector.set(d.leadingBytes, 0);
    sector.set(s.data, 8);
    sector.set(d.trailingBytes, 4092);
    writes.push({ fileOffset: d.fileOffset, data: sector, zeroLength: 0 });
    dataAt++;
  }
  return { valid: true, next, header: h, writes };
}

/** Finds the active sequence in `log` (the whole log region), or null when the log is empty. */
export function findActiveSequence(log: Uint8Array, logGuid: string, where: string): LogSequence | null {
  let best: { seq: bigint; entries: LogSequence['entries'] } | null = null;
  let read = 0;
  let wrapped = false;
  const maxSteps = log.length / VHDX_LOG_SECTOR_SIZE + 1;
  for (let step = 0; step <= maxSteps; step++) {
    const tail = read;
    const first = validateEntry(log, read, logGuid, null, where);
    read = first.next;
    if (first.valid) {
      const entries: LogSequence['entries'] = [{ at: tail, header: first.header, writes: first.writes }];
      let last = first.header.sequenceNumber;
      // A sequence may wrap around the end of the circular log; it can never be longer than the log.
      let consumed = first.header.entryLength;
      while (consumed < log.length) {
        const more = validateEntry(log, read, logGuid, last, where);
        if (!more.valid) break;
        entries.push({ at: read, header: more.header, writes: more.writes });
        last = more.header.sequenceNumber;
        consumed += more.header.entryLength;
        read = more.next;
      }
      if (consumed >= log.length || read <= tail) wrapped = true;
      if (!best || last > best.seq) best = { seq: last, entries };
    }
    if (wrapped || read <= tail) break;
  }
  return best ? { entries: best.entries } : null;
}

/** A new log entry: what QEMU's vhdx_log_write puts in the log for one metadata update. */
export interface NewLogEntry {
  sequenceNumber: bigint;
  logGuid: string;
  /** Log offset of the oldest entry of the sequence (this one: each update is its own sequence). */
  tail: number;
  /** The file's length when the entry is written (FlushedFileOffset and LastFileOffset). */
  fileLength: number;
  /** Whole 4 KiB target sectors, in order: the update merged into what the file holds. */
  sectors: { fileOffset: number; data: Uint8Array }[];
}

/**
 * Serializes `e` as one log entry: the header and a data descriptor per
 * sector (descriptorSectors of them), then one data sector each (the
 * target's bytes 8..4091; its first 8 and last 4 bytes go in the
 * descriptor), the CRC-32C over the whole entry last.
 */
export function serializeLogEntry(e: NewLogEntry): Uint8Array {
  const descSectors = descriptorSectors(e.sectors.length);
  const total = (descSectors + e.sectors.length) * VHDX_LOG_SECTOR_SIZE;
  const buf = new Uint8Array(total);
  serializeLogEntryHeader(
    {
      signature: VHDX_LOG_SIGNATURE,
      checksum: 0,
      entryLength: total,
      tail: e.tail,
      sequenceNumber: e.sequenceNumber,
      descriptorCount: e.sectors.length,
      logGuid: e.logGuid,
      flushedFileOffset: e.fileLength,
      lastFileOffset: e.fileLength,
    },
    buf,
    0,
  );
  e.sectors.forEach((s, i) => {
    serializeLogDescriptor(
      {
        signature: VHDX_LOG_DESC_SIGNATURE,
        trailingBytes: s.data.subarray(4092, 4096),
        leadingBytes: s.data.subarray(0, 8),
        zeroLength: 0,
        fileOffset: s.fileOffset,
        sequenceNumber: e.sequenceNumber,
      },
      buf,
      VHDX_LOG_HDR_SIZE + i * VHDX_LOG_DESC_SIZE,
    );
    serializeLogDataSector(
      {
        dataSignature: VHDX_LOG_DATA_SIGNATURE,
        sequenceHigh: Number(e.sequenceNumber >> 32n),
        data: s.data.subarray(8, 4092),
        sequenceLow: Number(e.sequenceNumber & 0xffffffffn),
      },
      buf,
      (descSectors + i) * VHDX_LOG_SECTOR_SIZE,
    );
  });
  new DataView(buf.buffer).setUint32(4, vhdxChecksum(buf, 4), true);
  return buf;
}
