/** `blocktab commit`: qemu-img commit's options and its "Image committed." line. */
import { commitImage } from '../img/commit.js';
import { flag, parseCommand, str, UsageError } from './args.js';
import { openForCli, storage } from './open.js';
import { imageSpec } from './objects.js';
import { hasProtocol } from '../block/open.js';
import { Progress } from './progress.js';
import type { Output } from './main.js';

export async function runCommit(args: string[], out: Output): Promise<number> {
  const p = parseCommand('commit', args, {
    format: { type: 'string', short: 'f' },
    base: { type: 'string', short: 'b' },
    drop: { type: 'boolean', short: 'd' },
    progress: { type: 'boolean', short: 'p' },
    quiet: { type: 'boolean', short: 'q' },
    cache: { type: 'string', short: 't' },
    rate: { type: 'string', short: 'r' },
    'image-opts': { type: 'boolean' },
    object: { type: 'string', multiple: true },
    help: { type: 'boolean', short: 'h' },
  });
  if (p.positionals.length !== 1) throw new UsageError(p.positionals.length ? `Unexpected argument: ${p.positionals[1]}` : 'Expecting one image file name');
  const quiet = flag(p, 'quiet');
  const progress = new Progress(flag(p, 'progress') && !quiet, out.stdout);
  progress.set(0);
  const name = p.positionals[0]!;
  // --image-opts and json: names (keys, nested drivers) open through the options tree (iotest 198).
  const spec = imageSpec(name);
  // A protocol prefix (blkdebug:conf:file, iotest 098) opens as the CLI opens it, with the filter under the format.
  const plain = spec.tree.filename === name && Object.keys(spec.tree).length === 1 && !hasProtocol(name);
  const top = plain ? undefined : await openForCli(name, { readOnly: false, format: str(p, 'format') });
  await commitImage(storage, {
    top,
    filename: spec.filename,
    format: str(p, 'format'),
    base: str(p, 'base'),
    drop: flag(p, 'drop'),
    onProgress: (done, total) => progress.set(total ? (done / total) * 100 : 100),
  });
  progress.end();
  if (!quiet) out.stdout('Image committed.\n');
  return 0;
}
