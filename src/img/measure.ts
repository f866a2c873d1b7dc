/**
 * qemu-img measure as a function (img_measure): the output format's driver
 * is looked up in the registry, the -o options are parsed against its
 * creation options, and its `measure` hook does the arithmetic — for a bare
 * size, or for what an opened input image holds.
 */
import { BlockError } from '../block/errors.js';
import { findDriver, type BlockDriver, type MeasureResult } from '../block/driver.js';
import type { BlockNode } from '../block/node.js';
import { appendOptionLists, parseOptions, PROTOCOL_CREATE_OPTS, type OptionValues } from '../block/options.js';

export type { MeasureResult } from '../block/driver.js';

/**
 * Formats qemu-img 7.2 has and blocktab has no driver for yet: qemu-img
 * refuses to measure them, with this message rather than "Unknown file
 * format". A registered driver answers for itself (by having `measure` or not).
 */
const QEMU_FORMATS_WITHOUT_MEASURE = ['vmdk', 'vpc', 'vhdx', 'vdi', 'qed', 'qcow', 'luks', 'parallels', 'cloop', 'dmg', 'bochs'];

export interface MeasurePlan {
  driver: BlockDriver;
  values: OptionValues;
}

/** Checks the output format and parses -o, with qemu-img's messages (before any input is opened). */
export function planMeasure(format: string, options: readonly string[] = []): MeasurePlan {
  const driver = findDriver(format);
  const known = driver?.kind === 'format' || (!driver && QEMU_FORMATS_WITHOUT_MEASURE.includes(format));
  if (!known) throw new BlockError('EINVAL', `Unknown file format '${format}'`);
  if (!driver?.measure) throw new BlockError('ENOTSUP', `Block driver '${format}' does not support size measurement`);
  const list = appendOptionLists(driver.createOptions ?? [], PROTOCOL_CREATE_OPTS);
  try {
    return { driver, values: parseOptions(list, options) };
  } catch (e) {
    throw new BlockError('EINVAL', `${(e as Error).message}\nInvalid options for file format '${format}'`, { cause: e });
  }
}

/** Runs the format's measure for `input` (an opened image) or a bare `size` in bytes. */
export async function measureImage(plan: MeasurePlan, input: BlockNode | undefined, size?: number): Promise<MeasureResult> {
  return plan.driver.measure!(plan.values, input, input ? undefined : (size ?? 0));
}
