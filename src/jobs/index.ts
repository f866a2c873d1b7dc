/** Jobs: the state machine, the job-type registry, and every built-in job type (importing this registers them). */
export * from './job.js';
export * from './registry.js';
export { RateLimit, JOB_SLICE_NS } from './rate-limit.js';
export { streamJobType, streamDriver, runStream, type StreamOptions } from './stream.js';
export { commitJobType, commitDriver, runCommit, type CommitJobOptions, type CommitOptions } from './commit.js';
export { createJobType } from './create.js';
export { activeCommitJobType, activeCommitDriver, type ActiveCommitOptions } from './active-commit.js';
