/**
 * A bzip2 decoder in plain TypeScript, for hosts without libbzip2 (the
 * browser: the wasm build Node uses, @foxglove/wasm-bz2, loads its .wasm
 * through node:fs or a webpack-only require). The npm decoders were no fit:
 * seek-bzip and unbzip2-stream need Node's Buffer, compressjs's maintained
 * fork is GPL, bzip2.js returns strings.
 *
 * The format (as libbzip2 writes it), MSB-first bits:
 *   "BZh" level('1'..'9')                           stream header
 *   per block: 0x314159265359 · blockCRC u32 · randomised u1 · origPtr u24 ·
 *     symbol map (16 + 16×used bits) · nGroups u3 · nSelectors u15 ·
 *     selectors (unary, move-to-front coded) · per group: code lengths
 *     (delta coded from a u5) · Huffman symbols in groups of 50, each group
 *     with its selector's table: RUNA/RUNB runs and move-to-front indexes,
 *     EOB last
 *   0x177245385090 · combined CRC u32                end of stream
 * A block is undone by the inverse Burrows-Wheeler transform from origPtr,
 * then the initial run-length coding (4 equal bytes and a count). CRCs are
 * CRC-32 (0x04c11db7, not reflected) of the output, per block and combined.
 *
 * Bounded: the output may not grow past `outLength` (the caller knows the
 * size), a block past its header's 100k×level bytes, a run past 2^21.
 * Randomised blocks (bzip2 0.9.0, never written since) are refused.
 */

const BLOCK_MAGIC_HI = 0x314159;
const BLOCK_MAGIC_LO = 0x265359;
const EOS_MAGIC_HI = 0x177245;
const EOS_MAGIC_LO = 0x385090;
const MAX_GROUPS = 6;
const MAX_ALPHA = 258;
const MAX_CODE_LEN = 20;
const GROUP_SIZE = 50;
const MAX_SELECTORS = 18002;

export class Bzip2Error extends Error {}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i << 24;
    for (let k = 0; k < 8; k++) c = c & 0x80000000 ? (c << 1) ^ 0x04c11db7 : c << 1;
    t[i] = c >>> 0;
  }
  return t;
})();

class BitReader {
  private pos = 0;
  private bitBuf = 0;
  private bitCount = 0;
  constructor(private readonly input: Uint8Array) {}

  bits(n: number): number {
    while (this.bitCount < n) {
      if (this.pos >= this.input.length) throw new Bzip2Error(`the stream ends early (at byte ${this.pos})`);
      this.bitBuf = ((this.bitBuf << 8) | this.input[this.pos++]!) >>> 0;
      this.bitCount += 8;
    }
    this.bitCount -= n;
    return (this.bitBuf >>> this.bitCount) & ((1 << n) - 1);
  }

  bit(): number {
    return this.bits(1);
  }

  get offset(): number {
    return this.pos;
  }

  /** Drops the bits left of the current byte; returns the offset of the next unread byte. */
  alignToByte(): number {
    this.bitCount -= this.bitCount % 8;
    return this.pos - this.bitCount / 8;
  }
}

/** One group's canonical Huffman decoding tables (libbzip2's limit/base/perm). */
interface Table {
  minLen: number;
  limit: Int32Array;
  base: Int32Array;
  perm: Int32Array;
}

function makeTable(lengths: Uint8Array, alphaSize: number): Table {
  let minLen = 32;
  let maxLen = 0;
  for (let i = 0; i < alphaSize; i++) {
    minLen = Math.min(minLen, lengths[i]!);
    maxLen = Math.max(maxLen, lengths[i]!);
  }
  const perm = new Int32Array(MAX_ALPHA);
  const base = new Int32Array(MAX_CODE_LEN + 2);
  const limit = new Int32Array(MAX_CODE_LEN + 2).fill(-1);
  let pp = 0;
  for (let len = minLen; len <= maxLen; len++) for (let s = 0; s < alphaSize; s++) if (lengths[s] === len) perm[pp++] = s;
  const count = new Int32Array(MAX_CODE_LEN + 2);
  for (let s = 0; s < alphaSize; s++) count[lengths[s]!]!++;
  // Codes of length `len` are limit[len]-count+1 .. limit[len]; base[len] maps a code to its rank in perm.
  let code = 0;
  let rank = 0;
  for (let len = minLen; len <= maxLen; len++) {
    code += count[len]!;
    limit[len] = code - 1;
    base[len] = code - count[len]! - rank;
    rank += count[len]!;
    code <<= 1;
  }
  return { minLen, limit, base, perm };
}

function decodeSymbol(br: BitReader, t: Table, alphaSize: number): number {
  let len = t.minLen;
  let code = br.bits(len);
  while (code > t.limit[len]!) {
    if (++len > MAX_CODE_LEN) throw new Bzip2Error('a Huffman code is longer than 20 bits');
    code = (code << 1) | br.bit();
  }
  const r = code - t.base[len]!;
  if (r < 0 || r >= alphaSize) throw new Bzip2Error('a Huffman code has no symbol');
  return t.perm[r]!;
}

/** Decodes one block's symbols into `tt` (bytes before the inverse BWT); returns their count and origPtr. */
function readBlock(br: BitReader, tt: Uint32Array, maxBlock: number): { n: number; origPtr: number; crc: number } {
  const crc = br.bits(16) * 0x10000 + br.bits(16);
  if (br.bit()) throw new Bzip2Error('randomised blocks (bzip2 0.9.0) are not supported');
  const origPtr = br.bits(24);

  const used = br.bits(16);
  const seqToUnseq = new Uint8Array(256);
  let inUse = 0;
  for (let i = 0; i < 16; i++) {
    if (!(used & (0x8000 >> i))) continue;
    const m = br.bits(16);
    for (let j = 0; j < 16; j++) if (m & (0x8000 >> j)) seqToUnseq[inUse++] = i * 16 + j;
  }
  if (inUse === 0) throw new Bzip2Error('a block uses no symbols');
  const alphaSize = inUse + 2;

  const nGroups = br.bits(3);
  if (nGroups < 2 || nGroups > MAX_GROUPS) throw new Bzip2Error(`a block has ${nGroups} Huffman groups (2 to 6)`);
  const nSelectors = br.bits(15);
  if (nSelectors < 1) throw new Bzip2Error('a block has no selectors');
  const pos = Array.from({ length: nGroups }, (_, i) => i);
  const selectors = new Uint8Array(Math.min(nSelectors, MAX_SELECTORS));
  for (let i = 0; i < nSelectors; i++) {
    let j = 0;
    while (br.bit()) if (++j >= nGroups) throw new Bzip2Error('a selector names a group that does not exist');
    const v = pos[j]!;
    pos.splice(j, 1);
    pos.unshift(v);
    if (i < MAX_SELECTORS) selectors[i] = v;
  }

  const tables: Table[] = [];
  const lengths = new Uint8Array(MAX_ALPHA);
  for (let g = 0; g < nGroups; g++) {
    let len = br.bits(5);
    for (let s = 0; s < alphaSize; s++) {
      for (;;) {
        if (len < 1 || len > MAX_CODE_LEN) throw new Bzip2Error(`a code length of ${len} bits (1 to 20)`);
        if (!br.bit()) break;
        len += br.bit() ? -1 : 1;
      }
      lengths[s] = len;
    }
    tables.push(makeTable(lengths, alphaSize));
  }

  const mtf = new Uint8Array(256);
  for (let i = 0; i < 256; i++) mtf[i] = i;
  const eob = inUse + 1;
  let n = 0;
  let group = 0;
  let left = 0;
  let table = tables[0]!;
  const next = (): number => {
    if (left === 0) {
      if (group >= selectors.length) throw new Bzip2Error('a block has more symbol groups than selectors');
      table = tables[selectors[group++]!]!;
      left = GROUP_SIZE;
    }
    left--;
    return decodeSymbol(br, table, alphaSize);
  };
  let sym = next();
  for (;;) {
    if (sym === eob) break;
    if (sym <= 1) {
      // RUNA (0) and RUNB (1): a bijective base-2 run length of the front byte.
      let run = 0;
      for (let weight = 1; sym <= 1; sym = next()) {
        if (weight > 1 << 21) throw new Bzip2Error('a run is longer than 2^21 bytes');
        run += (sym + 1) * weight;
        weight <<= 1;
      }
      if (n + run > maxBlock) throw new Bzip2Error(`a block holds more than its ${maxBlock} bytes`);
      const b = seqToUnseq[mtf[0]!]!;
      tt.fill(b, n, n + run);
      n += run;
      continue;
    }
    if (n >= maxBlock) throw new Bzip2Error(`a block holds more than its ${maxBlock} bytes`);
    const k = sym - 1;
    const v = mtf[k]!;
    mtf.copyWithin(1, 0, k);
    mtf[0] = v;
    tt[n++] = seqToUnseq[v]!;
    sym = next();
  }
  if (origPtr >= n) throw new Bzip2Error(`origPtr ${origPtr} is past the block's ${n} bytes`);
  return { n, origPtr, crc };
}

/**
 * Decompresses the bzip2 stream `input` (and any streams concatenated after
 * it) into at most `outLength` bytes; throws Bzip2Error on a bad stream or
 * when the output would be longer.
 */
export function bzip2Decompress(input: Uint8Array, outLength: number): Uint8Array {
  const out = new Uint8Array(outLength);
  let o = 0;
  const br = new BitReader(input);
  let tt: Uint32Array | null = null;
  do {
    if (br.bits(8) !== 0x42 || br.bits(8) !== 0x5a || br.bits(8) !== 0x68) throw new Bzip2Error('no "BZh" stream header');
    const level = br.bits(8) - 0x30;
    if (level < 1 || level > 9) throw new Bzip2Error(`block size level ${level} (1 to 9)`);
    const maxBlock = level * 100000;
    if (!tt || tt.length < maxBlock) tt = new Uint32Array(maxBlock);
    let combined = 0;
    for (;;) {
      const hi = br.bits(24);
      const lo = br.bits(24);
      if (hi === EOS_MAGIC_HI && lo === EOS_MAGIC_LO) {
        const want = br.bits(16) * 0x10000 + br.bits(16);
        if (want !== combined >>> 0) throw new Bzip2Error(`combined CRC 0x${(combined >>> 0).toString(16)} != 0x${want.toString(16)}`);
        break;
      }
      if (hi !== BLOCK_MAGIC_HI || lo !== BLOCK_MAGIC_LO) throw new Bzip2Error(`no block header at byte ${br.offset}`);
      const { n, origPtr, crc: want } = readBlock(br, tt, maxBlock);
      // Inverse BWT: link each position to the next in the original order (high 24 bits), byte in the low 8.
      const cftab = new Int32Array(257);
      for (let i = 0; i < n; i++) cftab[(tt[i]! & 0xff) + 1]!++;
      for (let i = 1; i < 257; i++) cftab[i]! += cftab[i - 1]!;
      for (let i = 0; i < n; i++) {
        const b = tt[i]! & 0xff;
        tt[cftab[b]!]! |= i << 8;
        cftab[b]!++;
      }
      // Undo the initial run-length coding while walking the chain; CRC the output.
      let crc = 0xffffffff;
      let p = tt[origPtr]! >>> 8;
      let last = -1;
      let run = 0;
      for (let i = 0; i < n; i++) {
        const w = tt[p]!;
        const b = w & 0xff;
        p = w >>> 8;
        if (run === 4) {
          if (o + b > outLength) throw new Bzip2Error(`the stream decompresses to more than ${outLength} bytes`);
          for (let k = 0; k < b; k++) {
            out[o++] = last;
            crc = (crc << 8) ^ CRC_TABLE[((crc >>> 24) ^ last) & 0xff]!;
          }
          run = 0;
          continue;
        }
        run = b === last ? run + 1 : 1;
        last = b;
        if (o >= outLength) throw new Bzip2Error(`the stream decompresses to more than ${outLength} bytes`);
        out[o++] = b;
        crc = (crc << 8) ^ CRC_TABLE[((crc >>> 24) ^ b) & 0xff]!;
      }
      crc = ~crc >>> 0;
      if (crc !== want) throw new Bzip2Error(`block CRC 0x${crc.toString(16)} != 0x${want.toString(16)}`);
      combined = ((combined << 1) | (combined >>> 31)) ^ crc;
    }
  } while (nextStream(br, input));
  return o === outLength ? out : out.slice(0, o);
}

/** Skips the padding to a byte boundary (streams are byte-aligned); true when another "BZh" stream follows. */
function nextStream(br: BitReader, input: Uint8Array): boolean {
  const at = br.alignToByte();
  return at + 4 <= input.length && input[at] === 0x42 && input[at + 1] === 0x5a && input[at + 2] === 0x68;
}
