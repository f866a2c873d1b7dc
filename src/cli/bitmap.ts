/**
 * `blocktab bitmap`: qemu-img bitmap's syntax — actions (--add, --remove,
 * --clear, --enable, --disable, --merge SRC) run in the order given on one
 * persistent bitmap; -g with --add, -b/-F name another image holding the
 * --merge source.
 */
import { closeNode } from '../block/open.js';
import type { BlockNode } from '../block/node.js';
import { imgBitmap, type BitmapAction } from '../img/bitmap.js';
import { parseCommand, parseSize, str, UsageError } from './args.js';
import { openForCli } from './open.js';
import type { Output } from './main.js';

export async function runBitmap(args: string[], _out: Output): Promise<number> {
  const p = parseCommand('bitmap', args, {
    add: { type: 'boolean', multiple: true },
    remove: { type: 'boolean', multiple: true },
    clear: { type: 'boolean', multiple: true },
    enable: { type: 'boolean', multiple: true },
    disable: { type: 'boolean', multiple: true },
    merge: { type: 'string', multiple: true },
    granularity: { type: 'string', short: 'g' },
    'source-file': { type: 'string', short: 'b' },
    'source-format': { type: 'string', short: 'F' },
    format: { type: 'string', short: 'f' },
    object: { type: 'string', multiple: true },
    'image-opts': { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  const granularityText = str(p, 'granularity');
  const granularity = granularityText === undefined ? undefined : parseSize('granularity', granularityText);
  const actions: BitmapAction[] = [];
  for (const t of p.tokens) {
    if (t.name === 'add') actions.push({ op: 'add', granularity });
    else if (t.name === 'remove' || t.name === 'clear' || t.name === 'enable' || t.name === 'disable') actions.push({ op: t.name });
    else if (t.name === 'merge') actions.push({ op: 'merge', source: t.value! });
  }
  const sourceFile = str(p, 'source-file');
  const sourceFormat = str(p, 'source-format');
  if (!actions.length) throw new UsageError('Need at least one of --add, --remove, --clear, --enable, --disable, or --merge');
  if (granularity !== undefined && !actions.some((a) => a.op === 'add')) throw new UsageError('granularity only supported with --add');
  if (sourceFile !== undefined && !actions.some((a) => a.op === 'merge')) throw new UsageError('Merge bitmap source file only supported with --merge');
  if (sourceFormat !== undefined && sourceFile === undefined) throw new UsageError('Merge bitmap source format only supported with --merge and -b');
  if (p.positionals.length !== 2) throw new UsageError('Expecting filename and bitmap name');
  const [filename, name] = p.positionals as [string, string];

  const bs = await openForCli(filename, { format: str(p, 'format'), readOnly: false, backing: false });
  let src: BlockNode | undefined;
  try {
    if (sourceFile !== undefined) {
      src = await openForCli(sourceFile, { format: sourceFormat, readOnly: true, backing: false });
      for (const a of actions) if (a.op === 'merge') a.sourceNode = src;
    }
    await imgBitmap(bs, name, actions);
    return 0;
  } finally {
    if (src) await closeNode(src);
    await closeNode(bs);
  }
}
