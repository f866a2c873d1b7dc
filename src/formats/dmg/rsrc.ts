/**
 * The classic Mac resource fork (older DMGs, RsrcForkOffset/RsrcForkLength):
 * a 16-byte header, then the resource data, where each resource is a
 * big-endian u32 length followed by that many bytes, then the resource map
 * (names and types; QEMU ignores it, so do we: every resource whose bytes are
 * a "mish" table is a blkx table).
 */
import { Struct } from '../struct.js';

export interface RsrcHeader {
  DataOffset: number;
  MapOffset: number;
  DataLength: number;
  MapLength: number;
}

export const RSRC_HEADER = new Struct<RsrcHeader>('resource fork header', 16, [
  { name: 'DataOffset', type: 'u32be', offset: 0 },
  { name: 'MapOffset', type: 'u32be', offset: 4 },
  { name: 'DataLength', type: 'u32be', offset: 8 },
  { name: 'MapLength', type: 'u32be', offset: 12 },
]);

/** Offset at which writers put the resource data (Apple uses 256). */
export const RSRC_DATA_OFFSET = 256;

/** One resource of the data area: its bytes and its offset from the start of the fork. */
export interface RsrcResource {
  bytes: Uint8Array;
  at: number;
}

/**
 * Splits the resource data of `fork` (the whole fork, `fork.length` bytes)
 * into resources. Throws a message naming the offset in the fork when a
 * length runs past the data area.
 */
export function parseRsrcResources(fork: Uint8Array): RsrcResource[] {
  if (fork.length < RSRC_HEADER.size) throw new RangeError(`the fork is ${fork.length} bytes, shorter than its 16-byte header`);
  const h = RSRC_HEADER.parse(fork);
  if (h.DataOffset > fork.length) throw new RangeError(`DataOffset ${h.DataOffset} is past the end of the fork (${fork.length} bytes)`);
  if (h.DataLength === 0 || h.DataOffset + h.DataLength > fork.length) {
    throw new RangeError(`DataLength ${h.DataLength} at DataOffset ${h.DataOffset} does not fit in the fork (${fork.length} bytes)`);
  }
  const end = h.DataOffset + h.DataLength;
  const out: RsrcResource[] = [];
  const dv = new DataView(fork.buffer, fork.byteOffset, fork.length);
  for (let p = h.DataOffset; p < end; ) {
    if (end - p < 4) throw new RangeError(`resource length at fork offset ${p} is cut off by the end of the data`);
    const n = dv.getUint32(p);
    if (n === 0 || n > end - p - 4) throw new RangeError(`resource at fork offset ${p} has length ${n}, past the end of the data`);
    out.push({ bytes: fork.subarray(p + 4, p + 4 + n), at: p });
    p += 4 + n;
  }
  return out;
}

/** A resource fork holding `resources` (no resource map). */
export function serializeRsrcFork(resources: readonly Uint8Array[]): Uint8Array {
  const dataLength = resources.reduce((n, r) => n + 4 + r.length, 0);
  const out = new Uint8Array(RSRC_DATA_OFFSET + dataLength);
  RSRC_HEADER.serialize({ DataOffset: RSRC_DATA_OFFSET, MapOffset: RSRC_DATA_OFFSET + dataLength, DataLength: dataLength, MapLength: 0 }, out);
  const dv = new DataView(out.buffer);
  let p = RSRC_DATA_OFFSET;
  for (const r of resources) {
    dv.setUint32(p, r.length);
    out.set(r, p + 4);
    p += 4 + r.length;
  }
  return out;
}
