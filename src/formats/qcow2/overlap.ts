/**
 * Metadata overlap protection, as QEMU's qcow2_check_metadata_overlap and
 * qcow2_pre_write_overlap_check: before the driver writes to the image file,
 * the range is compared with every kind of metadata the `overlap-check`
 * option enables. A hit means the refcounts call a cluster free that the
 * tables use (a corrupt or crafted image): the image is marked corrupt and the
 * write fails with EIO, so the write never lands on the header or a table.
 *
 *   kind (bit)            QEMU's name in messages   checked by template
 *   main-header      0    qcow2_header              constant cached all
 *   active-l1        1    active L1 table           constant cached all
 *   active-l2        2    active L2 table                    cached all
 *   refcount-table   3    refcount table            constant cached all
 *   refcount-block   4    refcount block                     cached all
 *   snapshot-table   5    snapshot table            constant cached all
 *   inactive-l1      6    inactive L1 table                  cached all
 *   inactive-l2      7    inactive L2 table                         all  (reads the snapshots' L1 tables)
 *   bitmap-directory 8    bitmap directory          constant cached all
 *
 * The option is QEMU's: `overlap-check=none|constant|cached|all` (default
 * cached), or `overlap-check.template=...` with per-kind booleans
 * `overlap-check.<kind>=on|off` that override the template.
 */
import { BlockError } from '../../block/errors.js';
import { allocBuffer, freeBuffer } from '../../block/buffers.js';
import { bdrvPread } from '../../block/io.js';
import { QCOW2_EXT_MAGIC_BITMAPS } from './header.js';
import { decodeReftable } from './refcount-codec.js';
import { serializeSnapshotTable, validateSnapshotL1 } from './snapshot-table.js';
import { l1Offset, type Qcow2State } from './state.js';
import { l1EntryOffset } from './l2-entry.js';

export const QCOW2_OL_MAIN_HEADER = 1 << 0;
export const QCOW2_OL_ACTIVE_L1 = 1 << 1;
export const QCOW2_OL_ACTIVE_L2 = 1 << 2;
export const QCOW2_OL_REFCOUNT_TABLE = 1 << 3;
export const QCOW2_OL_REFCOUNT_BLOCK = 1 << 4;
export const QCOW2_OL_SNAPSHOT_TABLE = 1 << 5;
export const QCOW2_OL_INACTIVE_L1 = 1 << 6;
export const QCOW2_OL_INACTIVE_L2 = 1 << 7;
export const QCOW2_OL_BITMAP_DIRECTORY = 1 << 8;
export const QCOW2_OL_NONE = 0;
export const QCOW2_OL_CONSTANT = QCOW2_OL_MAIN_HEADER | QCOW2_OL_ACTIVE_L1 | QCOW2_OL_REFCOUNT_TABLE | QCOW2_OL_SNAPSHOT_TABLE | QCOW2_OL_BITMAP_DIRECTORY;
export const QCOW2_OL_CACHED = QCOW2_OL_CONSTANT | QCOW2_OL_ACTIVE_L2 | QCOW2_OL_REFCOUNT_BLOCK | QCOW2_OL_INACTIVE_L1;
export const QCOW2_OL_ALL = QCOW2_OL_CACHED | QCOW2_OL_INACTIVE_L2;

/** Option names (QAPI Qcow2OverlapChecks) and message names (QEMU's metadata_ol_names), by bit number. */
const KINDS: { option: string; name: string }[] = [
  { option: 'main-header', name: 'qcow2_header' },
  { option: 'active-l1', name: 'active L1 table' },
  { option: 'active-l2', name: 'active L2 table' },
  { option: 'refcount-table', name: 'refcount table' },
  { option: 'refcount-block', name: 'refcount block' },
  { option: 'snapshot-table', name: 'snapshot table' },
  { option: 'inactive-l1', name: 'inactive L1 table' },
  { option: 'inactive-l2', name: 'inactive L2 table' },
  { option: 'bitmap-directory', name: 'bitmap directory' },
];
const TEMPLATES: Record<string, number> = { none: QCOW2_OL_NONE, constant: QCOW2_OL_CONSTANT, cached: QCOW2_OL_CACHED, all: QCOW2_OL_ALL };

const overlapChecks = new WeakMap<Qcow2State, number>();

function parseBool(image: string, key: string, v: unknown): boolean {
  if (v === true || v === 'on' || v === 'true') return true;
  if (v === false || v === 'off' || v === 'false') return false;
  throw new BlockError('EINVAL', `${image}: Parameter '${key}' expects 'on' or 'off'`);
}

/**
 * The enabled kinds from driver options: `overlap-check` (a template name or
 * an object with `template` and per-kind booleans), or the flattened keys
 * `overlap-check.template` and `overlap-check.<kind>`.
 */
export function parseOverlapCheck(image: string, options: Record<string, unknown>): number {
  let spec: Record<string, unknown> = {};
  const top = options['overlap-check'];
  if (typeof top === 'string') spec.template = top;
  else if (top && typeof top === 'object') spec = { ...(top as Record<string, unknown>) };
  for (const [k, v] of Object.entries(options)) if (k.startsWith('overlap-check.')) spec[k.slice('overlap-check.'.length)] = v;
  const template = spec.template ?? 'cached';
  if (typeof template !== 'string' || !(template in TEMPLATES)) {
    throw new BlockError('EINVAL', `${image}: Unsupported value '${String(template)}' for qcow2 option 'overlap-check'. Allowed are any of the following: none, constant, cached, all`);
  }
  let mask = TEMPLATES[template]!;
  for (const [k, v] of Object.entries(spec)) {
    if (k === 'template') continue;
    const bit = KINDS.findIndex((x) => x.option === k);
    if (bit < 0) throw new BlockError('EINVAL', `${image}: Invalid parameter 'overlap-check.${k}'`);
    mask = parseBool(image, `overlap-check.${k}`, v) ? mask | (1 << bit) : mask & ~(1 << bit);
  }
  return mask;
}

/** Sets the kinds checked on `s` (the driver calls this at open). */
export function setOverlapCheck(s: Qcow2State, mask: number): void {
  overlapChecks.set(s, mask);
}

export function overlapCheckOf(s: Qcow2State): number {
  return overlapChecks.get(s) ?? QCOW2_OL_CACHED;
}

/** Loads the refcount table when the write path has not yet (refcount blocks are a checked kind). */
export async function ensureRefcountTable(s: Qcow2State): Promise<void> {
  if (s.refcountTable) return;
  const raw = allocBuffer(s.header.refcountTableClusters * s.clusterSize);
  try {
    await bdrvPread(s.file, s.header.refcountTableOffset, raw.length, raw);
    s.refcountTable = decodeReftable(raw);
  } finally {
    freeBuffer(raw);
  }
}

const within = (offset: number, bytes: number, start: number, size: number) => size > 0 && offset < start + size && start < offset + bytes;

/**
 * The first metadata kind (its bit) that [offset, offset + bytes) overlaps,
 * among the enabled kinds minus `ign`; 0 when none. Ranges are compared in
 * whole clusters, as QEMU does.
 */
export async function checkMetadataOverlap(s: Qcow2State, ign: number, offset: number, bytes: number): Promise<number> {
  const chk = overlapCheckOf(s) & ~ign;
  if (!chk || bytes <= 0) return 0;
  const cs = s.clusterSize;
  const start = Math.floor(offset / cs) * cs;
  const size = Math.ceil((offset + bytes) / cs) * cs - start;
  const hit = (o: number, n: number) => within(start, size, o, n);
  const h = s.header;
  if (chk & QCOW2_OL_MAIN_HEADER && start < cs) return QCOW2_OL_MAIN_HEADER;
  if (chk & QCOW2_OL_ACTIVE_L1 && s.l1Size && hit(h.l1TableOffset, s.l1Size * 8)) return QCOW2_OL_ACTIVE_L1;
  if (chk & QCOW2_OL_REFCOUNT_TABLE && hit(h.refcountTableOffset, h.refcountTableClusters * cs)) return QCOW2_OL_REFCOUNT_TABLE;
  if (chk & QCOW2_OL_SNAPSHOT_TABLE && h.nbSnapshots && hit(h.snapshotsOffset, serializeSnapshotTable(s.snapshots).length)) return QCOW2_OL_SNAPSHOT_TABLE;
  if (chk & QCOW2_OL_BITMAP_DIRECTORY) {
    for (const e of h.extensions) {
      if (e.type === QCOW2_EXT_MAGIC_BITMAPS && 'bitmapDirectoryOffset' in e && hit(e.bitmapDirectoryOffset, e.bitmapDirectorySize)) return QCOW2_OL_BITMAP_DIRECTORY;
    }
  }
  if (chk & QCOW2_OL_ACTIVE_L2) {
    for (let i = 0; i < s.l1Size; i++) {
      const o = l1Offset(s, i);
      if (o && hit(o, cs)) return QCOW2_OL_ACTIVE_L2;
    }
  }
  if (chk & QCOW2_OL_REFCOUNT_BLOCK) {
    await ensureRefcountTable(s);
    for (const o of s.refcountTable!) if (o && hit(o, cs)) return QCOW2_OL_REFCOUNT_BLOCK;
  }
  if (chk & QCOW2_OL_INACTIVE_L1) {
    for (const sn of s.snapshots) if (hit(sn.l1TableOffset, sn.l1Size * 8)) return QCOW2_OL_INACTIVE_L1;
  }
  if (chk & QCOW2_OL_INACTIVE_L2) {
    for (const sn of s.snapshots) {
      // QEMU's check fails the write when a snapshot's L1 table is invalid (the request cannot be proven safe).
      validateSnapshotL1(sn, cs, s.file.totalBytes, s.image);
      const l1 = new Uint8Array(sn.l1Size * 8);
      if (!l1.length) continue;
      await bdrvPread(s.file, sn.l1TableOffset, l1.length, l1);
      for (let i = 0; i < sn.l1Size; i++) {
        const o = l1EntryOffset(l1, i);
        if (o && hit(o, cs)) return QCOW2_OL_INACTIVE_L2;
      }
    }
  }
  return 0;
}

/** QEMU's message name of an overlap bit. */
export function overlapName(bit: number): string {
  return KINDS[Math.log2(bit)]?.name ?? 'metadata';
}
