/** `blocktab compare`: qemu-img compare's messages and exit codes (0 same, 1 differ, 2 error, 3/4 status/read failure). */
import { compareImages } from '../img/compare.js';
import { closeNode } from '../block/open.js';
import type { BlockNode } from '../block/node.js';
import { flag, parseCommand, str, UsageError } from './args.js';
import { openForCli } from './open.js';
import { progName } from './progname.js';
import { Progress } from './progress.js';
import { type Output, CliError } from './main.js';

export async function runCompare(args: string[], out: Output): Promise<number> {
  const p = parseCommand('compare', args, {
    'a-format': { type: 'string', short: 'f' },
    'b-format': { type: 'string', short: 'F' },
    strict: { type: 'boolean', short: 's' },
    progress: { type: 'boolean', short: 'p' },
    quiet: { type: 'boolean', short: 'q' },
    cache: { type: 'string', short: 'T' },
    'force-share': { type: 'boolean', short: 'U' },
    help: { type: 'boolean', short: 'h' },
  });
  if (p.positionals.length !== 2) throw new CliError(2, 'Expecting two image file names');
  const quiet = flag(p, 'quiet');
  const say = (s: string) => {
    if (!quiet) out.stdout(s);
  };
  const progress = new Progress(flag(p, 'progress') && !quiet, out.stdout);
  let a: BlockNode | undefined;
  let b: BlockNode | undefined;
  try {
    try {
      a = await openForCli(p.positionals[0]!, { format: str(p, 'a-format') });
      b = await openForCli(p.positionals[1]!, { format: str(p, 'b-format') });
    } catch (e) {
      throw new CliError(2, e instanceof Error ? e.message : String(e));
    }
    progress.set(0);
    let last = 0;
    const r = await compareImages(a, b, { strict: flag(p, 'strict'), names: [p.positionals[0]!, p.positionals[1]!] }, (done, total) => {
      progress.add(((done - last) / total) * 100);
      last = done;
    });
    switch (r.kind) {
      case 'identical':
        if (r.sizeMismatch) say('Warning: Image size mismatch!\n');
        say('Images are identical.\n');
        return 0;
      case 'content-mismatch':
        if (r.sizeMismatch) say('Warning: Image size mismatch!\n');
        say(`Content mismatch at offset ${r.offset}!\n`);
        return 1;
      case 'strict-size-mismatch':
        say('Strict mode: Image size mismatch!\n');
        return 1;
      case 'strict-status-mismatch':
        say(`Strict mode: Offset ${r.offset} block status mismatch!\n`);
        return 1;
      case 'error':
        // qemu-img's warning goes to its buffered stdout, so it shows after the error.
        out.stderr(`${progName()}: ${r.message}\n`);
        if (r.sizeMismatch) say('Warning: Image size mismatch!\n');
        return r.exitCode;
    }
    return 2;
  } catch (e) {
    if (e instanceof CliError || e instanceof UsageError) throw e;
    throw new CliError(2, e instanceof Error ? e.message : String(e));
  } finally {
    progress.end();
    if (b) await closeNode(b);
    if (a) await closeNode(a);
  }
}
