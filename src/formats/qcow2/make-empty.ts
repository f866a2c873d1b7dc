/**
 * qcow2's bdrv_make_empty: a full discard of the whole disk under the
 * metadata lock, every cluster unmapped (so reads fall through to the backing
 * file), then the metadata flushed in order (refcounts, L2, L1).
 */
import type { BlockNode } from '../../block/node.js';
import type { Qcow2State } from './state.js';
import { withLock } from './metadata.js';
import { flushMetadata } from './l1.js';
import { prepareWrite, qcow2DiscardRange } from './write.js';

export async function qcow2MakeEmpty(bs: BlockNode): Promise<void> {
  const s = bs.state<Qcow2State>();
  await withLock(s, async () => {
    await prepareWrite(s);
    // As QEMU's qcow2_make_empty, the freed clusters count as a snapshot's (pass-discard-snapshot).
    if (bs.totalBytes > 0) await qcow2DiscardRange(bs, s, 0, bs.totalBytes, true, 'snapshot');
    await flushMetadata(s);
  });
}
