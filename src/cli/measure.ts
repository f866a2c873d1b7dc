/** `blocktab measure`: qemu-img measure over src/img/measure.ts, human and JSON output. */
import { BlockError } from '../block/errors.js';
import { closeNode } from '../block/open.js';
import type { BlockNode } from '../block/node.js';
import { measureImage, planMeasure, type MeasureResult } from '../img/measure.js';
import { toJsonPretty } from '../img/qobject.js';
import { outputFormat, parseCommand, parseImageSizeArg, str, UsageError } from './args.js';
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
  const fmt = outputFormat(p);
  const sizeText = str(p, 'size');
  const size = sizeText === undefined ? undefined : measureSize(sizeText);
  if (p.positionals.length > 1) throw new UsageError(`Unexpected argument: ${p.positionals[1]}`);
  const filename = p.positionals[0];
  if (filename !== undefined && size !== undefined) throw new UsageError('--size N cannot be used together with a filename.');
  if (filename === undefined && size === undefined) throw new UsageError('Either --size N or one filename must be specified.');
  if (str(p, 'snapshot') !== undefined) throw new BlockError('ENOTSUP', 'measure: -l (snapshots) is not supported yet');
  const plan = await planMeasure(str(p, 'output-format') ?? 'raw', (p.values.options as string[] | undefined) ?? []);

  let bs: BlockNode | undefined;
  let result: MeasureResult;
  try {
    if (filename !== undefined) bs = await openForCli(filename, { format: str(p, 'format') });
    result = await measureImage(plan, bs, size);
  } finally {
    if (bs) await closeNode(bs);
  }
  if (fmt === 'json') {
    // QAPI BlockMeasureInfo: required, fully-allocated, bitmaps (printed in QDict order).
    out.stdout(toJsonPretty({ required: result.required, 'fully-allocated': result.fullyAllocated, bitmaps: result.bitmaps }) + '\n');
  } else {
    out.stdout(`required size: ${result.required}\nfully allocated size: ${result.fullyAllocated}\n`);
    if (result.bitmaps !== undefined) out.stdout(`bitmaps size: ${result.bitmaps}\n`);
  }
  return 0;
}

/** measure --size: qemu-img's size text; blocktab's arithmetic is exact below 2^53. */
function measureSize(text: string): number {
  const v = parseImageSizeArg(text);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new BlockError('EFBIG', `Image size ${v} is too large (blocktab handles sizes below 2^53 bytes)`);
  return Number(v);
}
