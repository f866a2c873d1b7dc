/**
 * The Engine's QMP command dispatch: one table of commands by QEMU's name
 * (src/engine/commands/), arguments checked against each entry's QAPI-style
 * schema, failures turned into QMP errors. Adding a command is an entry in
 * the table (or `registerCommand` at run time), never a branch here.
 */
import { checkArgs } from './qapi-args.js';
import { QmpError, toQmpError } from './qmp-error.js';
import { qmpCommands, type QmpCommand } from './commands/index.js';
import type { Engine } from './engine.js';
import { EngineGraph, type EngineGraphOptions } from './graph.js';
import { loadDrivers } from '../block/driver.js';

export abstract class EngineDispatch extends EngineGraph {
  /** The command table; `registerCommand` adds to it. */
  readonly commands: Map<string, QmpCommand>;

  constructor(options: EngineGraphOptions) {
    super(options);
    this.commands = new Map(Object.entries(qmpCommands));
  }

  // ------------------------------------------------------------------ QMP

  /**
   * Runs a QMP command and returns its `return` payload (`{}` for commands
   * that return nothing). Throws a QmpError: CommandNotFound for an unknown
   * command, GenericError for bad arguments and failures, DeviceNotFound when
   * a named node or device does not exist.
   */
  async execute(command: string, args?: unknown): Promise<unknown> {
    const cmd = this.commands.get(command);
    if (!cmd) throw new QmpError('CommandNotFound', `The command ${command} has not been found`);
    try {
      // Commands check driver names and options synchronously (blockdev-add's
      // schema, blockdev-create's branches): every driver module is loaded first.
      await loadDrivers();
      const checked = checkArgs(cmd.args, args, '', cmd.openArgs === true);
      const ret = await cmd.run(this as unknown as Engine, checked);
      return ret === undefined ? {} : ret;
    } catch (e) {
      throw toQmpError(e);
    }
  }

  /** Adds (or replaces) a command in this engine's table. */
  registerCommand(name: string, command: QmpCommand): void {
    this.commands.set(name, command);
  }
}
