/**
 * Attaching a disk to emulators: a BlockBackend as a plain async device,
 * as v86's async buffer, and as a blocking channel for emulators that need
 * synchronous reads.
 */
export { attachBackend, type BlockDevice } from './block-device.js';
export { V86Buffer } from './v86-buffer.js';
export { serveSyncAccess, type SyncChannel } from './sync-server.js';
export { SyncBlockClient, SYNC } from './sync-client.js';
