/** The page-side entry: a typed client for the engine worker, plus the error classes it rejects with. */
export { createClient, type BlocktabClient, type CancelToken, type StoredFile } from './client.js';
export type { TargetFormat, WorkerReady } from '../worker/api.js';
export { BlockError, isBlockError, type BlockErrorCode } from '../block/errors.js';
export { QmpError, isQmpError, type QmpErrorClass } from '../engine/qmp-error.js';
