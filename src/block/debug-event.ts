/**
 * Debug events (QEMU's BLKDBG_EVENT): named points in a driver's work — an
 * L2 table loaded, a refcount block allocated, a write reaching the file —
 * that a fault-injection filter below can act on (src/filters/blkdebug.ts).
 *
 * A driver raises an event on the child it is about to touch
 * (`await blkdbgEvent(bs.file, 'l2_load')`); the request path raises the
 * write events on the node written. The hook costs one property look-up
 * unless the node's driver listens (only blkdebug does). A listening driver
 * may hold the caller (a breakpoint), so events are awaited.
 *
 * Breakpoints (qemu-io's break / resume / wait_break / remove_break) go to
 * the first node down the file chain whose driver takes them, as QEMU's
 * bdrv_debug_breakpoint looks for one.
 */
import { BlockError } from './errors.js';
import type { BdrvChild } from './child.js';
import type { BlockNode } from './node.js';

/** Every event name, as QAPI's BlkdebugEvent spells them. */
export const BLKDBG_EVENTS = [
  'l1_update', 'l1_grow_alloc_table', 'l1_grow_write_table', 'l1_grow_activate_table',
  'l2_load', 'l2_update', 'l2_update_compressed', 'l2_alloc_cow_read', 'l2_alloc_write',
  'read_aio', 'read_backing_aio', 'read_compressed', 'write_aio', 'write_compressed',
  'vmstate_load', 'vmstate_save', 'cow_read', 'cow_write',
  'reftable_load', 'reftable_grow', 'reftable_update',
  'refblock_load', 'refblock_update', 'refblock_update_part', 'refblock_alloc', 'refblock_alloc_hookup',
  'refblock_alloc_write', 'refblock_alloc_write_blocks', 'refblock_alloc_write_table', 'refblock_alloc_switch_table',
  'cluster_alloc', 'cluster_alloc_bytes', 'cluster_free', 'flush_to_os', 'flush_to_disk',
  'pwritev_rmw_head', 'pwritev_rmw_after_head', 'pwritev_rmw_tail', 'pwritev_rmw_after_tail',
  'pwritev', 'pwritev_zero', 'pwritev_done', 'empty_image_prepare',
  'l1_shrink_write_table', 'l1_shrink_free_l2_clusters', 'cor_write', 'cluster_alloc_space', 'none',
] as const;

export type BlkdebugEvent = (typeof BLKDBG_EVENTS)[number];

export function isBlkdebugEvent(name: string): name is BlkdebugEvent {
  return (BLKDBG_EVENTS as readonly string[]).includes(name);
}

/** What a driver that listens to events implements (blkdebug). */
export interface DebugEventDriver {
  debugEvent(bs: BlockNode, event: BlkdebugEvent): Promise<void> | undefined;
  debugBreakpoint(bs: BlockNode, event: string, tag: string): void;
  debugRemoveBreakpoint(bs: BlockNode, tag: string): void;
  debugResume(bs: BlockNode, tag: string): void;
  debugIsSuspended(bs: BlockNode, tag: string): boolean;
}

function listener(bs: BlockNode | null | undefined): DebugEventDriver | undefined {
  const drv = bs?.driver as Partial<DebugEventDriver> | undefined;
  return drv?.debugEvent ? (drv as DebugEventDriver) : undefined;
}

/** Raises `event` on `bs` (a no-op unless its driver listens). */
export function bdrvDebugEvent(bs: BlockNode | null | undefined, event: BlkdebugEvent): Promise<void> | undefined {
  const l = listener(bs);
  return l ? l.debugEvent(bs!, event) : undefined;
}

/** Raises `event` on the node under `child` (QEMU's BLKDBG_EVENT(child, …)). */
export function blkdbgEvent(child: BdrvChild | null | undefined, event: BlkdebugEvent): Promise<void> | undefined {
  return child ? bdrvDebugEvent(child.node, event) : undefined;
}

/** The node that takes breakpoints: `bs` or the first one down its file children. */
function breakpointNode(bs: BlockNode): [BlockNode, DebugEventDriver] {
  for (let n: BlockNode | null = bs; n; n = n.file?.node ?? null) {
    const l = listener(n);
    if (l) return [n, l];
  }
  throw new BlockError('ENOTSUP', 'Operation not supported');
}

export function bdrvDebugBreakpoint(bs: BlockNode, event: string, tag: string): void {
  const [n, l] = breakpointNode(bs);
  l.debugBreakpoint(n, event, tag);
}

export function bdrvDebugRemoveBreakpoint(bs: BlockNode, tag: string): void {
  const [n, l] = breakpointNode(bs);
  l.debugRemoveBreakpoint(n, tag);
}

export function bdrvDebugResume(bs: BlockNode, tag: string): void {
  const [n, l] = breakpointNode(bs);
  l.debugResume(n, tag);
}

export function bdrvDebugIsSuspended(bs: BlockNode, tag: string): boolean {
  for (let n: BlockNode | null = bs; n; n = n.file?.node ?? null) {
    const l = listener(n);
    if (l) return l.debugIsSuspended(n, tag);
  }
  return false;
}

// ------------------------------------------------------------ suspensions

/** Where breakpoint messages go ("blkdebug: Suspended request 'A'"): QEMU prints them on stdout; qemu-io points this at its output. */
let messageSink: (line: string) => void = (line) => console.log(line);
export function setDebugMessageSink(sink: (line: string) => void): void {
  messageSink = sink;
}
export function debugMessage(line: string): void {
  messageSink(line);
}

const suspendWatchers = new Set<() => void>();

/** Called by a driver that holds a request at a breakpoint. */
export function notifyRequestSuspended(): void {
  for (const w of [...suspendWatchers]) w();
}

/**
 * Called by the request path when a request must wait for another one in
 * flight (a serialising read-modify-write, a cluster allocation): like a
 * held request, it cannot go on by itself, so an aio command returns.
 */
export function notifyRequestWaiting(): void {
  if (suspendWatchers.size) notifyRequestSuspended();
}

/**
 * Runs `request` until it completes, a breakpoint holds a request or a
 * request waits for another one (qemu-io's aio commands return once their
 * request is submitted and yields; a held request completes later, after
 * `resume`). Resolves to true when the request is still running.
 */
export async function untilDoneOrSuspended(request: Promise<unknown> | (() => Promise<unknown>)): Promise<boolean> {
  let watcher!: () => void;
  const suspended = new Promise<boolean>((r) => suspendWatchers.add((watcher = () => r(true))));
  try {
    // Given a function, the request starts with the watcher in place: it may yield before its first await.
    const running = typeof request === 'function' ? request() : request;
    return await Promise.race([running.then(() => false), suspended]);
  } finally {
    suspendWatchers.delete(watcher);
  }
}
