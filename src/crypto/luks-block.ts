/**
 * A LUKS1 volume header as QEMU's crypto/block-luks.c handles it, apart
 * from where it lives: the luks format keeps it at the start of its file,
 * an encrypted qcow2 image in clusters its crypto header extension names.
 * Both give this module the header's bytes (or a reader over the header
 * area, offsets from its start) and get back the checked header, the
 * unlocked payload cipher, the `info` fields, or a new header area.
 *
 * Checks (with QEMU's reasons): version 1, aes with xts-plain64 and a hash
 * crypto.ts implements, an aes-xts key size, each active slot with 4000
 * stripes, key material after the header and before the payload, non-zero
 * iterations. Unlocking tries each active slot: PBKDF2 of the password,
 * decrypt the slot's material, merge the anti-forensic stripes, compare the
 * master key's PBKDF2 digest.
 *
 * Creation lays the area out as qcrypto_block_luks_create: the 592-byte
 * header at 0; eight key-slot areas from sector 8, each `key_bytes * 4000`
 * bytes rounded up to whole sectors and then to 4 KiB; the payload offset
 * after the eighth. PBKDF2 counts come from `iter-time`: iterations per
 * second are measured once, the master key digest gets an eighth of
 * iter-time's worth, slot 0 all of it (cryptsetup's split), each at least
 * 1000. The ciphers load only when a key is used (the AES tables cost
 * start-up time to every other command).
 */
import { BlockError, hex } from '../block/errors.js';
import { randomUuid } from '../formats/on-disk.js';
import {
  LUKS_DIGEST_SIZE,
  LUKS_HEADER,
  LUKS_HEADER_SIZE,
  LUKS_KEY_DISABLED,
  LUKS_KEY_ENABLED,
  LUKS_KEY_SLOT,
  LUKS_KEY_SLOT_OFFSET,
  LUKS_MAGIC,
  LUKS_NUM_KEY_SLOTS,
  LUKS_SECTOR_SIZE,
  LUKS_STRIPES,
  hasLuksMagic,
  parseLuks,
  serializeLuks,
  type LuksHeader,
  type LuksKeySlot,
} from './luks-header.js';
import type { LuksHash, XtsPlain64 } from './luks-crypto.js';

export type { LuksHash, XtsPlain64 };

/** The hashes luks-crypto.ts implements (checked before the ciphers load). */
const LUKS_HASHES: readonly string[] = ['sha1', 'sha256', 'sha512'] satisfies LuksHash[];
const isLuksHash = (h: string): h is LuksHash => LUKS_HASHES.includes(h);

/** Reads `bytes` bytes of the header area at `offset` (from the area's start) into `buf`. */
export type LuksAreaReader = (offset: number, bytes: number, buf: Uint8Array) => Promise<void>;

export interface LuksVolume {
  header: LuksHeader;
  slots: LuksKeySlot[];
}

export function slotWhere(i: number): string {
  return `key slot ${i} at ${hex(LUKS_KEY_SLOT_OFFSET + i * LUKS_KEY_SLOT.size)}`;
}

/** Parses and checks the 592-byte header `buf`; `what` starts each message (e.g. "IMAGE: luks"). */
export function luksCheckHeader(buf: Uint8Array, what: string): LuksVolume {
  if (!hasLuksMagic(buf)) throw new BlockError('EINVAL', `${what} header at 0x0: Volume is not in LUKS format`);
  const { header: h, slots } = parseLuks(buf);
  if (h.version !== 1) throw new BlockError('ENOTSUP', `${what} header at ${hex(LUKS_HEADER.offsetOf('version'))}: LUKS version ${h.version} is not supported`);
  // plain64 ignores an IV hash; QEMU writes one into the mode when ivgen-hash-alg is given.
  if (h.cipher_name !== 'aes' || !/^xts-plain64(:[a-z0-9]+)?$/.test(h.cipher_mode)) {
    throw new BlockError('ENOTSUP', `${what} header at ${hex(LUKS_HEADER.offsetOf('cipher_name'))}: cipher ${h.cipher_name}-${h.cipher_mode} is not supported (aes-xts-plain64 is)`);
  }
  if (!isLuksHash(h.hash_spec)) throw new BlockError('ENOTSUP', `${what} header at ${hex(LUKS_HEADER.offsetOf('hash_spec'))}: hash ${h.hash_spec} is not supported`);
  if (h.key_bytes !== 32 && h.key_bytes !== 48 && h.key_bytes !== 64) {
    throw new BlockError('EINVAL', `${what} header at ${hex(LUKS_HEADER.offsetOf('key_bytes'))}: key_bytes ${h.key_bytes} does not fit aes-xts`);
  }
  const headerSectors = Math.ceil(LUKS_HEADER_SIZE / LUKS_SECTOR_SIZE);
  slots.forEach((s, i) => {
    if (s.active !== LUKS_KEY_ENABLED && s.active !== LUKS_KEY_DISABLED) throw new BlockError('ECORRUPT', `${what} ${slotWhere(i)} is corrupted (active 0x${s.active.toString(16)})`);
    if (s.active !== LUKS_KEY_ENABLED) return;
    if (s.stripes !== LUKS_STRIPES) throw new BlockError('ECORRUPT', `${what} ${slotWhere(i)} is corrupted (stripes ${s.stripes} != ${LUKS_STRIPES})`);
    const sectors = Math.ceil((h.key_bytes * s.stripes) / LUKS_SECTOR_SIZE);
    if (s.key_material_offset < headerSectors) throw new BlockError('ECORRUPT', `${what} ${slotWhere(i)} is overlapping with the LUKS header`);
    if (s.key_material_offset + sectors > h.payload_offset) throw new BlockError('ECORRUPT', `${what} ${slotWhere(i)} is overlapping with the encrypted payload area`);
    if (s.iterations === 0) throw new BlockError('ECORRUPT', `${what} ${slotWhere(i)} has zero iterations`);
  });
  return { header: h, slots };
}

/**
 * The master key slot `index` holds for `password`, or null when the slot
 * is inactive or the password does not open it (QEMU's load_key).
 */
export async function luksLoadKey(v: LuksVolume, read: LuksAreaReader, index: number, password: Uint8Array): Promise<Uint8Array | null> {
  const { afMerge, pbkdf2, XtsPlain64 } = await import('./luks-crypto.js');
  const h = v.header;
  const slot = v.slots[index]!;
  if (slot.active !== LUKS_KEY_ENABLED) return null;
  const hash = h.hash_spec as LuksHash;
  const slotKey = await pbkdf2(hash, password, slot.salt, slot.iterations, h.key_bytes);
  const material = new Uint8Array(Math.ceil((h.key_bytes * slot.stripes) / LUKS_SECTOR_SIZE) * LUKS_SECTOR_SIZE);
  await read(slot.key_material_offset * LUKS_SECTOR_SIZE, material.length, material);
  new XtsPlain64(slotKey).decrypt(material, 0);
  const masterKey = afMerge(material, h.key_bytes, slot.stripes, hash);
  const digest = await pbkdf2(hash, masterKey, h.mk_digest_salt, h.mk_digest_iter, LUKS_DIGEST_SIZE);
  return digest.every((b, k) => b === h.mk_digest[k]) ? masterKey : null;
}

/** The master key from the first active slot `password` opens; EPERM (QEMU's message) when none does. */
export async function luksFindKey(v: LuksVolume, read: LuksAreaReader, password: Uint8Array, image: string): Promise<Uint8Array> {
  for (let i = 0; i < v.slots.length; i++) {
    const key = await luksLoadKey(v, read, i, password);
    if (key) return key;
  }
  throw new BlockError('EPERM', `${image}: Invalid password, cannot unlock any keyslot`);
}

/** The payload cipher of `v`, unlocked with `password`; EPERM (QEMU's message) when no slot opens. */
export async function luksUnlock(v: LuksVolume, read: LuksAreaReader, password: Uint8Array, image: string): Promise<XtsPlain64> {
  const { XtsPlain64 } = await import('./luks-crypto.js');
  return new XtsPlain64(await luksFindKey(v, read, password, image));
}

/** QEMU's QCryptoBlockInfoLUKS fields in its order, after the `format` key when `format` is given (qcow2's encrypt block). */
export function luksInfo(v: LuksVolume, format?: string): Record<string, unknown> {
  const h = v.header;
  return {
    'ivgen-alg': 'plain64',
    'hash-alg': h.hash_spec,
    'cipher-alg': `aes-${(h.key_bytes / 2) * 8}`,
    uuid: h.uuid,
    ...(format !== undefined ? { format } : {}),
    'cipher-mode': 'xts',
    slots: v.slots.map((s) =>
      s.active === LUKS_KEY_ENABLED
        ? { active: true, iters: s.iterations, 'key-offset': s.key_material_offset * LUKS_SECTOR_SIZE, stripes: s.stripes }
        : { active: false, 'key-offset': s.key_material_offset * LUKS_SECTOR_SIZE },
    ),
    'payload-offset': h.payload_offset * LUKS_SECTOR_SIZE,
    'master-key-iters': h.mk_digest_iter,
  };
}

// ------------------------------------------------------------------ creation

/** QEMU's QCryptoCipherAlgorithm, QCryptoCipherMode, QCryptoIVGenAlgorithm and QCryptoHashAlgorithm (7.2). */
export const CIPHER_ALGS = ['aes-128', 'aes-192', 'aes-256', 'des', '3des', 'cast5-128', 'serpent-128', 'serpent-192', 'serpent-256', 'twofish-128', 'twofish-192', 'twofish-256'] as const;
export const CIPHER_MODES = ['ecb', 'cbc', 'xts', 'ctr'] as const;
export const IVGEN_ALGS = ['plain', 'plain64', 'essiv'] as const;
export const HASH_ALGS = ['md5', 'sha1', 'sha224', 'sha256', 'sha384', 'sha512', 'ripemd160'] as const;

/** QEMU's QCRYPTO_BLOCK_LUKS_KEY_SLOT_OFFSET: key material starts at 4 KiB and each area is a multiple of it. */
const KEY_SLOT_AREA_ALIGN = 4096 / LUKS_SECTOR_SIZE;
/** QEMU's QCRYPTO_BLOCK_LUKS_MIN_SLOT_KEY_ITERS and ..._MIN_MASTER_KEY_ITERS. */
export const MIN_ITERS = 1000;
export const UINT32_MAX = 0xffffffff;
/** QEMU's default iter-time: milliseconds of PBKDF2 per key slot. */
export const DEFAULT_ITER_TIME = 2000;

export interface LuksCreateParams {
  password: Uint8Array;
  /** Key length in bytes of aes-xts: 32 (aes-128), 48 (aes-192) or 64 (aes-256). */
  keyBytes: number;
  hash: LuksHash;
  /** The cipher_mode string: xts-plain64, or xts-plain64:HASH when an ivgen hash was named (plain64 ignores it). */
  cipherMode: string;
  /** Milliseconds of PBKDF2 to aim at. */
  iterTime: number;
}

function enumValue<T extends string>(get: (name: string) => string | undefined, name: string, allowed: readonly T[], def: T): T {
  const v = get(name) ?? def;
  if (!(allowed as readonly string[]).includes(v)) throw new BlockError('EINVAL', `Parameter '${name}' does not accept value '${v}'`);
  return v as T;
}

/**
 * The LUKS creation options (cipher-alg, cipher-mode, ivgen-alg,
 * ivgen-hash-alg, hash-alg, iter-time, key-secret) checked as QEMU checks
 * them; `secretParam` is how the key-secret option is named in messages.
 * ENOTSUP for what QEMU makes but blocktab cannot read.
 */
export function luksCreateParams(get: (name: string) => string | undefined, lookupSecret: (id: string) => Uint8Array | undefined, secretParam = 'key-secret'): LuksCreateParams {
  const cipherAlg = enumValue(get, 'cipher-alg', CIPHER_ALGS, 'aes-256');
  const cipherMode = enumValue(get, 'cipher-mode', CIPHER_MODES, 'xts');
  const ivgenAlg = enumValue(get, 'ivgen-alg', IVGEN_ALGS, 'plain64');
  const ivgenHash = get('ivgen-hash-alg') !== undefined ? enumValue(get, 'ivgen-hash-alg', HASH_ALGS, 'sha256') : undefined;
  const hash = enumValue(get, 'hash-alg', HASH_ALGS, 'sha256');
  const secretId = get('key-secret');
  if (secretId === undefined) throw new BlockError('EINVAL', `Parameter '${secretParam}' is required for cipher`);
  const password = lookupSecret(secretId);
  if (!password) throw new BlockError('EINVAL', `No secret with id '${secretId}'`);
  if (cipherAlg === 'des' || cipherAlg === '3des') throw new BlockError('ENOTSUP', `Algorithm '${cipherAlg}' not supported`);
  const aes = /^aes-(128|192|256)$/.exec(cipherAlg);
  if (!aes || cipherMode !== 'xts' || ivgenAlg !== 'plain64') {
    throw new BlockError('ENOTSUP', `cipher ${cipherAlg}-${cipherMode}-${ivgenAlg} is not supported (blocktab makes aes-128, aes-192 or aes-256 with xts and plain64)`);
  }
  if (!isLuksHash(hash)) throw new BlockError('ENOTSUP', `hash ${hash} is not supported (sha1, sha256 or sha512 is)`);
  const it = get('iter-time');
  const iterTime = it === undefined ? DEFAULT_ITER_TIME : Number(it);
  if (!Number.isSafeInteger(iterTime) || iterTime < 0) throw new BlockError('EINVAL', "Parameter 'iter-time' expects a number");
  return {
    password,
    keyBytes: (Number(aes[1]) / 8) * 2,
    hash,
    cipherMode: ivgenHash ? `xts-plain64:${ivgenHash}` : 'xts-plain64',
    iterTime,
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

/** Bytes of the header area (header and eight key-slot areas) a volume with `keyBytes`-byte keys needs: its payload offset. */
export function luksAreaBytes(keyBytes: number): number {
  const materialSectors = Math.ceil((keyBytes * LUKS_STRIPES) / LUKS_SECTOR_SIZE);
  const areaSectors = Math.ceil(materialSectors / KEY_SLOT_AREA_ALIGN) * KEY_SLOT_AREA_ALIGN;
  return (KEY_SLOT_AREA_ALIGN + LUKS_NUM_KEY_SLOTS * areaSectors) * LUKS_SECTOR_SIZE;
}

/**
 * A new volume's header area (luksAreaBytes long): a random master key, its
 * digest, key slot 0 holding it for `o.password`, the other slots disabled
 * and their areas zero.
 */
export async function luksBuildArea(o: LuksCreateParams): Promise<Uint8Array> {
  const { afSplit, hashLen, pbkdf2, pbkdf2IterationsPerSecond, randomBytes, XtsPlain64 } = await import('./luks-crypto.js');
  const areaBytes = luksAreaBytes(o.keyBytes);
  const materialSectors = Math.ceil((o.keyBytes * LUKS_STRIPES) / LUKS_SECTOR_SIZE);
  const slotSectors = Math.ceil(materialSectors / KEY_SLOT_AREA_ALIGN) * KEY_SLOT_AREA_ALIGN;

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
      key_material_offset: KEY_SLOT_AREA_ALIGN + i * slotSectors,
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
      payload_offset: areaBytes / LUKS_SECTOR_SIZE,
      key_bytes: o.keyBytes,
      mk_digest: mkDigest,
      mk_digest_salt: mkDigestSalt,
      mk_digest_iter: mkDigestIter,
      uuid: uuidString(randomUuid()),
    },
    slots,
  );
  const area = new Uint8Array(areaBytes);
  area.set(header);
  area.set(material, slots[0]!.key_material_offset * LUKS_SECTOR_SIZE);
  return area;
}
