/**
 * vhdx's side of qemu-img create: the option table QEMU 7.2 declares
 * (vhdx_create_opts, in its order, with the names blockdev-create gives
 * them) and the driver's `create` hook, which turns parsed values into
 * create.ts's typed options with qemu-img's messages.
 */
import { BlockError } from '../../block/errors.js';
import type { ImageCreateRequest } from '../../block/driver.js';
import type { BlockNode } from '../../block/node.js';
import { optBool, optNumber, type OptionDesc, type OptionValues } from '../../block/options.js';
import { createVhdxOn, type VhdxCreateOptions } from './create.js';

/** QEMU 7.2's vhdx_create_opts, in table order. */
export const VHDX_CREATE_OPTS: readonly OptionDesc[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size; max of 64TB.' },
  { name: 'log_size', type: 'size', help: 'Log size; min 1MB.', def: '1048576' },
  { name: 'block_size', type: 'size', help: 'Block Size; min 1MB, max 256MB. 0 means auto-calculate based on image size.', def: '0' },
  { name: 'subformat', type: 'str', help: "VHDX format type, can be either 'dynamic' or 'fixed'. Default is 'dynamic'.", qapi: { enum: ['dynamic', 'fixed'] } },
  {
    name: 'block_state_zero',
    type: 'bool',
    help: "Force use of payload blocks of type 'ZERO'. Non-standard, but default.  Do not set to 'off' when using 'qemu-img convert' with subformat=dynamic.",
  },
];

/** The typed options from parsed creation values (QAPI's enum check, QEMU's message). */
export function vhdxOptionsFromValues(values: OptionValues): VhdxCreateOptions {
  const o: VhdxCreateOptions = {};
  const sub = values.get('subformat');
  if (sub !== undefined) {
    if (sub !== 'dynamic' && sub !== 'fixed') throw new BlockError('EINVAL', `Parameter 'subformat' does not accept value '${sub}'`);
    o.subformat = sub;
  }
  const blockSize = optNumber(values, 'block_size');
  if (blockSize !== undefined) o.blockSize = blockSize;
  const logSize = optNumber(values, 'log_size');
  if (logSize !== undefined) o.logSize = logSize;
  const zero = optBool(values, 'block_state_zero');
  if (zero !== undefined) o.blockStateZero = zero;
  return o;
}

/** The driver's `create` hook. */
export async function vhdxCreateImage(file: BlockNode, req: ImageCreateRequest): Promise<void> {
  await createVhdxOn(file, req.filename, req.size, vhdxOptionsFromValues(req.values));
}
