/**
 * Building whole refcount structures from refcounts held in memory: the one
 * place that encodes refcount entries of any width, places a new refcount
 * table and its blocks, and writes them. Used by check's rebuild (QEMU's
 * rebuild_refcount_structure), by create when QEMU's incremental layout does
 * not apply, and by amend's refcount_bits change.
 *
 * The new structures go past every cluster in use (a "refcount area" at the
 * end of the file, as QEMU's qcow2_refcount_area), so writing them never
 * touches live metadata: until the header points at the new table the image
 * is still the old one, and afterwards the old refcount clusters are simply
 * unreferenced.
 *
 * Entries and table entries are encoded by refcount-codec.ts.
 */
import { BlockError } from '../../block/errors.js';
import { bdrvPwrite } from '../../block/io.js';
import type { BlockNode } from '../../block/node.js';
import { allocBuffer, freeBuffer } from '../../block/buffers.js';
import { putReftableEntry, refcountLimit, setRefcountEntry } from './refcount-codec.js';

/** Largest number of host clusters we count in memory (one counter each, at most 32 bits wide: 512 MiB). */
export const MAX_COUNTED_CLUSTERS = 2 ** 27;

/** Largest refcount a width of 2^order bits can hold (refcount-codec.ts refcountLimit). */
export function maxRefcount(order: number): number {
  return refcountLimit(1 << order);
}

/** What a rebuild produced: where the new table lives. */
export interface RefcountStructure {
  tableOffset: number;
  tableClusters: number;
  /** Cluster index one past the last cluster in use afterwards. */
  end: number;
}

/**
 * Writes a complete refcount structure for `counts` (refcount of each host
 * cluster; clusters past its length are free): refcount blocks for every
 * range with a nonzero count, then the table. New clusters are taken
 * first-fit from cluster `from` on among the clusters `counts` says are free
 * (QEMU's rebuild places them the same way), and count themselves. The caller
 * switches the header to `tableOffset` after a flush; until then nothing
 * live was touched, because every cluster used is unreferenced.
 */
export async function writeRefcountStructure(
  file: BlockNode,
  counts: ArrayLike<number>,
  clusterSize: number,
  order: number,
  from = 0,
): Promise<RefcountStructure> {
  const perBlock = (clusterSize * 8) >> order;
  const perTableCluster = clusterSize / 8;
  if (counts.length > MAX_COUNTED_CLUSTERS) throw new BlockError('EFBIG', `${file.filename}: refcount structure for ${counts.length} clusters is too large`);
  let arr = new Uint32Array(Math.max(counts.length, from));
  if (counts instanceof Uint32Array || counts instanceof Uint16Array || counts instanceof Uint8Array) arr.set(counts);
  else for (let i = 0; i < counts.length; i++) arr[i] = counts[i]!;
  const ensure = (n: number): void => {
    if (n <= arr.length) return;
    if (n > MAX_COUNTED_CLUSTERS * 2) throw new BlockError('EFBIG', `${file.filename}: refcount structure for ${n} clusters is too large`);
    const b = new Uint32Array(Math.max(n, arr.length * 2));
    b.set(arr);
    arr = b;
  };
  let used = arr.length;
  while (used > 0 && arr[used - 1] === 0) used--;
  let cursor = from;
  const findRun = (n: number, start: number): number => {
    let a = start;
    for (let c = a; c - a < n; c++) {
      if (c < used && arr[c] !== 0) a = c + 1;
    }
    return a;
  };
  const take = (a: number, n: number): void => {
    ensure(a + n);
    for (let c = a; c < a + n; c++) arr[c] = 1;
    used = Math.max(used, a + n);
  };

  const blocks = new Map<number, number>();
  let maxJ = 0;
  let tableAt = -1;
  let tableClusters = 0;
  for (;;) {
    // Refcount blocks for every range in use (placing one may put a new range in use).
    let placed = 0;
    for (let j = 0; j * perBlock < used; j++) {
      if (blocks.has(j) || !rangeUsed(arr, j, perBlock, used)) continue;
      const at = findRun(1, cursor);
      take(at, 1);
      cursor = at + 1;
      blocks.set(j, at);
      maxJ = Math.max(maxJ, j);
      placed++;
    }
    const need = Math.ceil((maxJ + 1) / perTableCluster);
    if (tableAt >= 0 && placed === 0 && need <= tableClusters) break;
    // (Re)place the table where it fits; a larger one moves.
    if (tableAt >= 0) arr.fill(0, tableAt, tableAt + tableClusters);
    tableClusters = need;
    tableAt = findRun(need, from);
    take(tableAt, need);
  }

  const limit = maxRefcount(order);
  const table = new Uint8Array(tableClusters * clusterSize);
  const block = allocBuffer(clusterSize);
  try {
    for (const [j, at] of [...blocks.entries()].sort((x, y) => x[0] - y[0])) {
      block.fill(0);
      const base = j * perBlock;
      const n = Math.min(perBlock, used - base);
      for (let i = 0; i < n; i++) {
        const v = arr[base + i]!;
        if (v === 0) continue;
        if (v > limit) throw new BlockError('EINVAL', `${file.filename}: refcount ${v} of cluster ${base + i} does not fit in ${1 << order} bits`);
        setRefcountEntry(block, 1 << order, i, v);
      }
      await bdrvPwrite(file, at * clusterSize, clusterSize, block);
      putReftableEntry(table, j, at * clusterSize);
    }
  } finally {
    freeBuffer(block);
  }
  const tableOffset = tableAt * clusterSize;
  await bdrvPwrite(file, tableOffset, table.length, table);
  return { tableOffset, tableClusters, end: used };
}

function rangeUsed(arr: Uint32Array, j: number, perBlock: number, used: number): boolean {
  for (let c = j * perBlock; c < Math.min(used, (j + 1) * perBlock); c++) if (arr[c] !== 0) return true;
  return false;
}
