/**
 * Makes a VHDX image "dirty": writes log entries (MS-VHDX 2.3) into the log
 * region of an image qemu-img made, and points the current header at them,
 * as a crash between logging and applying a metadata update leaves a file.
 * QEMU's replay (qemu-img check -r all) is the oracle for what they mean.
 */
import * as fs from 'node:fs';
import { vhdxChecksum } from '../../src/formats/vhdx/crc32c.js';
import { parseHeader, parseRegionTable, serializeHeader, VHDX_HEADER1_OFFSET, VHDX_HEADER2_OFFSET, VHDX_REGION_TABLE_OFFSET } from '../../src/formats/vhdx/header.js';
import { BAT_GUID, randomGuid } from '../../src/formats/vhdx/guid.js';
import {
  descriptorSectors,
  serializeLogDataSector,
  serializeLogDescriptor,
  serializeLogEntryHeader,
  VHDX_LOG_DATA_SIGNATURE,
  VHDX_LOG_DESC_SIGNATURE,
  VHDX_LOG_SIGNATURE,
  VHDX_LOG_ZERO_SIGNATURE,
} from '../../src/formats/vhdx/log.js';

export type LogOp = { fileOffset: number; data: Uint8Array } | { fileOffset: number; zeroLength: number };

function readAt(f: string, at: number, n: number): Uint8Array {
  const b = Buffer.alloc(n);
  const fd = fs.openSync(f, 'r');
  fs.readSync(fd, b, 0, n, at);
  fs.closeSync(fd);
  return new Uint8Array(b.buffer, b.byteOffset, n);
}

function writeAt(f: string, at: number, data: Uint8Array): void {
  const fd = fs.openSync(f, 'r+');
  fs.writeSync(fd, data, 0, data.length, at);
  fs.closeSync(fd);
}

/** The current header, its offset, and the BAT's file offset. */
export function vhdxLayout(f: string): { headerAt: number; logOffset: number; logLength: number; batOffset: number } {
  const h1 = parseHeader(readAt(f, VHDX_HEADER1_OFFSET, 4096));
  const h2 = parseHeader(readAt(f, VHDX_HEADER2_OFFSET, 4096));
  const cur = !h2 || (h1 && h1.sequenceNumber > h2.sequenceNumber) ? h1! : h2;
  const headerAt = cur === h1 ? VHDX_HEADER1_OFFSET : VHDX_HEADER2_OFFSET;
  const rt = parseRegionTable(readAt(f, VHDX_REGION_TABLE_OFFSET, 65536), f, VHDX_REGION_TABLE_OFFSET);
  return { headerAt, logOffset: cur.logOffset, logLength: cur.logLength, batOffset: rt.entries.find((e) => e.guid === BAT_GUID)!.fileOffset };
}

/** BAT entry `i` as [state, file offset]. */
export function batEntry(f: string, i: number): [number, number] {
  const b = Buffer.from(readAt(f, vhdxLayout(f).batOffset + i * 8, 8));
  const lo = b.readUInt32LE(0);
  return [lo & 7, b.readUInt32LE(4) * 2 ** 32 + ((lo & 0xfff00000) >>> 0)];
}

/**
 * Writes one log entry per element of `entries` (sequence numbers from
 * `firstSeq`), back to back from the start of the log, and sets the current
 * header's LogGuid. `mutate` may damage an entry's bytes before its checksum
 * is computed (or after, with `afterChecksum`).
 */
export function writeDirtyLog(
  f: string,
  entries: LogOp[][],
  opts: { firstSeq?: number; mutate?: (entry: Uint8Array, index: number) => void; afterChecksum?: boolean; flushedFileOffset?: number } = {},
): void {
  const { headerAt, logOffset } = vhdxLayout(f);
  const guid = randomGuid();
  const size = fs.statSync(f).size;
  let at = 0;
  let seq = BigInt(opts.firstSeq ?? 1);
  entries.forEach((ops, index) => {
    const dataOps = ops.filter((o): o is { fileOffset: number; data: Uint8Array } => 'data' in o);
    const dsec = descriptorSectors(ops.length);
    const total = (dsec + dataOps.length) * 4096;
    const entry = new Uint8Array(total);
    serializeLogEntryHeader(
      {
        signature: VHDX_LOG_SIGNATURE,
        checksum: 0,
        entryLength: total,
        tail: 0,
        sequenceNumber: seq,
        descriptorCount: ops.length,
        logGuid: guid,
        flushedFileOffset: opts.flushedFileOffset ?? size,
        lastFileOffset: size,
      },
      entry,
      0,
    );
    let dataIndex = 0;
    ops.forEach((op, i) => {
      const descAt = 64 + i * 32;
      if ('data' in op) {
        serializeLogDescriptor(
          { signature: VHDX_LOG_DESC_SIGNATURE, trailingBytes: op.data.subarray(4092, 4096), leadingBytes: op.data.subarray(0, 8), zeroLength: 0, fileOffset: op.fileOffset, sequenceNumber: seq },
          entry,
          descAt,
        );
        serializeLogDataSector(
          { dataSignature: VHDX_LOG_DATA_SIGNATURE, sequenceHigh: Number(seq >> 32n), data: op.data.subarray(8, 4092), sequenceLow: Number(seq & 0xffffffffn) },
          entry,
          (dsec + dataIndex++) * 4096,
        );
      } else {
        serializeLogDescriptor(
          { signature: VHDX_LOG_ZERO_SIGNATURE, trailingBytes: new Uint8Array(4), leadingBytes: new Uint8Array(8), zeroLength: op.zeroLength, fileOffset: op.fileOffset, sequenceNumber: seq },
          entry,
          descAt,
        );
      }
    });
    if (!opts.afterChecksum) opts.mutate?.(entry, index);
    new DataView(entry.buffer).setUint32(4, vhdxChecksum(entry, 4), true);
    if (opts.afterChecksum) opts.mutate?.(entry, index);
    writeAt(f, logOffset + at, entry);
    at += total;
    seq++;
  });
  const h = parseHeader(readAt(f, headerAt, 4096))!;
  writeAt(f, headerAt, serializeHeader({ ...h, logGuid: guid }));
}
