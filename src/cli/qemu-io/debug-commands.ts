/**
 * qemu-io's breakpoint commands for a blkdebug node in the graph (QEMU's
 * bdrv_debug_breakpoint and friends, src/block/debug-event.ts): `break EVENT
 * TAG` holds the next request that raises EVENT, `wait_break TAG` waits until
 * one is held, `resume TAG` lets it go, `remove_break TAG` drops the
 * breakpoint (and lets its held requests go). Messages as qemu-io prints them.
 */
import { BlockError, describeCode } from '../../block/errors.js';
import {
  bdrvDebugBreakpoint,
  bdrvDebugIsSuspended,
  bdrvDebugRemoveBreakpoint,
  bdrvDebugResume,
} from '../../block/debug-event.js';
import type { CmdInfo, QemuIoSession } from './commands.js';

function why(e: unknown): string {
  return describeCode(e instanceof BlockError ? e.code : 'EIO');
}

/** The negative errno qemu-io's commands return. */
function errno(e: unknown): number {
  return e instanceof BlockError && e.code === 'ENOTSUP' ? -95 : -2;
}

const breakCmd: CmdInfo = {
  name: 'break',
  argmin: 2,
  argmax: 2,
  args: 'event tag',
  oneline: 'sets a breakpoint on event and tags the stopped request as tag',
  async run(s, argv) {
    try {
      bdrvDebugBreakpoint(s.root, argv[1]!, argv[2]!);
    } catch (e) {
      s.out(`Could not set breakpoint: ${why(e)}\n`);
      return errno(e);
    }
    return 0;
  },
};

const removeBreakCmd: CmdInfo = {
  name: 'remove_break',
  argmin: 1,
  argmax: 1,
  args: 'tag',
  oneline: 'remove a breakpoint by tag',
  async run(s, argv) {
    try {
      bdrvDebugRemoveBreakpoint(s.root, argv[1]!);
    } catch (e) {
      s.out(`Could not remove breakpoint ${argv[1]}: ${why(e)}\n`);
      return errno(e);
    }
    return 0;
  },
};

const resumeCmd: CmdInfo = {
  name: 'resume',
  argmin: 1,
  argmax: 1,
  args: 'tag',
  oneline: 'resumes the request tagged as tag',
  async run(s, argv) {
    try {
      bdrvDebugResume(s.root, argv[1]!);
    } catch (e) {
      s.out(`Could not resume request: ${why(e)}\n`);
      return errno(e);
    }
    return 0;
  },
};

/** Lets requests in flight run until one is held at `tag` (none in flight: nothing can get there, so it returns). */
async function waitBreak(s: QemuIoSession, tag: string): Promise<void> {
  while (!bdrvDebugIsSuspended(s.root, tag) && s.aioPending) await new Promise((r) => setTimeout(r, 1));
}

const waitBreakCmd: CmdInfo = {
  name: 'wait_break',
  argmin: 1,
  argmax: 1,
  args: 'tag',
  oneline: 'waits for the suspension of a request',
  async run(s, argv) {
    await waitBreak(s, argv[1]!);
    return 0;
  },
};

export const DEBUG_COMMANDS: CmdInfo[] = [breakCmd, removeBreakCmd, resumeCmd, waitBreakCmd];
