/**
 * One entry of the QMP command table: the argument schema (QAPI-style, see
 * qapi-args.ts) and the handler. The handler gets arguments already checked
 * against the schema and returns the reply's `return` payload (undefined for
 * `{}`); it throws BlockError/QmpError, which `execute` turns into QMP errors.
 */
import type { Engine } from '../engine.js';
import type { ArgSpec, Args } from '../qapi-args.js';

export interface QmpCommand {
  args: ArgSpec;
  /** Members beyond `args` are checked by the handler itself (blockdev-add's driver-specific members). */
  openArgs?: boolean;
  run(engine: Engine, args: Args): Promise<unknown> | unknown;
}

export type QmpCommandTable = Record<string, QmpCommand>;
