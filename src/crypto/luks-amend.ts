/**
 * LUKS1 key-slot management (`qemu-img amend -o state=...`), with the
 * semantics and messages of QEMU 7.2's crypto/block-luks.c amend, shared by
 * the luks format and encrypted qcow2 (which name the options with an
 * `encrypt.` prefix and keep the header area elsewhere in their file).
 *
 * state=active adds a password: the master key is recovered with the
 * password the image was opened with (`key-secret`), then written to the
 * named slot or the first inactive one, split over the slot's stripes and
 * encrypted with PBKDF2 of the new password; the slot's material first,
 * then the header that activates it (a crash leaves the slot inactive).
 * An active slot is only overwritten with `force`.
 *
 * state=inactive erases either one named slot or every slot the old
 * password opens: the header first marks the slots inactive (zero salt and
 * iterations), then the key material is overwritten with random bytes
 * (QEMU's 40 passes), so a header restored from a backup opens nothing.
 * Erasing the last active slot (which loses the data for good) needs
 * `force`.
 */
import { BlockError } from '../block/errors.js';
import type { OptionDesc } from '../block/options.js';
import { DEFAULT_ITER_TIME, luksFindKey, luksLoadKey, MIN_ITERS, slotWhere, UINT32_MAX, type LuksAreaReader, type LuksHash, type LuksVolume } from './luks-block.js';
import {
  LUKS_HEADER_SIZE,
  LUKS_KEY_DISABLED,
  LUKS_KEY_ENABLED,
  LUKS_NUM_KEY_SLOTS,
  LUKS_SECTOR_SIZE,
  LUKS_STRIPES,
  serializeLuks,
} from './luks-header.js';

/** QEMU's block_crypto_amend_opts_luks, in table order; qcow2 names them `encrypt.NAME`. */
export function luksAmendOptions(prefix = ''): OptionDesc[] {
  return [
    { name: `${prefix}state`, type: 'str', help: 'Select new state of affected keyslots (active/inactive)' },
    { name: `${prefix}keyslot`, type: 'num', help: 'Select a single keyslot to modify explicitly' },
    { name: `${prefix}old-secret`, type: 'str', help: 'Select all keyslots that match this password' },
    { name: `${prefix}new-secret`, type: 'str', help: 'New secret to set in the matching keyslots. Empty string to erase' },
    { name: `${prefix}iter-time`, type: 'num', help: 'Time to spend in PBKDF in milliseconds' },
  ];
}

/** QEMU's QCryptoBlockAmendOptionsLUKS. */
export interface LuksAmendParams {
  state: 'active' | 'inactive';
  /** As QEMU holds it: a C int (the option's number truncated to 32 bits). */
  keyslot?: number;
  oldSecret?: string;
  newSecret?: string;
  /** Milliseconds; QEMU's uint64 (a negative number wraps to a huge one). */
  iterTime?: number;
}

/** QEMU's QCRYPTO_BLOCK_LUKS_ERASE_ITERATIONS: passes of random bytes over erased key material. */
const ERASE_ITERATIONS = 40;

function optNum(get: (name: string) => string | undefined, name: string): number | undefined {
  const v = get(name);
  if (v === undefined) return undefined;
  const n = /^0[0-7]+$/.test(v) ? parseInt(v, 8) : Number(v);
  if (v.trim() === '' || !Number.isInteger(n)) throw new BlockError('EINVAL', `Parameter '${name}' expects a number`);
  return n;
}

/** The options as QEMU's QAPI visitor checks them (block_crypto_amend_opts_init), names without prefix. */
export function luksAmendParams(get: (name: string) => string | undefined): LuksAmendParams {
  const state = get('state');
  if (state === undefined) throw new BlockError('EINVAL', "Parameter 'state' is missing");
  if (state !== 'active' && state !== 'inactive') throw new BlockError('EINVAL', `Parameter 'state' does not accept value '${state}'`);
  const keyslot = optNum(get, 'keyslot');
  const iterTime = optNum(get, 'iter-time');
  return {
    state,
    ...(keyslot !== undefined ? { keyslot: keyslot | 0 } : {}),
    ...(get('old-secret') !== undefined ? { oldSecret: get('old-secret') } : {}),
    ...(get('new-secret') !== undefined ? { newSecret: get('new-secret') } : {}),
    ...(iterTime !== undefined ? { iterTime: iterTime < 0 ? 2 ** 64 + iterTime : iterTime } : {}),
  };
}

/** Reads and writes the header area (offsets from its start). */
export interface LuksAreaIo {
  read: LuksAreaReader;
  write(offset: number, bytes: number, buf: Uint8Array): Promise<void>;
}

export interface LuksAmendContext {
  volume: LuksVolume;
  io: LuksAreaIo;
  /** The id of the secret the image was opened with (QEMU's luks->secret). */
  openSecret: string | undefined;
  lookupSecret: (id: string) => Uint8Array | undefined;
  force: boolean;
  /** Names the image in messages about its structures. */
  image: string;
}

const active = (v: LuksVolume, i: number) => v.slots[i]!.active === LUKS_KEY_ENABLED;
const activeCount = (v: LuksVolume) => v.slots.filter((s) => s.active === LUKS_KEY_ENABLED).length;

function secret(c: LuksAmendContext, id: string): Uint8Array {
  const s = c.lookupSecret(id);
  if (!s) throw new BlockError('EINVAL', `No secret with id '${id}'`);
  return s;
}

async function storeHeader(c: LuksAmendContext): Promise<void> {
  const { header, slots } = c.volume;
  await c.io.write(0, LUKS_HEADER_SIZE, serializeLuks(header, slots));
}

/** Bytes of slot `i`'s key material, after checking it lies between the header and the payload. */
function materialBytes(c: LuksAmendContext, i: number): number {
  const { header: h, slots } = c.volume;
  const s = slots[i]!;
  const where = `${c.image}: luks ${slotWhere(i)}`;
  if (s.stripes !== LUKS_STRIPES) throw new BlockError('ECORRUPT', `${where} is corrupted (stripes ${s.stripes} != ${LUKS_STRIPES})`);
  const bytes = h.key_bytes * s.stripes;
  if (s.key_material_offset * LUKS_SECTOR_SIZE < LUKS_HEADER_SIZE || s.key_material_offset * LUKS_SECTOR_SIZE + bytes > h.payload_offset * LUKS_SECTOR_SIZE) {
    throw new BlockError('ECORRUPT', `${where}: key material at sector ${s.key_material_offset} is outside the key-slot area`);
  }
  return bytes;
}

/** QEMU's store_key: the slot's material for `password`, then the header that activates it. */
async function storeKey(c: LuksAmendContext, i: number, password: Uint8Array, masterKey: Uint8Array, iterTime: number): Promise<void> {
  const { afSplit, pbkdf2, pbkdf2IterationsPerSecond, randomBytes, XtsPlain64 } = await import('./luks-crypto.js');
  const { header: h, slots } = c.volume;
  const hash = h.hash_spec as LuksHash;
  const bytes = materialBytes(c, i);
  const slot = slots[i]!;
  const salt = randomBytes(32);
  const perSecond = await pbkdf2IterationsPerSecond(hash, h.key_bytes);
  const fail = (msg: string) => new BlockError('EINVAL', `${msg}: Numerical result out of range\nFailed to write to keyslot ${i}`);
  if (perSecond > Number.MAX_SAFE_INTEGER / Math.max(iterTime, 1) || iterTime >= 2 ** 53) throw fail(`PBKDF iterations ${perSecond} too large to scale`);
  const iters = Math.floor((perSecond * iterTime) / 1000);
  if (iters > UINT32_MAX) throw fail(`PBKDF iterations ${iters} larger than ${UINT32_MAX}`);
  const iterations = Math.max(iters, MIN_ITERS);
  const slotKey = await pbkdf2(hash, password, salt, iterations, h.key_bytes);
  const material = afSplit(masterKey, slot.stripes, hash);
  new XtsPlain64(slotKey).encrypt(material, 0);
  await c.io.write(slot.key_material_offset * LUKS_SECTOR_SIZE, bytes, material);
  slots[i] = { ...slot, active: LUKS_KEY_ENABLED, iterations, salt };
  await storeHeader(c);
}

/** QEMU's erase_key: the header marks the slot inactive, then its material becomes noise. */
async function eraseKey(c: LuksAmendContext, i: number): Promise<void> {
  const { randomBytes } = await import('./luks-crypto.js');
  const bytes = materialBytes(c, i);
  const slot = c.volume.slots[i]!;
  c.volume.slots[i] = { ...slot, active: LUKS_KEY_DISABLED, iterations: 0, salt: new Uint8Array(32) };
  await storeHeader(c);
  for (let pass = 0; pass < ERASE_ITERATIONS; pass++) await c.io.write(slot.key_material_offset * LUKS_SECTOR_SIZE, bytes, randomBytes(bytes));
}

async function addKeyslot(c: LuksAmendContext, p: LuksAmendParams): Promise<void> {
  const v = c.volume;
  if (p.newSecret === undefined) throw new BlockError('EINVAL', "'new-secret' is required to activate a keyslot");
  if (p.oldSecret !== undefined) throw new BlockError('EINVAL', "'old-secret' must not be given when activating keyslots");
  let slot: number;
  if (p.keyslot !== undefined) {
    slot = p.keyslot;
    if (slot < 0 || slot >= LUKS_NUM_KEY_SLOTS) throw new BlockError('EINVAL', `Invalid keyslot ${slot >>> 0} specified, must be between 0 and ${LUKS_NUM_KEY_SLOTS - 1}`);
  } else {
    slot = v.slots.findIndex((s) => s.active !== LUKS_KEY_ENABLED);
    if (slot < 0) throw new BlockError('ENOSPC', "Can't add a keyslot - all keyslots are in use");
  }
  if (!c.force && active(v, slot)) throw new BlockError('EEXIST', `Refusing to overwrite active keyslot ${slot} - please erase it first`);
  if (c.openSecret === undefined) throw new BlockError('EINVAL', "Parameter 'key-secret' is required for cipher");
  const masterKey = await luksFindKey(v, c.io.read, secret(c, c.openSecret), c.image);
  const password = secret(c, p.newSecret);
  await storeKey(c, slot, password, masterKey, p.iterTime ?? DEFAULT_ITER_TIME);
}

async function eraseKeyslots(c: LuksAmendContext, p: LuksAmendParams): Promise<void> {
  const v = c.volume;
  if (p.newSecret !== undefined) throw new BlockError('EINVAL', "'new-secret' must not be given when erasing keyslots");
  if (p.iterTime !== undefined) throw new BlockError('EINVAL', "'iter-time' must not be given when erasing keyslots");
  const old = p.oldSecret !== undefined ? secret(c, p.oldSecret) : undefined;
  if (p.keyslot !== undefined) {
    const slot = p.keyslot;
    if (slot < 0 || slot >= LUKS_NUM_KEY_SLOTS) throw new BlockError('EINVAL', `Invalid keyslot ${slot} specified, must be between 0 and ${LUKS_NUM_KEY_SLOTS - 1}`);
    if (old && !(await luksLoadKey(v, c.io.read, slot, old))) {
      throw new BlockError('EPERM', `Given keyslot ${slot} doesn't contain the given old password for erase operation`);
    }
    if (!c.force && !active(v, slot)) throw new BlockError('EINVAL', `Given keyslot ${slot} is already erased (inactive) `);
    if (!c.force && activeCount(v) === 1) {
      throw new BlockError('EPERM', `Attempt to erase the only active keyslot ${slot} which will erase all the data in the image irreversibly - refusing operation`);
    }
    await eraseKey(c, slot);
  } else if (old) {
    const matching: number[] = [];
    for (let i = 0; i < LUKS_NUM_KEY_SLOTS; i++) if (await luksLoadKey(v, c.io.read, i, old)) matching.push(i);
    if (!matching.length) throw new BlockError('EPERM', 'No keyslots match given (old) password for erase operation');
    if (!c.force && matching.length === activeCount(v)) {
      throw new BlockError('EPERM', 'All the active keyslots match the (old) password that was given and erasing them will erase all the data in the image irreversibly - refusing operation');
    }
    for (const i of matching) await eraseKey(c, i);
  } else {
    throw new BlockError('EINVAL', 'To erase keyslot(s), either explicit keyslot index or the password currently contained in them must be given');
  }
}

/** Applies `p` to the volume (qcrypto_block_luks_amend_options); the in-memory header follows what is written. */
export async function luksAmend(c: LuksAmendContext, p: LuksAmendParams): Promise<void> {
  if (p.state === 'active') await addKeyslot(c, p);
  else await eraseKeyslots(c, p);
}
