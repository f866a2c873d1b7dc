/**
 * drive-mirror, blockdev-mirror, drive-backup and blockdev-backup, with
 * QEMU 7.2's argument checks and messages (blockdev.c, mirror.c,
 * backup.c). The jobs themselves are src/jobs/mirror.ts and
 * src/jobs/backup.ts; this file finds the nodes, creates the target image
 * for the drive-* forms (`mode` absolute-paths, the default, or existing),
 * decides what QEMU decides from the graph (mirror's zero_target, backup's
 * cluster size, top falling back to full without a backing file), and
 * wires the pivot of a completed mirror into the engine's graph.
 *
 * QEMU starts a backup from a drained section (the job is created and
 * entered, then paused until the drain ends), so its first events are
 * created, running, paused, running; `startDrained` gives the same.
 */
import { generatedNodeName, type BlockNode } from '../../block/node.js';
import { PERM_CONSISTENT_READ, PERM_RESIZE, PERM_WRITE, PERM_WRITE_UNCHANGED } from '../../block/child.js';
import { PERM_ALL } from '../../block/permissions.js';
import { openImage, type Storage } from '../../block/open.js';
import { defaultBitmapGranularity, lookupDirtyBitmap, checkDirtyBitmap, type BdrvDirtyBitmap } from '../../block/dirty-bitmap.js';
import { createImage, planCreate } from '../../img/create.js';
import type { Job, JobErrorPolicy } from '../../jobs/job.js';
import type { MirrorOptions, MirrorSyncMode } from '../../jobs/mirror.js';
import { BACKUP_CLUSTER_SIZE_DEFAULT, type BackupOptions, type BackupSyncMode, type BitmapSyncMode } from '../../jobs/backup.js';
import type { Engine } from '../engine.js';
import type { Args } from '../qapi-args.js';
import { genericError } from '../qmp-error.js';
import { checkNewJobId, checkNotInJob, filterAbove, hasJobFilter, startJob, type StartJobOptions } from './jobs.js';
import type { TransactionAction } from '../../block/transaction.js';
import type { QmpCommandTable } from './types.js';

const ON_ERROR = { enum: ['report', 'ignore', 'enospc', 'stop', 'auto'] } as const;
const SYNC = { enum: ['top', 'full', 'none', 'incremental', 'bitmap'] } as const;
const MODE = { enum: ['existing', 'absolute-paths'] } as const;

/** QEMU's qmp_get_root_bs: a device, or a node no other node uses. */
function rootNode(engine: Engine, name: string): BlockNode {
  const bs = engine.lookup(name);
  if (bs.parents.length > 0 || hasJobFilter(engine, bs)) throw genericError('Need a root block node');
  return bs;
}

/** Any node by device or node name (QEMU's bdrv_lookup_bs): a blockdev-* target, a backup's device. */
function targetNode(engine: Engine, name: string): BlockNode {
  try {
    return engine.lookup(name);
  } catch {
    throw genericError(`Cannot find device='${name}' nor node-name='${name}'`);
  }
}

function errorPolicy(v: unknown): JobErrorPolicy {
  return (v as JobErrorPolicy | undefined) ?? 'report';
}

function storageFor(engine: Engine, bs: BlockNode): Storage {
  const st = engine.storageOf(bs);
  if (!st) throw genericError(`Node '${engine.nameOf(bs)}' has no storage to create the target in`);
  return st;
}

/**
 * drive-*: creates the target (mode absolute-paths) with `backing` as its
 * backing file, or checks it exists (mode existing), and opens it without
 * its backing chain; `attachBacking` then gives it the source's node.
 */
async function openDriveTarget(
  engine: Engine,
  bs: BlockNode,
  args: Args,
  backing: BlockNode | null,
  nodeName: string | undefined,
): Promise<{ node: BlockNode; created: boolean }> {
  const storage = storageFor(engine, bs);
  const mode = (args.mode as string | undefined) ?? 'absolute-paths';
  const format = (args.format as string | undefined) ?? (mode === 'existing' ? undefined : bs.driver.name);
  const file = args.target as string;
  if (nodeName !== undefined) engine.checkNewNodeName(nodeName);
  if (mode !== 'existing') {
    const plan = await planCreate(storage, {
      filename: file,
      format: format!,
      size: bs.totalBytes,
      ...(backing ? { backingFile: backing.filename, backingFormat: backing.driver.name, unsafe: true } : {}),
    });
    await createImage(storage, plan);
  }
  const node = await openImage(storage, file, { format, readOnly: false, backing: false, nodeName });
  engine.adopt(node, storage, { name: nodeName });
  return { node, created: mode !== 'existing' };
}

/** Switches the users of `from` (devices and parent nodes) onto `to` (QEMU's bdrv_replace_node). */
function replaceNode(engine: Engine, from: BlockNode, to: BlockNode): void {
  for (const d of engine.deviceNames()) {
    const dev = engine.device(d)!;
    if (dev.backend.root === from) dev.backend.root = to;
  }
  for (const edge of [...from.parents]) {
    if (edge.parent === to) continue;
    edge.parent.replaceChild(edge, to);
  }
}

/**
 * QEMU starts backup jobs inside a drained section: the job enters, is
 * paused by the drain, and resumes when it ends.
 */
async function startDrained(job: Job): Promise<void> {
  job.pause();
  // Let the job reach its first pause point (its run begins with one).
  for (let i = 0; i < 10 && job.status === 'running'; i++) await Promise.resolve();
  job.resume();
}

// ------------------------------------------------------------------ mirror

interface MirrorArgs {
  bs: BlockNode;
  target: BlockNode;
  sync: MirrorSyncMode;
  zeroTarget: boolean;
  /** Close the target when the job ends without a pivot (drive-mirror's implicit node). */
  implicitTarget: boolean;
  /** The node the target takes the place of at completion (`replaces`; the source itself without it). */
  replaces?: BlockNode;
}

/**
 * mirror's `replaces` (QEMU's check_to_replace_node): the node must exist and
 * be the source or reached from it through filters only, so that swapping it
 * for the target cannot change what the source's users see all at once.
 */
function replacesNode(engine: Engine, bs: BlockNode, args: Args): BlockNode | undefined {
  const name = args.replaces as string | undefined;
  if (name === undefined) return undefined;
  const to = engine.findNode(name);
  if (!to) throw genericError(`Failed to find node with node-name='${name}'`);
  for (let n: BlockNode | null = bs; n; n = n.driver.kind === 'filter' ? (n.file?.node ?? null) : null) if (n === to) return to;
  throw genericError(
    `Cannot replace '${name}' by a node mirrored from '${engine.nameOf(bs)}', because it cannot be guaranteed that doing so would not lead to an abrupt change of visible data`,
  );
}

function startMirror(engine: Engine, args: Args, m: MirrorArgs): void {
  const { bs, target } = m;
  const granularity = (args.granularity as number | undefined) ?? 0;
  if (granularity !== 0 && (granularity < 512 || granularity > 64 * 1024 * 1024)) {
    throw genericError("Parameter 'granularity' expects a value in range [512B, 64MB]");
  }
  if (granularity & (granularity - 1)) throw genericError("Parameter 'granularity' expects a power of 2");
  const bufSize = args['buf-size'] as number | undefined;
  if (bufSize !== undefined && bufSize < 0) throw genericError("Parameter 'buf-size' expects a non-negative value");
  if (bs === target) throw genericError("Can't mirror node into itself");
  checkNotInJob(engine, bs);
  checkNotInJob(engine, target);
  if (target.readOnly) throw genericError(`Block node '${engine.nameOf(target)}' is read-only`, 'EROFS');
  const id = (args['job-id'] as string | undefined) ?? engine.deviceOf(bs) ?? engine.nameOf(bs);
  const options: MirrorOptions = {
    source: bs,
    target,
    sync: m.sync,
    granularity: granularity || defaultBitmapGranularity(target),
    bufSize: bufSize || undefined,
    zeroTarget: m.zeroTarget,
    onSourceError: errorPolicy(args['on-source-error']),
    onTargetError: errorPolicy(args['on-target-error']),
    copyMode: args['copy-mode'] as MirrorOptions['copyMode'],
    async pivot(t) {
      replaceNode(engine, m.replaces ?? bs, t);
    },
    async release(pivoted) {
      if (!m.implicitTarget) return;
      const inUse = target.parents.length > 0 || engine.deviceOf(target) !== undefined;
      if (pivoted && inUse) return;
      target.detach('backing');
      await engine.closeTree(target);
    },
  };
  startJob(engine, {
    ...jobStart('mirror', args, id, bs, target, options),
    ...filterAbove('mirror_top', bs, args),
    uses: [
      // QEMU 7.2's mirror: its 'source' child (with the mirror_top filter's reads) lets others read and write but not resize;
      // its target backend writes and lets others only write unchanged data.
      { node: bs, use: { who: `mirror job '${id}'`, role: 'source', perm: PERM_CONSISTENT_READ, shared: PERM_CONSISTENT_READ | PERM_WRITE | PERM_WRITE_UNCHANGED } },
      { node: target, use: { who: 'an unnamed block device', role: 'root', backend: true, perm: PERM_WRITE, shared: PERM_WRITE_UNCHANGED } },
    ],
  });
}

/** What startJob gets for a mirror or backup of `bs` into `target` (the job's common arguments from `args`). */
function jobStart<O>(type: string, args: Args, id: string, bs: BlockNode, target: BlockNode, options: O): StartJobOptions<O> {
  return {
    nodes: [bs, target],
    filtered: bs,
    id,
    type,
    device: id,
    speed: args.speed as number | undefined,
    autoFinalize: args['auto-finalize'] as boolean | undefined,
    autoDismiss: args['auto-dismiss'] as boolean | undefined,
    options,
  };
}

const MIRROR_COMMON = {
  '*job-id': 'str',
  device: 'str',
  target: 'str',
  '*replaces': 'str',
  sync: { enum: ['top', 'full', 'none', 'incremental', 'bitmap'] },
  '*speed': 'int',
  '*granularity': 'uint32',
  '*buf-size': 'int',
  '*on-source-error': ON_ERROR,
  '*on-target-error': ON_ERROR,
  '*filter-node-name': 'str',
  '*copy-mode': { enum: ['background', 'write-blocking'] },
  '*auto-finalize': 'bool',
  '*auto-dismiss': 'bool',
} as const;

/** Mirror accepts only full, top and none (QEMU: "Sync mode '…' not supported"). */
function mirrorSync(v: unknown): MirrorSyncMode {
  if (v !== 'full' && v !== 'top' && v !== 'none') throw genericError(`Sync mode '${String(v)}' not supported`, 'ENOTSUP');
  return v;
}

// ------------------------------------------------------------------ backup

function backupClusterSize(target: BlockNode): number {
  let cluster = 0;
  try {
    cluster = target.driver.getDriverInfo?.(target)?.clusterSize ?? 0;
  } catch {
    cluster = 0;
  }
  return Math.max(BACKUP_CLUSTER_SIZE_DEFAULT, cluster);
}

/** The bitmap checks of QEMU's do_backup_common; returns the sync mode and bitmap the job gets. */
function backupBitmapArgs(bs: BlockNode, args: Args): { sync: BackupSyncMode; bitmap?: BdrvDirtyBitmap; bitmapMode?: BitmapSyncMode } {
  let sync = args.sync as string;
  let mode = args['bitmap-mode'] as BitmapSyncMode | undefined;
  const name = args.bitmap as string | undefined;
  if (sync === 'incremental') {
    if (mode !== undefined && mode !== 'on-success') {
      throw genericError("Bitmap sync mode must be 'on-success' when using sync mode 'incremental'");
    }
    sync = 'bitmap';
    mode = 'on-success';
  }
  let bitmap: BdrvDirtyBitmap | undefined;
  if (name !== undefined) {
    try {
      bitmap = lookupDirtyBitmap(bs, name);
    } catch {
      throw genericError(`Bitmap '${name}' could not be found`);
    }
    if (mode === undefined) throw genericError('Bitmap sync mode must be given when providing a bitmap');
    checkDirtyBitmap(bitmap, 1 | 4);
    if (sync === 'none') throw genericError("sync mode 'none' does not produce meaningful bitmap outputs");
    if (mode === 'never' && sync !== 'bitmap') {
      throw genericError(`Bitmap sync mode 'never' has no meaningful effect when combined with sync mode '${sync}'`);
    }
  }
  if (name === undefined && mode !== undefined) throw genericError('Cannot specify bitmap sync mode without a bitmap');
  if (sync === 'bitmap' && !bitmap) throw genericError("must provide a valid bitmap name for 'bitmap' sync mode");
  if (bitmap && mode !== 'never') checkDirtyBitmap(bitmap);
  return { sync: sync as BackupSyncMode, bitmap, bitmapMode: mode };
}

/** Checks everything and returns the function that starts the job (a transaction starts it at commit). */
function prepareBackup(engine: Engine, args: Args, bs: BlockNode, target: BlockNode, implicitTarget: boolean): () => Promise<void> {
  const b = backupBitmapArgs(bs, args);
  if (bs === target) throw genericError('Source and target cannot be the same');
  if (target.totalBytes !== bs.totalBytes) throw genericError('Source and target image have different sizes');
  const compress = args.compress === true;
  if (compress && !target.driver.supportsCompressedWrites) {
    // QEMU names the target's device, which a node without one does not have.
    throw genericError(`Compression is not supported for this drive ${engine.deviceOf(target) ?? ''}`, 'ENOTSUP');
  }
  checkNotInJob(engine, bs);
  checkNotInJob(engine, target);
  if (target.readOnly) throw genericError(`Block node '${engine.nameOf(target)}' is read-only`, 'EROFS');
  const id = (args['job-id'] as string | undefined) ?? engine.deviceOf(bs) ?? engine.nameOf(bs);
  const filterBitmaps: BdrvDirtyBitmap[] = [];
  const options: BackupOptions = {
    filterBitmaps,
    source: bs,
    target,
    sync: b.sync,
    bitmap: b.bitmap,
    bitmapMode: b.bitmapMode,
    clusterSize: backupClusterSize(target),
    compress,
    onSourceError: errorPolicy(args['on-source-error']),
    onTargetError: errorPolicy(args['on-target-error']),
    async release() {
      if (!implicitTarget) return;
      // A fleecing target reads through the source: the edge goes before the node closes.
      if (target.backing?.node === bs) target.detach('backing');
      await engine.closeTree(target);
    },
  };
  // QEMU 7.2's backup puts a copy-before-write filter (a generated node name) on the source: it lets nobody else
  // write or resize the source, writes the target, and lets others do anything to the target but resize it.
  const cbwName = (args['filter-node-name'] as string | undefined) ?? generatedNodeName();
  const cbw = `node '${cbwName}'`;
  const start: StartJobOptions<BackupOptions> = {
    ...jobStart('backup', args, id, bs, target, options),
    filter: { driver: 'copy-before-write', child: bs, name: cbwName, dirtyBitmaps: filterBitmaps },
    uses: [
      { node: bs, use: { who: cbw, role: 'file', filterEdge: true, perm: 0, shared: PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED } },
      { node: target, use: { who: cbw, role: 'target', perm: PERM_WRITE, shared: PERM_ALL & ~PERM_RESIZE } },
    ],
  };
  // The job id is checked now, so a transaction fails in prepare.
  checkNewJobId(engine, id);
  return () => startDrained(startJob(engine, start));
}

/** blockdev-backup / drive-backup as a transaction action: prepare checks (and creates the target), commit starts the job. */
function backupAction(drive: boolean) {
  return (engine: Engine, args: Args): TransactionAction => {
    let start: (() => Promise<void>) | undefined;
    let made: BlockNode | undefined;
    return {
      async prepare() {
        const p = drive ? await prepareDriveBackup(engine, args) : prepareBlockdevBackup(engine, args);
        start = p.start;
        made = p.made;
      },
      async commit() {
        await start?.();
      },
      async abort() {
        if (made) {
          if (made.backing) made.detach('backing');
          await engine.closeTree(made);
        }
      },
    };
  };
}

function prepareBlockdevBackup(engine: Engine, args: Args): { start: () => Promise<void>; made?: BlockNode } {
  // QEMU 7.2 looks a backup's device up as any node (bdrv_lookup_bs), a mirror's as a root node.
  const bs = targetNode(engine, args.device as string);
  const target = targetNode(engine, args.target as string);
  return { start: prepareBackup(engine, args, bs, target, false) };
}

async function prepareDriveBackup(engine: Engine, args: Args): Promise<{ start: () => Promise<void>; made?: BlockNode }> {
  const bs = targetNode(engine, args.device as string);
  // Checked before the target is created, as QEMU does.
  backupBitmapArgs(bs, args);
  let sync = args.sync as string;
  const backing = bs.cowNode();
  if (sync === 'top' && !backing) sync = 'full';
  const source = sync === 'top' ? backing : sync === 'none' ? bs : null;
  const { node: target } = await openDriveTarget(engine, bs, args, source, undefined);
  if (sync === 'none') target.attach(bs, 'backing');
  try {
    return { start: prepareBackup(engine, { ...args, sync }, bs, target, true), made: target };
  } catch (e) {
    if (target.backing) target.detach('backing');
    await engine.closeTree(target);
    throw e;
  }
}

const BACKUP_COMMON = {
  '*job-id': 'str',
  device: 'str',
  sync: SYNC,
  '*speed': 'int',
  '*bitmap': 'str',
  '*bitmap-mode': { enum: ['on-success', 'never', 'always'] },
  '*compress': 'bool',
  '*on-source-error': ON_ERROR,
  '*on-target-error': ON_ERROR,
  '*auto-finalize': 'bool',
  '*auto-dismiss': 'bool',
  '*filter-node-name': 'str',
  '*x-perf': { struct: { '*use-copy-range': 'bool', '*max-workers': 'int', '*max-chunk': 'int' } },
} as const;

export const mirrorBackupCommands: QmpCommandTable = {
  'blockdev-mirror': {
    args: MIRROR_COMMON,
    run(engine, args) {
      const bs = rootNode(engine, args.device as string);
      const target = targetNode(engine, args.target as string);
      const replaces = replacesNode(engine, bs, args);
      const asked = mirrorSync(args.sync);
      // As QEMU: the target is zeroed for sync=full as asked, not when top turns into full for lack of a backing file.
      const sync = asked === 'top' && !bs.skipFilters().cowNode() ? 'full' : asked;
      startMirror(engine, args, { bs, target, sync, zeroTarget: asked === 'full', implicitTarget: false, replaces });
    },
  },
  'drive-mirror': {
    args: { ...MIRROR_COMMON, '*format': 'str', '*node-name': 'str', '*mode': MODE, '*unmap': 'bool' },
    async run(engine, args) {
      const bs = rootNode(engine, args.device as string);
      const replaces = replacesNode(engine, bs, args);
      let sync = mirrorSync(args.sync);
      const backing = bs.skipFilters().cowNode();
      if (!backing && sync === 'top') sync = 'full';
      // The new image's backing file: the source's for top, the source itself for none.
      const source = sync === 'none' ? bs : sync === 'top' ? backing : null;
      const mode = (args.mode as string | undefined) ?? 'absolute-paths';
      const { node: target } = await openDriveTarget(engine, bs, args, source, args['node-name'] as string | undefined);
      if (source && mode === 'absolute-paths') target.attach(source, 'backing');
      // A new image reads as zeros: only what the source's chain holds needs copying.
      const zeroTarget = sync === 'full' && mode === 'existing';
      try {
        startMirror(engine, args, { bs, target, sync, zeroTarget, implicitTarget: true, replaces });
      } catch (e) {
        target.detach('backing');
        await engine.closeTree(target);
        throw e;
      }
    },
  },
  'blockdev-backup': {
    args: { ...BACKUP_COMMON, target: 'str' },
    run: (engine, args) => prepareBlockdevBackup(engine, args).start(),
    transaction: backupAction(false),
  },
  'drive-backup': {
    args: { ...BACKUP_COMMON, target: 'str', '*format': 'str', '*mode': MODE },
    run: async (engine, args) => (await prepareDriveBackup(engine, args)).start(),
    transaction: backupAction(true),
  },
};
