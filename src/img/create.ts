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
import { openTree } from '../block/open-tree.js';
import { parseJsonName } from '../block/options-tree.js';
import type { BlockNode } from '../block/node.js';
import type { ImageCreateRequest } from '../block/driver.js';
import { bdrvFlush } from '../block/io.js';
import { createOptionList, creatableDriver, loadFormat, parseOptions, printOptions, setOption, type OptionDesc, type OptionValues } from './options.js';

export interface CreateRequest {
  filename: string;
  format: string;
  /** -o strings, in order. */
  options?: string[];
  /** The SIZE argument in bytes, if given (a bigint keeps a size from 2^53 up exact for the "Formatting" line). */
  size?: number | bigint;
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

function prefixed(filename: string, e: unknown): BlockError {
  if (e instanceof BlockError) return new BlockError(e.code, `${filename}: ${e.message}`, { cause: e });
  return new BlockError('EIO', `${filename}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
}

/** Parses and checks what bdrv_img_create checks before printing the "Formatting" line. */
export async function planCreate(storage: Storage, req: CreateRequest): Promise<CreatePlan> {
  const { filename, format } = req;
  await loadFormat(format);
  let list: OptionDesc[];
  try {
    list = createOptionList(format);
  } catch (e) {
    // qemu-img names the file for a format that cannot create, not for an unknown one.
    throw e instanceof BlockError && e.code === 'ENOTSUP' ? prefixed(filename, e) : e;
  }
  const values: OptionValues = new Map();
  try {
    parseOptions(list, req.options ?? [], values);
  } catch (e) {
    throw prefixed(filename, e);
  }
  // bdrv_img_create: -o first, then the size argument, which may not repeat -o size.
  if (req.size !== undefined) {
    if (values.has('size')) throw new BlockError('EINVAL', `${filename}: The image size must be specified only once`);
    setOption(list, values, 'size', String(req.size));
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
  const fail = (msg: string, options?: { qemuUnterminated?: boolean }): never => {
    throw new BlockError('EINVAL', `${filename}: ${msg}`, options);
  };

  let size = values.has('size') ? Number(values.get('size')) : -1;
  if (backingFile !== undefined) {
    if (backingFile === filename) fail('Error: Trying to create an image with the same filename as the backing file');
    if (backingFile === '') fail('Expected backing file name, got empty string');
    if (backingFmt === undefined && req.unsafe) fail('Backing file specified without backing format');
    if (!req.unsafe) {
      let bs: BlockNode | undefined;
      try {
        // A json:{…} backing name stands for options (QEMU's bdrv_open of the name). Only its size is
        // wanted: a file name is opened without I/O (QEMU's BDRV_O_NO_IO), so an encrypted backing file needs no key (189, 198).
        bs = backingFile.startsWith('json:')
          ? await openTree(storage, parseJsonName(backingFile), { format: backingFmt, readOnly: true, backing: false })
          : await openImage(storage, storage.resolve(filename, backingFile), { format: backingFmt, readOnly: true, backing: false, driverOptions: { noIo: true } });
      } catch (e) {
        const why = e instanceof Error ? e.message : String(e);
        throw new BlockError(e instanceof BlockError ? e.code : 'EIO', `${filename}: ${why}\nCould not open backing image.`, { cause: e });
      }
      try {
        // qemu-img 7.2 probes the format to name it, then refuses: the format must be given.
        // QEMU's hint has no final newline, so qemu-img's output runs on into what follows.
        if (backingFmt === undefined) fail(`Backing file specified without backing format\nDetected format of ${bs.driver.name}.`, { qemuUnterminated: true });
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
  return { filename, format, list, values, size, line: `Formatting '${filename}', fmt=${format} ${printOptions(list, values)}` };
}

/** Writes the image `plan` describes. Errors name the file, as qemu-img's. */
export async function createImage(storage: Storage, plan: CreatePlan): Promise<void> {
  const { filename, values } = plan;
  if (!storage.createFile) throw new BlockError('ENOTSUP', `${filename}: ${storage.name} storage cannot create files`);
  await loadFormat(plan.format);
  const drv = creatableDriver(plan.format);
  if (!drv.create) throw new BlockError('ENOTSUP', `${filename}: Format driver '${plan.format}' does not support image creation`);
  if (!Number.isSafeInteger(plan.size) && !drv.createChecksSize) {
    throw new BlockError('EFBIG', `${filename}: Image size ${values.get('size') ?? plan.size} is too large (blocktab handles sizes below 2^53 bytes)`);
  }
  const opened: BlockNode[] = [];
  let removeAfter = false;
  const req: ImageCreateRequest = {
    filename,
    size: plan.size,
    values,
    origin: 'qemu-img',
    // A further file the image names (qcow2's data_file) is made by its name as written, relative
    // to the working directory as qemu-img makes it (not beside the image): that is where QEMU
    // looks for it first when it opens the image.
    async openFile(option) {
      const name = values.get(option);
      if (name === undefined) throw new BlockError('EINVAL', `option '${option}' names no file`);
      await storage.createFile!(name);
      const bs = await storage.openProtocol(name, { readOnly: false });
      opened.push(bs);
      return bs;
    },
    async createFile(name) {
      const resolved = storage.resolve(filename, name);
      await storage.createFile!(resolved);
      const bs = await storage.openProtocol(resolved, { readOnly: false });
      opened.push(bs);
      return bs;
    },
    async openImage(name, format) {
      // A json:{…} name stands for options, as for the backing size above (vmdk's parent CID, 020).
      const bs = name.startsWith('json:')
        ? await openTree(storage, parseJsonName(name), { format, readOnly: true, backing: false })
        : await openImage(storage, storage.resolve(filename, name), { format, readOnly: true, backing: false });
      opened.push(bs);
      return bs;
    },
  };
  try {
    // Options the format parses first fail before the file is made or emptied (an existing file stays).
    drv.checkCreate?.(req);
    await storage.createFile(filename);
    const file = await storage.openProtocol(filename, { readOnly: false });
    opened.push(file);
    // After the (empty) file is made, as qemu-img's size checks in the format drivers.
    if (!Number.isSafeInteger(plan.size)) throw new BlockError('EFBIG', `Image size ${plan.size} is too large (blocktab handles sizes below 2^53 bytes)`);
    await drv.create(file, req);
    for (const bs of opened) await bdrvFlush(bs);
  } catch (e) {
    if (drv.createRemovesFileOnError) removeAfter = true;
    if (e instanceof BlockError && e.message.startsWith(`${filename}: `)) throw e;
    throw prefixed(filename, e);
  } finally {
    for (const bs of opened.reverse()) await closeNode(bs);
    if (removeAfter) await storage.removeFile?.(filename).catch(() => undefined);
  }
}
