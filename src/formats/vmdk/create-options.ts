/**
 * vmdk's side of qemu-img create: the option table QEMU 7.2 declares
 * (vmdk_create_opts, in its order, with the names blockdev-create gives
 * them) and the driver's `create` hook, which turns parsed values into
 * create.ts's typed options with qemu-img's messages.
 */
import { BlockError } from '../../block/errors.js';
import type { ImageCreateRequest } from '../../block/driver.js';
import type { BlockNode } from '../../block/node.js';
import { optBool, type OptionDesc, type OptionValues } from '../../block/options.js';
import { createVmdkOn, VMDK_SUBFORMATS, type VmdkAdapterType, type VmdkCreateOptions, type VmdkSubformat } from './create.js';

const ADAPTER_TYPES: readonly VmdkAdapterType[] = ['ide', 'lsilogic', 'buslogic', 'legacyESX'];

/** QEMU 7.2's vmdk_create_opts, in table order. */
export const VMDK_CREATE_OPTS: readonly OptionDesc[] = [
  { name: 'size', type: 'size', help: 'Virtual disk size' },
  {
    name: 'adapter_type',
    type: 'str',
    help: 'Virtual adapter type, can be one of ide (default), lsilogic, buslogic or legacyESX',
    qapi: { enum: ADAPTER_TYPES },
  },
  { name: 'backing_file', type: 'str', help: 'File name of a base image' },
  { name: 'backing_fmt', type: 'str', help: "Must be 'vmdk' if present", qapi: false },
  { name: 'compat6', type: 'bool', help: 'VMDK version 6 image', def: 'off', qapi: false },
  { name: 'hwversion', type: 'str', help: 'VMDK hardware version', def: 'undefined' },
  { name: 'toolsversion', type: 'str', help: 'VMware guest tools version' },
  {
    name: 'subformat',
    type: 'str',
    help: 'VMDK flat extent format, can be one of {monolithicSparse (default) | monolithicFlat | twoGbMaxExtentSparse | twoGbMaxExtentFlat | streamOptimized} ',
    qapi: { enum: VMDK_SUBFORMATS },
  },
  { name: 'zeroed_grain', type: 'bool', help: 'Enable efficient zero writes using the zeroed-grain GTE feature' },
];

/** The typed options from parsed creation values (vmdk_co_create_opts' checks and messages). */
export function vmdkOptionsFromValues(values: OptionValues): VmdkCreateOptions {
  const invalid = (v: string) => new BlockError('EINVAL', `invalid parameter value: ${v}`);
  const adapterType = values.get('adapter_type');
  if (adapterType !== undefined && !ADAPTER_TYPES.includes(adapterType as VmdkAdapterType)) throw invalid(adapterType);
  const subformat = values.get('subformat');
  if (subformat !== undefined && !(VMDK_SUBFORMATS as readonly string[]).includes(subformat)) throw invalid(subformat);
  let hwversion = values.get('hwversion');
  if (hwversion === 'undefined') hwversion = undefined;
  if (optBool(values, 'compat6') === true) {
    if (hwversion !== undefined) throw new BlockError('EINVAL', 'compat6 cannot be enabled with hwversion set');
    hwversion = '6';
  }
  const backingFmt = values.get('backing_fmt');
  if (backingFmt !== undefined && backingFmt !== 'vmdk') throw new BlockError('EINVAL', 'backing_file must be a vmdk image');
  const o: VmdkCreateOptions = {};
  if (subformat !== undefined) o.subformat = subformat as VmdkSubformat;
  if (adapterType !== undefined) o.adapterType = adapterType as VmdkAdapterType;
  if (hwversion !== undefined) o.hwversion = hwversion;
  const tools = values.get('toolsversion');
  if (tools !== undefined) o.toolsversion = tools;
  const zg = optBool(values, 'zeroed_grain');
  if (zg !== undefined) o.zeroedGrain = zg;
  const backing = values.get('backing_file');
  if (backing !== undefined) o.backingFile = backing;
  return o;
}

/** The driver's `create` hook: extents beside the image and the parent come through the request. */
export async function vmdkCreateImage(file: BlockNode, req: ImageCreateRequest): Promise<void> {
  const o = vmdkOptionsFromValues(req.values);
  const unable = (what: string) => new BlockError('ENOTSUP', `${what} cannot be made here (no storage to open further files in)`);
  await createVmdkOn(file, req.filename, req.size, o, {
    createExtent: (name) => (req.createFile ? req.createFile(name) : Promise.reject(unable(`the extent file '${name}'`))),
    openBacking: (name) => (req.openImage ? req.openImage(name) : Promise.reject(unable(`a VMDK with backing file '${name}'`))),
  });
}
