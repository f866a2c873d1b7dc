/**
 * qemu-img snapshot as functions over any node (QEMU's block/snapshot.c):
 * list, create, apply and delete through the format driver's snapshot hooks.
 * A driver without the hook answers ENOTSUP, as QEMU's bdrv_snapshot_* do.
 */
import { BlockError, describeCode, isBlockError, type BlockErrorCode } from '../block/errors.js';
import type { BlockNode } from '../block/node.js';
import type { SnapshotInfo } from '../block/info.js';

/** Errno numbers qemu-img prints ("-95 (Operation not supported)"). */
const ERRNO: Partial<Record<BlockErrorCode, number>> = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  EINVAL: 22,
  EFBIG: 27,
  ENOSPC: 28,
  EROFS: 30,
  ELOOP: 40,
  ENOTSUP: 95,
  ECANCELED: 125,
};

export function errnoOf(code: BlockErrorCode): number {
  return ERRNO[code] ?? 5;
}

function codeOf(e: unknown): BlockErrorCode {
  return isBlockError(e) ? e.code : 'EIO';
}

/** QEMU's bdrv_snapshot_list (an image without snapshot support has none). */
export function listSnapshots(bs: BlockNode): SnapshotInfo[] {
  return bs.driver.listSnapshots?.(bs) ?? [];
}

/** QEMU's bdrv_snapshot_find: the first snapshot with this name. */
export function findSnapshotByName(bs: BlockNode, name: string): SnapshotInfo | undefined {
  return listSnapshots(bs).find((sn) => sn.name === name);
}

function unsupported(bs: BlockNode, what: string): BlockError {
  return new BlockError('ENOTSUP', `${bs.filename}: the ${bs.driver.name} format does not support internal snapshots (${what})`);
}

export interface CreateSnapshotOptions {
  vmStateSize?: number;
  dateSec?: number;
  dateNsec?: number;
  vmClockNsec?: number;
  /** undefined: not recorded; qemu-img records 0. */
  icount?: number;
}

/** bdrv_snapshot_create. Duplicate names are allowed, as in qemu-img 7.2 (the QMP command refuses them). */
export async function createSnapshot(bs: BlockNode, name: string, opts: CreateSnapshotOptions = {}): Promise<SnapshotInfo> {
  if (!bs.driver.createSnapshot) throw unsupported(bs, 'create');
  await bs.driver.createSnapshot(bs, { name, ...opts });
  const list = listSnapshots(bs);
  return list[list.length - 1]!;
}

/** bdrv_snapshot_goto: by id, then by name. */
export async function applySnapshot(bs: BlockNode, idOrName: string): Promise<void> {
  if (!bs.driver.applySnapshot) throw unsupported(bs, 'apply');
  await bs.driver.applySnapshot(bs, idOrName);
}

/** bdrv_snapshot_delete: the snapshot matching both when both are given. */
export async function deleteSnapshot(bs: BlockNode, id: string | undefined, name: string | undefined): Promise<void> {
  if (!bs.driver.deleteSnapshot) throw unsupported(bs, 'delete');
  await bs.driver.deleteSnapshot(bs, id, name);
}

/**
 * The qemu-img operation with its messages: 'create' → "Could not create
 * snapshot 'N': -27 (File too large)", 'apply' → "Could not apply snapshot
 * 'N': Failed to load snapshot: No such file or directory", 'delete' by name
 * → "Could not delete snapshot 'N': snapshot not found".
 */
export async function imgSnapshot(bs: BlockNode, action: 'create' | 'apply' | 'delete', name: string): Promise<void> {
  if (action === 'create') {
    try {
      // qemu-img copies the name into QEMUSnapshotInfo's 256-byte buffer.
      await createSnapshot(bs, truncateUtf8(name, 255), { icount: 0 });
    } catch (e) {
      const code = codeOf(e);
      throw new BlockError(code, `Could not create snapshot '${name}': -${errnoOf(code)} (${describeCode(code)})`, { cause: e });
    }
    return;
  }
  if (action === 'apply') {
    try {
      await applySnapshot(bs, name);
    } catch (e) {
      const code = codeOf(e);
      throw new BlockError(code, `Could not apply snapshot '${name}': Failed to load snapshot: ${describeCode(code)}`, { cause: e });
    }
    return;
  }
  const sn = findSnapshotByName(bs, name);
  if (!sn) throw new BlockError('ENOENT', `Could not delete snapshot '${name}': snapshot not found`);
  try {
    await deleteSnapshot(bs, sn.id, sn.name);
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw new BlockError(codeOf(e), `Could not delete snapshot '${name}': ${why}`, { cause: e });
  }
}

/** The longest prefix of `s` that fits in `max` UTF-8 bytes (pstrcpy semantics, on character boundaries). */
function truncateUtf8(s: string, max: number): string {
  const enc = new TextEncoder();
  if (enc.encode(s).length <= max) return s;
  let out = '';
  let n = 0;
  for (const ch of s) {
    const len = enc.encode(ch).length;
    if (n + len > max) break;
    out += ch;
    n += len;
  }
  return out;
}

/**
 * QEMU's bdrv_snapshot_load_tmp: a read-only node shows the internal snapshot
 * `idOrName` from now on (qemu-img convert -l; blocktab ls/cat --snapshot).
 * Nothing is written. A format without internal snapshots answers ENOTSUP.
 */
export async function snapshotLoadTmp(bs: BlockNode, idOrName: string): Promise<void> {
  if (!bs.driver.snapshotLoadTmp) {
    throw new BlockError('ENOTSUP', `${bs.filename}: the ${bs.driver.name} format has no internal snapshots (snapshot '${idOrName}')`);
  }
  await bs.driver.snapshotLoadTmp(bs, idOrName);
}
