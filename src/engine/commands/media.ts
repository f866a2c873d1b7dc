/**
 * Removable media (QEMU's blockdev.c media commands) for devices that have no
 * device model, as QEMU's `-drive if=none` backends: such a device has no
 * tray, so blockdev-open-tray / close-tray succeed without doing anything,
 * `eject` takes the medium out at once, `blockdev-change-medium` replaces it,
 * and a device without a medium fails requests with "No medium found".
 * The commands that address a device model by its qdev `id`
 * (blockdev-remove-medium, blockdev-insert-medium, and `id` everywhere) find
 * none here, as QEMU with -machine none finds none.
 */
import { openImage } from '../../block/open.js';
import type { Engine } from '../engine.js';
import type { Args } from '../qapi-args.js';
import { QmpError, genericError } from '../qmp-error.js';
import type { QmpCommandTable } from './types.js';

/** The device named by `device`, or DeviceNotFound for an `id` (there are no device models). */
function target(engine: Engine, args: Args): string {
  const device = args.device as string | undefined;
  const id = args.id as string | undefined;
  if ((device === undefined) === (id === undefined)) throw genericError("Need exactly one of 'device' and 'id'");
  if (device === undefined || !engine.device(device)) throw new QmpError('DeviceNotFound', `Device '${device ?? id}' not found`);
  return device;
}

const noDeviceModel = (id: string) => new QmpError('DeviceNotFound', `Device '${id}' not found`);

export const mediaCommands: QmpCommandTable = {
  'blockdev-open-tray': {
    args: { '*device': 'str', '*id': 'str', '*force': 'bool' },
    run(engine, args) {
      target(engine, args); // no tray: nothing moves, no DEVICE_TRAY_MOVED
    },
  },

  'blockdev-close-tray': {
    args: { '*device': 'str', '*id': 'str' },
    run(engine, args) {
      target(engine, args);
    },
  },

  eject: {
    args: { '*device': 'str', '*id': 'str', '*force': 'bool' },
    async run(engine, args) {
      await engine.ejectMedium(target(engine, args));
    },
  },

  'blockdev-remove-medium': {
    args: { id: 'str' },
    run(_engine, args) {
      throw noDeviceModel(args.id as string);
    },
  },

  'blockdev-insert-medium': {
    args: { id: 'str', 'node-name': 'str' },
    run(_engine, args) {
      throw noDeviceModel(args.id as string);
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
      const name = target(engine, args);
      const blk = engine.device(name)!.backend;
      const mode = (args['read-only-mode'] as string | undefined) ?? 'retain';
      const readOnly = mode === 'read-only' || (mode === 'retain' && blk.hasMedium && blk.root.readOnly);
      const storage = engine.storage('file') ?? engine.storages.values().next().value;
      if (!storage) throw genericError('No storage to open media from');
      // Open first: a medium that cannot be opened leaves the old one in (as QEMU).
      const bs = await openImage(storage, args.filename as string, { format: args.format as string | undefined, readOnly });
      await engine.ejectMedium(name);
      engine.adopt(bs, storage);
      engine.insertMedium(name, bs, true);
    },
  },
};
