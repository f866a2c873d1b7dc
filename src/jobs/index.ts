/** Jobs: the state machine, the job-type registry, and every built-in job type (importing this registers them). */
export * from './job.js';
export * from './registry.js';
export { RateLimit, JOB_SLICE_NS } from './rate-limit.js';
export { streamJobType, streamDriver, runStream, type StreamOptions } from './stream.js';
export { commitJobType, commitDriver, runCommit, type CommitJobOptions, type CommitOptions } from './commit.js';
export { createJobType } from './create.js';
export { activeCommitJobType, activeCommitDriver, type ActiveCommitOptions } from './active-commit.js';
export { mirrorJobType, mirrorDriver, MIRROR_DEFAULT_BUF_SIZE, type MirrorOptions, type MirrorSyncMode } from './mirror.js';
export { backupJobType, backupDriver, BACKUP_CLUSTER_SIZE_DEFAULT, type BackupOptions, type BackupSyncMode, type BitmapSyncMode } from './backup.js';
