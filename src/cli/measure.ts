/** `blocktab measure`: qemu-img measure over src/img/measure.ts, human and JSON output. */
import { BlockError } from '../block/errors.js';
import { closeNode } from '../block/open.js';
import type { BlockNode } from '../block/node.js';
import { measureImage, planMeasure, type MeasureResult } from '../img/measure.js';
import { exactInteger, toJsonPretty } from '../img/qobject.js';
import { isValidOptionList, outputFormat, parseCommand, parseImageSizeArg, parseSnapshotParam, str, UsageError } from './args.js';
import { snapshotLoadTmp } from '../img/snapshot.js';
import { imageOptsGiven } from './objects.js';
import { openForCli } from './open.js';
import type { Output } from './main.js';

export async function runMeasure(args: string[], out: Output): Promise<number> {
  const p = parseCommand('measure', args, {
    format: { type: 'string', short: 'f' },
    'output-format': { type: 'string', short: 'O' },
    options: { type: 'string', short: 'o', multiple: true },
    output: { type: 'string' },
    size: { type: 'string' },
    snapshot: { type: 'string', short: 'l' },
    'force-share': { type: 'boolean', short: 'U' },
    object: { type: 'string', multiple: true },
    'image-opts': { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  // Checked in qemu-img's order: the option values, then the arguments, then the input.
  const options = (p.values.options as string[] | undefined) ?? [];
  const bad = options.find((o) => !isValidOptionList(o));
  if (bad !== undefined) throw new UsageError(`Invalid option list: ${bad}`);
  const snapshot = parseSnapshotParam(str(p, 'snapshot'));
  const fmt = outputFormat(p);
  const sizeText = str(p, 'size');
  const size = sizeText === undefined ? undefined : measureSize(sizeText);
  if (p.positionals.length > 1) throw new UsageError('At most one filename argument is allowed.');
  const filename = p.positionals[0];
  if (filename === undefined && (imageOptsGiven() || str(p, 'format') !== undefined || str(p, 'snapshot') !== undefined)) {
    throw new UsageError('--image-opts, -f, and -l require a filename argument.');
  }
  if (filename !== undefined && size !== undefined) throw new UsageError('--size N cannot be used together with a filename.');
  if (filename === undefined && size === undefined) throw new UsageError('Either --size N or one filename must be specified.');

  let bs: BlockNode | undefined;
  let result: MeasureResult;
  try {
    if (filename !== undefined) bs = await openForCli(filename, { format: str(p, 'format') });
    if (bs && snapshot !== undefined) await loadSnapshot(bs, snapshot);
    const plan = await planMeasure(str(p, 'output-format') ?? 'raw', options);
    result = await measureImage(plan, bs, size);
  } finally {
    if (bs) await closeNode(bs);
  }
  if (!result.exact && (!Number.isSafeInteger(result.required) || !Number.isSafeInteger(result.fullyAllocated))) {
    throw new BlockError('EFBIG', `The measured size is too large (blocktab handles sizes below 2^53 bytes)`);
  }
  if (fmt === 'json') {
    // QAPI BlockMeasureInfo: required, fully-allocated, bitmaps (printed in QDict order).
    out.stdout(toJsonPretty({ required: result.required, 'fully-allocated': result.fullyAllocated, bitmaps: result.bitmaps }) + '\n');
  } else {
    out.stdout(`required size: ${exactInteger(result.required)}\nfully allocated size: ${exactInteger(result.fullyAllocated)}\n`);
    if (result.bitmaps !== undefined) out.stdout(`bitmaps size: ${result.bitmaps}\n`);
  }
  return 0;
}

/** `-l`: the input as the snapshot holds it (bdrv_snapshot_load_tmp), with qemu-img's prefix. */
async function loadSnapshot(bs: BlockNode, idOrName: string): Promise<void> {
  try {
    await snapshotLoadTmp(bs, idOrName);
  } catch (e) {
    if (!(e instanceof BlockError)) throw e;
    throw new BlockError(e.code, `Failed to load snapshot: ${e.message}`, { cause: e });
  }
}

/**
 * measure --size: qemu-img's size text. Sizes past 2^53 are taken when a
 * double holds them exactly (the format refuses most for its table limits,
 * and a result past 2^53 is refused above rather than printed rounded, unless
 * the format says its figures are exact, as raw's are).
 */
function measureSize(text: string): number {
  const v = parseImageSizeArg(text);
  const n = Number(v);
  if (BigInt(n) !== v) throw new BlockError('EFBIG', `Image size ${v} is too large (blocktab handles sizes below 2^53 bytes)`);
  return n;
}
