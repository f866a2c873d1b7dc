/**
 * The request path: every read, write, write-zeroes, discard, flush and
 * truncate on a node goes through these functions (QEMU's block/io.c).
 *
 * They turn what a caller asks into what a driver accepts: requests are
 * aligned to `limits.requestAlignment` by read-modify-write, split at
 * `limits.maxTransfer`, checked against the node's size and read-only state,
 * and read-modify-write cycles are serialised against every overlapping
 * request (tracked requests), so neither another unaligned write nor an
 * aligned one to the same block loses its bytes.
 * Successful writes are reported to the node's dirty bitmaps and raise its
 * highest written offset (QEMU's bdrv_co_write_req_finish), whoever wrote:
 * a user, a device, or a job.
 */
import { BlockError, hex } from './errors.js';
import type { WriteFlags, PreallocMode } from './driver.js';
import type { BlockNode } from './node.js';
import { allocBuffer, bufferIsZero, freeBuffer } from './buffers.js';
import { truncateDirtyBitmaps } from './dirty-bitmap.js';
import { afterWrite, beforeWrite, hasAfterWriteHooks, hasBeforeWriteHooks } from './before-write.js';
import { bdrvDebugEvent, notifyRequestWaiting, type BlkdebugEvent } from './debug-event.js';
import { alignDown, discardPieces } from './request-split.js';

/** What every write that landed tells the node: its dirty bitmaps, and the highest offset written. */
/** Raises a debug event on `bs` (see debug-event.ts); no await at all unless a driver listens. */
function debugEvent(bs: BlockNode, event: BlkdebugEvent): Promise<void> | undefined {
  return bdrvDebugEvent(bs, event);
}

function writeFinished(bs: BlockNode, offset: number, bytes: number, flags: WriteFlags): void {
  if (flags.copyOnRead) return;
  if (offset + bytes > bs.wrHighestOffset) bs.wrHighestOffset = offset + bytes;
  bs.dirtyBitmaps?.markDirty(offset, bytes);
}

/** Largest bounce buffer used when a driver has no pwriteZeroes (1 MiB, as QEMU's fallback). */
const MAX_ZERO_BOUNCE = 1024 * 1024;

function checkRange(bs: BlockNode, offset: number, bytes: number, what: string): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(bytes) || offset < 0 || bytes < 0) {
    throw new BlockError('EINVAL', `${bs.filename}: invalid ${what} request at offset ${offset}, ${bytes} bytes`);
  }
  if (bs.closed) throw new BlockError('EINVAL', `${bs.filename}: ${what} on a closed node`);
}

function checkInside(bs: BlockNode, offset: number, bytes: number, what: string): void {
  // Only formats have a fixed size; filters pass requests (and file growth) through to their protocol node.
  if (bs.driver.kind === 'format' && offset + bytes > bs.totalBytes) {
    throw new BlockError(
      'EINVAL',
      `${bs.filename}: ${what} at ${hex(offset)} (+${bytes} bytes) is past the end of the image (${bs.totalBytes} bytes)`,
    );
  }
}

function checkWritable(bs: BlockNode, what: string): void {
  if (bs.readOnly) throw new BlockError('EPERM', `${bs.filename}: ${what} refused: the image is opened read-only`);
}

// ------------------------------------------------------------ tracked requests

/**
 * A write in flight (QEMU's BdrvTrackedRequest), listed from the moment it
 * starts, before it waits for anything. A request that widens to the
 * alignment for a read-modify-write cycle is serialising: it waits for every
 * overlapping request in flight, and every request that overlaps it waits
 * until it ends. Without the second half, an aligned write landing between a
 * cycle's read and its write-back would be undone by the cycle's stale copy
 * of the block. A request that is itself waiting (`waitingFor`) is passed
 * over: it will wait for the newcomer when it wakes, and waiting for it
 * could close a cycle (QEMU's rule against deadlock).
 */
interface Tracked {
  start: number;
  end: number;
  serialising: boolean;
  waitingFor: Tracked | null;
  /** Wakes the requests waiting for this one; made only when one waits. */
  waiters: (() => void)[] | null;
}

interface TrackedSet {
  reqs: Set<Tracked>;
  /** Serialising requests in `reqs`: the others look only when there is one. */
  serialising: number;
}

const trackedRequests = new WeakMap<BlockNode, TrackedSet>();

function trackedSet(bs: BlockNode): TrackedSet {
  let t = trackedRequests.get(bs);
  if (!t) trackedRequests.set(bs, (t = { reqs: new Set(), serialising: 0 }));
  return t;
}

/** The first request in flight that `self` (or a read of [start, end) when self is null) must wait for. */
function findConflict(t: TrackedSet, self: Tracked | null, start: number, end: number): Tracked | undefined {
  const serialising = self?.serialising === true;
  for (const r of t.reqs) {
    if (r === self || (!r.serialising && !serialising)) continue;
    if (r.start < end && start < r.end && !r.waitingFor) return r;
  }
  return undefined;
}

function waitFor(r: Tracked): Promise<void> {
  // The caller's request cannot go on: an aio command that started it returns now (qemu-io's coroutine yields).
  notifyRequestWaiting();
  return new Promise<void>((wake) => (r.waiters ??= []).push(wake));
}

/**
 * Whether `self` must wait for a request in flight (QEMU's
 * bdrv_wait_serialising_requests); callers then `await waitConflicts`. Asked
 * first so a request with nothing to wait for goes on in the same turn.
 */
function mustWait(t: TrackedSet, self: Tracked): boolean {
  return t.serialising !== 0 && findConflict(t, self, self.start, self.end) !== undefined;
}

async function waitConflicts(t: TrackedSet, self: Tracked): Promise<void> {
  for (let c = findConflict(t, self, self.start, self.end); c; c = findConflict(t, self, self.start, self.end)) {
    self.waitingFor = c;
    await waitFor(c);
    self.waitingFor = null;
  }
}

/**
 * Runs the write `fn` as a tracked request over [start, end), serialising or
 * not; `fn` gets the request to wait with (mustWait / waitConflicts) right before it
 * reads or writes, as QEMU's request path does before each step.
 */
async function trackedWrite<T>(bs: BlockNode, start: number, end: number, serialising: boolean, fn: (t: TrackedSet, me: Tracked) => Promise<T>): Promise<T> {
  const t = trackedSet(bs);
  const me: Tracked = { start, end, serialising, waitingFor: null, waiters: null };
  t.reqs.add(me);
  if (serialising) t.serialising++;
  try {
    if (serialising && mustWait(t, me)) await waitConflicts(t, me);
    return await fn(t, me);
  } finally {
    t.reqs.delete(me);
    if (serialising) t.serialising--;
    // As QEMU's woken coroutines, the waiters run once this request's caller has seen it complete.
    const waiters = me.waiters;
    if (waiters) setTimeout(() => waiters.forEach((wake) => wake()), 0);
  }
}

/** Reads wait for overlapping serialising requests, so they never see a block half merged. */
async function waitForSerialising(bs: BlockNode, start: number, end: number): Promise<void> {
  const t = trackedRequests.get(bs);
  if (!t || t.serialising === 0) return;
  for (let c = findConflict(t, null, start, end); c; c = findConflict(t, null, start, end)) await waitFor(c);
}

// ------------------------------------------------------------------ reads

async function readAligned(bs: BlockNode, offset: number, bytes: number, buf: Uint8Array): Promise<void> {
  const max = bs.limits.maxTransfer;
  for (let done = 0; done < bytes; ) {
    const n = Math.min(bytes - done, max);
    await bs.driver.preadv(bs, offset + done, n, buf.subarray(done, done + n));
    done += n;
  }
}

/**
 * Reads `bytes` bytes at `offset` of `bs` into `buf` (at least `bytes` long).
 * Any alignment; the range must lie inside the node (protocol nodes may be read
 * past their end and read zeros there).
 */
export async function bdrvPread(bs: BlockNode, offset: number, bytes: number, buf: Uint8Array): Promise<void> {
  checkRange(bs, offset, bytes, 'read');
  checkInside(bs, offset, bytes, 'read');
  if (bytes === 0) return;
  if (buf.length < bytes) throw new BlockError('EINVAL', `${bs.filename}: read buffer shorter than the request`);
  const align = bs.limits.requestAlignment;
  const start = offset - (offset % align);
  const end = offset + bytes;
  const alignedEnd = Math.ceil(end / align) * align;
  await waitForSerialising(bs, start, alignedEnd);
  if (start === offset && alignedEnd === end) return readAligned(bs, offset, bytes, buf.subarray(0, bytes));

  // Head and tail blocks go through a bounce buffer; the aligned middle lands in place.
  const bounce = allocBuffer(align);
  try {
    let pos = offset;
    if (offset !== start) {
      await readAligned(bs, start, align, bounce);
      const n = Math.min(start + align, end) - offset;
      buf.set(bounce.subarray(offset - start, offset - start + n), 0);
      pos += n;
    }
    const midEnd = end - (end % align);
    if (midEnd > pos) {
      await readAligned(bs, pos, midEnd - pos, buf.subarray(pos - offset, midEnd - offset));
      pos = midEnd;
    }
    if (pos < end) {
      await readAligned(bs, pos, align, bounce);
      buf.set(bounce.subarray(0, end - pos), pos - offset);
    }
  } finally {
    freeBuffer(bounce);
  }
}

/**
 * For format drivers: reads the range from the node's backing child, with
 * zeros where there is no backing node or the backing node is shorter (QEMU
 * reads past a short backing file as zeros).
 */
export async function readBacking(bs: BlockNode, offset: number, bytes: number, buf: Uint8Array): Promise<void> {
  const backing = bs.cowNode();
  const have = backing ? Math.max(0, Math.min(bytes, backing.totalBytes - offset)) : 0;
  if (have > 0) await bdrvPread(backing!, offset, have, buf);
  if (have < bytes) buf.fill(0, have, bytes);
}

// ----------------------------------------------------------------- writes

/** The flags a driver sees: copyOnRead belongs to this node's request only. */
function driverFlags(flags: WriteFlags): WriteFlags {
  if (!flags.copyOnRead) return flags;
  const { copyOnRead: _, ...rest } = flags;
  return rest;
}

async function writeAligned(bs: BlockNode, offset: number, bytes: number, buf: Uint8Array, flags: WriteFlags): Promise<void> {
  const drv = bs.driver;
  if (!drv.pwritev) throw new BlockError('ENOTSUP', `${bs.filename}: the ${drv.name} driver cannot write`);
  const max = bs.limits.maxTransfer;
  await debugEvent(bs, 'pwritev');
  try {
    for (let done = 0; done < bytes; ) {
      const n = Math.min(bytes - done, max);
      await drv.pwritev(bs, offset + done, n, buf.subarray(done, done + n), driverFlags(flags));
      done += n;
    }
  } finally {
    bs.writeGen++;
  }
  await debugEvent(bs, 'pwritev_done');
}

/**
 * Writes `bytes` bytes of `buf` at `offset`. Any alignment: partial blocks are
 * read, merged and written back while overlapping requests wait.
 */
export function bdrvPwrite(bs: BlockNode, offset: number, bytes: number, buf: Uint8Array, flags: WriteFlags = {}): Promise<void> {
  return pwrite(bs, offset, bytes, buf, flags, bs.detectZeroes);
}

/**
 * The write path proper. `detectZeroes` is passed in rather than read from
 * the node so the write-zeroes fallback can write its zero buffer without
 * being turned back into write-zeroes, and without touching the node's
 * setting that concurrent requests read.
 */
async function pwrite(
  bs: BlockNode,
  offset: number,
  bytes: number,
  buf: Uint8Array,
  flags: WriteFlags,
  detectZeroes: BlockNode['detectZeroes'],
): Promise<void> {
  checkRange(bs, offset, bytes, 'write');
  checkWritable(bs, 'write');
  checkInside(bs, offset, bytes, 'write');
  if (bytes === 0) return;
  if (buf.length < bytes) throw new BlockError('EINVAL', `${bs.filename}: write buffer shorter than the request`);
  if (flags.compressed && !bs.driver.supportsCompressedWrites) {
    throw new BlockError('ENOTSUP', `${bs.filename}: the ${bs.driver.name} driver does not support compressed writes`);
  }
  const data = buf.subarray(0, bytes);
  // A backup job copies the old data out first (copy-before-write); copy-on-read changes nothing the guest sees.
  if (!flags.copyOnRead && hasBeforeWriteHooks(bs)) await beforeWrite(bs, offset, bytes);

  if (detectZeroes !== 'off' && !flags.compressed && bufferIsZero(data)) {
    return bdrvPwriteZeroes(bs, offset, bytes, { ...flags, mayUnmap: detectZeroes === 'unmap' });
  }

  const align = bs.limits.requestAlignment;
  const start = offset - (offset % align);
  const end = offset + bytes;
  const alignedEnd = Math.ceil(end / align) * align;
  if (start === offset && alignedEnd === end) {
    await trackedWrite(bs, offset, end, false, async (t, me) => {
      if (mustWait(t, me)) await waitConflicts(t, me);
      await writeAligned(bs, offset, bytes, data, flags);
    });
  } else {
    await trackedWrite(bs, start, alignedEnd, true, async (t, me) => {
      const len = alignedEnd - start;
      const bounce = allocBuffer(len);
      try {
        // Only the head and tail blocks need their old contents; one read when they are all there is
        // (QEMU's merged padding reads), which raises the events of both ends it pads.
        const head = offset - start;
        const tail = alignedEnd - end;
        const merged = len === (len > align && head && tail ? 2 * align : align);
        if (head || merged) {
          const n = merged ? len : align;
          if (head) await debugEvent(bs, 'pwritev_rmw_head');
          if (merged && tail) await debugEvent(bs, 'pwritev_rmw_tail');
          if (mustWait(t, me)) await waitConflicts(t, me);
          await readAligned(bs, start, n, bounce.subarray(0, n));
          if (head) await debugEvent(bs, 'pwritev_rmw_after_head');
          if (merged && tail) await debugEvent(bs, 'pwritev_rmw_after_tail');
        }
        if (tail && !merged) {
          await debugEvent(bs, 'pwritev_rmw_tail');
          if (mustWait(t, me)) await waitConflicts(t, me);
          await readAligned(bs, alignedEnd - align, align, bounce.subarray(len - align, len));
          await debugEvent(bs, 'pwritev_rmw_after_tail');
        }
        bounce.set(data, head);
        if (mustWait(t, me)) await waitConflicts(t, me);
        await writeAligned(bs, start, len, bounce, flags);
      } finally {
        freeBuffer(bounce);
      }
    });
  }
  writeFinished(bs, offset, bytes, flags);
  if (!flags.copyOnRead && hasAfterWriteHooks(bs)) await afterWrite(bs, offset, bytes);
}

/**
 * Makes [offset, offset + bytes) read as zeros. Uses the driver's
 * pwriteZeroes on the aligned part and explicit zeros elsewhere (or where the
 * driver says ENOTSUP, unless `noFallback`).
 */
export async function bdrvPwriteZeroes(bs: BlockNode, offset: number, bytes: number, flags: WriteFlags = {}): Promise<void> {
  checkRange(bs, offset, bytes, 'write-zeroes');
  checkWritable(bs, 'write-zeroes');
  checkInside(bs, offset, bytes, 'write-zeroes');
  if (bytes === 0) return;
  if (!flags.copyOnRead && hasBeforeWriteHooks(bs)) await beforeWrite(bs, offset, bytes);
  const drv = bs.driver;
  const align = Math.max(bs.limits.pwriteZeroesAlignment ?? 1, bs.limits.requestAlignment);
  const end = offset + bytes;
  const headEnd = Math.min(end, Math.ceil(offset / align) * align);
  const tailStart = Math.max(headEnd, end - (end % align));

  const writeZeroBuffer = async (o: number, n: number): Promise<void> => {
    const chunk = Math.min(n, MAX_ZERO_BOUNCE);
    const zeros = allocBuffer(chunk);
    zeros.fill(0);
    try {
      for (let done = 0; done < n; ) {
        const k = Math.min(n - done, chunk);
        await pwrite(bs, o + done, k, zeros, flags, 'off');
        done += k;
      }
    } finally {
      freeBuffer(zeros);
    }
  };

  if (headEnd > offset) await writeZeroBuffer(offset, headEnd - offset);
  if (tailStart > headEnd) {
    let done = false;
    if (drv.pwriteZeroes) {
      try {
        const max = Math.min(bs.limits.maxTransfer, bs.limits.maxPwriteZeroes || Infinity);
        const chunk = Math.max(alignDown(max, align), align);
        await trackedWrite(bs, headEnd, tailStart, false, async (t, me) => {
          if (mustWait(t, me)) await waitConflicts(t, me);
          await debugEvent(bs, 'pwritev_zero');
          try {
            for (let o = headEnd; o < tailStart; ) {
              const n = Math.min(tailStart - o, chunk);
              await drv.pwriteZeroes!(bs, o, n, driverFlags(flags));
              o += n;
            }
          } finally {
            bs.writeGen++;
          }
        });
        done = true;
      } catch (e) {
        if (!(e instanceof BlockError && e.code === 'ENOTSUP') || flags.noFallback) throw e;
      }
    } else if (flags.noFallback) {
      throw new BlockError('ENOTSUP', `${bs.filename}: the ${drv.name} driver cannot write zeros efficiently`);
    }
    if (!done) await writeZeroBuffer(headEnd, tailStart - headEnd);
  }
  if (end > tailStart) await writeZeroBuffer(tailStart, end - tailStart);
  writeFinished(bs, offset, bytes, flags);
  if (!flags.copyOnRead && hasAfterWriteHooks(bs)) await afterWrite(bs, offset, bytes);
}

/**
 * Discards the range where the driver can; a hint, so unsupported means
 * "done". The range is cut as QEMU cuts it (request-split.ts): pieces up to
 * the discard alignment, aligned chunks of at most `limits.maxPdiscard`, and
 * the tail; each piece goes to the driver, which may ignore a piece that is
 * not aligned (a filter passes it on, so the node below can still drop the
 * part that is aligned for it). ENOTSUP from the driver is ignored.
 */
export async function bdrvPdiscard(bs: BlockNode, offset: number, bytes: number): Promise<void> {
  checkRange(bs, offset, bytes, 'discard');
  checkWritable(bs, 'discard');
  checkInside(bs, offset, bytes, 'discard');
  // A node without discard=unmap drops the request whole: nothing below it sees it (QEMU's BDRV_O_UNMAP).
  if (bytes === 0 || !bs.unmap || !bs.driver.pdiscard) return;
  if (hasBeforeWriteHooks(bs)) await beforeWrite(bs, offset, bytes);
  const req = bs.limits.requestAlignment;
  const align = Math.max(bs.limits.pdiscardAlignment ?? 1, req);
  const end = Math.min(offset + bytes, bs.totalBytes);
  const drv = bs.driver;
  if (end > offset) {
    await trackedWrite(bs, offset, end, false, async (t, me) => {
      if (mustWait(t, me)) await waitConflicts(t, me);
      try {
        for (const p of discardPieces(offset, end - offset, align, req, bs.limits.maxPdiscard ?? 0)) {
          try {
            await drv.pdiscard!(bs, p.offset, p.bytes);
          } catch (e) {
            if (!(e instanceof BlockError && e.code === 'ENOTSUP')) throw e;
          }
        }
      } finally {
        bs.writeGen++;
      }
    });
  }
  writeFinished(bs, offset, bytes, {});
  if (hasAfterWriteHooks(bs)) await afterWrite(bs, offset, bytes);
}

// ------------------------------------------------------------ VM state

/**
 * The node that keeps `bs`'s VM state (QEMU's bdrv_co_{read,write}v_vmstate):
 * `bs` if its driver has an area, else the one its file child finds.
 */
function vmStateNode(bs: BlockNode, what: string): BlockNode {
  for (let n: BlockNode | null = bs; n; n = n.fileNode()) {
    if (n.closed) throw new BlockError('EINVAL', `${n.filename}: ${what} on a closed node`);
    if (n.driver.saveVmState && n.driver.loadVmState) return n;
  }
  throw new BlockError('ENOTSUP', `${bs.filename}: the ${bs.driver.name} driver keeps no VM state`);
}

/** Writes `bytes` of `buf` at `pos` of the VM state area below `bs`; not a guest write (no dirty bitmaps). */
export async function bdrvSaveVmState(bs: BlockNode, pos: number, bytes: number, buf: Uint8Array): Promise<void> {
  checkRange(bs, pos, bytes, 'vmstate write');
  const n = vmStateNode(bs, 'vmstate write');
  checkWritable(n, 'vmstate write');
  await n.driver.saveVmState!(n, pos, bytes, buf);
}

/** Reads `bytes` at `pos` of the VM state area below `bs` into `buf`. */
export async function bdrvLoadVmState(bs: BlockNode, pos: number, bytes: number, buf: Uint8Array): Promise<void> {
  checkRange(bs, pos, bytes, 'vmstate read');
  const n = vmStateNode(bs, 'vmstate read');
  await n.driver.loadVmState!(n, pos, bytes, buf);
}

/** Flushes the node, then the children it writes to (file, data file). */
export async function bdrvFlush(bs: BlockNode): Promise<void> {
  if (bs.closed) return;
  const gen = bs.writeGen;
  // A format driver's flush writes its cached metadata (QEMU's flush_to_os) every time; a filter's or
  // protocol's reaches the storage (flush_to_disk) only when something was written since the last one.
  const unwritten = bs.flushedGen === gen;
  if (bs.file && !bs.readOnly) await debugEvent(bs.file.node, 'flush_to_os');
  const toStorage = bs.driver.kind !== 'format';
  if (!bs.readOnly && bs.driver.flush && !(bs.noFlush && bs.driver.kind === 'protocol') && !(toStorage && unwritten)) await bs.driver.flush(bs);
  if (bs.file && !bs.readOnly && !bs.noFlush && !unwritten) await debugEvent(bs.file.node, 'flush_to_disk');
  if (bs.file && !bs.file.node.readOnly) await bdrvFlush(bs.file.node);
  if (bs.dataFile && !bs.dataFile.node.readOnly) await bdrvFlush(bs.dataFile.node);
  bs.flushedGen = gen;
}

/** Changes the node's size (QEMU's bdrv_co_truncate). */
export async function bdrvTruncate(bs: BlockNode, size: number, exact = false, prealloc: PreallocMode = 'off'): Promise<void> {
  checkRange(bs, size, 0, 'truncate');
  checkWritable(bs, 'truncate');
  if (!bs.driver.truncate) throw new BlockError('ENOTSUP', `${bs.filename}: the ${bs.driver.name} driver cannot resize images`);
  try {
    await bs.driver.truncate(bs, size, exact, prealloc);
  } finally {
    bs.writeGen++;
  }
  truncateDirtyBitmaps(bs, size);
}

/** Current length of the node in bytes. */
export async function bdrvGetLength(bs: BlockNode): Promise<number> {
  if (bs.driver.getLength) bs.totalBytes = await bs.driver.getLength(bs);
  return bs.totalBytes;
}

/**
 * Empties the image (QEMU's bdrv_make_empty): every cluster dropped, so the
 * node reads through to its backing file. Like any write it is reported to
 * the node's dirty bitmaps (the whole disk changed), then flushed. A failure
 * names the image as `name` (default: the node's file name; qemu-img passes
 * the name it was given, as QEMU's filename of a blkdebug: image).
 */
export async function bdrvMakeEmpty(bs: BlockNode, name = bs.filename): Promise<void> {
  checkRange(bs, 0, bs.totalBytes, 'make-empty');
  checkWritable(bs, 'make-empty');
  if (!bs.driver.makeEmpty) throw new BlockError('ENOTSUP', `${bs.filename}: the ${bs.driver.name} format cannot be emptied`);
  try {
    await bs.driver.makeEmpty(bs);
  } catch (e) {
    // QEMU's bdrv_make_empty names the node (098: "Failed to empty blkdebug:…: Input/output error").
    if (!(e instanceof BlockError) || e.code === 'ENOTSUP') throw e;
    throw new BlockError(e.code, `Failed to empty ${name}: ${e.message}`, { cause: e });
  }
  if (bs.totalBytes > 0) bs.dirtyBitmaps?.markDirty(0, bs.totalBytes);
  await bdrvFlush(bs);
}
