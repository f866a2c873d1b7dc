/**
 * The name the CLI speaks as. Invoked through a link named `qemu-img` or
 * `qemu-io` (as QEMU's iotests and scripts written for QEMU call their tools),
 * blocktab is that tool: it runs qemu-io's command line for `qemu-io`, and its
 * messages start with the tool's name, as QEMU's do. Otherwise it is `blocktab`.
 */
import { basename } from 'node:path';

export type ToolName = 'blocktab' | 'qemu-img' | 'qemu-io';

export function invokedAs(argv1: string | undefined = process.argv[1]): ToolName {
  const name = argv1 === undefined ? '' : basename(argv1);
  return name === 'qemu-img' || name === 'qemu-io' ? name : 'blocktab';
}

/** The prefix of error lines: `qemu-img` when invoked as qemu-img, else `blocktab`. */
export function progName(): string {
  return invokedAs() === 'qemu-io' ? 'qemu-io' : invokedAs();
}

/**
 * Where the engine's warnings about an image go in the CLI: standard error,
 * a `warning: ` line prefixed with the tool's name as QEMU's warn_report does
 * (other lines, like qcow2's corruption notice, print as they are). A
 * `report` is QEMU's error_report of a failure the command goes on to report
 * in its own words: prefixed with the tool's name too.
 */
export function warnLine(message: string, kind?: 'report'): string {
  return `${kind === 'report' || message.startsWith('warning: ') ? `${progName()}: ` : ''}${message}\n`;
}

let warnedOnce = false;

export function cliWarn(message: string, kind?: 'report'): void {
  warnedOnce = true;
  process.stderr.write(warnLine(message, kind));
}

/** Whether cliWarn wrote anything (main.ts's early exit then waits for standard error). */
export const warned = (): boolean => warnedOnce;
