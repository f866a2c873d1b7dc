/**
 * Before- and after-write notifiers (the part of QEMU's copy-before-write filter that
 * matters without a graph change): a job registers a hook on a node, and
 * every write, write-zeroes or discard that is about to change the node's
 * guest-visible data waits for the hooks first. A backup job uses it to copy
 * the old contents of the range to its target before the new data lands.
 *
 * io.ts calls `beforeWrite` after a request's checks and before it reaches
 * the driver, and `afterWrite` once it landed, before the caller hears of it
 * (a mirror in copy-mode=write-blocking copies the range to its target
 * there, so a guest write completes only when both sides have it). Hooks run in registration order; a hook that throws fails the
 * guest write (QEMU's on-cbw-error=break-guest-write) unless it swallows the
 * error itself (the backup job does: it fails the job, not the guest).
 */
import type { BlockNode } from './node.js';

export type BeforeWriteHook = (offset: number, bytes: number) => Promise<void>;

const hooks = new WeakMap<BlockNode, Set<BeforeWriteHook>>();

/** Calls `hook` before every write to `bs` from now on; returns the function that removes it. */
export function addBeforeWriteHook(bs: BlockNode, hook: BeforeWriteHook): () => void {
  let set = hooks.get(bs);
  if (!set) hooks.set(bs, (set = new Set()));
  set.add(hook);
  return () => {
    set.delete(hook);
    if (set.size === 0) hooks.delete(bs);
  };
}

/** Whether anything must run before a write to `bs` (the fast path asks this first). */
export function hasBeforeWriteHooks(bs: BlockNode): boolean {
  return hooks.has(bs);
}

/** Runs the hooks of `bs` for [offset, offset + bytes). */
export async function beforeWrite(bs: BlockNode, offset: number, bytes: number): Promise<void> {
  const set = hooks.get(bs);
  if (!set) return;
  for (const h of [...set]) await h(offset, bytes);
}

const afterHooks = new WeakMap<BlockNode, Set<BeforeWriteHook>>();

/** Calls `hook` after every write to `bs` lands, before the write completes; returns the function that removes it. */
export function addAfterWriteHook(bs: BlockNode, hook: BeforeWriteHook): () => void {
  let set = afterHooks.get(bs);
  if (!set) afterHooks.set(bs, (set = new Set()));
  set.add(hook);
  return () => {
    set.delete(hook);
    if (set.size === 0) afterHooks.delete(bs);
  };
}

export function hasAfterWriteHooks(bs: BlockNode): boolean {
  return afterHooks.has(bs);
}

/** Runs the after-write hooks of `bs` for [offset, offset + bytes). */
export async function afterWrite(bs: BlockNode, offset: number, bytes: number): Promise<void> {
  const set = afterHooks.get(bs);
  if (!set) return;
  for (const h of [...set]) await h(offset, bytes);
}
