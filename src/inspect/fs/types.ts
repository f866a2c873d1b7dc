/**
 * The read-only file-system contract: a driver probes a volume and opens it;
 * an open file system answers its root, directory listings and file reads by
 * node. Path walking, listing by path and streaming a file are generic
 * (src/inspect/fs/paths.ts), so each driver only parses its own structures.
 */
import type { Volume } from '../volume.js';

export type FsEntryType = 'file' | 'dir' | 'symlink' | 'other';

/** A directory entry; `ref` is the driver's handle (an inode number, a cluster, an extent). */
export interface FsNode {
  name: string;
  type: FsEntryType;
  /** Bytes of a file (a directory's own size as the file system records it). */
  size: number;
  /** Modification time, seconds since the Unix epoch (UTC), when recorded. */
  mtime?: number;
  /** Unix mode bits, where the file system has them. */
  mode?: number;
  /** Symlink target, when the listing already knows it. */
  target?: string;
  ref: unknown;
}

export interface FileSystem {
  /** blkid's TYPE: vfat, ext2, ext3, ext4, iso9660. */
  readonly type: string;
  /** Volume label, when set. */
  readonly label?: string;
  readonly volume: Volume;
  root(): FsNode;
  /** The entries of a directory, without "." and "..". */
  readdir(dir: FsNode): Promise<FsNode[]>;
  /** `bytes` bytes of a file from `offset` (the caller stays inside `size`). */
  read(file: FsNode, offset: number, bytes: number): Promise<Uint8Array>;
  /** A symlink's target. */
  readlink?(link: FsNode): Promise<string>;
}

export interface FileSystemDriver {
  /** blkid's TYPE for messages and listings (ext4 names the family; the opened FS says ext2/3/4). */
  readonly name: string;
  /** Cheap signature check on the volume; never throws for "not mine". */
  probe(vol: Volume): Promise<string | null>;
  /** Opens the volume; a driver for a file system we only detect throws ENOTSUP. */
  open(vol: Volume): Promise<FileSystem>;
}
