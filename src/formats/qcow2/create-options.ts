/**
 * qcow2's side of qemu-img create and amend: the option tables QEMU 7.2
 * declares (qcow2_create_opts, qcow2_amend_opts) and the conversion of
 * parsed option values into the typed options create.ts and amend.ts take,
 * with QEMU's messages. These are the driver's `createOptions`, `create`,
 * `amendOptions` and `amend` hooks.
 */
import { BlockError } from '../../block/errors.js';
import type { BlockNode } from '../../block/node.js';
import type { AmendStatus, ImageCreateRequest, PreallocMode } from '../../block/driver.js';
import { optBool, optNumber, type OptionDesc, type OptionValues } from '../../block/options.js';
import { createQcow2, validateQcow2CreateOptions, type Qcow2CreateOptions } from './create.js';
import { amendQcow2, type Qcow2AmendOptions } from './amend.js';
import { lookupSecretUtf8 } from '../../block/secrets.js';
import { luksAreaBytes, luksBuildArea, luksCreateParams } from '../../crypto/luks-block.js';
import { luksAmendOptions } from '../../crypto/luks-amend.js';

const PREALLOC_MODES: readonly PreallocMode[] = ['off', 'metadata', 'falloc', 'full'];

/** QEMU 7.2's qcow2_create_opts in the order its "Formatting" line prints them (encryption first), with the names blockdev-create gives them. */
export const QCOW2_CREATE_OPTS: readonly OptionDesc[] = [
  { name: 'encryption', type: 'bool', help: "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)", qapi: { name: 'encrypt', any: true } },
  { name: 'encrypt.format', type: 'str', help: "Encrypt the image, format choices: 'aes', 'luks'", qapi: false },
  { name: 'encrypt.key-secret', type: 'str', help: 'ID of secret providing qcow AES key or LUKS passphrase', qapi: false },
  { name: 'encrypt.cipher-alg', type: 'str', help: 'Name of encryption cipher algorithm', qapi: false },
  { name: 'encrypt.cipher-mode', type: 'str', help: 'Name of encryption cipher mode', qapi: false },
  { name: 'encrypt.ivgen-alg', type: 'str', help: 'Name of IV generator algorithm', qapi: false },
  { name: 'encrypt.ivgen-hash-alg', type: 'str', help: 'Name of IV generator hash algorithm', qapi: false },
  { name: 'encrypt.hash-alg', type: 'str', help: 'Name of encryption hash algorithm', qapi: false },
  { name: 'encrypt.iter-time', type: 'num', help: 'Time to spend in PBKDF in milliseconds', qapi: false },
  { name: 'cluster_size', type: 'size', help: 'qcow2 cluster size', def: '65536' },
  { name: 'extended_l2', type: 'bool', help: 'Extended L2 tables', def: 'off' },
  { name: 'preallocation', type: 'str', help: 'Preallocation mode (allowed values: off, metadata, falloc, full)', qapi: { enum: PREALLOC_MODES } },
  { name: 'compression_type', type: 'str', help: 'Compression method used for image cluster compression', def: 'zlib', qapi: { enum: ['zlib', 'zstd'] } },
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  { name: 'compat', type: 'str', help: 'Compatibility level (v2 [0.10] or v3 [1.1])', qapi: { name: 'version', enum: ['v2', 'v3'] } },
  { name: 'backing_file', type: 'str', help: 'File name of a base image' },
  { name: 'backing_fmt', type: 'str', help: 'Image format of the base image' },
  { name: 'data_file', type: 'str', help: 'File name of an external data file', qapi: { ref: true } },
  { name: 'data_file_raw', type: 'bool', help: 'The external data file must stay valid as a raw image' },
  { name: 'lazy_refcounts', type: 'bool', help: 'Postpone refcount updates', def: 'off' },
  { name: 'refcount_bits', type: 'num', help: 'Width of a reference count entry in bits', def: '16' },
];

/** QEMU 7.2's qcow2_amend_opts (QCOW_COMMON_OPTIONS plus encryption updates). */
export const QCOW2_AMEND_OPTS: readonly OptionDesc[] = [
  ...QCOW2_CREATE_OPTS.filter((o) =>
    ['size', 'compat', 'backing_file', 'backing_fmt', 'data_file', 'data_file_raw', 'lazy_refcounts', 'refcount_bits', 'encrypt.iter-time'].includes(o.name),
  ),
  ...luksAmendOptions('encrypt.').filter((o) => o.name !== 'encrypt.iter-time'),
];

/** compat=0.10|v2 → 2, 1.1|v3 → 3; `bad` makes the caller's message for anything else. */
function parseCompat(compat: string | undefined, bad: (v: string) => BlockError): 2 | 3 | undefined {
  if (compat === undefined) return undefined;
  if (compat === '0.10' || compat === 'v2') return 2;
  if (compat === '1.1' || compat === 'v3') return 3;
  throw bad(compat);
}

function encrypted(values: OptionValues): boolean {
  return (values.has('encryption') && optBool(values, 'encryption') === true) || values.has('encrypt.format');
}

/** encryption=on / encrypt.format=aes|luks, checked as qcow2_co_create_opts: the crypt method, or undefined. */
function qcow2EncryptFormat(values: OptionValues): 'aes' | 'luks' | undefined {
  if (!encrypted(values)) return undefined;
  const format = values.get('encrypt.format') ?? 'aes';
  if (format !== 'aes' && format !== 'luks') throw new BlockError('EINVAL', `Parameter 'encrypt.format' does not accept value '${format}'`);
  if (values.has('encryption') && values.has('encrypt.format') && format !== 'aes') {
    throw new BlockError('EINVAL', "Options 'encryption' and 'encrypt.format' are mutually exclusive");
  }
  return format;
}

/** The encryption a new image gets: the aes key is checked, a luks header area is made (PBKDF2 timing: slow by design). */
async function qcow2Encryption(values: OptionValues): Promise<Qcow2CreateOptions['encryption']> {
  const format = qcow2EncryptFormat(values);
  if (format === undefined) return undefined;
  const get = (name: string) => values.get(`encrypt.${name}`);
  if (format === 'aes') {
    const id = get('key-secret');
    if (id === undefined) throw new BlockError('EINVAL', "Parameter 'encrypt.key-secret' is required for cipher");
    if (!lookupSecretUtf8(id)) throw new BlockError('EINVAL', `No secret with id '${id}'`);
    return { method: 1 };
  }
  return { method: 2, area: await luksBuildArea(luksCreateParams(get, lookupSecretUtf8, 'encrypt.key-secret')) };
}

/**
 * Bytes of the LUKS header area encrypt.format=luks puts in a new image (0
 * without it), as qcow2_measure asks for it: the options and the secret are
 * checked as create checks them, no key is derived.
 */
export function qcow2LuksAreaBytes(values: OptionValues): number {
  if (qcow2EncryptFormat(values) !== 'luks') return 0;
  return luksAreaBytes(luksCreateParams((name) => values.get(`encrypt.${name}`), lookupSecretUtf8, 'encrypt.key-secret').keyBytes);
}

/** The typed qcow2 options from parsed creation values (QAPI's enum checks, QEMU's messages). */
export function qcow2OptionsFromValues(values: OptionValues, size: number, origin: ImageCreateRequest['origin'] = 'qemu-img'): Qcow2CreateOptions {
  if (origin === 'blockdev-create') {
    // qcow2_co_create's own checks on BlockdevCreateOptionsQcow2.
    if (values.has('encryption')) throw new BlockError('ENOTSUP', 'encrypted qcow2 images are not supported');
    if (size < 0 || size % 512 !== 0) throw new BlockError('EINVAL', 'Image size must be a multiple of 512 bytes');
    if (values.has('backing_fmt') && !values.has('backing_file')) throw new BlockError('EINVAL', 'Backing format cannot be used without backing file');
    if (optBool(values, 'data_file_raw') === true && !values.has('data_file')) throw new BlockError('EINVAL', 'data-file-raw requires data-file');
  }
  const version = parseCompat(values.get('compat'), (v) => new BlockError('EINVAL', `Parameter 'version' does not accept value '${v}'`));
  const ct = values.get('compression_type');
  if (ct !== undefined && ct !== 'zlib' && ct !== 'zstd') {
    throw new BlockError('EINVAL', `Parameter 'compression-type' does not accept value '${ct}'`);
  }
  qcow2EncryptFormat(values);
  const p = values.get('preallocation') ?? 'off';
  if (!PREALLOC_MODES.includes(p as PreallocMode)) throw new BlockError('EINVAL', `Parameter 'preallocation' does not accept value '${p}'`);
  return {
    size: Math.ceil(size / 512) * 512,
    version,
    clusterSize: optNumber(values, 'cluster_size'),
    refcountBits: optNumber(values, 'refcount_bits'),
    lazyRefcounts: optBool(values, 'lazy_refcounts'),
    extendedL2: optBool(values, 'extended_l2'),
    compressionType: ct as 'zlib' | 'zstd' | undefined,
    preallocation: p as PreallocMode,
    backingFile: values.get('backing_file'),
    backingFormat: values.get('backing_fmt'),
    dataFile: values.get('data_file'),
    dataFileRaw: optBool(values, 'data_file_raw'),
  };
}

/** The driver's `create` hook: a new qcow2 image in `file`, its external data file opened through the request. */
export async function qcow2CreateImage(file: BlockNode, req: ImageCreateRequest): Promise<void> {
  const o = qcow2OptionsFromValues(req.values, req.size, req.origin);
  if (!Number.isSafeInteger(o.size)) {
    // qcow2_co_create's checks first (an image too large for its cluster size has QEMU's message), then ours.
    validateQcow2CreateOptions(o);
    throw new BlockError('EFBIG', `Image size ${req.values.get('size') ?? o.size} is too large (blocktab handles sizes below 2^53 bytes)`);
  }
  o.encryption = await qcow2Encryption(req.values);
  const data = o.dataFile !== undefined ? await req.openFile('data_file') : undefined;
  await createQcow2(file, o, data);
}

/** The typed amend options from values the caller checked against QCOW2_AMEND_OPTS (qcow2_amend_options' messages). */
export function qcow2AmendOptionsFromValues(values: OptionValues): Qcow2AmendOptions {
  const o: Qcow2AmendOptions = {};
  const encrypt = new Map([...values].filter(([k]) => k.startsWith('encrypt.')).map(([k, v]) => [k.slice('encrypt.'.length), v]));
  if (encrypt.size) o.encrypt = encrypt;
  o.version = parseCompat(values.get('compat'), (v) => new BlockError('EINVAL', `Unknown compatibility level ${v}`));
  if (o.version === undefined) delete o.version;
  if (values.has('backing_file') || values.has('backing_fmt')) {
    o.backing = { file: values.get('backing_file') ?? null, format: values.get('backing_fmt') ?? null };
  }
  if (values.has('data_file')) o.dataFile = values.get('data_file')!;
  if (values.has('data_file_raw')) o.dataFileRaw = optBool(values, 'data_file_raw');
  o.lazyRefcounts = optBool(values, 'lazy_refcounts');
  o.refcountBits = optNumber(values, 'refcount_bits');
  if (values.has('size')) o.size = Number(values.get('size'));
  return o;
}

/** The driver's `amend` hook. */
export async function qcow2AmendImage(bs: BlockNode, values: OptionValues, force = false, status?: AmendStatus): Promise<void> {
  await amendQcow2(bs, qcow2AmendOptionsFromValues(values), force, status);
}
