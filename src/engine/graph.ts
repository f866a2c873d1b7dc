/**
 * The Engine's block graph: named nodes and devices, who owns them, where
 * their bytes come from, lookup by QEMU's rules, and opening and closing
 * (QEMU's graph_bdrv_states, bdrv_lookup_bs, the monitor's references).
 * Ownership follows QEMU's reference counts: nodes added by the user
 * (blockdev-add, open) are "monitor-owned" and stay until deleted; nodes
 * created implicitly for them (a nested `file`, a backing chain opened from
 * the image's header) belong to their parent and go when it goes.
 */
import { BlockError } from '../block/errors.js';
import type { BlockNode } from '../block/node.js';
import { BlockBackend } from '../block/backend.js';
import { closeNode, openImage, type Storage } from '../block/open.js';
import { QmpError, genericError } from './qmp-error.js';
import { EngineEvents } from './events.js';
import { realClock, type Clock } from '../block/clock.js';
import { ThrottleGroups } from '../block/throttle-group.js';
import type { BackendOptions, IoErrorReport } from '../block/backend.js';
import { PERM_CONSISTENT_READ, PERM_WRITE, type ChildRole } from '../block/child.js';
import { childPerms, cumulative, permConflict, usesConflict, PERM_ALL, type NodeUse, type PermPair, type PermParent } from '../block/permissions.js';

/** QEMU's id_wellformed: a letter, then letters, digits, '-', '.', '_'. */
const NAME_RE = /^[A-Za-z][A-Za-z0-9_.-]*$/;
/** QEMU keeps node names in a 32-byte array. */
const MAX_NODE_NAME = 31;

/**
 * A device model with removable media and a tray (QEMU's ide-cd): its qdev
 * id, whether the tray is open, whether the guest locked it. Devices
 * without one behave as QEMU's `-drive if=none`: no tray, media swapped at once.
 */
export interface TrayModel {
  id: string;
  open: boolean;
  locked: boolean;
}

/** A device or a node's anonymous backend the engine does I/O through; its statistics live on the backend. */
export class IoTarget {
  /** The device model attached to a named device, if any (see TrayModel). */
  model?: TrayModel;
  constructor(readonly backend: BlockBackend) {}
}

/** QEMU's RunState, as query-status reports it. */
export type RunState = 'running' | 'paused' | 'io-error' | 'shutdown';

export interface EngineOpenOptions {
  /** Format driver; probed from the first bytes when absent (not QMP behaviour: blockdev-add requires it). */
  format?: string;
  readOnly?: boolean;
  /** Node name of the top node; generated ("#blockN") when absent. */
  nodeName?: string;
  /** Also create a named device (BlockBackend) on the node: it shows in query-block and query-blockstats. */
  device?: string;
  /** The device's backend options (error policy, statistics); the typed API's devices report errors by default. */
  backend?: BackendOptions;
  /** Open the backing chain named in the image (default true). */
  backing?: boolean;
  /** Format driver options (raw's offset/size, qcow2's l2-cache-size, …). */
  driverOptions?: Record<string, unknown>;
  /** Read-only only: open even while another tab or worker writes the image (QEMU's force-share, qemu-img -U). */
  forceShare?: boolean;
}

export interface EngineGraphOptions {
  /** Storages by name; the name is also the protocol driver name in blockdev-add (`{ driver: 'opfs', filename }`). */
  storages: Record<string, Storage>;
  /** Receives warnings (probing guessed raw, …). */
  warn?: (message: string) => void;
  /** Clock for statistics and throttling (default: the host's; tests give a VirtualClock). */
  clock?: Clock;
}

export abstract class EngineGraph extends EngineEvents {
  readonly storages: ReadonlyMap<string, Storage>;
  protected readonly warn: (message: string) => void;

  /** Every node in the graph by node-name, in the order they were added (as QEMU's graph_bdrv_states). */
  private readonly nodes = new Map<string, BlockNode>();
  private readonly names = new Map<BlockNode, string>();
  private readonly monitorOwned = new Set<BlockNode>();
  private readonly nodeStorages = new Map<BlockNode, Storage>();
  /** Named devices (BlockBackends), as QEMU's -drive/-device ids. */
  protected readonly devices = new Map<string, IoTarget>();
  /** Nodes opened as a device's medium (-drive, change-medium): closed when the device lets go of them. */
  protected readonly mediumOf = new Map<BlockNode, string>();
  /** Uses that are neither edges nor devices (a job's children and backends), newest first, by node. */
  private readonly otherUses = new Map<BlockNode, NodeUse[]>();
  /** Anonymous backends for I/O addressed to a node-name (like qemu-io on a node); not "users" of the node. */
  protected readonly nodeIo = new Map<BlockNode, IoTarget>();

  readonly clock: Clock;
  /** Named throttle groups (object-add's throttle-group, block_set_io_throttle's groups). */
  readonly throttleGroups: ThrottleGroups;
  /** The "VM" run state: `stop`/`cont` and a `stop` error policy change it; stopped backends queue requests. */
  runState: RunState = 'running';

  constructor(options: EngineGraphOptions) {
    super();
    this.storages = new Map(Object.entries(options.storages));
    this.warn = options.warn ?? (() => {});
    this.clock = options.clock ?? realClock;
    this.throttleGroups = new ThrottleGroups(this.clock);
  }

  /** A BlockBackend on `root` wired to the engine: its clock, its error events, its run state. */
  makeBackend(root: BlockNode, opts: BackendOptions = {}): BlockBackend {
    const blk = new BlockBackend(root, {
      ...opts,
      clock: this.clock,
      hooks: {
        ioError: (r) => this.reportIoError(r),
        stop: () => this.stopVm('io-error'),
      },
    });
    if (this.runState !== 'running') blk.pause();
    return blk;
  }

  /** QEMU's BLOCK_IO_ERROR. */
  protected reportIoError(r: IoErrorReport): void {
    const code = r.error instanceof BlockError ? r.error.code : 'EIO';
    const data: Record<string, unknown> = {
      device: r.backend.name,
      'node-name': this.nameOf(r.backend.root),
      operation: r.operation,
      action: r.action,
    };
    if (r.backend.iostatusEnabled) data.nospace = code === 'ENOSPC';
    data.reason = r.error instanceof Error ? r.error.message : String(r.error);
    this.emit('BLOCK_IO_ERROR', data);
  }

  /** Every backend the engine holds (devices and node backends). */
  allBackends(): BlockBackend[] {
    return [...this.devices.values(), ...this.nodeIo.values()].map((io) => io.backend);
  }

  /** QEMU's vm_stop: every backend stops; STOP is sent once. */
  stopVm(state: RunState = 'paused'): void {
    if (this.runState !== 'running') return;
    this.runState = state;
    for (const b of this.allBackends()) b.pause();
    this.emit('STOP', {});
  }

  /** QMP `cont`: iostatus reset, backends resume, RESUME sent. */
  contVm(): void {
    for (const b of this.allBackends()) b.iostatus = 'ok';
    if (this.runState === 'running') return;
    this.runState = 'running';
    this.emit('RESUME', {});
    for (const b of this.allBackends()) b.resume();
  }

  /** Runs a QMP command (src/engine/dispatch.ts); close() deletes nodes through blockdev-del. */
  abstract execute(command: string, args?: unknown): Promise<unknown>;

  // ------------------------------------------------------- graph registry
  // Used by the command handlers (src/engine/commands/); not QMP.

  storage(name: string): Storage | undefined {
    return this.storages.get(name);
  }

  /** The storage a node's bytes come from (inherited from its file child for format nodes). */
  storageOf(bs: BlockNode): Storage | undefined {
    for (let n: BlockNode | null = bs; n; n = n.file?.node ?? null) {
      const s = this.nodeStorages.get(n);
      if (s) return s;
    }
    return undefined;
  }

  /** The node-name of a node in the graph. */
  nameOf(bs: BlockNode): string {
    return this.names.get(bs) ?? bs.nodeName;
  }

  /** Every node, in the order added. */
  allNodes(): BlockNode[] {
    return [...this.nodes.values()];
  }

  findNode(nodeName: string): BlockNode | undefined {
    return this.nodes.get(nodeName);
  }

  deviceNames(): string[] {
    return [...this.devices.keys()];
  }

  device(name: string): IoTarget | undefined {
    return this.devices.get(name);
  }

  /** The I/O accounting for a node addressed by node-name, if any I/O went to it. */
  nodeIoTarget(bs: BlockNode): IoTarget | undefined {
    return this.nodeIo.get(bs);
  }

  /** The device whose root is `bs`, if any (QEMU's bdrv_has_blk). */
  deviceOf(bs: BlockNode): string | undefined {
    for (const [name, d] of this.devices) if (d.backend.hasMedium && d.backend.root === bs) return name;
    return undefined;
  }

  isMonitorOwned(bs: BlockNode): boolean {
    return this.monitorOwned.has(bs);
  }

  /**
   * QEMU's bdrv_lookup_bs: a device name or a node-name (the same name for
   * both unless `what` is 'node'). A miss is QEMU 7.2's GenericError, with
   * code ENOENT so callers of the typed API can still tell it apart.
   */
  lookup(name: string, what: 'device-or-node' | 'node' = 'device-or-node', message?: string): BlockNode {
    return what === 'node' ? this.lookupBs(undefined, name, message) : this.lookupBs(name, name, message);
  }

  /** bdrv_lookup_bs(device, node_name): the device's medium first, then the node; either may be absent. */
  lookupBs(device: string | undefined, nodeName: string | undefined, message?: string): BlockNode {
    const dev = device !== undefined ? this.devices.get(device) : undefined;
    if (dev) {
      if (!dev.backend.hasMedium) throw genericError(`Device '${device}' has no medium`, 'ENOMEDIUM');
      return dev.backend.root;
    }
    const bs = nodeName !== undefined ? this.nodes.get(nodeName) : undefined;
    if (bs) return bs;
    throw new QmpError('GenericError', message ?? `Cannot find device='${device ?? ''}' nor node-name='${nodeName ?? ''}'`, 'ENOENT');
  }

  /**
   * Every use of `bs` (QEMU's bs->parents): jobs' uses, its parents' edges
   * and the devices on it, with what each takes and shares. A parent's edge
   * takes what the parent's own users need, passed down through filters.
   */
  usesOf(bs: BlockNode): NodeUse[] {
    // Newest first, as QEMU inserts parents at the head of the list (jobs come after the edges they work on).
    const out: NodeUse[] = [...(this.otherUses.get(bs) ?? [])];
    for (const e of [...bs.parents].reverse()) {
      out.push({ who: `node '${this.nameOf(e.parent)}'`, role: e.name, key: e, ...childPerms(e.parent, e.role, cumulative(this.usesOf(e.parent))) });
    }
    for (const [name, d] of this.devices) {
      if (!d.backend.hasMedium || d.backend.root !== bs) continue;
      // A -drive backend without a device model: reads, writes when writable, shares everything (QEMU's blk_new_open).
      out.push({ who: `block device '${name}'`, role: 'root', backend: true, perm: PERM_CONSISTENT_READ | (bs.readOnly ? 0 : PERM_WRITE), shared: PERM_ALL });
    }
    return out;
  }

  /** Adds a use that is no edge or device (a job's); returns what removes it. */
  addUse(bs: BlockNode, use: NodeUse): () => void {
    const list = this.otherUses.get(bs) ?? [];
    list.unshift(use);
    this.otherUses.set(bs, list);
    return () => {
      const at = list.indexOf(use);
      if (at >= 0) list.splice(at, 1);
      if (list.length === 0 && this.otherUses.get(bs) === list) this.otherUses.delete(bs);
    };
  }

  /**
   * Refuses a new use of `bs` (a temporary backend that wants to write)
   * when it conflicts with bs's users, or when what bs then needs of its
   * children conflicts further down (QEMU's permission update, which passes
   * a filter's users' needs on to the node below it).
   */
  checkAddedUse(bs: BlockNode, added: NodeUse): void {
    const existing = this.usesOf(bs);
    const conflict = permConflict(this.nameOf(bs), existing, added);
    if (conflict) throw genericError(conflict, 'EPERM');
    this.checkChildren(bs, cumulative(existing), cumulative([added, ...existing]));
  }

  /** After bs's users went from `before` to `after`: each child whose edge now takes or shares otherwise must still agree with its other users. */
  private checkChildren(bs: BlockNode, before: PermPair, after: PermPair): void {
    for (const c of bs.children()) {
      const was = childPerms(bs, c.role, before);
      const now = childPerms(bs, c.role, after);
      if (was.perm === now.perm && was.shared === now.shared) continue;
      const uses = this.usesOf(c.node);
      const updated = uses.map((u) => (u.key === c ? { ...u, ...now } : u));
      const conflict = usesConflict(this.nameOf(c.node), updated);
      if (conflict) throw genericError(conflict, 'EPERM');
      this.checkChildren(c.node, cumulative(uses), cumulative(updated));
    }
  }

  /**
   * Refuses to make `child` the `role` child of `parent` (a node about to be
   * opened, which has no users yet) when that use conflicts with the child's
   * users, or what the child then needs of its own children conflicts
   * further down (a reader over a layer a commit removes), with QEMU's message.
   */
  checkNewUse(child: BlockNode, parent: PermParent, parentName: string, role: ChildRole): void {
    this.checkAddedUse(child, { who: `node '${parentName}'`, role, ...childPerms(parent, role, cumulative([])) });
  }

  /** Checks a user-chosen node-name as QEMU's bdrv_assign_node_name does. */
  checkNewNodeName(name: string): void {
    if (!NAME_RE.test(name)) throw genericError(`Invalid node-name: '${name}'`);
    if (this.devices.has(name)) throw genericError(`node-name=${name} is conflicting with a device id`);
    if (this.nodes.has(name)) throw genericError(`Duplicate nodes with node-name='${name}'`);
    if (name.length > MAX_NODE_NAME) throw genericError('Node name too long');
  }

  /**
   * Puts a freshly opened node and every child it has that the graph does
   * not know yet into the registry. `name` renames the top node (protocol
   * nodes are created before their name is known); `owned` makes it
   * monitor-owned.
   */
  /** Creation order of nodes (and of the job filter nodes query-named-block-nodes shows): QEMU lists newest first. */
  private createdCount = 0;
  private readonly created = new WeakMap<object, number>();

  /** Stamps `o` as created now (see createdAt). */
  stampCreated(o: object): void {
    this.created.set(o, ++this.createdCount);
  }

  /** When `o` was created, relative to the other stamped nodes (0: never stamped). */
  createdAt(o: object): number {
    return this.created.get(o) ?? 0;
  }

  adopt(bs: BlockNode, storage: Storage | undefined, opts: { name?: string; owned?: boolean } = {}): void {
    // In the order QEMU creates nodes: a node's file first, then the node, then its backing chain.
    const visit = (n: BlockNode, name?: string) => {
      if (this.names.has(n)) return;
      for (const c of [n.file, n.dataFile, ...n.dataChildren]) if (c) visit(c.node);
      const nn = name ?? n.nodeName;
      this.nodes.set(nn, n);
      this.names.set(n, nn);
      this.stampCreated(n);
      if (n.backing) visit(n.backing.node);
    };
    visit(bs, opts.name);
    if (storage && !this.nodeStorages.has(bs)) this.nodeStorages.set(bs, storage);
    if (opts.owned) this.monitorOwned.add(bs);
  }

  /**
   * Closes `bs` (no parent may use it) and every child only it used; nodes
   * the monitor owns stay, as QEMU's references keep them. Drops what closed
   * from the registry.
   */
  async closeTree(bs: BlockNode): Promise<void> {
    const all: BlockNode[] = [];
    const walk = (n: BlockNode) => {
      if (all.includes(n)) return;
      all.push(n);
      for (const c of n.children()) walk(c.node);
    };
    walk(bs);
    try {
      // Nodes the monitor owns (added by name) stay open until blockdev-del.
      await closeNode(bs, (child) => this.monitorOwned.has(child));
    } finally {
      for (const n of all) {
        if (!n.closed) continue;
        const name = this.names.get(n);
        if (name !== undefined) this.nodes.delete(name);
        this.names.delete(n);
        this.monitorOwned.delete(n);
        this.nodeStorages.delete(n);
        this.nodeIo.delete(n);
      }
    }
  }

  /**
   * Opens `filename` from a storage as a new monitor-owned node (format
   * probed unless given) and returns its node-name. With `device`, also a
   * named device on it.
   */
  async open(storageName: string, filename: string, opts: EngineOpenOptions = {}): Promise<string> {
    const storage = this.requireStorage(storageName);
    if (opts.nodeName !== undefined) this.checkNewNodeName(opts.nodeName);
    if (opts.device !== undefined) this.checkNewDeviceName(opts.device);
    const bs = await openImage(storage, filename, {
      format: opts.format,
      readOnly: opts.readOnly ?? false,
      backing: opts.backing,
      driverOptions: opts.driverOptions,
      nodeName: opts.nodeName,
      forceShare: opts.forceShare,
      warn: this.warn,
    });
    this.adopt(bs, storage, { owned: true });
    // The app's devices report errors; QEMU's werror=enospc default (stop until cont) is for --drive.
    if (opts.device !== undefined) {
      this.addDevice(opts.device, bs, { werror: 'report', ...opts.backend });
      this.mediumOf.set(bs, opts.device);
    }
    return this.nameOf(bs);
  }

  /** A named device (BlockBackend) on a node already in the graph: it shows in query-block and query-blockstats. */
  addDevice(name: string, bs: BlockNode, opts: BackendOptions = {}): BlockBackend {
    this.checkNewDeviceName(name);
    const blk = this.makeBackend(bs, { ...opts, name });
    this.devices.set(name, new IoTarget(blk));
    return blk;
  }

  /**
   * Attaches a device model with a tray (QEMU's `-device ide-cd,drive=NAME,id=ID`)
   * to a named device: blockdev-open-tray and -close-tray move its tray
   * (DEVICE_TRAY_MOVED), media go in and out only while it is open, and
   * `id` names it in the media commands.
   */
  attachTrayDevice(name: string, id: string): void {
    const dev = this.devices.get(name);
    if (!dev) throw new QmpError('DeviceNotFound', `Device '${name}' not found`);
    if (!NAME_RE.test(id)) throw genericError(`Invalid device id: '${id}'`);
    if (dev.model) throw genericError(`Drive '${name}' is already in use by a device`, 'EBUSY');
    if ([...this.devices.values()].some((d) => d.model?.id === id)) throw genericError(`Duplicate device ID '${id}'`);
    dev.model = { id, open: false, locked: false };
    // The device model reports I/O status (QEMU's ide-cd enables it).
    dev.backend.iostatusEnabled = true;
  }

  /** The named device a device model's qdev id belongs to. */
  deviceByModelId(id: string): string | undefined {
    for (const [name, d] of this.devices) if (d.model?.id === id) return name;
    return undefined;
  }

  /** Removes a device (and then its node, if the monitor owns it and nothing else uses it) or deletes a node. */
  async close(name: string): Promise<void> {
    const dev = this.devices.get(name);
    if (dev) {
      this.devices.delete(name);
      this.setBackendThrottle(dev.backend, null);
      if (!dev.backend.hasMedium) return;
      const root = dev.backend.root;
      if (this.monitorOwned.has(root) && root.parents.length === 0 && !this.deviceOf(root)) await this.closeTree(root);
      return;
    }
    await this.execute('blockdev-del', { 'node-name': name });
  }

  /**
   * Takes a device's medium out (eject, change-medium). A node opened as the
   * medium goes with it unless something else uses it, as QEMU drops the
   * BlockBackend's reference; a node added by name stays.
   */
  async ejectMedium(name: string): Promise<void> {
    const dev = this.devices.get(name)!;
    const bs = dev.backend.removeMedium();
    if (!bs) return;
    if (this.mediumOf.get(bs) === name) {
      this.mediumOf.delete(bs);
      this.monitorOwned.delete(bs);
      if (bs.parents.length === 0 && !this.deviceOf(bs)) await this.closeTree(bs);
    }
  }

  /** Puts a medium into an empty device. */
  insertMedium(name: string, bs: BlockNode, openedForIt: boolean): void {
    this.devices.get(name)!.backend.root = bs;
    if (openedForIt) this.mediumOf.set(bs, name);
  }

  /** Puts a backend in a throttle group (leaving the one it was in), or takes it out with null. */
  setBackendThrottle(blk: BlockBackend, groupName: string | null): void {
    const old = blk.throttle;
    if (old && old.group.name === groupName) return;
    if (old) {
      old.group.leave(old);
      this.throttleGroups.release(old.group);
      blk.throttle = null;
    }
    if (groupName !== null) blk.throttle = this.throttleGroups.obtain(groupName).join(blk.name);
  }

  /** Closes everything (flushing writable nodes). */
  async dispose(): Promise<void> {
    this.devices.clear();
    for (const bs of [...this.nodes.values()].reverse()) {
      if (!bs.closed && bs.parents.length === 0) await this.closeTree(bs);
    }
  }

  // ------------------------------------------------------------- helpers

  protected requireStorage(name: string): Storage {
    const s = this.storages.get(name);
    if (!s) throw new BlockError('ENOENT', `No storage named '${name}' (have: ${[...this.storages.keys()].join(', ') || 'none'})`);
    return s;
  }

  protected checkNewDeviceName(name: string): void {
    if (!NAME_RE.test(name)) throw genericError(`Invalid device name: '${name}'`);
    if (this.devices.has(name)) throw genericError(`Duplicate device name '${name}'`);
    if (this.nodes.has(name)) throw genericError(`Device name '${name}' conflicts with an existing node name`);
  }
}
