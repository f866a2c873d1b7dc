/**
 * The `quorum` driver (QEMU's block/quorum.c): N children that should hold
 * the same data. Writes go to every child; a write succeeds when at least
 * `vote-threshold` children took it. Reads (read-pattern `quorum`, the
 * default) read every child and vote: the children whose bytes are equal
 * form a version, the version with most votes wins if it has at least
 * `vote-threshold` of them, and children outside it are reported
 * (QUORUM_REPORT_BAD) and, with `rewrite-corrupted`, overwritten with the
 * winner. Too few successes or votes fail the request (QUORUM_FAILURE).
 * read-pattern `fifo` reads the first child that answers. `blkverify` (two
 * children, threshold 2) turns any difference into a hard error naming the
 * first differing offset.
 *
 * The children are a list (`children: [ … ]` in json:, `children.N.*` in
 * --image-opts); the opener (src/block/open-tree.ts) opens each as an image
 * and attaches it with role `data`, named `children.N`, before `open`.
 * A quorum has no single file below it, so names stored in an image over it
 * cannot be resolved against a directory: `dirname` refuses, as QEMU's
 * bdrv_dirname does ("Cannot generate a base directory for quorum nodes").
 *
 * Ties: QEMU keeps its versions newest first and takes the first with the
 * most votes, so among equal counts the version first seen on the highest
 * child index wins; the same rule applies to the error-code vote. Versions
 * are grouped by comparing bytes (QEMU compares SHA-256 hashes of them).
 */
import { BlockError, describeCode, type BlockErrorCode } from '../block/errors.js';
import { registerDriver, type BlockDriver } from '../block/driver.js';
import type { BlockNode } from '../block/node.js';
import { bdrvFlush, bdrvGetLength, bdrvPread, bdrvPwrite, bdrvPwriteZeroes } from '../block/io.js';
import { BDRV_BLOCK_DATA, BDRV_BLOCK_ZERO, blockStatusAbove } from '../block/status.js';
import { optBool, optNumber, type OptionsTree } from '../block/options-tree.js';

/** QAPI QuorumOpType. */
export type QuorumOpType = 'read' | 'write' | 'flush';

/** Receives QUORUM_REPORT_BAD and QUORUM_FAILURE with QEMU's data members (a QMP monitor emits them). */
export type QuorumEventSink = (event: 'QUORUM_REPORT_BAD' | 'QUORUM_FAILURE', data: Record<string, unknown>) => void;

export interface QuorumOptions {
  threshold: number;
  readPattern: 'quorum' | 'fifo';
  blkverify: boolean;
  rewriteCorrupted: boolean;
}

interface QuorumState extends QuorumOptions {
  events: QuorumEventSink | undefined;
}

const st = (bs: BlockNode) => bs.state<QuorumState>();
const kids = (bs: BlockNode): BlockNode[] => bs.dataChildren.map((c) => c.node);

/**
 * Checks the quorum options as QEMU's quorum_open does, in its order and
 * with its texts. `children` is the number of children given.
 */
export function parseQuorumOptions(t: OptionsTree, children: number): QuorumOptions {
  if (children < 1) throw new BlockError('EINVAL', 'Number of provided children must be 1 or more');
  const threshold = optNumber(t, 'vote-threshold') ?? 0;
  if (threshold < 1) throw new BlockError('EINVAL', "Parameter 'vote-threshold' expects a value >= 1");
  if (threshold > children) throw new BlockError('EINVAL', 'threshold may not exceed children count');
  const pattern = t['read-pattern'];
  if (pattern !== undefined && pattern !== 'quorum' && pattern !== 'fifo') {
    throw new BlockError('EINVAL', 'Please set read-pattern as fifo or quorum');
  }
  const readPattern = pattern ?? 'quorum';
  let blkverify = false;
  let rewriteCorrupted = false;
  if (readPattern === 'quorum') {
    blkverify = optBool(t, 'blkverify') ?? false;
    if (blkverify && (children !== 2 || threshold !== 2)) {
      throw new BlockError('EINVAL', 'blkverify=on can only be set if there are exactly two files and vote-threshold is 2');
    }
    rewriteCorrupted = optBool(t, 'rewrite-corrupted') ?? false;
    if (rewriteCorrupted && blkverify) throw new BlockError('EINVAL', 'rewrite-corrupted=on cannot be used with blkverify=on');
  }
  return { threshold, readPattern, blkverify, rewriteCorrupted };
}

/** QEMU's sector-based extent of a request, as its events carry it. */
function sectors(offset: number, bytes: number): { 'sector-num': number; 'sectors-count': number } {
  const start = Math.floor(offset / 512);
  return { 'sector-num': start, 'sectors-count': Math.ceil((offset + bytes) / 512) - start };
}

function reportBad(bs: BlockNode, type: QuorumOpType, offset: number, bytes: number, child: BlockNode, err?: unknown): void {
  const data: Record<string, unknown> = { type };
  if (err !== undefined) data.error = describeCode(codeOf(err));
  Object.assign(data, { 'node-name': child.nodeName, ...sectors(offset, bytes) });
  st(bs).events?.('QUORUM_REPORT_BAD', data);
}

function reportFailure(bs: BlockNode, offset: number, bytes: number): void {
  st(bs).events?.('QUORUM_FAILURE', { reference: bs.nodeName, ...sectors(offset, bytes) });
}

function codeOf(e: unknown): BlockErrorCode {
  return e instanceof BlockError ? e.code : 'EIO';
}

/** Groups equal items; the group with most members wins, ties to the group first seen latest (QEMU's list order). */
function winner<T>(items: { key: T; index: number }[], same: (a: T, b: T) => boolean): { key: T; members: number[] } | undefined {
  const groups: { key: T; members: number[] }[] = [];
  for (const it of items) {
    const g = groups.find((x) => same(x.key, it.key));
    if (g) g.members.push(it.index);
    else groups.unshift({ key: it.key, members: [it.index] });
  }
  let best: { key: T; members: number[] } | undefined;
  for (const g of groups) if (!best || g.members.length > best.members.length) best = g;
  return best;
}

/** The error the most failed children agree on (QEMU's quorum_vote_error), as a BlockError naming the quorum. */
function voteError(bs: BlockNode, results: (unknown | null)[], what: string): BlockError {
  const failed = results.flatMap((e, index) => (e === null ? [] : [{ key: codeOf(e), index }]));
  const w = winner(failed, (a, b) => a === b);
  const code = w?.key ?? 'EIO';
  const first = w ? results[w.members[w.members.length - 1]!] : undefined;
  const detail = first instanceof Error ? `: ${first.message}` : '';
  const ok = results.filter((e) => e === null).length;
  return new BlockError(code, `${bs.nodeName}: quorum ${what}: ${ok} of ${results.length} children succeeded, vote-threshold is ${st(bs).threshold}${detail}`, {
    qemuMessage: describeCode(code),
  });
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  const n = a.length;
  // Compare 32 bits at a time where the views allow it.
  if (a.byteOffset % 4 === 0 && b.byteOffset % 4 === 0 && n % 4 === 0) {
    const x = new Uint32Array(a.buffer, a.byteOffset, n / 4);
    const y = new Uint32Array(b.buffer, b.byteOffset, n / 4);
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
    return true;
  }
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return false;
  return true;
}

function firstDifference(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

async function readQuorum(bs: BlockNode, offset: number, bytes: number, buf: Uint8Array): Promise<void> {
  const s = st(bs);
  const children = kids(bs);
  const bufs = children.map(() => new Uint8Array(bytes));
  const results = await Promise.all(
    children.map((c, i) =>
      bdrvPread(c, offset, bytes, bufs[i]!).then(
        () => null,
        (e: unknown) => {
          reportBad(bs, 'read', offset, bytes, c, e);
          return e;
        },
      ),
    ),
  );
  const good = results.flatMap((e, index) => (e === null ? [index] : []));
  if (good.length < s.threshold) {
    reportFailure(bs, offset, bytes);
    throw voteError(bs, results, `read of ${bytes} bytes at offset ${offset}`);
  }
  const first = good[0]!;
  if (s.blkverify) {
    // Two children, both read: any difference is fatal.
    const other = good[1]!;
    const at = firstDifference(bufs[first]!, bufs[other]!);
    if (at >= 0) {
      const text = `quorum: offset=${offset} bytes=${bytes} contents mismatch at offset ${offset + at}`;
      throw new BlockError('EIO', `${bs.nodeName}: ${text} (children '${children[first]!.nodeName}' and '${children[other]!.nodeName}')`, { qemuMessage: text });
    }
    buf.set(bufs[first]!);
    return;
  }
  if (good.every((i) => equalBytes(bufs[i]!, bufs[first]!))) {
    buf.set(bufs[first]!);
    return;
  }
  const w = winner(
    good.map((index) => ({ key: bufs[index]!, index })),
    equalBytes,
  )!;
  if (w.members.length < s.threshold) {
    reportFailure(bs, offset, bytes);
    throw new BlockError(
      'EIO',
      `${bs.nodeName}: quorum read of ${bytes} bytes at offset ${offset}: no version of the data has ${s.threshold} votes (the most has ${w.members.length})`,
      { qemuMessage: describeCode('EIO') },
    );
  }
  buf.set(w.key);
  const bad = good.filter((i) => !w.members.includes(i));
  // QEMU reports by version, newest version first, each version's children newest first.
  for (const i of [...bad].reverse()) reportBad(bs, 'read', offset, bytes, children[i]!);
  if (s.rewriteCorrupted) {
    await Promise.all(
      bad.map((i) =>
        bdrvPwrite(children[i]!, offset, bytes, w.key).catch(() => {
          // A correction attempt only: its failure changes nothing for the reader.
        }),
      ),
    );
  }
}

async function readFifo(bs: BlockNode, offset: number, bytes: number, buf: Uint8Array): Promise<void> {
  const children = kids(bs);
  let last: unknown;
  for (const c of children) {
    try {
      await bdrvPread(c, offset, bytes, buf);
      return;
    } catch (e) {
      reportBad(bs, 'read', offset, bytes, c, e);
      last = e;
    }
  }
  throw last;
}

async function writeAll(bs: BlockNode, offset: number, bytes: number, op: (c: BlockNode) => Promise<void>): Promise<void> {
  const results = await Promise.all(
    kids(bs).map((c) =>
      op(c).then(
        () => null,
        (e: unknown) => {
          reportBad(bs, 'write', offset, bytes, c, e);
          return e;
        },
      ),
    ),
  );
  if (results.filter((e) => e === null).length < st(bs).threshold) {
    reportFailure(bs, offset, bytes);
    throw voteError(bs, results, `write of ${bytes} bytes at offset ${offset}`);
  }
}

export const quorumDriver: BlockDriver = {
  name: 'quorum',
  kind: 'filter',
  childList: 'children',
  blockdevOptions: { children: 'any', 'vote-threshold': 'int', '*blkverify': 'bool', '*rewrite-corrupted': 'bool', '*read-pattern': { enum: ['quorum', 'fifo'] } },
  strongRuntimeOpts: ['vote-threshold', 'blkverify', 'rewrite-corrupted', 'read-pattern'],

  async open(bs, options) {
    const s: QuorumState = { ...parseQuorumOptions(options as OptionsTree, bs.dataChildren.length), events: options.quorumEvents as QuorumEventSink | undefined };
    bs.opaque = s;
    // Every child must be as long as the first (QEMU's getlength answers EIO otherwise, so the open fails).
    const lengths = await Promise.all(kids(bs).map((c) => bdrvGetLength(c)));
    const differ = lengths.findIndex((n) => n !== lengths[0]);
    if (differ >= 0) {
      throw new BlockError(
        'EIO',
        `quorum: child ${differ} ('${kids(bs)[differ]!.filename}') is ${lengths[differ]} bytes, child 0 ('${kids(bs)[0]!.filename}') ${lengths[0]} bytes`,
        { qemuMessage: 'Could not refresh total sector count: Input/output error' },
      );
    }
    bs.totalBytes = lengths[0]!;
    const align = Math.max(...kids(bs).map((c) => c.limits.requestAlignment));
    bs.limits = { ...bs.limits, requestAlignment: align };
  },

  async preadv(bs, offset, bytes, buf) {
    if (st(bs).readPattern === 'fifo') await readFifo(bs, offset, bytes, buf);
    else await readQuorum(bs, offset, bytes, buf);
  },

  async pwritev(bs, offset, bytes, buf, flags) {
    await writeAll(bs, offset, bytes, (c) => bdrvPwrite(c, offset, bytes, buf, { fua: flags.fua }));
  },

  async pwriteZeroes(bs, offset, bytes, flags) {
    await writeAll(bs, offset, bytes, (c) => bdrvPwriteZeroes(c, offset, bytes, { mayUnmap: flags.mayUnmap, fua: flags.fua }));
  },

  async flush(bs) {
    const results = await Promise.all(
      kids(bs).map((c) =>
        bdrvFlush(c).then(
          () => null,
          (e: unknown) => {
            reportBad(bs, 'flush', 0, 0, c, e);
            return e;
          },
        ),
      ),
    );
    if (results.filter((e) => e === null).length < st(bs).threshold) throw voteError(bs, results, 'flush');
  },

  async getLength(bs) {
    const lengths = await Promise.all(kids(bs).map((c) => bdrvGetLength(c)));
    if (lengths.some((n) => n !== lengths[0])) throw new BlockError('EIO', `${bs.nodeName}: quorum children differ in length (${lengths.join(', ')} bytes)`);
    return lengths[0]!;
  },

  async blockStatus(bs, wantZero, offset, bytes) {
    // Zero only where every child reads as zeros (the shortest such run); data otherwise (the longest).
    let pnumZero = bytes;
    let pnumData = 0;
    for (const c of kids(bs)) {
      let ans;
      try {
        ans = await blockStatusAbove(c, null, wantZero, offset, bytes);
      } catch (e) {
        reportBad(bs, 'read', offset, bytes, c, e);
        pnumData = bytes;
        break;
      }
      if (ans.status & BDRV_BLOCK_ZERO) pnumZero = Math.min(pnumZero, ans.pnum);
      else pnumData = Math.max(pnumData, ans.pnum);
    }
    return pnumData ? { status: BDRV_BLOCK_DATA, pnum: pnumData } : { status: BDRV_BLOCK_ZERO, pnum: pnumZero };
  },

  /** What the children take, summed (QEMU's bdrv_sum_allocated_file_size); unknown when one child cannot say. */
  async getAllocatedFileSize(bs) {
    const size = async (n: BlockNode): Promise<number | undefined> =>
      n.driver.getAllocatedFileSize ? n.driver.getAllocatedFileSize(n) : n.file ? size(n.file.node) : undefined;
    const sizes = await Promise.all(kids(bs).map(size));
    return sizes.some((n) => n === undefined) ? undefined : sizes.reduce((a: number, b) => a + b!, 0);
  },

  dirname() {
    throw new BlockError('EINVAL', 'Cannot generate a base directory for quorum nodes');
  },
};

registerDriver(quorumDriver);
