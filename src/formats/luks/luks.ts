/**
 * The `luks` format driver (LUKS1), as QEMU's
 * block/crypto.c with crypto/block-luks.c reads it.
 *
 * Open parses the header and key slots (header.ts), checks them as QEMU
 * does (version 1, stripes of 4000, key material between the header and the
 * payload, payload inside the file), then unlocks the master key with the
 * password named by the `key-secret` option (a secret registered by id,
 * src/block/secrets.ts, as qemu-img's `--object secret`): for each active
 * slot, PBKDF2 of the password, decrypt the slot's key material, merge the
 * anti-forensic stripes, and compare the master key's PBKDF2 digest.
 * Reads decrypt and writes encrypt the payload with aes-xts-plain64, sector
 * numbers counting from the start of the payload (crypto.ts), whole
 * sectors only (requestAlignment 512: the block layer reads, modifies and
 * writes around unaligned requests). Only the aes / xts-plain64
 * combination with sha1, sha256 or sha512 is read; others are ENOTSUP.
 * Resizing moves the end of the file, as QEMU's block_crypto_co_truncate.
 * Creation: create.ts.
 */
import { BlockError, hex } from '../../block/errors.js';
import { type BlockDriver } from '../../block/driver.js';
import type { BlockNode } from '../../block/node.js';
import { bdrvPread, bdrvPwrite, bdrvTruncate } from '../../block/io.js';
import { BDRV_BLOCK_DATA } from '../../block/status.js';
import { lookupSecret } from '../../block/secrets.js';
import type { ImageInfoSpecific } from '../../block/info.js';
import { allocBuffer, freeBuffer } from '../../block/buffers.js';
import { LUKS_CREATE_OPTS, luksCreateImage, luksCreateOptions, luksMeasure } from './create.js';
import {
  hasLuksMagic,
  LUKS_DIGEST_SIZE,
  LUKS_HEADER,
  LUKS_HEADER_SIZE,
  LUKS_KEY_DISABLED,
  LUKS_KEY_ENABLED,
  LUKS_KEY_SLOT,
  LUKS_KEY_SLOT_OFFSET,
  LUKS_SECTOR_SIZE,
  LUKS_STRIPES,
  parseLuks,
  type LuksHeader,
  type LuksKeySlot,
} from './header.js';
// The ciphers load on first unlock: building AES tables costs every other command ~70 ms of start-up.
import type { LuksHash, XtsPlain64 } from './crypto.js';

/** The hashes crypto.ts implements (checked at open, before the ciphers load). */
const LUKS_HASHES: readonly string[] = ['sha1', 'sha256', 'sha512'] satisfies LuksHash[];
const isLuksHash = (h: string): h is LuksHash => LUKS_HASHES.includes(h);

interface LuksState {
  header: LuksHeader;
  slots: LuksKeySlot[];
  payloadOffset: number;
  /** The payload cipher, or null when opened for metadata only (no key). */
  xts: XtsPlain64 | null;
}

/** Bytes encrypted per write to the file (QEMU's BLOCK_CRYPTO_MAX_IO_SIZE bounce buffer). */
const WRITE_CHUNK = 1 << 20;

const roundToSector = (n: number) => Math.ceil(n / LUKS_SECTOR_SIZE) * LUKS_SECTOR_SIZE;

function cipher(bs: BlockNode, s: LuksState): XtsPlain64 {
  if (!s.xts) throw new BlockError('EACCES', `${bs.filename}: the image was opened without its key ('key-secret')`);
  return s.xts;
}

function slotWhere(i: number): string {
  return `key slot ${i} at ${hex(LUKS_KEY_SLOT_OFFSET + i * LUKS_KEY_SLOT.size)}`;
}

async function unlock(bs: BlockNode, h: LuksHeader, slots: LuksKeySlot[], hash: LuksHash, password: Uint8Array): Promise<XtsPlain64> {
  const { afMerge, pbkdf2, XtsPlain64 } = await import('./crypto.js');
  const file = bs.file!.node;
  for (let i = 0; i < slots.length; i++) {
    const slot = slots[i]!;
    if (slot.active !== LUKS_KEY_ENABLED) continue;
    const slotKey = await pbkdf2(hash, password, slot.salt, slot.iterations, h.key_bytes);
    const splitBytes = h.key_bytes * slot.stripes;
    const material = new Uint8Array(Math.ceil(splitBytes / LUKS_SECTOR_SIZE) * LUKS_SECTOR_SIZE);
    await bdrvPread(file, slot.key_material_offset * LUKS_SECTOR_SIZE, material.length, material);
    new XtsPlain64(slotKey).decrypt(material, 0);
    const masterKey = afMerge(material, h.key_bytes, slot.stripes, hash);
    const digest = await pbkdf2(hash, masterKey, h.mk_digest_salt, h.mk_digest_iter, LUKS_DIGEST_SIZE);
    if (digest.every((b, k) => b === h.mk_digest[k])) return new XtsPlain64(masterKey);
  }
  throw new BlockError('EPERM', `${bs.filename}: Invalid password, cannot unlock any keyslot`);
}

export const luksDriver: BlockDriver = {
  name: 'luks',
  kind: 'format',
  // A new image's payload is unwritten ciphertext: it reads as noise, not zeros.
  hasZeroInit: false,

  probe(head) {
    return hasLuksMagic(head) && head.length >= 8 && head[6] === 0 && head[7] === 1 ? 100 : 0;
  },

  async open(bs, options) {
    const image = bs.filename;
    const file = bs.file!.node;
    const fileSize = file.totalBytes;
    if (fileSize < LUKS_HEADER_SIZE) throw new BlockError('EINVAL', `${image}: luks header: the file is ${fileSize} bytes, shorter than the ${LUKS_HEADER_SIZE}-byte header`);
    const buf = new Uint8Array(LUKS_HEADER_SIZE);
    await bdrvPread(file, 0, buf.length, buf);
    if (!hasLuksMagic(buf)) throw new BlockError('EINVAL', `${image}: luks header at 0x0: Volume is not in LUKS format`);
    const { header: h, slots } = parseLuks(buf);
    if (h.version !== 1) throw new BlockError('ENOTSUP', `${image}: luks header at ${hex(LUKS_HEADER.offsetOf('version'))}: LUKS version ${h.version} is not supported`);
    // plain64 ignores an IV hash; QEMU writes one into the mode when ivgen-hash-alg is given.
    if (h.cipher_name !== 'aes' || !/^xts-plain64(:[a-z0-9]+)?$/.test(h.cipher_mode)) {
      throw new BlockError('ENOTSUP', `${image}: luks header at ${hex(LUKS_HEADER.offsetOf('cipher_name'))}: cipher ${h.cipher_name}-${h.cipher_mode} is not supported (aes-xts-plain64 is)`);
    }
    if (!isLuksHash(h.hash_spec)) throw new BlockError('ENOTSUP', `${image}: luks header at ${hex(LUKS_HEADER.offsetOf('hash_spec'))}: hash ${h.hash_spec} is not supported`);
    if (h.key_bytes !== 32 && h.key_bytes !== 48 && h.key_bytes !== 64) {
      throw new BlockError('EINVAL', `${image}: luks header at ${hex(LUKS_HEADER.offsetOf('key_bytes'))}: key_bytes ${h.key_bytes} does not fit aes-xts`);
    }
    const payloadOffset = h.payload_offset * LUKS_SECTOR_SIZE;
    if (payloadOffset > fileSize) {
      throw new BlockError('ECORRUPT', `${image}: luks header at ${hex(LUKS_HEADER.offsetOf('payload_offset'))}: payload at ${hex(payloadOffset)} is past the end of the file (${fileSize} bytes)`);
    }
    const headerSectors = Math.ceil(LUKS_HEADER_SIZE / LUKS_SECTOR_SIZE);
    slots.forEach((s, i) => {
      if (s.active !== LUKS_KEY_ENABLED && s.active !== LUKS_KEY_DISABLED) throw new BlockError('ECORRUPT', `${image}: luks ${slotWhere(i)} is corrupted (active 0x${s.active.toString(16)})`);
      if (s.active !== LUKS_KEY_ENABLED) return;
      if (s.stripes !== LUKS_STRIPES) throw new BlockError('ECORRUPT', `${image}: luks ${slotWhere(i)} is corrupted (stripes ${s.stripes} != ${LUKS_STRIPES})`);
      const sectors = Math.ceil((h.key_bytes * s.stripes) / LUKS_SECTOR_SIZE);
      if (s.key_material_offset < headerSectors) throw new BlockError('ECORRUPT', `${image}: luks ${slotWhere(i)} is overlapping with the LUKS header`);
      if (s.key_material_offset + sectors > h.payload_offset) throw new BlockError('ECORRUPT', `${image}: luks ${slotWhere(i)} is overlapping with the encrypted payload area`);
      if (s.iterations === 0) throw new BlockError('ECORRUPT', `${image}: luks ${slotWhere(i)} has zero iterations`);
    });
    const secretId = options['key-secret'];
    let xts: XtsPlain64 | null = null;
    // Like QEMU, `info` (no I/O) reads the header without the key; everything else needs it.
    if (typeof secretId !== 'string') {
      if (!options.noIo) throw new BlockError('EINVAL', `${image}: Parameter 'key-secret' is required for cipher`);
    } else {
      const password = lookupSecret(secretId);
      if (!password) throw new BlockError('EINVAL', `${image}: No secret with id '${secretId}'`);
      xts = await unlock(bs, h, slots, h.hash_spec as LuksHash, password);
    }
    bs.opaque = { header: h, slots, payloadOffset, xts } satisfies LuksState;
    // Whole sectors, as QEMU counts a node's length: a tail shorter than a sector reads as if zero-padded.
    bs.totalBytes = roundToSector(fileSize - payloadOffset);
    bs.encrypted = true;
    bs.limits = { ...bs.limits, requestAlignment: LUKS_SECTOR_SIZE };
  },

  async preadv(bs, offset, bytes, buf) {
    const s = bs.state<LuksState>();
    const xts = cipher(bs, s);
    await bdrvPread(bs.file!.node, s.payloadOffset + offset, bytes, buf);
    xts.decrypt(buf, offset / LUKS_SECTOR_SIZE);
  },

  async pwritev(bs, offset, bytes, buf) {
    const s = bs.state<LuksState>();
    const xts = cipher(bs, s);
    // Encrypt in a bounce buffer, never in the caller's data (as QEMU: it may be guest memory).
    const chunk = allocBuffer(Math.min(bytes, WRITE_CHUNK));
    try {
      for (let done = 0; done < bytes; done += chunk.length) {
        const n = Math.min(chunk.length, bytes - done);
        const c = chunk.subarray(0, n);
        c.set(buf.subarray(done, done + n));
        xts.encrypt(c, (offset + done) / LUKS_SECTOR_SIZE);
        await bdrvPwrite(bs.file!.node, s.payloadOffset + offset + done, n, c);
      }
    } finally {
      freeBuffer(chunk);
    }
  },

  async truncate(bs, size, exact, prealloc) {
    const s = bs.state<LuksState>();
    await bdrvTruncate(bs.file!.node, s.payloadOffset + size, exact, prealloc);
    bs.totalBytes = roundToSector(size);
  },

  async blockStatus(_bs, _wantZero, _offset, bytes) {
    // As qemu-img map shows for luks: data everywhere, no offset into the file (it is encrypted).
    return { status: BDRV_BLOCK_DATA, pnum: bytes };
  },

  getDriverInfo: () => ({}),

  // qemu-img create -f luks, convert -O luks (create.ts).
  createOptions: LUKS_CREATE_OPTS,
  create: luksCreateImage,
  createRemovesFileOnError: true,
  measure: luksMeasure,
  checkCreate: (req) => void luksCreateOptions(req),

  async getAllocatedFileSize(bs) {
    const file = bs.file!.node;
    return file.driver.getAllocatedFileSize?.(file);
  },

  getInfo(bs): ImageInfoSpecific {
    const { header: h, slots } = bs.state<LuksState>();
    return {
      type: 'luks',
      data: {
        'ivgen-alg': 'plain64',
        'hash-alg': h.hash_spec,
        'cipher-alg': `aes-${(h.key_bytes / 2) * 8}`,
        uuid: h.uuid,
        'cipher-mode': 'xts',
        slots: slots.map((s) =>
          s.active === LUKS_KEY_ENABLED
            ? { active: true, iters: s.iterations, 'key-offset': s.key_material_offset * LUKS_SECTOR_SIZE, stripes: s.stripes }
            : { active: false, 'key-offset': s.key_material_offset * LUKS_SECTOR_SIZE },
        ),
        'payload-offset': h.payload_offset * LUKS_SECTOR_SIZE,
        'master-key-iters': h.mk_digest_iter,
      },
    };
  },
};


