/** `blocktab amend`: qemu-img amend -o OPTIONS, for formats whose driver amends (qcow2, luks). */
import { closeNode } from '../block/open.js';
import type { BlockNode } from '../block/node.js';
import { amendableDriver, amendImage, parseAmendOptions } from '../img/amend.js';
import { isHelpOption, loadFormat, optionsHelp } from '../img/options.js';
import { flag, parseCommand, str, UsageError } from './args.js';
import { Progress } from './progress.js';
import { openForCli } from './open.js';
import type { Output } from './main.js';

export async function runAmend(args: string[], out: Output): Promise<number> {
  const p = parseCommand('amend', args, {
    format: { type: 'string', short: 'f' },
    options: { type: 'string', short: 'o', multiple: true },
    progress: { type: 'boolean', short: 'p' },
    quiet: { type: 'boolean', short: 'q' },
    cache: { type: 'string', short: 't' },
    force: { type: 'boolean' },
    object: { type: 'string', multiple: true },
    'image-opts': { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  const opts = (p.values.options as string[] | undefined) ?? [];
  if (!opts.length) throw new UsageError('Must specify options (-o)');
  // qemu-img lists the amend options of -f's format, else of the image's (probed once it is open).
  const help = (format: string) => {
    out.stdout(optionsHelp(amendableDriver(format).amendOptions).replace('Supported options:', `Amend options for '${format}':`));
    return 0;
  };
  const format = str(p, 'format');
  if (opts.some(isHelpOption) && format !== undefined) {
    await loadFormat(format);
    return help(format);
  }
  if (p.positionals.length !== 1) throw new UsageError(p.positionals.length ? `Unexpected argument: ${p.positionals[1]}` : 'Expecting one image file name');
  let bs: BlockNode | undefined;
  try {
    bs = await openForCli(p.positionals[0]!, { format, readOnly: !!opts.some(isHelpOption) });
    if (opts.some(isHelpOption)) return help(bs.driver.name);
    const values = await parseAmendOptions(bs.driver.name, opts);
    // qemu-img amend -p: 0 first, the driver's steps, 100 when done.
    const progress = new Progress(flag(p, 'progress') && !flag(p, 'quiet'), (s) => out.stdout(s));
    progress.set(0);
    try {
      await amendImage(bs, values, !!p.values.force, (offset, total) => progress.set((100 * offset) / total));
    } finally {
      progress.set(100);
      progress.end();
    }
  } finally {
    if (bs) await closeNode(bs);
  }
  return 0;
}
