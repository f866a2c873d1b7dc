/**
 * The primitives LUKS1 needs, from well-kept libraries: PBKDF2 through
 * WebCrypto (native in browsers and Node), AES blocks from @noble/ciphers
 * (WebCrypto has no XTS and no raw block mode), hashes for the AF diffuser
 * from @noble/hashes. XTS (IEEE 1619) is built here over AES-ECB: per
 * sector, T = AES_k2(IV), then each 16-byte block is P = AES_k1^-1(C ^ T) ^ T
 * with T multiplied by x in GF(2^128) between blocks.
 */
import { unsafe } from '@noble/ciphers/aes.js';
import { sha1 } from '@noble/hashes/legacy.js';
import { sha256, sha512 } from '@noble/hashes/sha2.js';

export type LuksHash = 'sha1' | 'sha256' | 'sha512';

const WEBCRYPTO_HASH: Record<LuksHash, string> = { sha1: 'SHA-1', sha256: 'SHA-256', sha512: 'SHA-512' };
const HASH_FN: Record<LuksHash, (b: Uint8Array) => Uint8Array> = { sha1, sha256, sha512 };

export function isLuksHash(h: string): h is LuksHash {
  return h in HASH_FN;
}

export function hashFn(h: LuksHash): (b: Uint8Array) => Uint8Array {
  return HASH_FN[h];
}

export async function pbkdf2(hash: LuksHash, password: Uint8Array, salt: Uint8Array, iterations: number, bytes: number): Promise<Uint8Array> {
  const subtle = globalThis.crypto.subtle;
  const key = await subtle.importKey('raw', password as BufferSource, 'PBKDF2', false, ['deriveBits']);
  const bits = await subtle.deriveBits({ name: 'PBKDF2', hash: WEBCRYPTO_HASH[hash], salt: salt as BufferSource, iterations }, key, bytes * 8);
  return new Uint8Array(bits);
}

/**
 * AES-XTS with the plain64 IV (the sector number, little-endian) over
 * 512-byte sectors. Works on 32-bit little-endian words (the byte order of
 * every host we run on), through @noble/ciphers' block functions, which
 * take expanded keys and can be called any number of times.
 */
export class XtsPlain64 {
  private readonly dataKey: Uint32Array;
  private readonly tweakKey: Uint32Array;
  private readonly scratch = new Uint32Array(128);

  constructor(key: Uint8Array) {
    const half = key.length / 2;
    this.dataKey = unsafe.expandKeyDecLE(key.subarray(0, half));
    this.tweakKey = unsafe.expandKeyLE(key.subarray(half));
  }

  /** Decrypts `buf` (whole sectors) in place; its first sector has number `sector`. */
  decrypt(buf: Uint8Array, sector: number, sectorSize = 512): void {
    const words = sectorSize / 4;
    const w = this.scratch.length >= words ? this.scratch : new Uint32Array(words);
    const bytes = new Uint8Array(w.buffer, 0, sectorSize);
    for (let off = 0; off < buf.length; off += sectorSize, sector++) {
      let { s0: t0, s1: t1, s2: t2, s3: t3 } = unsafe.encrypt(this.tweakKey, sector >>> 0, Math.floor(sector / 0x100000000), 0, 0);
      bytes.set(buf.subarray(off, off + sectorSize));
      for (let j = 0; j < words; j += 4) {
        const p = unsafe.decrypt(this.dataKey, w[j]! ^ t0, w[j + 1]! ^ t1, w[j + 2]! ^ t2, w[j + 3]! ^ t3);
        w[j] = p.s0 ^ t0;
        w[j + 1] = p.s1 ^ t1;
        w[j + 2] = p.s2 ^ t2;
        w[j + 3] = p.s3 ^ t3;
        // T *= x in GF(2^128), little-endian: shift left one bit, fold the carry back as 0x87.
        const carry = t3 >>> 31;
        t3 = (t3 << 1) | (t2 >>> 31);
        t2 = (t2 << 1) | (t1 >>> 31);
        t1 = (t1 << 1) | (t0 >>> 31);
        t0 = (t0 << 1) ^ (carry ? 0x87 : 0);
      }
      buf.set(bytes, off);
    }
  }
}

/** LUKS1's anti-forensic merge: undoes the split of the master key over `stripes` stripes. */
export function afMerge(split: Uint8Array, keyBytes: number, stripes: number, hash: LuksHash): Uint8Array {
  const h = HASH_FN[hash];
  const block = new Uint8Array(keyBytes);
  for (let i = 0; i < stripes - 1; i++) {
    const s = split.subarray(i * keyBytes, (i + 1) * keyBytes);
    for (let k = 0; k < keyBytes; k++) block[k]! ^= s[k]!;
    diffuse(block, h);
  }
  const last = split.subarray((stripes - 1) * keyBytes, stripes * keyBytes);
  for (let k = 0; k < keyBytes; k++) block[k]! ^= last[k]!;
  return block;
}

function diffuse(block: Uint8Array, h: (b: Uint8Array) => Uint8Array): void {
  const digestLen = (h as unknown as { outputLen: number }).outputLen;
  const buf = new Uint8Array(4 + digestLen);
  const dv = new DataView(buf.buffer);
  for (let i = 0, off = 0; off < block.length; i++, off += digestLen) {
    const n = Math.min(digestLen, block.length - off);
    dv.setUint32(0, i);
    buf.set(block.subarray(off, off + n), 4);
    block.set(h(buf.subarray(0, 4 + n)).subarray(0, n), off);
  }
}
