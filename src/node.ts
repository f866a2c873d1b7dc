/** Node entry: the library plus the host file protocol and Node's C zlib for compressed writes. */
import { createRequire } from 'node:module';
import { installDeflateRaw4k, installDeflateZlib } from './codecs/deflate.js';
import { installInflateExact } from './codecs/zlib-exact.js';
import { nodeInflateExact } from './codecs/inflate-node.js';
import { installBzip2 } from './codecs/bzip2.js';
import { installDeflatePool } from './codecs/deflate-pool.js';
import { createNodeDeflatePool } from './codecs/deflate-pool-node.js';

// node:zlib loads on first use: it pulls in the whole streams stack, ~20 ms of every start-up.
type Zlib = typeof import('node:zlib');
let zlibModule: Zlib | undefined;
const zlib = (): Zlib => (zlibModule ??= createRequire(import.meta.url)('node:zlib') as Zlib);

installDeflateRaw4k((input) => zlib().deflateRawSync(input, { windowBits: 12, level: 6, memLevel: 9 }));
installDeflatePool(createNodeDeflatePool());
// stream-optimized vmdk grains: zlib streams at zlib's default level.
installDeflateZlib((input) => zlib().deflateSync(input));
// zlib streams (dmg and cloop chunks, vmdk grains): Node's C zlib through one reused handle, bounded by the chunk size like the pako path.
installInflateExact(nodeInflateExact(zlib));

// dmg bzip2 chunks: libbzip2 as wasm, loaded on the first bzip2 chunk (its loader needs node:fs).
type Bzip2 = { decompress(src: Uint8Array, destSize: number): Uint8Array };
let bzip2: Promise<Bzip2> | undefined;
installBzip2(async (input, outLength) => {
  bzip2 ??= import('@foxglove/wasm-bz2').then((m) => (m as unknown as { default: { init(): Promise<Bzip2> } }).default.init());
  return (await bzip2).decompress(input, outLength);
});

export * from './index.js';
export { FileStorage, fileDriver } from './protocols/file.js';
