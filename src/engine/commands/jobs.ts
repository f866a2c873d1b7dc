/**
 * Block job commands: block-stream (QEMU's qmp_block_stream) runs the stream
 * job in the background; query-block-jobs, block-job-cancel, block-job-pause,
 * block-job-resume and job-dismiss manage it. Events as QEMU sends them:
 * JOB_STATUS_CHANGE on every transition, BLOCK_JOB_COMPLETED / _CANCELLED at
 * the end.
 */
import type { BlockNode } from '../../block/node.js';
import { Job } from '../../jobs/job.js';
import { runStream } from '../../jobs/stream.js';
import type { Engine } from '../engine.js';
import { genericError, QmpError } from '../qmp-error.js';
import type { QmpCommandTable } from './types.js';

interface Running {
  job: Job;
  device: string;
  done: Promise<void>;
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

/** Waits for a job started by block-stream (for callers of the typed API and tests). */
export function jobDone(engine: Engine, id: string): Promise<void> {
  return find(engine, id).done;
}

export const jobCommands: QmpCommandTable = {
  'block-stream': {
    args: { '*job-id': 'str', device: 'str', '*base': 'str', '*base-node': 'str', '*backing-file': 'str', '*speed': 'int', '*on-error': 'str', '*auto-finalize': 'bool', '*auto-dismiss': 'bool' },
    run(engine, args) {
      const device = args.device as string;
      const top = engine.lookup(device);
      const id = (args['job-id'] as string | undefined) ?? device;
      if (jobsOf(engine).has(id)) throw genericError(`Job ID '${id}' already in use`);
      if (args.base !== undefined && args['base-node'] !== undefined) throw genericError("'base' and 'base-node' cannot be specified at the same time");
      let base: BlockNode | null = null;
      if (args['base-node'] !== undefined) base = engine.lookup(args['base-node'] as string, 'node');
      else if (args.base !== undefined) {
        for (let n = top.cowNode(); n; n = n.cowNode()) if (n.filename === args.base || engine.nameOf(n) === args.base) base = n;
        if (!base) throw genericError(`Can't find '${args.base as string}' in the backing chain`);
      }
      if (top.readOnly) throw genericError(`Device '${device}' is read only`, 'EROFS');
      const emit = (j: Job) => engine.emit('JOB_STATUS_CHANGE', { id: j.id, status: j.status });
      const job = new Job(id, 'stream', emit);
      const below = top.cowNode();
      const done = job
        .start((j) => runStream(j, top, { base, backingFile: args['backing-file'] as string | undefined, closeIntermediates: false }))
        .then(async () => {
          if (below && below !== base && below.parents.length === 0) await engine.closeTree(below);
        })
        .finally(() => {
          const cancelled = job.error?.code === 'ECANCELED';
          engine.emit(cancelled ? 'BLOCK_JOB_CANCELLED' : 'BLOCK_JOB_COMPLETED', {
            type: 'stream',
            device: id,
            len: job.total,
            offset: job.current,
            speed: 0,
            ...(job.error && !cancelled ? { error: job.error.message } : {}),
          });
          if (args['auto-dismiss'] !== false) {
            job.dismiss();
            jobsOf(engine).delete(id);
          }
        });
      // The QMP reply comes now; failures surface through the event and query-block-jobs.
      done.catch(() => {});
      jobsOf(engine).set(id, { job, device, done: done.catch(() => {}) });
    },
  },
  'query-block-jobs': {
    args: {},
    run(engine) {
      return [...jobsOf(engine).values()].map(({ job, device }) => ({
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
};
