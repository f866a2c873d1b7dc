/** Node entry: the library plus the host file protocol. */
export * from './index.js';
export { FileStorage, fileDriver } from './protocols/file.js';
