/**
 * Decompressors for DMG chunk types, one registry entry per EntryType.
 *
 * zlib (UDZO) uses pako; bzip2 (UDBZ) uses @foxglove/wasm-bz2 (libbzip2
 * compiled to wasm, loaded on the first bzip2 chunk; it stops with an error
 * when a chunk would inflate past its sector count, so output is bounded).
 * No maintained npm package decodes LZFSE (ULFO) or ADC (UDCO): their
 * entries have no decompressor and reads of such chunks fail with ENOTSUP.
 * (Debian's qemu-img 7.2 is built without its dmg-bz2 and dmg-lzfse modules
 * and fails reads of both with EIO.)
 */
import { inflateExact } from '../zlib-exact.js';
import { BLKX_ADC, BLKX_BZIP2, BLKX_LZFSE, BLKX_ZLIB } from './blkx.js';

export interface ChunkCodec {
  /** Name for messages. */
  readonly name: string;
  /**
   * Fills `out` (exactly the chunk's sectors) from `input`; returns null on
   * success or why the chunk is refused. Absent: the codec is not available.
   */
  decompress?(input: Uint8Array, out: Uint8Array): Promise<string | null>;
}

interface Bzip2Module {
  decompress(src: Uint8Array, destSize: number): Uint8Array;
}
let bzip2: Promise<Bzip2Module> | undefined;

function loadBzip2(): Promise<Bzip2Module> {
  bzip2 ??= (async () => {
    const mod = (await import('@foxglove/wasm-bz2')) as unknown as { default: { init(): Promise<Bzip2Module> } };
    return mod.default.init();
  })();
  return bzip2;
}

const codecs = new Map<number, ChunkCodec>([
  [BLKX_ZLIB, { name: 'zlib', decompress: async (input, out) => inflateExact(input, out) }],
  [
    BLKX_BZIP2,
    {
      name: 'bzip2',
      async decompress(input, out) {
        let bz: Bzip2Module;
        try {
          bz = await loadBzip2();
        } catch (e) {
          bzip2 = undefined;
          return `the bzip2 decompressor could not be loaded (${(e as Error).message})`;
        }
        let got: Uint8Array;
        try {
          got = bz.decompress(input, out.length);
        } catch (e) {
          return `the stream does not decompress (${(e as Error).message})`;
        }
        if (got.length !== out.length) return `the stream decompresses to ${got.length} bytes, not ${out.length}`;
        out.set(got);
        return null;
      },
    },
  ],
  [BLKX_LZFSE, { name: 'lzfse' }],
  [BLKX_ADC, { name: 'adc' }],
]);

/** The codec of a compressed chunk type, or undefined for other types. */
export function chunkCodec(entryType: number): ChunkCodec | undefined {
  return codecs.get(entryType);
}
