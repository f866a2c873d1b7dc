/**
 * Opening a node graph from an options tree (QEMU's bdrv_open with a QDict):
 * what qemu-img and qemu-io do with `json:{…}` names and `--image-opts`.
 *
 * Each dict is one node. A format or filter opens its child first — `file`
 * (or blkdebug's `image`): a nested dict, or a file name — then itself on
 * top; a protocol dict (`file`, `null-co`, …) is a leaf. A dict without a
 * driver is probed: at an image position (the top, a backing) the file is
 * opened and its format probed; at a child position it is the host file.
 * A file name with a protocol prefix (`blkdebug:CONF:IMG`, `null-co://`)
 * stands for that driver's options (src/block/options-tree.ts), wherever
 * it appears, so `-f qcow2 blkdebug::img.qcow2` puts blkdebug under qcow2.
 * A format's `backing` is a dict, or null for none; absent, the backing
 * file the image names is opened as usual.
 */
import { BlockError } from './errors.js';
import { loadDriver, type BlockDriver } from './driver.js';
import { closeNode, openFormatOn, openHeaderBacking, setOptionsNameOpener, type OpenContext, type Storage } from './open.js';
import { isTree, optBool, parseJsonName, parseProtocolFilename, qdictText, type OptionsTree } from './options-tree.js';
import { BlockNode } from './node.js';

export interface OpenTreeOptions {
  readOnly?: boolean;
  /** Open the backing chain the image names (default true). */
  backing?: boolean;
  /** The top node's format when the tree names none (qemu-img's -f); probed when both are absent. */
  format?: string;
  /** Extra options for the top node's driver (noIo, check). */
  driverOptions?: Record<string, unknown>;
  warn?: (message: string, kind?: 'report') => void;
}

/** Keys every node takes that are the block layer's business, not its driver's. */
const GENERIC = new Set([
  'driver', 'node-name', 'read-only', 'auto-read-only', 'force-share', 'discard', 'detect-zeroes', 'cache', 'aio', 'locking',
  'filename', 'file', 'image', 'backing', 'x-image',
]);

type Position = 'image' | 'child';

/** Protocols the storage opens by name (curl's drivers name theirs `url`). */
const HOST_PROTOCOLS = new Set(['file', 'host_device', 'host_cdrom', 'http', 'https']);

/** Opens the graph `tree` describes; the top node is returned with its children attached. */
export async function openTree(storage: Storage, tree: OptionsTree, options: OpenTreeOptions = {}): Promise<BlockNode> {
  const ctx: OpenContext = { storage, warn: options.warn ?? (() => {}) };
  return openNode(ctx, tree, 'image', options.readOnly ?? false, options, true);
}

/** Resolves a protocol prefix in `filename` into the dict it stands for. */
function expandFilename(t: OptionsTree, pos: Position): OptionsTree {
  if (typeof t.filename !== 'string') return t;
  const p = parseProtocolFilename(t.filename);
  // At an image position with no driver, or under another driver, the name is the file's: expanded when the file is opened.
  if (!p || (t.driver === undefined ? pos === 'image' : t.driver !== p.driver)) return t;
  const { filename: _, ...rest } = t;
  if (p.driver === 'blkdebug' && isTree(rest.image)) {
    // blkdebug:CONF:IMG with image.* options: IMG is the image's file name.
    return { ...p, ...rest, image: { filename: p.image as string, ...rest.image } };
  }
  return { ...rest, ...p };
}

async function openNode(
  ctx: OpenContext,
  tree: OptionsTree,
  pos: Position,
  inheritedReadOnly: boolean,
  top: OpenTreeOptions,
  isTop: boolean,
): Promise<BlockNode> {
  const format = tree.driver === undefined && isTop ? top.format : undefined;
  const t = expandFilename(format ? { ...tree, driver: format } : tree, pos);
  const readOnly = optBool(t, 'read-only') ?? inheritedReadOnly;
  const driverName = typeof t.driver === 'string' ? t.driver : undefined;
  const drv = driverName !== undefined ? await loadDriver(driverName) : undefined;
  if (driverName !== undefined && !drv && !HOST_PROTOCOLS.has(driverName)) {
    throw new BlockError('EINVAL', `Unknown driver '${driverName}'`);
  }

  // A leaf: a protocol named, or a bare file name at a child position.
  const isProtocol = drv ? drv.kind === 'protocol' : HOST_PROTOCOLS.has(driverName ?? '') || (driverName === undefined && pos === 'child');
  if (isProtocol) return openProtocolNode(ctx, driverName ?? 'file', t, readOnly);
  if (drv?.childList) return openListNode(ctx, drv, t, readOnly, top);

  // A format or filter (or a format to probe): its child first.
  const childKey = driverName === 'blkdebug' ? 'image' : 'file';
  let child = t[childKey];
  if (child === undefined && typeof t.filename === 'string') child = t.filename;
  if (childKey === 'image' && typeof t['x-image'] === 'string') child = isTree(child) ? { filename: t['x-image'], ...child } : t['x-image'];
  if (child === undefined) throw new BlockError('EINVAL', `A block device must be specified for "${childKey}"`);
  let childTree: OptionsTree = typeof child === 'string' ? { filename: child } : isTree(child) ? child : {};
  // A name given beside `file.*` options is the file's (qemu-io -o file.align=… NAME).
  if (isTree(child) && childTree.filename === undefined && typeof t.filename === 'string') childTree = { filename: t.filename, ...childTree };
  if (!isTree(child) && typeof child !== 'string') throw new BlockError('EINVAL', `Invalid parameter type for '${childKey}', expected: dict or string`);
  // cache.direct is inherited by the child unless it sets its own, as QEMU's cache options are.
  const direct = isTree(t.cache) ? t.cache.direct : undefined;
  if (direct !== undefined && !(isTree(childTree.cache) && childTree.cache.direct !== undefined)) {
    childTree = { ...childTree, cache: { ...(isTree(childTree.cache) ? childTree.cache : {}), direct } };
  }
  const childNode = await openNode(ctx, childTree, 'child', readOnly, top, false);

  const driverOptions: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(t)) {
    if (GENERIC.has(k)) continue;
    // Drivers that take option groups read them whole (blkdebug's inject-error.N) or by dotted key (encrypt.key-secret).
    driverOptions[k] = v;
    if (isTree(v)) flattenInto(driverOptions, k, v);
  }
  if (isTop) Object.assign(driverOptions, top.driverOptions);
  // A data file given as a tree (a filter over it, as iotest 289's blkdebug) is opened here and handed over as a node.
  let dataNode: BlockNode | undefined;
  if (isTree(t['data-file'])) {
    try {
      dataNode = await openNode(ctx, t['data-file'], 'child', readOnly, top, false);
    } catch (e) {
      await closeNode(childNode);
      throw e;
    }
    driverOptions['data-file'] = dataNode;
  }
  let bs: BlockNode;
  try {
    bs = await openFormatOn(ctx, childNode, childNode.filename, {
      format: driverName,
      readOnly,
      driverOptions,
      nodeName: typeof t['node-name'] === 'string' ? t['node-name'] : undefined,
    });
  } catch (e) {
    await closeNode(childNode);
    if (dataNode) await closeNode(dataNode);
    throw e;
  }
  try {
    if (bs.driver.supportsBacking) await openBackingOf(ctx, bs, t, top);
  } catch (e) {
    await closeNode(bs);
    throw e;
  }
  return bs;
}

/**
 * The entries of a list option (`children`): an array, or a dict whose keys
 * are exactly 0..n-1 (--image-opts' `children.0.…`); absent, none.
 */
function listEntries(v: unknown, key: string): unknown[] {
  if (v === undefined) return [];
  if (Array.isArray(v)) return v;
  if (isTree(v)) {
    const keys = Object.keys(v);
    if (keys.every((k) => /^\d+$/.test(k) && Number(k) < keys.length)) return keys.map((_, i) => v[String(i)]);
  }
  throw new BlockError('EINVAL', `Option ${key} is not a valid array`);
}

/**
 * A node whose children are a list (quorum): each entry opens as an image
 * (its format probed unless named) and is attached as `<key>.N`, role
 * `data`; then the driver opens on top. The node's name is its json:
 * options, as QEMU names a node no plain file name reopens.
 */
async function openListNode(ctx: OpenContext, drv: BlockDriver, t: OptionsTree, readOnly: boolean, top: OpenTreeOptions): Promise<BlockNode> {
  const key = drv.childList!;
  const entries = listEntries(t[key], key);
  const children: BlockNode[] = [];
  try {
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      if (typeof e === 'string') throw new BlockError('ENOENT', `Cannot find device='${e}' nor node-name='${e}'`);
      if (!isTree(e)) throw new BlockError('EINVAL', `Invalid parameter type for '${key}.${i}', expected: dict`);
      children.push(await openNode(ctx, e, 'image', readOnly, { ...top, format: undefined }, false));
    }
  } catch (e) {
    for (const c of children) await closeNode(c);
    throw e;
  }
  const driverOptions: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(t)) if (!GENERIC.has(k) && k !== key) driverOptions[k] = v;
  const opts = { ...driverOptions, readOnly };
  const named: Record<string, unknown> = { driver: drv.name, [key]: entries };
  for (const k of drv.strongRuntimeOpts ?? []) if (t[k] !== undefined) named[k] = t[k];
  const bs = new BlockNode(drv, `json:${qdictText(named)}`, opts, typeof t['node-name'] === 'string' ? t['node-name'] : undefined);
  children.forEach((c, i) => bs.attach(c, 'data', `${key}.${i}`));
  try {
    await drv.open(bs, opts);
  } catch (e) {
    bs.closed = true;
    for (const c of bs.detachDataChildren()) await closeNode(c);
    throw e;
  }
  return bs;
}

/**
 * A driver's option groups (`encrypt.key-secret`, `overlap-check.l2`) as the
 * dotted keys drivers read, as QEMU flattens a node's options for its driver.
 */
function flattenInto(out: Record<string, unknown>, key: string, v: unknown): void {
  if (isTree(v)) for (const [k, w] of Object.entries(v)) flattenInto(out, `${key}.${k}`, w);
  else out[key] = v;
}

async function openBackingOf(ctx: OpenContext, bs: BlockNode, t: OptionsTree, top: OpenTreeOptions): Promise<void> {
  const backing = t.backing;
  if (backing === null) return;
  if (isTree(backing) && backing.file === undefined && backing.filename === undefined && bs.backingFile) {
    // Only options for the backing file the header names (`backing.driver`, its key secret): opened with them.
    if (typeof backing.driver === 'string') bs.backingFormat = backing.driver;
    const given: Record<string, unknown> = {};
    flattenInto(given, 'backing', backing);
    for (const [k, v] of Object.entries(given)) if (k !== 'backing.driver') bs.options[k] = v;
    await openHeaderBacking(ctx, bs);
    if (bs.backing && typeof backing['node-name'] === 'string') nameNode(bs.backing.node, backing['node-name']);
    return;
  }
  if (isTree(backing) || typeof backing === 'string') {
    const b = await openNode(ctx, isTree(backing) ? backing : { filename: backing }, 'image', true, top, false);
    bs.attach(b, 'backing');
    bs.fullBackingFilename = b.filename;
    return;
  }
  if (top.backing !== false && bs.backingFile) await openHeaderBacking(ctx, bs);
}

/** Gives a node opened by a storage or from a header the node-name its options ask for. */
function nameNode(bs: BlockNode, name: string): void {
  (bs as { nodeName: string }).nodeName = name;
}

async function openProtocolNode(ctx: OpenContext, driver: string, t: OptionsTree, readOnly: boolean): Promise<BlockNode> {
  const drv = await loadDriver(driver);
  if (drv?.standalone) {
    // A protocol with no storage behind it (null-co): its options are all it needs.
    const name = typeof t.filename === 'string' ? t.filename : `${driver}://`;
    const opts = { ...t, readOnly };
    const bs = new BlockNode(drv, name, opts);
    await drv.open(bs, opts);
    return bs;
  }
  const filename = t.filename ?? t.url;
  if (typeof filename !== 'string') throw new BlockError('EINVAL', `The '${driver}' block driver requires a file name`);
  try {
    const bs = await ctx.storage.openProtocol(filename, { readOnly });
    if (typeof t['node-name'] === 'string') nameNode(bs, t['node-name']);
    // O_DIRECT (cache.direct=on) makes a host file's requests sector-aligned (QEMU probes at least 512).
    if (bs.driver.name === 'file' && isTree(t.cache) && optBool(t.cache, 'direct')) {
      bs.limits = { ...bs.limits, requestAlignment: Math.max(bs.limits.requestAlignment, 512) };
    }
    return bs;
  } catch (e) {
    if (e instanceof BlockError) throw e;
    throw new BlockError('EIO', `Could not open '${filename}': ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
}

// Backing names that stand for options (a json:{…} name stored in an image header) open through the tree.
setOptionsNameOpener((ctx, name, format) => {
  let tree: OptionsTree;
  if (name.startsWith('json:')) tree = parseJsonName(name);
  else if (parseProtocolFilename(name) && !name.startsWith('file:')) tree = { filename: name };
  else return undefined;
  return openNode(ctx, tree, 'image', true, { format, backing: true }, true);
});
