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
 * Creation: create.ts. Key-slot amend: src/crypto/luks-amend.ts.
 */
import { BlockError, hex } from '../../block/errors.js';
import { type BlockDriver } from '../../block/driver.js';
import type { BlockNode } from '../../block/node.js';
import { bdrvFlush, bdrvPread, bdrvPwrite, bdrvTruncate } from '../../block/io.js';
import { BDRV_BLOCK_DATA } from '../../block/status.js';
import { lookupSecretUtf8 } from '../../block/secrets.js';
import type { ImageInfoSpecific } from '../../block/info.js';
import { allocBuffer, freeBuffer } from '../../block/buffers.js';
import { LUKS_CREATE_OPTS, luksCreateImage, luksCreateOptions, luksMeasure } from './create.js';
import { LUKS_HEADER, LUKS_HEADER_SIZE, LUKS_SECTOR_SIZE, type LuksHeader, type LuksKeySlot } from '../../crypto/luks-header.js';
import { luksCheckHeader, luksInfo, luksUnlock, type XtsPlain64 } from '../../crypto/luks-block.js';
import { luksAmend, luksAmendOptions, luksAmendParams } from '../../crypto/luks-amend.js';
import { luksProbe } from './probe.js';

interface LuksState {
  header: LuksHeader;
  slots: LuksKeySlot[];
  payloadOffset: number;
  /** The payload cipher, or null when opened for metadata only (no key). */
  xts: XtsPlain64 | null;
  /** The `key-secret` id the image was opened with (amend recovers the master key with it). */
  secretId: string | undefined;
}

/** Bytes encrypted per write to the file (QEMU's BLOCK_CRYPTO_MAX_IO_SIZE bounce buffer). */
const WRITE_CHUNK = 1 << 20;

const roundToSector = (n: number) => Math.ceil(n / LUKS_SECTOR_SIZE) * LUKS_SECTOR_SIZE;

function cipher(bs: BlockNode, s: LuksState): XtsPlain64 {
  if (!s.xts) throw new BlockError('EACCES', `${bs.filename}: the image was opened without its key ('key-secret')`);
  return s.xts;
}

export const luksDriver: BlockDriver = {
  name: 'luks',
  strongRuntimeOpts: ['key-secret'],
  kind: 'format',
  // A new image's payload is unwritten ciphertext: it reads as noise, not zeros.
  hasZeroInit: false,

  probe: luksProbe,

  async open(bs, options) {
    const image = bs.filename;
    const file = bs.file!.node;
    const fileSize = file.totalBytes;
    if (fileSize < LUKS_HEADER_SIZE) throw new BlockError('EINVAL', `${image}: luks header: the file is ${fileSize} bytes, shorter than the ${LUKS_HEADER_SIZE}-byte header`);
    const buf = new Uint8Array(LUKS_HEADER_SIZE);
    await bdrvPread(file, 0, buf.length, buf);
    const v = luksCheckHeader(buf, `${image}: luks`);
    const { header: h, slots } = v;
    const payloadOffset = h.payload_offset * LUKS_SECTOR_SIZE;
    if (payloadOffset > fileSize) {
      throw new BlockError('ECORRUPT', `${image}: luks header at ${hex(LUKS_HEADER.offsetOf('payload_offset'))}: payload at ${hex(payloadOffset)} is past the end of the file (${fileSize} bytes)`);
    }
    const secretId = options['key-secret'];
    let xts: XtsPlain64 | null = null;
    // Like QEMU, `info` (no I/O) reads the header without the key; everything else needs it.
    if (typeof secretId !== 'string') {
      if (!options.noIo) throw new BlockError('EINVAL', `${image}: Parameter 'key-secret' is required for cipher`);
    } else {
      const password = lookupSecretUtf8(secretId);
      if (!password) throw new BlockError('EINVAL', `${image}: No secret with id '${secretId}'`);
      xts = await luksUnlock(v, (off, n, b) => bdrvPread(file, off, n, b), password, image);
    }
    bs.opaque = { header: h, slots, payloadOffset, xts, secretId: typeof secretId === 'string' ? secretId : undefined } satisfies LuksState;
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

  // qemu-img amend -o state=active|inactive,... (src/crypto/luks-amend.ts).
  amendOptions: luksAmendOptions(),
  async amend(bs, values, force = false) {
    const s = bs.state<LuksState>();
    if (bs.readOnly) throw new BlockError('EROFS', `${bs.filename}: cannot amend an image opened read-only`);
    const file = bs.file!.node;
    const params = luksAmendParams((name) => values.get(name));
    await luksAmend(
      {
        volume: s,
        io: { read: (off, n, b) => bdrvPread(file, off, n, b), write: (off, n, b) => bdrvPwrite(file, off, n, b) },
        openSecret: s.secretId,
        lookupSecret: lookupSecretUtf8,
        force,
        image: bs.filename,
      },
      params,
    );
    await bdrvFlush(file);
  },

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
    const { header, slots } = bs.state<LuksState>();
    return { type: 'luks', data: luksInfo({ header, slots }) };
  },
};


