/**
 * The `copy-on-read` filter driver (QEMU's block/copy-on-read.c): reads
 * through it copy the data they find in the backing chain of its `file`
 * child into that child (src/block/copy-on-read.ts); `bottom` names the
 * lowest layer whose data is copied. Writes, discards and resizes pass
 * through unchanged.
 *
 * Node lookup is the engine's: blockdev-add hands it to `open` as the
 * `lookupNode` option.
 */
import { BlockError } from '../block/errors.js';
import { registerDriver, type BlockDriver } from '../block/driver.js';
import type { BlockNode } from '../block/node.js';
import { bdrvPdiscard, bdrvPwrite, bdrvPwriteZeroes } from '../block/io.js';
import { filterFile, filterPassThrough } from './pass-through.js';
import { copyOnReadPread, isBelow } from '../block/copy-on-read.js';

interface CorState {
  bottom: BlockNode | null;
}

const file = filterFile;

export const copyOnReadDriver: BlockDriver = {
  name: 'copy-on-read',
  kind: 'filter',
  supportsCompressedWrites: true,
  blockdevOptions: { file: 'BlockdevRef', '*bottom': 'str' },
  async open(bs, options) {
    // The filter writes what it copies into its child: a read-only one cannot work (QEMU's permission error).
    if (bs.readOnly) throw new BlockError('EPERM', 'Block node is read-only');
    let bottom: BlockNode | null = null;
    const name = options.bottom;
    if (typeof name === 'string') {
      const lookup = options.lookupNode as ((n: string) => BlockNode | undefined) | undefined;
      bottom = lookup?.(name) ?? null;
      if (!bottom) throw new BlockError('ENOENT', `Bottom node '${name}' not found`);
      // QEMU hangs on a bottom outside the chain; refusing is the safe answer.
      if (!isBelow(file(bs), bottom)) throw new BlockError('EINVAL', `Bottom node '${name}' is not in the backing chain of '${file(bs).nodeName}'`);
    }
    bs.opaque = { bottom } satisfies CorState;
    bs.totalBytes = file(bs).totalBytes;
    bs.limits = { ...file(bs).limits };
  },
  async close() {},
  async preadv(bs, offset, bytes, buf) {
    await copyOnReadPread(file(bs), bs.state<CorState>().bottom, offset, bytes, buf);
  },
  async pwritev(bs, offset, bytes, buf, flags) {
    await bdrvPwrite(file(bs), offset, bytes, buf, flags);
  },
  async pwriteZeroes(bs, offset, bytes, flags) {
    await bdrvPwriteZeroes(file(bs), offset, bytes, flags);
  },
  async pdiscard(bs, offset, bytes) {
    await bdrvPdiscard(file(bs), offset, bytes);
  },
  ...filterPassThrough,
};

registerDriver(copyOnReadDriver);
