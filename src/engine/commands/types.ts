/**
 * One entry of the QMP command table: the argument schema (QAPI-style, see
 * qapi-args.ts) and the handler. The handler gets arguments already checked
 * against the schema and returns the reply's `return` payload (undefined for
 * `{}`); it throws BlockError/QmpError, which `execute` turns into QMP errors.
 */
import type { Engine } from '../engine.js';
import type { ArgSpec, Args } from '../qapi-args.js';
import type { TransactionAction } from '../../block/transaction.js';

export interface QmpCommand {
  args: ArgSpec;
  /** Members beyond `args` are checked by the handler itself (blockdev-add's driver-specific members). */
  openArgs?: boolean;
  run(engine: Engine, args: Args): Promise<unknown> | unknown;
  /**
   * For commands that may be `transaction` actions: the action with its
   * prepare/commit/abort (args already checked against `args`).
   */
  transaction?(engine: Engine, args: Args): TransactionAction;
}

export type QmpCommandTable = Record<string, QmpCommand>;
