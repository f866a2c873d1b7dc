/** Node entry: the library plus the host file protocol and Node's C zlib for compressed writes. */
import { deflateRawSync, inflateSync } from 'node:zlib';
import { installDeflateRaw4k } from './formats/qcow2/compressed.js';
import { installVmdkInflate } from './formats/vmdk/extent.js';

installDeflateRaw4k((input) => deflateRawSync(input, { windowBits: 12, level: 6, memLevel: 9 }));
installVmdkInflate((input) => inflateSync(input));

export * from './index.js';
export { FileStorage, fileDriver } from './protocols/file.js';
