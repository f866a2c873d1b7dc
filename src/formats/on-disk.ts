/**
 * Small helpers the simple image formats share (vdi, vpc, qed, qcow,
 * parallels): 64-bit fields read as numbers, and metadata reads that refuse a
 * structure lying past the end of the file instead of silently reading the
 * zeros a protocol returns there.
 *
 * 64-bit fields become JS numbers. Values above 2^53 lose precision, which is
 * harmless: every such value is beyond the limits the drivers check it against.
 */
import { BlockError, hex } from '../block/errors.js';
import type { BlockNode } from '../block/node.js';
import { bdrvPread } from '../block/io.js';

export function u64le(dv: DataView, off: number): number {
  return dv.getUint32(off + 4, true) * 0x100000000 + dv.getUint32(off, true);
}

export function u64be(dv: DataView, off: number): number {
  return dv.getUint32(off, false) * 0x100000000 + dv.getUint32(off + 4, false);
}

export function setU64le(dv: DataView, off: number, v: number): void {
  dv.setUint32(off, v % 0x100000000, true);
  dv.setUint32(off + 4, Math.floor(v / 0x100000000), true);
}

/** Numbers at or above 2^64 (how an all-ones field parses) are written back as all ones. */
export function setU64be(dv: DataView, off: number, v: number): void {
  if (v >= 2 ** 64) {
    dv.setUint32(off, 0xffffffff, false);
    dv.setUint32(off + 4, 0xffffffff, false);
    return;
  }
  dv.setUint32(off, Math.floor(v / 0x100000000), false);
  dv.setUint32(off + 4, v % 0x100000000, false);
}

export function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/**
 * Reads `bytes` bytes of the structure `what` at `offset` of `file`, failing
 * with ECORRUPT (naming image, structure and offset) when it does not lie
 * entirely inside the file. Callers bound `bytes` before calling.
 */
export async function readStructure(file: BlockNode, image: string, what: string, offset: number, bytes: number): Promise<Uint8Array> {
  const size = file.totalBytes;
  if (!Number.isSafeInteger(offset) || offset < 0 || offset + bytes > size) {
    throw new BlockError('ECORRUPT', `${image}: ${what} at ${hex(offset)} (${bytes} bytes) extends beyond the end of the file (${size} bytes)`);
  }
  const buf = new Uint8Array(bytes);
  if (bytes) await bdrvPread(file, offset, bytes, buf);
  return buf;
}

/** Fails unless a data read of `bytes` at host `offset` lies inside the file (a guest read of a cluster past EOF). */
export function checkDataInFile(file: BlockNode, image: string, what: string, guestOffset: number, offset: number, bytes: number): void {
  if (offset + bytes > file.totalBytes) {
    throw new BlockError(
      'ECORRUPT',
      `${image}: ${what} for guest offset ${hex(guestOffset)} at host offset ${hex(offset)} (${bytes} bytes) extends beyond the end of the file (${file.totalBytes} bytes)`,
    );
  }
}

/** A random RFC 4122 version 4 UUID (16 bytes, network order). */
export function randomUuid(): Uint8Array {
  const u = new Uint8Array(16);
  globalThis.crypto.getRandomValues(u);
  u[6] = (u[6]! & 0x0f) | 0x40;
  u[8] = (u[8]! & 0x3f) | 0x80;
  return u;
}
