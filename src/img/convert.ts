/**
 * qemu-img convert as a function: copies the guest view of one or more
 * source images (concatenated) into a target node, with qemu-img's choices
 * of what to read and what to write (qemu-img.c's convert_iteration_sectors
 * and convert_co_write):
 *
 *   - The sources' block status splits the copy into DATA, ZERO and BACKING
 *     runs. With a target backing file (-B), only the top image of each
 *     source is asked: what it does not hold comes from the target's backing
 *     file, so it is not copied (BACKING).
 *   - ZERO runs are never read; on a target that reads as zeros (a new image
 *     without backing file) they are not written either, elsewhere they become
 *     write-zeroes that may unmap.
 *   - DATA is read in large requests and every `minSparse` block of it that is
 *     all zeros is treated as ZERO (-S). minSparse 0 writes every byte as
 *     data, zeros included, so the target ends up fully allocated.
 *   - DATA that the source's driver knows reads as zeros (its readsAsZeros
 *     hint: a vhdx's absent blocks, which block status calls data as QEMU's
 *     driver does) is treated as ZERO without being read: qemu-img reads it
 *     and its scan finds every block zero, so the target is the same.
 *   - Compressed targets (-c) are written one cluster at a time: a run
 *     shorter than a cluster is widened to the whole cluster and read as data,
 *     and a cluster that is all zeros is not written compressed.
 *
 * `createConvertTarget` is the part of img_convert that checks the option
 * combinations and creates the target through img/create.ts.
 */
import { BlockError, type BlockErrorCode } from '../block/errors.js';
import type { BlockNode } from '../block/node.js';
import { hasZeroInit, overlappingWrites } from '../block/driver.js';
import { bdrvPread, bdrvPwrite, bdrvPwriteZeroes } from '../block/io.js';
import { BDRV_BLOCK_DATA, BDRV_BLOCK_ZERO, blockStatusAbove, readsAsZeros } from '../block/status.js';
import { allocBuffer, bufferIsZero, freeBuffer, zeroRunEnd } from '../block/buffers.js';
import { openImage, type Storage } from '../block/open.js';
import { createImage, planCreate } from './create.js';
import { ZeroScout } from './convert-zero-scout.js';
import { createOptionList, formatDriver, loadFormat, optBool, parseOptions, setOption } from './options.js';

export interface ConvertOptions {
  /**
   * Bytes of consecutive zeros that become a hole (qemu-img -S, default 4 KiB);
   * 0 writes every byte, zeros and unallocated ranges included.
   */
  minSparse?: number;
  /**
   * The target reads as zeros before the copy (a new image without backing
   * file), so zero ranges need no write. Ignored when minSparse is 0 or the
   * target has a backing file, as in qemu-img.
   */
  targetHasZeroInit?: boolean;
  /** Write compressed clusters (-c). The target driver must support it. */
  compressed?: boolean;
  /**
   * The target has a backing file (-B): ranges a source's top image does
   * not hold are left unallocated in the target instead of being copied.
   */
  targetHasBacking?: boolean;
  /**
   * Length of the new target's backing file, when known: zeros past it need
   * no write, since the target reads zeros there anyway.
   */
  targetBackingBytes?: number;
  /** Size of each read request (default 2 MiB, at least the target's discard granularity). */
  bufferSize?: number;
  /**
   * Stops the copy between two requests once `aborted` is true (an
   * AbortSignal fits); convert then rejects with ECANCELED. The target keeps
   * what was written so far.
   */
  signal?: { readonly aborted: boolean };
  /**
   * Requests in flight (qemu-img -m, default 8): that many steps are read and
   * scanned at once while one is written. On a target whose writes land in
   * place (raw on a file) without an explicit `bufferSize`, the same buffer
   * memory goes to fewer, larger steps (see inPlaceSteps).
   */
  parallel?: number;
  /**
   * Let steps be written as soon as they are read (qemu-img -W). By default
   * they are written in guest order, so the target's layout does not depend
   * on -m.
   */
  outOfOrder?: boolean;
}

/** Progress callback: bytes of the target done so far, out of `total`. */
export type ProgressFn = (done: number, total: number) => void;

const DEFAULT_BUFFER = 2 * 1024 * 1024;
/** qemu-img's default and largest -m. */
export const DEFAULT_PARALLEL = 8;
export const MAX_PARALLEL = 16;
/**
 * With -c, the clusters one worker reads and compresses at a time. Each
 * batch in flight holds its clusters three times (the worker's buffer and
 * the pool's shared input and output regions): 512 KiB batches keep
 * `convert -c`'s peak RSS about 10 MiB lower than 1 MiB ones (under the
 * 128 MiB aim with a margin), for about a fifth more CPU (twice the
 * messages); 256 KiB ones save no more memory and cost more.
 */
const COMPRESS_BATCH_BYTES = 512 * 1024;
/**
 * With -c, batches in flight per compression thread (the driver's
 * compressThreads): one compressing, one read and waiting for it. More only
 * wait for a thread, each holding its clusters three times. Measured
 * 2026-12-07 (4 GiB raw→qcow2 -c, two threads): four batches instead of
 * eight, peak RSS 122–125 → 118–119 MiB, the same time (5.5–6.0 s).
 */
const COMPRESS_BATCHES_PER_THREAD = 2;
/**
 * In-order writes in flight on a target whose writes land in place: one, as
 * qemu-img. A buffered write holds the file's lock for the whole copy into
 * the page cache, and a second write queued behind it does not sleep there:
 * the kernel lets a waiting writer spin while the lock's owner runs
 * (rwsem_spin_on_owner), which on two cores takes the CPU the reads ahead
 * and the zero scan need. Measured 2026-12-07 (11 interleaved rounds,
 * caches dropped): with two in flight, qcow2→raw 1 GiB spent 410 ms of
 * system time against qemu-img's 290 (median 333 ms against 285); with one,
 * 290 ms (median 305 ms); vhdx→raw and vmdk→raw lost 90 and 40 ms of system
 * time, and their medians did not grow. (On qcow2, whose steps hold main-thread
 * allocation work between writes, the overlap pays: see below.)
 */
const WRITES_IN_FLIGHT_IN_PLACE = 1;
/**
 * Steps with writes in flight on a target that allocates in call order: a
 * qcow2 step's data waits in the host while the next step reserves its
 * clusters.
 */
const WRITES_IN_FLIGHT_CALL_ORDER = 2;
/**
 * Steps in flight on a target that allocates in call order: the two whose
 * writes may overlap (WRITES_IN_FLIGHT_CALL_ORDER) and two read ahead. The
 * target's writes are one stream (the host serialises writes to a file),
 * several times slower than the reads, so more steps only wait for their
 * turn, holding buffer memory and thread-pool threads. Measured 2026-12-07
 * (vdi→qcow2 1 GiB, half allocated, 11 interleaved rounds, caches dropped):
 * 8 steps 194 ms fastest / 222 median, system time 200 ms; 4 steps 181 /
 * 192, 170 ms; 3 steps 179 / 198. The target's layout does not depend on it.
 */
const CALL_ORDER_STEPS = 4;
/**
 * Largest step on a target whose writes land in place (see `inPlaceSteps`).
 * Four default steps: with the default -m 8, two workers of 8 MiB, the
 * buffer memory of eight 2 MiB ones.
 */
const IN_PLACE_STEP_MAX = 8 * 1024 * 1024;
/** Steps read and waiting for their write turn that let the zero read-ahead probe (see convert-zero-scout.ts). */
const SCOUT_MIN_READY = 2;
/** qemu-img's MAX_BUF_SECTORS: the largest read buffer and -S value. */
export const MAX_BUFFER = 16 * 1024 * 1024;
/** Largest range asked about in one block-status call (BDRV_REQUEST_MAX_BYTES, rounded). */
const STATUS_CHUNK = 1 << 30;
/**
 * How long the copy may run without giving the event loop a turn. Storages
 * with synchronous I/O (OPFS access handles, memory) never really await, so
 * without this a cancel message sent to the worker would only be handled
 * after the whole copy.
 */
const YIELD_INTERVAL_MS = 50;

/** Resolves on a later turn of the event loop (a macrotask, so queued messages run first). */
const nextTurn = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

/** Sum of the sources' virtual sizes: the target's size. */
export function convertTotalBytes(sources: BlockNode[]): number {
  return sources.reduce((n, s) => n + s.totalBytes, 0);
}

// ------------------------------------------------------------ target creation

export interface ConvertTargetRequest {
  filename: string;
  /** -O (default raw). */
  format?: string;
  /** -o strings, in order. */
  options?: string[];
  /** -B and -F. */
  backingFile?: string;
  backingFormat?: string;
  /** -c. */
  compressed?: boolean;
  /** Number of source images (a backing file makes no sense with several). */
  sourceCount: number;
  /** Sum of the sources' sizes. */
  size: number;
}

export interface ConvertTarget {
  target: BlockNode;
  /** Options for `convert` that follow from how the target was made. */
  options: Pick<ConvertOptions, 'targetHasZeroInit' | 'targetHasBacking' | 'targetBackingBytes' | 'compressed'>;
}

const fail = (msg: string, code: BlockErrorCode = 'EINVAL'): never => {
  throw new BlockError(code, msg);
};

/**
 * img_convert's checks and bdrv_create: parses -o against the output format,
 * applies -B/-F, refuses the combinations qemu-img refuses (with its
 * messages), creates the image and opens it read/write with its backing chain.
 */
export async function createConvertTarget(storage: Storage, req: ConvertTargetRequest): Promise<ConvertTarget> {
  const { filename, size } = req;
  const format = req.format ?? 'raw';
  await loadFormat(format);
  // Option errors come without the file name, as qemu-img's qemu_opts_do_parse.
  const list = createOptionList(format);
  const values = parseOptions(list, req.options ?? []);
  const supports = (name: string) => list.some((d) => d.name === name);
  if (req.backingFile !== undefined && !supports('backing_file')) fail(`Backing file not supported for file format '${format}'`);
  if (req.backingFormat !== undefined && !supports('backing_fmt')) fail(`Backing file format not supported for file format '${format}'`);
  // -B and -F are set after -o, so they win.
  if (req.backingFile !== undefined) setOption(list, values, 'backing_file', req.backingFile);
  if (req.backingFormat !== undefined) setOption(list, values, 'backing_fmt', req.backingFormat);
  const backingFile = values.get('backing_file');
  if (req.sourceCount > 1 && backingFile !== undefined) {
    fail('Having a backing file for the target makes no sense when concatenating multiple input images');
  }
  if (backingFile !== undefined && values.get('backing_fmt') === undefined) fail('Use of backing file requires explicit backing format');
  if (req.compressed) {
    if (!formatDriver(format).supportsCompressedWrites) fail('Compression not supported for this file format', 'ENOTSUP');
    if ((values.has('encryption') && optBool(values, 'encryption')) || values.has('encrypt.format')) {
      fail('Compression and encryption not supported at the same time', 'ENOTSUP');
    }
    const prealloc = values.get('preallocation');
    if (prealloc !== undefined && prealloc !== 'off') fail('Compression and preallocation not supported at the same time', 'ENOTSUP');
  }
  const converting = `${filename}: error while converting ${format}: `;
  if (backingFile === undefined && values.get('backing_fmt') !== undefined) {
    fail(`${converting}Backing format cannot be used without backing file`);
  }

  // bdrv_create: no "Formatting" line, the backing file is not opened until the target is.
  const plan = await planCreate(storage, {
    filename,
    format,
    options: req.options,
    size,
    backingFile: req.backingFile,
    backingFormat: req.backingFormat,
    unsafe: true,
  }).catch((e: unknown) => {
    throw renameCreateError(e, filename, converting);
  });
  // img_convert sets the size after parsing -o: the sources' total always wins.
  setOption(plan.list, plan.values, 'size', String(size));
  plan.size = size;
  await createImage(storage, plan).catch((e: unknown) => {
    throw renameCreateError(e, filename, converting);
  });

  let target: BlockNode;
  try {
    // As img_convert: the new image opens with the -o options naming key secrets (luks's key-secret).
    const secrets = Object.fromEntries([...plan.values].filter(([k]) => k.endsWith('key-secret')));
    target = await openImage(storage, filename, { format, readOnly: false, ...(Object.keys(secrets).length ? { driverOptions: secrets } : {}) });
  } catch (e) {
    let why = e instanceof Error ? e.message : String(e);
    if (why.startsWith(`${filename}: `)) why = why.slice(filename.length + 2);
    throw new BlockError(e instanceof BlockError ? e.code : 'EIO', `Could not open '${filename}': ${why}`, { cause: e });
  }
  const hasBacking = backingFile !== undefined;
  return {
    target,
    options: {
      compressed: req.compressed,
      targetHasBacking: hasBacking,
      // New images read as zeros (bdrv_has_zero_init) unless a backing file shows through or the driver says otherwise.
      targetHasZeroInit: !hasBacking && hasZeroInit(target),
      targetBackingBytes: target.cowNode()?.totalBytes,
    },
  };
}

/** createImage's "NAME: why" becomes qemu-img convert's "NAME: error while converting FMT: why". */
function renameCreateError(e: unknown, filename: string, converting: string): BlockError {
  const msg = e instanceof Error ? e.message : String(e);
  const why = msg.startsWith(`${filename}: `) ? msg.slice(filename.length + 2) : msg;
  return new BlockError(e instanceof BlockError ? e.code : 'EIO', converting + why, { cause: e });
}

// -------------------------------------------------------------------- the copy

const enum Kind {
  Data,
  Zero,
  /** Left unallocated: the target's backing file shows through. */
  Backing,
}

/** The concatenated sources as one address space. */
class Sources {
  readonly starts: number[] = [];
  readonly total: number;

  constructor(readonly nodes: BlockNode[]) {
    let base = 0;
    for (const s of nodes) {
      this.starts.push(base);
      base += s.totalBytes;
    }
    this.total = base;
  }

  /** Index of the source that holds `pos` (pos < total). */
  part(pos: number): number {
    let i = this.nodes.length - 1;
    while (this.starts[i]! > pos || (this.nodes[i]!.totalBytes === 0 && i > 0)) i--;
    return i;
  }

  /** Reads [pos, pos + n) across source boundaries. */
  async read(pos: number, n: number, buf: Uint8Array): Promise<void> {
    for (let done = 0; done < n; ) {
      const i = this.part(pos + done);
      const off = pos + done - this.starts[i]!;
      const k = Math.min(n - done, this.nodes[i]!.totalBytes - off);
      await bdrvPread(this.nodes[i]!, off, k, buf.subarray(done, done + k));
      done += k;
    }
  }
}

/** What the chain says about the run at `pos`: its kind and end. */
async function runAt(src: Sources, pos: number, withBacking: boolean, backingBytes: number): Promise<{ kind: Kind; end: number }> {
  const i = src.part(pos);
  const node = src.nodes[i]!;
  const off = pos - src.starts[i]!;
  let n = Math.min(STATUS_CHUNK, node.totalBytes - off);
  // Past the target backing file's end zeros are handled differently: split there.
  const postBackingZero = backingBytes >= 0 && pos >= backingBytes;
  if (backingBytes >= 0 && pos < backingBytes) n = Math.min(n, backingBytes - pos);
  const base = withBacking ? node.cowNode() : null;
  const st = await blockStatusAbove(node, base, true, off, n);
  let pnum = st.pnum > 0 ? st.pnum : n;
  let kind: Kind;
  if (st.status & BDRV_BLOCK_ZERO) kind = postBackingZero ? Kind.Backing : Kind.Zero;
  else if (st.status & BDRV_BLOCK_DATA) kind = Kind.Data;
  else kind = withBacking ? Kind.Backing : Kind.Data;
  if (kind === Kind.Data && node.driver.readsAsZeros) {
    // Data the driver knows reads as zeros (an absent vhdx block): what qemu-img does with data its
    // scan finds all zero (a zero write, or none on a zero-initialised target; never left to a backing
    // file), without reading, filling and scanning it. Data runs end where the hint's answer changes.
    const hint = await readsAsZeros(node, off, pnum);
    if (hint) {
      if (hint.zero) kind = Kind.Zero;
      pnum = hint.pnum;
    }
  }
  return { kind, end: pos + pnum };
}

/** One step of the copy: [pos, pos + bytes) of kind `kind`. */
interface Step {
  pos: number;
  kind: Kind;
  bytes: number;
  /** A DATA step the zero scout already read as all zeros: not read again. */
  knownZero?: boolean;
}

/** A step being copied: its buffer and, with -c, its compressed cluster (null: does not shrink). */
interface Job extends Step {
  view: Uint8Array;
  packed: Uint8Array | null | undefined;
}

/** A run of same-kind blocks in a step's data: [start, end) of its buffer, all zeros or not. */
interface Run {
  start: number;
  end: number;
  zero: boolean;
}

/** Walks the sources' runs the way convert_iteration_sectors cuts them. */
class Planner {
  private statusEnd = 0;
  private kind = Kind.Data;

  constructor(
    private readonly src: Sources,
    private readonly withBacking: boolean,
    private readonly backingBytes: number,
    private readonly bufSize: number,
    private readonly clusterSize: number,
  ) {}

  async next(pos: number): Promise<Omit<Step, 'pos'>> {
    if (this.statusEnd <= pos) {
      const r = await runAt(this.src, pos, this.withBacking, this.backingBytes);
      this.kind = r.kind;
      this.statusEnd = r.end;
    }
    let n = this.statusEnd - pos;
    let kind = this.kind;
    if (kind === Kind.Data) n = Math.min(n, this.bufSize);
    const cs = this.clusterSize;
    if (cs > 0) {
      // Compressed clusters are written whole: a shorter run is copied as the whole cluster.
      if (n < cs) {
        n = Math.min(cs, this.src.total - pos);
        kind = Kind.Data;
      } else {
        n -= n % cs;
      }
    }
    return { kind, bytes: n };
  }
}

export async function convert(sources: BlockNode[], target: BlockNode, opts: ConvertOptions = {}, onProgress?: ProgressFn): Promise<void> {
  const minSparse = opts.minSparse ?? 4096;
  const withBacking = opts.targetHasBacking === true;
  const zeroInit = minSparse > 0 && !withBacking && opts.targetHasZeroInit === true;
  // As img_convert: a target that takes only whole compressed clusters (needs_compressed_writes) is copied as with -c.
  const compressed = opts.compressed === true || target.driver.getDriverInfo?.(target)?.needsCompressedWrites === true;
  const src = new Sources(sources);
  const total = src.total;
  if (target.totalBytes < total) throw new BlockError('EINVAL', 'output file is smaller than input file');
  if (compressed && !target.driver.supportsCompressedWrites) throw new BlockError('ENOTSUP', 'Compression not supported for this file format');
  const parallel = opts.parallel ?? DEFAULT_PARALLEL;
  if (!Number.isInteger(parallel) || parallel < 1 || parallel > MAX_PARALLEL) {
    throw new BlockError('EINVAL', `convert: ${parallel} requests in flight (allowed 1 to ${MAX_PARALLEL})`);
  }

  // qemu-img grows its buffer to the target's discard granularity (a qcow2 cluster), up to 16 MiB.
  let bufSize = Math.min(MAX_BUFFER, Math.max(opts.bufferSize ?? DEFAULT_BUFFER, target.limits.pdiscardAlignment ?? 0, minSparse));
  let clusterSize = 0;
  if (compressed) {
    clusterSize = target.driver.getDriverInfo?.(target)?.clusterSize ?? 0;
    if (clusterSize <= 0 || clusterSize > bufSize) throw new BlockError('EINVAL', 'invalid cluster size');
    bufSize = clusterSize;
  }
  const backingBytes = withBacking && opts.targetBackingBytes !== undefined ? opts.targetBackingBytes : -1;
  const flags = compressed ? { compressed: true } : {};
  const signal = opts.signal;
  // A target whose writes land in place (raw on a host file) has one write at a time, as qemu-img
  // (WRITES_IN_FLIGHT_IN_PLACE), in fewer, larger steps (inPlaceSteps). A target that allocates in call
  // order (qcow2) takes the next step's writes once all of this step's are issued (their clusters are
  // then reserved in guest order), so the main thread's turn-around between two steps is no gap in the
  // write stream. Elsewhere one write at a time, as qemu-img.
  const overlap = compressed ? null : overlappingWrites(target);
  let workers = parallel;
  // Progress is reported in qemu-img's steps even when a step is larger (below).
  const progressStep = bufSize;
  if (overlap === 'in-place' && opts.bufferSize === undefined) ({ bufSize, workers } = inPlaceSteps(bufSize, parallel));
  if (overlap === 'call-order') workers = Math.min(workers, CALL_ORDER_STEPS);
  if (compressed) workers = Math.min(workers, COMPRESS_BATCHES_PER_THREAD * Math.max(1, target.driver.compressThreads?.(target) ?? workers));
  const planner = new Planner(src, withBacking, backingBytes, bufSize, clusterSize);
  const turns = new WriteTurns(opts.outOfOrder !== true, overlap === 'in-place' ? WRITES_IN_FLIGHT_IN_PLACE : overlap === 'call-order' ? WRITES_IN_FLIGHT_CALL_ORDER : 1);
  // With -c a step is one cluster: a worker takes several at once, so compressing them is one trip to a pool.
  const batch = compressed ? Math.max(1, Math.floor(COMPRESS_BATCH_BYTES / bufSize)) : 1;
  let yielded = Date.now();
  let nextPos = 0;
  let done = 0;
  let failure: unknown;
  /** Workers whose step is read and waiting for its write turn. */
  let waiting = 0;
  // Where the new target reads as zeros, written zeros ahead of the copy are found while it waits
  // for its writes (convert-zero-scout.ts); -m 1 keeps one request at a time.
  const scout =
    zeroInit && !compressed && parallel > 1
      ? new ZeroScout(
          {
            total,
            runAt: async (pos) => {
              const r = await runAt(src, pos, false, -1);
              return { data: r.kind === Kind.Data, end: r.end };
            },
            read: (pos, n, buf) => src.read(pos, n, buf),
            isZero: bufferIsZero,
          },
          bufSize,
          () => nextPos,
          // Probes only while at least two steps are ready behind the writes in flight, so the
          // writes never wait for a probe.
          () => waiting >= SCOUT_MIN_READY && failure === undefined && signal?.aborted !== true,
          allocBuffer,
          freeBuffer,
        )
      : null;

  /**
   * The next step to copy, or null at the end: the planner is asked by one
   * worker at a time (qemu-img's s->lock around convert_iteration_sectors),
   * so steps are cut exactly as a sequential copy cuts them.
   */
  const take = serialise(async (): Promise<Step[] | null> => {
    const steps: Step[] = [];
    while (steps.length < batch && failure === undefined && nextPos < total) {
      if (signal) {
        if (Date.now() - yielded >= YIELD_INTERVAL_MS) {
          await nextTurn();
          yielded = Date.now();
        }
        if (signal.aborted) throw new BlockError('ECANCELED', `convert: cancelled after ${turns.written} of ${total} bytes`);
      }
      const pos = nextPos;
      const step = await planner.next(pos);
      let { kind, bytes: n } = step;
      if (minSparse === 0 && kind === Kind.Zero) n = Math.min(n, bufSize);
      nextPos = pos + n;
      steps.push({ pos, kind, bytes: n, knownZero: kind === Kind.Data && scout !== null && scout.covers(pos, pos + n) });
    }
    return steps.length ? steps : null;
  });

  /**
   * The requests that write one step, in order: its data (only its
   * non-zero blocks, `runs`, with -S), or zeros where the target does not
   * read as zeros already.
   */
  const stepWrites = (j: Job, runs: Run[] | null): (() => Promise<void>)[] => {
    const { pos, bytes: n, view } = j;
    if (runs) {
      const reqs: (() => Promise<void>)[] = [];
      for (const { start, end, zero } of runs) {
        if (!zero) reqs.push(() => bdrvPwrite(target, pos + start, end - start, view.subarray(start, end)));
        else if (!zeroInit) reqs.push(() => writeZeroes(target, pos + start, end - start));
      }
      return reqs;
    }
    const writeFlags = j.packed === undefined ? flags : { ...flags, precompressed: j.packed };
    if (j.kind === Kind.Data) {
      if (minSparse === 0 || !bufferIsZero(view)) return [() => bdrvPwrite(target, pos, n, view, writeFlags)];
    } else if (j.kind === Kind.Zero && minSparse === 0) {
      // -S 0: zeros are written as data, so the target is fully allocated.
      return [() => bdrvPwrite(target, pos, n, view, writeFlags)];
    }
    // Zeros (read as data and found all zero, or a zero run): nothing to write where the target reads as zeros.
    if (j.kind !== Kind.Backing && !zeroInit) return [() => writeZeroes(target, pos, n)];
    return [];
  };

  /**
   * One of qemu-img's convert coroutines: take a step (with -c, up to
   * `batch` one-cluster steps), read it, compress it, wait for its turn,
   * write it.
   */
  const worker = async (): Promise<void> => {
    const buf = allocBuffer(bufSize * batch);
    try {
      for (;;) {
        const steps = await take();
        if (!steps) return;
        const jobs: Job[] = steps.map((st, i) => ({ ...st, view: buf.subarray(i * bufSize, i * bufSize + Math.min(st.bytes, bufSize)), packed: undefined }));
        for (const j of jobs) {
          if (j.kind === Kind.Data && !j.knownZero) await src.read(j.pos, j.bytes, j.view);
          else if (j.kind === Kind.Zero && minSparse === 0) j.view.fill(0);
        }
        // Compressed clusters are compressed before the turn, so workers (and a pool's threads) compress in parallel.
        const compress = compressed ? target.driver.compressCluster : undefined;
        if (compress) {
          await Promise.all(
            jobs.map(async (j) => {
              const writes = j.kind === Kind.Data ? minSparse === 0 || !bufferIsZero(j.view) : minSparse === 0 && j.kind === Kind.Zero;
              if (writes) j.packed = await compress(target, j.view);
            }),
          );
        }
        // Where a data step's zero blocks are is found before its turn, off the write stream's path.
        const runs = jobs.map((j) =>
          j.kind !== Kind.Data || minSparse === 0 || compressed ? null : j.knownZero ? [{ start: 0, end: j.bytes, zero: true }] : sparseRuns(j.view, j.pos, minSparse),
        );
        const bytes = jobs.reduce((n, j) => n + j.bytes, 0);
        // One more step ready behind the writes: the scout may read ahead meanwhile.
        waiting++;
        void scout?.poke();
        try {
          await turns.wait(jobs[0]!.pos);
        } finally {
          waiting--;
        }
        turns.start(jobs[0]!.pos, bytes);
        const reqs = jobs.flatMap((j, i) => stepWrites(j, runs[i]!));
        if (turns.overlapped) {
          // In place: the turn passes on once the step's first write is issued; its other writes
          // (a step cut by zero blocks) follow one by one, so each step has one write in flight.
          // In call order: once its last write is issued, so the next step's writes come after all of them.
          const passAt = overlap === 'in-place' ? 0 : reqs.length - 1;
          if (reqs.length === 0) turns.issued();
          for (let k = 0; k < reqs.length; k++) {
            const p = reqs[k]!();
            if (k === passAt) turns.issued();
            await p;
          }
        } else {
          for (const req of reqs) await req();
        }
        turns.done(bytes);
        // A larger data step reports each qemu-img step in it, so `-p` prints qemu-img's lines.
        if (onProgress && jobs.length === 1 && jobs[0]!.kind === Kind.Data) {
          for (let k = progressStep; k < bytes; k += progressStep) onProgress(done + k, total);
        }
        done += bytes;
        onProgress?.(done, total);
      }
    } catch (e) {
      if (failure === undefined) failure = e;
      turns.fail(e);
    } finally {
      freeBuffer(buf);
    }
  };

  onProgress?.(0, total);
  try {
    await Promise.all(Array.from({ length: workers }, worker));
  } finally {
    // Its read in flight ends before the caller may close the sources.
    await scout?.stop();
  }
  if (failure !== undefined) throw failure;
  // QEMU counts a source's length in whole sectors, its partial last sector
  // zero-padded: a target that does not read as zeros (luks) gets that padding written.
  const tailEnd = Math.min(target.totalBytes, Math.ceil(total / 512) * 512);
  if (!zeroInit && !compressed && tailEnd > total) await writeZeroes(target, total, tailEnd - total);
}

/**
 * Steps on a target whose writes land in place: the buffer memory of
 * `parallel` steps of `bufSize` (what qemu-img's -m coroutines hold) in
 * fewer, larger steps, at least two workers (one reads while the other
 * writes) and steps of at most IN_PLACE_STEP_MAX. Each step costs the same
 * JavaScript whatever its size (the planner, the request path of every
 * layer, promises), so with the default -m 8 a GiB is 128 steps instead of
 * 512 (1 GiB qcow2->raw: about a fifth fewer instructions). The target's
 * bytes and allocation do not depend on it: zero blocks are found on the
 * guest's -S grid whatever the step.
 */
function inPlaceSteps(bufSize: number, parallel: number): { bufSize: number; workers: number } {
  const budget = bufSize * parallel;
  const workers = Math.min(parallel, Math.max(2, Math.ceil(budget / IN_PLACE_STEP_MAX)));
  const step = Math.max(bufSize, Math.min(IN_PLACE_STEP_MAX, Math.floor(budget / workers / bufSize) * bufSize));
  return { bufSize: step, workers };
}

/** Runs calls of `fn` one after the other, in call order. */
function serialise<T>(fn: () => Promise<T>): () => Promise<T> {
  let tail: Promise<unknown> = Promise.resolve();
  return () => {
    const p = tail.then(fn);
    tail = p.catch(() => undefined);
    return p;
  };
}

/**
 * The order of writes (qemu-img's wr_offs and wait_write_queue). In order
 * (the default), a worker writes its step only once every step before it is
 * written, so the target's layout is the one a sequential copy makes; with
 * -W any worker writes as soon as its data is ready.
 *
 * With `inFlight` above 1 (a target that allocates in call order) a step's
 * turn comes once the steps before it are issued, not written, and at most
 * `inFlight` steps' writes run at once: the next write waits in the host
 * rather than for the main thread to see the previous one end.
 */
class WriteTurns {
  /** Bytes written so far (in order: the written prefix, up to the steps still in flight). */
  written = 0;
  /** End of the prefix whose writes are issued (in order). */
  private issuedEnd = 0;
  /** The step between `start` and `issued`: the next turn comes once its first write is issued. */
  private issuing = 0;
  private running = 0;
  private waiters = new Map<number, { resolve: () => void; reject: (e: unknown) => void }>();
  private failed: { e: unknown } | undefined;

  constructor(
    private readonly inOrder: boolean,
    private readonly inFlight: number,
  ) {}

  /** Steps may overlap (see above): `issued` must follow `start` once the step's first write is started. */
  get overlapped(): boolean {
    return this.inOrder && this.inFlight > 1;
  }

  wait(pos: number): Promise<void> {
    if (this.failed) return Promise.reject(this.failed.e);
    if (!this.inOrder || this.ready(pos)) return Promise.resolve();
    return new Promise((resolve, reject) => this.waiters.set(pos, { resolve, reject }));
  }

  /** The step at `pos` (`bytes` long) had its turn and starts writing. */
  start(pos: number, bytes: number): void {
    this.running++;
    if (this.overlapped) {
      this.issuing = pos + bytes;
    } else if (this.inOrder) {
      this.issuedEnd = pos + bytes;
    }
  }

  /** The overlapped step that last started has its first write issued: the next step may have its turn. */
  issued(): void {
    this.issuedEnd = this.issuing;
    this.wake();
  }

  /** A step's writes are done. */
  done(bytes: number): void {
    this.running--;
    this.written += bytes;
    this.wake();
  }

  /** A worker failed: nobody waits for a turn that will not come. */
  fail(e: unknown): void {
    this.failed ??= { e };
    for (const w of this.waiters.values()) w.reject(e);
    this.waiters.clear();
  }

  private ready(pos: number): boolean {
    return pos === this.issuedEnd && this.issuing <= pos && this.running < this.inFlight;
  }

  private wake(): void {
    const next = this.waiters.get(this.issuedEnd);
    if (next && this.ready(this.issuedEnd)) {
      this.waiters.delete(this.issuedEnd);
      next.resolve();
    }
  }
}

/** Zeroes with unmap (qemu-img opens the target with discard=unmap when -S is not 0). */
async function writeZeroes(target: BlockNode, offset: number, bytes: number): Promise<void> {
  await bdrvPwriteZeroes(target, offset, bytes, { mayUnmap: true });
}

/**
 * The runs of `data` (guest offset `offset`) to write and to leave out with
 * -S `minSparse`: every all-zero block of `minSparse` bytes, aligned to guest
 * offsets, is a zero run.
 */
function sparseRuns(data: Uint8Array, offset: number, minSparse: number): Run[] {
  const len = data.length;
  // A step of written zeros is common (a zero-filled region of a raw file): one scan decides it.
  if (data[0] === 0 && data[len - 1] === 0 && bufferIsZero(data)) return [{ start: 0, end: len, zero: true }];
  // Runs of same-kind blocks: the first block may start off the guest's block grid (a step at an odd
  // offset); from there the run's end is found in one call (the wasm kernel on a step's buffer), since
  // most steps are one run.
  const runs: Run[] = [];
  for (let start = 0; start < len; ) {
    const firstEnd = Math.min(len, start + minSparse - ((offset + start) % minSparse));
    const zero = blockIsZero(data, start, firstEnd);
    const end = zeroRunEnd(data, firstEnd, minSparse, zero);
    runs.push({ start, end, zero });
    start = end;
  }
  return runs;
}

/** Whether data[start, end) is all zeros; a block whose first or last byte is set needs no call into the zero scan (most data blocks). */
function blockIsZero(data: Uint8Array, start: number, end: number): boolean {
  return data[start] === 0 && data[end - 1] === 0 && bufferIsZero(data.subarray(start, end));
}
