/** `blocktab rebase`: qemu-img rebase's options (-b, -F, -u, -p, -q). */
import { rebaseImage } from '../img/rebase.js';
import { flag, parseCommand, str, UsageError } from './args.js';
import { storage } from './open.js';
import { Progress } from './progress.js';
import type { Output } from './main.js';

export async function runRebase(args: string[], out: Output): Promise<number> {
  const p = parseCommand('rebase', args, {
    format: { type: 'string', short: 'f' },
    backing: { type: 'string', short: 'b' },
    'backing-format': { type: 'string', short: 'F' },
    unsafe: { type: 'boolean', short: 'u' },
    progress: { type: 'boolean', short: 'p' },
    quiet: { type: 'boolean', short: 'q' },
    cache: { type: 'string', short: 't' },
    'source-cache': { type: 'string', short: 'T' },
    'force-share': { type: 'boolean', short: 'U' },
    'image-opts': { type: 'boolean' },
    object: { type: 'string', multiple: true },
    help: { type: 'boolean', short: 'h' },
  });
  if (p.positionals.length !== 1) throw new UsageError(p.positionals.length ? `Unexpected argument: ${p.positionals[1]}` : 'Expecting one image file name');
  const backing = str(p, 'backing');
  if (backing === undefined) throw new UsageError('Must specify backing file (-b) or use unsafe mode (-u)');
  const unsafe = flag(p, 'unsafe');
  const progress = new Progress(flag(p, 'progress') && !flag(p, 'quiet') && !unsafe, out.stdout);
  progress.set(0);
  await rebaseImage(storage, {
    filename: p.positionals[0]!,
    format: str(p, 'format'),
    backing,
    backingFormat: str(p, 'backing-format'),
    unsafe,
    onProgress: (done, total) => progress.set(total ? (done / total) * 100 : 100),
  });
  progress.set(100);
  progress.end();
  return 0;
}
