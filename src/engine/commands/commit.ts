/**
 * block-commit (QEMU's qmp_block_commit). For a layer below the active one,
 * the data of `top` and the layers between it and `base` is copied into
 * `base` by the commit job, then (at finalize) the overlay of `top` names
 * `base` as its backing file and the committed layers leave the graph. For
 * the active layer (top is the device's root) it is the active commit job
 * (src/jobs/active-commit.ts): copy, ready, mirror the device's writes, and
 * job-complete pivots the device onto base.
 *
 * Base is opened read-only in the chain. QEMU reopens it read-write for the
 * job; `reopenWritable` does the same here: a node whose file was opened
 * read-write (an external snapshot made it read-only) is switched in place,
 * any other is closed and opened again read-write under the same node-name —
 * OPFS lets no writer in while a reader holds the file, so a second
 * read-write open beside the read-only one would fail, and two qcow2 states
 * on one file would not see each other's metadata.
 */
import { bdrvFlush } from '../../block/io.js';
import type { BlockNode } from '../../block/node.js';
import { openContext, openImage } from '../../block/open.js';
import type { CommitJobOptions } from '../../jobs/commit.js';
import type { ActiveCommitOptions } from '../../jobs/active-commit.js';
import type { Args } from '../qapi-args.js';
import type { Engine } from '../engine.js';
import { genericError, QmpError } from '../qmp-error.js';
import { checkNotInJob, checkOnError, filterAbove, hasJobFilter, startJob } from './jobs.js';
import { PERM_CONSISTENT_READ, PERM_RESIZE, PERM_WRITE, PERM_WRITE_UNCHANGED } from '../../block/child.js';
import { PERM_ALL, type NodeUse } from '../../block/permissions.js';
import type { QmpCommandTable } from './types.js';

/** The node in `top`'s chain whose backing is `bs` (QEMU's bdrv_find_overlay). */
export function overlayOf(top: BlockNode, bs: BlockNode): BlockNode | undefined {
  for (let n: BlockNode | null = top; n; n = n.cowNode()) if (n.cowNode() === bs) return n;
  return undefined;
}

/** A chain member of `top` (below it) by node-name, by file name, or by the name an overlay stores for it (bdrv_find_backing_image). */
function findInChain(engine: Engine, top: BlockNode, name: string): BlockNode | undefined {
  for (let n: BlockNode | null = top; n; n = n.cowNode()) {
    const b = n.cowNode();
    if (b && (n.backingFile === name || b.filename === name || engine.nameOf(b) === name)) return b;
  }
  return undefined;
}

/**
 * Makes `base` writable for a commit; `release` flushes it and makes it
 * read-only again. Returns the node to write through (a fresh node under the
 * same name when it had to be opened again).
 */
export async function reopenWritable(engine: Engine, base: BlockNode, overlay: BlockNode): Promise<{ node: BlockNode; release(): Promise<void> }> {
  const flipBack = (node: BlockNode, was: boolean) => async () => {
    try {
      await bdrvFlush(node);
    } finally {
      node.readOnly = was;
    }
  };
  if (!base.readOnly) return { node: base, release: async () => bdrvFlush(base) };
  const file = base.file?.node;
  if (file && !file.readOnly && (!base.dataFile || !base.dataFile.node.readOnly)) {
    base.readOnly = false;
    return { node: base, release: flipBack(base, true) };
  }
  const name = engine.nameOf(base);
  if (engine.isMonitorOwned(base) || base.parents.length !== 1 || engine.deviceOf(base) !== undefined) {
    throw genericError(`Block node '${name}' is in use elsewhere and cannot be reopened read-write for the commit`, 'EBUSY');
  }
  const storage = engine.storageOf(base) ?? openContext(base)?.storage ?? engine.storageOf(overlay);
  if (!storage) throw genericError(`Node '${name}' has no storage to reopen it from`);
  const { filename } = base;
  const format = base.driver.name;
  overlay.detach('backing');
  await engine.closeTree(base);
  const put = (n: BlockNode) => {
    overlay.attach(n, 'backing');
    engine.adopt(n, storage, { name });
  };
  let fresh: BlockNode;
  try {
    fresh = await openImage(storage, filename, { format, readOnly: false });
  } catch (e) {
    put(await openImage(storage, filename, { format, readOnly: true }));
    throw e;
  }
  put(fresh);
  return { node: fresh, release: flipBack(fresh, true) };
}

/**
 * The commit job's options for the layers from `top` down to (not including)
 * `base`: base is reopened read-write for the copy; once the job is
 * finalized the overlay of `top` names base and the committed layers leave
 * the graph (data first, then the header, then the graph: a crash in between
 * leaves the longer, still valid chain).
 */
function intermediateCommit(engine: Engine, overlay: BlockNode, top: BlockNode, base: BlockNode, backingFile: string | undefined): CommitJobOptions {
  return {
    top,
    base,
    keepTop: true,
    acquireBase: () => reopenWritable(engine, base, overlayOf(top, base)!),
    async prepare(written) {
      await overlay.driver.changeBackingFile!(overlay, backingFile ?? written.filename, written.driver.name);
      const lowest = overlayOf(top, written)!;
      overlay.detach('backing');
      lowest.detach('backing');
      overlay.attach(written, 'backing');
      overlay.fullBackingFilename = written.filename;
      if (top.parents.length === 0 && !engine.isMonitorOwned(top)) await engine.closeTree(top);
    },
  };
}

/** QEMU 7.2's commit jobs: each node the commit removes from the chain lets others write but not read consistently. */
const intermediateUse = (id: string): NodeUse => ({ who: `commit job '${id}'`, role: 'intermediate node', perm: 0, shared: PERM_WRITE | PERM_WRITE_UNCHANGED });

/** The nodes strictly between `top` and `base` in top's chain, top included. */
function between(top: BlockNode, base: BlockNode): BlockNode[] {
  const out: BlockNode[] = [];
  for (let n: BlockNode | null = top; n && n !== base; n = n.cowNode()) out.push(n);
  return out;
}

/**
 * Active commit: the top is the device's root, so the job copies, goes
 * ready, mirrors the device's writes into base, and job-complete pivots the
 * device onto base (QEMU runs it as a mirror job of type "commit"). The top
 * node stays in the graph when the monitor holds it, as in QEMU.
 */
function startActiveCommit(engine: Engine, args: Args, device: string, top: BlockNode, base: BlockNode): void {
  checkOnError(args['on-error']);
  const nodes: BlockNode[] = [];
  for (let n: BlockNode | null = top; n; n = n.cowNode()) {
    checkNotInJob(engine, n);
    nodes.push(n);
    if (n === base) break;
  }
  const options: ActiveCommitOptions = {
    top,
    base,
    acquireBase: () => reopenWritable(engine, base, overlayOf(top, base)!),
    async pivot(written) {
      const dev = engine.deviceOf(top);
      if (dev !== undefined) engine.device(dev)!.backend.root = written;
      if (!engine.isMonitorOwned(top) && top.parents.length === 0 && engine.deviceOf(top) === undefined) {
        // Base now has a user of its own: the chain above it goes, base stays.
        overlayOf(top, written)?.detach('backing');
        await engine.closeTree(top);
      }
    },
  };
  const id = (args['job-id'] as string | undefined) ?? device;
  // QEMU 7.2 runs it as a mirror into a backing node: the source as a mirror's (with its mirror_top filter's reads),
  // the layers in between as a commit's, and a target backend on base that also lets others read and write it
  // (resize only when base is the smaller).
  const uses: { node: BlockNode; use: NodeUse }[] = [
    { node: top, use: { who: `commit job '${id}'`, role: 'source', perm: PERM_CONSISTENT_READ, shared: PERM_CONSISTENT_READ | PERM_WRITE | PERM_WRITE_UNCHANGED } },
    ...between(top, base).slice(1).map((node) => ({ node, use: intermediateUse(id) })),
    {
      node: base,
      use: {
        who: 'an unnamed block device',
        role: 'root',
        backend: true,
        perm: PERM_WRITE | (top.totalBytes > base.totalBytes ? PERM_RESIZE : 0),
        shared: PERM_CONSISTENT_READ | PERM_WRITE | PERM_WRITE_UNCHANGED,
      },
    },
  ];
  startJob(engine, {
    nodes,
    uses,
    // Its mirror_top filter sits above the top.
    ...filterAbove('mirror_top', top, args),
    id,
    type: 'active-commit',
    device: id,
    speed: args.speed as number | undefined,
    autoFinalize: args['auto-finalize'] as boolean | undefined,
    autoDismiss: args['auto-dismiss'] as boolean | undefined,
    options,
  });
}

export const commitCommands: QmpCommandTable = {
  'block-commit': {
    args: {
      '*job-id': 'str',
      device: 'str',
      '*base-node': 'str',
      '*base': 'str',
      '*top-node': 'str',
      '*top': 'str',
      '*backing-file': 'str',
      '*backing-mask-protocol': 'bool',
      '*speed': 'int',
      '*on-error': { enum: ['report', 'ignore', 'enospc', 'stop', 'auto'] },
      '*filter-node-name': 'str',
      '*auto-finalize': 'bool',
      '*auto-dismiss': 'bool',
    },
    run(engine, args) {
      const device = args.device as string;
      let root: BlockNode;
      try {
        root = engine.lookup(device);
      } catch {
        throw new QmpError('DeviceNotFound', `Device '${device}' not found`);
      }
      // QEMU's qmp_get_root_bs: a node under another (or under a job's filter) cannot be committed from.
      if (root.parents.length > 0 || hasJobFilter(engine, root)) throw genericError('Need a root block node');
      if (args.top !== undefined && args['top-node'] !== undefined) throw genericError("'top' and 'top-node' cannot be specified at the same time");
      if (args.base !== undefined && args['base-node'] !== undefined) throw genericError("'base' and 'base-node' cannot be specified at the same time");
      let top: BlockNode | undefined = root;
      if (args['top-node'] !== undefined) {
        top = engine.lookup(args['top-node'] as string, 'node');
        if (top !== root && !overlayOf(root, top)) throw genericError(`'${args['top-node'] as string}' is not in this backing file chain`);
      } else if (args.top !== undefined && args.top !== root.filename) {
        top = findInChain(engine, root, args.top as string);
        if (!top) throw genericError(`Top image file ${args.top as string} not found`);
      }
      let base: BlockNode | undefined;
      if (args['base-node'] !== undefined) {
        base = engine.lookup(args['base-node'] as string, 'node');
        if (base !== top && !overlayOf(top, base)) throw genericError(`'${args['base-node'] as string}' is not in this backing file chain`);
      } else if (args.base !== undefined) {
        base = findInChain(engine, top, args.base as string);
        if (!base) throw genericError(`Base '${args.base as string}' not found`);
      } else {
        base = top;
        while (base.cowNode()) base = base.cowNode()!;
      }
      if (top === base) throw genericError('cannot commit an image into itself');
      if (top === root && args['backing-file'] !== undefined) throw genericError("'backing-file' specified, but 'top' is the active layer");
      if (top === root) {
        startActiveCommit(engine, args, device, top, base);
        return;
      }
      const overlay = overlayOf(root, top)!;
      if (overlay.readOnly) throw genericError(`Block node '${engine.nameOf(overlay)}' is read-only: cannot change its backing file`, 'EROFS');
      if (!overlay.driver.changeBackingFile) throw genericError(`The ${overlay.driver.name} format of '${engine.nameOf(overlay)}' cannot change its backing file`, 'ENOTSUP');
      checkOnError(args['on-error']);
      // QEMU's op blockers: the job's main node (the root), the layers it removes, and base.
      const nodes: BlockNode[] = [root];
      for (let n: BlockNode | null = top; n; n = n.cowNode()) {
        checkNotInJob(engine, n);
        nodes.push(n);
        if (n === base) break;
      }
      const id = (args['job-id'] as string | undefined) ?? device;
      // QEMU 7.2's commit: the layers it removes (see intermediateUse); a backend on base that writes and resizes it
      // and lets others only read it; a backend on top that takes nothing (but makes blockdev-del say "in use").
      const uses: { node: BlockNode; use: NodeUse }[] = [
        ...between(top, base).map((node) => ({ node, use: intermediateUse(id) })),
        { node: base, use: { who: 'an unnamed block device', role: 'root', backend: true, perm: PERM_CONSISTENT_READ | PERM_WRITE | PERM_RESIZE, shared: PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED } },
        { node: top, use: { who: 'an unnamed block device', role: 'root', backend: true, perm: 0, shared: PERM_ALL } },
      ];
      startJob(engine, {
        nodes,
        uses,
        // The job holds the root as its main node: no root node for another commit while it runs.
        filtered: root,
        // QEMU's commit_top filter sits between top and its overlay.
        filter: { driver: 'commit_top', child: top, readOnly: true, overlay, name: args['filter-node-name'] as string | undefined },
        id,
        type: 'commit',
        device: id,
        speed: args.speed as number | undefined,
        autoFinalize: args['auto-finalize'] as boolean | undefined,
        autoDismiss: args['auto-dismiss'] as boolean | undefined,
        options: intermediateCommit(engine, overlay, top, base, args['backing-file'] as string | undefined),
      });
    },
  },
};
