/**
 * `qemu-img measure -O qcow2` (QEMU 7.2's qcow2_measure): how many bytes a
 * new qcow2 image needs, `required` for the data at hand and
 * `fully-allocated` when every cluster is written.
 *
 * The fully allocated size is: one header cluster, the L2 tables for every
 * cluster (rounded up to whole tables), the L1 table (rounded up to a
 * cluster), the refcount table and blocks that count all of that including
 * themselves (a fixed point), and the data. `required` swaps the data term for
 * the clusters the input really holds (or the whole disk with a backing file
 * or full/falloc preallocation); it still counts all the metadata, as QEMU's
 * estimate does.
 *
 * Computed with BigInt: QEMU's sizes reach 2^63 and the result must be exact.
 */
import { BlockError } from '../../block/errors.js';
import type { MeasureResult } from '../../block/driver.js';
import type { BlockNode } from '../../block/node.js';
import { optBool, optNumber, type OptionValues } from '../../block/options.js';
import { BDRV_BLOCK_ALLOCATED, BDRV_BLOCK_DATA, BDRV_BLOCK_ZERO, blockStatusAbove } from '../../block/status.js';
import type { Qcow2State } from './state.js';
import { qcow2LuksAreaBytes } from './create-options.js';

export interface Qcow2MeasureOptions {
  /** Virtual size in bytes (`size`); ignored when an input image is given. */
  size?: number;
  /** Default 64 KiB. */
  clusterSize?: number;
  /** Default 16. */
  refcountBits?: number;
  extendedL2?: boolean;
  preallocation?: 'off' | 'metadata' | 'falloc' | 'full';
  /** '0.10'/'v2' or '1.1'/'v3' (default). */
  compat?: string;
  /** The new image gets a backing file: every cluster of the input counts as required. */
  backingFile?: boolean;
  /** Bytes of a LUKS header area (encrypt.format=luks); whole clusters of it count in both sizes. */
  luksAreaBytes?: number;
}

/** What measure needs to know about an input image. */
export interface MeasureInput {
  /** Virtual size of the input. */
  size: number;
  /** Ranges that hold data (allocated, not known zero) across the input's chain; ascending, not overlapping. */
  dataRanges: Iterable<{ offset: number; bytes: number }>;
  /** Bytes persistent bitmaps would take (0 when the input has none); undefined when the input cannot carry them. */
  bitmapsSize?: number;
}

const MIN_CLUSTER_BITS = 9;
const MAX_CLUSTER_BITS = 21;
/** QEMU's QCOW_MAX_L1_SIZE: 32 MiB of L1 entries. */
const QCOW_MAX_L1_SIZE = 0x2000000n;
const EXTL2_SUBCLUSTERS = 32;

const roundUp = (x: bigint, a: bigint): bigint => ((x + a - 1n) / a) * a;
const divRoundUp = (x: bigint, a: bigint): bigint => (x + a - 1n) / a;

function invalid(message: string): BlockError {
  return new BlockError('EINVAL', message);
}

/** QEMU's qcow2_refcount_metadata_size: refcount blocks and table clusters for `clusters`, found as a fixed point. */
export function refcountMetadataSize(clusters: bigint, clusterSize: bigint, refcountOrder: number): bigint {
  const blocksPerTableCluster = clusterSize / 8n;
  const refcountsPerBlock = (clusterSize * 8n) / (1n << BigInt(refcountOrder));
  let table = 0n;
  let blocks = 0n;
  let n = 0n;
  let last: bigint;
  do {
    last = n;
    blocks = divRoundUp(clusters + table + blocks, refcountsPerBlock);
    table = divRoundUp(blocks, blocksPerTableCluster);
    n = clusters + blocks + table;
  } while (n !== last);
  return (blocks + table) * clusterSize;
}

/** QEMU's qcow2_calc_prealloc_size: every byte of a fully allocated image. */
export function qcow2PreallocSize(totalSize: bigint, clusterSize: bigint, refcountOrder: number, extendedL2: boolean): bigint {
  const l2eSize = extendedL2 ? 16n : 8n;
  const aligned = roundUp(totalSize, clusterSize);
  let meta = clusterSize; // header
  let nl2e = aligned / clusterSize;
  nl2e = roundUp(nl2e, clusterSize / l2eSize);
  meta += nl2e * l2eSize;
  let nl1e = (nl2e * l2eSize) / clusterSize;
  nl1e = roundUp(nl1e, clusterSize / 8n);
  meta += nl1e * 8n;
  meta += refcountMetadataSize((meta + aligned) / clusterSize, clusterSize, refcountOrder);
  return meta + aligned;
}

function toNumber(v: bigint): number {
  return Number(v);
}

/** Validates the creation options as qcow2's create does, with QEMU's messages. */
function qcow2Params(o: Qcow2MeasureOptions): { clusterSize: bigint; refcountOrder: number; extendedL2: boolean; version: number } {
  const extendedL2 = o.extendedL2 ?? false;
  const cs = o.clusterSize ?? 65536;
  const bits = Math.log2(cs);
  if (!Number.isInteger(bits) || bits < MIN_CLUSTER_BITS || bits > MAX_CLUSTER_BITS) {
    throw invalid(`Cluster size must be a power of two between ${1 << MIN_CLUSTER_BITS} and ${1 << (MAX_CLUSTER_BITS - 10)}k`);
  }
  if (extendedL2 && cs < (1 << MIN_CLUSTER_BITS) * EXTL2_SUBCLUSTERS) {
    throw invalid(`Extended L2 entries are only supported with cluster sizes of at least ${(1 << MIN_CLUSTER_BITS) * EXTL2_SUBCLUSTERS} bytes`);
  }
  const compat = o.compat ?? '1.1';
  let version: number;
  if (compat === '0.10' || compat === 'v2') version = 2;
  else if (compat === '1.1' || compat === 'v3') version = 3;
  else throw invalid(`Invalid compatibility level: '${compat}'`);
  const rb = o.refcountBits ?? 16;
  const order = Math.log2(rb);
  if (!Number.isInteger(order) || order < 0 || rb > 64) {
    throw invalid('Refcount width must be a power of two and may not exceed 64 bits');
  }
  if (version < 3 && rb !== 16) {
    throw invalid('Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)');
  }
  return { clusterSize: BigInt(cs), refcountOrder: order, extendedL2, version };
}

/** `qemu-img measure -O qcow2`: from a size (`opts.size`) or from an input image. */
export function measureQcow2(opts: Qcow2MeasureOptions, input?: MeasureInput): MeasureResult {
  const { clusterSize, refcountOrder, extendedL2, version } = qcow2Params(opts);
  let virtualSize = roundUp(BigInt(opts.size ?? 0), clusterSize);
  const l2eSize = extendedL2 ? 16n : 8n;
  const l2Tables = divRoundUp(virtualSize / clusterSize, clusterSize / l2eSize);
  if (l2Tables * 8n > QCOW_MAX_L1_SIZE) throw invalid('The image size is too large (try using a larger cluster size)');

  let required = 0n;
  if (input) {
    virtualSize = roundUp(BigInt(input.size), clusterSize);
    if (opts.backingFile) {
      // The new image's backing file may share nothing with the input: count every cluster.
      required = virtualSize;
    } else {
      // Each cluster that holds any data counts once.
      let countedEnd = -1n;
      for (const r of input.dataRanges) {
        if (r.bytes <= 0) continue;
        let start = (BigInt(r.offset) / clusterSize) * clusterSize;
        const end = roundUp(BigInt(r.offset + r.bytes), clusterSize);
        if (start < countedEnd) start = countedEnd;
        if (end > start) required += end - start;
        if (end > countedEnd) countedEnd = end;
      }
    }
  }
  if (opts.preallocation === 'full' || opts.preallocation === 'falloc') required = virtualSize;

  const luks = roundUp(BigInt(opts.luksAreaBytes ?? 0), clusterSize);
  const fully = qcow2PreallocSize(virtualSize, clusterSize, refcountOrder, extendedL2) + luks;
  const res: MeasureResult = { required: toNumber(fully - virtualSize + required), fullyAllocated: toNumber(fully) };
  if (version >= 3 && input && input.bitmapsSize !== undefined) res.bitmaps = input.bitmapsSize;
  return res;
}

/**
 * The data ranges of an opened input image, as qcow2_measure sees them
 * (block status of the whole chain: allocated data that is not known zero).
 */
export async function collectDataRanges(bs: BlockNode): Promise<Array<{ offset: number; bytes: number }>> {
  const out: Array<{ offset: number; bytes: number }> = [];
  const size = bs.totalBytes;
  for (let offset = 0; offset < size; ) {
    const st = await blockStatusAbove(bs, null, true, offset, size - offset);
    if (st.pnum <= 0) break;
    const isData = !(st.status & BDRV_BLOCK_ZERO) && (st.status & (BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED)) === (BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED);
    if (isData) {
      const last = out[out.length - 1];
      if (last && last.offset + last.bytes === offset) last.bytes += st.pnum;
      else out.push({ offset, bytes: st.pnum });
    }
    offset += st.pnum;
  }
  return out;
}

/** Bytes persistent bitmaps of a qcow2 input take in a new qcow2 image of `clusterSize` (QEMU's qcow2_measure). */
function bitmapsSize(bs: BlockNode, clusterSize: number): number | undefined {
  // Only a qcow2 input carries persistent bitmaps (bdrv_supports_persistent_dirty_bitmap).
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

/** The driver's `measure` hook: creation option values to typed options, the input's data ranges and bitmaps. */
export async function qcow2Measure(values: OptionValues, input: BlockNode | undefined, size: number | undefined): Promise<MeasureResult> {
  const cs = optNumber(values, 'cluster_size') ?? 65536;
  const prealloc = values.get('preallocation');
  if (prealloc !== undefined && !['off', 'metadata', 'falloc', 'full'].includes(prealloc)) {
    throw new BlockError('EINVAL', `Parameter 'preallocation' does not accept value '${prealloc}'`);
  }
  const opts: Qcow2MeasureOptions = {
    size,
    clusterSize: cs,
    refcountBits: optNumber(values, 'refcount_bits'),
    extendedL2: optBool(values, 'extended_l2'),
    preallocation: prealloc as Qcow2MeasureOptions['preallocation'],
    compat: values.get('compat'),
    backingFile: values.has('backing_file'),
    luksAreaBytes: qcow2LuksAreaBytes(values),
  };
  if (!input) return measureQcow2(opts);
  return measureQcow2(opts, { size: input.totalBytes, dataRanges: await collectDataRanges(input), bitmapsSize: bitmapsSize(input, cs) });
}
