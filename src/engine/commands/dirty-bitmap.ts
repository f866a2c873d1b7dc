/** The block-dirty-bitmap-* commands over src/block/dirty-bitmap.ts (which carries QEMU's checks and messages). */
import {
  addDirtyBitmap,
  clearDirtyBitmap,
  disableDirtyBitmap,
  enableDirtyBitmap,
  lookupDirtyBitmap,
  mergeDirtyBitmaps,
  removeDirtyBitmap,
  type MergeSource,
} from '../../block/dirty-bitmap.js';
import type { Engine } from '../engine.js';
import type { Args } from '../qapi-args.js';
import { genericError } from '../qmp-error.js';
import type { QmpCommandTable } from './types.js';

const NODE_AND_NAME = { node: 'str', name: 'str' } as const;

/** QEMU's block_dirty_bitmap_lookup: the node by device or node name. */
const nodeOf = (engine: Engine, node: string) => engine.lookup(node, 'device-or-node', `Node '${node}' not found`);

function simple(fn: (bs: ReturnType<typeof nodeOf>, name: string) => unknown) {
  return {
    args: NODE_AND_NAME,
    async run(engine: Engine, args: Args) {
      await fn(nodeOf(engine, args.node as string), args.name as string);
    },
  };
}

export const dirtyBitmapCommands: QmpCommandTable = {
  'block-dirty-bitmap-add': {
    args: { ...NODE_AND_NAME, '*granularity': 'uint32', '*persistent': 'bool', '*disabled': 'bool' },
    run(engine, args) {
      const name = args.name as string;
      if (name === '') throw genericError('Bitmap name cannot be empty');
      const node = args.node as string;
      const bs = engine.lookup(node, 'device-or-node');
      addDirtyBitmap(bs, name, {
        granularity: args.granularity as number | undefined,
        persistent: args.persistent as boolean | undefined,
        disabled: args.disabled as boolean | undefined,
      });
    },
  },
  'block-dirty-bitmap-remove': simple((bs, name) => removeDirtyBitmap(bs, name)),
  'block-dirty-bitmap-clear': simple((bs, name) => clearDirtyBitmap(bs, name)),
  'block-dirty-bitmap-enable': simple((bs, name) => enableDirtyBitmap(bs, name)),
  'block-dirty-bitmap-disable': simple((bs, name) => disableDirtyBitmap(bs, name)),
  // QEMU's debugging aid that its iotests compare bitmaps with: the hash of the bits.
  'x-debug-block-dirty-bitmap-sha256': {
    args: NODE_AND_NAME,
    async run(engine, args) {
      return { sha256: await lookupDirtyBitmap(nodeOf(engine, args.node as string), args.name as string).sha256() };
    },
  },
  'block-dirty-bitmap-merge': {
    args: {
      node: 'str',
      target: 'str',
      bitmaps: { list: { alternate: ['str', { struct: NODE_AND_NAME }] } },
    },
    run(engine, args) {
      const bs = nodeOf(engine, args.node as string);
      const sources: MergeSource[] = (args.bitmaps as (string | { node: string; name: string })[]).map((s) =>
        typeof s === 'string' ? s : { node: nodeOf(engine, s.node), name: s.name },
      );
      mergeDirtyBitmaps(bs, args.target as string, sources);
    },
  },
};
