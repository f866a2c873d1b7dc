/**
 * ext2/ext3/ext4, read-only (the kernel's Documentation/filesystems/ext4/):
 * superblock, group descriptors (32- or 64-byte, meta_bg), inodes, extent
 * trees and the ext2/3 block map, inline data (in i_block and the
 * "system.data" extended attribute), directories read as linear scans of
 * their blocks (an htree directory's index blocks look like empty entries, so
 * the scan needs no hash code). flex_bg changes nothing for a reader: inode
 * tables are wherever the descriptors say.
 *
 * Every count read from disk is bounded before it sizes a loop or an array:
 * extent depth ≤ 5, entries ≤ what fits the node, rec_len inside the block,
 * inode numbers inside s_inodes_count, indirect-block walks limited to the
 * file's block count.
 */
import { BlockError } from '../../block/errors.js';
import type { Volume } from '../volume.js';
import { u16, u32 } from '../volume.js';
import type { FileSystem, FileSystemDriver, FsEntryType, FsNode } from './types.js';

const EXT_MAGIC = 0xef53;
const INCOMPAT_FILETYPE = 0x2;
const INCOMPAT_META_BG = 0x10;
const INCOMPAT_EXTENTS = 0x40;
const INCOMPAT_64BIT = 0x80;
const INCOMPAT_FLEX_BG = 0x200;
const INCOMPAT_INLINE_DATA = 0x8000;
const COMPAT_HAS_JOURNAL = 0x4;
const RO_COMPAT_SPARSE_SUPER = 0x1;
/** What we can read: anything else in s_feature_incompat refuses the open (as the kernel does). */
const INCOMPAT_KNOWN = 0x2 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x2000 | 0x4000 | 0x8000 | 0x20000;

const EXT4_EXTENTS_FL = 0x80000;
const EXT4_INLINE_DATA_FL = 0x10000000;
const EXT_EXTENT_MAGIC = 0xf30a;
const MAX_EXTENT_DEPTH = 5;
/** Largest directory read in one go. */
const MAX_DIR_BYTES = 64 * 1024 * 1024;
const utf8 = new TextDecoder();
/** Bytes of inode table read at once. */
const INODE_CHUNK = 64 * 1024;

export interface ExtSuperblock {
  sInodesCount: number;
  sBlocksCount: number;
  sFirstDataBlock: number;
  sLogBlockSize: number;
  sBlocksPerGroup: number;
  sInodesPerGroup: number;
  sMagic: number;
  sRevLevel: number;
  sInodeSize: number;
  sFeatureCompat: number;
  sFeatureIncompat: number;
  sFeatureRoCompat: number;
  sVolumeName: string;
  sDescSize: number;
  sFirstMetaBg: number;
}

/** Parses the 1024-byte superblock (found at byte 1024 of the volume). */
export function parseExtSuperblock(b: Uint8Array): ExtSuperblock {
  const incompat = u32(b, 96);
  let name = '';
  for (let i = 0; i < 16 && b[120 + i]; i++) name += String.fromCharCode(b[120 + i]!);
  return {
    sInodesCount: u32(b, 0),
    sBlocksCount: u32(b, 4) + (incompat & INCOMPAT_64BIT ? u32(b, 336) * 0x100000000 : 0),
    sFirstDataBlock: u32(b, 20),
    sLogBlockSize: u32(b, 24),
    sBlocksPerGroup: u32(b, 32),
    sInodesPerGroup: u32(b, 40),
    sMagic: u16(b, 56),
    sRevLevel: u32(b, 76),
    sInodeSize: u32(b, 76) === 0 ? 128 : u16(b, 88),
    sFeatureCompat: u32(b, 92),
    sFeatureIncompat: incompat,
    sFeatureRoCompat: u32(b, 100),
    sVolumeName: name,
    sDescSize: incompat & INCOMPAT_64BIT ? u16(b, 254) : 32,
    sFirstMetaBg: u32(b, 260),
  };
}

export interface ExtInode {
  ino: number;
  iMode: number;
  iSize: number;
  iMtime: number;
  iFlags: number;
  /** i_blocks in 512-byte units (or fs blocks with HUGE_FILE + EXT4_HUGE_FILE_FL). */
  iBlocks: number;
  /** The 60 bytes of i_block. */
  iBlock: Uint8Array;
  /** The whole on-disk inode (for in-inode extended attributes). */
  raw: Uint8Array;
}

/** Parses an inode record. */
export function parseExtInode(b: Uint8Array, ino: number): ExtInode {
  return {
    ino,
    iMode: u16(b, 0),
    iSize: u32(b, 4) + u32(b, 108) * 0x100000000,
    iMtime: u32(b, 16),
    iBlocks: u32(b, 28) + u16(b, 116) * 0x100000000,
    iFlags: u32(b, 32),
    iBlock: b.subarray(40, 100),
    raw: b,
  };
}

function typeOfMode(mode: number): FsEntryType {
  switch (mode & 0xf000) {
    case 0x8000:
      return 'file';
    case 0x4000:
      return 'dir';
    case 0xa000:
      return 'symlink';
    default:
      return 'other';
  }
}

/** One mapped run: logical block `lblk`, `len` blocks at physical `pblk` (0 = hole / uninitialized: zeros). */
interface Run {
  lblk: number;
  len: number;
  pblk: number;
}

class ExtFs implements FileSystem {
  readonly type: string;
  readonly label: string | undefined;
  readonly blockSize: number;
  /** Bytes of inode table read at a time. */
  private readonly inodeChunk: number;
  private readonly groupCount: number;
  private readonly descPerBlock: number;
  private readonly inodeTableCache = new Map<number, number>();
  private readonly runCache = new Map<number, Run[]>();
  /** Inode-table blocks by block number, a bounded FIFO. */
  private readonly inodeBlocks = new Map<number, Uint8Array>();

  constructor(
    readonly volume: Volume,
    readonly sb: ExtSuperblock,
  ) {
    this.blockSize = 1024 << sb.sLogBlockSize;
    this.inodeChunk = Math.max(INODE_CHUNK, this.blockSize);
    this.groupCount = Math.ceil((sb.sBlocksCount - sb.sFirstDataBlock) / sb.sBlocksPerGroup);
    this.descPerBlock = Math.floor(this.blockSize / sb.sDescSize);
    const inc = sb.sFeatureIncompat;
    this.type = inc & (INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG | INCOMPAT_INLINE_DATA) ? 'ext4' : sb.sFeatureCompat & COMPAT_HAS_JOURNAL ? 'ext3' : 'ext2';
    this.label = sb.sVolumeName || undefined;
  }

  root(): FsNode {
    return { name: '/', type: 'dir', size: 0, ref: 2 };
  }

  private fail(what: string, offset: number, why: string): never {
    this.volume.fail('ECORRUPT', what, offset, why);
  }

  private groupHasSuper(g: number): boolean {
    if (!(this.sb.sFeatureRoCompat & RO_COMPAT_SPARSE_SUPER)) return true;
    if (g <= 1) return true;
    for (const p of [3, 5, 7]) {
      let n = p;
      while (n < g) n *= p;
      if (n === g) return true;
    }
    return false;
  }

  /** Block holding the descriptor of group `g`. */
  private descriptorBlock(g: number): number {
    const first = this.sb.sFirstDataBlock;
    const metaBg = Math.floor(g / this.descPerBlock);
    if (this.sb.sFeatureIncompat & INCOMPAT_META_BG && metaBg >= this.sb.sFirstMetaBg) {
      const grp = metaBg * this.descPerBlock;
      return first + grp * this.sb.sBlocksPerGroup + (this.groupHasSuper(grp) ? 1 : 0);
    }
    return first + 1 + metaBg;
  }

  private async inodeTable(g: number): Promise<number> {
    const hit = this.inodeTableCache.get(g);
    if (hit !== undefined) return hit;
    const off = this.descriptorBlock(g) * this.blockSize + (g % this.descPerBlock) * this.sb.sDescSize;
    const d = await this.volume.read(off, this.sb.sDescSize, `ext group descriptor ${g}`);
    const table = u32(d, 8) + (this.sb.sDescSize >= 64 ? u32(d, 0x28) * 0x100000000 : 0);
    if (table === 0 || table >= this.sb.sBlocksCount) this.fail(`ext group descriptor ${g}`, off, `inode table block ${table} is outside the file system (${this.sb.sBlocksCount} blocks)`);
    if (this.inodeTableCache.size > 4096) this.inodeTableCache.clear();
    this.inodeTableCache.set(g, table);
    return table;
  }

  async inode(ino: number): Promise<ExtInode> {
    return this.cachedInode(ino) ?? this.loadInode(ino);
  }

  /** Byte offset of inode `ino` in the volume, once its group's inode table is known. */
  private inodeOffset(ino: number, table: number): number {
    return table * this.blockSize + ((ino - 1) % this.sb.sInodesPerGroup) * this.sb.sInodeSize;
  }

  private parseAt(ino: number, off: number, blk: number, b: Uint8Array): ExtInode {
    const at = off - blk * this.inodeChunk;
    if (at + this.sb.sInodeSize > b.length) this.fail(`ext inode ${ino}`, off, 'is beyond the end of the volume');
    return parseExtInode(b.slice(at, at + this.sb.sInodeSize), ino);
  }

  /**
   * The inode without waiting, when its group's table and its piece of the
   * table are already cached (the common case while listing a directory:
   * one `await` per entry would cost more than the parsing).
   */
  private cachedInode(ino: number): ExtInode | undefined {
    if (ino < 1 || ino > this.sb.sInodesCount) return undefined;
    const table = this.inodeTableCache.get(Math.floor((ino - 1) / this.sb.sInodesPerGroup));
    if (table === undefined) return undefined;
    const off = this.inodeOffset(ino, table);
    const blk = Math.floor(off / this.inodeChunk);
    const b = this.inodeBlocks.get(blk);
    return b ? this.parseAt(ino, off, blk, b) : undefined;
  }

  private async loadInode(ino: number): Promise<ExtInode> {
    if (ino < 1 || ino > this.sb.sInodesCount) this.fail('ext directory entry', 0, `inode number ${ino} is outside 1..${this.sb.sInodesCount}`);
    const table = await this.inodeTable(Math.floor((ino - 1) / this.sb.sInodesPerGroup));
    const off = this.inodeOffset(ino, table);
    // Inodes are read 64 KiB of inode table at a time: a directory's entries tend to sit close together
    // in the table, and one request per inode would cost more than the parsing.
    const chunk = this.inodeChunk;
    const blk = Math.floor(off / chunk);
    let b = this.inodeBlocks.get(blk);
    if (!b) {
      const start = blk * chunk;
      b = await this.volume.read(start, Math.min(chunk, this.volume.size - start), `ext inode table (inode ${ino})`);
      if (this.inodeBlocks.size >= 64) this.inodeBlocks.delete(this.inodeBlocks.keys().next().value!);
      this.inodeBlocks.set(blk, b);
    }
    return this.parseAt(ino, off, blk, b);
  }

  private node(name: string, ino: ExtInode): FsNode {
    return { name, type: typeOfMode(ino.iMode), size: ino.iSize, mtime: ino.iMtime, mode: ino.iMode & 0o7777, ref: ino.ino };
  }

  /** The "system.data" extended attribute in the inode body (inline data past i_block's 60 bytes). */
  private inlineXattr(ino: ExtInode): Uint8Array {
    const raw = ino.raw;
    if (raw.length <= 128) return new Uint8Array(0);
    const extra = u16(raw, 128);
    const start = 128 + extra;
    if (start + 4 > raw.length || u32(raw, start) !== 0xea020000) return new Uint8Array(0);
    const base = start + 4;
    for (let o = base; o + 16 <= raw.length; ) {
      const nameLen = raw[o]!;
      const nameIndex = raw[o + 1]!;
      if (nameLen === 0 && nameIndex === 0 && u32(raw, o) === 0) break;
      const valueOffs = u16(raw, o + 2);
      const valueSize = u32(raw, o + 8);
      const name = String.fromCharCode(...raw.subarray(o + 16, o + 16 + nameLen));
      if (nameIndex === 7 && name === 'data') {
        if (base + valueOffs + valueSize > raw.length) this.fail(`ext inode ${ino.ino} inline data attribute`, 0, 'value runs beyond the inode');
        return raw.subarray(base + valueOffs, base + valueOffs + valueSize);
      }
      o += (16 + nameLen + 3) & ~3;
    }
    return new Uint8Array(0);
  }

  private inlineBytes(ino: ExtInode): Uint8Array {
    const x = this.inlineXattr(ino);
    const out = new Uint8Array(60 + x.length);
    out.set(ino.iBlock, 0);
    out.set(x, 60);
    return out;
  }

  /** The file's block runs (extent tree or block map), cached for the last few inodes. */
  private async runs(ino: ExtInode): Promise<Run[]> {
    const hit = this.runCache.get(ino.ino);
    if (hit) return hit;
    const nblocks = Math.ceil(ino.iSize / this.blockSize);
    const runs = ino.iFlags & EXT4_EXTENTS_FL ? await this.extentRuns(ino, nblocks) : await this.blockMapRuns(ino, nblocks);
    if (this.runCache.size > 64) this.runCache.clear();
    this.runCache.set(ino.ino, runs);
    return runs;
  }

  private async extentRuns(ino: ExtInode, nblocks: number): Promise<Run[]> {
    const out: Run[] = [];
    let visited = 0;
    const walk = async (node: Uint8Array, where: number, depthExpected: number | undefined): Promise<void> => {
      const what = `ext inode ${ino.ino} extent node`;
      if (u16(node, 0) !== EXT_EXTENT_MAGIC) this.fail(what, where, 'bad magic');
      const entries = u16(node, 2);
      const depth = u16(node, 6);
      if (depth > MAX_EXTENT_DEPTH) this.fail(what, where, `depth ${depth} is more than ${MAX_EXTENT_DEPTH}`);
      if (depthExpected !== undefined && depth !== depthExpected) this.fail(what, where, `depth ${depth}, its parent says ${depthExpected}`);
      if (12 + entries * 12 > node.length) this.fail(what, where, `${entries} entries do not fit the node`);
      if (++visited > 1 + nblocks) this.fail(what, where, 'more extent nodes than the file has blocks');
      for (let i = 0; i < entries; i++) {
        const e = 12 + i * 12;
        if (depth === 0) {
          let len = u16(node, e + 4);
          const uninit = len > 32768;
          if (uninit) len -= 32768;
          const pblk = u16(node, e + 6) * 0x100000000 + u32(node, e + 8);
          if (!uninit && pblk + len > this.sb.sBlocksCount) this.fail(what, where, `extent ${i} (blocks ${pblk}+${len}) is outside the file system`);
          out.push({ lblk: u32(node, e), len, pblk: uninit ? 0 : pblk });
          if (out.length > nblocks + 1) this.fail(what, where, 'more extents than the file has blocks');
        } else {
          const leaf = u32(node, e + 4) + u16(node, e + 8) * 0x100000000;
          if (leaf >= this.sb.sBlocksCount) this.fail(what, where, `index ${i} points at block ${leaf}, outside the file system`);
          const child = await this.volume.read(leaf * this.blockSize, this.blockSize, what);
          await walk(child, leaf * this.blockSize, depth - 1);
        }
      }
    };
    await walk(ino.iBlock, 0, undefined);
    out.sort((a, b) => a.lblk - b.lblk);
    return out;
  }

  private async blockMapRuns(ino: ExtInode, nblocks: number): Promise<Run[]> {
    const per = this.blockSize / 4;
    const out: Run[] = [];
    const push = (lblk: number, pblk: number): void => {
      const last = out[out.length - 1];
      if (last && last.lblk + last.len === lblk && ((pblk === 0 && last.pblk === 0) || (pblk !== 0 && last.pblk !== 0 && last.pblk + last.len === pblk))) last.len++;
      else out.push({ lblk, len: 1, pblk });
    };
    let lblk = 0;
    const what = `ext inode ${ino.ino} indirect block`;
    const indirect = async (blk: number, level: number): Promise<void> => {
      const span = per ** level;
      if (blk === 0) {
        lblk += span; // a hole the size of everything below
        return;
      }
      if (blk >= this.sb.sBlocksCount) this.fail(what, 0, `block ${blk} is outside the file system`);
      const b = await this.volume.read(blk * this.blockSize, this.blockSize, what);
      for (let i = 0; i < per && lblk < nblocks; i++) {
        const p = u32(b, i * 4);
        if (level === 1) {
          if (p >= this.sb.sBlocksCount) this.fail(what, blk * this.blockSize, `entry ${i} points at block ${p}, outside the file system`);
          push(lblk++, p);
        } else await indirect(p, level - 1);
      }
    };
    for (let i = 0; i < 12 && lblk < nblocks; i++) {
      const p = u32(ino.iBlock, i * 4);
      if (p >= this.sb.sBlocksCount) this.fail(`ext inode ${ino.ino}`, 0, `direct block ${i} is ${p}, outside the file system`);
      push(lblk++, p);
    }
    for (let level = 1; level <= 3 && lblk < nblocks; level++) await indirect(u32(ino.iBlock, (11 + level) * 4), level);
    return out.filter((r) => r.lblk < nblocks);
  }

  private async readInode(ino: ExtInode, offset: number, bytes: number): Promise<Uint8Array> {
    const out = new Uint8Array(bytes);
    if (bytes === 0) return out;
    if (ino.iFlags & EXT4_INLINE_DATA_FL) {
      const inline = this.inlineBytes(ino);
      out.set(inline.subarray(Math.min(offset, inline.length), Math.min(offset + bytes, inline.length)));
      return out;
    }
    const bs = this.blockSize;
    const end = offset + bytes;
    for (const r of await this.runs(ino)) {
      const rs = r.lblk * bs;
      const re = (r.lblk + r.len) * bs;
      if (re <= offset || rs >= end || r.pblk === 0) continue;
      const from = Math.max(offset, rs);
      const to = Math.min(end, re);
      const data = await this.volume.read(r.pblk * bs + (from - rs), to - from, `ext inode ${ino.ino} data`);
      out.set(data, from - offset);
    }
    return out;
  }

  async readdir(dir: FsNode): Promise<FsNode[]> {
    const ino = await this.inode(dir.ref as number);
    if (typeOfMode(ino.iMode) !== 'dir') this.fail(`ext inode ${ino.ino}`, 0, 'is not a directory');
    const entries: Array<{ name: string; ino: number }> = [];
    if (ino.iFlags & EXT4_INLINE_DATA_FL) {
      // i_block: the parent's inode number, then entries; the xattr continues them.
      this.scanDirents(ino.iBlock.subarray(4), ino, entries);
      const x = this.inlineXattr(ino);
      if (x.length) this.scanDirents(x, ino, entries);
    } else {
      if (ino.iSize > MAX_DIR_BYTES) this.fail(`ext directory inode ${ino.ino}`, 0, `${ino.iSize} bytes is more than ${MAX_DIR_BYTES}`);
      const data = await this.readInode(ino, 0, ino.iSize);
      for (let o = 0; o < data.length; o += this.blockSize) this.scanDirents(data.subarray(o, o + this.blockSize), ino, entries);
    }
    const out: FsNode[] = [];
    for (const e of entries) {
      if (e.name === '.' || e.name === '..') continue;
      out.push(this.node(e.name, this.cachedInode(e.ino) ?? (await this.loadInode(e.ino))));
    }
    return out;
  }

  private scanDirents(b: Uint8Array, dir: ExtInode, out: Array<{ name: string; ino: number }>): void {
    const ft = (this.sb.sFeatureIncompat & INCOMPAT_FILETYPE) !== 0;
    for (let o = 0; o + 8 <= b.length; ) {
      const inode = u32(b, o);
      const recLen = u16(b, o + 4);
      const nameLen = ft ? b[o + 6]! : u16(b, o + 6);
      if (recLen < 8 || recLen % 4 !== 0 || o + recLen > b.length) {
        if (inode === 0 && recLen === 0) break; // zero padding at the end of inline data
        this.fail(`ext directory inode ${dir.ino} entry`, o, `rec_len ${recLen} is not a multiple of 4 inside the block`);
      }
      if (inode !== 0) {
        if (8 + nameLen > recLen) this.fail(`ext directory inode ${dir.ino} entry`, o, `name_len ${nameLen} does not fit rec_len ${recLen}`);
        out.push({ name: utf8.decode(b.subarray(o + 8, o + 8 + nameLen)), ino: inode });
      }
      o += recLen;
    }
  }

  async read(file: FsNode, offset: number, bytes: number): Promise<Uint8Array> {
    return this.readInode(await this.inode(file.ref as number), offset, bytes);
  }

  async readlink(link: FsNode): Promise<string> {
    const ino = await this.inode(link.ref as number);
    if (ino.iSize > 4096) this.fail(`ext symlink inode ${ino.ino}`, 0, `target of ${ino.iSize} bytes is longer than 4096`);
    let bytes: Uint8Array;
    // A fast symlink keeps its target in i_block (no blocks, no extents, no inline flag).
    if (!(ino.iFlags & (EXT4_EXTENTS_FL | EXT4_INLINE_DATA_FL)) && ino.iSize < 60 && ino.iBlocks === 0) bytes = ino.iBlock.subarray(0, ino.iSize);
    else if (!(ino.iFlags & EXT4_INLINE_DATA_FL) && ino.iSize < 60 && ino.iFlags & EXT4_EXTENTS_FL && u16(ino.iBlock, 0) !== EXT_EXTENT_MAGIC) bytes = ino.iBlock.subarray(0, ino.iSize);
    else bytes = await this.readInode(ino, 0, ino.iSize);
    return new TextDecoder().decode(bytes);
  }
}

export const extDriver: FileSystemDriver = {
  name: 'ext4',
  async probe(vol) {
    if (vol.size < 2048) return null;
    const sb = parseExtSuperblock(await vol.read(1024, 1024, 'ext superblock'));
    if (sb.sMagic !== EXT_MAGIC) return null;
    const inc = sb.sFeatureIncompat;
    return inc & (INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG | INCOMPAT_INLINE_DATA) ? 'ext4' : sb.sFeatureCompat & COMPAT_HAS_JOURNAL ? 'ext3' : 'ext2';
  },
  async open(vol) {
    const sb = parseExtSuperblock(await vol.read(1024, 1024, 'ext superblock'));
    const at = (why: string): never => vol.fail('ECORRUPT', 'ext superblock', 1024, why);
    if (sb.sMagic !== EXT_MAGIC) at('bad magic');
    if (sb.sLogBlockSize > 6) at(`s_log_block_size ${sb.sLogBlockSize} (block size above 64 KiB)`);
    const blockSize = 1024 << sb.sLogBlockSize;
    if (sb.sBlocksPerGroup === 0 || sb.sBlocksPerGroup > blockSize * 8) at(`s_blocks_per_group ${sb.sBlocksPerGroup}`);
    if (sb.sInodesPerGroup === 0 || sb.sInodesPerGroup > blockSize * 8) at(`s_inodes_per_group ${sb.sInodesPerGroup}`);
    if (sb.sInodeSize < 128 || sb.sInodeSize > blockSize || (sb.sInodeSize & (sb.sInodeSize - 1)) !== 0) at(`s_inode_size ${sb.sInodeSize}`);
    if (sb.sDescSize < 32 || sb.sDescSize > 1024 || (sb.sDescSize & (sb.sDescSize - 1)) !== 0) at(`s_desc_size ${sb.sDescSize}`);
    if (sb.sBlocksCount * blockSize > vol.size) at(`s_blocks_count ${sb.sBlocksCount} × ${blockSize} bytes is larger than the volume (${vol.size} bytes)`);
    const unknown = sb.sFeatureIncompat & ~INCOMPAT_KNOWN;
    if (unknown) throw new BlockError('ENOTSUP', `${vol.name}: ext superblock at 0x400: incompatible features 0x${unknown.toString(16)} are not supported`);
    return new ExtFs(vol, sb);
  },
};
