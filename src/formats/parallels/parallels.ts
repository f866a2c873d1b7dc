/**
 * The `parallels` format driver (Parallels / Virtuozzo expandable images):
 * read, write, create, and `check -r` repairs.
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
 *
 * Writes (QEMU's allocate_clusters): a run of unallocated clusters gets as
 * many new clusters at the data end; when they do not fit in the file, the
 * file first grows by them plus `prealloc-size` (default 128 MiB; memory
 * storage holds it for real, so small images in a browser may want less),
 * through the file's truncate (`prealloc-mode` is checked and kept; both
 * modes read as zeros), which close cuts again. With a backing file the new
 * clusters are first filled from it. Beyond QEMU, which writes the BAT at
 * flush time, the new BAT entries are written right after the data, and a
 * new cluster lying in file space not known to be zero (space leaked past
 * the data end) is zeroed first instead of showing stale bytes.
 */
import { BlockError, hex } from '../../block/errors.js';
import { type BlockDriver, type CheckReport, type CheckResult } from '../../block/driver.js';
import type { BlockNode } from '../../block/node.js';
import { bdrvFlush, bdrvGetLength, bdrvPread, bdrvPwrite, bdrvPwriteZeroes, bdrvTruncate, readBacking } from '../../block/io.js';
import { parseOptionSize } from '../../block/options.js';
import { bdrvDebugEvent } from '../../block/debug-event.js';
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
import { PARALLELS_CREATE_OPTS, parallelsCreateImage } from './create.js';

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
  /** QEMU's data_end, in sectors: where close cuts the file of a read/write open, and where new clusters go. */
  dataEnd: number;
  /** Sectors from here to the end of the file read as zeros (space this open preallocated, or none). */
  zeroFrom: number;
  /** Preallocation on growth, in sectors (at least a cluster), and how. */
  preallocSize: number;
  preallocMode: 'falloc' | 'truncate';
  /** Serializes allocating writes. */
  lock: Promise<void>;
}

const PREALLOC_MODES = ['falloc', 'truncate'] as const;
const DEFAULT_PREALLOC_SIZE = 128 * 1024 * 1024;

/** The runtime option `name` (a size) as given to open: a number, or text as QemuOpts reads it. */
function sizeOption(image: string, options: Record<string, unknown>, name: string, def: number): number {
  const v = options[name];
  if (v === undefined) return def;
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return v;
  try {
    return Number(parseOptionSize(name, String(v)));
  } catch (e) {
    throw new BlockError('EINVAL', `${image}: ${e instanceof Error ? e.message : String(e)}`);
  }
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
  createOptions: PARALLELS_CREATE_OPTS,
  create: parallelsCreateImage,
  // QAPI BlockdevOptionsParallels has no members of its own; the runtime options are QemuOpts ones.
  blockdevOptions: { file: 'BlockdevRef', '*backing': 'BlockdevRefOrNull', '*prealloc-mode': 'str', '*prealloc-size': 'any' },

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
    const preallocSize = Math.max(h.tracks, Math.floor(sizeOption(image, options, 'prealloc-size', DEFAULT_PREALLOC_SIZE) / SECTOR));
    const mode = options['prealloc-mode'] ?? 'falloc';
    if (!PREALLOC_MODES.includes(mode as (typeof PREALLOC_MODES)[number])) throw bad(`Parameter 'prealloc-mode' does not accept value '${String(mode)}'`);
    bs.opaque = {
      image,
      file,
      tracks: h.tracks,
      offMultiplier,
      bat,
      headerUnclean: h.inuse === HEADER_INUSE_MAGIC,
      dataEnd,
      zeroFrom: fileSectors,
      preallocSize,
      preallocMode: mode as (typeof PREALLOC_MODES)[number],
      lock: Promise.resolve(),
    } satisfies ParallelsState;
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

  async pwritev(bs, offset, bytes, buf) {
    const s = st(bs);
    const next = s.lock.then(() => parallelsWrite(bs, s, offset, bytes, buf));
    s.lock = next.catch(() => {});
    return next;
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

  async check(bs, fix, report) {
    const s = st(bs);
    const r = parallelsCheck(s, fix, report);
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
 * Host sector for guest `sector` and the sectors (at most `left`) that follow
 * it there, allocating a run of unallocated clusters as the module comment says.
 */
async function allocateClusters(bs: BlockNode, s: ParallelsState, sector: number, left: number): Promise<{ host: number; count: number }> {
  const index = Math.floor(sector / s.tracks);
  let count = Math.min(left, s.tracks - (sector % s.tracks));
  const host = seekToSector(s, sector);
  if (host >= 0) {
    // Allocated: the whole run of clusters that are contiguous in the file.
    while (count < left) {
      const next = seekToSector(s, sector + count);
      if (next !== host + count) break;
      count += Math.min(left - count, s.tracks);
    }
    return { host, count };
  }
  while (count < left && seekToSector(s, sector + count) < 0) count += Math.min(left - count, s.tracks);
  const toAllocate = Math.ceil((sector + count) / s.tracks) - index;
  const space = toAllocate * s.tracks;
  const start = s.dataEnd;
  if (start % s.offMultiplier !== 0 || (start + space) / s.offMultiplier > 0xffffffff) {
    throw new BlockError('ECORRUPT', `${s.image}: parallels data end (sector ${start}) cannot be stored in a BAT entry`);
  }
  const fileSectors = Math.floor((await bdrvGetLength(s.file)) / SECTOR);
  if (start + space > fileSectors) {
    const grow = space + s.preallocSize;
    // Space past the old end reads as zeros either way; what lay between the data end and it is zeroed below when used.
    // Both modes extend the file sparsely: blocktab's file protocol has no fallocate (its falloc writes every zero).
    await bdrvTruncate(s.file, (start + grow) * SECTOR);
    s.zeroFrom = Math.min(s.zeroFrom, fileSectors);
  }
  if (bs.backing) {
    const cow = new Uint8Array(space * SECTOR);
    const from = index * s.tracks * SECTOR;
    await readBacking(bs, from, Math.min(cow.length, bs.totalBytes - from), cow.subarray(0, Math.min(cow.length, bs.totalBytes - from)));
    await bdrvPwrite(s.file, start * SECTOR, cow.length, cow);
  } else if (start < s.zeroFrom) {
    await bdrvPwriteZeroes(s.file, start * SECTOR, Math.min(space, s.zeroFrom - start) * SECTOR);
  }
  for (let i = 0; i < toAllocate; i++) {
    s.bat[index + i] = s.dataEnd / s.offMultiplier;
    s.dataEnd += s.tracks;
  }
  await bdrvPwrite(s.file, PARALLELS_HEADER_BYTES + index * 4, toAllocate * 4, serializeParallelsBat(s.bat, index, toAllocate));
  return { host: start + (sector % s.tracks), count };
}

async function parallelsWrite(bs: BlockNode, s: ParallelsState, offset: number, bytes: number, buf: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes) {
    const sector = (offset + done) / SECTOR;
    const { host, count } = await allocateClusters(bs, s, sector, (bytes - done) / SECTOR);
    const n = count * SECTOR;
    if (host * SECTOR + n > s.file.totalBytes && host * SECTOR >= s.file.totalBytes) {
      throw new BlockError('ECORRUPT', `${s.image}: parallels BAT entry ${Math.floor(sector / s.tracks)} points past the end of the file (sector ${host})`);
    }
    await bdrvDebugEvent(s.file, 'write_aio');
    await bdrvPwrite(s.file, host * SECTOR, n, buf.subarray(done, done + n));
    done += n;
  }
}

/**
 * QEMU 7.2's parallels_co_check: an unclean header and clusters starting
 * past the end of the file are corruptions (without -r all still counted as
 * allocated, so they move the image end; with it the BAT entry is cleared),
 * space past the last cluster is leaked (counted in clusters, reported in
 * bytes — for an image with no cluster the end is taken as one cluster, as
 * QEMU 7.2 does). The caller writes the BAT and cuts the leak.
 */
function parallelsCheck(s: ParallelsState, fix: { leaks: boolean; errors: boolean }, report: CheckReport): CheckResult & { batFixed: boolean } {
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
    batFixed: false,
  };
  // QEMU's bdrv_getlength: the file's length rounded up to a sector.
  const size = Math.ceil(s.file.totalBytes / SECTOR) * SECTOR;
  const clusterSize = s.tracks * SECTOR;
  if (s.headerUnclean) {
    report(`${tag(fix.errors)} image was not closed correctly`);
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
      report(`${tag(fix.errors)} cluster ${i} is outside image`);
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
    report(`${tag(fix.leaks)} space leaked at the end of the image ${size - r.imageEndOffset}`);
    r.leaks += Math.ceil((size - r.imageEndOffset) / clusterSize);
  }
  return r;
}

