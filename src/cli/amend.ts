/** `blocktab amend`: qemu-img amend -o OPTIONS for qcow2. */
import { closeNode } from '../block/open.js';
import type { BlockNode } from '../block/node.js';
import { amendImage, parseAmendOptions } from '../img/amend.js';
import { isHelpOption, optionsHelp, QCOW2_AMEND_OPTS } from '../img/options.js';
import { parseCommand, str, UsageError } from './args.js';
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
  if (opts.some(isHelpOption)) {
    out.stdout(optionsHelp(QCOW2_AMEND_OPTS).replace('Supported options:', "Amend options for 'qcow2':"));
    return 0;
  }
  if (p.positionals.length !== 1) throw new UsageError(p.positionals.length ? `Unexpected argument: ${p.positionals[1]}` : 'Expecting one image file name');
  let bs: BlockNode | undefined;
  try {
    bs = await openForCli(p.positionals[0]!, { format: str(p, 'format'), readOnly: false });
    const o = parseAmendOptions(bs.driver.name, opts);
    await amendImage(bs, o);
  } finally {
    if (bs) await closeNode(bs);
  }
  return 0;
}
