/**
 * QEMU's `null-co` and `null-aio` protocols: a device of `size` bytes
 * (default 1 GiB) that drops writes and returns reads untouched unless
 * `read-zeroes` is on, optionally after `latency-ns`. No storage behind it,
 * so it runs anywhere; it is for tests and benchmarks. Its block status says
 * "all zeros" only with read-zeroes (what the reads really return).
 */
import { registerDriver, type BlockDriver } from '../block/driver.js';
import type { BlockNode } from '../block/node.js';
import { optBool, optNumber, optSize, type OptionsTree } from '../block/options-tree.js';
import { BDRV_BLOCK_OFFSET_VALID, BDRV_BLOCK_ZERO } from '../block/status.js';
import { BlockError } from '../block/errors.js';

interface NullState {
  readZeroes: boolean;
  latencyNs: number;
}

const delay = (bs: BlockNode): Promise<void> | undefined => {
  const ns = bs.state<NullState>().latencyNs;
  return ns > 0 ? new Promise((r) => setTimeout(r, ns / 1e6)) : undefined;
};

function nullDriver(name: 'null-co' | 'null-aio'): BlockDriver {
  return {
    name,
    kind: 'protocol',
    protocolName: name,
    standalone: true,
    async open(bs, options) {
      const o = options as OptionsTree;
      const size = optSize(o, 'size') ?? 1 << 30;
      const latencyNs = optNumber(o, 'latency-ns') ?? 0;
      if (size < 0) throw new BlockError('EINVAL', `${name}: size must not be negative`);
      if (latencyNs < 0) throw new BlockError('EINVAL', 'latency-ns is invalid');
      bs.totalBytes = size;
      bs.opaque = { readZeroes: optBool(o, 'read-zeroes') ?? false, latencyNs } satisfies NullState;
    },
    async preadv(bs, _offset, _bytes, buf) {
      await delay(bs);
      if (bs.state<NullState>().readZeroes) buf.fill(0);
    },
    async pwritev(bs) {
      await delay(bs);
    },
    async pwriteZeroes(bs) {
      await delay(bs);
    },
    async flush(bs) {
      await delay(bs);
    },
    async blockStatus(bs, _wantZero, offset, bytes) {
      const zero = bs.state<NullState>().readZeroes ? BDRV_BLOCK_ZERO : 0;
      return { status: BDRV_BLOCK_OFFSET_VALID | zero, pnum: bytes, map: offset, file: bs };
    },
    getAllocatedFileSize: async () => 0,
  };
}

export const nullCoDriver = nullDriver('null-co');
export const nullAioDriver = nullDriver('null-aio');
registerDriver(nullCoDriver);
registerDriver(nullAioDriver);
