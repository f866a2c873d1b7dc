/**
 * The `qcow` format driver (QEMU's original copy-on-write format, version 1),
 * read only.
 *
 * Guest offsets map through an L1 table and L2 tables to clusters of
 * 512 B .. 64 KiB (header.ts); unallocated clusters come from the backing file
 * (qcow stores no backing format: it is probed), compressed clusters are raw
 * deflate of one whole cluster. As QEMU's block/qcow.c: open enforces QEMU's
 * limits (cluster and L2 sizes, "Image too large", backing file name length),
 * the virtual size is the header's size rounded down to a sector, and block
 * status answers DATA with the host offset, DATA | COMPRESSED without one,
 * or nothing for an unallocated cluster. Beyond QEMU, every L2 table and data
 * cluster is checked against the end of the file before it is read, so a
 * broken image fails with one clear error instead of reading zeros.
 * Encrypted images (the legacy "aes": AES-128-CBC per 512-byte sector, IV
 * from the guest sector number, src/crypto/aes-cbc.ts) open with the
 * `encrypt.key-secret` option, as QEMU's; compressed clusters are never
 * encrypted. A new cluster of an encrypted image is written whole, its
 * other sectors encrypted zeros (or the backing file's data), as QEMU does.
 *
 * Writes (QEMU's get_cluster_offset with allocation): a missing L2 table is
 * placed at the end of the file rounded up to a cluster, zeroed, and its L1
 * entry written; a missing cluster likewise, the file grown over it, then its
 * L2 entry written, and only then the guest data. qcow has no refcounts, so
 * nothing else changes. A partial write of a compressed cluster decompresses
 * it into a new cluster first. Beyond QEMU 7.2, a partial write of a new
 * cluster copies the rest of the cluster from the backing file (QEMU relies
 * on the 512-byte clusters its images with a backing file get, and an image
 * with larger clusters would lose the backing data around the write).
 * Compressed writes (convert -c) append the deflated cluster at the end of
 * the file, unaligned, as QEMU does.
 */
import { inflateRaw } from 'pako';
import { BlockError, hex } from '../../block/errors.js';
import { type BlockDriver, type DriverInfo } from '../../block/driver.js';
import type { BlockNode } from '../../block/node.js';
import { bdrvGetLength, bdrvPread, bdrvPwrite, bdrvTruncate, readBacking } from '../../block/io.js';
import { deflateRaw4k } from '../../codecs/deflate.js';
import { bdrvDebugEvent } from '../../block/debug-event.js';
import { lookupSecret } from '../../block/secrets.js';
import type { AesCbcPlain64 } from '../../crypto/aes-cbc.js';
import { BDRV_BLOCK_COMPRESSED, BDRV_BLOCK_DATA, BDRV_BLOCK_OFFSET_VALID } from '../../block/status.js';
import { checkDataInFile, readStructure, view } from '../on-disk.js';
import {
  parseQcowHeader,
  parseQcowL2Entry,
  QCOW1_CRYPT_AES,
  QCOW1_CRYPT_NONE,
  QCOW1_HEADER_BYTES,
  QCOW1_MAGIC,
  QCOW1_VERSION,
  serializeQcowL1,
  serializeQcowL2Entry,
  type QcowHeader,
  type QcowL2Entry,
} from './header.js';
import { qcowProbe } from './probe.js';
import { checkQcowCreate, QCOW_CREATE_OPTS, qcowCreateImage } from './create.js';

const L2_CACHE_TABLES = 16;
const MAX_BACKING_NAME = 1023;

interface QcowState {
  image: string;
  file: BlockNode;
  header: QcowHeader;
  clusterBits: number;
  clusterSize: number;
  l2Size: number;
  l1: Float64Array;
  l2Cache: Map<number, DataView>;
  /** The last decompressed cluster (sequential reads of one cluster decompress it once). */
  cachedOffset: number;
  cached: Uint8Array;
  /** Serializes allocating writes (L1, L2 and file end updates). */
  lock: Promise<void>;
  /** The cipher of an encrypted image (undefined: plain, or opened without I/O). */
  cipher?: AesCbcPlain64;
}

const SECTOR = 512;

function cipherOf(s: QcowState): AesCbcPlain64 {
  if (!s.cipher) throw new BlockError('EACCES', `${s.image}: the image was opened without its key ('encrypt.key-secret')`);
  return s.cipher;
}

function st(bs: BlockNode): QcowState {
  return bs.state<QcowState>();
}

function cacheL2(s: QcowState, l2Offset: number, dv: DataView): void {
  if (s.l2Cache.size >= L2_CACHE_TABLES) s.l2Cache.delete(s.l2Cache.keys().next().value!);
  s.l2Cache.set(l2Offset, dv);
}

/** The L2 table holding guest `offset`, or undefined when its L1 entry is empty. */
async function l2Table(s: QcowState, offset: number): Promise<{ l2Offset: number; dv: DataView } | undefined> {
  const l1Index = Math.floor(offset / (s.clusterSize * s.l2Size));
  const l2Offset = s.l1[l1Index]!;
  if (l2Offset === 0) return undefined;
  let dv = s.l2Cache.get(l2Offset);
  if (!dv) {
    const what = `qcow L2 table (L1 entry ${l1Index} at ${hex(s.header.l1TableOffset + l1Index * 8)})`;
    await bdrvDebugEvent(s.file, 'l2_load');
    dv = view(await readStructure(s.file, s.image, what, l2Offset, s.l2Size * 8));
    cacheL2(s, l2Offset, dv);
  }
  return { l2Offset, dv };
}

function l2Index(s: QcowState, offset: number): number {
  return Math.floor(offset / s.clusterSize) % s.l2Size;
}

async function l2Entry(s: QcowState, offset: number): Promise<QcowL2Entry> {
  const t = await l2Table(s, offset);
  if (!t) return { kind: 'unallocated' };
  const i = l2Index(s, offset);
  return parseQcowL2Entry(t.dv.getUint32(i * 8), t.dv.getUint32(i * 8 + 4), s.clusterBits);
}

/** The end of the file rounded up to a cluster: where QEMU puts a new table or cluster. */
async function clusterAlignedEnd(s: QcowState): Promise<number> {
  const end = Math.ceil((await bdrvGetLength(s.file)) / s.clusterSize) * s.clusterSize;
  if (end + s.clusterSize > Number.MAX_SAFE_INTEGER) throw new BlockError('EFBIG', `${s.image}: the file is too large to hold a new qcow cluster`);
  return end;
}

/** The L2 table for guest `offset`, allocated (zeroed, its L1 entry written) when missing. */
async function l2TableForWrite(s: QcowState, offset: number): Promise<{ l2Offset: number; dv: DataView }> {
  const t = await l2Table(s, offset);
  if (t) return t;
  const l1Index = Math.floor(offset / (s.clusterSize * s.l2Size));
  const l2Offset = await clusterAlignedEnd(s);
  const table = new Uint8Array(s.l2Size * 8);
  s.l1[l1Index] = l2Offset;
  await bdrvDebugEvent(s.file, 'l1_update');
  await bdrvPwrite(s.file, s.header.l1TableOffset + l1Index * 8, 8, serializeQcowL1([l2Offset]));
  await bdrvDebugEvent(s.file, 'l2_load');
  await bdrvPwrite(s.file, l2Offset, table.length, table);
  const dv = view(table);
  cacheL2(s, l2Offset, dv);
  return { l2Offset, dv };
}

/** Stores L2 entry `e` for guest `offset` (in the cached table and the file). */
async function setL2Entry(s: QcowState, t: { l2Offset: number; dv: DataView }, offset: number, e: QcowL2Entry): Promise<void> {
  const i = l2Index(s, offset);
  const raw = serializeQcowL2Entry(e, s.clusterBits);
  new Uint8Array(t.dv.buffer, t.dv.byteOffset + i * 8, 8).set(raw);
  await bdrvPwrite(s.file, t.l2Offset + i * 8, 8, raw);
}

/** Runs `fn` after every earlier allocating write finished. */
function locked<T>(s: QcowState, fn: () => Promise<T>): Promise<T> {
  const next = s.lock.then(fn);
  s.lock = next.then(
    () => {},
    () => {},
  );
  return next;
}

/**
 * Host offset of a writable cluster for guest `offset` (`n` bytes of it to be
 * written), allocating it as the module comment says.
 */
async function clusterForWrite(bs: BlockNode, s: QcowState, offset: number, n: number): Promise<number> {
  const t = await l2TableForWrite(s, offset);
  const i = l2Index(s, offset);
  const e = parseQcowL2Entry(t.dv.getUint32(i * 8), t.dv.getUint32(i * 8 + 4), s.clusterBits);
  if (e.kind === 'normal') {
    if (e.offset % 512 !== 0 || e.offset + s.clusterSize > s.file.totalBytes) {
      throw new BlockError('ECORRUPT', `${s.image}: qcow L2 entry for guest offset ${hex(offset)} (at ${hex(t.l2Offset + i * 8)}) points at ${hex(e.offset)}, ${e.offset % 512 ? 'not sector aligned' : `past the end of the file (${s.file.totalBytes} bytes)`}`);
    }
    return e.offset;
  }
  await bdrvDebugEvent(s.file, 'cluster_alloc');
  const start = offset - (offset % s.clusterSize);
  let fill: Uint8Array | undefined;
  if (n < s.clusterSize) {
    if (e.kind === 'compressed') {
      fill = new Uint8Array(s.clusterSize);
      await readCompressed(s, start, e, fill);
    } else if (bs.backing) {
      fill = new Uint8Array(Math.min(s.clusterSize, bs.totalBytes - start));
      await readBacking(bs, start, fill.length, fill);
      if (fill.every((b) => b === 0)) fill = undefined;
    }
    // Encrypted zeros are not zeros: the sectors around the write are stored encrypted.
    if (s.header.cryptMethod === QCOW1_CRYPT_AES) fill ??= new Uint8Array(s.clusterSize);
  }
  const host = await clusterAlignedEnd(s);
  if (fill) {
    const whole = new Uint8Array(s.clusterSize);
    whole.set(fill);
    if (s.header.cryptMethod === QCOW1_CRYPT_AES) cipherOf(s).encrypt(whole, start / SECTOR);
    await bdrvPwrite(s.file, host, s.clusterSize, whole);
  } else {
    await bdrvTruncate(s.file, host + s.clusterSize);
  }
  await bdrvDebugEvent(s.file, 'l2_update');
  await setL2Entry(s, t, offset, { kind: 'normal', offset: host });
  return host;
}

async function qcowWrite(bs: BlockNode, s: QcowState, offset: number, bytes: number, buf: Uint8Array): Promise<void> {
  s.cachedOffset = -1;
  let done = 0;
  while (done < bytes) {
    const off = offset + done;
    const n = inCluster(s, off, bytes - done);
    const inCl = off % s.clusterSize;
    const host = await clusterForWrite(bs, s, off, n);
    let data = buf.subarray(done, done + n);
    if (s.header.cryptMethod === QCOW1_CRYPT_AES) {
      data = data.slice();
      cipherOf(s).encrypt(data, off / SECTOR);
    }
    await bdrvDebugEvent(s.file, 'write_aio');
    await bdrvPwrite(s.file, host + inCl, n, data);
    done += n;
  }
}

/** One cluster (or the image's last, shorter one) deflated; null when that does not shrink it. */
function qcowCompress(s: QcowState, data: Uint8Array): Uint8Array | null {
  let input = data;
  if (data.length < s.clusterSize) {
    input = new Uint8Array(s.clusterSize);
    input.set(data);
  }
  const out = deflateRaw4k(input);
  return out.length < s.clusterSize ? out : null;
}

async function qcowWriteCompressed(bs: BlockNode, s: QcowState, offset: number, bytes: number, buf: Uint8Array, pre: Uint8Array | null | undefined): Promise<void> {
  if (offset % s.clusterSize !== 0 || (bytes !== s.clusterSize && (bytes > s.clusterSize || offset + bytes !== bs.totalBytes))) {
    throw new BlockError('EINVAL', `${s.image}: a compressed qcow write must cover one whole cluster (offset ${hex(offset)}, ${bytes} bytes)`);
  }
  const out = pre !== undefined ? pre : qcowCompress(s, buf);
  if (!out) return qcowWrite(bs, s, offset, bytes, buf);
  s.cachedOffset = -1;
  const t = await l2TableForWrite(s, offset);
  // Appended where the file ends, unaligned; an earlier cluster of this guest offset is left behind (qcow counts no references).
  const host = await bdrvGetLength(s.file);
  await bdrvDebugEvent(s.file, 'l2_update_compressed');
  await bdrvDebugEvent(s.file, 'write_compressed');
  await bdrvPwrite(s.file, host, out.length, out);
  await setL2Entry(s, t, offset, { kind: 'compressed', offset: host, size: out.length });
}

/** Bytes from `offset` to the end of its cluster, at most `bytes`. */
function inCluster(s: QcowState, offset: number, bytes: number): number {
  return Math.min(bytes, s.clusterSize - (offset % s.clusterSize));
}

async function readCompressed(s: QcowState, guest: number, e: { offset: number; size: number }, out: Uint8Array): Promise<void> {
  if (s.cachedOffset !== e.offset) {
    const input = await readStructure(s.file, s.image, `qcow compressed cluster for guest offset ${hex(guest)}`, e.offset, e.size);
    let got: Uint8Array | undefined;
    try {
      got = inflateRaw(input) as Uint8Array;
    } catch {
      got = undefined;
    }
    if (!(got instanceof Uint8Array) || got.length < s.clusterSize) {
      throw new BlockError('EIO', `${s.image}: could not decompress the qcow cluster for guest offset ${hex(guest)} at host offset ${hex(e.offset)} (${e.size} bytes)`);
    }
    s.cached = got.subarray(0, s.clusterSize);
    s.cachedOffset = e.offset;
  }
  const at = guest % s.clusterSize;
  out.set(s.cached.subarray(at, at + out.length));
}

export const qcowDriver: BlockDriver = {
  name: 'qcow',
  kind: 'format',
  supportsBacking: true,
  supportsCompressedWrites: true,
  createOptions: QCOW_CREATE_OPTS,
  checkCreate: checkQcowCreate,
  create: qcowCreateImage,

  probe: qcowProbe,

  async compressCluster(bs, data) {
    return qcowCompress(st(bs), data);
  },

  async open(bs, options) {
    const file = bs.file!.node;
    const image = bs.filename;
    const h = parseQcowHeader(await readStructure(file, image, 'qcow header', 0, QCOW1_HEADER_BYTES));
    // QEMU's order of checks; qemuMessage is its text where ours adds the field's value.
    const bad = (why: string, qemuMessage?: string, code: 'EINVAL' | 'ENOTSUP' | 'EFBIG' = 'EINVAL') =>
      new BlockError(code, `${image}: ${why}`, qemuMessage === undefined ? undefined : { qemuMessage });
    if (h.magic !== QCOW1_MAGIC) throw bad('Image not in qcow format');
    if (h.version !== QCOW1_VERSION) {
      const hint = h.version === 2 || h.version === 3 ? " (try the 'qcow2' driver instead)" : '';
      throw bad(`qcow (v1) does not support qcow version ${h.version}${hint}`, undefined, 'ENOTSUP');
    }
    if (h.size <= 1) throw bad('Image size is too small (must be at least 2 bytes)');
    if (h.clusterBits < 9 || h.clusterBits > 16) throw bad(`Cluster size must be between 512 and 64k (cluster_bits ${h.clusterBits} in the qcow header)`, 'Cluster size must be between 512 and 64k');
    if (h.l2Bits < 6 || h.l2Bits > 13) throw bad(`L2 table size must be between 512 and 64k (l2_bits ${h.l2Bits} in the qcow header)`, 'L2 table size must be between 512 and 64k');
    if (h.cryptMethod !== QCOW1_CRYPT_NONE && h.cryptMethod !== QCOW1_CRYPT_AES) {
      throw bad(`invalid encryption method in qcow header (crypt_method ${h.cryptMethod})`, 'invalid encryption method in qcow header');
    }
    let cipher: AesCbcPlain64 | undefined;
    if (h.cryptMethod === QCOW1_CRYPT_AES) {
      const secretId = options['encrypt.key-secret'];
      if (typeof secretId !== 'string') {
        if (!options.noIo) throw bad(`Parameter 'encrypt.key-secret' is required for cipher`);
      } else {
        const password = lookupSecret(secretId);
        if (!password) throw bad(`No secret with id '${secretId}'`);
        const { AesCbcPlain64: Cipher, qcowAesKey } = await import('../../crypto/aes-cbc.js');
        cipher = new Cipher(qcowAesKey(password));
      }
      bs.encrypted = true;
    }
    const shift = 2 ** (h.clusterBits + h.l2Bits);
    if (h.size > Number.MAX_SAFE_INTEGER - shift) throw bad(`Image too large (size ${h.size} in the qcow header)`, 'Image too large');
    const l1Size = Math.ceil(h.size / shift);
    if (l1Size > 0x7fffffff / 8) throw bad(`Image too large (size ${h.size} in the qcow header)`, 'Image too large');
    const l1Raw = view(await readStructure(file, image, 'qcow L1 table', h.l1TableOffset, l1Size * 8));
    const l1 = new Float64Array(l1Size);
    for (let i = 0; i < l1Size; i++) l1[i] = l1Raw.getUint32(i * 8) * 0x100000000 + l1Raw.getUint32(i * 8 + 4);
    if (h.backingFileOffset !== 0) {
      if (h.backingFileSize > MAX_BACKING_NAME) {
        throw bad(`Backing file name too long (${h.backingFileSize} bytes at ${hex(h.backingFileOffset)})`, 'Backing file name too long');
      }
      const name = await readStructure(file, image, 'qcow backing file name', h.backingFileOffset, h.backingFileSize);
      bs.backingFile = new TextDecoder().decode(name);
      bs.backingFormat = null;
    }
    bs.opaque = {
      image,
      file,
      header: h,
      clusterBits: h.clusterBits,
      clusterSize: 2 ** h.clusterBits,
      l2Size: 2 ** h.l2Bits,
      l1,
      l2Cache: new Map(),
      cachedOffset: -1,
      cached: new Uint8Array(0),
      lock: Promise.resolve(),
      ...(cipher ? { cipher } : {}),
    } satisfies QcowState;
    bs.totalBytes = Math.floor(h.size / 512) * 512;
    bs.limits = { ...bs.limits, requestAlignment: 512 };
  },

  async pwritev(bs, offset, bytes, buf, flags) {
    const s = st(bs);
    if (flags.compressed) return locked(s, () => qcowWriteCompressed(bs, s, offset, bytes, buf, flags.precompressed));
    return locked(s, () => qcowWrite(bs, s, offset, bytes, buf));
  },

  async makeEmpty(bs) {
    // QEMU's qcow_make_empty: an empty L1 table, and the file cut right after it.
    const s = st(bs);
    await locked(s, async () => {
      s.l1.fill(0);
      await bdrvPwrite(s.file, s.header.l1TableOffset, s.l1.length * 8, serializeQcowL1(s.l1));
      await bdrvTruncate(s.file, s.header.l1TableOffset + s.l1.length * 8);
      s.l2Cache.clear();
      s.cachedOffset = -1;
    });
  },

  async preadv(bs, offset, bytes, buf) {
    const s = st(bs);
    let done = 0;
    while (done < bytes) {
      const off = offset + done;
      const n = inCluster(s, off, bytes - done);
      const out = buf.subarray(done, done + n);
      const e = await l2Entry(s, off);
      if (e.kind === 'unallocated') {
        await readBacking(bs, off, n, out);
      } else if (e.kind === 'normal') {
        const host = e.offset + (off % s.clusterSize);
        checkDataInFile(s.file, s.image, 'qcow data cluster', off, host, n);
        await bdrvDebugEvent(s.file, 'read_aio');
        await bdrvPread(s.file, host, n, out);
        if (s.header.cryptMethod === QCOW1_CRYPT_AES) cipherOf(s).decrypt(out, off / SECTOR);
      } else {
        await readCompressed(s, off, e, out);
      }
      done += n;
    }
  },

  async blockStatus(bs, _wantZero, offset, bytes) {
    const s = st(bs);
    // One cluster at a time as QEMU, merged while the next cluster gives the same (contiguous) answer.
    const first = await l2Entry(s, offset);
    let pnum = inCluster(s, offset, bytes);
    const host = first.kind === 'normal' ? first.offset + (offset % s.clusterSize) : -1;
    while (pnum < bytes) {
      const e = await l2Entry(s, offset + pnum);
      if (e.kind !== first.kind) break;
      if (e.kind === 'normal' && e.offset !== host + pnum) break;
      pnum += inCluster(s, offset + pnum, bytes - pnum);
    }
    if (first.kind === 'unallocated') return { status: 0, pnum };
    if (first.kind === 'compressed') return { status: BDRV_BLOCK_DATA | BDRV_BLOCK_COMPRESSED, pnum };
    // The host bytes of an encrypted image are not the guest's: no offset to read them at (as QEMU).
    if (s.header.cryptMethod === QCOW1_CRYPT_AES) return { status: BDRV_BLOCK_DATA, pnum };
    return { status: BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID, pnum, map: host, file: s.file };
  },

  getDriverInfo(bs): DriverInfo {
    return { clusterSize: st(bs).clusterSize, isDirty: false };
  },
};

