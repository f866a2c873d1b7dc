/**
 * luks's XTS (crypto.ts, over @noble/ciphers' AES blocks) against OpenSSL's
 * aes-xts through node:crypto, sector by sector with the plain64 IV (the
 * sector number, little-endian, in a 16-byte tweak); and the anti-forensic
 * split undone by the merge.
 */
import { createCipheriv } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { afMerge, afSplit, randomBytes, XtsPlain64 } from '../../src/crypto/luks-crypto.js';

function plain64(sector: number): Uint8Array {
  const iv = new Uint8Array(16);
  new DataView(iv.buffer).setBigUint64(0, BigInt(sector), true);
  return iv;
}

describe('luks XtsPlain64', () => {
  for (const [alg, keyBytes] of [['aes-128-xts', 32], ['aes-256-xts', 64]] as const) {
    it(`encrypts as OpenSSL's ${alg} and decrypts back`, () => {
      const key = randomBytes(keyBytes);
      const first = 2 ** 32 - 2; // the tweak's high word changes inside the buffer
      const plain = randomBytes(4 * 512);
      const ours = plain.slice();
      new XtsPlain64(key).encrypt(ours, first);
      for (let i = 0; i < 4; i++) {
        const c = createCipheriv(alg, key, plain64(first + i));
        const theirs = Buffer.concat([c.update(plain.subarray(i * 512, (i + 1) * 512)), c.final()]);
        expect(Buffer.from(ours.subarray(i * 512, (i + 1) * 512)).equals(theirs)).toBe(true);
      }
      new XtsPlain64(key).decrypt(ours, first);
      expect(Buffer.from(ours).equals(Buffer.from(plain))).toBe(true);
    });
  }

  it('afMerge undoes afSplit over 4000 stripes (sha1, sha256, sha512)', () => {
    for (const hash of ['sha1', 'sha256', 'sha512'] as const) {
      const key = randomBytes(64);
      const split = afSplit(key, 4000, hash);
      expect(split.length).toBe(64 * 4000);
      expect(Buffer.from(afMerge(split, 64, 4000, hash)).equals(Buffer.from(key))).toBe(true);
    }
  });
});
