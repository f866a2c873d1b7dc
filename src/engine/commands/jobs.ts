/**
 * Job commands, as QEMU's job-qmp.c and blockdev.c answer them: block-stream
 * starts a stream job; query-jobs / query-block-jobs list jobs; the job-*
 * verbs (pause, resume, cancel, complete, finalize, dismiss) take a job id,
 * the block-job-* verbs a block job's device (its id); block-job-set-speed
 * sets the rate limit. Every verb is checked by the job's state machine
 * (src/jobs/job.ts) with QEMU's messages.
 *
 * Jobs start through `startJob`, which looks the type up in the job-type
 * registry (src/jobs/registry.ts) and turns the job's life into QMP events:
 * JOB_STATUS_CHANGE on every transition, and for block jobs BLOCK_JOB_READY,
 * BLOCK_JOB_PENDING, BLOCK_JOB_COMPLETED, BLOCK_JOB_CANCELLED and
 * BLOCK_JOB_ERROR, with QEMU's members.
 */
import type { BlockNode } from '../../block/node.js';
import { Job } from '../../jobs/job.js';
import { jobType } from '../../jobs/registry.js';
import '../../jobs/index.js';
import type { Engine } from '../engine.js';
import type { Args } from '../qapi-args.js';
import { genericError, QmpError } from '../qmp-error.js';
import type { QmpCommandTable } from './types.js';
import type { NodeUse } from '../../block/permissions.js';
import { generatedNodeName } from '../../block/node.js';
import { addWriteObserver, type BdrvDirtyBitmap } from '../../block/dirty-bitmap.js';
import { PERM_CONSISTENT_READ, PERM_WRITE_UNCHANGED } from '../../block/child.js';

interface Running {
  job: Job;
  device: string;
  blockJob: boolean;
  done: Promise<void>;
  /** Nodes the job works on; other block jobs may not use them until it concluded (QEMU's op blockers). */
  nodes: BlockNode[];
  /** A node the job makes no root node while it runs: QEMU puts the job's filter above it (mirror_top, copy-before-write), or holds it as the job's main node (commit). */
  filtered?: BlockNode;
  /** The filter node QEMU's version of the job inserts, as query-named-block-nodes shows it. */
  filter?: JobFilterNode;
}

/**
 * A filter node QEMU 7.2 inserts while a job runs (mirror_top for mirror and
 * active commit, commit_top for commit, copy-before-write for backup,
 * copy-on-read for stream). blocktab's jobs do their work without one; the
 * engine only reports it, under QEMU's name for it, in query-named-block-nodes.
 */
export interface JobFilter {
  /** QEMU's driver name. */
  driver: 'mirror_top' | 'commit_top' | 'copy-before-write' | 'copy-on-read';
  /** The node it sits on. */
  child: BlockNode;
  /** filter-node-name, else a generated "#blockNNN" name. */
  name?: string;
  /** commit_top is opened read-only. */
  readOnly?: boolean;
  /** The node whose chain passes through the filter on its way to `child` (commit: the overlay of top). */
  overlay?: BlockNode;
  /** The filter node's own bitmaps, newest first, kept by its job (backup's copy-before-write has two). */
  dirtyBitmaps?: readonly BdrvDirtyBitmap[];
}

export type JobFilterNode = Required<Omit<JobFilter, 'overlay' | 'dirtyBitmaps'>> &
  Pick<JobFilter, 'overlay' | 'dirtyBitmaps'> & {
    /**
     * QEMU's implicit filter: inserted without a filter-node-name (backup names its copy-before-write itself, so
     * that one never is). Device-level queries look through implicit filters and show explicit ones.
     */
    implicit: boolean;
    /**
     * QEMU's wr_highest_offset of the filter node: the end of the highest write that passed through it. blocktab's
     * writes go to the child directly; every write that reaches the child while the filter sits above it would have
     * passed through it (the job's own copy-on-read writes do not count on the child either).
     */
    wrHighestOffset: number;
  };

const registry = new WeakMap<Engine, Map<string, Running>>();
function jobsOf(engine: Engine): Map<string, Running> {
  let m = registry.get(engine);
  if (!m) registry.set(engine, (m = new Map()));
  return m;
}

/** QEMU's find_job: any job by id (job-* verbs). */
function findJob(engine: Engine, id: string): Running {
  const r = jobsOf(engine).get(id);
  if (!r) throw genericError('Job not found');
  return r;
}

/** QEMU's find_block_job: a block job by its device (= id) (block-job-* verbs). */
function findBlockJob(engine: Engine, device: string): Running {
  const r = jobsOf(engine).get(device);
  if (!r || !r.blockJob) throw new QmpError('DeviceNotActive', `Block job '${device}' not found`);
  return r;
}

/** Waits until a job started by block-stream, block-commit or blockdev-create concluded (for the typed API and tests). */
export function jobDone(engine: Engine, id: string): Promise<void> {
  return findJob(engine, id).done;
}

/**
 * Cancels every job that has not concluded, forcibly, and waits until each
 * did (QEMU's job_cancel_sync_all when it quits): a job sleeping under a speed
 * limit does not keep the monitor from ending.
 */
export async function cancelAllJobs(engine: Engine): Promise<void> {
  const running = [...jobsOf(engine).values()].filter((r) => r.job.status !== 'concluded' && r.job.status !== 'null');
  for (const r of running) r.job.cancel(true);
  await Promise.all(running.map((r) => r.done.catch(() => undefined)));
}

/** The engine's jobs, in start order (query-jobs' order). */
export function engineJobs(engine: Engine): Job[] {
  return [...jobsOf(engine).values()].map((r) => r.job);
}

/**
 * QEMU's op blocker for block jobs: a node a running block job works on
 * cannot be the subject of another one ("Node … is busy").
 */
export function checkNotInJob(engine: Engine, bs: BlockNode): void {
  const job = blockingJob(engine, bs);
  if (job) throw genericError(`Node '${engine.deviceOf(bs) ?? engine.nameOf(bs)}' is busy: block device is in use by block job: ${job.type}`, 'EBUSY');
}

/** The running job whose op blockers cover `bs` (QEMU's bdrv_op_is_blocked), if any. */
export function blockingJob(engine: Engine, bs: BlockNode): Job | undefined {
  for (const r of jobsOf(engine).values()) {
    if (r.job.status !== 'concluded' && r.job.status !== 'null' && r.nodes.includes(bs)) return r.job;
  }
  return undefined;
}

/** Whether a running job has its filter node above `bs` (QEMU's mirror and backup insert one), so `bs` is no root node. */
export function hasJobFilter(engine: Engine, bs: BlockNode): boolean {
  for (const r of jobsOf(engine).values()) {
    if (r.filtered === bs && r.job.status !== 'concluded' && r.job.status !== 'null') return true;
  }
  return false;
}

/** A job QEMU runs under a `driver` filter above `child`: the node query-named-block-nodes shows, and `child` no root node. */
export function filterAbove(driver: JobFilter['driver'], child: BlockNode, args: Args): { filtered: BlockNode; filter: JobFilter } {
  return { filtered: child, filter: { driver, child, name: args['filter-node-name'] as string | undefined } };
}

/** The filter nodes of the jobs that have not concluded, each with its creation stamp (see EngineGraph.createdAt). */
export function jobFilterNodes(engine: Engine): JobFilterNode[] {
  const out: JobFilterNode[] = [];
  for (const r of jobsOf(engine).values()) if (r.filter && r.job.status !== 'concluded' && r.job.status !== 'null') out.push(r.filter);
  return out;
}

/** QEMU's id_wellformed. */
const ID_RE = /^[A-Za-z][A-Za-z0-9_.-]*$/;

export interface StartJobOptions<O> {
  id: string;
  /** A registered job type (src/jobs/registry.ts). */
  type: string;
  /** What query-block-jobs calls `device` (the job id, as QEMU). */
  device: string;
  /** The job type's options (its descriptor builds the driver from them). */
  options: O;
  /** QEMU's auto-finalize (default true). */
  autoFinalize?: boolean;
  /** QEMU's auto-dismiss (default true). */
  autoDismiss?: boolean;
  /** Speed limit, bytes/s. */
  speed?: number;
  /** Nodes the job works on (blocked for other block jobs while it runs). */
  nodes?: BlockNode[];
  /** The node QEMU's version of the job puts a filter above, or holds as its main node (see hasJobFilter). */
  filtered?: BlockNode;
  /** The filter node QEMU's version of the job inserts (reported by query-named-block-nodes until the job concludes). */
  filter?: JobFilter;
  /** What the job takes and shares on the nodes it uses (QEMU's job children and backends), held until it concludes. */
  uses?: { node: BlockNode; use: NodeUse }[];
}

/**
 * Registers and starts a job; the QMP reply comes at once and the outcome
 * arrives through the events and query-jobs. Returns the job.
 */
/** QEMU's job_create id checks. */
export function checkNewJobId(engine: Engine, id: string): void {
  if (!ID_RE.test(id)) throw genericError(`Invalid job ID '${id}'`);
  if (jobsOf(engine).has(id)) throw genericError(`Job ID '${id}' already in use`);
}

export function startJob<O>(engine: Engine, o: StartJobOptions<O>): Job {
  const desc = jobType<O>(o.type);
  checkNewJobId(engine, o.id);
  if (o.speed !== undefined && o.speed < 0) throw genericError("Parameter 'speed' expects a non-negative value");
  const driver = desc.driver(o.options);
  let releaseUses: (() => void)[] = [];
  const blockJobData = (j: Job) => ({ type: j.type, device: o.device, len: j.total, offset: j.current, speed: j.speed });
  const block = desc.blockJob;
  const job = new Job(o.id, desc.qapiType ?? desc.type, {
    autoFinalize: o.autoFinalize,
    autoDismiss: o.autoDismiss,
    speed: o.speed,
    readyPhase: desc.readyPhase,
    events: {
      status: (j) => {
        // The job lets go of its nodes as it concludes (QEMU drops its children and backends in clean-up).
        if (j.status === 'concluded' || j.status === 'null') for (const release of releaseUses.splice(0)) release();
        engine.emit('JOB_STATUS_CHANGE', { id: j.id, status: j.status });
        if (j.status === 'null') jobsOf(engine).delete(j.id);
      },
      ready: block ? (j) => engine.emit('BLOCK_JOB_READY', blockJobData(j)) : undefined,
      // QEMU announces the pending state only when the user has to finalize.
      pending: block && o.autoFinalize === false ? (j) => engine.emit('BLOCK_JOB_PENDING', { type: j.type, id: j.id }) : undefined,
      completed: block ? (j) => engine.emit('BLOCK_JOB_COMPLETED', { ...blockJobData(j), ...(j.error ? { error: j.error.message } : {}) }) : undefined,
      cancelled: block ? (j) => engine.emit('BLOCK_JOB_CANCELLED', blockJobData(j)) : undefined,
      ioError: block ? (_j, operation, _e, action) => engine.emit('BLOCK_JOB_ERROR', { device: o.device, operation, action }) : undefined,
    },
  });
  let stopFilterCount: (() => void) | undefined;
  const entry: Running = { job, device: o.device, blockJob: block, done: Promise.resolve(), nodes: o.nodes ?? [], filtered: o.filtered };
  if (o.filter) {
    const f: JobFilterNode = { readOnly: false, ...o.filter, name: o.filter.name ?? generatedNodeName(), implicit: o.filter.name === undefined, wrHighestOffset: 0 };
    entry.filter = f;
    engine.stampCreated(f);
    stopFilterCount = addWriteObserver(f.child, {
      markDirty(offset, bytes) {
        if (offset + bytes > f.wrHighestOffset) f.wrHighestOffset = offset + bytes;
      },
    });
  }
  releaseUses = (o.uses ?? []).map(({ node, use }) => engine.addUse(node, use));
  jobsOf(engine).set(o.id, entry);
  // Failures surface through the events and query-jobs, not as an unhandled rejection.
  entry.done = job
    .start(driver)
    .catch(() => {})
    .finally(() => stopFilterCount?.());
  return job;
}

/** QAPI BlockJobInfo, members in the schema's order. */
function blockJobInfo(r: Running): Record<string, unknown> {
  const { job } = r;
  return {
    type: job.type,
    device: r.device,
    len: job.total,
    offset: job.current,
    busy: job.busy,
    paused: job.paused,
    speed: job.speed,
    'io-status': job.ioStatus,
    ready: job.status === 'ready' || job.status === 'standby',
    status: job.status,
    'auto-finalize': job.autoFinalize,
    'auto-dismiss': job.autoDismiss,
    ...(job.error ? { error: job.error.message } : {}),
  };
}

/** on-error policies: only QEMU's default (report the error and fail the job) is implemented. */
export function checkOnError(v: unknown): void {
  if (v !== undefined && v !== 'report') throw genericError(`on-error '${String(v)}' is not supported here (only 'report')`, 'ENOTSUP');
}

export const jobCommands: QmpCommandTable = {
  'block-stream': {
    args: {
      '*job-id': 'str',
      device: 'str',
      '*base': 'str',
      '*base-node': 'str',
      '*backing-file': 'str',
      '*bottom': 'str',
      '*speed': 'int',
      '*on-error': { enum: ['report', 'ignore', 'enospc', 'stop', 'auto'] },
      '*filter-node-name': 'str',
      '*auto-finalize': 'bool',
      '*auto-dismiss': 'bool',
    },
    run(engine, args) {
      const device = args.device as string;
      const top = engine.lookup(device);
      const id = (args['job-id'] as string | undefined) ?? device;
      if (args.base !== undefined && args['base-node'] !== undefined) throw genericError("'base' and 'base-node' cannot be specified at the same time");
      if (args.bottom !== undefined) {
        engine.lookup(args.bottom as string, 'node');
        throw genericError("'bottom' is not supported here", 'ENOTSUP');
      }
      checkOnError(args['on-error']);
      let base: BlockNode | null = null;
      if (args['base-node'] !== undefined) base = engine.lookup(args['base-node'] as string, 'node');
      else if (args.base !== undefined) {
        for (let n = top.cowNode(); n; n = n.cowNode()) if (n.filename === args.base || engine.nameOf(n) === args.base) base = n;
        if (!base) throw genericError(`Can't find '${args.base as string}' in the backing chain`);
      }
      for (let n: BlockNode | null = top; n && n !== base; n = n.cowNode()) checkNotInJob(engine, n);
      if (top.readOnly) throw genericError(`Device '${device}' is read only`, 'EROFS');
      const nodes: BlockNode[] = [];
      for (let n: BlockNode | null = top; n && n !== base; n = n.cowNode()) nodes.push(n);
      startJob(engine, {
        nodes,
        // QEMU 7.2's stream puts a copy-on-read filter above the top while it runs.
        ...filterAbove('copy-on-read', top, args),
        id,
        type: 'stream',
        device: id,
        speed: args.speed as number | undefined,
        autoFinalize: args['auto-finalize'] as boolean | undefined,
        autoDismiss: args['auto-dismiss'] as boolean | undefined,
        // QEMU 7.2's stream: each node it copies from (below the top, down to base) lets others read and write unchanged data only.
        uses: nodes.slice(1).map((node) => ({ node, use: { who: `stream job '${id}'`, role: 'intermediate node', perm: 0, shared: PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED } })),
        options: {
          top,
          base,
          // QEMU writes base's filename as the node has it, unless told otherwise.
          backingFile: (args['backing-file'] as string | undefined) ?? base?.filename,
          dropped: async (below: BlockNode) => {
            // Nodes the monitor added stay until blockdev-del, as in QEMU.
            if (below.parents.length === 0 && !engine.isMonitorOwned(below)) await engine.closeTree(below);
          },
        },
      });
    },
  },
  'query-block-jobs': {
    args: {},
    run: (engine) => [...jobsOf(engine).values()].filter((r) => r.blockJob).map(blockJobInfo),
  },
  'query-jobs': {
    args: {},
    run: (engine) => [...jobsOf(engine).values()].map(({ job }) => job.info()),
  },

  // ------------------------------------------------------ block-job-* (by device)
  'block-job-cancel': {
    args: { device: 'str', '*force': 'bool' },
    run(engine, args) {
      const r = findBlockJob(engine, args.device as string);
      const force = args.force === true;
      if (r.job.userPaused && !force) throw genericError(`The block job for device '${args.device as string}' is currently paused`);
      r.job.userCancel(force);
    },
  },
  'block-job-pause': {
    args: { device: 'str' },
    run(engine, args) {
      findBlockJob(engine, args.device as string).job.userPause();
    },
  },
  'block-job-resume': {
    args: { device: 'str' },
    run(engine, args) {
      findBlockJob(engine, args.device as string).job.userResume();
    },
  },
  'block-job-complete': {
    args: { device: 'str' },
    run(engine, args) {
      findBlockJob(engine, args.device as string).job.complete();
    },
  },
  'block-job-finalize': {
    args: { id: 'str' },
    run(engine, args) {
      findBlockJob(engine, args.id as string).job.finalize();
    },
  },
  'block-job-dismiss': {
    args: { id: 'str' },
    run(engine, args) {
      findBlockJob(engine, args.id as string).job.dismiss();
    },
  },
  /** The speed is a rate limit in bytes/s as QEMU's (0: unlimited); a faster speed wakes a throttled job at once. */
  'block-job-set-speed': {
    args: { device: 'str', speed: 'int' },
    run(engine, args) {
      findBlockJob(engine, args.device as string).job.setSpeed(args.speed as number);
    },
  },

  // ---------------------------------------------------------- job-* (by id)
  'job-pause': {
    args: { id: 'str' },
    run(engine, args) {
      findJob(engine, args.id as string).job.userPause();
    },
  },
  'job-resume': {
    args: { id: 'str' },
    run(engine, args) {
      findJob(engine, args.id as string).job.userResume();
    },
  },
  'job-cancel': {
    args: { id: 'str' },
    run(engine, args) {
      findJob(engine, args.id as string).job.userCancel(true);
    },
  },
  'job-complete': {
    args: { id: 'str' },
    run(engine, args) {
      findJob(engine, args.id as string).job.complete();
    },
  },
  'job-finalize': {
    args: { id: 'str' },
    run(engine, args) {
      findJob(engine, args.id as string).job.finalize();
    },
  },
  'job-dismiss': {
    args: { id: 'str' },
    run(engine, args) {
      findJob(engine, args.id as string).job.dismiss();
    },
  },
};
