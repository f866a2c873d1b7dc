/**
 * The `fault` filter: fault injection between a format node and its file
 * (in the spirit of QEMU's blkdebug), for crash-consistency and error-path tests.
 *
 * It passes every request through and counts them. Armed with a FaultPlan it
 * can:
 *  - fail every write after the Nth with EIO (`failWritesAfter`);
 *  - cut the power after the Nth write (`dropWritesAfter`): later writes and
 *    flushes never reach the file, exactly as if the machine died there. The
 *    running process keeps seeing its own writes (they live in a volatile
 *    overlay, like a page cache), so a workload runs to its end; the file
 *    below holds exactly the first N writes;
 *  - fail reads, writes or flushes that touch given ranges with a given code.
 *
 * "Writes" are every request that changes the file: pwritev, pwriteZeroes,
 * pdiscard and truncate, counted from 1 in the order they reach the filter.
 *
 * `faultyStorage(storage, plan)` wraps every protocol node a Storage opens
 * in this filter, so `openImage(faultyStorage(fs, plan), name)` puts the
 * filter under the format node (and under a data file) without the format
 * knowing.
 */
import { BlockError, hex, type BlockErrorCode } from '../block/errors.js';
import { registerDriver, type BlockDriver, type WriteFlags } from '../block/driver.js';
import { BlockNode } from '../block/node.js';
import { bdrvGetLength, bdrvPdiscard, bdrvPread, bdrvPwrite, bdrvPwriteZeroes, bdrvTruncate } from '../block/io.js';
import { filterFile, filterPassThrough } from './pass-through.js';
import type { Storage } from '../block/open.js';

export type FaultOp = 'read' | 'write' | 'flush';

/** Fail requests of kind `op` that overlap [offset, offset + bytes) with `code`. */
export interface FaultRule {
  op: FaultOp;
  /** Start of the range (default 0). */
  offset?: number;
  /** Length of the range (default: to the end). */
  bytes?: number;
  code: BlockErrorCode;
  /** How many times the rule fires (default: every time). */
  times?: number;
}

export interface FaultPlan {
  /** Writes numbered above this fail with EIO. */
  failWritesAfter?: number;
  /** Writes numbered above this (and every flush after them) are silently lost: a power cut. */
  dropWritesAfter?: number;
  rules?: FaultRule[];
}

/** What the filter saw; shared by every node a faultyStorage opens. */
export interface FaultCounters {
  reads: number;
  /** Modifying requests seen, failed and dropped ones included. */
  writes: number;
  flushes: number;
  /** Writes that were lost after the cut. */
  dropped: number;
  /** Requests that got an injected error. */
  failed: number;
}

export function newCounters(): FaultCounters {
  return { reads: 0, writes: 0, flushes: 0, dropped: 0, failed: 0 };
}

/** One write kept only in memory after the cut. */
type Volatile = { kind: 'data'; offset: number; data: Uint8Array } | { kind: 'zero'; offset: number; bytes: number };

interface FaultState {
  plan: FaultPlan;
  counters: FaultCounters;
  /** After the cut: writes the process made that the file never got, in order. */
  overlay: Volatile[];
  /** After the cut: the length the process believes the file has. */
  volatileLength: number | undefined;
}

function st(bs: BlockNode): FaultState {
  return bs.state<FaultState>();
}

/** How often each rule fired, across every node sharing the plan. */
const fired = new WeakMap<FaultRule, number>();

function checkRules(bs: BlockNode, op: FaultOp, offset: number, bytes: number): void {
  const s = st(bs);
  for (const rule of s.plan.rules ?? []) {
    if (rule.op !== op) continue;
    const start = rule.offset ?? 0;
    const end = rule.bytes === undefined ? Infinity : start + rule.bytes;
    const hit = op === 'flush' || (offset < end && start < offset + Math.max(bytes, 1));
    if (!hit) continue;
    const n = fired.get(rule) ?? 0;
    if (rule.times !== undefined && n >= rule.times) continue;
    fired.set(rule, n + 1);
    s.counters.failed++;
    throw new BlockError(rule.code, `${bs.filename}: injected ${rule.code} on ${op} at ${hex(offset)} (+${bytes} bytes)`);
  }
}

/**
 * Counts a modifying request and decides its fate: 'pass' to the file,
 * 'drop' into the volatile overlay (after the cut), or an injected error.
 */
function admitWrite(bs: BlockNode, offset: number, bytes: number): 'pass' | 'drop' {
  const s = st(bs);
  const n = ++s.counters.writes;
  const { failWritesAfter, dropWritesAfter } = s.plan;
  if (failWritesAfter !== undefined && n > failWritesAfter) {
    s.counters.failed++;
    throw new BlockError('EIO', `${bs.filename}: injected EIO on write #${n} at ${hex(offset)} (+${bytes} bytes)`);
  }
  checkRules(bs, 'write', offset, bytes);
  if (dropWritesAfter !== undefined && n > dropWritesAfter) {
    if (s.volatileLength === undefined) s.volatileLength = filterFile(bs).totalBytes;
    s.counters.dropped++;
    return 'drop';
  }
  return 'pass';
}

/** Lays the volatile writes over what was read from the file. */
function applyOverlay(s: FaultState, offset: number, bytes: number, buf: Uint8Array): void {
  const end = offset + bytes;
  if (s.volatileLength !== undefined && end > s.volatileLength) {
    buf.fill(0, Math.max(0, s.volatileLength - offset), bytes);
  }
  for (const w of s.overlay) {
    const wEnd = w.offset + (w.kind === 'data' ? w.data.length : w.bytes);
    const from = Math.max(offset, w.offset);
    const to = Math.min(end, wEnd);
    if (from >= to) continue;
    if (w.kind === 'data') buf.set(w.data.subarray(from - w.offset, to - w.offset), from - offset);
    else buf.fill(0, from - offset, to - offset);
  }
}

function growVolatile(s: FaultState, end: number, bs: BlockNode): void {
  s.volatileLength = Math.max(s.volatileLength ?? 0, end);
  bs.totalBytes = Math.max(bs.totalBytes, end);
}

export const faultDriver: BlockDriver = {
  name: 'fault',
  kind: 'filter',
  // Compression is the format's business; the flag only has to reach the file's driver.
  supportsCompressedWrites: true,
  async open(bs, options) {
    const plan = (options.faultPlan as FaultPlan | undefined) ?? {};
    const counters = (options.faultCounters as FaultCounters | undefined) ?? newCounters();
    bs.opaque = { plan, counters, overlay: [], volatileLength: undefined } satisfies FaultState;
    bs.totalBytes = filterFile(bs).totalBytes;
    bs.limits = { ...filterFile(bs).limits };
  },
  async preadv(bs, offset, bytes, buf) {
    const s = st(bs);
    s.counters.reads++;
    checkRules(bs, 'read', offset, bytes);
    await bdrvPread(filterFile(bs), offset, bytes, buf);
    if (s.volatileLength !== undefined) applyOverlay(s, offset, bytes, buf);
  },
  async pwritev(bs, offset, bytes, buf, flags: WriteFlags) {
    const s = st(bs);
    if (admitWrite(bs, offset, bytes) === 'drop') {
      s.overlay.push({ kind: 'data', offset, data: buf.slice(0, bytes) });
      growVolatile(s, offset + bytes, bs);
      return;
    }
    await bdrvPwrite(filterFile(bs), offset, bytes, buf, flags);
    bs.totalBytes = Math.max(bs.totalBytes, filterFile(bs).totalBytes);
  },
  async pwriteZeroes(bs, offset, bytes, flags) {
    const s = st(bs);
    if (admitWrite(bs, offset, bytes) === 'drop') {
      s.overlay.push({ kind: 'zero', offset, bytes });
      growVolatile(s, offset + bytes, bs);
      return;
    }
    await bdrvPwriteZeroes(filterFile(bs), offset, bytes, flags);
    bs.totalBytes = Math.max(bs.totalBytes, filterFile(bs).totalBytes);
  },
  async pdiscard(bs, offset, bytes) {
    // A lost discard leaves the old data, which a discard may do anyway: nothing to keep.
    if (admitWrite(bs, offset, bytes) === 'drop') return;
    await bdrvPdiscard(filterFile(bs), offset, bytes);
  },
  async flush(bs) {
    const s = st(bs);
    s.counters.flushes++;
    checkRules(bs, 'flush', 0, 0);
    // After the cut nothing reaches the disk; the core's flush of the file below
    // then only syncs what was written before the cut.
  },
  async truncate(bs, size, exact, prealloc) {
    const s = st(bs);
    if (admitWrite(bs, size, 0) === 'drop') {
      if (size < (s.volatileLength ?? 0)) s.overlay.push({ kind: 'zero', offset: size, bytes: s.volatileLength! - size });
      s.volatileLength = size;
      bs.totalBytes = size;
      return;
    }
    await bdrvTruncate(filterFile(bs), size, exact, prealloc);
    bs.totalBytes = filterFile(bs).totalBytes;
  },
  async getLength(bs) {
    const s = st(bs);
    if (s.volatileLength !== undefined) return s.volatileLength;
    return bdrvGetLength(filterFile(bs));
  },
  getAllocatedFileSize: filterPassThrough.getAllocatedFileSize,
};

registerDriver(faultDriver);

/** A Storage whose protocol nodes each sit under a fault filter following `plan`. */
export interface FaultyStorage extends Storage {
  readonly inner: Storage;
  readonly plan: FaultPlan;
  /** Counters summed over every node this storage opened. */
  readonly counters: FaultCounters;
}

/**
 * Wraps `inner` so every protocol node it opens is put under a fault filter.
 * Every node shares `plan` and `counters`, so "the Nth write" counts writes to
 * the image and its data file together, in the order they happen.
 */
export function faultyStorage(inner: Storage, plan: FaultPlan = {}, counters: FaultCounters = newCounters()): FaultyStorage {
  return {
    name: inner.name,
    inner,
    plan,
    counters,
    async openProtocol(filename, options) {
      const proto = await inner.openProtocol(filename, options);
      const opts = { readOnly: options.readOnly, faultPlan: plan, faultCounters: counters };
      const bs = new BlockNode(faultDriver, filename, opts);
      bs.attach(proto, 'file');
      await faultDriver.open(bs, opts);
      return bs;
    },
    createFile: inner.createFile?.bind(inner),
    removeFile: inner.removeFile?.bind(inner),
    resolve: (from, reference) => inner.resolve(from, reference),
  };
}
