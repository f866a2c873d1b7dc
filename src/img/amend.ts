/**
 * qemu-img amend as a function: -o options checked against the format's
 * amend list (creation-only options refused as qemu-img does), then handed
 * to the format (qcow2 only; other formats cannot amend).
 */
import { BlockError } from '../block/errors.js';
import type { BlockNode } from '../block/node.js';
import { amendQcow2, type Qcow2AmendOptions } from '../formats/qcow2/amend.js';
import { appendOptionLists, createOptionList, optBool, optNumber, parseOptions, QCOW2_AMEND_OPTS } from './options.js';

/** Parses amend options for `format` with qemu-img's messages. */
export function parseAmendOptions(format: string, texts: string[]): Qcow2AmendOptions {
  if (format !== 'qcow2') throw new BlockError('ENOTSUP', `Format driver '${format}' does not support option amendment`);
  const values = parseOptions(appendOptionLists(createOptionList('qcow2'), QCOW2_AMEND_OPTS), texts);
  const o: Qcow2AmendOptions = {};
  for (const name of values.keys()) {
    if (!QCOW2_AMEND_OPTS.some((d) => d.name === name)) {
      throw new BlockError('EINVAL', `Invalid parameter '${name}'\nThis option is only supported for image creation`);
    }
  }
  if ([...values.keys()].some((k) => k.startsWith('encrypt.'))) throw new BlockError('ENOTSUP', 'encrypted qcow2 images are not supported');
  const compat = values.get('compat');
  if (compat !== undefined) {
    if (compat === '0.10' || compat === 'v2') o.version = 2;
    else if (compat === '1.1' || compat === 'v3') o.version = 3;
    else throw new BlockError('EINVAL', `Unknown compatibility level ${compat}`);
  }
  if (values.has('backing_file') || values.has('backing_fmt')) {
    throw new BlockError('ENOTSUP', "Cannot amend the backing file\nYou can use 'qemu-img rebase' instead.");
  }
  if (values.has('data_file') || values.has('data_file_raw')) {
    throw new BlockError('ENOTSUP', 'data-file can only be set for images that use an external data file');
  }
  o.lazyRefcounts = optBool(values, 'lazy_refcounts');
  o.refcountBits = optNumber(values, 'refcount_bits');
  if (values.has('size')) o.size = Number(values.get('size'));
  return o;
}

export async function amendImage(bs: BlockNode, o: Qcow2AmendOptions): Promise<void> {
  if (bs.driver.name !== 'qcow2') throw new BlockError('ENOTSUP', `Format driver '${bs.driver.name}' does not support option amendment`);
  await amendQcow2(bs, o);
}
