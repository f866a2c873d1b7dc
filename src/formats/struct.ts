/**
 * Fixed-layout on-disk structures described once, as a table of fields.
 *
 * Each format that only reads (dmg, cloop, bochs) declares its headers and
 * table entries here as a `Struct`: one list of (spec name, type, offset)
 * from which both the parser and the serializer are derived, so the field
 * names of the specification are written in one place and a test image
 * builder cannot drift from the reader. 64-bit fields are read as two 32-bit
 * halves into a JS number: exact below 2^53, and larger values stay larger
 * than any limit they are checked against (the 64-bit codecs are
 * on-disk.ts's, shared with the formats that declare their fields by hand).
 */
import { setU64be, setU64le, u64be, u64le } from './on-disk.js';

export type FieldType =
  | 'u8'
  | 'u16be'
  | 'u16le'
  | 'u32be'
  | 'u32le'
  | 'u64be'
  | 'u64le'
  /** Raw bytes (`length` of them). */
  | 'bytes'
  /** A NUL-padded ASCII string in `length` bytes. */
  | 'cstring';

export interface FieldDef {
  /** The field's name in the format's specification. */
  readonly name: string;
  readonly type: FieldType;
  /** Byte offset from the start of the structure. */
  readonly offset: number;
  /** Length of 'bytes' and 'cstring' fields. */
  readonly length?: number;
}

export type FieldValue = number | string | Uint8Array;

const WIDTH: Record<FieldType, number> = { u8: 1, u16be: 2, u16le: 2, u32be: 4, u32le: 4, u64be: 8, u64le: 8, bytes: 0, cstring: 0 };

function width(f: FieldDef): number {
  return f.type === 'bytes' || f.type === 'cstring' ? f.length! : WIDTH[f.type];
}

const ascii = new TextDecoder('latin1');

/** One on-disk structure: its name (for messages), size, and fields. */
export class Struct<T extends { [K in keyof T]: FieldValue }> {
  private readonly byName = new Map<string, FieldDef>();

  constructor(
    readonly name: string,
    readonly size: number,
    readonly fields: readonly FieldDef[],
  ) {
    for (const f of fields) {
      if (f.offset + width(f) > size) throw new Error(`${name}.${f.name} lies outside the ${size}-byte structure`);
      this.byName.set(f.name, f);
    }
  }

  /** Byte offset of a field inside the structure (for error messages). */
  offsetOf(field: keyof T & string): number {
    return this.byName.get(field)!.offset;
  }

  /** Parses the structure at `at` in `buf` (which must hold `size` bytes from there). */
  parse(buf: Uint8Array, at = 0): T {
    if (at + this.size > buf.length) throw new RangeError(`${this.name}: ${this.size} bytes needed at ${at}, ${buf.length - at} available`);
    const dv = new DataView(buf.buffer, buf.byteOffset + at, this.size);
    const out: Record<string, FieldValue> = {};
    for (const f of this.fields) {
      const o = f.offset;
      switch (f.type) {
        case 'u8':
          out[f.name] = dv.getUint8(o);
          break;
        case 'u16be':
        case 'u16le':
          out[f.name] = dv.getUint16(o, f.type === 'u16le');
          break;
        case 'u32be':
        case 'u32le':
          out[f.name] = dv.getUint32(o, f.type === 'u32le');
          break;
        case 'u64be':
          out[f.name] = u64be(dv, o);
          break;
        case 'u64le':
          out[f.name] = u64le(dv, o);
          break;
        case 'bytes':
          out[f.name] = buf.slice(at + o, at + o + f.length!);
          break;
        case 'cstring': {
          const b = buf.subarray(at + o, at + o + f.length!);
          const nul = b.indexOf(0);
          out[f.name] = ascii.decode(nul < 0 ? b : b.subarray(0, nul));
          break;
        }
      }
    }
    return out as T;
  }

  /** Writes `value` into `out` at `at` (a fresh zeroed buffer by default) and returns `out`. */
  serialize(value: T, out: Uint8Array = new Uint8Array(this.size), at = 0): Uint8Array {
    const dv = new DataView(out.buffer, out.byteOffset + at, this.size);
    const v = value as unknown as Record<string, FieldValue>;
    for (const f of this.fields) {
      const o = f.offset;
      const x = v[f.name];
      if (f.type === 'bytes' || f.type === 'cstring') {
        const bytes = typeof x === 'string' ? new TextEncoder().encode(x) : (x as Uint8Array);
        if (bytes.length > f.length!) throw new RangeError(`${this.name}.${f.name}: ${bytes.length} bytes do not fit in ${f.length}`);
        out.fill(0, at + o, at + o + f.length!);
        out.set(bytes, at + o);
        continue;
      }
      const n = x as number;
      switch (f.type) {
        case 'u8':
          dv.setUint8(o, n);
          break;
        case 'u16be':
        case 'u16le':
          dv.setUint16(o, n, f.type === 'u16le');
          break;
        case 'u32be':
        case 'u32le':
          dv.setUint32(o, n >>> 0, f.type === 'u32le');
          break;
        case 'u64be':
          setU64be(dv, o, n);
          break;
        case 'u64le':
          setU64le(dv, o, n);
          break;
      }
    }
    return out;
  }
}
