/**
 * qemu-img measure as a function (img_measure): the output format's driver
 * is looked up in the registry, the -o options are parsed against its
 * creation options, and its `measure` hook does the arithmetic — for a bare
 * size, or for what an opened input image holds.
 */
import { BlockError } from '../block/errors.js';
import { loadDriver, type BlockDriver, type MeasureResult } from '../block/driver.js';
import type { BlockNode } from '../block/node.js';
import { appendOptionLists, parseOptions, PROTOCOL_CREATE_OPTS, type OptionValues } from '../block/options.js';

export type { MeasureResult } from '../block/driver.js';

export interface MeasurePlan {
  driver: BlockDriver;
  values: OptionValues;
}

/** Checks the output format and parses -o, with qemu-img's messages (before any input is opened). */
export async function planMeasure(format: string, options: readonly string[] = []): Promise<MeasurePlan> {
  const driver = await loadDriver(format);
  if (driver?.kind !== 'format') throw new BlockError('EINVAL', `Unknown file format '${format}'`);
  if (!driver.measure) throw new BlockError('ENOTSUP', `Block driver '${format}' does not support size measurement`);
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
