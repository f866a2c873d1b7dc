/**
 * Block status: what a range of a node is (data, zeros, allocated here or
 * below, where it lives), and is-allocated-above across a backing chain
 * (QEMU's bdrv_co_block_status and friends).
 *
 * Drivers answer for their own layer; this module adds what the generic layer
 * knows: the end of the image, that an unallocated range of an image with no
 * backing file reads as zeros (and so does one past the end of a shorter
 * backing file), raw pass-through to the file child, and the recursion into
 * the file for metadata-preallocated images.
 */
import type { BlockStatus } from './driver.js';
import type { BlockNode } from './node.js';

/** The range holds data (not known to be zero). */
export const BDRV_BLOCK_DATA = 0x01;
/** The range reads as zeros. */
export const BDRV_BLOCK_ZERO = 0x02;
/** `map` and `file` are valid: the bytes live at `map` in `file`. */
export const BDRV_BLOCK_OFFSET_VALID = 0x04;
/** Driver answer only: ask `file` at `map` instead (raw and filters). */
export const BDRV_BLOCK_RAW = 0x08;
/** The range is allocated in this layer (it does not come from the backing chain). */
export const BDRV_BLOCK_ALLOCATED = 0x10;
/** The answer reaches the end of the image. */
export const BDRV_BLOCK_EOF = 0x20;
/** Driver answer only: data is allocated here but `file` may know it is zero (preallocated metadata). */
export const BDRV_BLOCK_RECURSE = 0x40;
/** The range is stored compressed. */
export const BDRV_BLOCK_COMPRESSED = 0x80;

/**
 * Block status of [offset, offset + bytes) in `bs` alone. `pnum` in the answer
 * is > 0 unless offset is at or past the end of the node.
 */
export async function blockStatus(bs: BlockNode, wantZero: boolean, offset: number, bytes: number): Promise<BlockStatus> {
  const total = bs.totalBytes;
  if (offset >= total) return { status: BDRV_BLOCK_EOF, pnum: 0 };
  bytes = Math.min(bytes, total - offset);
  const drv = bs.driver;

  let ans: BlockStatus;
  if (!drv.blockStatus) {
    // No driver answer: protocols hold data everywhere; formats and filters defer to their file.
    if (drv.kind === 'protocol') {
      ans = { status: BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID, pnum: bytes, map: offset, file: bs };
    } else {
      ans = { status: BDRV_BLOCK_RAW | BDRV_BLOCK_OFFSET_VALID, pnum: bytes, map: offset, file: bs.file?.node };
    }
  } else {
    // Drivers see aligned offsets; widen the head and trim the answer back.
    const align = bs.limits.requestAlignment;
    const alignedOffset = offset - (offset % align);
    const alignedBytes = Math.min(Math.ceil((offset + bytes) / align) * align, total) - alignedOffset;
    ans = await drv.blockStatus(bs, wantZero, alignedOffset, alignedBytes);
    const skew = offset - alignedOffset;
    if (skew) {
      ans = { ...ans, pnum: ans.pnum - skew, map: ans.map !== undefined ? ans.map + skew : undefined };
    }
    ans.pnum = Math.min(ans.pnum, bytes);
    if (ans.pnum <= 0) ans.pnum = Math.min(bytes, align - skew);
  }

  if (ans.status & BDRV_BLOCK_RAW) {
    const file = ans.file;
    if (!file) return { status: BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED, pnum: ans.pnum };
    const inner = await blockStatus(file, wantZero, ans.map ?? offset, ans.pnum);
    if (inner.pnum === 0) {
      // Past the end of the file: a raw view of a short file reads zeros there.
      return { status: BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED | eof(offset, ans.pnum, total), pnum: ans.pnum };
    }
    return { ...inner, status: inner.status & ~BDRV_BLOCK_EOF | eof(offset, inner.pnum, total) };
  }

  let status = ans.status;
  if (status & (BDRV_BLOCK_DATA | BDRV_BLOCK_ZERO)) {
    status |= BDRV_BLOCK_ALLOCATED;
  } else if (drv.supportsBacking) {
    const cow = bs.cowNode();
    if (!cow) status |= BDRV_BLOCK_ZERO;
    else if (wantZero && offset >= cow.totalBytes) status |= BDRV_BLOCK_ZERO;
  }

  let pnum = ans.pnum;
  if (
    wantZero &&
    status & BDRV_BLOCK_RECURSE &&
    ans.file &&
    ans.file !== bs &&
    status & BDRV_BLOCK_DATA &&
    !(status & BDRV_BLOCK_ZERO) &&
    status & BDRV_BLOCK_OFFSET_VALID
  ) {
    const inner = await blockStatus(ans.file, wantZero, ans.map!, pnum);
    if (inner.status & BDRV_BLOCK_EOF && (inner.pnum === 0 || inner.status & BDRV_BLOCK_ZERO)) {
      status |= BDRV_BLOCK_ZERO;
    } else if (inner.pnum > 0) {
      pnum = inner.pnum;
      status |= inner.status & BDRV_BLOCK_ZERO;
    }
  }
  status &= ~(BDRV_BLOCK_RECURSE | BDRV_BLOCK_EOF);
  return { status: status | eof(offset, pnum, total), pnum, map: ans.map, file: ans.file };
}

/**
 * The driver's reads-as-zeros hint for [offset, offset + bytes) of `bs` (see
 * BlockDriver.readsAsZeros), or null when the driver gives none or the range
 * is past the end. Not block status: for copies (convert), never for `map`.
 */
export async function readsAsZeros(bs: BlockNode, offset: number, bytes: number): Promise<{ zero: boolean; pnum: number } | null> {
  const hint = bs.driver.readsAsZeros;
  const total = bs.totalBytes;
  if (!hint || offset >= total || bytes <= 0) return null;
  bytes = Math.min(bytes, total - offset);
  const align = bs.limits.requestAlignment;
  const skew = offset % align;
  const alignedBytes = Math.min(Math.ceil((offset + bytes) / align) * align, total) - (offset - skew);
  const ans = await hint(bs, offset - skew, alignedBytes);
  const pnum = Math.min(ans.pnum - skew, bytes);
  // An answer that does not reach past the head it was widened by says nothing of `offset`.
  return pnum > 0 ? { zero: ans.zero, pnum } : null;
}

/**
 * A readsAsZeros answer for a format whose units (blocks, extents) of `unit`
 * bytes each read as zeros or not as a whole: `isZero(index)` for the unit
 * holding `offset`, and for how many bytes (at most `bytes`) the units from
 * there answer the same.
 */
export function zeroRunByUnit(offset: number, bytes: number, unit: number, isZero: (index: number) => boolean): { zero: boolean; pnum: number } {
  let index = Math.floor(offset / unit);
  const zero = isZero(index);
  let pnum = Math.min(bytes, (index + 1) * unit - offset);
  while (pnum < bytes && isZero(++index) === zero) pnum = Math.min(bytes, pnum + unit);
  return { zero, pnum };
}

function eof(offset: number, pnum: number, total: number): number {
  return offset + pnum >= total ? BDRV_BLOCK_EOF : 0;
}

export interface ChainStatus extends BlockStatus {
  /** Index of the layer that answered, counting `top` as 0. */
  depth: number;
  /** The layer that answered. */
  layer: BlockNode;
}

/**
 * Block status of the chain from `top` down to `base` (excluded unless
 * `includeBase`): the first layer where the range is allocated answers, as
 * QEMU's bdrv_block_status_above. A layer shorter than the one above it reads
 * as zeros past its end, and those zeros count as allocated in it. When no
 * layer holds the range, the answer is the last layer's (ZERO when that layer
 * has no backing file).
 */
export async function blockStatusAbove(
  top: BlockNode,
  base: BlockNode | null,
  wantZero: boolean,
  offset: number,
  bytes: number,
  includeBase = false,
): Promise<ChainStatus> {
  let ans = await blockStatus(top, wantZero, offset, bytes);
  let depth = 0;
  let layer = top;
  if (ans.pnum === 0 || ans.status & BDRV_BLOCK_ALLOCATED || top === base) return { ...ans, depth, layer };
  const eofAt = ans.status & BDRV_BLOCK_EOF ? offset + ans.pnum : -1;
  bytes = ans.pnum;
  for (let p = top.cowNode(); p && (includeBase || p !== base); p = p.cowNode()) {
    depth++;
    layer = p;
    ans = await blockStatus(p, wantZero, offset, bytes);
    if (ans.pnum === 0) {
      ans = { status: BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED, pnum: bytes, file: p };
      break;
    }
    if (ans.status & BDRV_BLOCK_ALLOCATED) {
      ans = { ...ans, status: ans.status & ~BDRV_BLOCK_EOF };
      break;
    }
    if (p === base) break;
    bytes = ans.pnum;
  }
  const status = offset + ans.pnum === eofAt ? ans.status | BDRV_BLOCK_EOF : ans.status & ~BDRV_BLOCK_EOF;
  return { ...ans, status, depth, layer };
}

/**
 * Whether [offset, offset + bytes) is allocated in some layer from `top` down
 * to `base` (`includeBase` includes base itself), and for how many bytes that
 * answer holds (QEMU's bdrv_is_allocated_above).
 */
export async function isAllocatedAbove(
  top: BlockNode,
  base: BlockNode | null,
  includeBase: boolean,
  offset: number,
  bytes: number,
): Promise<{ allocated: boolean; pnum: number; depth: number }> {
  let depth = 0;
  let pnum = bytes;
  const stop = includeBase && base ? base.cowNode() : base;
  for (let p: BlockNode | null = top; p && p !== stop; p = p.cowNode()) {
    const ans = await blockStatus(p, false, offset, pnum);
    const allocated = (ans.status & BDRV_BLOCK_ALLOCATED) !== 0 || ans.pnum === 0;
    if (allocated && ans.pnum > 0) return { allocated: true, pnum: Math.min(ans.pnum, pnum), depth };
    if (ans.pnum === 0) {
      // Past the end of a shorter layer: reads as zeros, counted as allocated in it.
      return { allocated: true, pnum, depth };
    }
    pnum = Math.min(pnum, ans.pnum);
    depth++;
  }
  return { allocated: false, pnum, depth };
}

/** Whether the range is allocated in `bs` itself. */
export async function isAllocated(bs: BlockNode, offset: number, bytes: number): Promise<{ allocated: boolean; pnum: number }> {
  const ans = await blockStatus(bs, false, offset, bytes);
  return { allocated: (ans.status & BDRV_BLOCK_ALLOCATED) !== 0, pnum: ans.pnum };
}
