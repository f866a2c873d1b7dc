/**
 * Edges of the block graph (QEMU's BdrvChild): a parent node reaches a child
 * through a named edge with a role and the permissions the parent needs.
 *
 * Formats see only their edges (`bs.file`, `bs.backing`, `bs.dataFile`, `bs.dataChildren`), never
 * the concrete storage driver behind them.
 */
import type { BlockNode } from './node.js';

/**
 * `data`: one of a list of children that each hold the node's data (QEMU's
 * BDRV_CHILD_DATA without PRIMARY: quorum's `children.N`), kept in
 * `bs.dataChildren` in order.
 */
export type ChildRole = 'file' | 'backing' | 'data-file' | 'data';

/** Permissions a parent takes on a child (QEMU's BLK_PERM_*), as bit flags. */
export const PERM_CONSISTENT_READ = 0x01;
export const PERM_WRITE = 0x02;
export const PERM_WRITE_UNCHANGED = 0x04;
export const PERM_RESIZE = 0x08;

export class BdrvChild {
  constructor(
    readonly parent: BlockNode,
    readonly name: string,
    readonly role: ChildRole,
    readonly node: BlockNode,
    public perm: number,
  ) {}
}
