/**
 * Encrypted qcow2 (QEMU's qcow2 with crypt_method 1 "aes" or 2 "luks").
 *
 * aes (legacy): AES-128-CBC per 512-byte sector, the IV from the sector's
 * guest offset, the key the password's first 16 bytes (src/crypto/aes-cbc.ts).
 * luks: a LUKS1 header area in host clusters the crypto header extension
 * names (offset, length); data sectors are aes-xts-plain64 with the IV from
 * the sector's host offset (QEMU's crypt_physical_offset), key slot
 * offsets count from the area's start (src/crypto/luks-block.ts).
 *
 * Both encrypt only guest data clusters; metadata stays plain. The key
 * comes from the `encrypt.key-secret` option (a secret registered by id);
 * without one only `info` (no I/O) opens the image, as QEMU.
 */
import { BlockError, hex } from '../../block/errors.js';
import type { BlockNode } from '../../block/node.js';
import { bdrvPread, bdrvPwrite } from '../../block/io.js';
import { lookupSecretUtf8 } from '../../block/secrets.js';
import { LUKS_HEADER_SIZE } from '../../crypto/luks-header.js';
import { luksCheckHeader, luksInfo, luksUnlock, type LuksVolume } from '../../crypto/luks-block.js';
import type { LuksAreaIo } from '../../crypto/luks-amend.js';
import { findExtension, QCOW2_EXT_MAGIC_CRYPTO_HEADER, type Qcow2Header } from './header.js';

const QCOW_CRYPT_NONE = 0;
export const QCOW_CRYPT_AES = 1;
export const QCOW_CRYPT_LUKS = 2;
/** Bytes per encrypted unit (QEMU's qcrypto sector size for both formats). */
export const QCOW2_CRYPT_SECTOR = 512;

interface SectorCipher {
  encrypt(buf: Uint8Array, sector: number): void;
  decrypt(buf: Uint8Array, sector: number): void;
}

export interface Qcow2Crypto {
  method: typeof QCOW_CRYPT_AES | typeof QCOW_CRYPT_LUKS;
  /** The data cipher, or null when opened without a key (info). */
  cipher: SectorCipher | null;
  /** IVs from host offsets (luks) rather than guest offsets (aes). */
  physical: boolean;
  /** The LUKS header (luks only). */
  luks?: LuksVolume;
  /** Host range of the LUKS header area (luks only). */
  area?: { offset: number; length: number };
  /** The `encrypt.key-secret` id the image was opened with (amend recovers the master key with it). */
  secretId?: string;
}

/** Reads the header's encryption: null for a plain image. Unlocks with `encrypt.key-secret` unless `noIo`. */
export async function openQcow2Crypto(file: BlockNode, h: Qcow2Header, image: string, options: Record<string, unknown>): Promise<Qcow2Crypto | null> {
  if (h.cryptMethod === QCOW_CRYPT_NONE) return null;
  const secretId = options['encrypt.key-secret'];
  let password: Uint8Array | undefined;
  if (typeof secretId !== 'string') {
    if (!options.noIo) throw new BlockError('EINVAL', `${image}: Parameter 'encrypt.key-secret' is required for cipher`);
  } else if (!options.noIo) {
    // Opened without I/O (info, create's look at a backing file) QEMU does not resolve the secret either (198).
    password = lookupSecretUtf8(secretId);
    if (!password) throw new BlockError('EINVAL', `${image}: No secret with id '${secretId}'`);
  }
  if (h.cryptMethod === QCOW_CRYPT_AES) {
    let cipher: SectorCipher | null = null;
    if (password) {
      const { AesCbcPlain64, qcowAesKey } = await import('../../crypto/aes-cbc.js');
      cipher = new AesCbcPlain64(qcowAesKey(password));
    }
    return { method: QCOW_CRYPT_AES, cipher, physical: false };
  }
  const ext = findExtension(h, QCOW2_EXT_MAGIC_CRYPTO_HEADER)!;
  const fileSize = file.totalBytes;
  if (ext.length < LUKS_HEADER_SIZE || ext.offset + ext.length > fileSize) {
    throw new BlockError('ECORRUPT', `${image}: crypto header extension: the LUKS header at ${hex(ext.offset)} (${ext.length} bytes) is not inside the file (${fileSize} bytes)`);
  }
  const buf = new Uint8Array(LUKS_HEADER_SIZE);
  await bdrvPread(file, ext.offset, buf.length, buf);
  const luks = luksCheckHeader(buf, `${image}: luks header in the crypto header extension's clusters (${hex(ext.offset)}):`);
  const cipher = password ? await luksUnlock(luks, luksAreaIo(file, ext, image).read, password, image) : null;
  return { method: QCOW_CRYPT_LUKS, cipher, physical: true, luks, area: { offset: ext.offset, length: ext.length }, ...(typeof secretId === 'string' ? { secretId } : {}) };
}

function cipherOf(c: Qcow2Crypto, image: string): SectorCipher {
  if (!c.cipher) throw new BlockError('EACCES', `${image}: the image was opened without its key ('encrypt.key-secret')`);
  return c.cipher;
}

/**
 * Reads and writes inside the LUKS header area (QEMU's
 * qcow2_crypto_hdr_read_func / write_func), never past its length.
 */
export function luksAreaIo(file: BlockNode, area: { offset: number; length: number }, image: string): LuksAreaIo {
  const check = (off: number, n: number) => {
    if (off + n > area.length) throw new BlockError('ECORRUPT', `${image}: luks key material at ${hex(off)} (${n} bytes) is past the crypto header's ${area.length} bytes`);
  };
  return {
    read: async (off, n, b) => {
      check(off, n);
      await bdrvPread(file, area.offset + off, n, b);
    },
    write: async (off, n, b) => {
      check(off, n);
      await bdrvPwrite(file, area.offset + off, n, b);
    },
  };
}

/** Decrypts `buf` in place: guest bytes at `guest`, stored at host `host` (both sector-aligned). */
export function decryptData(c: Qcow2Crypto, image: string, guest: number, host: number, buf: Uint8Array): void {
  cipherOf(c, image).decrypt(buf, (c.physical ? host : guest) / QCOW2_CRYPT_SECTOR);
}

/** Encrypts `buf` in place: guest bytes at `guest`, to be stored at host `host` (both sector-aligned). */
export function encryptData(c: Qcow2Crypto, image: string, guest: number, host: number, buf: Uint8Array): void {
  cipherOf(c, image).encrypt(buf, (c.physical ? host : guest) / QCOW2_CRYPT_SECTOR);
}

/** The `encrypt` member of qcow2's format-specific info, as qemu-img 7.2 prints it. */
export function cryptoInfo(c: Qcow2Crypto): Record<string, unknown> {
  return c.method === QCOW_CRYPT_AES ? { format: 'aes' } : luksInfo(c.luks!, 'luks');
}
