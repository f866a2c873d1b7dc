/**
 * The internal snapshot table: parse (at open, and as qemu-img check reads
 * it) and serialize, in one place.
 *
 * Entry layout (big-endian, each entry padded to 8 bytes):
 *   0  l1_table_offset  u64      24 vm_clock_nsec   u64
 *   8  l1_size          u32      32 vm_state_size   u32
 *  12  id_str_size      u16      36 extra_data_size u32
 *  14  name_size        u16      40 extra data: vm_state_size_large u64,
 *  16  date_sec         u32                     disk_size u64, icount u64
 *  20  date_nsec        u32      then id_str, name, padding
 */
import { BlockError, hex } from '../../block/errors.js';
import { bdrvPread } from '../../block/io.js';
import type { SnapshotInfo } from '../../block/info.js';
import { be, type Qcow2Header } from './header.js';
import { QCOW_MAX_L1_SIZE, QCOW_MAX_SNAPSHOTS_SIZE, SNAPSHOT_HEADER_SIZE } from './validate.js';
import type { BlockNode } from '../../block/node.js';


/** QEMU reads the snapshot table with a signed 32-bit length: no entry may end 2 GiB or more past its start. */
const INT32_MAX = 2 ** 31 - 1;
/** QEMU's QCOW_MAX_SNAPSHOT_EXTRA_DATA. */
export const QCOW_MAX_SNAPSHOT_EXTRA_DATA = 1024;

export interface Qcow2Snapshot {
  l1TableOffset: number;
  l1Size: number;
  idStr: string;
  name: string;
  dateSec: number;
  dateNsec: number;
  vmClockNsec: number;
  /** VM state size (vm_state_size_large when the extra data has it). */
  vmStateSize: number;
  /** Virtual disk size at snapshot time (the image's current size when the entry predates the field). */
  diskSize: number;
  /** Instruction count, or undefined when not recorded (-1 on disk / absent). */
  icount: number | undefined;
  /** Extra data beyond the three known fields, kept verbatim. */
  extraDataTail: Uint8Array;
  /** extra_data_size as found (serialize writes at least 24). */
  extraDataSize: number;
}

const dec = new TextDecoder();
const enc = new TextEncoder();

/**
 * How qemu-img check reads the table (QEMU's qcow2_check_read_snapshot_table
 * around qcow2_do_read_snapshots): L1 fields are left to the refcount check,
 * and under `fix` the entries QEMU cannot keep are dropped with its messages:
 * extra data past QCOW_MAX_SNAPSHOT_EXTRA_DATA is cut to that size, and the
 * entries from the one that makes the table pass QCOW_MAX_SNAPSHOTS_SIZE on
 * are discarded (their clusters leak, which the refcount check repairs).
 */
export interface SnapshotTableCheck {
  fix: boolean;
  /** Receives the lines printed to stderr as the reading goes ("Discarding ..."). */
  report: (line: string) => void;
  /** Entries dropped because the table was too big (qcow2's nb_clusters_reduced). */
  nbReduced: number;
  /** Entries whose extra data was cut. */
  extraDropped: number;
}

export interface SnapshotTableRead {
  snapshots: Qcow2Snapshot[];
  /** Bytes from snapshots_offset to the end of the last entry kept, as on disk (QEMU's snapshots_size). */
  size: number;
}

/**
 * Reads and checks the table of `h` from `file`. Every size is bounded by
 * QEMU's limits before anything is allocated from it. What lies past the end
 * of the file reads as zeros, as in QEMU (a zero entry is a valid, empty one);
 * `status.pastEof` then says so, and the snapshot code refuses to write from
 * such a table.
 */
export async function readSnapshotTable(file: BlockNode, h: Qcow2Header, image: string, status?: { pastEof: boolean }): Promise<Qcow2Snapshot[]> {
  return (await readSnapshotEntries(file, h, image, h.nbSnapshots, undefined, status)).snapshots;
}

/** The first `count` entries of the table; `check` given: qemu-img check's reading (see SnapshotTableCheck). */
export async function readSnapshotEntries(
  file: BlockNode,
  h: Qcow2Header,
  image: string,
  count: number,
  check: SnapshotTableCheck | undefined,
  status?: { pastEof: boolean },
): Promise<SnapshotTableRead> {
  const out: Qcow2Snapshot[] = [];
  const fix = check?.fix === true;
  let pos = h.snapshotsOffset;
  // Sum of the entries as they will be written (cut extra data counts as cut), QEMU's table_length.
  let tableLength = 0;
  // End of the last entry kept (its name), QEMU's offset before the next entry's rounding.
  let lastEnd = h.snapshotsOffset;
  const head = new Uint8Array(SNAPSHOT_HEADER_SIZE);
  for (let i = 0; i < count; i++) {
    const at = pos;
    const fail = (msg: string, code: 'EINVAL' | 'EFBIG' = 'EINVAL', qemuMessage?: string): never => {
      throw new BlockError(code, `${image}: snapshot table entry ${i} at ${hex(at)}: ${msg}`, qemuMessage === undefined ? undefined : { qemuMessage });
    };
    // Past the end of the file reads as zeros, as QEMU's block layer does.
    const read = (at0: number, n: number, into: Uint8Array) => readZeroPastEof(file, at0, into.subarray(0, n), status);
    await read(pos, SNAPSHOT_HEADER_SIZE, head);
    const idSize = be.u16(head, 12);
    const nameSize = be.u16(head, 14);
    const extraSize = be.u32(head, 36);
    let keptExtra = extraSize;
    if (extraSize > QCOW_MAX_SNAPSHOT_EXTRA_DATA) {
      if (!fix) {
        const hint = 'You can force-remove this extra metadata with qemu-img check -r all';
        fail(`Too much extra metadata in snapshot table entry (${extraSize} bytes)\n${hint}`, 'EFBIG', `Too much extra metadata in snapshot table entry ${i}\n${hint}`);
      }
      check!.report(`Discarding too much extra metadata in snapshot table entry ${i} (${extraSize} > ${QCOW_MAX_SNAPSHOT_EXTRA_DATA})`);
      check!.extraDropped++;
      keptExtra = QCOW_MAX_SNAPSHOT_EXTRA_DATA;
    }
    const entryEnd = pos + SNAPSHOT_HEADER_SIZE + extraSize + idSize + nameSize;
    tableLength = Math.ceil(tableLength / 8) * 8 + SNAPSHOT_HEADER_SIZE + keptExtra + idSize + nameSize;
    if (tableLength > QCOW_MAX_SNAPSHOTS_SIZE || entryEnd - h.snapshotsOffset > INT32_MAX) {
      const left = h.nbSnapshots - i;
      if (!fix) {
        const hint = `You can force-remove all ${left} overhanging snapshots with qemu-img check -r all`;
        fail(`Snapshot table exceeds the maximum size (${QCOW_MAX_SNAPSHOTS_SIZE} bytes)\n${hint}`, 'EFBIG', `Snapshot table is too big\n${hint}`);
      }
      check!.report(`Discarding ${left} overhanging snapshots (snapshot table is too big)`);
      check!.nbReduced += left;
      return { snapshots: out, size: lastEnd - h.snapshotsOffset };
    }
    // Known and kept extra data, then id and name after the whole extra data as stored.
    const body = new Uint8Array(keptExtra + idSize + nameSize);
    if (keptExtra) await read(pos + SNAPSHOT_HEADER_SIZE, keptExtra, body);
    if (idSize + nameSize) await read(pos + SNAPSHOT_HEADER_SIZE + extraSize, idSize + nameSize, body.subarray(keptExtra));

    const vmState32 = be.u32(head, 32);
    const sn: Qcow2Snapshot = {
      l1TableOffset: be.u64(head, 0),
      l1Size: be.u32(head, 8),
      idStr: cString(body.subarray(keptExtra, keptExtra + idSize)),
      name: cString(body.subarray(keptExtra + idSize)),
      dateSec: be.u32(head, 16),
      dateNsec: be.u32(head, 20),
      vmClockNsec: be.u64(head, 24),
      vmStateSize: keptExtra >= 8 ? be.u64(body, 0) : vmState32,
      diskSize: keptExtra >= 16 ? be.u64(body, 8) : h.size,
      icount: undefined,
      extraDataTail: body.slice(Math.min(keptExtra, 24), keptExtra),
      extraDataSize: keptExtra,
    };
    if (keptExtra >= 24) {
      const hi = be.u32(body, 16);
      const lo = be.u32(body, 20);
      sn.icount = hi === 0xffffffff && lo === 0xffffffff ? undefined : be.u64(body, 16);
    }
    // A bad L1 table of one snapshot does not keep the image from opening (QEMU's
    // qcow2_read_snapshots does not look at it): every use checks it first
    // (validateSnapshotL1), and check reports it.
    out.push(sn);
    lastEnd = entryEnd;
    pos = entryEnd + ((8 - (entryEnd % 8)) % 8);
  }
  return { snapshots: out, size: lastEnd - h.snapshotsOffset };
}

/** id and name are C strings to QEMU: they end at the first NUL byte. */
function cString(b: Uint8Array): string {
  const nul = b.indexOf(0);
  return dec.decode(nul < 0 ? b : b.subarray(0, nul));
}

/** Reads `buf.length` bytes at `offset`; the part past the end of the file is zeros (and noted in `status`). */
async function readZeroPastEof(file: BlockNode, offset: number, buf: Uint8Array, status?: { pastEof: boolean }): Promise<void> {
  const inFile = Math.max(0, Math.min(buf.length, file.totalBytes - offset));
  if (inFile > 0) await bdrvPread(file, offset, inFile, buf.subarray(0, inFile));
  if (inFile < buf.length) {
    buf.fill(0, inFile);
    if (status) status.pastEof = true;
  }
}

/** Serializes the table (entries padded to 8 bytes), as the snapshot code will write it. */
export function serializeSnapshotTable(list: Qcow2Snapshot[]): Uint8Array {
  const parts: Uint8Array[] = [];
  let total = 0;
  for (const sn of list) {
    const id = enc.encode(sn.idStr);
    const name = enc.encode(sn.name);
    const extra = Math.max(24, sn.extraDataSize, 24 + sn.extraDataTail.length);
    const len = SNAPSHOT_HEADER_SIZE + extra + id.length + name.length;
    const b = new Uint8Array(len + ((8 - (len % 8)) % 8));
    be.put64(b, 0, sn.l1TableOffset);
    be.put32(b, 8, sn.l1Size);
    be.put16(b, 12, id.length);
    be.put16(b, 14, name.length);
    be.put32(b, 16, sn.dateSec);
    be.put32(b, 20, sn.dateNsec);
    be.put64(b, 24, sn.vmClockNsec);
    be.put32(b, 32, sn.vmStateSize > 0xffffffff ? 0 : sn.vmStateSize);
    be.put32(b, 36, extra);
    be.put64(b, 40, sn.vmStateSize);
    be.put64(b, 48, sn.diskSize);
    if (sn.icount === undefined) b.fill(0xff, 56, 64);
    else be.put64(b, 56, sn.icount);
    b.set(sn.extraDataTail, 64);
    b.set(id, SNAPSHOT_HEADER_SIZE + extra);
    b.set(name, SNAPSHOT_HEADER_SIZE + extra + id.length);
    parts.push(b);
    total += b.length;
  }
  const out = new Uint8Array(total);
  let p = 0;
  for (const b of parts) {
    out.set(b, p);
    p += b.length;
  }
  return out;
}

/** The generic SnapshotInfo (qemu-img snapshot -l / info) of a table entry. */
export function snapshotInfo(sn: Qcow2Snapshot): SnapshotInfo {
  return {
    id: sn.idStr,
    name: sn.name,
    vmStateSize: sn.vmStateSize,
    dateSec: sn.dateSec,
    dateNsec: sn.dateNsec,
    vmClockNsec: sn.vmClockNsec,
    icount: sn.icount,
    diskSize: sn.diskSize,
  };
}

/**
 * QEMU's qcow2_validate_table for a snapshot's L1 table, before anything reads
 * it or writes from it: not too large, cluster-aligned, and (blocktab's own
 * check, which QEMU leaves to the short read) within the file. Throws with
 * QEMU's text ("Snapshot L1 table offset invalid") as qemuMessage.
 */
export function validateSnapshotL1(sn: Qcow2Snapshot, clusterSize: number, fileSize: number, image: string): void {
  const what = `${image}: snapshot ${sn.idStr} ('${sn.name}')`;
  if (sn.l1Size > QCOW_MAX_L1_SIZE / 8) {
    throw new BlockError('EFBIG', `${what}: L1 table too large (${sn.l1Size} entries)`, { qemuMessage: 'Snapshot L1 table too large' });
  }
  if (sn.l1TableOffset % clusterSize !== 0) {
    throw new BlockError('EINVAL', `${what}: L1 table offset ${hex(sn.l1TableOffset)} is not cluster-aligned`, {
      qemuMessage: 'Snapshot L1 table offset invalid',
    });
  }
  if (sn.l1Size > 0 && sn.l1TableOffset + sn.l1Size * 8 > fileSize) {
    throw new BlockError('EINVAL', `${what}: L1 table at ${hex(sn.l1TableOffset)} (${sn.l1Size * 8} bytes) extends beyond the end of the file (${fileSize} bytes)`);
  }
}
