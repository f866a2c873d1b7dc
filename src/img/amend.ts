/**
 * qemu-img amend as a function: -o options parsed against the format's
 * creation and amend lists (creation-only options refused as qemu-img does),
 * then handed to the format driver's `amend` hook. Formats without one
 * cannot amend.
 */
import { BlockError } from '../block/errors.js';
import type { AmendStatus, BlockDriver } from '../block/driver.js';
import type { BlockNode } from '../block/node.js';
import { appendOptionLists, formatDriver, loadFormat, parseOptions, type OptionDesc, type OptionValues } from './options.js';

/** The driver of a format that amends (loaded: see loadFormat), or qemu-img's message. */
export function amendableDriver(format: string): BlockDriver & { amendOptions: readonly OptionDesc[] } {
  const drv = formatDriver(format);
  if (!drv.amend || !drv.amendOptions) throw new BlockError('ENOTSUP', `Format driver '${format}' does not support option amendment`);
  return drv as BlockDriver & { amendOptions: readonly OptionDesc[] };
}

/** Parses amend options for `format` with qemu-img's messages. */
export async function parseAmendOptions(format: string, texts: string[]): Promise<OptionValues> {
  await loadFormat(format);
  const drv = amendableDriver(format);
  const values = parseOptions(appendOptionLists(drv.createOptions ?? [], drv.amendOptions), texts);
  for (const name of values.keys()) {
    if (!drv.amendOptions.some((d) => d.name === name)) {
      throw new BlockError('EINVAL', `Invalid parameter '${name}'\nThis option is only supported for image creation`);
    }
  }
  return values;
}

/** Applies parsed amend options to an opened, writable image (with its backing chain). */
export async function amendImage(bs: BlockNode, values: OptionValues, force = false, status?: AmendStatus): Promise<void> {
  const drv = amendableDriver(bs.driver.name);
  await drv.amend!(bs, values, force, status);
}
