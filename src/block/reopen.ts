/**
 * Reopening a node with new options (QEMU's bdrv_reopen with keep_old_opts,
 * as qemu-io's `reopen` uses it, and the read-only part that blockdev-reopen
 * shares).
 *
 * The options are flat QemuOpts keys: `lazy-refcounts=on` for the node,
 * `file.driver=file` / `backing.node-name=x` for its children by child name.
 * What is not given keeps its value. What a reopen can change: the
 * read-only flag (children inherit it, a backing node stays read-only), the
 * cache flags and the options a driver takes back through its
 * `reopenOptions` hook (qcow2's lazy-refcounts); anything else must keep its
 * value, else QEMU's "Cannot change the option 'X'". Every node is checked
 * before any changes, so a refused reopen changes nothing.
 */
import { BlockError } from './errors.js';
import type { BlockNode } from './node.js';
import { optBool, type OptionsTree } from './options-tree.js';

/** Switches `bs` alone; the caller orders children (writable before their parents, read-only after them). */
export async function reopenReadOnly(bs: BlockNode, readOnly: boolean): Promise<void> {
  if (bs.readOnly === readOnly) return;
  await bs.driver.reopen?.(bs, readOnly);
  bs.readOnly = readOnly;
}

/** QEMU's bdrv_runtime_opts booleans: parsed here, for every node. */
const GENERIC_BOOLS = ['read-only', 'auto-read-only', 'cache.direct', 'cache.no-flush', 'force-share'];
/** Generic options a reopen takes without a change being visible here. */
const GENERIC_OTHER = ['detect-zeroes', 'discard'];
/** Options inherited by every child unless given for it (QEMU's child_of_bds inherit_options). */
const INHERITED = ['cache.direct', 'cache.no-flush'];

interface NodeReopen {
  bs: BlockNode;
  readOnly: boolean;
  noFlush: boolean | undefined;
  /** The keys for the driver's reopenOptions hook. */
  driverOptions: Record<string, unknown>;
}

function bool(options: Record<string, unknown>, key: string): boolean | undefined {
  return optBool(options as OptionsTree, key);
}

function sameValue(a: unknown, b: unknown): boolean {
  if (a === undefined || b === undefined) return false;
  const norm = (v: unknown): string => (v === true ? 'on' : v === false ? 'off' : String(v));
  return norm(a) === norm(b);
}

/** Checks one node's options and, below it, its children's; pushes the plans in parent-first order. */
function plan(bs: BlockNode, options: Record<string, unknown>, inherited: Record<string, unknown>, out: NodeReopen[]): void {
  const own: Record<string, unknown> = {};
  const byChild = new Map<string, Record<string, unknown>>();
  const children = [bs.file, bs.backing].filter((c) => c !== null);
  for (const [key, value] of Object.entries(options)) {
    const dot = key.indexOf('.');
    const child = dot > 0 ? children.find((c) => c.name === key.slice(0, dot)) : undefined;
    if (child) {
      const sub = byChild.get(child.name) ?? {};
      sub[key.slice(dot + 1)] = value;
      byChild.set(child.name, sub);
    } else {
      own[key] = value;
    }
  }
  for (const key of GENERIC_BOOLS) bool(own, key);
  const merged = { ...inherited, ...own };
  for (const [key, value] of Object.entries(own)) {
    if (GENERIC_BOOLS.includes(key) || GENERIC_OTHER.includes(key)) continue;
    if (key === 'node-name') {
      if (value !== bs.nodeName) throw new BlockError('EINVAL', "Cannot change the option 'node-name'");
    } else if (key === 'driver') {
      if (value !== bs.driver.name) throw new BlockError('EINVAL', "Cannot change the option 'driver'");
    } else if (key === 'filename' && bs.driver.kind === 'protocol') {
      if (value !== bs.filename) throw new BlockError('EINVAL', "Cannot change the option 'filename'");
    } else if (!(bs.driver.reopenOptions && bs.driver.blockdevOptions && (key in bs.driver.blockdevOptions || `*${key}` in bs.driver.blockdevOptions))) {
      if (!sameValue(value, bs.options[key])) throw new BlockError('EINVAL', `Cannot change the option '${key}'`);
    }
  }
  const driverOptions: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(own)) {
    if (!GENERIC_BOOLS.includes(key) && !GENERIC_OTHER.includes(key) && key !== 'node-name' && key !== 'driver' && key !== 'filename') driverOptions[key] = value;
  }
  const readOnly = bool(merged, 'read-only') ?? bs.readOnly;
  if (!readOnly && bs.readOnly && bs.driver.kind === 'format' && !bs.driver.pwritev) {
    throw new BlockError('EINVAL', `Node '${bs.nodeName}' is read only`);
  }
  out.push({ bs, readOnly, noFlush: bool(merged, 'cache.no-flush'), driverOptions });
  for (const c of children) {
    const childInherited: Record<string, unknown> = {};
    for (const key of INHERITED) if (merged[key] !== undefined) childInherited[key] = merged[key];
    // A file child follows its parent's mode; a backing node stays read-only unless told otherwise.
    childInherited['read-only'] = c.role === 'backing' ? (c.node.readOnly ? 'on' : 'off') : readOnly ? 'on' : 'off';
    plan(c.node, byChild.get(c.name) ?? {}, childInherited, out);
  }
}

/**
 * Reopens `bs` (and the nodes below it) with `options` changed, the others
 * kept (QEMU's bdrv_reopen(bs, opts, keep_old_opts=true)). Throws a
 * BlockError with QEMU's message when an option cannot change; then nothing
 * changed.
 */
export async function bdrvReopen(bs: BlockNode, options: Record<string, unknown>): Promise<void> {
  const plans: NodeReopen[] = [];
  plan(bs, options, {}, plans);
  for (const p of plans) await p.bs.driver.reopenOptions?.(p.bs, p.driverOptions, { check: true });
  // Writable: children before their parents; read-only: parents before their children.
  for (const p of [...plans].reverse()) if (!p.readOnly) await reopenReadOnly(p.bs, false);
  for (const p of plans) {
    await p.bs.driver.reopenOptions?.(p.bs, p.driverOptions, { check: false });
    Object.assign(p.bs.options, p.driverOptions);
    if (p.noFlush !== undefined) p.bs.noFlush = p.noFlush;
    if (p.readOnly) await reopenReadOnly(p.bs, true);
  }
}
