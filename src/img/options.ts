/**
 * qemu-img's `-o` option lists, looked up in the driver registry: a format's
 * creation options are its driver's `createOptions`, followed by what every
 * storage accepts (the file protocol's list). The QemuOpts machinery itself
 * (parsing, printing, sizes) is src/block/options.ts, re-exported here for
 * qemu-img's commands.
 */
import { BlockError } from '../block/errors.js';
import { findDriver, loadDriver, type BlockDriver } from '../block/driver.js';
import { appendOptionLists, optionsHelp, PROTOCOL_CREATE_OPTS, type OptionDesc } from '../block/options.js';

export {
  appendOptionLists,
  isHelpOption,
  optBool,
  optNumber,
  optionsHelp,
  parseBool,
  parseOptions,
  printOptions,
  qemuStrtosz,
  setOption,
  type OptionDesc,
  type OptionType,
  type OptionValues,
} from '../block/options.js';

/**
 * Loads the driver of `format` (format drivers load on first use, see
 * src/block/driver.ts), so the synchronous lookups below find it. An
 * unknown name is left for them to refuse with qemu-img's message.
 */
export async function loadFormat(format: string): Promise<void> {
  await loadDriver(format);
}

/** The registered format driver `format` (loaded: see loadFormat), or qemu-img's "Unknown file format". */
export function formatDriver(format: string): BlockDriver {
  const drv = findDriver(format);
  if (!drv || drv.kind !== 'format') throw new BlockError('EINVAL', `Unknown file format '${format}'`);
  return drv;
}

/** The driver of a format that can create images (QEMU checks create_opts first). */
export function creatableDriver(format: string): BlockDriver & { createOptions: readonly OptionDesc[] } {
  const drv = formatDriver(format);
  if (!drv.createOptions) throw new BlockError('ENOTSUP', `Format driver '${format}' does not support image creation`);
  return drv as BlockDriver & { createOptions: readonly OptionDesc[] };
}

/** The format's own create options (what `-o help` lists without a file name). */
export function formatCreateOptions(format: string): readonly OptionDesc[] {
  return creatableDriver(format).createOptions;
}

/** The format's options followed by the storage's (what create parses against). */
export function createOptionList(format: string): OptionDesc[] {
  return appendOptionLists(formatCreateOptions(format), PROTOCOL_CREATE_OPTS);
}

/** qemu-img's `-o help` for create and convert: with an image name the storage's options too, without one the format's alone. */
export async function createOptionsHelp(format: string, withFile: boolean): Promise<string> {
  await loadFormat(format);
  return withFile ? optionsHelp(createOptionList(format)) : optionsHelp(formatCreateOptions(format), format);
}
