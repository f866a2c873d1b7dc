/**
 * A byte range to parse structures from: a whole disk node, a partition's raw
 * node, or a window of either. Parsers read through `read`, which checks the
 * range against the volume and names the structure being read, so a field
 * pointing past the end becomes "disk.qcow2: FAT directory cluster 9 at
 * 0x123000 is beyond the end of the volume (…)" and never a wild read. One
 * read is bounded (MAX_READ) so a hostile length cannot allocate gigabytes.
 */
import { BlockError, hex, type BlockErrorCode } from '../block/errors.js';
import { bdrvPread } from '../block/io.js';
import type { BlockNode } from '../block/node.js';

/** Largest single read a parser may ask for (a 64 MiB metadata structure is already absurd). */
export const MAX_READ = 64 * 1024 * 1024;

export class Volume {
  /**
   * @param node the node read through (any format; the backing chain and a loaded snapshot included)
   * @param name how messages name it ("disk.qcow2", "disk.qcow2 partition 2")
   * @param start byte offset of the volume in `node`
   * @param size bytes of the volume
   */
  constructor(
    readonly node: BlockNode,
    readonly name: string,
    readonly start = 0,
    readonly size = node.totalBytes - start,
  ) {}

  /** A volume over [offset, offset + size) of this one. */
  window(name: string, offset: number, size: number): Volume {
    return new Volume(this.node, name, this.start + offset, size);
  }

  /** Reads `bytes` at `offset` of the volume; `what` names the structure for errors. */
  async read(offset: number, bytes: number, what: string): Promise<Uint8Array> {
    this.check(offset, bytes, what);
    const buf = new Uint8Array(bytes);
    if (bytes > 0) await bdrvPread(this.node, this.start + offset, bytes, buf);
    return buf;
  }

  /** Reads into `buf` (bounds checked as `read`). */
  async readInto(offset: number, buf: Uint8Array, what: string): Promise<void> {
    this.check(offset, buf.length, what);
    if (buf.length > 0) await bdrvPread(this.node, this.start + offset, buf.length, buf);
  }

  /** Throws the error a bad structure gets: names the volume, the structure and its offset. */
  fail(code: BlockErrorCode, what: string, offset: number, why: string): never {
    throw new BlockError(code, `${this.name}: ${what} at ${hex(offset)}: ${why}`);
  }

  private check(offset: number, bytes: number, what: string): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(bytes) || offset < 0 || bytes < 0) {
      this.fail('ECORRUPT', what, offset, `invalid range (${bytes} bytes)`);
    }
    if (bytes > MAX_READ) this.fail('ECORRUPT', what, offset, `${bytes} bytes is more than the ${MAX_READ}-byte limit for one structure`);
    if (offset + bytes > this.size) {
      this.fail('ECORRUPT', what, offset, `${bytes} bytes run beyond the end of the volume (${this.size} bytes)`);
    }
  }
}

/** Little-endian field readers over a byte array (the spec's field offsets are byte offsets). */
export function u8(b: Uint8Array, o: number): number {
  return b[o]!;
}
export function u16(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}
export function u32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}
/** A 64-bit little-endian field as two halves; above 2^53 is refused by the caller's bounds checks (it becomes Infinity-like large). */
export function u64(b: Uint8Array, o: number): number {
  return u32(b, o + 4) * 0x100000000 + u32(b, o);
}
export function u16be(b: Uint8Array, o: number): number {
  return (b[o]! << 8) | b[o + 1]!;
}
export function u32be(b: Uint8Array, o: number): number {
  return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
}
export function ascii(b: Uint8Array, o: number, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += String.fromCharCode(b[o + i]!);
  return s;
}
