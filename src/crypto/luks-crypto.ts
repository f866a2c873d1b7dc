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

/** The hash's digest length in bytes. */
export function hashLen(h: LuksHash): number {
  return (HASH_FN[h] as unknown as { outputLen: number }).outputLen;
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
  private readonly dataKey: Uint8Array;
  private readonly tweakKey: Uint32Array;
  private encKey: Uint32Array | undefined;
  private decKey: Uint32Array | undefined;
  private readonly scratch = new Uint32Array(128);

  constructor(key: Uint8Array) {
    const half = key.length / 2;
    this.dataKey = key.slice(0, half);
    this.tweakKey = unsafe.expandKeyLE(key.subarray(half));
  }

  /** Decrypts `buf` (whole sectors) in place; its first sector has number `sector`. */
  decrypt(buf: Uint8Array, sector: number, sectorSize = 512): void {
    this.decKey ??= unsafe.expandKeyDecLE(this.dataKey);
    this.run(buf, sector, sectorSize, this.decKey, unsafe.decrypt);
  }

  /** Encrypts `buf` (whole sectors) in place; its first sector has number `sector`. */
  encrypt(buf: Uint8Array, sector: number, sectorSize = 512): void {
    this.encKey ??= unsafe.expandKeyLE(this.dataKey);
    this.run(buf, sector, sectorSize, this.encKey, unsafe.encrypt);
  }

  /** Per sector: T = AES_k2(IV); each block B -> F_k1(B ^ T) ^ T, T *= x between blocks. */
  private run(buf: Uint8Array, sector: number, sectorSize: number, xk: Uint32Array, f: typeof unsafe.encrypt): void {
    const words = sectorSize / 4;
    const w = this.scratch.length >= words ? this.scratch : new Uint32Array(words);
    const bytes = new Uint8Array(w.buffer, 0, sectorSize);
    for (let off = 0; off < buf.length; off += sectorSize, sector++) {
      let { s0: t0, s1: t1, s2: t2, s3: t3 } = unsafe.encrypt(this.tweakKey, sector >>> 0, Math.floor(sector / 0x100000000), 0, 0);
      bytes.set(buf.subarray(off, off + sectorSize));
      for (let j = 0; j < words; j += 4) {
        const p = f(xk, w[j]! ^ t0, w[j + 1]! ^ t1, w[j + 2]! ^ t2, w[j + 3]! ^ t3);
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

/**
 * LUKS1's anti-forensic split: `stripes` blocks of `key.length` bytes, all
 * random but the last, which is the key XOR the diffused XOR of the others
 * (so afMerge gives the key back).
 */
export function afSplit(key: Uint8Array, stripes: number, hash: LuksHash): Uint8Array {
  const h = HASH_FN[hash];
  const n = key.length;
  const out = randomBytes(n * stripes);
  const block = new Uint8Array(n);
  for (let i = 0; i < stripes - 1; i++) {
    const s = out.subarray(i * n, (i + 1) * n);
    for (let k = 0; k < n; k++) block[k]! ^= s[k]!;
    diffuse(block, h);
  }
  const last = out.subarray((stripes - 1) * n);
  for (let k = 0; k < n; k++) last[k] = key[k]! ^ block[k]!;
  return out;
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

/** Cryptographically random bytes (getRandomValues fills at most 64 KiB a call). */
export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let at = 0; at < n; at += 65536) globalThis.crypto.getRandomValues(out.subarray(at, Math.min(n, at + 65536)));
  return out;
}

/**
 * PBKDF2 iterations per second of `hash` deriving `bytes` bytes, measured as
 * QEMU's qcrypto_pbkdf2_count_iters does: start at 2^15 iterations and grow
 * the count until one run takes more than half a second of (here wall)
 * time, then scale. Timing-dependent by nature: only `create` uses it.
 */
export async function pbkdf2IterationsPerSecond(hash: LuksHash, bytes: number): Promise<number> {
  const password = randomBytes(32);
  const salt = randomBytes(32);
  let iterations = 1 << 15;
  for (;;) {
    const start = performance.now();
    await pbkdf2(hash, password, salt, iterations, bytes);
    const ms = performance.now() - start;
    if (ms > 500 || iterations >= 2 ** 32) return Math.floor((iterations * 1000) / Math.max(ms, 1));
    iterations = ms < 100 ? iterations * 10 : Math.ceil((iterations * 1000) / ms);
  }
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
