/**
 * qemu-img check's part on the internal snapshot table (QEMU's
 * qcow2_check_read_snapshot_table and qcow2_check_fix_snapshot_table).
 *
 * An image opened for a check does not read the table at open; the check
 * reads it first, before the refcounts are counted. Without `-r all` a table
 * that cannot be read stops the check with QEMU's messages and hints. With it,
 * what QEMU drops is dropped, and nothing else: snapshot entries past
 * QCOW_MAX_SNAPSHOTS or past the 64 MiB table limit (the header's count is
 * lowered at once; their clusters leak and the refcount check frees them),
 * and extra data past 1 KiB. Version 3 entries with less than the 16 bytes of
 * extra data v3 requires are corruptions. After the refcount check, a table
 * with corruptions is written anew (as every table write: new clusters, one
 * header switch, the old clusters freed).
 */
import { CHECK_REPORT_MARK, type CheckReport } from '../../block/driver.js';
import { BlockError, describeCode, isBlockError } from '../../block/errors.js';
import { writeHeaderFields } from './metadata.js';
import { readSnapshotEntries, type SnapshotTableCheck } from './snapshot-table.js';
import { qcow2RewriteSnapshotTable } from './snapshot.js';
import type { Qcow2State } from './state.js';
import { QCOW_MAX_SNAPSHOTS, SNAPSHOT_HEADER_SIZE } from './validate.js';

/** What the snapshot table's part of a check adds to the result (QEMU's snapshot_res). */
export interface SnapshotCheckRes {
  corruptions: number;
  corruptionsFixed: number;
  checkErrors: number;
}

/** The check stopped on the table (its lines were reported): the errno QEMU's check returns. */
export class SnapshotCheckFailed extends Error {
  constructor(readonly code: 'EIO' | 'EFBIG' | 'EINVAL') {
    super(code);
  }
}

/** vm_state_size_large + disk_size: the extra data every v3 entry must have. */
const V3_MIN_EXTRA_DATA = 16;

function failCode(e: unknown): 'EIO' | 'EFBIG' | 'EINVAL' {
  return isBlockError(e) && (e.code === 'EFBIG' || e.code === 'EINVAL') ? e.code : 'EIO';
}

/** qcow2_check_read_snapshot_table: loads s.snapshots for the refcount check, or throws SnapshotCheckFailed. */
export async function checkReadSnapshotTable(s: Qcow2State, fixErrors: boolean, report: CheckReport): Promise<SnapshotCheckRes> {
  const res: SnapshotCheckRes = { corruptions: 0, corruptionsFixed: 0, checkErrors: 0 };
  const h = s.header;
  let nb = h.nbSnapshots;
  let reduced = 0;
  if (nb > QCOW_MAX_SNAPSHOTS && fixErrors) {
    report(`Discarding ${nb - QCOW_MAX_SNAPSHOTS} overhanging snapshots`);
    reduced += nb - QCOW_MAX_SNAPSHOTS;
    nb = QCOW_MAX_SNAPSHOTS;
  }
  // qcow2_validate_table on the count and offset (the open skipped it for the check).
  const invalid = (code: 'EFBIG' | 'EINVAL', what: string): never => {
    res.checkErrors++;
    report(`${CHECK_REPORT_MARK}ERROR snapshot table ${what}`);
    if (nb > QCOW_MAX_SNAPSHOTS) report(`You can force-remove all ${nb - QCOW_MAX_SNAPSHOTS} overhanging snapshots with qemu-img check -r all`);
    s.snapshots = [];
    throw new SnapshotCheckFailed(code);
  };
  if (nb > QCOW_MAX_SNAPSHOTS) invalid('EFBIG', 'too large');
  if (h.snapshotsOffset % s.clusterSize !== 0 || 2 ** 63 - nb * SNAPSHOT_HEADER_SIZE < h.snapshotsOffset) invalid('EINVAL', 'offset invalid');

  const chk: SnapshotTableCheck = { fix: fixErrors, report, nbReduced: 0, extraDropped: 0 };
  let read;
  try {
    read = await readSnapshotEntries(s.file, h, s.image, nb, chk);
  } catch (e) {
    if (!isBlockError(e)) throw e;
    res.checkErrors++;
    // QEMU's text then its hint line, as error_reportf_err prints them.
    report(`${CHECK_REPORT_MARK}ERROR failed to read the snapshot table: ${e.message}`);
    s.snapshots = [];
    throw new SnapshotCheckFailed(failCode(e));
  }
  reduced += chk.nbReduced;
  res.corruptions += reduced + chk.extraDropped;
  s.snapshots = read.snapshots;
  s.snapshotsSize = read.size;
  if (reduced) {
    // The refcount check counts what the header names: the header's count drops now (leaking the rest).
    try {
      await writeHeaderFields(s, ['nbSnapshots'], { ...h, nbSnapshots: read.snapshots.length });
    } catch (e) {
      if (!isBlockError(e)) throw e;
      res.checkErrors++;
      report(`ERROR failed to update the snapshot count in the image header: ${describeCode(e.code)}`);
      throw new SnapshotCheckFailed(failCode(e));
    }
    h.nbSnapshots = read.snapshots.length;
    res.corruptionsFixed += reduced;
    res.corruptions -= reduced;
  }
  if (h.version >= 3) {
    read.snapshots.forEach((sn, i) => {
      if (sn.extraDataSize < V3_MIN_EXTRA_DATA) {
        res.corruptions++;
        report(`${fixErrors ? 'Repairing' : 'ERROR'} snapshot table entry ${i} is incomplete`);
      }
    });
  }
  return res;
}

/** qcow2_check_fix_snapshot_table: under -r all, a table with corruptions is written anew. */
export async function checkFixSnapshotTable(s: Qcow2State, res: SnapshotCheckRes, fixErrors: boolean, report: CheckReport): Promise<void> {
  if (!res.corruptions || !fixErrors) return;
  try {
    await qcow2RewriteSnapshotTable(s);
  } catch (e) {
    if (!(e instanceof BlockError)) throw e;
    res.checkErrors++;
    report(`ERROR failed to update snapshot table: ${describeCode(e.code)}`);
    throw new SnapshotCheckFailed(failCode(e));
  }
  res.corruptionsFixed += res.corruptions;
  res.corruptions = 0;
}
