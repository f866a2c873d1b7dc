/** `blocktab convert`: qemu-img convert to raw (other output formats come with the write path). */
import { convert, convertTotalBytes, createRawTarget } from '../img/convert.js';
import { closeNode } from '../block/open.js';
import { BlockError } from '../block/errors.js';
import type { BlockNode } from '../block/node.js';
import { flag, parseCommand, parseSize, str, UsageError } from './args.js';
import { openForCli, storage } from './open.js';
import { Progress } from './progress.js';
import type { Output } from './main.js';

const SUPPORTED_OUTPUT = ['raw'];

export async function runConvert(args: string[], out: Output): Promise<number> {
  const p = parseCommand('convert', args, {
    format: { type: 'string', short: 'f' },
    'output-format': { type: 'string', short: 'O' },
    progress: { type: 'boolean', short: 'p' },
    sparse: { type: 'string', short: 'S' },
    'no-create': { type: 'boolean', short: 'n' },
    quiet: { type: 'boolean', short: 'q' },
    options: { type: 'string', short: 'o', multiple: true },
    cache: { type: 'string', short: 't' },
    'source-cache': { type: 'string', short: 'T' },
    'force-share': { type: 'boolean', short: 'U' },
    parallel: { type: 'string', short: 'm' },
    'out-of-order': { type: 'boolean', short: 'W' },
    compress: { type: 'boolean', short: 'c' },
    help: { type: 'boolean', short: 'h' },
  });
  if (p.positionals.length < 2) throw new UsageError('Must specify image file name');
  const outFmt = str(p, 'output-format') ?? 'raw';
  if (!SUPPORTED_OUTPUT.includes(outFmt)) {
    throw new BlockError('ENOTSUP', `convert: output format '${outFmt}' is not supported yet (supported: ${SUPPORTED_OUTPUT.join(', ')})`);
  }
  if (flag(p, 'compress')) throw new BlockError('ENOTSUP', `convert: compression (-c) is not supported for output format '${outFmt}'`);
  const opts = p.values.options as string[] | undefined;
  if (opts?.length) throw new BlockError('ENOTSUP', `convert: creation options (-o ${opts.join(',')}) are not supported for output format '${outFmt}'`);
  let minSparse = 4096;
  const sparseText = str(p, 'sparse');
  if (sparseText !== undefined) {
    minSparse = parseSize('buffer size for sparse output', sparseText);
    if (minSparse % 512 !== 0 || minSparse > 16 * 1024 * 1024 * 512) {
      throw new UsageError('Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 8589934592 bytes.');
    }
  }
  const showProgress = flag(p, 'progress') && !flag(p, 'quiet');
  const noCreate = flag(p, 'no-create');
  const dst = p.positionals[p.positionals.length - 1]!;
  const srcNames = p.positionals.slice(0, -1);

  const sources: BlockNode[] = [];
  let target: BlockNode | undefined;
  try {
    for (const name of srcNames) sources.push(await openForCli(name, { format: str(p, 'format') }));
    const total = convertTotalBytes(sources);
    if (noCreate) {
      target = await openForCli(dst, { format: outFmt, readOnly: false });
    } else {
      try {
        target = await createRawTarget(storage, dst, total);
      } catch (e) {
        throw new BlockError(e instanceof BlockError ? e.code : 'EIO', `${dst}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
      }
    }
    const progress = new Progress(showProgress, out.stdout);
    await convert(sources, target, { minSparse, targetHasZeroInit: !noCreate }, (done, t) => progress.set(t ? (100 * done) / t : 100));
    progress.set(100);
    progress.end();
  } finally {
    if (target) {
      // qemu-img convert's default cache mode is 'unsafe': flushes are ignored and
      // the data reaches the disk when the kernel writes it back. Closing with
      // fdatasync would cost seconds per GiB that qemu-img never pays.
      if ((str(p, 'cache') ?? 'unsafe') === 'unsafe') {
        for (let n: BlockNode | null = target; n; n = n.file?.node ?? null) n.readOnly = true;
      }
      await closeNode(target);
    }
    for (const s of sources) await closeNode(s);
  }
  return 0;
}
