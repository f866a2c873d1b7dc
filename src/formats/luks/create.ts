/**
 * Creating a LUKS1 image as QEMU's qcrypto_block_luks_create lays it out:
 * the 592-byte header at 0; eight key-slot material areas from sector 8,
 * each `key_bytes * 4000` bytes rounded up to whole sectors and then to
 * 4 KiB (cryptsetup's layout, which QEMU follows); the payload after the
 * eighth. A random master key; its PBKDF2 digest with a random salt; key
 * slot 0 holds the master key split over 4000 anti-forensic stripes and
 * encrypted (aes-xts-plain64, sectors from 0) with the PBKDF2 of the
 * `key-secret` password. The other slots stay disabled and their areas
 * unwritten.
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
import { optNumber, type OptionDesc, type OptionValues } from '../../block/options.js';
import { lookupSecret } from '../../block/secrets.js';
import { randomUuid } from '../on-disk.js';
import {
  LUKS_DIGEST_SIZE,
  LUKS_HEADER_SIZE,
  LUKS_KEY_DISABLED,
  LUKS_KEY_ENABLED,
  LUKS_MAGIC,
  LUKS_NUM_KEY_SLOTS,
  LUKS_SECTOR_SIZE,
  LUKS_STRIPES,
  serializeLuks,
  type LuksKeySlot,
} from './header.js';
// The ciphers load when an image is made (crypto.ts pulls in the AES tables): the CLI's start-up stays without them.
import type { LuksHash } from './crypto.js';

/** QEMU's QCryptoCipherAlgorithm, QCryptoCipherMode, QCryptoIVGenAlgorithm and QCryptoHashAlgorithm (7.2). */
const CIPHER_ALGS = ['aes-128', 'aes-192', 'aes-256', 'des', '3des', 'cast5-128', 'serpent-128', 'serpent-192', 'serpent-256', 'twofish-128', 'twofish-192', 'twofish-256'] as const;
const CIPHER_MODES = ['ecb', 'cbc', 'xts', 'ctr'] as const;
const IVGEN_ALGS = ['plain', 'plain64', 'essiv'] as const;
const HASH_ALGS = ['md5', 'sha1', 'sha224', 'sha256', 'sha384', 'sha512', 'ripemd160'] as const;

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

/** QEMU's QCRYPTO_BLOCK_LUKS_KEY_SLOT_OFFSET: key material starts at 4 KiB and each area is a multiple of it. */
const KEY_SLOT_AREA_ALIGN = 4096 / LUKS_SECTOR_SIZE;
/** QEMU's QCRYPTO_BLOCK_LUKS_MIN_SLOT_KEY_ITERS and ..._MIN_MASTER_KEY_ITERS. */
const MIN_ITERS = 1000;
const UINT32_MAX = 0xffffffff;

export interface LuksCreateOptions {
  /** Payload (virtual) size in bytes. */
  size: number;
  password: Uint8Array;
  /** Key length in bytes of aes-xts: 32 (aes-128), 48 (aes-192) or 64 (aes-256). */
  keyBytes: number;
  hash: LuksHash;
  /** The cipher_mode string: xts-plain64, or xts-plain64:HASH when an ivgen hash was named (plain64 ignores it). */
  cipherMode: string;
  /** Milliseconds of PBKDF2 to aim at. */
  iterTime: number;
  prealloc: PreallocMode;
}

/** The hashes crypto.ts implements (its LuksHash). */
const CREATE_HASHES: readonly LuksHash[] = ['sha1', 'sha256', 'sha512'];
const isCreateHash = (h: string): h is LuksHash => (CREATE_HASHES as readonly string[]).includes(h);

function enumValue<T extends string>(values: OptionValues, name: string, allowed: readonly T[], def: T): T {
  const v = values.get(name) ?? def;
  if (!(allowed as readonly string[]).includes(v)) throw new BlockError('EINVAL', `Parameter '${name}' does not accept value '${v}'`);
  return v as T;
}

/** The request's options checked as QEMU checks them; ENOTSUP for what QEMU makes but blocktab cannot read. */
export function luksCreateOptions(req: ImageCreateRequest): LuksCreateOptions {
  const v = req.values;
  const cipherAlg = enumValue(v, 'cipher-alg', CIPHER_ALGS, 'aes-256');
  const cipherMode = enumValue(v, 'cipher-mode', CIPHER_MODES, 'xts');
  const ivgenAlg = enumValue(v, 'ivgen-alg', IVGEN_ALGS, 'plain64');
  const ivgenHash = v.has('ivgen-hash-alg') ? enumValue(v, 'ivgen-hash-alg', HASH_ALGS, 'sha256') : undefined;
  const hash = enumValue(v, 'hash-alg', HASH_ALGS, 'sha256');
  const secretId = v.get('key-secret');
  if (secretId === undefined) throw new BlockError('EINVAL', "Parameter 'key-secret' is required for cipher");
  const password = lookupSecret(secretId);
  if (!password) throw new BlockError('EINVAL', `No secret with id '${secretId}'`);
  if (cipherAlg === 'des' || cipherAlg === '3des') throw new BlockError('ENOTSUP', `Algorithm '${cipherAlg}' not supported`);
  const aes = /^aes-(128|192|256)$/.exec(cipherAlg);
  if (!aes || cipherMode !== 'xts' || ivgenAlg !== 'plain64') {
    throw new BlockError('ENOTSUP', `cipher ${cipherAlg}-${cipherMode}-${ivgenAlg} is not supported (blocktab makes aes-128, aes-192 or aes-256 with xts and plain64)`);
  }
  if (!isCreateHash(hash)) throw new BlockError('ENOTSUP', `hash ${hash} is not supported (sha1, sha256 or sha512 is)`);
  const iterTime = optNumber(v, 'iter-time') ?? 2000;
  if (!Number.isSafeInteger(iterTime) || iterTime < 0) throw new BlockError('EINVAL', "Parameter 'iter-time' expects a number");
  let prealloc = v.get('preallocation') ?? 'off';
  if (!['off', 'metadata', 'falloc', 'full'].includes(prealloc)) throw new BlockError('EINVAL', `invalid parameter value: ${prealloc}`);
  // QEMU's luks has no metadata to preallocate: metadata means off.
  if (prealloc === 'metadata') prealloc = 'off';
  return {
    size: req.size,
    password,
    keyBytes: (Number(aes[1]) / 8) * 2,
    hash,
    cipherMode: ivgenHash ? `xts-plain64:${ivgenHash}` : 'xts-plain64',
    iterTime,
    prealloc: prealloc as PreallocMode,
  };
}

/** Iterations for `iterTime` ms at `perSecond`, divided by `share`; QEMU's bounds and messages. */
function scaleIters(perSecond: number, iterTime: number, share: number): number {
  const iters = Math.floor((perSecond * iterTime) / 1000 / share);
  if (iters > UINT32_MAX) throw new BlockError('EINVAL', `PBKDF iterations ${iters} larger than ${UINT32_MAX}`);
  return Math.max(iters, MIN_ITERS);
}

function uuidString(u: Uint8Array): string {
  const h = Array.from(u, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** QEMU's layout: the header's 4 KiB, then eight key material areas each rounded to 4 KiB. */
function luksLayout(keyBytes: number): { headerSectors: number; materialSectors: number; areaSectors: number; payloadSectors: number } {
  const headerSectors = KEY_SLOT_AREA_ALIGN;
  const materialSectors = Math.ceil((keyBytes * LUKS_STRIPES) / LUKS_SECTOR_SIZE);
  const areaSectors = Math.ceil(materialSectors / KEY_SLOT_AREA_ALIGN) * KEY_SLOT_AREA_ALIGN;
  return { headerSectors, materialSectors, areaSectors, payloadSectors: headerSectors + LUKS_NUM_KEY_SLOTS * areaSectors };
}

/**
 * `qemu-img measure -O luks` (QEMU's block_crypto_measure): the payload
 * offset of a header made with these options plus the guest size (not
 * rounded), both for required and fully allocated. The options are checked
 * as create checks them, so the secret must be given.
 */
export async function luksMeasure(values: OptionValues, input: BlockNode | undefined, size: number | undefined): Promise<MeasureResult> {
  const o = luksCreateOptions({ filename: '', size: 0, values, origin: 'qemu-img', openFile: () => Promise.reject(new BlockError('ENOTSUP', 'no files here')) });
  const bytes = luksLayout(o.keyBytes).payloadSectors * LUKS_SECTOR_SIZE + (input ? input.totalBytes : size ?? 0);
  return { required: bytes, fullyAllocated: bytes };
}

/** Writes a new LUKS1 image into the empty protocol node `file`. */
export async function createLuks(file: BlockNode, o: LuksCreateOptions): Promise<void> {
  const { afSplit, hashLen, pbkdf2, pbkdf2IterationsPerSecond, randomBytes, XtsPlain64 } = await import('./crypto.js');
  const { headerSectors, materialSectors, areaSectors, payloadSectors } = luksLayout(o.keyBytes);
  const materialBytes = o.keyBytes * LUKS_STRIPES;

  const masterKey = randomBytes(o.keyBytes);
  const perSecond = await pbkdf2IterationsPerSecond(o.hash, LUKS_DIGEST_SIZE);
  const mkDigestIter = scaleIters(perSecond, o.iterTime, 8);
  const slotIters = scaleIters(perSecond / Math.ceil(o.keyBytes / hashLen(o.hash)), o.iterTime, 1);

  const mkDigestSalt = randomBytes(32);
  const mkDigest = await pbkdf2(o.hash, masterKey, mkDigestSalt, mkDigestIter, LUKS_DIGEST_SIZE);

  const slotSalt = randomBytes(32);
  const slotKey = await pbkdf2(o.hash, o.password, slotSalt, slotIters, o.keyBytes);
  const material = new Uint8Array(materialSectors * LUKS_SECTOR_SIZE);
  material.set(afSplit(masterKey, LUKS_STRIPES, o.hash));
  new XtsPlain64(slotKey).encrypt(material, 0);

  const slots: LuksKeySlot[] = [];
  for (let i = 0; i < LUKS_NUM_KEY_SLOTS; i++) {
    slots.push({
      active: i === 0 ? LUKS_KEY_ENABLED : LUKS_KEY_DISABLED,
      iterations: i === 0 ? slotIters : 0,
      salt: i === 0 ? slotSalt : new Uint8Array(32),
      key_material_offset: headerSectors + i * areaSectors,
      stripes: LUKS_STRIPES,
    });
  }
  const header = serializeLuks(
    {
      magic: Uint8Array.from(LUKS_MAGIC),
      version: 1,
      cipher_name: 'aes',
      cipher_mode: o.cipherMode,
      hash_spec: o.hash,
      payload_offset: payloadSectors,
      key_bytes: o.keyBytes,
      mk_digest: mkDigest,
      mk_digest_salt: mkDigestSalt,
      mk_digest_iter: mkDigestIter,
      uuid: uuidString(randomUuid()),
    },
    slots,
  );
  await bdrvTruncate(file, payloadSectors * LUKS_SECTOR_SIZE + o.size, true, o.prealloc);
  await bdrvPwrite(file, 0, LUKS_HEADER_SIZE, header);
  await bdrvPwrite(file, slots[0]!.key_material_offset * LUKS_SECTOR_SIZE, material.length, material);
}

/** The driver's `create` hook (qemu-img create -f luks, convert -O luks, blockdev-create). */
export async function luksCreateImage(file: BlockNode, req: ImageCreateRequest): Promise<void> {
  await createLuks(file, luksCreateOptions(req));
}
