/** `blocktab measure`: qemu-img measure over src/img/measure.ts, human and JSON output. */
import { BlockError } from '../block/errors.js';
import { closeNode } from '../block/open.js';
import type { BlockNode } from '../block/node.js';
import { collectDataRanges, measureQcow2, measureRaw, type MeasureResult } from '../img/measure.js';
import { createOptionList, optBool, optNumber, parseImageSize, parseOptions, type OptionValues } from '../img/options.js';
import { toJsonPretty } from '../img/qobject.js';
import type { Qcow2State } from '../formats/qcow2/state.js';
import { outputFormat, parseCommand, str, UsageError } from './args.js';
import { openForCli } from './open.js';
import type { Output } from './main.js';

/** Bytes persistent bitmaps of a qcow2 input take in a new qcow2 image of `clusterSize` (QEMU's qcow2_measure). */
function bitmapsSize(bs: BlockNode, clusterSize: number): number | undefined {
  if (bs.driver.name !== 'qcow2') return undefined;
  const s = bs.state<Qcow2State>();
  if (s.header.version < 3) return undefined;
  const roundUp = (x: number, a: number) => Math.ceil(x / a) * a;
  let size = 0;
  let dir = 0;
  for (const b of s.bitmaps) {
    const bytes = Math.ceil(Math.ceil(bs.totalBytes / 2 ** b.granularityBits) / 8);
    const clusters = Math.ceil(bytes / clusterSize);
    size += clusters * clusterSize + roundUp(clusters * 8, clusterSize);
    dir += roundUp(24 + new TextEncoder().encode(b.name).length, 8);
  }
  return size + roundUp(dir, clusterSize);
}

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
  const size = sizeText === undefined ? undefined : parseImageSize(sizeText);
  if (p.positionals.length > 1) throw new UsageError(`Unexpected argument: ${p.positionals[1]}`);
  const filename = p.positionals[0];
  if (filename !== undefined && size !== undefined) throw new UsageError('--size N cannot be used together with a filename.');
  if (filename === undefined && size === undefined) throw new UsageError('Either --size N or one filename must be specified.');
  if (str(p, 'snapshot') !== undefined) throw new BlockError('ENOTSUP', 'measure: -l (snapshots) is not supported yet');
  const outFmt = str(p, 'output-format') ?? 'raw';
  if (outFmt !== 'raw' && outFmt !== 'qcow2') {
    if (['vmdk', 'vpc', 'vhdx', 'vdi', 'qed', 'qcow', 'luks', 'parallels', 'cloop', 'dmg', 'bochs'].includes(outFmt)) {
      throw new BlockError('ENOTSUP', `Block driver '${outFmt}' does not support size measurement`);
    }
    throw new BlockError('EINVAL', `Unknown file format '${outFmt}'`);
  }
  const list = createOptionList(outFmt);
  let values: OptionValues;
  try {
    values = parseOptions(list, (p.values.options as string[] | undefined) ?? []);
  } catch (e) {
    throw new BlockError('EINVAL', `${(e as Error).message}\nInvalid options for file format '${outFmt}'`, { cause: e });
  }

  let bs: BlockNode | undefined;
  let result: MeasureResult;
  try {
    if (filename !== undefined) bs = await openForCli(filename, { format: str(p, 'format') });
    const input = bs ? { size: bs.totalBytes, dataRanges: await collectDataRanges(bs) } : undefined;
    if (outFmt === 'raw') {
      result = measureRaw({ size }, input);
    } else {
      const cs = optNumber(values, 'cluster_size') ?? 65536;
      const prealloc = values.get('preallocation');
      if (prealloc !== undefined && !['off', 'metadata', 'falloc', 'full'].includes(prealloc)) {
        throw new BlockError('EINVAL', `Parameter 'preallocation' does not accept value '${prealloc}'`);
      }
      result = measureQcow2(
        {
          size,
          clusterSize: cs,
          refcountBits: optNumber(values, 'refcount_bits'),
          extendedL2: optBool(values, 'extended_l2'),
          preallocation: prealloc as 'off' | 'metadata' | 'falloc' | 'full' | undefined,
          compat: values.get('compat'),
          backingFile: values.has('backing_file'),
        },
        input && bs ? { ...input, bitmapsSize: bitmapsSize(bs, cs) } : undefined,
      );
    }
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
