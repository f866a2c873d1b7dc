/** Node entry: the library plus the host file protocol and Node's C zlib for compressed writes. */
import { deflateRawSync, inflateSync } from 'node:zlib';
import { installDeflateRaw4k } from './codecs/deflate.js';
import { installInflateZlib } from './codecs/inflate.js';

installDeflateRaw4k((input) => deflateRawSync(input, { windowBits: 12, level: 6, memLevel: 9 }));
installInflateZlib((input, maxOutputLength) => inflateSync(input, maxOutputLength === undefined ? {} : { maxOutputLength }));

export * from './index.js';
export { FileStorage, fileDriver } from './protocols/file.js';
