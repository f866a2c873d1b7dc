/**
 * Reply shapes of the query commands, keyed and ordered as QEMU 7.2's QAPI
 * schema (qapi/block-core.json): BlockDeviceInfo (query-named-block-nodes,
 * query-block's "inserted"), BlockInfo (query-block), BlockStats and
 * BlockDeviceStats (query-blockstats). Optional members that are absent are
 * left out, never `undefined`, so replies survive structured clone and JSON
 * unchanged.
 */
import type { BlockNode } from '../block/node.js';
import { dirtyBitmapInfos, type DirtyBitmapInfo } from '../block/dirty-bitmap.js';
import { displayFilename, imageInfo, type ImageInfo } from '../img/info.js';
import type { Engine, IoTarget } from './engine.js';
import type { BlockBackend } from '../block/backend.js';
import type { AcctType, BlockDeviceTimedStats } from '../block/accounting.js';
import { limitsFromConfig } from '../block/throttle.js';
import type { JobFilterNode } from './commands/jobs.js';

/** The throttle limits of a node no throttle group holds (BlockDeviceInfo's bps…iops_wr), as QEMU reports them. */
const UNTHROTTLED = { bps: 0, bps_rd: 0, bps_wr: 0, iops: 0, iops_rd: 0, iops_wr: 0 } as const;

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
  /** The device model's qdev id and its tray (a device with a TrayModel). */
  qdev?: string;
  tray_open?: boolean;
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
  timed_stats: BlockDeviceTimedStats[];
  idle_time_ns?: number;
}

export interface BlockStats {
  device?: string;
  'node-name'?: string;
  stats: BlockDeviceStats;
  parent?: BlockStats;
  backing?: BlockStats;
  'driver-specific'?: Record<string, unknown>;
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
export async function imageInfoTree(bs: BlockNode, flat: boolean, filters: readonly JobFilterNode[] = []): Promise<{ info: QmpImageInfo; depth: number }> {
  const top = present(await imageInfo(bs)) as QmpImageInfo;
  let depth = 0;
  let at = top;
  for (let prev = bs, n = flat ? null : bs.cowNode(); n; prev = n, n = n.cowNode()) {
    // A job's filter between two layers (commit_top) is a level of its own, as in QEMU's chain.
    const f = filters.find((x) => x.overlay === prev && x.child === n);
    if (f) {
      const level = await filterImageInfo(f);
      at['backing-image'] = level;
      at = level;
      depth++;
    }
    const next = present(await imageInfo(n)) as QmpImageInfo;
    at['backing-image'] = next;
    at = next;
    depth++;
  }
  return { info: top, depth };
}

/** A job filter's ImageInfo: its child's sizes and driver answers under the filter's format, as QEMU's filters pass them on. */
async function filterImageInfo(f: JobFilterNode): Promise<QmpImageInfo> {
  const c = await imageInfo(f.child);
  return present({
    filename: displayFilename(f.child),
    format: f.driver,
    'dirty-flag': c['dirty-flag'],
    'actual-size': c['actual-size'],
    'virtual-size': c['virtual-size'],
    'cluster-size': c['cluster-size'],
  }) as QmpImageInfo;
}

/** BlockDeviceInfo of a job's filter node (query-named-block-nodes): its child's name, below it the child's chain. */
export async function jobFilterDeviceInfo(f: JobFilterNode, flat: boolean, filters: readonly JobFilterNode[]): Promise<BlockDeviceInfo> {
  const image = await filterImageInfo(f);
  let depth = 0;
  if (!flat) {
    const below = await imageInfoTree(f.child, false, filters);
    image['backing-image'] = below.info;
    depth = below.depth + 1;
  }
  return {
    file: displayFilename(f.child),
    'node-name': f.name,
    ro: f.readOnly,
    drv: f.driver,
    backing_file_depth: depth,
    encrypted: false,
    detect_zeroes: 'off',
    ...UNTHROTTLED,
    image,
    cache: { writeback: true, direct: false, 'no-flush': false },
    write_threshold: 0,
    ...(f.dirtyBitmaps?.length ? { 'dirty-bitmaps': f.dirtyBitmaps.map((b) => b.info()) } : {}),
  };
}

/**
 * QEMU's bdrv_block_device_info. `filters`: the job filter nodes to show as
 * levels of the chain (query-named-block-nodes; query-block skips them, as
 * QEMU skips implicit filters there).
 */
export async function blockDeviceInfo(engine: Engine, bs: BlockNode, flat: boolean, filters: readonly JobFilterNode[] = []): Promise<BlockDeviceInfo> {
  const { info: image, depth } = await imageInfoTree(bs, flat, filters);
  // QEMU's bdrv_cow_bs: a filter's child is not a backing file.
  const backing = bs.driver.kind === 'filter' ? null : bs.cowNode();
  const bitmaps = dirtyBitmapInfos(bs);
  const info: BlockDeviceInfo = {
    file: displayFilename(bs),
    'node-name': engine.nameOf(bs),
    ro: bs.readOnly,
    drv: bs.driver.name,
    backing_file: backing ? displayFilename(backing) : undefined,
    backing_file_depth: depth,
    encrypted: false,
    detect_zeroes: bs.detectZeroes,
    ...UNTHROTTLED,
    image,
    // Cache modes are accepted and ignored; this is what QEMU reports for its default (writeback, no O_DIRECT).
    cache: { writeback: true, direct: false, 'no-flush': false },
    write_threshold: 0,
    'dirty-bitmaps': bitmaps.length > 0 ? bitmaps : undefined,
  };
  return present(info);
}

/** block_set_io_throttle's argument names by ThrottleLimits bucket (QAPI BlockIOThrottle). */
const LEGACY: Record<string, string> = {
  'bps-total': 'bps',
  'bps-read': 'bps_rd',
  'bps-write': 'bps_wr',
  'iops-total': 'iops',
  'iops-read': 'iops_rd',
  'iops-write': 'iops_wr',
};

/** The I/O limits of a throttled backend as query-block's BlockDeviceInfo members (bursts only when set, as QEMU). */
function throttleInfo(blk: BlockBackend): Record<string, unknown> {
  const t = blk.throttle;
  if (!t) return {};
  const lim = limitsFromConfig(t.group.config);
  const out: Record<string, unknown> = {};
  for (const [bucket, name] of Object.entries(LEGACY)) {
    out[name] = lim[bucket];
    if (lim[`${bucket}-max`]) {
      out[`${name}_max`] = lim[`${bucket}-max`];
      out[`${name}_max_length`] = lim[`${bucket}-max-length`];
    }
  }
  if (lim['iops-size']) out.iops_size = lim['iops-size'];
  out.group = t.group.name;
  return out;
}

/**
 * QEMU's bdrv_query_info for a device. A backend with no device model is removable, as QEMU's -drive if=none.
 * `filters`: the running jobs' filter nodes. A filter the user named above the device's node is what QEMU shows as
 * inserted (its child's image as its backing-image); implicit ones are skipped, as QEMU's bdrv_skip_implicit_filters.
 */
export async function blockInfo(engine: Engine, name: string, dev: IoTarget, filters: readonly JobFilterNode[] = []): Promise<BlockInfo> {
  const info: BlockInfo = { device: name, type: 'unknown', removable: true, locked: false };
  if (dev.backend.hasMedium) {
    const named = filters.filter((f) => !f.implicit);
    const explicit = named.find((f) => f.child === dev.backend.root && !f.overlay);
    const inserted = explicit ? await jobFilterDeviceInfo(explicit, false, named) : await blockDeviceInfo(engine, dev.backend.root, false);
    info.inserted = { ...inserted, ...throttleInfo(dev.backend) };
  }
  if (dev.backend.iostatusEnabled) info['io-status'] = dev.backend.iostatus;
  if (dev.model) {
    info.qdev = dev.model.id;
    info.tray_open = dev.model.open;
    info.locked = dev.model.locked;
  }
  return info;
}

/** QEMU's bdrv_query_blk_stats (a backend's counters) plus the node's wr_highest_offset; zeros without a backend. */
function deviceStats(blk: BlockBackend | undefined, bs: BlockNode | undefined, blkLevel: boolean): BlockDeviceStats {
  const s = blk?.stats;
  const n = (rec: 'bytes' | 'ops' | 'failedOps' | 'invalidOps' | 'mergedOps' | 'totalTimeNs', t: AcctType) => (s ? s[rec][t] : 0);
  const out: BlockDeviceStats = {
    rd_bytes: n('bytes', 'read'),
    wr_bytes: n('bytes', 'write'),
    unmap_bytes: n('bytes', 'unmap'),
    rd_operations: n('ops', 'read'),
    wr_operations: n('ops', 'write'),
    flush_operations: n('ops', 'flush'),
    unmap_operations: n('ops', 'unmap'),
    rd_total_time_ns: n('totalTimeNs', 'read'),
    wr_total_time_ns: n('totalTimeNs', 'write'),
    flush_total_time_ns: n('totalTimeNs', 'flush'),
    unmap_total_time_ns: n('totalTimeNs', 'unmap'),
    // Every write that reached the node counts, a job's included (QEMU keeps it on the node, not the backend).
    wr_highest_offset: bs?.wrHighestOffset ?? 0,
    rd_merged: n('mergedOps', 'read'),
    wr_merged: n('mergedOps', 'write'),
    unmap_merged: n('mergedOps', 'unmap'),
    failed_rd_operations: n('failedOps', 'read'),
    failed_wr_operations: n('failedOps', 'write'),
    failed_flush_operations: n('failedOps', 'flush'),
    failed_unmap_operations: n('failedOps', 'unmap'),
    invalid_rd_operations: n('invalidOps', 'read'),
    invalid_wr_operations: n('invalidOps', 'write'),
    invalid_flush_operations: n('invalidOps', 'flush'),
    invalid_unmap_operations: n('invalidOps', 'unmap'),
    account_invalid: blkLevel && s ? s.accountInvalid : false,
    account_failed: blkLevel && s ? s.accountFailed : false,
    timed_stats: s ? s.timedStats() : [],
  };
  const idle = s?.idleTimeNs();
  if (idle !== undefined) out.idle_time_ns = idle;
  return out;
}

/**
 * QEMU's bdrv_query_bds_stats: a node's own counters (here: what the engine's
 * read/write API did to that node), its primary child as `parent`, and at
 * device level its backing node as `backing`.
 */
function nodeStats(engine: Engine, bs: BlockNode, deviceLevel: boolean): BlockStats {
  const s: BlockStats = { 'node-name': engine.nameOf(bs), stats: deviceStats(engine.nodeIoTarget(bs)?.backend, bs, false) };
  const specific = bs.driver.getStatsSpecific?.(bs);
  if (specific) s['driver-specific'] = specific;
  const primary = bs.file?.node ?? bs.dataFile?.node;
  if (primary) s.parent = nodeStats(engine, primary, deviceLevel);
  if (deviceLevel && bs.backing) s.backing = nodeStats(engine, bs.backing.node, deviceLevel);
  return s;
}

/**
 * A running job's filter node (QEMU's bdrv_query_bds_stats on mirror_top, commit_top, …): no counters of its own
 * (nothing is accounted on it, no driver-specific stats) but the highest write that passed it, its filtered child as
 * `parent`.
 */
function jobFilterStats(engine: Engine, f: JobFilterNode): BlockStats {
  return { 'node-name': f.name, stats: { ...deviceStats(undefined, undefined, false), wr_highest_offset: f.wrHighestOffset }, parent: nodeStats(engine, f.child, false) };
}

/** query-blockstats: per device, or with `queryNodes` per node (`filters`: the running jobs' filter nodes, listed among them). */
export function blockStats(engine: Engine, queryNodes: boolean, filters: readonly JobFilterNode[] = []): BlockStats[] {
  // Oldest first here, filter nodes included (QEMU 7.2 walks its list of named nodes); query-named-block-nodes lists
  // them newest first (QEMU builds that list by prepending).
  if (queryNodes) {
    const all: (BlockNode | JobFilterNode)[] = [...engine.allNodes(), ...filters];
    all.sort((a, b) => engine.createdAt(a) - engine.createdAt(b));
    return all.map((n) => (filters.includes(n as JobFilterNode) ? jobFilterStats(engine, n as JobFilterNode) : nodeStats(engine, n as BlockNode, false)));
  }
  return engine.deviceNames().map((name) => {
    const dev = engine.device(name)!;
    // An empty device still has its backend's counters (QEMU: no node-name, no wr_highest_offset).
    if (!dev.backend.hasMedium) return { device: name, stats: { ...deviceStats(dev.backend, undefined, true), wr_highest_offset: 0 } };
    const root = nodeStats(engine, dev.backend.root, true);
    // A job's filter above the device's node, named by the user: QEMU's device-level stats stop at it (its filtered
    // child both its parent and its backing); an implicit one is skipped. Nothing writes through blocktab's filters,
    // so the filter's wr_highest_offset is what reached its child since the filter was inserted.
    const explicit = filters.find((f) => !f.implicit && f.child === dev.backend.root && !f.overlay);
    if (explicit) {
      const stats = { ...deviceStats(dev.backend, undefined, true), wr_highest_offset: explicit.wrHighestOffset };
      return { device: name, 'node-name': explicit.name, stats, parent: root, backing: root };
    }
    return present({ device: name, 'node-name': root['node-name'], stats: deviceStats(dev.backend, dev.backend.root, true), parent: root.parent, backing: root.backing });
  });
}
