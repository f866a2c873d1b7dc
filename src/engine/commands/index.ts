/**
 * The QMP command table: every command the Engine answers, by QEMU's name.
 *
 * Adding a command (blockdev-create, blockdev-snapshot-sync, transaction, …)
 * is one entry: write `{ args, run }` (see types.ts) in a module under this
 * folder and spread its table in here. Engine.execute looks commands up in
 * this table, checks the arguments against `args` and turns failures into
 * QMP errors; query-commands lists what is here.
 */
import { blockdevCommands } from './blockdev.js';
import { queryCommands } from './query.js';
import { dirtyBitmapCommands } from './dirty-bitmap.js';
import { snapshotCommands } from './snapshot.js';
import { transactionCommands } from './transaction.js';
import { jobCommands } from './jobs.js';
import { createCommands } from './create.js';
import { commitCommands } from './commit.js';
import { mirrorBackupCommands } from './mirror-backup.js';
import { throttleCommands } from './throttle.js';
import { runStateCommands } from './runstate.js';
import { mediaCommands } from './media.js';
import { reopenCommands } from './reopen.js';
import type { QmpCommandTable } from './types.js';

export type { QmpCommand, QmpCommandTable } from './types.js';

export const qmpCommands: QmpCommandTable = {
  ...blockdevCommands,
  ...queryCommands,
  ...dirtyBitmapCommands,
  ...snapshotCommands,
  ...transactionCommands,
  ...jobCommands,
  ...createCommands,
  ...commitCommands,
  ...mirrorBackupCommands,
  ...throttleCommands,
  ...runStateCommands,
  ...mediaCommands,
  ...reopenCommands,
};
