/**
 * QEMU's permission system, for the graphs blocktab builds: each use of a
 * node (a parent's edge, a device) takes permissions (consistent read,
 * write, write unchanged, resize) and shares some with the other users; a
 * new use that takes what another does not share, or does not share what
 * another takes, is refused with QEMU 7.2's message.
 *
 * What a parent takes on its child follows QEMU's default child permissions
 * (bdrv_default_perms): a format takes consistent read on its file, plus
 * write and resize when writable, and shares only reads (its metadata must
 * not change under it); a filter (and raw, whose file QEMU treats as a
 * filtered child) passes on what its own users take and share; a backing
 * edge takes consistent read when the parent's users do and shares write
 * only when they do.
 */
import type { BlockNode } from './node.js';
import type { ChildRole } from './child.js';
import { PERM_CONSISTENT_READ, PERM_RESIZE, PERM_WRITE, PERM_WRITE_UNCHANGED } from './child.js';

export const PERM_ALL = PERM_CONSISTENT_READ | PERM_WRITE | PERM_WRITE_UNCHANGED | PERM_RESIZE;

export interface PermPair {
  perm: number;
  shared: number;
}

/** One use of a node, for the messages: who uses it and through which role. */
export interface NodeUse extends PermPair {
  /** "node 'x'" or "block device 'd0'". */
  who: string;
  /** 'file', 'backing', 'root'… */
  role: string;
  /** What the use is (an edge, a job's use): lets a permission update find its own entry. */
  key?: object;
  /** A BlockBackend's use (a device, a job's target backend): blockdev-del says "in use". */
  backend?: boolean;
  /** The child edge of a node a job inserts (backup's copy-before-write filter): a reference that keeps blockdev-del off. */
  filterEdge?: boolean;
}

const NAMES: [number, string][] = [
  [PERM_CONSISTENT_READ, 'consistent read'],
  [PERM_WRITE, 'write'],
  [PERM_WRITE_UNCHANGED, 'write unchanged'],
  [PERM_RESIZE, 'resize'],
];

/** QEMU's bdrv_perm_names: "write, resize". */
export function permNames(perm: number): string {
  return NAMES.filter(([bit]) => perm & bit)
    .map(([, n]) => n)
    .join(', ');
}

/** What childPerms needs of a parent (a node, or the one blockdev-add is about to open). */
export type PermParent = Pick<BlockNode, 'driver' | 'options' | 'readOnly'>;

/** Whether the parent passes its users' permissions straight through to `role` (filters; raw's file). */
function passesThrough(parent: PermParent, role: ChildRole): boolean {
  if (role !== 'file') return false;
  if (parent.driver.kind === 'filter') return true;
  return parent.driver.name === 'raw' && parent.options.offset === undefined && parent.options.size === undefined;
}

/** What `parent`, whose own users add up to `cum`, takes and shares on its child in `role`. */
export function childPerms(parent: PermParent, role: ChildRole, cum: PermPair): PermPair {
  if (passesThrough(parent, role)) return { ...cum };
  if (role === 'backing') {
    return {
      perm: cum.perm & PERM_CONSISTENT_READ,
      shared: (cum.shared & PERM_WRITE ? PERM_WRITE | PERM_RESIZE : 0) | PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED,
    };
  }
  return {
    perm: PERM_CONSISTENT_READ | (parent.readOnly ? 0 : PERM_WRITE | PERM_RESIZE) | (cum.perm & PERM_WRITE_UNCHANGED),
    shared: PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED,
  };
}

/** The sum of uses: every permission taken, only what all share (nothing uses it: nothing taken, all shared). */
export function cumulative(uses: PermPair[]): PermPair {
  let perm = 0;
  let shared = PERM_ALL;
  for (const u of uses) {
    perm |= u.perm;
    shared &= u.shared;
  }
  return { perm, shared };
}

const conflictMessage = (nodeName: string, req: NodeUse, uns: NodeUse, bits: number) =>
  `Permission conflict on node '${nodeName}': permissions '${permNames(bits)}' are both required by ${req.who} (uses node '${nodeName}' as '${req.role}' child) and unshared by ${uns.who} (uses node '${nodeName}' as '${uns.role}' child).`;

/**
 * The error for a node whose users (newest first) do not agree, or null: QEMU's
 * bdrv_parent_perms_conflict, every pair (a, b) in list order, "b requires
 * what a does not share". Used after one user's permissions changed.
 */
export function usesConflict(nodeName: string, uses: NodeUse[]): string | null {
  for (const a of uses) {
    for (const b of uses) {
      if (a !== b && b.perm & ~a.shared) return conflictMessage(nodeName, b, a, b.perm & ~a.shared);
    }
  }
  return null;
}

/**
 * The error for adding `added` to a node that `existing` already use, or
 * null when they agree (QEMU's bdrv_parent_perms_conflict). `existing`
 * is newest first, as QEMU's parent list.
 */
export function permConflict(nodeName: string, existing: NodeUse[], added: NodeUse): string | null {
  const say = (req: NodeUse, uns: NodeUse, bits: number) => conflictMessage(nodeName, req, uns, bits);
  // QEMU walks pairs (a, b) in list order, the new use first: first what the new use does not share, then what it takes.
  for (const e of existing) if (e.perm & ~added.shared) return say(e, added, e.perm & ~added.shared);
  for (const e of existing) if (added.perm & ~e.shared) return say(added, e, added.perm & ~e.shared);
  return null;
}
