/** `blocktab create`: qemu-img create's options, output line and messages. */
import { BlockError, isBlockError } from '../block/errors.js';
import { createImage, planCreate } from '../img/create.js';
import { createOptionsHelp, isHelpOption } from '../img/options.js';
import { flag, parseCommand, parseImageSizeArg, str, UsageError } from './args.js';
import { storage } from './open.js';
import type { Output } from './main.js';

export async function runCreate(args: string[], out: Output): Promise<number> {
  const p = parseCommand('create', args, {
    format: { type: 'string', short: 'f' },
    backing: { type: 'string', short: 'b' },
    'backing-format': { type: 'string', short: 'F' },
    options: { type: 'string', short: 'o', multiple: true },
    unsafe: { type: 'boolean', short: 'u' },
    quiet: { type: 'boolean', short: 'q' },
    object: { type: 'string', multiple: true },
    help: { type: 'boolean', short: 'h' },
  });
  const format = str(p, 'format') ?? 'raw';
  const opts = (p.values.options as string[] | undefined) ?? [];
  if (opts.some(isHelpOption)) {
    out.stdout(await createOptionsHelp(format, p.positionals.length > 0));
    return 0;
  }
  if (p.positionals.length < 1) throw new UsageError('Expecting image file name');
  if (p.positionals.length > 2) throw new UsageError(`Unexpected argument: ${p.positionals[2]}`);
  const filename = p.positionals[0]!;
  const size = p.positionals[1] === undefined ? undefined : parseImageSizeArg(p.positionals[1]);
  const plan = await planCreate(storage, {
    filename,
    format,
    options: opts,
    size,
    backingFile: str(p, 'backing'),
    backingFormat: str(p, 'backing-format'),
    unsafe: flag(p, 'unsafe'),
  });
  if (!flag(p, 'quiet')) out.stdout(plan.line + '\n');
  try {
    await createImage(storage, plan);
  } catch (e) {
    // qemu-img create (bdrv_img_create) words every EFBIG from a driver this way.
    if (!isBlockError(e) || e.code !== 'EFBIG') throw e;
    const hint = plan.list.some((o) => o.name === 'cluster_size') ? ' (try using a larger cluster size)' : '';
    throw new BlockError('EFBIG', `${filename}: The image size is too large for file format '${format}'${hint}`, { cause: e });
  }
  return 0;
}
