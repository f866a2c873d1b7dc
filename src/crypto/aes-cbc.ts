/**
 * The legacy qcow/qcow2 "aes" encryption (QEMU's crypto/block-qcow.c):
 * AES-128 in CBC mode over 512-byte sectors, each sector's IV the plain64
 * of its number (little-endian 64-bit, zero-padded to a block). The key is
 * the password's first 16 bytes, zero-padded: no salt, no key derivation,
 * no check that a password is right (a wrong one reads as noise). QEMU
 * keeps it for reading old images; blocktab reads and writes it as
 * qemu-img 7.2 does.
 */
import { unsafe } from '@noble/ciphers/aes.js';

const QCOW_AES_SECTOR_SIZE = 512;

/** The AES-128 key of a legacy qcow image from its password. */
export function qcowAesKey(password: Uint8Array): Uint8Array {
  const key = new Uint8Array(16);
  key.set(password.subarray(0, 16));
  return key;
}

export class AesCbcPlain64 {
  private readonly encKey: Uint32Array;
  private readonly decKey: Uint32Array;
  private readonly scratch = new Uint32Array(QCOW_AES_SECTOR_SIZE / 4);

  constructor(key: Uint8Array) {
    this.encKey = unsafe.expandKeyLE(key);
    this.decKey = unsafe.expandKeyDecLE(key);
  }

  /** Encrypts `buf` (whole sectors) in place; its first sector has number `sector`. */
  encrypt(buf: Uint8Array, sector: number): void {
    const w = this.scratch;
    const bytes = new Uint8Array(w.buffer);
    for (let off = 0; off < buf.length; off += QCOW_AES_SECTOR_SIZE, sector++) {
      let p0 = sector >>> 0;
      let p1 = Math.floor(sector / 0x100000000);
      let p2 = 0;
      let p3 = 0;
      bytes.set(buf.subarray(off, off + QCOW_AES_SECTOR_SIZE));
      for (let j = 0; j < w.length; j += 4) {
        const c = unsafe.encrypt(this.encKey, w[j]! ^ p0, w[j + 1]! ^ p1, w[j + 2]! ^ p2, w[j + 3]! ^ p3);
        w[j] = p0 = c.s0;
        w[j + 1] = p1 = c.s1;
        w[j + 2] = p2 = c.s2;
        w[j + 3] = p3 = c.s3;
      }
      buf.set(bytes, off);
    }
  }

  /** Decrypts `buf` (whole sectors) in place; its first sector has number `sector`. */
  decrypt(buf: Uint8Array, sector: number): void {
    const w = this.scratch;
    const bytes = new Uint8Array(w.buffer);
    for (let off = 0; off < buf.length; off += QCOW_AES_SECTOR_SIZE, sector++) {
      let p0 = sector >>> 0;
      let p1 = Math.floor(sector / 0x100000000);
      let p2 = 0;
      let p3 = 0;
      bytes.set(buf.subarray(off, off + QCOW_AES_SECTOR_SIZE));
      for (let j = 0; j < w.length; j += 4) {
        const c0 = w[j]!;
        const c1 = w[j + 1]!;
        const c2 = w[j + 2]!;
        const c3 = w[j + 3]!;
        const d = unsafe.decrypt(this.decKey, c0, c1, c2, c3);
        w[j] = d.s0 ^ p0;
        w[j + 1] = d.s1 ^ p1;
        w[j + 2] = d.s2 ^ p2;
        w[j + 3] = d.s3 ^ p3;
        p0 = c0;
        p1 = c1;
        p2 = c2;
        p3 = c3;
      }
      buf.set(bytes, off);
    }
  }
}
