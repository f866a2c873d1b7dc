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
 * Encrypted (AES) images are refused.
 */
import { inflateRaw } from 'pako';
import { BlockError, hex } from '../../block/errors.js';
import { type BlockDriver, type DriverInfo } from '../../block/driver.js';
import type { BlockNode } from '../../block/node.js';
import { bdrvPread, readBacking } from '../../block/io.js';
import { BDRV_BLOCK_COMPRESSED, BDRV_BLOCK_DATA, BDRV_BLOCK_OFFSET_VALID } from '../../block/status.js';
import { checkDataInFile, readStructure, view } from '../on-disk.js';
import {
  parseQcowHeader,
  parseQcowL2Entry,
  QCOW1_CRYPT_NONE,
  QCOW1_HEADER_BYTES,
  QCOW1_MAGIC,
  QCOW1_VERSION,
  type QcowHeader,
  type QcowL2Entry,
} from './header.js';
import { qcowProbe } from './probe.js';

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
}

function st(bs: BlockNode): QcowState {
  return bs.state<QcowState>();
}

async function l2Entry(s: QcowState, offset: number): Promise<QcowL2Entry> {
  const l1Index = Math.floor(offset / (s.clusterSize * s.l2Size));
  const l2Offset = s.l1[l1Index]!;
  if (l2Offset === 0) return { kind: 'unallocated' };
  let dv = s.l2Cache.get(l2Offset);
  if (!dv) {
    const what = `qcow L2 table (L1 entry ${l1Index} at ${hex(s.header.l1TableOffset + l1Index * 8)})`;
    dv = view(await readStructure(s.file, s.image, what, l2Offset, s.l2Size * 8));
    if (s.l2Cache.size >= L2_CACHE_TABLES) s.l2Cache.delete(s.l2Cache.keys().next().value!);
    s.l2Cache.set(l2Offset, dv);
  }
  const i = Math.floor(offset / s.clusterSize) % s.l2Size;
  return parseQcowL2Entry(dv.getUint32(i * 8), dv.getUint32(i * 8 + 4), s.clusterBits);
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

  probe: qcowProbe,

  async open(bs) {
    const file = bs.file!.node;
    const image = bs.filename;
    const h = parseQcowHeader(await readStructure(file, image, 'qcow header', 0, QCOW1_HEADER_BYTES));
    const bad = (why: string, code: 'EINVAL' | 'ENOTSUP' | 'EFBIG' = 'EINVAL') => new BlockError(code, `${image}: ${why}`);
    if (h.magic !== QCOW1_MAGIC) throw bad('Image not in qcow format');
    if (h.version !== QCOW1_VERSION) {
      const hint = h.version === 2 || h.version === 3 ? " (try the 'qcow2' driver instead)" : '';
      throw bad(`qcow (v1) does not support qcow version ${h.version}${hint}`, 'ENOTSUP');
    }
    if (h.size <= 1) throw bad('Image size is too small (must be at least 2 bytes)');
    if (h.clusterBits < 9 || h.clusterBits > 16) throw bad(`Cluster size must be between 512 and 64k (cluster_bits ${h.clusterBits} in the qcow header)`);
    if (h.l2Bits < 6 || h.l2Bits > 13) throw bad(`L2 table size must be between 512 and 64k (l2_bits ${h.l2Bits} in the qcow header)`);
    if (h.cryptMethod !== QCOW1_CRYPT_NONE) throw bad(`encrypted qcow images are not supported (crypt_method ${h.cryptMethod})`, 'ENOTSUP');
    const shift = 2 ** (h.clusterBits + h.l2Bits);
    if (h.size > Number.MAX_SAFE_INTEGER - shift) throw bad(`Image too large (size ${h.size} in the qcow header)`);
    const l1Size = Math.ceil(h.size / shift);
    if (l1Size > 0x7fffffff / 8) throw bad(`Image too large (size ${h.size} in the qcow header)`);
    const l1Raw = view(await readStructure(file, image, 'qcow L1 table', h.l1TableOffset, l1Size * 8));
    const l1 = new Float64Array(l1Size);
    for (let i = 0; i < l1Size; i++) l1[i] = l1Raw.getUint32(i * 8) * 0x100000000 + l1Raw.getUint32(i * 8 + 4);
    if (h.backingFileOffset !== 0) {
      if (h.backingFileSize > MAX_BACKING_NAME) throw bad(`Backing file name too long (${h.backingFileSize} bytes at ${hex(h.backingFileOffset)})`);
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
    } satisfies QcowState;
    bs.totalBytes = Math.floor(h.size / 512) * 512;
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
        await bdrvPread(s.file, host, n, out);
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
    return { status: BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID, pnum, map: host, file: s.file };
  },

  getDriverInfo(bs): DriverInfo {
    return { clusterSize: st(bs).clusterSize, isDirty: false };
  },
};

