/**
 * The qcow2 header: the one parser and the one serializer (docs/interop/qcow2.txt).
 *
 * Layout of the fixed part (big-endian), as the spec names the fields:
 *
 *   0  magic                    u32  'QFI\xfb'
 *   4  version                  u32  2 or 3
 *   8  backing_file_offset      u64
 *  16  backing_file_size        u32
 *  20  cluster_bits             u32
 *  24  size                     u64  virtual size in bytes
 *  32  crypt_method             u32
 *  36  l1_size                  u32  entries
 *  40  l1_table_offset          u64
 *  48  refcount_table_offset    u64
 *  56  refcount_table_clusters  u32
 *  60  nb_snapshots             u32
 *  64  snapshots_offset         u64
 *  --- version 3 only (version 2 implies the defaults) ---
 *  72  incompatible_features    u64
 *  80  compatible_features      u64
 *  88  autoclear_features       u64
 *  96  refcount_order           u32
 * 100  header_length            u32
 * 104  compression_type         u8   (when header_length > 104)
 * 105  padding up to header_length
 *
 * Header extensions follow (type u32, length u32, data padded to 8 bytes),
 * ended by type 0, and then the backing file name. The parser checks only
 * what the header cluster alone can tell (see validate.ts for the checks
 * against the file and QEMU's table limits); unknown extensions are kept
 * verbatim so a rewrite preserves them.
 *
 * Writers: a whole-cluster rewrite goes through serializeHeader; a change of
 * a few fields that must land in one small write (a new L1 or refcount
 * table, the snapshot switch, the dirty and corrupt bits) goes through
 * encodeHeaderFields, which serializes those fields with the same code and
 * returns their byte range. No other code writes header bytes.
 */
import { BlockError, hex } from '../../block/errors.js';

export const QCOW_MAGIC = 0x514649fb;
export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;
/** Bytes of the version 2 header (and of the version 3 fields a v2 image implies). */
export const V2_HEADER_LENGTH = 72;
/** Smallest version 3 header_length. */
export const V3_MIN_HEADER_LENGTH = 104;
/** header_length qemu-img 7.2 writes (compression_type plus padding to 8 bytes). */
export const V3_HEADER_LENGTH = 112;
/** Longest backing file name QEMU accepts (bytes). */
export const MAX_BACKING_FILE_NAME = 1023;

export const QCOW2_INCOMPAT_DIRTY = 1n << 0n;
export const QCOW2_INCOMPAT_CORRUPT = 1n << 1n;
export const QCOW2_INCOMPAT_DATA_FILE = 1n << 2n;
export const QCOW2_INCOMPAT_COMPRESSION = 1n << 3n;
export const QCOW2_INCOMPAT_EXTL2 = 1n << 4n;
export const QCOW2_INCOMPAT_MASK = 0x1fn;
export const QCOW2_COMPAT_LAZY_REFCOUNTS = 1n << 0n;
export const QCOW2_AUTOCLEAR_BITMAPS = 1n << 0n;
export const QCOW2_AUTOCLEAR_DATA_FILE_RAW = 1n << 1n;

export const QCOW2_COMPRESSION_TYPE_ZLIB = 0;
export const QCOW2_COMPRESSION_TYPE_ZSTD = 1;

export const QCOW2_EXT_MAGIC_END = 0;
export const QCOW2_EXT_MAGIC_BACKING_FORMAT = 0xe2792aca;
export const QCOW2_EXT_MAGIC_FEATURE_TABLE = 0x6803f857;
export const QCOW2_EXT_MAGIC_BITMAPS = 0x23852875;
export const QCOW2_EXT_MAGIC_CRYPTO_HEADER = 0x0537be77;
export const QCOW2_EXT_MAGIC_DATA_FILE = 0x44415441;

export const QCOW2_FEAT_TYPE_INCOMPATIBLE = 0;
export const QCOW2_FEAT_TYPE_COMPATIBLE = 1;
export const QCOW2_FEAT_TYPE_AUTOCLEAR = 2;

export interface Qcow2Feature {
  type: number;
  bit: number;
  name: string;
}

/** The feature-name table qemu-img 7.2 writes into every version 3 image, in its order. */
export const QEMU_FEATURE_TABLE: readonly Qcow2Feature[] = [
  { type: QCOW2_FEAT_TYPE_INCOMPATIBLE, bit: 0, name: 'dirty bit' },
  { type: QCOW2_FEAT_TYPE_INCOMPATIBLE, bit: 1, name: 'corrupt bit' },
  { type: QCOW2_FEAT_TYPE_INCOMPATIBLE, bit: 2, name: 'external data file' },
  { type: QCOW2_FEAT_TYPE_INCOMPATIBLE, bit: 3, name: 'compression type' },
  { type: QCOW2_FEAT_TYPE_INCOMPATIBLE, bit: 4, name: 'extended L2 entries' },
  { type: QCOW2_FEAT_TYPE_COMPATIBLE, bit: 0, name: 'lazy refcounts' },
  { type: QCOW2_FEAT_TYPE_AUTOCLEAR, bit: 0, name: 'bitmaps' },
  { type: QCOW2_FEAT_TYPE_AUTOCLEAR, bit: 1, name: 'raw external data' },
];

export type HeaderExtension =
  | { type: typeof QCOW2_EXT_MAGIC_BACKING_FORMAT; backingFormat: string }
  | { type: typeof QCOW2_EXT_MAGIC_FEATURE_TABLE; features: Qcow2Feature[] }
  | {
      type: typeof QCOW2_EXT_MAGIC_BITMAPS;
      nbBitmaps: number;
      /** The spec's reserved u32 (must be zero; kept as found). */
      reserved: number;
      bitmapDirectorySize: number;
      bitmapDirectoryOffset: number;
    }
  | { type: typeof QCOW2_EXT_MAGIC_CRYPTO_HEADER; offset: number; length: number }
  | { type: typeof QCOW2_EXT_MAGIC_DATA_FILE; dataFile: string }
  /** Any other extension, kept byte for byte. */
  | { type: number; data: Uint8Array };

export interface Qcow2Header {
  magic: number;
  version: 2 | 3;
  backingFileOffset: number;
  backingFileSize: number;
  clusterBits: number;
  /** Virtual disk size in bytes. */
  size: number;
  cryptMethod: number;
  /** Entries in the active L1 table. */
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  /** refcount_bits = 1 << refcountOrder. */
  refcountOrder: number;
  headerLength: number;
  compressionType: number;
  /** Bytes of the fixed header after compression_type up to header_length (padding or newer fields), kept verbatim. */
  headerTail: Uint8Array;
  /** Header extensions in on-disk order. */
  extensions: HeaderExtension[];
  /** The backing file name, or null. */
  backingFile: string | null;
}

// --------------------------------------------------------------- byte access

function u16(b: Uint8Array, p: number): number {
  return (b[p]! << 8) | b[p + 1]!;
}
function u32(b: Uint8Array, p: number): number {
  return ((b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!) >>> 0;
}
/** A u64 as a number: exact below 2^53, and larger values still compare as larger than any file. */
function u64(b: Uint8Array, p: number): number {
  return u32(b, p) * 0x100000000 + u32(b, p + 4);
}
function u64n(b: Uint8Array, p: number): bigint {
  return (BigInt(u32(b, p)) << 32n) | BigInt(u32(b, p + 4));
}
function put16(b: Uint8Array, p: number, v: number): void {
  b[p] = v >>> 8;
  b[p + 1] = v;
}
function put32(b: Uint8Array, p: number, v: number): void {
  b[p] = v >>> 24;
  b[p + 1] = v >>> 16;
  b[p + 2] = v >>> 8;
  b[p + 3] = v;
}
function put64(b: Uint8Array, p: number, v: number): void {
  put32(b, p, Math.floor(v / 0x100000000));
  put32(b, p + 4, v >>> 0);
}
function put64n(b: Uint8Array, p: number, v: bigint): void {
  put32(b, p, Number((v >> 32n) & 0xffffffffn));
  put32(b, p + 4, Number(v & 0xffffffffn));
}

/** Exported byte helpers for the other qcow2 modules (one set for the whole format). */
export const be = { u16, u32, u64, put16, put32, put64 };

const utf8 = new TextDecoder('utf-8', { fatal: false });
const utf8enc = new TextEncoder();

/** A NUL-padded string field (feature names, backing format). */
function cString(b: Uint8Array): string {
  const nul = b.indexOf(0);
  return utf8.decode(nul < 0 ? b : b.subarray(0, nul));
}

/** A header error in our words; `qemu`: QEMU's fixed text for the same failure (errors.ts). */
function err(code: 'EINVAL' | 'ENOTSUP' | 'ENOSPC', image: string, what: string, offset: number, qemu?: string): BlockError {
  return new BlockError(code, `${image}: qcow2 header: ${what} at ${hex(offset)}`, qemu === undefined ? undefined : { qemuMessage: qemu });
}

// -------------------------------------------------------------------- parse

/**
 * Bytes `parseHeader` needs to see: the whole header cluster (extensions and
 * the backing file name live in it). Callers read min(this, file size).
 */
export function headerClusterBytes(head: Uint8Array): number {
  if (head.length < 24) return 0;
  const bits = u32(head, 20);
  return bits >= MIN_CLUSTER_BITS && bits <= MAX_CLUSTER_BITS ? 2 ** bits : 0;
}

/**
 * Parses the header cluster (`buf` holds the image's first bytes: the whole
 * first cluster, or the whole file when it is shorter). Throws a BlockError
 * naming `image`, the field and its offset.
 */
export function parseHeader(buf: Uint8Array, image: string): Qcow2Header {
  if (buf.length < V2_HEADER_LENGTH) {
    throw new BlockError('EINVAL', `${image}: qcow2 header truncated: the file has ${buf.length} bytes, the header needs ${V2_HEADER_LENGTH} at 0x0`);
  }
  const magic = u32(buf, 0);
  if (magic !== QCOW_MAGIC) throw err('EINVAL', image, `Image is not in qcow2 format (magic ${hex(magic)})`, 0, 'Image is not in qcow2 format');
  const version = u32(buf, 4);
  if (version !== 2 && version !== 3) throw err('ENOTSUP', image, `Unsupported qcow2 version ${version}`, 4);
  const clusterBits = u32(buf, 20);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw err('EINVAL', image, `Unsupported cluster size: 2^${clusterBits} (cluster_bits must be ${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS})`, 20);
  }
  const clusterSize = 2 ** clusterBits;

  const h: Qcow2Header = {
    magic,
    version,
    backingFileOffset: u64(buf, 8),
    backingFileSize: u32(buf, 16),
    clusterBits,
    size: u64(buf, 24),
    cryptMethod: u32(buf, 32),
    l1Size: u32(buf, 36),
    l1TableOffset: u64(buf, 40),
    refcountTableOffset: u64(buf, 48),
    refcountTableClusters: u32(buf, 56),
    nbSnapshots: u32(buf, 60),
    snapshotsOffset: u64(buf, 64),
    incompatibleFeatures: 0n,
    compatibleFeatures: 0n,
    autoclearFeatures: 0n,
    refcountOrder: 4,
    headerLength: V2_HEADER_LENGTH,
    compressionType: QCOW2_COMPRESSION_TYPE_ZLIB,
    headerTail: new Uint8Array(0),
    extensions: [],
    backingFile: null,
  };

  if (version === 3) {
    if (buf.length < V3_MIN_HEADER_LENGTH) {
      throw new BlockError('EINVAL', `${image}: qcow2 header truncated: the file has ${buf.length} bytes, a version 3 header needs ${V3_MIN_HEADER_LENGTH} at 0x0`);
    }
    h.incompatibleFeatures = u64n(buf, 72);
    h.compatibleFeatures = u64n(buf, 80);
    h.autoclearFeatures = u64n(buf, 88);
    h.refcountOrder = u32(buf, 96);
    h.headerLength = u32(buf, 100);
    if (h.headerLength < V3_MIN_HEADER_LENGTH) throw err('EINVAL', image, `qcow2 header too short (header_length ${h.headerLength} < ${V3_MIN_HEADER_LENGTH})`, 100, 'qcow2 header too short');
    if (h.headerLength > clusterSize) throw err('EINVAL', image, `qcow2 header exceeds cluster size (header_length ${h.headerLength} > ${clusterSize})`, 100, 'qcow2 header exceeds cluster size');
    if (h.headerLength > buf.length) {
      throw new BlockError('EINVAL', `${image}: qcow2 header truncated: header_length is ${h.headerLength} but the file has ${buf.length} bytes at 0x64`);
    }
    if (h.headerLength > V3_MIN_HEADER_LENGTH) {
      h.compressionType = buf[104]!;
      h.headerTail = buf.slice(105, h.headerLength);
    }
  }
  if (h.refcountOrder > 6) throw err('EINVAL', image, `Reference count entry width too large; may not exceed 64 bits (refcount_order ${h.refcountOrder})`, 96);
  if (h.backingFileOffset > clusterSize) throw err('EINVAL', image, `Invalid backing file offset ${hex(h.backingFileOffset)} (beyond the header cluster)`, 8, 'Invalid backing file offset');

  // Extensions run up to the backing file name, or to the end of the header cluster. QEMU reads
  // one more extension header while it starts before that end (bytes past the file read as zeros,
  // an end marker) and refuses one that does not fit; none is needed when the space ends exactly.
  const extEnd = h.backingFileOffset || clusterSize;
  let p = h.headerLength;
  while (p < extEnd) {
    if (p + 8 > buf.length) break;
    const type = u32(buf, p);
    const len = u32(buf, p + 4);
    if (p + 8 > extEnd || len > extEnd - p - 8) {
      throw err('EINVAL', image, `Header extension ${hex(type)} too large (${len} bytes)`, p, 'Header extension too large');
    }
    if (p + 8 + len > buf.length) {
      throw new BlockError('EINVAL', `${image}: qcow2 header truncated: header extension ${hex(type)} at ${hex(p)} is past the end of the file`);
    }
    const data = buf.subarray(p + 8, p + 8 + len);
    if (type === QCOW2_EXT_MAGIC_END) break;
    h.extensions.push(parseExtension(type, data, image, p));
    p += 8 + ((len + 7) & ~7);
  }

  if (h.backingFileOffset !== 0) {
    const len = h.backingFileSize;
    if (len > Math.min(MAX_BACKING_FILE_NAME, clusterSize - h.backingFileOffset)) {
      throw err('EINVAL', image, `Backing file name too long (${len} bytes)`, 16, 'Backing file name too long');
    }
    if (h.backingFileOffset + len > buf.length) {
      throw new BlockError('EINVAL', `${image}: qcow2 header truncated: backing file name at ${hex(h.backingFileOffset)} is past the end of the file`);
    }
    h.backingFile = utf8.decode(buf.subarray(h.backingFileOffset, h.backingFileOffset + len));
  }
  return h;
}

function parseExtension(type: number, data: Uint8Array, image: string, at: number): HeaderExtension {
  switch (type) {
    case QCOW2_EXT_MAGIC_BACKING_FORMAT:
      if (data.length >= 16) throw err('ENOSPC', image, `backing format extension too large (${data.length} bytes, at most 15)`, at);
      return { type, backingFormat: cString(data) };
    case QCOW2_EXT_MAGIC_FEATURE_TABLE: {
      // A last entry cut short reads as if zero-padded to 48 bytes, and an entry with an empty name ends the table (as QEMU reads it).
      const features: Qcow2Feature[] = [];
      for (let q = 0; q + 2 < data.length; q += 48) {
        const name = cString(data.subarray(q + 2, Math.min(q + 48, data.length)));
        if (name === '') break;
        features.push({ type: data[q]!, bit: data[q + 1]!, name });
      }
      return { type, features };
    }
    case QCOW2_EXT_MAGIC_BITMAPS:
      if (data.length !== 24) throw err('EINVAL', image, `bitmaps_ext: Invalid extension length ${data.length}`, at);
      return {
        type,
        nbBitmaps: u32(data, 0),
        reserved: u32(data, 4),
        bitmapDirectorySize: u64(data, 8),
        bitmapDirectoryOffset: u64(data, 16),
      };
    case QCOW2_EXT_MAGIC_CRYPTO_HEADER:
      if (data.length !== 16) throw err('EINVAL', image, `Invalid encryption header extension length ${data.length}`, at);
      return { type, offset: u64(data, 0), length: u64(data, 8) };
    case QCOW2_EXT_MAGIC_DATA_FILE:
      return { type, dataFile: utf8.decode(data) };
    default:
      return { type, data: data.slice() };
  }
}

/** The first extension of `type`, typed by its magic. */
export function findExtension<T extends number>(h: Qcow2Header, type: T): Extract<HeaderExtension, { type: T }> | undefined {
  // The last of repeated extensions counts, as QEMU reads them in order and each overwrites the one before.
  return [...h.extensions].reverse().find((e) => e.type === type) as Extract<HeaderExtension, { type: T }> | undefined;
}

/** Names of the set bits of `mask` among the features of `featureType`, from the image's table; "unknown" bits listed by number. */
export function describeFeatures(h: Qcow2Header, featureType: number, mask: bigint): string[] {
  const table = findExtension(h, QCOW2_EXT_MAGIC_FEATURE_TABLE)?.features ?? [];
  const out: string[] = [];
  let left = mask;
  for (const f of table) {
    if (f.type !== featureType || f.bit > 63) continue;
    const bit = 1n << BigInt(f.bit);
    if (left & bit) {
      out.push(f.name);
      left &= ~bit;
    }
  }
  if (left) {
    const kind = featureType === QCOW2_FEAT_TYPE_INCOMPATIBLE ? 'incompatible' : featureType === QCOW2_FEAT_TYPE_COMPATIBLE ? 'compatible' : 'autoclear';
    out.push(`Unknown ${kind} feature: ${left.toString(16)}`);
  }
  return out;
}

// ---------------------------------------------------------------- serialize

function extensionBytes(e: HeaderExtension): Uint8Array {
  if ('data' in e) return e.data;
  switch (e.type) {
    case QCOW2_EXT_MAGIC_BACKING_FORMAT:
      return utf8enc.encode(e.backingFormat);
    case QCOW2_EXT_MAGIC_FEATURE_TABLE: {
      const out = new Uint8Array(48 * e.features.length);
      e.features.forEach((f, i) => {
        out[i * 48] = f.type;
        out[i * 48 + 1] = f.bit;
        out.set(utf8enc.encode(f.name).subarray(0, 46), i * 48 + 2);
      });
      return out;
    }
    case QCOW2_EXT_MAGIC_BITMAPS: {
      const out = new Uint8Array(24);
      put32(out, 0, e.nbBitmaps);
      put32(out, 4, e.reserved);
      put64(out, 8, e.bitmapDirectorySize);
      put64(out, 16, e.bitmapDirectoryOffset);
      return out;
    }
    case QCOW2_EXT_MAGIC_CRYPTO_HEADER: {
      const out = new Uint8Array(16);
      put64(out, 0, e.offset);
      put64(out, 8, e.length);
      return out;
    }
    case QCOW2_EXT_MAGIC_DATA_FILE:
      return utf8enc.encode(e.dataFile);
  }
  throw new Error(`unreachable: extension ${(e as { type: number }).type}`);
}

/** Where each fixed-header field lives (byte offset, width), by the spec's names in camelCase. */
export const HEADER_FIELDS = {
  magic: { offset: 0, bytes: 4 },
  version: { offset: 4, bytes: 4 },
  backingFileOffset: { offset: 8, bytes: 8 },
  backingFileSize: { offset: 16, bytes: 4 },
  clusterBits: { offset: 20, bytes: 4 },
  size: { offset: 24, bytes: 8 },
  cryptMethod: { offset: 32, bytes: 4 },
  l1Size: { offset: 36, bytes: 4 },
  l1TableOffset: { offset: 40, bytes: 8 },
  refcountTableOffset: { offset: 48, bytes: 8 },
  refcountTableClusters: { offset: 56, bytes: 4 },
  nbSnapshots: { offset: 60, bytes: 4 },
  snapshotsOffset: { offset: 64, bytes: 8 },
  incompatibleFeatures: { offset: 72, bytes: 8 },
  compatibleFeatures: { offset: 80, bytes: 8 },
  autoclearFeatures: { offset: 88, bytes: 8 },
  refcountOrder: { offset: 96, bytes: 4 },
  headerLength: { offset: 100, bytes: 4 },
  compressionType: { offset: 104, bytes: 1 },
} as const;

export type HeaderField = keyof typeof HEADER_FIELDS;

/**
 * Writes the fixed part of `h` (up to header_length) into `b`, taking
 * backing_file_offset and backing_file_size as they are in `h`.
 */
function putFixedHeader(b: Uint8Array, h: Qcow2Header): void {
  put32(b, 0, h.magic);
  put32(b, 4, h.version);
  put64(b, 8, h.backingFileOffset);
  put32(b, 16, h.backingFileSize);
  put32(b, 20, h.clusterBits);
  put64(b, 24, h.size);
  put32(b, 32, h.cryptMethod);
  put32(b, 36, h.l1Size);
  put64(b, 40, h.l1TableOffset);
  put64(b, 48, h.refcountTableOffset);
  put32(b, 56, h.refcountTableClusters);
  put32(b, 60, h.nbSnapshots);
  put64(b, 64, h.snapshotsOffset);
  if (h.version === 3) {
    put64n(b, 72, h.incompatibleFeatures);
    put64n(b, 80, h.compatibleFeatures);
    put64n(b, 88, h.autoclearFeatures);
    put32(b, 96, h.refcountOrder);
    put32(b, 100, h.headerLength);
    if (h.headerLength > V3_MIN_HEADER_LENGTH) {
      b[104] = h.compressionType;
      b.set(h.headerTail.subarray(0, h.headerLength - 105), 105);
    }
  }
}

/**
 * The header bytes that hold `fields`, serialized from `h`: the smallest
 * contiguous range covering them (fields in between are taken from `h`
 * too), ready for one write at `offset`. Used where a few fields must change
 * together in one request (fields within one 512-byte sector change
 * atomically). Throws for a field the header version does not have.
 */
export function encodeHeaderFields(h: Qcow2Header, fields: readonly HeaderField[]): { offset: number; bytes: Uint8Array } {
  if (fields.length === 0) throw new BlockError('EINVAL', 'qcow2 header: no fields to write');
  const end = h.version === 2 ? V2_HEADER_LENGTH : h.headerLength;
  let from = Infinity;
  let to = 0;
  for (const f of fields) {
    const { offset, bytes } = HEADER_FIELDS[f];
    if (offset + bytes > end) throw new BlockError('EINVAL', `qcow2 header: field ${f} at ${hex(offset)} is not part of a version ${h.version} header of ${end} bytes`);
    from = Math.min(from, offset);
    to = Math.max(to, offset + bytes);
  }
  const b = new Uint8Array(Math.max(end, V2_HEADER_LENGTH));
  putFixedHeader(b, h);
  return { offset: from, bytes: b.slice(from, to) };
}

/**
 * Serializes `h` into a whole header cluster (zero-filled after the backing
 * file name), as QEMU lays it out: fixed header, extensions in order, the end
 * marker, then the backing file name. `backingFileOffset` and
 * `backingFileSize` are recomputed from `backingFile` (and written back into
 * `h`). Throws ENOSPC when it does not fit in one cluster.
 */
export function serializeHeader(h: Qcow2Header): Uint8Array {
  const clusterSize = 2 ** h.clusterBits;
  const exts = h.extensions.map((e) => ({ type: e.type, bytes: extensionBytes(e) }));
  const name = h.backingFile === null ? null : utf8enc.encode(h.backingFile);
  const headerLength = h.version === 2 ? V2_HEADER_LENGTH : h.headerLength;
  let total = headerLength + 8;
  for (const e of exts) total += 8 + ((e.bytes.length + 7) & ~7);
  const nameOffset = total;
  if (name) total += name.length;
  if (total > clusterSize) {
    throw new BlockError('ENOSPC', `qcow2 header: header, extensions and backing file name need ${total} bytes, more than one cluster (${clusterSize})`);
  }
  h.backingFileOffset = name ? nameOffset : 0;
  h.backingFileSize = name ? name.length : 0;

  const b = new Uint8Array(clusterSize);
  putFixedHeader(b, h);
  let p = headerLength;
  for (const e of exts) {
    put32(b, p, e.type);
    put32(b, p + 4, e.bytes.length);
    b.set(e.bytes, p + 8);
    p += 8 + ((e.bytes.length + 7) & ~7);
  }
  // End marker: 8 zero bytes, already there.
  if (name) b.set(name, nameOffset);
  return b;
}
