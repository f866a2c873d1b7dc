/** `blocktab resize`: qemu-img resize (absolute or +/- relative size, --shrink, --preallocation). */
import { BlockError } from '../block/errors.js';
import type { PreallocMode } from '../block/driver.js';
import { closeNode } from '../block/open.js';
import { bdrvGetLength, bdrvTruncate } from '../block/io.js';
import type { BlockNode } from '../block/node.js';
import { qemuStrtosz } from '../img/options.js';
import { flag, parseCommand, str, UsageError } from './args.js';
import { openForCli } from './open.js';
import { progName } from './progname.js';
import type { Output } from './main.js';

export async function runResize(args: string[], out: Output): Promise<number> {
  // As qemu-img: the size is taken off the end first, so "-1G" is not read as an option.
  if (args.length < 2) throw new UsageError('Expecting image file name and size');
  const sizeText = args[args.length - 1]!;
  const p = parseCommand('resize', args.slice(0, -1), {
    format: { type: 'string', short: 'f' },
    preallocation: { type: 'string' },
    shrink: { type: 'boolean' },
    quiet: { type: 'boolean', short: 'q' },
    object: { type: 'string', multiple: true },
    'image-opts': { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (p.positionals.length !== 1) throw new UsageError('Expecting image file name and size');
  const filename = p.positionals[0]!;
  const preallocText = str(p, 'preallocation') ?? 'off';
  if (!['off', 'metadata', 'falloc', 'full'].includes(preallocText)) throw new UsageError(`Invalid preallocation mode '${preallocText}'`);
  const prealloc = preallocText as PreallocMode;

  const sign = sizeText[0] === '+' ? 1 : sizeText[0] === '-' ? -1 : 0;
  const n = qemuStrtosz(sign ? sizeText.slice(1) : sizeText);
  if (n === undefined || n >= 1n << 64n) {
    throw new BlockError(
      'EINVAL',
      "Parameter 'size' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.",
    );
  }
  // Opened with its backing chain, as qemu-img resize: growing zeroes the new area where the backing file would show through.
  let bs: BlockNode | undefined;
  try {
    bs = await openForCli(filename, { format: str(p, 'format'), readOnly: false });
    const current = await bdrvGetLength(bs);
    const total = sign ? current + sign * Number(n) : Number(n);
    if (total <= 0) throw new BlockError('EINVAL', 'New image size must be positive');
    if (!Number.isSafeInteger(total)) throw new BlockError('EFBIG', `New image size ${total} is too large`);
    if (total < current && !flag(p, 'shrink')) {
      out.stderr(`${progName()}: Use the --shrink option to perform a shrink operation.\n`);
      out.stderr(
        `${progName()}: warning: Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there.\n`,
      );
      return 1;
    }
    if (total < current && prealloc !== undefined && prealloc !== 'off') throw new BlockError('ENOTSUP', 'Preallocation can only be used for growing images');
    await bdrvTruncate(bs, total, false, prealloc);
  } finally {
    if (bs) await closeNode(bs);
  }
  if (!flag(p, 'quiet')) out.stdout('Image resized.\n');
  return 0;
}
