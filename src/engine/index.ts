/** The Engine (environment-neutral): QMP-style commands and the app's typed API over one block graph. */
export * from './engine.js';
export * from './qmp-error.js';
export { checkArgs, type ArgSpec, type Args, type QapiType } from './qapi-args.js';
export { blockdevDriverArgs } from './commands/blockdev.js';
export { qmpCommands, type QmpCommand, type QmpCommandTable } from './commands/index.js';
export type { BlockDeviceInfo, BlockInfo, BlockStats, BlockDeviceStats, QmpImageInfo } from './query.js';
