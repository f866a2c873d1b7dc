/**
 * Looking inside the images the engine has open, for the app: partition
 * tables, directory listings, file reads and "what did this layer change",
 * on the open node itself, on any layer of its backing chain (the disk as
 * that layer shows it), or on an internal snapshot (a second, read-only open
 * of the image with the snapshot loaded, kept until the view is released).
 */
import { BlockError } from '../block/errors.js';
import type { BlockNode } from '../block/node.js';
import { backingChain, closeNode, openContext, openImage } from '../block/open.js';
import { snapshotLoadTmp } from '../img/snapshot.js';
import {
  listPath,
  lookup,
  openVolumeFileSystem,
  readPartitionTable,
  Volume,
  walkTree,
  type FsEntryType,
  type FsNode,
  type OpenedVolume,
  type PartitionTable,
} from '../inspect/index.js';

/**
 * Which state of an open image: the node, layer N of its chain (0 = top), or
 * an internal snapshot of that layer (`snapshot`, with or without `layer`).
 */
export interface InspectView {
  node: string;
  layer?: number;
  snapshot?: string;
}

/** An entry of a recursive listing: its path from the listed directory ("a/b.txt"). */
export interface InspectTreeEntry extends InspectEntry {
  path: string;
  /** Why a directory's contents are missing (a loop, a corrupt block). */
  error?: string;
}

/** A directory entry as the page gets it. */
export interface InspectEntry {
  name: string;
  type: FsEntryType;
  size: number;
  mtime: number | null;
  target?: string;
}

export interface LayerDiff {
  added: string[];
  removed: string[];
  /** Same path, another type, size or modification time. */
  changed: string[];
}

/** Largest file read in one call (the page asks in chunks). */
export const MAX_INSPECT_READ = 16 * 1024 * 1024;
/** Most entries one recursive listing returns (a bound on the reply's memory). */
export const MAX_TREE_ENTRIES = 1_000_000;

function entryOf(n: FsNode): InspectEntry {
  return { name: n.name, type: n.type, size: n.size, mtime: n.mtime ?? null, ...(n.target !== undefined ? { target: n.target } : {}) };
}

/** Whether two files of the same size hold the same bytes. */
async function sameBytes(va: OpenedVolume, a: FsNode, vb: OpenedVolume, b: FsNode): Promise<boolean> {
  for (let off = 0; off < a.size; off += MAX_INSPECT_READ) {
    const n = Math.min(MAX_INSPECT_READ, a.size - off);
    const [x, y] = await Promise.all([va.fs.read(a, off, n), vb.fs.read(b, off, n)]);
    for (let i = 0; i < n; i++) if (x[i] !== y[i]) return false;
  }
  return true;
}

function key(v: InspectView, partition: number | null): string {
  return JSON.stringify([v.node, v.layer ?? 0, v.snapshot ?? null, partition]);
}

export class InspectService {
  private readonly snapshotNodes = new Map<string, BlockNode>();
  private readonly volumes = new Map<string, OpenedVolume>();

  constructor(private readonly lookupNode: (name: string) => BlockNode) {}

  private async nodeOf(v: InspectView): Promise<BlockNode> {
    const top = this.lookupNode(v.node);
    const chain = backingChain(top);
    const layer = v.layer ?? 0;
    const bs = chain[layer];
    if (!bs) throw new BlockError('ENOENT', `${top.filename}: the chain has no layer ${layer} (${chain.length} layers)`);
    if (v.snapshot === undefined) return bs;
    const k = JSON.stringify([v.node, layer, v.snapshot]);
    let snap = this.snapshotNodes.get(k);
    if (!snap) {
      const ctx = openContext(bs);
      if (!ctx) throw new BlockError('EINVAL', `${bs.filename}: no storage to open a snapshot view from`);
      snap = await openImage(ctx.storage, bs.filename, { readOnly: true, format: bs.driver.name });
      try {
        await snapshotLoadTmp(snap, v.snapshot);
      } catch (e) {
        await closeNode(snap);
        throw e;
      }
      this.snapshotNodes.set(k, snap);
    }
    return snap;
  }

  async partitions(v: InspectView): Promise<PartitionTable> {
    const bs = await this.nodeOf(v);
    return readPartitionTable(new Volume(bs, bs.filename));
  }

  private async volume(v: InspectView, partition: number | null): Promise<OpenedVolume> {
    const k = key(v, partition);
    let vol = this.volumes.get(k);
    if (!vol) {
      vol = await openVolumeFileSystem(await this.nodeOf(v), partition ?? undefined);
      this.volumes.set(k, vol);
    }
    return vol;
  }

  async list(v: InspectView, partition: number | null, path: string): Promise<InspectEntry[]> {
    const vol = await this.volume(v, partition);
    const nodes = await listPath(vol.fs, path);
    return nodes.map(entryOf);
  }

  /**
   * Everything under the directory at `path`, depth first in name order, as
   * paths relative to it (for a zip of the folder). Loops and unreadable
   * directories come back as entries with an error; the walk goes on.
   */
  async tree(v: InspectView, partition: number | null, path: string): Promise<InspectTreeEntry[]> {
    const vol = await this.volume(v, partition);
    const dir = await lookup(vol.fs, path);
    if (dir.type !== 'dir') throw new BlockError('EINVAL', `${vol.fs.volume.name}: ${path}: Not a directory`);
    const out: InspectTreeEntry[] = [];
    await walkTree(vol.fs, dir, (e) => {
      if (out.length >= MAX_TREE_ENTRIES) throw new BlockError('EFBIG', `${vol.fs.volume.name}: ${path} holds more than ${MAX_TREE_ENTRIES} entries`);
      out.push({ ...entryOf(e.node), path: e.path, ...(e.error !== undefined ? { error: e.error } : {}) });
    });
    return out;
  }

  async read(v: InspectView, partition: number | null, path: string, offset: number, bytes: number): Promise<Uint8Array<ArrayBuffer>> {
    const vol = await this.volume(v, partition);
    const node = await lookup(vol.fs, path);
    if (node.type !== 'file') throw new BlockError('EINVAL', `${vol.fs.volume.name}: ${path} is not a regular file`);
    const n = Math.max(0, Math.min(bytes, MAX_INSPECT_READ, node.size - offset));
    const data = await vol.fs.read(node, offset, n);
    const out = new Uint8Array(new ArrayBuffer(data.length));
    out.set(data);
    return out;
  }

  /**
   * Files added, removed and changed between view `below` and view `above`
   * (a layer and the one under it, a snapshot and now). A file is changed
   * when its type, size or modification time differ, or, when those are
   * equal, its bytes do (read and compared in chunks).
   */
  async diff(above: InspectView, below: InspectView, partition: number | null): Promise<LayerDiff> {
    const tree = async (v: InspectView): Promise<{ vol: OpenedVolume; m: Map<string, FsNode> }> => {
      const vol = await this.volume(v, partition);
      const m = new Map<string, FsNode>();
      await walkTree(vol.fs, vol.fs.root(), (e) => void m.set(e.path, e.node));
      return { vol, m };
    };
    const a = await tree(above);
    const b = await tree(below);
    const added = [...a.m.keys()].filter((p) => !b.m.has(p)).sort();
    const removed = [...b.m.keys()].filter((p) => !a.m.has(p)).sort();
    const changed: string[] = [];
    for (const [p, na] of a.m) {
      const nb = b.m.get(p);
      if (!nb) continue;
      if (na.type !== nb.type || (na.type !== 'dir' && na.size !== nb.size) || na.mtime !== nb.mtime) changed.push(p);
      else if (na.type === 'file' && !(await sameBytes(a.vol, na, b.vol, nb))) changed.push(p);
    }
    return { added, removed, changed: changed.sort() };
  }

  /** Drops every view of `node` (call before closing it), or all views. */
  async release(node?: string): Promise<void> {
    for (const [k, vol] of this.volumes) {
      if (node === undefined || (JSON.parse(k) as unknown[])[0] === node) {
        this.volumes.delete(k);
        await vol.close().catch(() => {});
      }
    }
    for (const [k, bs] of this.snapshotNodes) {
      if (node === undefined || (JSON.parse(k) as unknown[])[0] === node) {
        this.snapshotNodes.delete(k);
        await closeNode(bs).catch(() => {});
      }
    }
  }
}
