/**
 * Reply shapes of the query commands, keyed and ordered as QEMU 7.2's QAPI
 * schema (qapi/block-core.json): BlockDeviceInfo (query-named-block-nodes,
 * query-block's "inserted"), BlockInfo (query-block), BlockStats and
 * BlockDeviceStats (query-blockstats). Optional members that are absent are
 * left out, never `undefined`, so replies survive structured clone and JSON
 * unchanged.
 */
import type { BlockNode } from '../block/node.js';
import { listDirtyBitmaps, type DirtyBitmapInfo } from '../block/dirty-bitmap.js';
import { imageInfo, type ImageInfo } from '../img/info.js';
import type { Engine, IoTarget } from './engine.js';

/** QAPI ImageInfo with its recursive `backing-image`. */
export type QmpImageInfo = ImageInfo & { 'backing-image'?: QmpImageInfo };

export interface BlockDeviceInfo {
  file: string;
  'node-name': string;
  ro: boolean;
  drv: string;
  backing_file?: string;
  backing_file_depth: number;
  encrypted: boolean;
  detect_zeroes: 'off' | 'on' | 'unmap';
  bps: number;
  bps_rd: number;
  bps_wr: number;
  iops: number;
  iops_rd: number;
  iops_wr: number;
  image: QmpImageInfo;
  cache: { writeback: boolean; direct: boolean; 'no-flush': boolean };
  write_threshold: number;
  'dirty-bitmaps'?: DirtyBitmapInfo[];
}

export interface BlockInfo {
  device: string;
  type: string;
  removable: boolean;
  locked: boolean;
  inserted?: BlockDeviceInfo;
  'io-status'?: 'ok' | 'failed' | 'nospace';
}

export interface BlockDeviceStats {
  rd_bytes: number;
  wr_bytes: number;
  unmap_bytes: number;
  rd_operations: number;
  wr_operations: number;
  flush_operations: number;
  unmap_operations: number;
  rd_total_time_ns: number;
  wr_total_time_ns: number;
  flush_total_time_ns: number;
  unmap_total_time_ns: number;
  wr_highest_offset: number;
  rd_merged: number;
  wr_merged: number;
  unmap_merged: number;
  failed_rd_operations: number;
  failed_wr_operations: number;
  failed_flush_operations: number;
  failed_unmap_operations: number;
  invalid_rd_operations: number;
  invalid_wr_operations: number;
  invalid_flush_operations: number;
  invalid_unmap_operations: number;
  account_invalid: boolean;
  account_failed: boolean;
  timed_stats: never[];
}

export interface BlockStats {
  device?: string;
  'node-name'?: string;
  stats: BlockDeviceStats;
  parent?: BlockStats;
  backing?: BlockStats;
}

/** Drops members whose value is undefined (QAPI's "absent"). */
function present<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}

/**
 * ImageInfo of `bs` and, unless `flat`, of each node below it (QEMU puts any
 * filtered or backing child there), nested as `backing-image`. `depth` counts
 * the nested levels — which is why QEMU 7.2 reports backing_file_depth 0 for
 * every node when asked with flat=true: it counts while it nests.
 */
export async function imageInfoTree(bs: BlockNode, flat: boolean): Promise<{ info: QmpImageInfo; depth: number }> {
  const top = present(await imageInfo(bs)) as QmpImageInfo;
  let depth = 0;
  let at = top;
  for (let n = flat ? null : bs.cowNode(); n; n = n.cowNode()) {
    const next = present(await imageInfo(n)) as QmpImageInfo;
    at['backing-image'] = next;
    at = next;
    depth++;
  }
  return { info: top, depth };
}

/** QEMU's bdrv_block_device_info. */
export async function blockDeviceInfo(engine: Engine, bs: BlockNode, flat: boolean): Promise<BlockDeviceInfo> {
  const { info: image, depth } = await imageInfoTree(bs, flat);
  const backing = bs.cowNode();
  const bitmaps = listDirtyBitmaps(bs).map((b) => b.info());
  const info: BlockDeviceInfo = {
    file: bs.filename,
    'node-name': engine.nameOf(bs),
    ro: bs.readOnly,
    drv: bs.driver.name,
    backing_file: backing ? backing.filename : undefined,
    backing_file_depth: depth,
    encrypted: false,
    detect_zeroes: bs.detectZeroes,
    // No throttling exists here: QEMU reports zeros when none is configured.
    bps: 0,
    bps_rd: 0,
    bps_wr: 0,
    iops: 0,
    iops_rd: 0,
    iops_wr: 0,
    image,
    // Cache modes are accepted and ignored; this is what QEMU reports for its default (writeback, no O_DIRECT).
    cache: { writeback: true, direct: false, 'no-flush': false },
    write_threshold: 0,
    'dirty-bitmaps': bitmaps.length > 0 ? bitmaps : undefined,
  };
  return present(info);
}

/** QEMU's bdrv_query_info for a device. */
export async function blockInfo(engine: Engine, name: string, dev: IoTarget): Promise<BlockInfo> {
  return {
    device: name,
    type: 'unknown',
    removable: false,
    locked: false,
    inserted: await blockDeviceInfo(engine, dev.backend.root, false),
    'io-status': dev.backend.iostatus,
  };
}

function deviceStats(io: IoTarget | undefined, bs: BlockNode): BlockDeviceStats {
  const s = io?.backend.stats;
  return {
    rd_bytes: s?.rdBytes ?? 0,
    wr_bytes: s?.wrBytes ?? 0,
    unmap_bytes: s?.discardBytes ?? 0,
    rd_operations: s?.rdOperations ?? 0,
    wr_operations: s?.wrOperations ?? 0,
    flush_operations: s?.flushOperations ?? 0,
    unmap_operations: s?.discardOperations ?? 0,
    rd_total_time_ns: s?.rdTotalTimeNs ?? 0,
    wr_total_time_ns: s?.wrTotalTimeNs ?? 0,
    flush_total_time_ns: 0,
    unmap_total_time_ns: 0,
    // Every write that reached the node counts, a job's included (QEMU keeps it on the node, not the backend).
    wr_highest_offset: Math.max(bs.wrHighestOffset, io?.wrHighestOffset ?? 0),
    rd_merged: 0,
    wr_merged: 0,
    unmap_merged: 0,
    failed_rd_operations: s?.failedRdOperations ?? 0,
    failed_wr_operations: s?.failedWrOperations ?? 0,
    failed_flush_operations: 0,
    failed_unmap_operations: 0,
    invalid_rd_operations: io?.invalidRdOperations ?? 0,
    invalid_wr_operations: io?.invalidWrOperations ?? 0,
    invalid_flush_operations: 0,
    invalid_unmap_operations: 0,
    account_invalid: true,
    account_failed: true,
    timed_stats: [],
  };
}

/**
 * QEMU's bdrv_query_bds_stats: a node's own counters (here: what the engine's
 * read/write API did to that node), its primary child as `parent`, and at
 * device level its backing node as `backing`.
 */
function nodeStats(engine: Engine, bs: BlockNode, deviceLevel: boolean): BlockStats {
  const s: BlockStats = { 'node-name': engine.nameOf(bs), stats: deviceStats(engine.nodeIoTarget(bs), bs) };
  const primary = bs.file?.node ?? bs.dataFile?.node;
  if (primary) s.parent = nodeStats(engine, primary, deviceLevel);
  if (deviceLevel && bs.backing) s.backing = nodeStats(engine, bs.backing.node, deviceLevel);
  return s;
}

/** query-blockstats: per device, or with `queryNodes` per node. */
export function blockStats(engine: Engine, queryNodes: boolean): BlockStats[] {
  if (queryNodes) return engine.allNodes().map((bs) => nodeStats(engine, bs, false));
  return engine.deviceNames().map((name) => {
    const dev = engine.device(name)!;
    const root = nodeStats(engine, dev.backend.root, true);
    return present({ device: name, 'node-name': root['node-name'], stats: deviceStats(dev, dev.backend.root), parent: root.parent, backing: root.backing });
  });
}
