/**
 * Snapshot commands: blockdev-snapshot-sync (external overlay), and
 * blockdev-snapshot-internal-sync / blockdev-snapshot-delete-internal-sync
 * (qcow2 internal snapshots), with QEMU's checks, messages and replies. Each
 * is also a transaction action (prepare does the work, abort undoes it).
 */
import { BlockError } from '../../block/errors.js';
import type { BlockNode } from '../../block/node.js';
import { externalSnapshot, type ExternalSnapshot } from '../../block/external-snapshot.js';
import type { TransactionAction } from '../../block/transaction.js';
import { openImage } from '../../block/open.js';
import { closeNode } from '../../block/open.js';
import { createSnapshot, deleteSnapshot, listSnapshots } from '../../img/snapshot.js';
import { createImage, planCreate } from '../../img/create.js';
import { snapshotInfoQapi } from '../../img/info.js';
import type { Engine } from '../engine.js';
import type { Args } from '../qapi-args.js';
import { genericError, QmpError } from '../qmp-error.js';
import type { QmpCommandTable } from './types.js';

function backendsOf(engine: Engine) {
  return engine.deviceNames().map((d) => engine.device(d)!.backend);
}

function storageFor(engine: Engine, bs: BlockNode) {
  const st = engine.storageOf(bs);
  if (!st) throw genericError(`Node '${engine.nameOf(bs)}' has no storage to create the overlay in`);
  return st;
}

/** blockdev-snapshot-sync as a transaction action. */
function externalAction(engine: Engine, args: Args): TransactionAction {
  let snap: ExternalSnapshot | undefined;
  let created: string | undefined;
  const device = args.device as string | undefined;
  const nodeName = args['node-name'] as string | undefined;
  const file = args['snapshot-file'] as string;
  const format = (args.format as string | undefined) ?? 'qcow2';
  const mode = (args.mode as string | undefined) ?? 'absolute-paths';
  return {
    async prepare() {
      const old = engine.lookupBs(device, nodeName);
      const snapNodeName = args['snapshot-node-name'] as string | undefined;
      if (nodeName !== undefined && snapNodeName === undefined) throw genericError('New overlay node-name missing');
      if (snapNodeName !== undefined) {
        if (engine.findNode(snapNodeName) || engine.device(snapNodeName)) throw genericError('New overlay node-name already in use');
        engine.checkNewNodeName(snapNodeName);
      }
      if (old.readOnly) throw genericError(`Device '${device ?? nodeName}' is read only`, 'EROFS');
      const storage = storageFor(engine, old);
      if (mode === 'absolute-paths') {
        const plan = await planCreate(storage, { filename: file, format, size: old.totalBytes, backingFile: old.filename, backingFormat: old.driver.name, unsafe: true });
        await createImage(storage, plan);
        created = file;
      } else {
        // mode 'existing': the file must be there (opening it checks).
        const probe = await openImage(storage, file, { format, readOnly: true, backing: false });
        await closeNode(probe);
      }
      snap = await externalSnapshot(storage, old, file, format, backendsOf(engine), { nodeName: snapNodeName });
      engine.adopt(snap.overlay, storage, { name: snapNodeName });
    },
    async abort() {
      if (snap) {
        await snap.undo();
        await engine.closeTree(snap.overlay);
      }
      if (created !== undefined) await storageFor(engine, snap?.old ?? engine.lookup(device ?? nodeName!)).removeFile?.(created);
    },
  };
}

/** blockdev-snapshot-internal-sync as a transaction action. */
function internalAction(engine: Engine, args: Args): TransactionAction {
  const device = args.device as string;
  const name = args.name as string;
  let bs: BlockNode | undefined;
  let id: string | undefined;
  return {
    async prepare() {
      if (name === '') throw genericError('Name is empty');
      bs = engine.lookup(device);
      if (bs.readOnly) throw genericError(`Device '${device}' is read only`, 'EROFS');
      if (!bs.driver.createSnapshot) throw genericError(`Block format '${bs.driver.name}' used by device '${device}' does not support internal snapshots`, 'ENOTSUP');
      if (listSnapshots(bs).some((sn) => sn.name === name)) throw genericError(`Snapshot with name '${name}' already exists on device '${device}'`, 'EEXIST');
      const now = Date.now();
      // QEMU records the VM clock and no icount outside record/replay; without a VM both are "none".
      const sn = await createSnapshot(bs, name, { dateSec: Math.floor(now / 1000), dateNsec: (now % 1000) * 1e6, vmClockNsec: 0 });
      id = sn.id;
    },
    async abort() {
      if (bs && id !== undefined) await deleteSnapshot(bs, id, name);
    },
  };
}

async function runAction(a: TransactionAction): Promise<void> {
  try {
    await a.prepare();
  } catch (e) {
    await a.abort?.();
    throw e;
  }
  await a.commit?.();
}

const EXTERNAL_ARGS = {
  '*device': 'str',
  '*node-name': 'str',
  'snapshot-file': 'str',
  '*snapshot-node-name': 'str',
  '*format': 'str',
  '*mode': { enum: ['existing', 'absolute-paths'] },
} as const;

export const snapshotCommands: QmpCommandTable = {
  'blockdev-snapshot-sync': {
    args: EXTERNAL_ARGS,
    run: (engine, args) => runAction(externalAction(engine, args)),
    transaction: externalAction,
  },
  'blockdev-snapshot-internal-sync': {
    args: { device: 'str', name: 'str' },
    run: (engine, args) => runAction(internalAction(engine, args)),
    transaction: internalAction,
  },
  'blockdev-snapshot-delete-internal-sync': {
    args: { device: 'str', '*id': 'str', '*name': 'str' },
    async run(engine, args) {
      const device = args.device as string;
      const id = args.id as string | undefined;
      const name = args.name as string | undefined;
      const bs = engine.lookup(device);
      if (id === undefined && name === undefined) throw genericError('Name or id must be provided');
      if (bs.readOnly) throw genericError(`Device '${device}' is read only`, 'EROFS');
      const sn = listSnapshots(bs).find((s) => (id === undefined || s.id === id) && (name === undefined || s.name === name));
      if (!sn)
        throw genericError(
        // QEMU 7.2 prints an absent id or name as 'null'.
        `Snapshot with id '${id ?? 'null'}' and name '${name ?? 'null'}' does not exist on device '${device}'`,
        'ENOENT',
      );
      try {
        await deleteSnapshot(bs, sn.id, sn.name);
      } catch (e) {
        throw e instanceof BlockError ? e : genericError(String(e));
      }
      return snapshotInfoQapi(sn);
    },
  },
};
