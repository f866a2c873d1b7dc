/**
 * The `throttle` filter driver (QEMU's block/throttle.c): a node whose
 * requests join a named throttle group (object-add's `throttle-group`)
 * before passing to its `file` child. Several filter nodes — and backends
 * with block_set_io_throttle — in one group share its limits, served in turn.
 *
 * The group registry is the engine's; blockdev-add hands it to `open` as the
 * `throttleGroups` option.
 */
import { BlockError } from '../block/errors.js';
import { registerDriver, type BlockDriver } from '../block/driver.js';
import type { BlockNode } from '../block/node.js';
import { bdrvPdiscard, bdrvPread, bdrvPwrite, bdrvPwriteZeroes } from '../block/io.js';
import { filterFile, filterPassThrough } from './pass-through.js';
import type { ThrottleGroupMember, ThrottleGroups } from '../block/throttle-group.js';

interface ThrottleNodeState {
  member: ThrottleGroupMember;
  groups: ThrottleGroups;
}

const st = (bs: BlockNode) => bs.state<ThrottleNodeState>();
const file = filterFile;

async function gate(bs: BlockNode, bytes: number, isWrite: boolean): Promise<void> {
  const wait = st(bs).member.intercept(bytes, isWrite);
  if (wait) await wait;
}

export const throttleDriver: BlockDriver = {
  name: 'throttle',
  kind: 'filter',
  supportsCompressedWrites: true,
  blockdevOptions: { 'throttle-group': 'str', file: 'BlockdevRef' },
  async open(bs, options) {
    const groups = options.throttleGroups as ThrottleGroups | undefined;
    const name = options['throttle-group'];
    if (typeof name !== 'string') throw new BlockError('EINVAL', "Parameter 'throttle-group' is missing");
    const group = groups?.isObject(name) ? groups.get(name) : undefined;
    if (!group || !groups) throw new BlockError('EINVAL', `Throttle group '${name}' does not exist`);
    bs.opaque = { member: group.join(bs.nodeName), groups } satisfies ThrottleNodeState;
    bs.totalBytes = file(bs).totalBytes;
    bs.limits = { ...file(bs).limits };
  },
  async close(bs) {
    const s = bs.opaque as ThrottleNodeState | undefined;
    if (!s) return;
    s.member.group.leave(s.member);
    s.groups.release(s.member.group);
  },
  async preadv(bs, offset, bytes, buf) {
    await gate(bs, bytes, false);
    await bdrvPread(file(bs), offset, bytes, buf);
  },
  async pwritev(bs, offset, bytes, buf, flags) {
    await gate(bs, bytes, true);
    await bdrvPwrite(file(bs), offset, bytes, buf, flags);
  },
  async pwriteZeroes(bs, offset, bytes, flags) {
    await gate(bs, bytes, true);
    await bdrvPwriteZeroes(file(bs), offset, bytes, flags);
  },
  async pdiscard(bs, offset, bytes) {
    await gate(bs, bytes, true);
    await bdrvPdiscard(file(bs), offset, bytes);
  },
  ...filterPassThrough,
};

registerDriver(throttleDriver);
