/**
 * The legacy qcow/qcow2 AES cipher (src/crypto/aes-cbc.ts) against
 * OpenSSL's aes-128-cbc (node:crypto): each 512-byte sector with the
 * plain64 IV of its number, the key from the password's first 16 bytes.
 */
import { createCipheriv } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { AesCbcPlain64, qcowAesKey } from '../../src/crypto/aes-cbc.js';
import { seededBytes } from '../helpers/random.js';

function plain64(sector: number): Buffer {
  const iv = Buffer.alloc(16);
  iv.writeBigUInt64LE(BigInt(sector));
  return iv;
}

describe('AesCbcPlain64 (qcow aes)', () => {
  it('takes the first 16 bytes of the password, zero-padded', () => {
    expect([...qcowAesKey(new TextEncoder().encode('astrochicken'))]).toEqual([...new TextEncoder().encode('astrochicken'), 0, 0, 0, 0]);
    expect(qcowAesKey(new Uint8Array(20).fill(7)).length).toBe(16);
  });

  for (const first of [0, 5, 2 ** 32 + 3]) {
    it(`matches OpenSSL aes-128-cbc per sector from sector ${first}, and decrypts back`, () => {
      const key = qcowAesKey(new TextEncoder().encode('platypus'));
      const data = seededBytes(4 * 512, first + 1);
      const buf = data.slice();
      const c = new AesCbcPlain64(key);
      c.encrypt(buf, first);
      for (let i = 0; i < 4; i++) {
        const e = createCipheriv('aes-128-cbc', key, plain64(first + i)).setAutoPadding(false);
        const want = Buffer.concat([e.update(data.subarray(i * 512, (i + 1) * 512)), e.final()]);
        expect(Buffer.from(buf.subarray(i * 512, (i + 1) * 512)).equals(want)).toBe(true);
      }
      c.decrypt(buf, first);
      expect(Buffer.from(buf).equals(Buffer.from(data))).toBe(true);
    });
  }
});
