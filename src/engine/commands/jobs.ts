/**
 * Block job commands: block-stream (QEMU's qmp_block_stream) runs the stream
 * job in the background; query-block-jobs, block-job-cancel, block-job-pause,
 * block-job-resume and job-dismiss manage it. Events as QEMU sends them:
 * JOB_STATUS_CHANGE on every transition, BLOCK_JOB_COMPLETED / _CANCELLED at
 * the end.
 */
import type { BlockNode } from '../../block/node.js';
import { Job, type JobType } from '../../jobs/job.js';
import { runStream } from '../../jobs/stream.js';
import type { Engine } from '../engine.js';
import { genericError, QmpError } from '../qmp-error.js';
import type { QmpCommandTable } from './types.js';

interface Running {
  job: Job;
  device: string;
  done: Promise<void>;
  /** A block job (listed by query-block-jobs, BLOCK_JOB_* events); blockdev-create's job is not. */
  blockJob: boolean;
}

const registry = new WeakMap<Engine, Map<string, Running>>();
function jobsOf(engine: Engine): Map<string, Running> {
  let m = registry.get(engine);
  if (!m) registry.set(engine, (m = new Map()));
  return m;
}

function find(engine: Engine, id: string): Running {
  const r = jobsOf(engine).get(id);
  if (!r) throw new QmpError('DeviceNotActive', `Block job '${id}' not found`);
  return r;
}

/** Waits for a job started by block-stream, block-commit or blockdev-create (for callers of the typed API and tests). */
export function jobDone(engine: Engine, id: string): Promise<void> {
  return find(engine, id).done;
}

export interface StartJobOptions {
  id: string;
  type: JobType;
  /** What query-block-jobs calls `device` (the job id for named jobs, as QEMU). */
  device: string;
  /** Block jobs send BLOCK_JOB_COMPLETED/_CANCELLED and show in query-block-jobs. */
  blockJob: boolean;
  /** QEMU's auto-dismiss: the job goes away once concluded (else job-dismiss does it). */
  autoDismiss: boolean;
  body: (job: Job) => Promise<void>;
}

/**
 * Registers and starts a job; the QMP reply comes at once and the outcome
 * arrives through JOB_STATUS_CHANGE (and, for block jobs, BLOCK_JOB_COMPLETED
 * or BLOCK_JOB_CANCELLED with the error) and query-jobs. Returns the job.
 */
export function startJob(engine: Engine, o: StartJobOptions): Job {
  if (jobsOf(engine).has(o.id)) throw genericError(`Job ID '${o.id}' already in use`);
  const emit = (j: Job) => engine.emit('JOB_STATUS_CHANGE', { id: j.id, status: j.status });
  const job = new Job(o.id, o.type, emit);
  const done = job.start(o.body).finally(() => {
    if (o.blockJob) {
      const cancelled = job.error?.code === 'ECANCELED';
      engine.emit(cancelled ? 'BLOCK_JOB_CANCELLED' : 'BLOCK_JOB_COMPLETED', {
        type: o.type,
        device: o.device,
        len: job.total,
        offset: job.current,
        speed: 0,
        ...(job.error && !cancelled ? { error: job.error.message } : {}),
      });
    }
    if (o.autoDismiss) {
      job.dismiss();
      jobsOf(engine).delete(o.id);
    }
  });
  // Failures surface through the events and query-jobs, not as an unhandled rejection.
  done.catch(() => {});
  jobsOf(engine).set(o.id, { job, device: o.device, done: done.catch(() => {}), blockJob: o.blockJob });
  return job;
}

export const jobCommands: QmpCommandTable = {
  'block-stream': {
    args: { '*job-id': 'str', device: 'str', '*base': 'str', '*base-node': 'str', '*backing-file': 'str', '*speed': 'int', '*on-error': 'str', '*auto-finalize': 'bool', '*auto-dismiss': 'bool' },
    run(engine, args) {
      const device = args.device as string;
      const top = engine.lookup(device);
      const id = (args['job-id'] as string | undefined) ?? device;
      if (args.base !== undefined && args['base-node'] !== undefined) throw genericError("'base' and 'base-node' cannot be specified at the same time");
      let base: BlockNode | null = null;
      if (args['base-node'] !== undefined) base = engine.lookup(args['base-node'] as string, 'node');
      else if (args.base !== undefined) {
        for (let n = top.cowNode(); n; n = n.cowNode()) if (n.filename === args.base || engine.nameOf(n) === args.base) base = n;
        if (!base) throw genericError(`Can't find '${args.base as string}' in the backing chain`);
      }
      if (top.readOnly) throw genericError(`Device '${device}' is read only`, 'EROFS');
      const below = top.cowNode();
      startJob(engine, {
        id,
        type: 'stream',
        device: id,
        blockJob: true,
        autoDismiss: args['auto-dismiss'] !== false,
        body: async (j) => {
          await runStream(j, top, { base, backingFile: args['backing-file'] as string | undefined, closeIntermediates: false });
          if (below && below !== base && below.parents.length === 0) await engine.closeTree(below);
        },
      });
    },
  },
  'query-block-jobs': {
    args: {},
    run(engine) {
      return [...jobsOf(engine).values()].filter((r) => r.blockJob).map(({ job, device }) => ({
        type: job.type,
        device,
        len: job.total,
        offset: job.current,
        busy: job.status === 'running',
        paused: job.status === 'paused',
        speed: 0,
        ready: job.status === 'ready',
        status: job.status,
        'auto-finalize': true,
        'auto-dismiss': true,
        ...(job.error ? { error: job.error.message } : {}),
      }));
    },
  },
  'block-job-cancel': {
    args: { device: 'str', '*force': 'bool' },
    run(engine, args) {
      find(engine, args.device as string).job.cancel();
    },
  },
  'block-job-pause': {
    args: { device: 'str' },
    run(engine, args) {
      find(engine, args.device as string).job.pause();
    },
  },
  'block-job-resume': {
    args: { device: 'str' },
    run(engine, args) {
      find(engine, args.device as string).job.resumeJob();
    },
  },
  'job-dismiss': {
    args: { id: 'str' },
    run(engine, args) {
      const r = find(engine, args.id as string);
      if (r.job.status !== 'concluded') throw genericError(`Job '${r.job.id}' in state '${r.job.status}' cannot accept command verb 'dismiss'`);
      r.job.dismiss();
      jobsOf(engine).delete(args.id as string);
    },
  },
  'query-jobs': {
    args: {},
    run: (engine) => [...jobsOf(engine).values()].map(({ job }) => job.info()),
  },
  'job-cancel': {
    args: { id: 'str' },
    run(engine, args) {
      find(engine, args.id as string).job.cancel();
    },
  },
  /**
   * Accepted and ignored: jobs here copy as fast as the storage allows (QEMU's
   * rate limit exists to spare a running guest's I/O, and there is no guest).
   */
  'block-job-set-speed': {
    args: { device: 'str', speed: 'int' },
    run(engine, args) {
      find(engine, args.device as string);
      if ((args.speed as number) < 0) throw genericError("Parameter 'speed' expects a non-negative value");
    },
  },
  /**
   * No job here ever reaches 'ready' (there is no mirror, and an active
   * commit is refused by block-commit), so completing is always refused with
   * QEMU's message for a job in another state.
   */
  'job-complete': {
    args: { id: 'str' },
    run(engine, args) {
      const r = find(engine, args.id as string);
      throw genericError(`Job '${r.job.id}' in state '${r.job.status}' cannot accept command verb 'complete'`);
    },
  },
  'block-job-complete': {
    args: { device: 'str' },
    run(engine, args) {
      const r = find(engine, args.device as string);
      throw genericError(`Job '${r.job.id}' in state '${r.job.status}' cannot accept command verb 'complete'`);
    },
  },
};
