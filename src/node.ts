/** Node entry: the library plus the host file protocol and Node's C zlib for compressed writes. */
import { deflateRawSync } from 'node:zlib';
import { installDeflateRaw4k } from './codecs/deflate.js';

installDeflateRaw4k((input) => deflateRawSync(input, { windowBits: 12, level: 6, memLevel: 9 }));

export * from './index.js';
export { FileStorage, fileDriver } from './protocols/file.js';
