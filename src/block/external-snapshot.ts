/**
 * External snapshots (QEMU's blockdev-snapshot-sync): a new overlay whose
 * backing file is the current image becomes the active node. Every parent
 * edge and backend that pointed at the old node now points at the overlay;
 * the old node becomes the overlay's backing and read-only. The overlay's
 * creation is the caller's (the format code lives above src/block); this
 * module only opens it and rewires the graph, and can undo both.
 */
import { BlockError } from './errors.js';
import type { BlockNode } from './node.js';
import type { BlockBackend } from './backend.js';
import { bdrvFlush } from './io.js';
import { closeNode, openImage, type Storage } from './open.js';

export interface ExternalSnapshot {
  overlay: BlockNode;
  old: BlockNode;
  /** Puts the old node back in place; the overlay is left without parents for the caller to close (and its file to remove). */
  undo(): Promise<void>;
}

/** Moves every parent edge and backend from `from` to `to` (QEMU's bdrv_replace_node), except `to`'s own edges. */
function replaceNode(from: BlockNode, to: BlockNode, backends: BlockBackend[]): void {
  for (const edge of [...from.parents]) {
    if (edge.parent === to) continue;
    edge.parent.replaceChild(edge, to);
  }
  for (const b of backends) if (b.root === from) b.root = to;
}

/**
 * Opens `overlayFilename` (already created with `old`'s image as backing file)
 * on `storage` and swaps it in above `old`.
 */
export async function externalSnapshot(
  storage: Storage,
  old: BlockNode,
  overlayFilename: string,
  format: string,
  backends: BlockBackend[],
  opts: { nodeName?: string } = {},
): Promise<ExternalSnapshot> {
  if (old.readOnly) throw new BlockError('EROFS', `${old.filename}: the node is read-only`);
  const overlay = await openImage(storage, overlayFilename, { format, readOnly: false, backing: false, nodeName: opts.nodeName });
  if (!overlay.driver.supportsBacking) {
    await closeNode(overlay);
    throw new BlockError('ENOTSUP', `The overlay does not support backing images (format ${format})`);
  }
  // Writes to the old node stop here: make them stable before it turns read-only.
  await bdrvFlush(old);
  replaceNode(old, overlay, backends);
  overlay.attach(old, 'backing');
  overlay.fullBackingFilename = old.filename;
  const wasReadOnly = old.readOnly;
  old.readOnly = true;
  return {
    overlay,
    old,
    async undo() {
      overlay.detach('backing');
      replaceNode(overlay, old, backends);
      old.readOnly = wasReadOnly;
    },
  };
}
