/** The page-side entry: a typed client for the engine worker, plus the error classes it rejects with. */
export { createClient, type BlocktabClient, type CancelToken, type StoredFile, type InspectEntry, type InspectTreeEntry, type InspectView, type LayerDiff, type PartitionTable } from './client.js';
export { clientDevice, type ClientDevice } from './device.js';
export type { DiskStatus, ExportMode, RemoteOverlayOpened } from './client.js';
export type { TargetFormat, WorkerReady } from '../worker/api.js';
/** Makes a name from inside an image safe as a host file name (no "/", "..", control characters). */
export { safeName } from '../inspect/fs/paths.js';
export { BlockError, isBlockError, type BlockErrorCode } from '../block/errors.js';
export { QmpError, isQmpError, type QmpErrorClass } from '../engine/qmp-error.js';
