/**
 * Creating a LUKS1 image as QEMU's qcrypto_block_luks_create lays it out:
 * the 592-byte header at 0; eight key-slot material areas from sector 8,
 * each `key_bytes * 4000` bytes rounded up to whole sectors and then to
 * 4 KiB (cryptsetup's layout, which QEMU follows); the payload after the
 * eighth. A random master key; its PBKDF2 digest with a random salt; key
 * slot 0 holds the master key split over 4000 anti-forensic stripes and
 * encrypted (aes-xts-plain64, sectors from 0) with the PBKDF2 of the
 * `key-secret` password. The other slots stay disabled and their areas
 * unwritten. The header area itself is built by src/crypto/luks-block.ts
 * (shared with encrypted qcow2).
 *
 * PBKDF2 counts come from `iter-time` as in QEMU: iterations per second are
 * measured once, the master key digest gets an eighth of iter-time's worth
 * (cryptsetup's choice, so eight slots cost one iter-time to try), slot 0
 * all of it; each at least 1000. QEMU times the slot separately with its
 * key-sized output; PBKDF2 costs one run per hash-sized block of output,
 * so here the one measurement is divided by that block count instead.
 */
import { BlockError } from '../../block/errors.js';
import type { ImageCreateRequest, MeasureResult, PreallocMode } from '../../block/driver.js';
import type { BlockNode } from '../../block/node.js';
import { bdrvPwrite, bdrvTruncate } from '../../block/io.js';
import type { OptionDesc, OptionValues } from '../../block/options.js';
import { lookupSecret, lookupSecretUtf8 } from '../../block/secrets.js';
import { LUKS_HEADER_SIZE, LUKS_SECTOR_SIZE, parseLuks } from '../../crypto/luks-header.js';
import { CIPHER_ALGS, CIPHER_MODES, HASH_ALGS, IVGEN_ALGS, luksAreaBytes, luksBuildArea, luksCreateParams, type LuksCreateParams } from '../../crypto/luks-block.js';

/** QEMU's block_crypto_create_opts_luks, in table order (no defaults printed: QEMU's have none). */
export const LUKS_CREATE_OPTS: readonly OptionDesc[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'key-secret', type: 'str', help: 'ID of the secret that provides the keyslot passphrase' },
  { name: 'cipher-alg', type: 'str', help: 'Name of encryption cipher algorithm', qapi: { enum: CIPHER_ALGS } },
  { name: 'cipher-mode', type: 'str', help: 'Name of encryption cipher mode', qapi: { enum: CIPHER_MODES } },
  { name: 'ivgen-alg', type: 'str', help: 'Name of IV generator algorithm', qapi: { enum: IVGEN_ALGS } },
  { name: 'ivgen-hash-alg', type: 'str', help: 'Name of IV generator hash algorithm', qapi: { enum: HASH_ALGS } },
  { name: 'hash-alg', type: 'str', help: 'Name of encryption hash algorithm', qapi: { enum: HASH_ALGS } },
  { name: 'iter-time', type: 'num', help: 'Time to spend in PBKDF in milliseconds' },
];

export interface LuksCreateOptions extends LuksCreateParams {
  /** Payload (virtual) size in bytes. */
  size: number;
  prealloc: PreallocMode;
}

/** The request's options checked as QEMU checks them; ENOTSUP for what QEMU makes but blocktab cannot read. */
export function luksCreateOptions(req: ImageCreateRequest, lookup = lookupSecret): LuksCreateOptions {
  const params = luksCreateParams((name) => req.values.get(name), lookup);
  let prealloc = req.values.get('preallocation') ?? 'off';
  if (!['off', 'metadata', 'falloc', 'full'].includes(prealloc)) throw new BlockError('EINVAL', `invalid parameter value: ${prealloc}`);
  // QEMU's luks has no metadata to preallocate: metadata means off.
  if (prealloc === 'metadata') prealloc = 'off';
  return { ...params, size: req.size, prealloc: prealloc as PreallocMode };
}

/**
 * `qemu-img measure -O luks` (QEMU's block_crypto_measure): the payload
 * offset of a header made with these options plus the guest size (not
 * rounded), both for required and fully allocated. The options are checked
 * as create checks them, so the secret must be given.
 */
export async function luksMeasure(values: OptionValues, input: BlockNode | undefined, size: number | undefined): Promise<MeasureResult> {
  const o = luksCreateOptions({ filename: '', size: 0, values, origin: 'qemu-img', openFile: () => Promise.reject(new BlockError('ENOTSUP', 'no files here')) });
  const bytes = luksAreaBytes(o.keyBytes) + (input ? input.totalBytes : size ?? 0);
  return { required: bytes, fullyAllocated: bytes };
}

/** Writes a new LUKS1 image into the empty protocol node `file`: the header and slot 0's material; the other slot areas stay unwritten. */
export async function createLuks(file: BlockNode, o: LuksCreateOptions): Promise<void> {
  const area = await luksBuildArea(o);
  const { header, slots } = parseLuks(area);
  await bdrvTruncate(file, area.length + o.size, true, o.prealloc);
  await bdrvPwrite(file, 0, LUKS_HEADER_SIZE, area.subarray(0, LUKS_HEADER_SIZE));
  const at = slots[0]!.key_material_offset * LUKS_SECTOR_SIZE;
  const len = Math.ceil((header.key_bytes * slots[0]!.stripes) / LUKS_SECTOR_SIZE) * LUKS_SECTOR_SIZE;
  await bdrvPwrite(file, at, len, area.subarray(at, at + len));
}

/** The driver's `create` hook (qemu-img create -f luks, convert -O luks, blockdev-create). */
export async function luksCreateImage(file: BlockNode, req: ImageCreateRequest): Promise<void> {
  // The passphrase is read as UTF-8 only now, with the file made: QEMU removes the file, even one that was there (282).
  await createLuks(file, luksCreateOptions(req, lookupSecretUtf8));
}
