/**
 * `blocktab convert`: qemu-img convert's options, checks (in qemu-img's
 * order, with its messages) and progress output. The copy itself and the
 * target creation live in img/convert.ts.
 */
import { convert, convertTotalBytes, createConvertTarget, MAX_BUFFER, MAX_PARALLEL, type ConvertOptions } from '../img/convert.js';
import { createOptionsHelp, isHelpOption, qemuStrtosz } from '../img/options.js';
import { closeNode } from '../block/open.js';
import { checkBitmapTarget, checkConvertBitmaps, copyBitmaps } from '../img/bitmap.js';
import { BlockError } from '../block/errors.js';
import type { BlockNode } from '../block/node.js';
import { flag, parseCommand, parseSnapshotParam, str, UsageError } from './args.js';
import { openForCli, storage } from './open.js';
import { Progress } from './progress.js';
import type { Output } from './main.js';
import { progName } from './progname.js';
import { snapshotLoadTmp } from '../img/snapshot.js';
import { optimizeAsUsual, optimizeLater } from './tier-up.js';
import { adviseBufferMemory } from './buffer-memory.js';

const CACHE_MODES = ['none', 'off', 'writeback', 'writethrough', 'directsync', 'unsafe'];

/** cvtnum("buffer size for sparse output") and img_convert's -S range check. */
function parseSparse(text: string): number {
  const v = qemuStrtosz(text);
  if (v === undefined) {
    throw new UsageError(
      'Invalid buffer size for sparse output specified. You may use k, M, G, T, P or E suffixes for\nkilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.',
    );
  }
  if (v % 512n !== 0n || v > BigInt(MAX_BUFFER)) {
    throw new UsageError(
      `Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to ${MAX_BUFFER}. Select 0 to disable sparse detection (fully allocates output).`,
    );
  }
  return Number(v);
}

/**
 * qemu-img convert's default cache mode is 'unsafe': flushes stop at the host's
 * page cache and the data reaches the disk when the kernel writes it back.
 * fdatasync on close would cost seconds per GiB that qemu-img never pays.
 */
function noFlush(target: BlockNode, cache: string): void {
  if (cache !== 'unsafe') return;
  const visit = (n: BlockNode | undefined): void => {
    if (!n) return;
    n.noFlush = true;
    visit(n.file?.node);
    visit(n.dataFile?.node);
  };
  visit(target);
}

/**
 * Below this much guest data the copy is too short for tier-up.ts's raised
 * budget to pay: raising it loads node:v8, which loads Node's streams stack
 * (about 12 M instructions, 5% of a small convert), while the TurboFan work
 * it saves grows with the copy.
 */
const TIER_UP_MIN_BYTES = 256 * 1024 * 1024;

/** From this much guest data a convert advises huge pages for its buffers (buffer-memory.ts). */
const HUGE_PAGES_MIN_BYTES = 256 * 1024 * 1024;

export async function runConvert(args: string[], out: Output): Promise<number> {
  const p = parseCommand('convert', args, {
    format: { type: 'string', short: 'f' },
    'output-format': { type: 'string', short: 'O' },
    options: { type: 'string', short: 'o', multiple: true },
    'backing-file': { type: 'string', short: 'B' },
    'backing-format': { type: 'string', short: 'F' },
    compress: { type: 'boolean', short: 'c' },
    sparse: { type: 'string', short: 'S' },
    'no-create': { type: 'boolean', short: 'n' },
    progress: { type: 'boolean', short: 'p' },
    quiet: { type: 'boolean', short: 'q' },
    cache: { type: 'string', short: 't' },
    'source-cache': { type: 'string', short: 'T' },
    'force-share': { type: 'boolean', short: 'U' },
    parallel: { type: 'string', short: 'm' },
    'out-of-order': { type: 'boolean', short: 'W' },
    'copy-range': { type: 'boolean', short: 'C' },
    'target-is-zero': { type: 'boolean' },
    bitmaps: { type: 'boolean' },
    'skip-broken-bitmaps': { type: 'boolean' },
    snapshot: { type: 'string', short: 'l' },
    'snapshot-name': { type: 'string', short: 's' },
    help: { type: 'boolean', short: 'h' },
  });
  const sparseText = str(p, 'sparse');
  const minSparse = sparseText === undefined ? 4096 : parseSparse(sparseText);
  const parallelText = str(p, 'parallel');
  let parallel: number | undefined;
  if (parallelText !== undefined) {
    // -m: how many requests are in flight (qemu-img's coroutines).
    parallel = /^\s*(0x[0-9a-f]+|\d+)$/i.test(parallelText) ? Number(parallelText) : NaN;
    if (!(parallel >= 1 && parallel <= MAX_PARALLEL)) {
      throw new UsageError(`Invalid number of coroutines. Allowed number of coroutines is between 1 and ${MAX_PARALLEL}`);
    }
  }
  const outOfOrder = flag(p, 'out-of-order');
  const compressed = flag(p, 'compress');
  const noCreate = flag(p, 'no-create');
  const copyRange = flag(p, 'copy-range');
  const targetIsZero = flag(p, 'target-is-zero');
  const opts = (p.values.options as string[] | undefined) ?? [];
  if (copyRange && compressed) throw new UsageError('Cannot enable copy offloading when -c is used');
  if (copyRange && sparseText !== undefined) throw new UsageError('Cannot enable copy offloading when -S is used');
  if (noCreate && opts.length) throw new UsageError('-o has no effect when skipping image creation');
  if (targetIsZero && !noCreate) throw new UsageError('--target-is-zero requires use of -n flag');
  if (targetIsZero && str(p, 'backing-file') !== undefined) {
    throw new UsageError('Cannot use --target-is-zero when the destination image has a backing file');
  }

  const outFmt = str(p, 'output-format') ?? 'raw';
  const dst = p.positionals.length >= 2 ? p.positionals[p.positionals.length - 1] : undefined;
  if (opts.some(isHelpOption)) {
    out.stdout(await createOptionsHelp(outFmt, dst !== undefined));
    return 0;
  }
  if (dst === undefined) throw new UsageError('Must specify image file name');
  const srcCache = str(p, 'source-cache') ?? 'writeback';
  if (!CACHE_MODES.includes(srcCache)) throw new BlockError('EINVAL', `Invalid source cache option: ${srcCache}`);
  const cache = str(p, 'cache') ?? 'unsafe';
  const backingFile = str(p, 'backing-file');
  const backingFormat = str(p, 'backing-format');
  const showProgress = flag(p, 'progress') && !flag(p, 'quiet');
  const srcNames = p.positionals.slice(0, -1);
  const snapshot = parseSnapshotParam(str(p, 'snapshot') ?? str(p, 'snapshot-name'));
  if (srcNames.length > 1 && snapshot !== undefined) throw new UsageError('No support for concatenating multiple snapshot');

  const sources: BlockNode[] = [];
  let target: BlockNode | undefined;
  try {
    for (const name of srcNames) sources.push(await openForCli(name, { format: str(p, 'format') }));
    if (snapshot !== undefined) {
      try {
        await snapshotLoadTmp(sources[0]!, snapshot);
      } catch (e) {
        if (!(e instanceof BlockError)) throw e;
        throw new BlockError(e.code, `Failed to load snapshot: ${e.message}`);
      }
    }
    const bitmaps = flag(p, 'bitmaps');
    if (flag(p, 'skip-broken-bitmaps') && !bitmaps) throw new UsageError('--skip-broken-bitmaps requires --bitmaps');
    if (bitmaps) checkConvertBitmaps(sources, flag(p, 'skip-broken-bitmaps'));
    const total = convertTotalBytes(sources);
    // Huge pages pay for a copy that fills its buffers, not for a small one (a fresh 2 MiB page
    // costs more than the few 4 KiB pages it touches); advised before the target is made,
    // so before the copy's buffers are touched.
    if (total >= HUGE_PAGES_MIN_BYTES) adviseBufferMemory();
    const progress = new Progress(showProgress, out.stdout);
    progress.set(0);
    let copyOpts: ConvertOptions;
    if (noCreate) {
      if (!CACHE_MODES.includes(cache)) throw new BlockError('EINVAL', `Invalid cache option: ${cache}`);
      target = await openForCli(dst, { format: outFmt, readOnly: false });
      noFlush(target, cache);
      copyOpts = { compressed, targetHasBacking: backingFile !== undefined, targetHasZeroInit: targetIsZero };
    } else {
      const made = await createConvertTarget(storage, {
        filename: dst,
        format: outFmt,
        options: opts,
        backingFile,
        backingFormat,
        compressed,
        sourceCount: sources.length,
        size: total,
      });
      target = made.target;
      noFlush(target, cache);
      // qemu-img parses the cache mode only once the target exists.
      if (!CACHE_MODES.includes(cache)) throw new BlockError('EINVAL', `Invalid cache option: ${cache}`);
      copyOpts = made.options;
    }
    if (bitmaps) checkBitmapTarget(target);
    if (total >= TIER_UP_MIN_BYTES) optimizeLater();
    await convert(sources, target, { ...copyOpts, minSparse, parallel, outOfOrder }, (done, t) => progress.set((100 * done) / t));
    // After the data, as qemu-img: the copy's own writes must not mark them.
    if (bitmaps) copyBitmaps(sources[0]!, target, (m) => out.stderr(`${progName()}: warning: ${m}\n`));
    progress.set(100);
    progress.end();
  } finally {
    if (target) {
      await closeNode(target);
    }
    for (const s of sources) await closeNode(s);
    optimizeAsUsual();
  }
  return 0;
}
