/**
 * Removable media (QEMU's blockdev.c media commands). A named device either
 * has a device model with a tray (`attachTrayDevice`, QEMU's ide-cd: the
 * tray opens and closes with a DEVICE_TRAY_MOVED event, and a medium goes in
 * or out only while it is open) or none, as QEMU's `-drive if=none`: then
 * the tray commands do nothing, `eject` takes the medium out at once and
 * `blockdev-change-medium` replaces it. A device without a medium fails
 * requests with "No medium found". `id` names a device model by its qdev
 * id. The order of the checks and the messages are QEMU 7.2's.
 */
import { openImage } from '../../block/open.js';
import type { BlockNode } from '../../block/node.js';
import type { Engine } from '../engine.js';
import type { IoTarget } from '../graph.js';
import type { Args } from '../qapi-args.js';
import { QmpError, genericError } from '../qmp-error.js';
import type { QmpCommandTable } from './types.js';

interface Blk {
  /** The device (BlockBackend) name. */
  name: string;
  io: IoTarget;
  /** How QEMU names it in messages: the argument given (`device ?: id`). */
  said: string;
}

/** QEMU's qmp_get_blk: a device by name or a device model by qdev id. */
function getBlk(engine: Engine, device: string | undefined, id: string | undefined): Blk {
  if ((device === undefined) === (id === undefined)) throw genericError("Need exactly one of 'device' and 'id'");
  const name = device ?? engine.deviceByModelId(id!);
  const io = name !== undefined ? engine.device(name) : undefined;
  if (name === undefined || !io) throw new QmpError('DeviceNotFound', `Device '${device ?? id}' not found`);
  return { name, io, said: device ?? id! };
}

const blkOf = (engine: Engine, args: Args) => getBlk(engine, args.device as string | undefined, args.id as string | undefined);

function moveTray(engine: Engine, b: Blk, open: boolean): void {
  const tray = b.io.model!;
  tray.open = open;
  engine.emit('DEVICE_TRAY_MOVED', { device: b.name, 'tray-open': open, id: tray.id });
}

/** QEMU's do_open_tray: false when the device has no tray (the callers go on). */
function openTray(engine: Engine, b: Blk, force: boolean): boolean {
  const tray = b.io.model;
  if (!tray) return false;
  if (tray.open) return true;
  if (tray.locked && !force) throw genericError(`Device '${b.said}' is locked and force was not specified, wait for tray to open and try again`);
  moveTray(engine, b, true);
  return true;
}

/** QEMU's blockdev-remove-medium on a found device. */
async function removeMedium(engine: Engine, b: Blk): Promise<void> {
  if (b.io.model && !b.io.model.open) throw genericError(`Tray of device '${b.said}' is not open`);
  if (!b.io.backend.hasMedium) return;
  await engine.ejectMedium(b.name);
}

/** QEMU's qmp_blockdev_insert_anon_medium. */
function insertMedium(engine: Engine, b: Blk, bs: BlockNode, openedForIt: boolean): void {
  if (b.io.model && !b.io.model.open) throw genericError('Tray of the device is not open');
  if (b.io.backend.hasMedium) throw genericError('There already is a medium in the device');
  engine.insertMedium(b.name, bs, openedForIt);
}

export const mediaCommands: QmpCommandTable = {
  'blockdev-open-tray': {
    args: { '*device': 'str', '*id': 'str', '*force': 'bool' },
    run(engine, args) {
      openTray(engine, blkOf(engine, args), args.force === true);
    },
  },

  'blockdev-close-tray': {
    args: { '*device': 'str', '*id': 'str' },
    run(engine, args) {
      const b = blkOf(engine, args);
      if (b.io.model?.open) moveTray(engine, b, false);
    },
  },

  eject: {
    args: { '*device': 'str', '*id': 'str', '*force': 'bool' },
    async run(engine, args) {
      const b = blkOf(engine, args);
      openTray(engine, b, args.force === true);
      await removeMedium(engine, b);
    },
  },

  'blockdev-remove-medium': {
    args: { id: 'str' },
    async run(engine, args) {
      await removeMedium(engine, getBlk(engine, undefined, args.id as string));
    },
  },

  'blockdev-insert-medium': {
    args: { id: 'str', 'node-name': 'str' },
    run(engine, args) {
      const b = getBlk(engine, undefined, args.id as string);
      const nodeName = args['node-name'] as string;
      const bs = engine.findNode(nodeName);
      if (!bs) throw genericError(`Node '${nodeName}' not found`);
      if (engine.deviceOf(bs) !== undefined || engine.usesOf(bs).some((u) => u.backend)) throw genericError(`Node '${nodeName}' is already in use`);
      insertMedium(engine, b, bs, false);
    },
  },

  'blockdev-change-medium': {
    args: {
      '*device': 'str',
      '*id': 'str',
      filename: 'str',
      '*format': 'str',
      '*force': 'bool',
      '*read-only-mode': { enum: ['retain', 'read-only', 'read-write'] },
    },
    async run(engine, args) {
      const b = blkOf(engine, args);
      const blk = b.io.backend;
      const mode = (args['read-only-mode'] as string | undefined) ?? 'retain';
      const readOnly = mode === 'read-only' || (mode === 'retain' && blk.hasMedium && blk.root.readOnly);
      const storage = engine.storage('file') ?? engine.storages.values().next().value;
      if (!storage) throw genericError('No storage to open media from');
      // Open first: a medium that cannot be opened leaves the old one in (as QEMU).
      const bs = await openImage(storage, args.filename as string, { format: args.format as string | undefined, readOnly });
      let inserted = false;
      try {
        openTray(engine, b, false);
        await removeMedium(engine, b);
        engine.adopt(bs, storage);
        insertMedium(engine, b, bs, true);
        inserted = true;
      } finally {
        if (!inserted) await engine.closeTree(bs).catch(() => {});
      }
      if (b.io.model?.open) moveTray(engine, b, false);
    },
  },
};
