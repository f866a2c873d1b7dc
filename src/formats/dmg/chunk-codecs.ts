/**
 * Decompressors for DMG chunk types, one registry entry per EntryType.
 *
 * zlib (UDZO) uses inflateExact (pako, or Node's zlib); bzip2 (UDBZ) uses
 * src/codecs/bzip2.ts's decompressor (Node: libbzip2 as wasm; elsewhere, the
 * browser's worker included, the TypeScript decoder), which stops with an
 * error when a chunk would inflate past its sector count, so output is
 * bounded; a host that removes it gets ENOTSUP for bzip2 chunks, like lzfse.
 * No maintained npm package decodes LZFSE (ULFO) or ADC (UDCO): their
 * entries have no decompressor and reads of such chunks fail with ENOTSUP.
 * (Debian's qemu-img 7.2 is built without its dmg-bz2 and dmg-lzfse modules
 * and fails reads of both with EIO.)
 */
import { inflateExact } from '../../codecs/zlib-exact.js';
import { bzip2Decompressor } from '../../codecs/bzip2.js';
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

const bzip2Codec: ChunkCodec = {
  name: 'bzip2',
  async decompress(input, out) {
    let got: Uint8Array;
    try {
      got = await bzip2Decompressor()!(input, out.length);
    } catch (e) {
      return `the stream does not decompress (${(e as Error).message})`;
    }
    if (got.length !== out.length) return `the stream decompresses to ${got.length} bytes, not ${out.length}`;
    out.set(got);
    return null;
  },
};

const codecs = new Map<number, ChunkCodec>([
  [BLKX_ZLIB, { name: 'zlib', decompress: async (input, out) => inflateExact(input, out) }],
  [BLKX_LZFSE, { name: 'lzfse' }],
  [BLKX_ADC, { name: 'adc' }],
]);

/** The codec of a compressed chunk type, or undefined for other types. */
export function chunkCodec(entryType: number): ChunkCodec | undefined {
  if (entryType === BLKX_BZIP2) return bzip2Decompressor() ? bzip2Codec : { name: 'bzip2' };
  return codecs.get(entryType);
}
