/**
 * qemu-img create as a function (QEMU's bdrv_img_create): parse the options,
 * settle the size (from the backing image when not given), print the
 * "Formatting ..." line, then let the format write the new image.
 *
 * `planCreate` does everything that can fail before the "Formatting" line
 * (qemu-img prints that line before the format's own checks run, so a bad
 * cluster size still shows it); `createImage` writes the image and reports
 * the format's errors prefixed with the file name, as qemu-img does.
 */
import { BlockError } from '../block/errors.js';
import { closeNode, openImage, type Storage } from '../block/open.js';
import type { BlockNode } from '../block/node.js';
import type { PreallocMode } from '../block/driver.js';
import { bdrvFlush, bdrvPwrite, bdrvTruncate } from '../block/io.js';
import { createQcow2, type Qcow2CreateOptions } from '../formats/qcow2/create.js';
import { createOptionList, optBool, optNumber, parseOptions, printOptions, setOption, type OptionDesc, type OptionValues } from './options.js';

export interface CreateRequest {
  filename: string;
  format: string;
  /** -o strings, in order. */
  options?: string[];
  /** The SIZE argument in bytes, if given. */
  size?: number;
  /** -b and -F. */
  backingFile?: string;
  backingFormat?: string;
  /** -u: do not open the backing file. */
  unsafe?: boolean;
}

export interface CreatePlan {
  filename: string;
  format: string;
  list: OptionDesc[];
  values: OptionValues;
  size: number;
  /** The "Formatting ..." line, without newline. */
  line: string;
}

const FORMATS = ['qcow2', 'raw'];

function prefixed(filename: string, e: unknown): BlockError {
  if (e instanceof BlockError) return new BlockError(e.code, `${filename}: ${e.message}`, { cause: e });
  return new BlockError('EIO', `${filename}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
}

/** Parses and checks what bdrv_img_create checks before printing the "Formatting" line. */
export async function planCreate(storage: Storage, req: CreateRequest): Promise<CreatePlan> {
  const { filename, format } = req;
  if (!FORMATS.includes(format)) throw new BlockError('EINVAL', `Unknown file format '${format}'`);
  const list = createOptionList(format);
  const values: OptionValues = new Map();
  try {
    if (req.size !== undefined) setOption(list, values, 'size', String(req.size));
    parseOptions(list, req.options ?? [], values);
  } catch (e) {
    throw prefixed(filename, e);
  }
  const supports = (name: string) => list.some((d) => d.name === name);
  if (req.backingFile !== undefined) {
    if (!supports('backing_file')) throw new BlockError('EINVAL', `${filename}: Backing file not supported for file format '${format}'`);
    setOption(list, values, 'backing_file', req.backingFile);
  }
  if (req.backingFormat !== undefined) {
    if (!supports('backing_fmt')) throw new BlockError('EINVAL', `${filename}: Backing file format not supported for file format '${format}'`);
    setOption(list, values, 'backing_fmt', req.backingFormat);
  }
  const backingFile = values.get('backing_file');
  const backingFmt = values.get('backing_fmt');
  const fail = (msg: string): never => {
    throw new BlockError('EINVAL', `${filename}: ${msg}`);
  };

  let size = values.has('size') ? Number(values.get('size')) : -1;
  if (backingFile !== undefined) {
    if (backingFile === filename) fail('Error: Trying to create an image with the same filename as the backing file');
    if (backingFile === '') fail('Expected backing file name, got empty string');
    if (backingFmt === undefined && req.unsafe) fail('Backing file specified without backing format');
    if (!req.unsafe) {
      let bs: BlockNode | undefined;
      try {
        bs = await openImage(storage, storage.resolve(filename, backingFile), { format: backingFmt, readOnly: true, backing: false });
      } catch (e) {
        const why = e instanceof Error ? e.message : String(e);
        throw new BlockError(e instanceof BlockError ? e.code : 'EIO', `${filename}: ${why}\nCould not open backing image.`, { cause: e });
      }
      try {
        // qemu-img 7.2 probes the format to name it, then refuses: the format must be given.
        if (backingFmt === undefined) fail(`Backing file specified without backing format\nDetected format of ${bs.driver.name}.`);
        if (size === -1) {
          size = bs.totalBytes;
          setOption(list, values, 'size', String(size));
        }
      } finally {
        await closeNode(bs);
      }
    }
  }
  if (size === -1) fail('Image creation needs a size parameter');
  if (!Number.isSafeInteger(size)) throw new BlockError('EFBIG', `${filename}: Image size ${size} is too large (blocktab handles sizes below 2^53 bytes)`);
  return { filename, format, list, values, size, line: `Formatting '${filename}', fmt=${format} ${printOptions(list, values)}` };
}

function preallocation(filename: string, values: OptionValues, allowed: PreallocMode[], format: string): PreallocMode {
  const p = values.get('preallocation') ?? 'off';
  if (!['off', 'metadata', 'falloc', 'full'].includes(p)) {
    throw new BlockError('EINVAL', format === 'raw' ? `${filename}: invalid parameter value: ${p}` : `${filename}: Parameter 'preallocation' does not accept value '${p}'`);
  }
  if (!allowed.includes(p as PreallocMode)) throw new BlockError('EINVAL', `${filename}: Unsupported preallocation mode: ${p}`);
  return p as PreallocMode;
}

/** The typed qcow2 options from parsed values (QAPI's enum checks, QEMU's messages). */
export function qcow2OptionsFromValues(filename: string, values: OptionValues, size: number): Qcow2CreateOptions {
  const compat = values.get('compat');
  let version: 2 | 3 | undefined;
  if (compat !== undefined) {
    if (compat === '0.10' || compat === 'v2') version = 2;
    else if (compat === '1.1' || compat === 'v3') version = 3;
    else throw new BlockError('EINVAL', `${filename}: Parameter 'version' does not accept value '${compat}'`);
  }
  const ct = values.get('compression_type');
  if (ct !== undefined && ct !== 'zlib' && ct !== 'zstd') {
    throw new BlockError('EINVAL', `${filename}: Parameter 'compression-type' does not accept value '${ct}'`);
  }
  if (values.has('encryption') && optBool(values, 'encryption') || values.has('encrypt.format')) {
    throw new BlockError('ENOTSUP', `${filename}: encrypted qcow2 images are not supported`);
  }
  return {
    size: Math.ceil(size / 512) * 512,
    version,
    clusterSize: optNumber(values, 'cluster_size'),
    refcountBits: optNumber(values, 'refcount_bits'),
    lazyRefcounts: optBool(values, 'lazy_refcounts'),
    extendedL2: optBool(values, 'extended_l2'),
    compressionType: ct as 'zlib' | 'zstd' | undefined,
    preallocation: preallocation(filename, values, ['off', 'metadata', 'falloc', 'full'], 'qcow2'),
    backingFile: values.get('backing_file'),
    backingFormat: values.get('backing_fmt'),
    dataFile: values.get('data_file'),
    dataFileRaw: optBool(values, 'data_file_raw'),
  };
}

/** Writes the image `plan` describes. Errors name the file, as qemu-img's. */
export async function createImage(storage: Storage, plan: CreatePlan): Promise<void> {
  const { filename, values } = plan;
  if (!storage.createFile) throw new BlockError('ENOTSUP', `${filename}: ${storage.name} storage cannot create files`);
  try {
    if (plan.format === 'raw') {
      const prealloc = preallocation(filename, values, ['off', 'falloc', 'full'], 'raw');
      await storage.createFile(filename);
      const bs = await storage.openProtocol(filename, { readOnly: false });
      try {
        const size = Math.ceil(plan.size / 512) * 512;
        await bdrvTruncate(bs, size, true, prealloc);
        if (prealloc === 'full') await writeZeros(bs, size);
        await bdrvFlush(bs);
      } finally {
        await closeNode(bs);
      }
      return;
    }
    const o = qcow2OptionsFromValues(filename, values, plan.size);
    await storage.createFile(filename);
    const file = await storage.openProtocol(filename, { readOnly: false });
    let data: BlockNode | undefined;
    try {
      if (o.dataFile !== undefined) {
        const name = storage.resolve(filename, o.dataFile);
        await storage.createFile(name);
        data = await storage.openProtocol(name, { readOnly: false });
      }
      await createQcow2(file, o, data);
    } finally {
      if (data) await closeNode(data);
      await closeNode(file);
    }
  } catch (e) {
    if (e instanceof BlockError && e.message.startsWith(`${filename}: `)) throw e;
    throw prefixed(filename, e);
  }
}

async function writeZeros(bs: BlockNode, size: number): Promise<void> {
  const zeros = new Uint8Array(Math.min(size, 1 << 20));
  for (let done = 0; done < size; done += zeros.length) await bdrvPwrite(bs, done, Math.min(zeros.length, size - done), zeros);
}
