/** `blocktab check`: qemu-img check's options, output and exit codes (0, 1, 2, 3, 63). */
import { CheckFailedError, isBlockError } from '../block/errors.js';
import { closeNode } from '../block/open.js';
import type { BlockNode } from '../block/node.js';
import { checkExitCode, checkNode, humanImageCheck } from '../img/check.js';
import { toJsonPretty } from '../img/qobject.js';
import { CliError } from './main.js';
import { flag, outputFormat, parseCommand, str, UsageError } from './args.js';
import { openForCli } from './open.js';
import type { Output } from './main.js';
import { CHECK_REPORT_MARK } from '../block/driver.js';
import { progName } from './progname.js';

/** A check line as qemu-img prints it: an error report starts with the tool's name. */
function reportLine(m: string): string {
  return (m.startsWith(CHECK_REPORT_MARK) ? `${progName()}: ${m.slice(CHECK_REPORT_MARK.length)}` : m) + '\n';
}

export async function runCheck(args: string[], out: Output): Promise<number> {
  const p = parseCommand('check', args, {
    format: { type: 'string', short: 'f' },
    output: { type: 'string' },
    repair: { type: 'string', short: 'r' },
    quiet: { type: 'boolean', short: 'q' },
    'force-share': { type: 'boolean', short: 'U' },
    cache: { type: 'string', short: 'T' },
    object: { type: 'string', multiple: true },
    'image-opts': { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (p.positionals.length !== 1) throw new UsageError(p.positionals.length ? `Unexpected argument: ${p.positionals[1]}` : 'Expecting one image file name');
  const filename = p.positionals[0]!;
  const fmt = outputFormat(p);
  const quiet = flag(p, 'quiet');
  const r = str(p, 'repair');
  let fix = { leaks: false, errors: false };
  if (r !== undefined) {
    if (r === 'leaks') fix = { leaks: true, errors: false };
    else if (r === 'all') fix = { leaks: true, errors: true };
    else throw new UsageError(`Unknown option value for -r (expecting 'leaks' or 'all'): ${r}`);
  }
  const repairing = fix.leaks || fix.errors;
  let bs: BlockNode | undefined;
  try {
    // 'check' (QEMU's BDRV_O_CHECK): a repair may open an image with the corrupt bit read/write, and the
    // check reads the snapshot table itself.
    bs = await openForCli(filename, { format: str(p, 'format'), readOnly: !repairing, backing: false, driverOptions: { check: true } });
    let run;
    // The check's lines go out as they are found (an image can make millions: none is kept), in
    // writes of up to 64 KiB that wait for a slow reader, flushed before anything else is printed.
    let pending = '';
    const write = out.stderrBlocking ?? out.stderr;
    const flush = () => {
      if (pending) write(pending);
      pending = '';
    };
    try {
      run = await checkNode(bs, filename, fix, {
        line: (m) => {
          pending += reportLine(m);
          if (pending.length >= 65536) flush();
        },
      });
    } catch (e) {
      flush();
      if (isBlockError(e) && e.code === 'ENOTSUP' && e.message === 'This image format does not support checks') throw new CliError(63, e.message);
      // The check stopped: after its lines, qemu-img's "Check failed: <reason>".
      if (e instanceof CheckFailedError) throw new CliError(1, `Check failed: ${e.message}`);
      throw e;
    }
    flush();
    // qemu-img prints the repair summary with printf to a stdout that is a pipe in every script (fully buffered), and
    // the double check's findings to unbuffered stderr: they come out first (271).
    if (run.repaired && fmt === 'human' && !quiet) {
      out.stdout(
        `The following inconsistencies were found and repaired:\n\n    ${run.repaired.leaks} leaked clusters\n    ${run.repaired.corruptions} corruptions\n\nDouble checking the fixed image now...\n`,
      );
    }
    if (!quiet) out.stdout(fmt === 'json' ? toJsonPretty(run.check) + '\n' : humanImageCheck(run.check));
    if (run.check['check-errors']) throw new CliError(1, 'Check failed');
    return checkExitCode(run.check);
  } finally {
    if (bs) await closeNode(bs);
  }
}
