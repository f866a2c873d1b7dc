/**
 * qcow2's bdrv_make_empty (after a commit). Where it can, as QEMU's
 * make_completely_empty, the image is rebuilt from nothing: with the dirty bit
 * set, the L1 table and the clusters after the header are zeroed, the header
 * points at a new one-cluster refcount table (cluster 1), refcount block
 * (cluster 2) and L1 table (cluster 3), those are counted, the dirty bit is
 * cleared and the file is cut after them. A failure on the way leaves the
 * dirty bit set (the next writable open repairs the refcounts) and the node
 * unusable, as QEMU drops the node's driver. Elsewhere (v2, snapshots,
 * bitmaps, LUKS, a data file, an L1 table too large for one refcount block)
 * every cluster is discarded instead.
 */
import type { BlockNode } from '../../block/node.js';
import type { Qcow2State } from './state.js';
import { bdrvDebugEvent } from '../../block/debug-event.js';
import { bdrvPwrite, bdrvPwriteZeroes, bdrvTruncate } from '../../block/io.js';
import { invalidateMetadata, setDirtyBit, syncFile, withLock, writeHeaderFields } from './metadata.js';
import { flushMetadata } from './l1.js';
import { prepareWrite, qcow2DiscardRange } from './write.js';
import { allocateClusters, dropRefcountCache, refblockEntries } from './refcount.js';
import { BlockError } from '../../block/errors.js';

/** QCOW_CRYPT_LUKS in the header's crypt_method. */
const CRYPT_LUKS = 2;

export async function qcow2MakeEmpty(bs: BlockNode): Promise<void> {
  const s = bs.state<Qcow2State>();
  await withLock(s, async () => {
    await prepareWrite(s);
    const l1Clusters = Math.ceil((s.l1Size * 8) / s.clusterSize);
    const whole =
      s.header.version >= 3 &&
      s.snapshots.length === 0 &&
      s.bitmaps.length === 0 &&
      3 + l1Clusters <= refblockEntries(s) &&
      s.header.cryptMethod !== CRYPT_LUKS &&
      s.dataFile === s.file;
    if (whole) return makeCompletelyEmpty(s, l1Clusters);
    // As QEMU's qcow2_make_empty, the freed clusters count as a snapshot's (pass-discard-snapshot).
    if (bs.totalBytes > 0) await qcow2DiscardRange(bs, s, 0, bs.totalBytes, true, 'snapshot');
    await flushMetadata(s);
  });
}

async function makeCompletelyEmpty(s: Qcow2State, l1Clusters: number): Promise<void> {
  const cs = s.clusterSize;
  // The caches are written out and dropped: nothing of the old tables is used again.
  await flushMetadata(s);
  s.l2Cache.clear();
  dropRefcountCache(s);
  // From here the refcounts are broken until the end: the dirty bit says so on disk.
  await setDirtyBit(s);
  try {
    await bdrvDebugEvent(s.file, 'l1_update');
    await bdrvPwriteZeroes(s.file, s.header.l1TableOffset, l1Clusters * cs);
    s.l1Table.fill(0);
    s.rw.l1DirtyFrom = s.rw.l1DirtyTo = 0;

    await bdrvDebugEvent(s.file, 'empty_image_prepare');
    // Room for the refcount table, one refcount block and the L1 table right after the header.
    await bdrvPwriteZeroes(s.file, cs, (2 + l1Clusters) * cs);

    await bdrvDebugEvent(s.file, 'l1_update');
    await bdrvDebugEvent(s.file, 'reftable_update');
    const h = { ...s.header, l1TableOffset: 3 * cs, refcountTableOffset: cs, refcountTableClusters: 1 };
    await writeHeaderFields(s, ['l1TableOffset', 'refcountTableOffset', 'refcountTableClusters'], h);
    await syncFile(s);
    s.header.l1TableOffset = h.l1TableOffset;
    s.header.refcountTableOffset = h.refcountTableOffset;
    s.header.refcountTableClusters = h.refcountTableClusters;
    s.refcountTable = new Float64Array(cs / 8);
    s.rw.deferredFrees = [];
    s.rw.discards = [];
    s.rw.freeByteOffset = 0;
    invalidateMetadata(s);

    await bdrvDebugEvent(s.file, 'refblock_alloc');
    const entry = new Uint8Array(8);
    new DataView(entry.buffer).setBigUint64(0, BigInt(2 * cs));
    await bdrvPwrite(s.file, cs, 8, entry);
    await syncFile(s);
    s.refcountTable[0] = 2 * cs;

    s.rw.freeClusterIndex = 0;
    const at = await allocateClusters(s, Math.ceil((3 * cs + s.l1Size * 8) / cs));
    if (at !== 0) throw new BlockError('EIO', `${s.image}: the first cluster of the emptied image is in use`);
  } catch (e) {
    // The refcounts on disk no longer describe the image: the node takes no more requests.
    s.rw.unusable = true;
    throw e;
  }
  // Refcounts written, then the dirty bit cleared.
  await flushMetadata(s);
  await bdrvTruncate(s.file, (3 + l1Clusters) * cs, false, 'off');
}
