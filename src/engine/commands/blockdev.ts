/**
 * blockdev-add and blockdev-del (QEMU's qmp_blockdev_add / qmp_blockdev_del).
 *
 * blockdev-add takes QAPI's BlockdevOptions: generic members (driver,
 * node-name, read-only, detect-zeroes, cache, …) plus the members of the
 * driver's union branch (a format driver's blockdevOptions, a storage's entry
 * in blockdevDriverArgs). A format's `file` (and qcow2's
 * `backing`) is either the node-name of a node already in the graph or a
 * nested dict opened with it; nested nodes belong to their parent. Protocol
 * drivers are the Engine's storages by name (`{ driver: 'opfs', filename }`),
 * HTTP takes `url` as QEMU's curl drivers do. Unlike qemu-img, the format is
 * never probed: `driver` is required, as in QEMU.
 */
import { BlockError } from '../../block/errors.js';
import { findDriver, type BlockDriver } from '../../block/driver.js';
import { BlockNode } from '../../block/node.js';
import { qdictText } from '../../block/options-tree.js';
import { openFormatOn, openImage, type Storage } from '../../block/open.js';
import type { Engine } from '../engine.js';
import { checkArgs, isDict, type ArgSpec, type Args } from '../qapi-args.js';
import { genericError } from '../qmp-error.js';
import type { QmpCommandTable } from './types.js';
import { checkNotInJob } from './jobs.js';

/** Members every driver takes (QAPI BlockdevOptions' base). */
export const BLOCKDEV_BASE: ArgSpec = {
  driver: 'str',
  '*node-name': 'str',
  '*discard': { enum: ['ignore', 'unmap'] },
  '*cache': { struct: { '*direct': 'bool', '*no-flush': 'bool' } },
  '*read-only': 'bool',
  '*auto-read-only': 'bool',
  '*force-share': 'bool',
  '*detect-zeroes': { enum: ['off', 'on', 'unmap'] },
};

const FILENAME: ArgSpec = { filename: 'str' };
const CURL: ArgSpec = { url: 'str', '*readahead': 'int', '*timeout': 'int', '*username': 'str', '*cookie': 'str' };

/**
 * Storage-specific members by protocol driver name (QAPI's BlockdevOptions
 * branches for protocols). Formats declare theirs on the driver
 * (BlockDriver.blockdevOptions); a format without them gets `file` (and
 * `backing` when it supports backing files) and nothing else.
 */
export const blockdevDriverArgs: Record<string, ArgSpec> = {
  file: { ...FILENAME, '*locking': { enum: ['auto', 'on', 'off'] }, '*aio': 'str', '*pr-manager': 'str' },
  memory: FILENAME,
  opfs: FILENAME,
  idb: FILENAME,
  blob: FILENAME,
  http: CURL,
  https: { ...CURL, '*sslverify': 'bool' },
};

/** QMP protocol driver names that map onto a storage of another name. */
const STORAGE_ALIASES: Record<string, string> = { https: 'http' };

/** Members that are the engine's business, not the format driver's. */
const NOT_DRIVER_OPTIONS = new Set([...Object.keys(BLOCKDEV_BASE).map((k) => k.replace(/^\*/, '')), 'file', 'backing']);

interface Inherited {
  readOnly: boolean;
  autoReadOnly: boolean;
  /** QEMU's force-share (inherited by children): a read-only open ignores other users' image locks. */
  forceShare?: boolean;
}

function storageFor(engine: Engine, driver: string): Storage | undefined {
  return engine.storage(STORAGE_ALIASES[driver] ?? driver);
}

export function driverSpec(engine: Engine, driver: string, prefix: string): { spec: ArgSpec; protocol: boolean } {
  if (storageFor(engine, driver)) return { spec: blockdevDriverArgs[driver] ?? FILENAME, protocol: true };
  const drv = findDriver(driver);
  if (drv && (drv.kind === 'format' || drv.kind === 'filter')) {
    const spec = drv.blockdevOptions ?? blockdevDriverArgs[driver] ?? { file: 'BlockdevRef', ...(drv.supportsBacking ? { '*backing': 'BlockdevRefOrNull' } : {}) };
    return { spec, protocol: false };
  }
  if (drv || blockdevDriverArgs[driver]) {
    throw genericError(`Driver '${driver}' is not available here (storages: ${[...engine.storages.keys()].join(', ')})`, 'ENOTSUP');
  }
  throw genericError(`Parameter '${prefix}driver' does not accept value '${driver}'`);
}

const isRoError = (e: unknown) => e instanceof BlockError && ['EROFS', 'EACCES', 'EPERM'].includes(e.code);

async function openProtocolNode(storage: Storage, filename: string, inh: Inherited): Promise<BlockNode> {
  try {
    return await storage.openProtocol(filename, inh.forceShare ? { readOnly: inh.readOnly, forceShare: true } : { readOnly: inh.readOnly });
  } catch (e) {
    // auto-read-only: take read-only access when read-write is refused (QEMU's BDRV_O_AUTO_RDONLY).
    if (!inh.readOnly && inh.autoReadOnly && isRoError(e)) return storage.openProtocol(filename, { readOnly: true });
    throw e;
  }
}

/**
 * Opens the backing file the image names, through its storage (as openImage
 * does for a chain). The caller registers it after `bs`: QEMU names a node
 * before it opens the node's backing chain.
 */
async function openHeaderBacking(bs: BlockNode, storage: Storage): Promise<BlockNode> {
  const resolved = storage.resolve(bs.filename, bs.backingFile!);
  bs.fullBackingFilename = resolved;
  let backing: BlockNode;
  try {
    backing = await openImage(storage, resolved, { format: bs.backingFormat ?? undefined, readOnly: true });
  } catch (e) {
    if (e instanceof BlockError && e.code === 'ELOOP') throw e;
    const why = e instanceof Error ? e.message : String(e);
    throw new BlockError(e instanceof BlockError ? e.code : 'EIO', `${bs.filename}: Could not open backing file: ${why}`, { cause: e });
  }
  bs.attach(backing, 'backing');
  bs.autoBackingFile = backing.filename;
  return backing;
}

/**
 * QEMU's BDRV_O_UNMAP for a node blockdev-add opens: its `discard` option,
 * else off for the top node (QAPI's default, ignore) and on for a nested
 * child (QEMU's inherited default for children).
 */
function discardUnmap(args: Args, prefix: string): boolean {
  const d = args.discard as string | undefined;
  return d === undefined ? prefix !== '' : d === 'unmap';
}

/** Opens one BlockdevOptions dict (recursively for nested children); the node is in the registry when it returns. */
async function openBlockdev(engine: Engine, args: Args, prefix: string, inh: Inherited): Promise<BlockNode> {
  checkArgs(BLOCKDEV_BASE, args, prefix, true);
  const driver = args.driver as string;
  const { spec, protocol } = driverSpec(engine, driver, prefix);
  checkArgs({ ...BLOCKDEV_BASE, ...spec }, args, prefix);
  const nodeName = args['node-name'] as string | undefined;
  if (nodeName !== undefined) engine.checkNewNodeName(nodeName);
  const here: Inherited = {
    readOnly: (args['read-only'] as boolean | undefined) ?? inh.readOnly,
    autoReadOnly: (args['auto-read-only'] as boolean | undefined) ?? inh.autoReadOnly,
    forceShare: (args['force-share'] as boolean | undefined) ?? inh.forceShare,
  };
  const detectZeroes = (args['detect-zeroes'] as 'off' | 'on' | 'unmap' | undefined) ?? 'off';
  if (detectZeroes === 'unmap' && args.discard !== 'unmap') {
    throw genericError('setting detect-zeroes to unmap is not allowed without setting discard operation to unmap');
  }

  if (protocol) {
    const storage = storageFor(engine, driver)!;
    const bs = await openProtocolNode(storage, (args.filename ?? args.url) as string, here);
    bs.detectZeroes = detectZeroes;
    bs.unmap = discardUnmap(args, prefix);
    engine.adopt(bs, storage, { name: nodeName });
    return bs;
  }

  const listDriver = findDriver(driver);
  if (listDriver?.childList) return openListBlockdev(engine, listDriver, args, prefix, here, detectZeroes);

  // A format node: first its file child, referenced or opened here.
  const fileRef = args.file as string | Args;
  let file: BlockNode;
  const fileIsOurs = isDict(fileRef);
  if (typeof fileRef === 'string') {
    file = engine.lookup(fileRef);
    // As QEMU: permissions are checked as the child is attached, before the read-only check of the open.
    engine.checkNewUse(file, { driver: findDriver(driver)!, options: args, readOnly: here.readOnly }, nodeName ?? '', 'file');
    if (!here.readOnly && file.readOnly) throw genericError('Block node is read-only', 'EPERM');
  } else {
    file = await openBlockdev(engine, fileRef, `${prefix}file.`, here);
  }
  const storage = engine.storageOf(file);
  if (!storage) throw genericError(`Node '${engine.nameOf(file)}' has no storage to open images from`);
  const driverOptions: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(args)) if (!NOT_DRIVER_OPTIONS.has(k)) driverOptions[k] = v;
  // Filters that join engine-wide objects (throttle's groups) find them here.
  if (findDriver(driver)?.kind === 'filter') {
    driverOptions.throttleGroups = engine.throttleGroups;
    driverOptions.lookupNode = (n: string) => engine.findNode(n);
  }

  let bs: BlockNode;
  const parentsBefore = [...file.parents];
  try {
    bs = await openFormatOn({ storage, warn: () => {} }, file, file.filename, {
      format: driver,
      readOnly: here.readOnly || (here.autoReadOnly && file.readOnly),
      driverOptions,
      nodeName,
    });
  } catch (e) {
    // openFormatOn attached the file before the driver failed: undo the edge, and close a file opened for it.
    file.parents.splice(0, file.parents.length, ...parentsBefore);
    if (fileIsOurs) await engine.closeTree(file);
    throw e;
  }
  let headerBacking: BlockNode | undefined;
  try {
    if (bs.driver.supportsBacking) {
      const backing = args.backing as string | Args | null | undefined;
      if (typeof backing === 'string') {
        const b = engine.lookup(backing);
        bs.attach(b, 'backing');
        bs.fullBackingFilename = b.filename;
      } else if (isDict(backing)) {
        const b = await openBlockdev(engine, backing, `${prefix}backing.`, { readOnly: true, autoReadOnly: here.autoReadOnly, forceShare: here.forceShare });
        bs.attach(b, 'backing');
        bs.fullBackingFilename = b.filename;
      } else if (backing === undefined && bs.backingFile) {
        headerBacking = await openHeaderBacking(bs, storage);
      }
    }
  } catch (e) {
    await engine.closeTree(bs);
    throw e;
  }
  bs.detectZeroes = detectZeroes;
  bs.unmap = discardUnmap(args, prefix);
  engine.adopt(bs, storage);
  if (headerBacking) engine.adopt(headerBacking, storage);
  return bs;
}

/**
 * A node whose children are a list (quorum's `children`): each entry a node
 * name or a nested BlockdevOptions dict, attached as data children
 * `children.N`. Its events (QUORUM_REPORT_BAD, QUORUM_FAILURE) go out on the
 * engine's event channel, as QEMU's monitor sends them.
 */
async function openListBlockdev(engine: Engine, drv: BlockDriver, args: Args, prefix: string, here: Inherited, detectZeroes: BlockNode['detectZeroes']): Promise<BlockNode> {
  const key = drv.childList!;
  const entries = args[key];
  if (!Array.isArray(entries)) throw genericError(`Invalid parameter type for '${prefix}${key}', expected: array`);
  const children: BlockNode[] = [];
  const ours: BlockNode[] = [];
  try {
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i] as unknown;
      if (typeof e === 'string') children.push(engine.lookup(e));
      else if (isDict(e)) {
        const c = await openBlockdev(engine, e as Args, `${prefix}${key}.${i}.`, here);
        ours.push(c);
        children.push(c);
      } else throw genericError(`Invalid parameter type for '${prefix}${key}.${i}', expected: dict`);
    }
  } catch (e) {
    for (const c of ours) await engine.closeTree(c);
    throw e;
  }
  const driverOptions: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(args)) if (!NOT_DRIVER_OPTIONS.has(k) && k !== key) driverOptions[k] = v;
  driverOptions.quorumEvents = (event: string, data: Record<string, unknown>) => engine.emit(event, data);
  const opts = { ...driverOptions, readOnly: here.readOnly };
  const named: Record<string, unknown> = { driver: drv.name, [key]: children.map((c) => c.filename) };
  for (const k of drv.strongRuntimeOpts ?? []) if (args[k] !== undefined) named[k] = args[k];
  const nodeName = args['node-name'] as string | undefined;
  const bs = new BlockNode(drv, `json:${qdictText(named)}`, opts, nodeName);
  children.forEach((c, i) => bs.attach(c, 'data', `${key}.${i}`));
  try {
    await drv.open(bs, opts);
  } catch (e) {
    bs.closed = true;
    bs.detachDataChildren();
    for (const c of ours) await engine.closeTree(c);
    throw e;
  }
  bs.detectZeroes = detectZeroes;
  bs.unmap = discardUnmap(args, prefix);
  const storage = children.map((c) => engine.storageOf(c)).find((x) => x);
  if (!storage) throw genericError(`Node '${engine.nameOf(children[0]!)}' has no storage to open images from`);
  engine.adopt(bs, storage);
  return bs;
}

export const blockdevCommands: QmpCommandTable = {
  'blockdev-add': {
    args: BLOCKDEV_BASE,
    openArgs: true,
    async run(engine, args) {
      if (typeof args['node-name'] !== 'string') throw genericError(`'node-name' must be specified for the root node`);
      const bs = await openBlockdev(engine, args, '', { readOnly: false, autoReadOnly: false });
      engine.adopt(bs, undefined, { owned: true });
    },
  },

  'blockdev-del': {
    args: { 'node-name': 'str' },
    async run(engine, args) {
      const name = args['node-name'] as string;
      const bs = engine.findNode(name);
      if (!bs) throw genericError(`Failed to find node with node-name='${name}'`, 'ENOENT');
      // QEMU's order: a BlockBackend on it (a device, a job's target), a job's op blocker, then ownership and other users.
      if (engine.deviceOf(bs) !== undefined || engine.usesOf(bs).some((u) => u.backend)) throw genericError(`Node ${name} is in use`, 'EBUSY');
      if (engine.usesOf(bs).some((u) => u.filterEdge)) throw genericError(`Block device ${name} is in use`, 'EBUSY');
      checkNotInJob(engine, bs);
      if (!engine.isMonitorOwned(bs)) throw genericError(`Node ${name} is not owned by the monitor`, 'EBUSY');
      if (bs.parents.length > 0) throw genericError(`Block device ${name} is in use`, 'EBUSY');
      await engine.closeTree(bs);
    },
  },
};
