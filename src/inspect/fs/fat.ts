/**
 * FAT12/16/32, read-only, with VFAT long names (Microsoft's FAT32 File System
 * Specification 1.03). The FAT type comes from the cluster count, as the spec
 * says, never from the label string. FAT sectors are read on demand through a
 * small bounded cache; a cluster chain longer than the volume's cluster count
 * is a loop and an error naming where it was found.
 *
 *   boot sector / BPB                    directory entry (32 bytes)
 *   11 BytsPerSec u16   13 SecPerClus    0 Name (11)     11 Attr
 *   14 RsvdSecCnt u16   16 NumFATs       12 NTRes (0x08 lower base, 0x10 lower ext)
 *   17 RootEntCnt u16   19 TotSec16      20 FstClusHI    22 WrtTime   24 WrtDate
 *   22 FATSz16  32 TotSec32              26 FstClusLO    28 FileSize
 *   FAT32: 36 FATSz32  44 RootClus       LFN entry: 0 Ord, 1 Name1 (5×UTF-16), 11 Attr 0x0F,
 *   label: 43 (FAT12/16) / 71 (FAT32)    13 Chksum, 14 Name2 (6×), 28 Name3 (2×)
 */
import { BlockError } from '../../block/errors.js';
import type { Volume } from '../volume.js';
import { ascii, u16, u32 } from '../volume.js';
import type { FileSystem, FileSystemDriver, FsNode } from './types.js';

export interface Bpb {
  bytsPerSec: number;
  secPerClus: number;
  rsvdSecCnt: number;
  numFats: number;
  rootEntCnt: number;
  totSec: number;
  fatSz: number;
  rootClus: number;
  volLab: string;
}

/** Parses and checks the BPB; null when the sector is not a FAT boot sector. */
export function parseBpb(b: Uint8Array): Bpb | null {
  if (!(b[0] === 0xeb || b[0] === 0xe9 || b[0] === 0xe8)) return null;
  const bytsPerSec = u16(b, 11);
  const secPerClus = b[13]!;
  const rsvdSecCnt = u16(b, 14);
  const numFats = b[16]!;
  const rootEntCnt = u16(b, 17);
  const totSec = u16(b, 19) || u32(b, 32);
  const fatSz16 = u16(b, 22);
  const fatSz = fatSz16 || u32(b, 36);
  if (![512, 1024, 2048, 4096].includes(bytsPerSec)) return null;
  if (secPerClus === 0 || (secPerClus & (secPerClus - 1)) !== 0) return null;
  if (rsvdSecCnt === 0 || numFats === 0 || numFats > 4 || fatSz === 0 || totSec === 0) return null;
  if (ascii(b, 0x52, 5) === 'FAT32' || fatSz16 === 0) {
    return { bytsPerSec, secPerClus, rsvdSecCnt, numFats, rootEntCnt, totSec, fatSz, rootClus: u32(b, 44), volLab: ascii(b, 71, 11).trimEnd() };
  }
  return { bytsPerSec, secPerClus, rsvdSecCnt, numFats, rootEntCnt, totSec, fatSz, rootClus: 0, volLab: ascii(b, 43, 11).trimEnd() };
}

const ATTR_DIRECTORY = 0x10;
const ATTR_VOLUME_ID = 0x08;
const ATTR_LONG_NAME = 0x0f;
/** Largest directory we read (a FAT directory holds at most 65536 entries of 32 bytes). */
const MAX_DIR_BYTES = 65536 * 32;

interface FatRef {
  /** First cluster (0: FAT12/16 fixed root directory). */
  cluster: number;
}

/** FAT date/time (local time as written; read as UTC) to Unix seconds. */
function fatTime(date: number, time: number): number | undefined {
  if (date === 0) return undefined;
  const y = 1980 + (date >> 9);
  const mo = ((date >> 5) & 15) - 1;
  const d = date & 31;
  return Date.UTC(y, mo, d, time >> 11, (time >> 5) & 63, (time & 31) * 2) / 1000;
}

function lfnChecksum(b: Uint8Array, o: number): number {
  let sum = 0;
  for (let i = 0; i < 11; i++) sum = (((sum & 1) << 7) | (sum >> 1)) + b[o + i]! & 0xff;
  return sum;
}

class FatFs implements FileSystem {
  readonly type = 'vfat';
  readonly label: string | undefined;
  readonly fatBits: 12 | 16 | 32;
  private readonly clusterSize: number;
  private readonly fatOffset: number;
  private readonly rootDirOffset: number;
  private readonly rootDirBytes: number;
  private readonly dataOffset: number;
  private readonly countOfClusters: number;
  private readonly fatCache = new Map<number, Uint8Array>();

  constructor(
    readonly volume: Volume,
    private readonly bpb: Bpb,
  ) {
    const bs = bpb.bytsPerSec;
    const rootDirSectors = Math.ceil((bpb.rootEntCnt * 32) / bs);
    const dataSec = bpb.totSec - (bpb.rsvdSecCnt + bpb.numFats * bpb.fatSz + rootDirSectors);
    this.countOfClusters = Math.floor(dataSec / bpb.secPerClus);
    this.fatBits = this.countOfClusters < 4085 ? 12 : this.countOfClusters < 65525 ? 16 : 32;
    this.clusterSize = bs * bpb.secPerClus;
    this.fatOffset = bpb.rsvdSecCnt * bs;
    this.rootDirOffset = this.fatOffset + bpb.numFats * bpb.fatSz * bs;
    this.rootDirBytes = rootDirSectors * bs;
    this.dataOffset = this.rootDirOffset + this.rootDirBytes;
    if (bpb.totSec * bs > volume.size) {
      volume.fail('ECORRUPT', 'FAT boot sector', 0, `TotSec (${bpb.totSec} sectors) is larger than the volume (${volume.size} bytes)`);
    }
    if (dataSec <= 0) volume.fail('ECORRUPT', 'FAT boot sector', 0, 'no data area after the FATs and root directory');
    if (this.fatBits === 32 && (bpb.rootClus < 2 || bpb.rootClus >= this.countOfClusters + 2)) {
      volume.fail('ECORRUPT', 'FAT32 boot sector', 0, `RootClus ${bpb.rootClus} is not a data cluster`);
    }
    this.label = bpb.volLab && bpb.volLab !== 'NO NAME' ? bpb.volLab : undefined;
  }

  root(): FsNode {
    return { name: '/', type: 'dir', size: 0, ref: { cluster: this.fatBits === 32 ? this.bpb.rootClus : 0 } satisfies FatRef };
  }

  private clusterOffset(c: number): number {
    return this.dataOffset + (c - 2) * this.clusterSize;
  }

  /** The FAT entry of cluster `c`. */
  private async next(c: number): Promise<number> {
    const byteOff = this.fatBits === 12 ? c + (c >> 1) : c * (this.fatBits / 8);
    const secSize = this.bpb.bytsPerSec;
    const sec = Math.floor(byteOff / secSize);
    const get = async (s: number): Promise<Uint8Array> => {
      let b = this.fatCache.get(s);
      if (!b) {
        if (s >= this.bpb.fatSz) this.volume.fail('ECORRUPT', 'FAT', this.fatOffset + s * secSize, `cluster ${c} is beyond the FAT`);
        b = await this.volume.read(this.fatOffset + s * secSize, secSize, 'FAT sector');
        if (this.fatCache.size >= 256) this.fatCache.delete(this.fatCache.keys().next().value!);
        this.fatCache.set(s, b);
      }
      return b;
    };
    const b = await get(sec);
    const o = byteOff - sec * secSize;
    if (this.fatBits === 32) return u32(b, o) & 0x0fffffff;
    if (this.fatBits === 16) return u16(b, o);
    const lo = b[o]!;
    const hi = o + 1 < secSize ? b[o + 1]! : (await get(sec + 1))[0]!;
    const v = lo | (hi << 8);
    return c & 1 ? v >> 4 : v & 0xfff;
  }

  private isEnd(v: number): boolean {
    return this.fatBits === 12 ? v >= 0xff8 : this.fatBits === 16 ? v >= 0xfff8 : v >= 0x0ffffff8;
  }

  /** The clusters of a chain from `first`, at most `max` of them; errors on bad links and loops. */
  private async chain(first: number, max: number, what: string): Promise<number[]> {
    const out: number[] = [];
    const seen = new Set<number>();
    let c = first;
    const limit = this.countOfClusters + 2;
    while (out.length < max) {
      if (c < 2 || c >= limit) {
        this.volume.fail('ECORRUPT', `${what} cluster chain`, this.fatOffset, `link to cluster ${c}, outside the data clusters 2..${limit - 1}`);
      }
      if (seen.has(c) || out.length >= this.countOfClusters) {
        this.volume.fail('ECORRUPT', `${what} cluster chain`, this.clusterOffset(first), `cluster ${c} comes round again: longer than the volume's ${this.countOfClusters} clusters (a loop)`);
      }
      seen.add(c);
      out.push(c);
      const n = await this.next(c);
      if (this.isEnd(n)) break;
      c = n;
    }
    return out;
  }

  private async dirBytes(ref: FatRef, what: string): Promise<Uint8Array> {
    if (ref.cluster === 0) return this.volume.read(this.rootDirOffset, this.rootDirBytes, 'FAT root directory');
    const clusters = await this.chain(ref.cluster, Math.ceil(MAX_DIR_BYTES / this.clusterSize) + 1, what);
    if (clusters.length * this.clusterSize > MAX_DIR_BYTES) {
      this.volume.fail('ECORRUPT', what, this.clusterOffset(ref.cluster), `directory is larger than ${MAX_DIR_BYTES} bytes`);
    }
    const out = new Uint8Array(clusters.length * this.clusterSize);
    for (let i = 0; i < clusters.length; i++) {
      out.set(await this.volume.read(this.clusterOffset(clusters[i]!), this.clusterSize, `${what} cluster ${clusters[i]}`), i * this.clusterSize);
    }
    return out;
  }

  async readdir(dir: FsNode): Promise<FsNode[]> {
    const ref = dir.ref as FatRef;
    const b = await this.dirBytes(ref, `directory ${dir.name}`);
    const out: FsNode[] = [];
    let lfn: string[] = [];
    let lfnSum = -1;
    for (let o = 0; o + 32 <= b.length; o += 32) {
      const first = b[o]!;
      if (first === 0) break;
      if (first === 0xe5) {
        lfn = [];
        continue;
      }
      const attr = b[o + 11]!;
      if ((attr & 0x3f) === ATTR_LONG_NAME) {
        const ord = first & 0x3f;
        if (first & 0x40) lfn = [];
        let part = '';
        for (const [s, n] of [[1, 5], [14, 6], [28, 2]] as const) {
          for (let i = 0; i < n; i++) {
            const ch = u16(b, o + s + i * 2);
            if (ch === 0 || ch === 0xffff) break;
            part += String.fromCharCode(ch);
          }
        }
        if (ord >= 1 && ord <= 20) lfn[ord - 1] = part;
        lfnSum = b[o + 13]!;
        continue;
      }
      if (attr & ATTR_VOLUME_ID) {
        lfn = [];
        continue;
      }
      let name: string;
      if (lfn.length && lfnSum === lfnChecksum(b, o)) name = lfn.join('');
      else {
        let base = ascii(b, o, 8).trimEnd();
        let ext = ascii(b, o + 8, 3).trimEnd();
        if (first === 0x05) base = '\u00e5' + base.slice(1);
        const nt = b[o + 12]!;
        if (nt & 0x08) base = base.toLowerCase();
        if (nt & 0x10) ext = ext.toLowerCase();
        name = ext ? `${base}.${ext}` : base;
      }
      lfn = [];
      if (name === '.' || name === '..') continue;
      const cluster = this.fatBits === 32 ? (u16(b, o + 20) << 16) | u16(b, o + 26) : u16(b, o + 26);
      const isDir = (attr & ATTR_DIRECTORY) !== 0;
      out.push({
        name,
        type: isDir ? 'dir' : 'file',
        size: isDir ? 0 : u32(b, o + 28),
        mtime: fatTime(u16(b, o + 24), u16(b, o + 22)),
        ref: { cluster: cluster >>> 0 } satisfies FatRef,
      });
    }
    return out;
  }

  async read(file: FsNode, offset: number, bytes: number): Promise<Uint8Array> {
    const ref = file.ref as FatRef;
    const out = new Uint8Array(bytes);
    if (bytes === 0) return out;
    if (ref.cluster === 0) this.volume.fail('ECORRUPT', `file ${file.name}`, 0, `${file.size} bytes but no first cluster`);
    const firstIdx = Math.floor(offset / this.clusterSize);
    const lastIdx = Math.floor((offset + bytes - 1) / this.clusterSize);
    const clusters = await this.chainCached(file, lastIdx + 1);
    if (clusters.length <= lastIdx) {
      this.volume.fail('ECORRUPT', `file ${file.name} cluster chain`, this.clusterOffset(ref.cluster), `ends after ${clusters.length} clusters, the file needs ${lastIdx + 1}`);
    }
    // Contiguous runs are read in one request.
    let i = firstIdx;
    while (i <= lastIdx) {
      let j = i;
      while (j < lastIdx && clusters[j + 1] === clusters[j]! + 1) j++;
      const runStart = i * this.clusterSize;
      const from = Math.max(offset, runStart);
      const to = Math.min(offset + bytes, (j + 1) * this.clusterSize);
      const data = await this.volume.read(this.clusterOffset(clusters[i]!) + (from - runStart), to - from, `file ${file.name} data`);
      out.set(data, from - offset);
      i = j + 1;
    }
    return out;
  }

  private lastChain: { ref: unknown; clusters: number[] } | null = null;

  private async chainCached(file: FsNode, need: number): Promise<number[]> {
    const last = this.lastChain;
    if (last && last.ref === file.ref && last.clusters.length >= need) return last.clusters;
    const all = Math.max(need, Math.ceil(file.size / this.clusterSize));
    const clusters = await this.chain((file.ref as FatRef).cluster, all, `file ${file.name}`);
    this.lastChain = { ref: file.ref, clusters };
    return clusters;
  }
}

export const fatDriver: FileSystemDriver = {
  name: 'vfat',
  async probe(vol) {
    if (vol.size < 512) return null;
    const b = await vol.read(0, 512, 'FAT boot sector');
    if (b[510] !== 0x55 || b[511] !== 0xaa) return null;
    return parseBpb(b) ? 'vfat' : null;
  },
  async open(vol) {
    const b = await vol.read(0, 512, 'FAT boot sector');
    const bpb = parseBpb(b);
    if (!bpb) throw new BlockError('EINVAL', `${vol.name}: no FAT boot sector at 0x0`);
    return new FatFs(vol, bpb);
  },
};
