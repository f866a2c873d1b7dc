/**
 * The job-type registry: each kind of job (commit, stream, create; mirror and
 * backup later) registers one descriptor — its QAPI JobType name, whether it
 * is a block job (query-block-jobs, BLOCK_JOB_* events), whether it has a
 * ready phase (job-complete), and how to build its driver from typed
 * options. The engine's job commands dispatch through it, so a new job type
 * is one `registerJobType` call next to its code, not an edit of a list.
 */
import { BlockError } from '../block/errors.js';
import type { JobDriver } from './job.js';

export interface JobTypeDescriptor<O = never> {
  /** The registry's key; also the QAPI JobType unless `qapiType` says otherwise. */
  type: string;
  /** QAPI JobType (query-jobs' and BLOCK_JOB_* events' `type`) when it differs from `type` (active commit reports "commit"). */
  qapiType?: string;
  /** Listed by query-block-jobs, sends BLOCK_JOB_* events, takes block-job-* verbs. */
  blockJob: boolean;
  /** Has QEMU's ready phase: reaches 'ready' and finishes on job-complete. */
  readyPhase: boolean;
  /** The job's work for one set of options. */
  driver(options: O): JobDriver;
}

// Descriptors are stored type-erased; `jobType<O>` gives the typed view back to the caller that knows the type.
const registry = new Map<string, JobTypeDescriptor<unknown>>();

export function registerJobType<O>(d: JobTypeDescriptor<O>): JobTypeDescriptor<O> {
  if (registry.has(d.type)) throw new BlockError('EEXIST', `Job type '${d.type}' is already registered`);
  registry.set(d.type, d as unknown as JobTypeDescriptor<unknown>);
  return d;
}

/** The descriptor of `type`; ENOTSUP when no such job type exists. */
export function jobType<O = unknown>(type: string): JobTypeDescriptor<O> {
  const d = registry.get(type);
  if (!d) throw new BlockError('ENOTSUP', `No job type '${type}' (have: ${[...registry.keys()].join(', ')})`);
  return d as unknown as JobTypeDescriptor<O>;
}

export function jobTypes(): string[] {
  return [...registry.keys()];
}
