/**
 * qemu-img map as a function: walks the image's chain the way qemu-img's
 * get_block_status does (ask each layer in turn until one says DATA or ZERO;
 * depth is how many layers were descended) and merges neighbouring entries
 * that say the same thing, as img_map does.
 */
import type { BlockNode } from '../block/node.js';
import {
  BDRV_BLOCK_ALLOCATED,
  BDRV_BLOCK_DATA,
  BDRV_BLOCK_OFFSET_VALID,
  BDRV_BLOCK_ZERO,
  blockStatus,
} from '../block/status.js';

export interface MapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  /** Where the bytes live in `filename` (only when the layer knows). */
  offset?: number;
  /** Name of the node holding the bytes at `offset`. */
  filename?: string;
}

export interface MapOptions {
  /** First guest offset to describe (qemu-img's --start-offset). */
  start?: number;
  /** Bytes to describe from `start` (qemu-img's --max-length). */
  maxLength?: number;
  /**
   * Merge as the human output does: after an entry is emitted, a following
   * entry that is not plain data is treated as zero, so holes and zero
   * ranges coalesce (qemu-img's human format ignores that distinction).
   */
  human?: boolean;
}

/** qemu-img asks about at most 1 GiB at a time. */
const MAP_CHUNK = 1 << 30;

/** The answer for [offset, offset + bytes) from the first layer that knows (qemu-img's get_block_status). */
export async function mapEntryAt(top: BlockNode, offset: number, bytes: number): Promise<MapEntry> {
  let bs: BlockNode | null = top;
  let depth = 0;
  let status = 0;
  let map: number | undefined;
  let file: BlockNode | undefined;
  for (;;) {
    const ans = await blockStatus(bs, true, offset, bytes);
    bytes = ans.pnum;
    status = ans.status;
    map = ans.map;
    file = ans.file;
    if (status & (BDRV_BLOCK_ZERO | BDRV_BLOCK_DATA)) break;
    bs = bs.cowNode();
    if (!bs) {
      status = 0;
      break;
    }
    depth++;
  }
  const hasOffset = (status & BDRV_BLOCK_OFFSET_VALID) !== 0;
  return {
    start: offset,
    length: bytes,
    depth,
    present: (status & BDRV_BLOCK_ALLOCATED) !== 0,
    zero: (status & BDRV_BLOCK_ZERO) !== 0,
    data: (status & BDRV_BLOCK_DATA) !== 0,
    offset: hasOffset ? map : undefined,
    filename: hasOffset && file ? file.filename : undefined,
  };
}

function mergeable(curr: MapEntry, next: MapEntry): boolean {
  if (curr.length === 0) return false;
  if (
    curr.zero !== next.zero ||
    curr.data !== next.data ||
    curr.depth !== next.depth ||
    curr.present !== next.present ||
    (curr.filename === undefined) !== (next.filename === undefined) ||
    (curr.offset === undefined) !== (next.offset === undefined)
  ) {
    return false;
  }
  if (curr.filename !== undefined && curr.filename !== next.filename) return false;
  if (curr.offset !== undefined && curr.offset + curr.length !== next.offset) return false;
  return true;
}

/** The merged map entries of `bs` from `start`, in order (qemu-img map). */
export async function* mapExtents(bs: BlockNode, opts: MapOptions = {}): AsyncGenerator<MapEntry> {
  const start = opts.start ?? 0;
  let length = bs.totalBytes;
  if (opts.maxLength !== undefined) length = Math.min(start + opts.maxLength, length);
  let curr: MapEntry = { start, length: 0, depth: 0, present: false, zero: false, data: false };
  while (curr.start + curr.length < length) {
    const offset = curr.start + curr.length;
    const next = await mapEntryAt(bs, offset, Math.min(MAP_CHUNK, length - offset));
    if (mergeable(curr, next)) {
      curr.length += next.length;
      continue;
    }
    if (curr.length > 0) {
      yield curr;
      if (opts.human && (!next.data || next.zero)) {
        next.data = false;
        next.zero = true;
      }
    }
    curr = next;
  }
  yield curr;
}
