/**
 * ISO 9660 (ECMA-119) read-only, with Joliet (UCS-2 names in a supplementary
 * volume descriptor) and Rock Ridge (SUSP "NM" names, "PX" modes, "SL"
 * symlinks, "TF" times, "CE" continuation areas, "CL"/"RE" relocated
 * directories). Names: Rock Ridge when the primary tree has it, else Joliet,
 * else the primary's names without their ";1" version.
 *
 *   volume descriptor (2048 bytes at sector 16, 17, …)
 *   0 type (1 primary, 2 supplementary, 255 terminator)  1 "CD001"  6 version
 *   88 escape sequences (Joliet: "%/@", "%/C", "%/E")   128 logical block size (both-endian u16)
 *   156 root directory record (34 bytes)
 *   directory record
 *   0 length  1 ext attr length  2 extent (both-endian u32)  10 data length (both-endian u32)
 *   18 recording time (7 bytes)  25 flags (0x02 dir, 0x80 multi-extent)  32 name length  33 name
 *   then the system use area (after padding to an even offset): SUSP entries
 */
import { BlockError } from '../../block/errors.js';
import type { Volume } from '../volume.js';
import { ascii, u16, u32 } from '../volume.js';
import type { FileSystem, FileSystemDriver, FsNode } from './types.js';

const SECTOR = 2048;
const MAX_DESCRIPTORS = 64;
/** Largest directory extent read. */
const MAX_DIR_BYTES = 16 * 1024 * 1024;
/** SUSP continuation areas followed per record. */
const MAX_CE = 16;

type NameMode = 'rockridge' | 'joliet' | 'plain';

interface IsoRef {
  extent: number;
  size: number;
  /** Further extents of a multi-extent file: [extent, size] pairs. */
  more?: Array<[number, number]>;
}

export interface DirRecord {
  length: number;
  extent: number;
  dataLength: number;
  mtime: number | undefined;
  flags: number;
  name: Uint8Array;
  systemUse: Uint8Array;
}

/** Parses one directory record at `o` of `b`; null for a zero length byte (padding to the sector end). */
export function parseDirRecord(b: Uint8Array, o: number): DirRecord | null {
  const length = b[o]!;
  if (length === 0) return null;
  const nameLen = b[o + 32]!;
  if (length < 33 + nameLen || o + length > b.length) throw new Error(`directory record of ${length} bytes with a ${nameLen}-byte name`);
  const t = o + 18;
  const mtime = b[t] ? Date.UTC(1900 + b[t]!, b[t + 1]! - 1, b[t + 2]!, b[t + 3]!, b[t + 4]!, b[t + 5]!) / 1000 - ((b[t + 6]! << 24) >> 24) * 900 : undefined;
  const su = 33 + nameLen + ((33 + nameLen) % 2);
  return {
    length,
    extent: u32(b, o + 2),
    dataLength: u32(b, o + 10),
    mtime,
    flags: b[o + 25]!,
    name: b.subarray(o + 33, o + 33 + nameLen),
    systemUse: b.subarray(o + Math.min(su, length), o + length),
  };
}

interface Susp {
  nm?: string;
  mode?: number;
  symlink?: string;
  mtime?: number;
  childLink?: number;
  relocated?: boolean;
  sp?: boolean;
}

class IsoFs implements FileSystem {
  readonly type = 'iso9660';

  constructor(
    readonly volume: Volume,
    private readonly rootRec: DirRecord,
    private readonly mode: NameMode,
    private readonly jolietSkip: number,
    readonly label: string | undefined,
  ) {}

  root(): FsNode {
    return { name: '/', type: 'dir', size: this.rootRec.dataLength, ref: { extent: this.rootRec.extent, size: this.rootRec.dataLength } satisfies IsoRef };
  }

  private async dirData(ref: IsoRef, what: string): Promise<Uint8Array> {
    if (ref.size > MAX_DIR_BYTES) this.volume.fail('ECORRUPT', what, ref.extent * SECTOR, `${ref.size} bytes is more than ${MAX_DIR_BYTES}`);
    return this.volume.read(ref.extent * SECTOR, ref.size, what);
  }

  /** Reads the SUSP entries of a system use area, following CE continuation areas. */
  private async susp(area: Uint8Array): Promise<Susp> {
    const out: Susp = {};
    let nm = '';
    let haveNm = false;
    let sl = '';
    let haveSl = false;
    let slContinues = false;
    let ces = 0;
    let buf: Uint8Array | null = area.subarray(this.mode === 'rockridge' ? this.jolietSkip : 0);
    while (buf) {
      let next: Uint8Array | null = null;
      for (let o = 0; o + 4 <= buf.length; ) {
        const sig = ascii(buf, o, 2);
        const len = buf[o + 2]!;
        if (len < 4 || o + len > buf.length) break;
        const e = buf.subarray(o, o + len);
        switch (sig) {
          case 'SP':
            out.sp = true;
            break;
          case 'NM':
            if (!(e[4]! & 0x6)) {
              nm += new TextDecoder().decode(e.subarray(5));
              haveNm = true;
            }
            break;
          case 'PX':
            out.mode = u32(e, 4);
            break;
          case 'SL': {
            haveSl = true;
            for (let c = 5; c + 2 <= e.length; ) {
              const flags = e[c]!;
              const clen = e[c + 1]!;
              const text = new TextDecoder().decode(e.subarray(c + 2, c + 2 + clen));
              const part = flags & 0x2 ? '.' : flags & 0x4 ? '..' : flags & 0x8 ? '' : text;
              if (sl !== '' && !slContinues && !sl.endsWith('/')) sl += '/';
              if (flags & 0x8) sl = '/';
              else sl += part;
              slContinues = (flags & 0x1) !== 0;
              c += 2 + clen;
            }
            break;
          }
          case 'TF': {
            const flags = e[4]!;
            const long = (flags & 0x80) !== 0;
            const size = long ? 17 : 7;
            let p = 5;
            if (flags & 0x1) p += size; // creation
            if (flags & 0x2 && !long && p + 7 <= e.length) {
              out.mtime = Date.UTC(1900 + e[p]!, e[p + 1]! - 1, e[p + 2]!, e[p + 3]!, e[p + 4]!, e[p + 5]!) / 1000 - ((e[p + 6]! << 24) >> 24) * 900;
            }
            break;
          }
          case 'CL':
            out.childLink = u32(e, 4);
            break;
          case 'RE':
            out.relocated = true;
            break;
          case 'CE': {
            if (++ces > MAX_CE) this.volume.fail('ECORRUPT', 'Rock Ridge continuation area', u32(e, 4) * SECTOR, `more than ${MAX_CE} continuation areas for one record`);
            const block = u32(e, 4);
            const off = u32(e, 12);
            const clen = u32(e, 20);
            if (clen > SECTOR || off + clen > SECTOR) this.volume.fail('ECORRUPT', 'Rock Ridge continuation area', block * SECTOR, `${clen} bytes at ${off} do not fit one sector`);
            next = await this.volume.read(block * SECTOR + off, clen, 'Rock Ridge continuation area');
            break;
          }
          case 'ST':
            o = buf.length;
            continue;
        }
        o += len;
      }
      buf = next;
    }
    if (haveNm) out.nm = nm;
    if (haveSl) out.symlink = sl;
    return out;
  }

  private plainName(n: Uint8Array): string {
    let s = this.mode === 'joliet' ? '' : ascii(n, 0, n.length);
    if (this.mode === 'joliet') for (let i = 0; i + 1 < n.length; i += 2) s += String.fromCharCode((n[i]! << 8) | n[i + 1]!);
    s = s.replace(/;\d+$/, '');
    if (this.mode !== 'joliet') s = s.replace(/\.$/, '');
    return s;
  }

  async readdir(dir: FsNode): Promise<FsNode[]> {
    const ref = dir.ref as IsoRef;
    const what = `ISO 9660 directory ${dir.name}`;
    const data = await this.dirData(ref, what);
    const out: FsNode[] = [];
    let multi: FsNode | null = null;
    for (let sec = 0; sec < data.length; sec += SECTOR) {
      for (let o = sec; o < Math.min(sec + SECTOR, data.length); ) {
        let r: DirRecord | null;
        try {
          r = parseDirRecord(data.subarray(0, Math.min(sec + SECTOR, data.length)), o);
        } catch (e) {
          this.volume.fail('ECORRUPT', what, ref.extent * SECTOR + o, (e as Error).message);
        }
        if (!r) break;
        o += r.length;
        if (r.name.length === 1 && (r.name[0] === 0 || r.name[0] === 1)) continue;
        const su = this.mode === 'rockridge' ? await this.susp(r.systemUse) : {};
        if (su.relocated) continue;
        let isDir = (r.flags & 0x02) !== 0;
        let extent = r.extent;
        let size = r.dataLength;
        if (su.childLink !== undefined) {
          // A relocated deep directory: its "." record holds the real extent and size.
          const head = await this.volume.read(su.childLink * SECTOR, SECTOR, 'Rock Ridge relocated directory');
          const dot = parseDirRecord(head, 0);
          if (!dot) this.volume.fail('ECORRUPT', 'Rock Ridge relocated directory', su.childLink * SECTOR, 'no "." record');
          isDir = true;
          extent = dot.extent;
          size = dot.dataLength;
        }
        const name = su.nm ?? this.plainName(r.name);
        if (multi) {
          // A further extent of a multi-extent file (the previous record had flag 0x80).
          (multi.ref as IsoRef).more!.push([extent, size]);
          multi.size += size;
          if (!(r.flags & 0x80)) multi = null;
          continue;
        }
        const mode = su.mode;
        const type = su.symlink !== undefined ? 'symlink' : isDir ? 'dir' : mode !== undefined && (mode & 0xf000) !== 0x8000 && (mode & 0xf000) !== 0 ? 'other' : 'file';
        const fileRef: IsoRef = { extent, size };
        const node: FsNode = { name, type, size, mtime: su.mtime ?? r.mtime, mode: mode !== undefined ? mode & 0o7777 : undefined, target: su.symlink, ref: fileRef };
        if (r.flags & 0x80) {
          fileRef.more = [];
          multi = node;
        }
        out.push(node);
      }
    }
    return out;
  }

  async read(file: FsNode, offset: number, bytes: number): Promise<Uint8Array> {
    const ref = file.ref as IsoRef;
    const parts: Array<[number, number]> = [[ref.extent, ref.size], ...(ref.more ?? [])];
    const out = new Uint8Array(bytes);
    let base = 0;
    for (const [extent, size] of parts) {
      const from = Math.max(offset, base);
      const to = Math.min(offset + bytes, base + size);
      if (to > from) out.set(await this.volume.read(extent * SECTOR + (from - base), to - from, `ISO 9660 file ${file.name}`), from - offset);
      base += size;
    }
    return out;
  }

  async readlink(link: FsNode): Promise<string> {
    if (link.target === undefined) throw new BlockError('EINVAL', `${this.volume.name}: ${link.name} is not a symlink`);
    return link.target;
  }
}

async function descriptors(vol: Volume): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for (let i = 0; i < MAX_DESCRIPTORS; i++) {
    const off = (16 + i) * SECTOR;
    if (off + SECTOR > vol.size) break;
    const d = await vol.read(off, SECTOR, 'ISO 9660 volume descriptor');
    if (ascii(d, 1, 5) !== 'CD001') break;
    out.push(d);
    if (d[0] === 255) break;
  }
  return out;
}

export const isoDriver: FileSystemDriver = {
  name: 'iso9660',
  async probe(vol) {
    if (vol.size < 17 * SECTOR) return null;
    const d = await vol.read(16 * SECTOR, SECTOR, 'ISO 9660 volume descriptor');
    return ascii(d, 1, 5) === 'CD001' ? 'iso9660' : null;
  },
  async open(vol) {
    const ds = await descriptors(vol);
    const pvd = ds.find((d) => d[0] === 1);
    if (!pvd) throw new BlockError('ECORRUPT', `${vol.name}: ISO 9660 volume descriptor at 0x8000: no primary volume descriptor`);
    if (u16(pvd, 128) !== SECTOR) vol.fail('ENOTSUP', 'ISO 9660 primary volume descriptor', 16 * SECTOR, `logical block size ${u16(pvd, 128)} (only 2048 is supported)`);
    const rootRec = parseDirRecord(pvd, 156)!;
    const label = ascii(pvd, 40, 32).trim() || undefined;
    // Rock Ridge: the root's "." record carries SUSP "SP" (and the RR entries) in its system use area.
    const rootHead = await vol.read(rootRec.extent * SECTOR, SECTOR, 'ISO 9660 root directory');
    const dot = parseDirRecord(rootHead, 0);
    if (dot && ascii(dot.systemUse, 0, 2) === 'SP' && dot.systemUse[4] === 0xbe && dot.systemUse[5] === 0xef) {
      return new IsoFs(vol, rootRec, 'rockridge', 0, label);
    }
    const joliet = ds.find((d) => d[0] === 2 && d[88] === 0x25 && d[89] === 0x2f && [0x40, 0x43, 0x45].includes(d[90]!));
    if (joliet) return new IsoFs(vol, parseDirRecord(joliet, 156)!, 'joliet', 0, label);
    return new IsoFs(vol, rootRec, 'plain', 0, label);
  },
};
