/**
 * The `transaction` command (QEMU's qmp_transaction): actions of the types
 * below are prepared in order, and either all commit or all abort
 * (src/block/transaction.ts). Snapshot actions come from their commands'
 * `transaction` hook; the dirty-bitmap actions are defined here: add is
 * undone by removing the bitmap, clear by restoring the saved bits.
 */
import { addDirtyBitmap, lookupDirtyBitmap, clearDirtyBitmap, removeDirtyBitmap } from '../../block/dirty-bitmap.js';
import { runTransaction, type TransactionAction } from '../../block/transaction.js';
import type { Engine } from '../engine.js';
import { checkArgs, type Args } from '../qapi-args.js';
import { genericError } from '../qmp-error.js';
import { snapshotCommands } from './snapshot.js';
import { mirrorBackupCommands } from './mirror-backup.js';
import type { QmpCommandTable } from './types.js';

const BITMAP_ADD_ARGS = { node: 'str', name: 'str', '*granularity': 'uint32', '*persistent': 'bool', '*disabled': 'bool' } as const;
const BITMAP_ARGS = { node: 'str', name: 'str' } as const;

function bitmapAdd(engine: Engine, a: Args): TransactionAction {
  let added = false;
  return {
    async prepare() {
      if (a.name === '') throw genericError('Bitmap name cannot be empty');
      const bs = engine.lookup(a.node as string);
      addDirtyBitmap(bs, a.name as string, {
        granularity: a.granularity as number | undefined,
        persistent: a.persistent as boolean | undefined,
        disabled: a.disabled as boolean | undefined,
      });
      added = true;
    },
    async abort() {
      if (added) await removeDirtyBitmap(engine.lookup(a.node as string), a.name as string);
    },
  };
}

function bitmapClear(engine: Engine, a: Args): TransactionAction {
  let saved: { offset: number; bytes: number }[] | undefined;
  return {
    async prepare() {
      const bs = engine.lookup(a.node as string);
      const bm = lookupDirtyBitmap(bs, a.name as string);
      const before = [...bm.dirtyExtents()].map((e) => ({ offset: e.offset, bytes: e.bytes }));
      clearDirtyBitmap(bs, a.name as string);
      saved = before;
    },
    abort() {
      if (!saved) return;
      const bm = lookupDirtyBitmap(engine.lookup(a.node as string), a.name as string);
      for (const e of saved) bm.bitmap.set(e.offset, e.bytes);
    },
  };
}

type ActionFactory = { args: Parameters<typeof checkArgs>[0]; make: (engine: Engine, a: Args) => TransactionAction };

const ACTIONS: Record<string, ActionFactory> = {
  'blockdev-snapshot-sync': { args: snapshotCommands['blockdev-snapshot-sync']!.args, make: snapshotCommands['blockdev-snapshot-sync']!.transaction! },
  'blockdev-snapshot-internal-sync': {
    args: snapshotCommands['blockdev-snapshot-internal-sync']!.args,
    make: snapshotCommands['blockdev-snapshot-internal-sync']!.transaction!,
  },
  'block-dirty-bitmap-add': { args: BITMAP_ADD_ARGS, make: bitmapAdd },
  'block-dirty-bitmap-clear': { args: BITMAP_ARGS, make: bitmapClear },
  'blockdev-backup': { args: mirrorBackupCommands['blockdev-backup']!.args, make: mirrorBackupCommands['blockdev-backup']!.transaction! },
  'drive-backup': { args: mirrorBackupCommands['drive-backup']!.args, make: mirrorBackupCommands['drive-backup']!.transaction! },
};

export const transactionCommands: QmpCommandTable = {
  transaction: {
    args: { actions: { list: { struct: { type: 'str', data: 'any' } } }, '*properties': 'any' },
    async run(engine, args) {
      const list = args.actions as { type: string; data: unknown }[];
      // Every action's arguments are checked before any of them runs.
      const actions = list.map((x, i) => {
        const f = ACTIONS[x.type];
        if (!f) throw genericError(`Parameter 'type' does not accept value '${x.type}'`);
        return f.make(engine, checkArgs(f.args, x.data, `actions[${i}].data.`));
      });
      await runTransaction(actions);
    },
  },
};
