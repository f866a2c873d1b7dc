/**
 * blockdev-reopen and change-backing-file (QEMU's qmp_blockdev_reopen,
 * qmp_change_backing_file).
 *
 * blockdev-reopen takes the node's full options again, as blockdev-add
 * does; what blocktab can change is the read-only flag (a child referenced
 * by its own name inherits an explicit `read-only`, as QEMU's
 * bdrv_reopen_queue_child does), the backing node (another node, or null
 * to drop it) and detect-zeroes; driver options it does not model (cache,
 * lazy-refcounts…) are accepted and left as they are. Every entry is checked
 * before any changes, so a refused list changes nothing.
 */
import type { BlockNode } from '../../block/node.js';
import { isBelow } from '../../block/copy-on-read.js';
import { reopenReadOnly } from '../../block/reopen.js';
import type { Engine } from '../engine.js';
import { checkArgs, isDict, type Args } from '../qapi-args.js';
import { genericError } from '../qmp-error.js';
import { BLOCKDEV_BASE, driverSpec } from './blockdev.js';
import type { QmpCommandTable } from './types.js';

interface ReopenPlan {
  bs: BlockNode;
  readOnly: boolean;
  /** The file child switched along (referenced by its own name with an explicit read-only). */
  fileToo: boolean;
  /** undefined: backing unchanged; null: dropped. */
  backing: BlockNode | null | undefined;
  detectZeroes: 'off' | 'on' | 'unmap';
}

/** Whether `bs` is `from` or below it (backing, file and data-file edges). */
function reaches(from: BlockNode, bs: BlockNode): boolean {
  if (from === bs) return true;
  return from.children().some((c) => reaches(c.node, bs));
}

function planReopen(engine: Engine, o: Args, prefix: string): ReopenPlan {
  checkArgs(BLOCKDEV_BASE, o, prefix, true);
  const name = o['node-name'] as string | undefined;
  if (name === undefined) throw genericError('node-name not specified');
  const bs = engine.findNode(name);
  if (!bs) throw genericError(`Failed to find node with node-name='${name}'`);
  const { spec, protocol } = driverSpec(engine, o.driver as string, prefix);
  checkArgs({ ...BLOCKDEV_BASE, ...spec }, o, prefix);
  if (o.driver !== bs.driver.name && !(protocol && bs.driver.kind === 'protocol')) throw genericError("Cannot change the option 'driver'");
  if (protocol && (o.filename ?? o.url) !== bs.filename) throw genericError(`Cannot change the option '${o.filename !== undefined ? 'filename' : 'url'}'`);
  let fileToo = false;
  if (!protocol) {
    const f = o.file;
    if (typeof f === 'string') engine.lookup(f, 'node');
    if (isDict(f) || (bs.file && f !== engine.nameOf(bs.file.node))) throw genericError("Cannot change the option 'file'");
    fileToo = o['read-only'] !== undefined && bs.file !== null;
  }
  let backing: BlockNode | null | undefined;
  if (bs.driver.supportsBacking && bs.driver.kind !== 'filter') {
    const b = o.backing;
    if (b === undefined) {
      if (bs.backing) throw genericError(`backing is missing for '${name}'`);
    } else if (b === null) {
      backing = bs.backing ? null : undefined;
    } else if (typeof b === 'string') {
      const nb = engine.lookup(b, 'node');
      if (reaches(nb, bs)) throw genericError(`Making '${b}' a backing child of '${name}' would create a cycle`);
      backing = nb === bs.backing?.node ? undefined : nb;
    } else {
      throw genericError(`Cannot change the option 'backing'`);
    }
  }
  const readOnly = (o['read-only'] as boolean | undefined) ?? false;
  const detectZeroes = (o['detect-zeroes'] as ReopenPlan['detectZeroes'] | undefined) ?? 'off';
  if (detectZeroes === 'unmap' && o.discard !== 'unmap') {
    throw genericError('setting detect-zeroes to unmap is not allowed without setting discard operation to unmap');
  }
  const file = bs.file?.node;
  if (!readOnly && file && (fileToo ? false : file.readOnly)) throw genericError('Block node is read-only');
  return { bs, readOnly, fileToo, backing, detectZeroes };
}

async function applyReopen(engine: Engine, p: ReopenPlan): Promise<void> {
  const { bs } = p;
  const file = p.fileToo ? bs.file!.node : null;
  // Writable children before their parent, read-only ones after it.
  if (file && !p.readOnly) await reopenReadOnly(file, false);
  await reopenReadOnly(bs, p.readOnly);
  if (file && p.readOnly) await reopenReadOnly(file, true);
  bs.detectZeroes = p.detectZeroes;
  if (p.backing !== undefined) {
    // full-backing-filename stays the header's, as QEMU shows it.
    const old = bs.detach('backing');
    if (p.backing) bs.attach(p.backing, 'backing');
    bs.backingDropped = p.backing === null;
    // A backing chain the node opened by itself goes when nothing else uses it.
    if (old && !engine.isMonitorOwned(old) && old.parents.length === 0 && engine.deviceOf(old) === undefined) await engine.closeTree(old);
  }
}

/** QEMU's qmp_get_root_bs. */
function rootNode(engine: Engine, name: string): BlockNode {
  const bs = engine.device(name)?.backend.root ?? engine.findNode(name);
  if (!bs) throw genericError(`Cannot find device='${name}' nor node-name='${name}'`);
  if (bs.parents.length > 0) throw genericError('Need a root block node');
  return bs;
}

export const reopenCommands: QmpCommandTable = {
  'blockdev-reopen': {
    args: { options: { list: 'any' } },
    async run(engine, args) {
      const items = args.options as unknown[];
      const plans = items.map((o, i) => {
        if (!isDict(o)) throw genericError(`Invalid parameter type for 'options[${i}]', expected: object`);
        return planReopen(engine, o, `options[${i}].`);
      });
      const seen = new Set<BlockNode>();
      for (const p of plans) {
        if (seen.has(p.bs)) throw genericError(`Node '${engine.nameOf(p.bs)}' is listed more than once`);
        seen.add(p.bs);
      }
      for (const p of plans) await applyReopen(engine, p);
    },
  },

  'change-backing-file': {
    args: { device: 'str', 'image-node-name': 'str', 'backing-file': 'str' },
    async run(engine, args) {
      const top = rootNode(engine, args.device as string);
      const name = args['image-node-name'] as string;
      const image = engine.findNode(name);
      if (!image) throw genericError(`Cannot find device='' nor node-name='${name}'`);
      if (!image.cowNode()) throw genericError('not allowing backing file change on an image without a backing file');
      if (image !== top && !isBelow(top, image)) throw genericError(`'${args.device as string}' and image file are not in the same chain`);
      const change = image.driver.changeBackingFile;
      if (!change) throw genericError(`Could not change the backing file to '${args['backing-file']}': the ${image.driver.name} format has none`, 'ENOTSUP');
      const wasReadOnly = image.readOnly;
      const file = image.file?.node;
      const fileWasReadOnly = file?.readOnly ?? false;
      // As QEMU: a read-only image is made writable for the header update, and read-only again after.
      if (wasReadOnly) {
        if (file) await reopenReadOnly(file, false);
        await reopenReadOnly(image, false);
      }
      try {
        // As QEMU 7.2: the format written is the image's own driver name, not its backing node's.
        await change(image, args['backing-file'] as string, image.driver.name);
        // The node's backing node was not opened from this name: query shows its options (QEMU's auto_backing_file).
        image.autoBackingFile = args['backing-file'] as string;
        const storage = engine.storageOf(image);
        if (storage) image.fullBackingFilename = storage.resolve(image.filename, args['backing-file'] as string);
      } finally {
        if (wasReadOnly) {
          await reopenReadOnly(image, true);
          if (file) await reopenReadOnly(file, fileWasReadOnly);
        }
      }
    },
  },
};
