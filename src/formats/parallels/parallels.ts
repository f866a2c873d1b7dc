/**
 * The `parallels` format driver (Parallels / Virtuozzo expandable images):
 * read, and `check -r` repairs.
 *
 * Clusters of `tracks` sectors are found through the BAT (header.ts). As
 * QEMU's block/parallels.c: open checks the version and magic, refuses zero
 * or huge clusters and catalogs ("Catalog too large"), the old magic keeps
 * only the low 32 bits of nb_sectors, unallocated clusters read from a
 * backing node when one is attached (the image names none) and otherwise as
 * zeros, and block status merges clusters whose host sectors are contiguous.
 * An image marked in use (not closed cleanly) opens read-only only, as in
 * QEMU. Beyond QEMU, the BAT and every data cluster read are checked against
 * the end of the file.
 *
 * A read/write open (qemu-img check -r) behaves as QEMU 7.2's: open marks the
 * header in use, close clears the mark and cuts (or extends) the file to the
 * data end found at open — the highest BAT entry plus a cluster, or the
 * header's data_off — even when a repair moved the last cluster since.
 */
import { BlockError, hex } from '../../block/errors.js';
import { type BlockDriver, type CheckResult } from '../../block/driver.js';
import type { BlockNode } from '../../block/node.js';
import { bdrvFlush, bdrvGetLength, bdrvPread, bdrvPwrite, bdrvTruncate, readBacking } from '../../block/io.js';
import { BDRV_BLOCK_DATA, BDRV_BLOCK_OFFSET_VALID } from '../../block/status.js';
import { checkDataInFile, readStructure } from '../on-disk.js';
import {
  HEADER_INUSE_MAGIC,
  HEADER_MAGIC,
  HEADER_MAGIC2,
  HEADER_VERSION,
  PARALLELS_HEADER_BYTES,
  PARALLELS_INUSE_OFFSET,
  parseParallelsBat,
  parseParallelsHeader,
  serializeParallelsBat,
  serializeParallelsInuse,
} from './header.js';
import { parallelsProbe } from './probe.js';

const SECTOR = 512;

interface ParallelsState {
  image: string;
  file: BlockNode;
  /** Sectors per cluster. */
  tracks: number;
  /** BAT entries count in these units of sectors. */
  offMultiplier: number;
  bat: Uint32Array;
  /** The header's inuse field says the image was not closed cleanly. */
  headerUnclean: boolean;
  /** QEMU's data_end, in sectors: where close cuts the file of a read/write open. */
  dataEnd: number;
}

function st(bs: BlockNode): ParallelsState {
  return bs.state<ParallelsState>();
}

/** Host sector of guest `sector`, or -1 when its cluster is unallocated (QEMU's seek_to_sector). */
function seekToSector(s: ParallelsState, sector: number): number {
  const index = Math.floor(sector / s.tracks);
  if (index >= s.bat.length || s.bat[index] === 0) return -1;
  return s.bat[index]! * s.offMultiplier + (sector % s.tracks);
}

export const parallelsDriver: BlockDriver = {
  name: 'parallels',
  kind: 'format',
  supportsBacking: true,

  probe: parallelsProbe,

  async open(bs, options) {
    const file = bs.file!.node;
    const image = bs.filename;
    const h = parseParallelsHeader(await readStructure(file, image, 'parallels header', 0, PARALLELS_HEADER_BYTES));
    const bad = (why: string, code: 'EINVAL' | 'EFBIG' | 'EACCES' = 'EINVAL') => new BlockError(code, `${image}: ${why}`);
    if (h.version !== HEADER_VERSION || (h.magic !== HEADER_MAGIC && h.magic !== HEADER_MAGIC2)) {
      throw bad('Image not in Parallels format');
    }
    let sectors = h.nbSectors;
    let offMultiplier = 1;
    if (h.magic === HEADER_MAGIC) sectors = sectors % 0x100000000;
    else offMultiplier = h.tracks;
    if (h.tracks === 0) throw bad('Invalid image: Zero sectors per track');
    if (h.tracks > Math.floor(0x7fffffff / 513)) throw bad(`Invalid image: Too big cluster (${h.tracks} sectors per track)`, 'EFBIG');
    if (h.batEntries > Math.floor(0x7fffffff / 4)) throw bad(`Catalog too large (${h.batEntries} BAT entries)`, 'EFBIG');
    if (sectors * SECTOR > Number.MAX_SAFE_INTEGER) throw bad(`Invalid image: nb_sectors ${sectors} is too large`, 'EFBIG');
    // qemu-img check -r opens it read/write to repair it (QEMU's BDRV_O_CHECK).
    if (h.inuse === HEADER_INUSE_MAGIC && !bs.readOnly && options['check'] !== true) {
      throw bad('parallels: Image was not closed correctly; cannot be opened read/write', 'EACCES');
    }
    const bat = parseParallelsBat(await readStructure(file, image, 'parallels BAT', PARALLELS_HEADER_BYTES, h.batEntries * 4), h.batEntries);
    let dataEnd = h.dataOff || Math.ceil((PARALLELS_HEADER_BYTES + h.batEntries * 4) / SECTOR);
    for (let i = 0; i < bat.length; i++) {
      const sector = bat[i]! * offMultiplier;
      if (sector >= dataEnd) dataEnd = sector + h.tracks;
    }
    // A BAT entry past the end of the file: QEMU 7.2 would grow the file to it at close (sparse, but up to
    // petabytes, and real memory on in-memory storage). Refused for writing until check -r all clears it,
    // as later QEMU releases do; reads of such a cluster fail on their own.
    const fileSectors = Math.floor((await bdrvGetLength(file)) / SECTOR);
    if (!bs.readOnly && options['check'] !== true && dataEnd > fileSectors) {
      const i = bat.findIndex((b) => b * offMultiplier + h.tracks === dataEnd);
      throw bad(
        `parallels BAT entry ${i} at ${hex(PARALLELS_HEADER_BYTES + i * 4)} points past the end of the file (sector ${dataEnd - h.tracks} of ${fileSectors}); cannot be opened read/write, run 'qemu-img check -r all'`,
        'EACCES',
      );
    }
    bs.opaque = { image, file, tracks: h.tracks, offMultiplier, bat, headerUnclean: h.inuse === HEADER_INUSE_MAGIC, dataEnd } satisfies ParallelsState;
    bs.totalBytes = sectors * SECTOR;
    bs.limits = { ...bs.limits, requestAlignment: SECTOR };
    if (!bs.readOnly) {
      await bdrvPwrite(file, PARALLELS_INUSE_OFFSET, 4, serializeParallelsInuse(HEADER_INUSE_MAGIC));
      await bdrvFlush(file);
    }
  },

  async close(bs) {
    if (bs.readOnly) return;
    const s = st(bs);
    await bdrvPwrite(s.file, PARALLELS_INUSE_OFFSET, 4, serializeParallelsInuse(0));
    await bdrvTruncate(s.file, s.dataEnd * SECTOR, true);
  },

  async preadv(bs, offset, bytes, buf) {
    const s = st(bs);
    let done = 0;
    while (done < bytes) {
      const sector = (offset + done) / SECTOR;
      const n = Math.min(bytes - done, (s.tracks - (sector % s.tracks)) * SECTOR);
      const out = buf.subarray(done, done + n);
      const host = seekToSector(s, sector);
      if (host < 0) {
        await readBacking(bs, offset + done, n, out);
      } else {
        checkDataInFile(s.file, s.image, `parallels cluster (BAT entry ${Math.floor(sector / s.tracks)})`, offset + done, host * SECTOR, n);
        await bdrvPread(s.file, host * SECTOR, n, out);
      }
      done += n;
    }
  },

  async blockStatus(bs, _wantZero, offset, bytes) {
    const s = st(bs);
    let sector = offset / SECTOR;
    let left = Math.ceil(bytes / SECTOR);
    const start = seekToSector(s, sector);
    let prevEnd = start;
    let count = 0;
    while (left > 0) {
      const host = seekToSector(s, sector);
      if (count > 0 && host !== prevEnd) break;
      const n = Math.min(left, s.tracks - (sector % s.tracks));
      left -= n;
      sector += n;
      count += n;
      if (host >= 0) prevEnd += n;
    }
    const pnum = Math.min(bytes, count * SECTOR);
    if (start < 0) return { status: 0, pnum };
    return { status: BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID, pnum, map: start * SECTOR, file: s.file };
  },

  async check(bs, fix) {
    const s = st(bs);
    const r = parallelsCheck(s, fix);
    if (r.batFixed) await bdrvPwrite(s.file, PARALLELS_HEADER_BYTES, s.bat.length * 4, serializeParallelsBat(s.bat));
    if (fix.leaks && r.leaks) {
      await bdrvTruncate(s.file, r.imageEndOffset!, true);
      r.leaksFixed += r.leaks;
    }
    if (!bs.readOnly) await bdrvFlush(s.file);
    return r;
  },
};

/**
 * QEMU 7.2's parallels_co_check: an unclean header and clusters starting
 * past the end of the file are corruptions (without -r all still counted as
 * allocated, so they move the image end; with it the BAT entry is cleared),
 * space past the last cluster is leaked (counted in clusters, reported in
 * bytes — for an image with no cluster the end is taken as one cluster, as
 * QEMU 7.2 does). The caller writes the BAT and cuts the leak.
 */
function parallelsCheck(s: ParallelsState, fix: { leaks: boolean; errors: boolean }): CheckResult & { batFixed: boolean } {
  const tag = (repair: boolean) => (repair ? 'Repairing' : 'ERROR');
  const r: CheckResult & { batFixed: boolean } = {
    corruptions: 0,
    leaks: 0,
    checkErrors: 0,
    corruptionsFixed: 0,
    leaksFixed: 0,
    totalClusters: s.bat.length,
    allocatedClusters: 0,
    fragmentedClusters: 0,
    messages: [],
    batFixed: false,
  };
  // QEMU's bdrv_getlength: the file's length rounded up to a sector.
  const size = Math.ceil(s.file.totalBytes / SECTOR) * SECTOR;
  const clusterSize = s.tracks * SECTOR;
  if (s.headerUnclean) {
    r.messages.push(`${tag(fix.errors)} image was not closed correctly`);
    r.corruptions++;
    if (fix.errors) {
      // Close writes the clean header.
      r.corruptionsFixed++;
      s.headerUnclean = false;
    }
  }
  let high = 0;
  let prev = 0;
  for (let i = 0; i < s.bat.length; i++) {
    const off = s.bat[i]! * s.offMultiplier * SECTOR;
    if (off === 0) {
      prev = 0;
      continue;
    }
    // Without repair QEMU 7.2 goes on counting the cluster (allocated, image end) after reporting it.
    if (off > size) {
      r.messages.push(`${tag(fix.errors)} cluster ${i} is outside image`);
      r.corruptions++;
      if (fix.errors) {
        prev = 0;
        s.bat[i] = 0;
        r.corruptionsFixed++;
        r.batFixed = true;
        continue;
      }
    }
    r.allocatedClusters!++;
    if (off > high) high = off;
    if (prev !== 0 && prev + clusterSize !== off) r.fragmentedClusters!++;
    prev = off;
  }
  r.imageEndOffset = high + clusterSize;
  if (size > r.imageEndOffset) {
    r.messages.push(`${tag(fix.leaks)} space leaked at the end of the image ${size - r.imageEndOffset}`);
    r.leaks += Math.ceil((size - r.imageEndOffset) / clusterSize);
  }
  return r;
}

