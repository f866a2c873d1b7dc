/**
 * BlockNode: one node of the block graph (QEMU's BlockDriverState).
 *
 * A node has a driver, the driver's private state (`opaque`), a size, request
 * limits and up to three children: `file` (where a format's bytes live),
 * `backing` (the image below it in a chain) and `dataFile` (qcow2's external
 * data file); a driver with a list of children (quorum) has `dataChildren`
 * instead of a file. Nodes are created by src/block/open.ts; the request functions
 * that drivers and users call live in src/block/io.ts.
 */
import type { BlockDriver } from './driver.js';
import { BdrvChild, type ChildRole, PERM_CONSISTENT_READ, PERM_WRITE } from './child.js';

export interface BlockLimits {
  /** Every request reaching the driver is aligned to this (bytes, a power of two). */
  requestAlignment: number;
  /** Largest request the driver takes at once (bytes, a multiple of requestAlignment). */
  maxTransfer: number;
  /** Alignment that write-zeroes needs to deallocate (defaults to requestAlignment). */
  pwriteZeroesAlignment?: number;
  /** Alignment discards need to take effect (defaults to requestAlignment). */
  pdiscardAlignment?: number;
  /** Largest write-zeroes the driver takes at once (bytes; unset: no limit). */
  maxPwriteZeroes?: number;
  /** Largest discard the driver takes at once (bytes; unset: no limit). */
  maxPdiscard?: number;
}

/** What the write path tells about every write that lands (dirty bitmaps implement it). */
export interface WriteObserver {
  /** Called after a write, write-zeroes or discard of [offset, offset + bytes) succeeded. */
  markDirty(offset: number, bytes: number): void;
}

export const DEFAULT_MAX_TRANSFER = 16 * 1024 * 1024;

let nodeCounter = 0;

/** The next generated node name ("#blockNNN"), for nodes QEMU would create that blocktab does not (a job's filter node). */
export function generatedNodeName(): string {
  return `#block${String(++nodeCounter).padStart(3, '0')}`;
}

export class BlockNode {
  /** Unique name in the graph (QEMU's node-name); generated as "#blockNNN" (three digits at least, as QEMU) unless given. */
  readonly nodeName: string;
  readonly driver: BlockDriver;
  /** Name of the image as the user (or a backing-file reference) gave it. */
  readonly filename: string;
  /** Driver-private state, set by `driver.open`. */
  opaque: unknown = undefined;
  /** Virtual size in bytes. */
  totalBytes = 0;
  readOnly: boolean;
  limits: BlockLimits = { requestAlignment: 1, maxTransfer: DEFAULT_MAX_TRANSFER };

  file: BdrvChild | null = null;
  backing: BdrvChild | null = null;
  dataFile: BdrvChild | null = null;
  /** Children in a list, role `data` (quorum's `children.N`), in order. */
  readonly dataChildren: BdrvChild[] = [];

  /** Backing file name exactly as stored in the image (formats with backing only). */
  backingFile: string | null = null;
  /** Backing format as stored in the image, if it names one. */
  backingFormat: string | null = null;
  /**
   * The backing file name the node would open by itself (QEMU's
   * auto_backing_file): the header's name, or the opened backing node's name
   * once the chain was opened from the header. A backing node of another name
   * was given explicitly (blockdev-add, reopen) and shows in `json:` names.
   */
  autoBackingFile: string | null = null;
  /** The backing node was taken away on purpose (blockdev-reopen's `backing: null`): the node's options say so. */
  backingDropped = false;
  /** backingFile resolved against this image's location (QEMU's full-backing-filename). */
  fullBackingFilename: string | null = null;

  /** The image's data is encrypted (QEMU's bs->encrypted; luks sets it): info prints "encrypted". */
  encrypted = false;
  /** Set when raw was chosen only because no other format matched: writes to the first sector are refused. */
  probedAsRaw = false;
  /** QEMU's detect-zeroes: writes of all-zero data become write-zeroes (with unmap: may deallocate). */
  detectZeroes: 'off' | 'on' | 'unmap' = 'off';
  /**
   * QEMU's BDRV_O_NO_FLUSH (cache=unsafe, qemu-img convert's default): flushes
   * stop short of the storage (format drivers still write their cached metadata).
   */
  noFlush = false;
  /**
   * QEMU's write_gen / flushed_gen: every write, write-zeroes, discard or
   * truncate that reached this node (failed ones too) bumps writeGen; a
   * flush that succeeds records the generation it started at. A flush with
   * nothing written since skips the driver's flush to storage (QEMU's
   * "Check if we really need to flush anything"), so it neither costs an
   * fsync nor meets an injected flush error.
   */
  writeGen = 0;
  flushedGen = 0;
  /**
   * QEMU's BDRV_O_UNMAP (discard=unmap): without it a discard that reaches
   * this node is dropped here, before the driver and the nodes below see it
   * (QEMU's bdrv_co_pdiscard); with it a protocol node deallocates the
   * storage. On by default, as QEMU defaults every child to discard=unmap;
   * the opener of a top node turns it off where QEMU's would (qemu-io's
   * `-d ignore`, blockdev-add without discard=unmap).
   */
  unmap = true;
  /** End of the highest write, write-zeroes or discard that reached this node (QEMU's wr_highest_offset, for query-blockstats). */
  wrHighestOffset = 0;
  /** Dirty bitmaps recording writes to this node (src/block/dirty-bitmap.ts). */
  dirtyBitmaps: WriteObserver | null = null;
  /** Parent edges pointing at this node (for the graph views). */
  readonly parents: BdrvChild[] = [];
  /** Options the node was opened with (driver-specific keys included). */
  readonly options: Record<string, unknown>;
  closed = false;

  constructor(driver: BlockDriver, filename: string, options: Record<string, unknown> = {}, nodeName?: string) {
    this.driver = driver;
    this.filename = filename;
    this.options = options;
    this.readOnly = options.readOnly === true;
    this.nodeName = nodeName ?? generatedNodeName();
  }

  /** The driver's private state, typed by the caller (each driver knows its own). */
  state<T>(): T {
    return this.opaque as T;
  }

  /** Attaches `child` under `role`; the graph keeps both directions. */
  attach(child: BlockNode, role: ChildRole, name: string = role): BdrvChild {
    const perm = PERM_CONSISTENT_READ | (this.readOnly || role === 'backing' ? 0 : PERM_WRITE);
    const edge = new BdrvChild(this, name, role, child, perm);
    child.parents.push(edge);
    if (role === 'file') this.file = edge;
    else if (role === 'backing') this.backing = edge;
    else if (role === 'data') this.dataChildren.push(edge);
    else this.dataFile = edge;
    return edge;
  }

  /** Points the edge `edge` of this node at `to` instead (same role, name and place), as QEMU's bdrv_replace_child. */
  replaceChild(edge: BdrvChild, to: BlockNode): BdrvChild {
    if (edge.role !== 'data') {
      this.detach(edge.role);
      return this.attach(to, edge.role, edge.name);
    }
    const at = this.dataChildren.indexOf(edge);
    const i = edge.node.parents.indexOf(edge);
    if (i >= 0) edge.node.parents.splice(i, 1);
    const fresh = this.attach(to, 'data', edge.name);
    this.dataChildren.pop();
    this.dataChildren.splice(at, 1, fresh);
    return fresh;
  }

  /** Every child edge: file, backing, data file, then the data children in order. */
  children(): BdrvChild[] {
    const out: BdrvChild[] = [];
    for (const c of [this.file, this.backing, this.dataFile]) if (c) out.push(c);
    return out.concat(this.dataChildren);
  }

  /** Removes the data children's edges (the nodes are not closed) and returns their nodes. */
  detachDataChildren(): BlockNode[] {
    const nodes = this.dataChildren.map((edge) => {
      const i = edge.node.parents.indexOf(edge);
      if (i >= 0) edge.node.parents.splice(i, 1);
      return edge.node;
    });
    this.dataChildren.length = 0;
    return nodes;
  }

  /** Removes the edge for `role` (the child node is not closed); `data` children go with detachDataChildren. */
  detach(role: Exclude<ChildRole, 'data'>): BlockNode | null {
    const edge = role === 'file' ? this.file : role === 'backing' ? this.backing : this.dataFile;
    if (!edge) return null;
    const i = edge.node.parents.indexOf(edge);
    if (i >= 0) edge.node.parents.splice(i, 1);
    if (role === 'file') this.file = null;
    else if (role === 'backing') this.backing = null;
    else this.dataFile = null;
    return edge.node;
  }

  /** The node below this one in a backing chain (QEMU's bdrv_cow_bs): backing for formats, file for filters. */
  cowNode(): BlockNode | null {
    if (this.driver.kind === 'filter') return this.file?.node ?? null;
    return this.backing?.node ?? null;
  }

  /** The first node at or below this one that is not a filter (QEMU's bdrv_skip_filters). */
  skipFilters(): BlockNode {
    let n: BlockNode = this;
    while (n.driver.kind === 'filter' && n.file) n = n.file.node;
    return n;
  }

  /** The format node's own storage child: file for formats and filters, nothing for protocols. */
  fileNode(): BlockNode | null {
    return this.file?.node ?? null;
  }
}
