/**
 * Facts a driver reports about an image, in the shape qemu-img's ImageInfo
 * uses (src/img/info.ts turns them into qemu-img's JSON keys).
 */

/** qemu-img's "format-specific": `{ type: "qcow2", data: { compat: "1.1", … } }`, keys as QEMU spells them. */
export interface ImageInfoSpecific {
  type: string;
  data: Record<string, unknown>;
}

/** One internal snapshot, as QEMU's QEMUSnapshotInfo. */
export interface SnapshotInfo {
  /** Numeric id as a string ("1", "2", …). */
  id: string;
  name: string;
  /** Size of the saved VM state in bytes (0 for disk-only snapshots). */
  vmStateSize: number;
  dateSec: number;
  dateNsec: number;
  /** Guest clock at snapshot time, in nanoseconds. */
  vmClockNsec: number;
  /** Instruction count (record/replay), when the snapshot has one. */
  icount?: number;
  /** Virtual disk size when the snapshot was taken. */
  diskSize?: number;
}
