/**
 * Guest offset → where the bytes are (QEMU's qcow2_get_host_offset), answered
 * for runs rather than single clusters.
 *
 * `mapRun` returns the longest prefix of [offset, offset + bytes) that has
 * one subcluster type and, for types with a host offset, one contiguous host
 * range. Within a slice the run comes from l2FindRun; a run that reaches the
 * end of a slice continues into the next slice (or L2 table) when it matches,
 * so a large read or a block-status query over a preallocated image is one
 * answer rather than one per slice. Compressed clusters are answered one at a
 * time (each has its own descriptor); extended L2 entries whose subclusters
 * differ are answered per subcluster run.
 */
import { BlockError, hex } from '../../block/errors.js';
import { bdrvPread } from '../../block/io.js';
import {
  l2EntryKind,
  l2FindRun,
  L2_COMPRESSED,
  L2_MIXED,
  L2_NORMAL,
  L2_UNALLOCATED,
  L2_UNALLOCATED_ALLOC,
  L2_ZERO_ALLOC,
  L2_ZERO_PLAIN,
} from './l2-scan.js';
import {
  entryHasOffset,
  entryHi,
  entryLo,
  l2AllocBitmap,
  l2Copied,
  l2HostOffset,
  l2ZeroBitmap,
  parseCompressedDescriptor,
  type CompressedDescriptor,
} from './l2-entry.js';
import { l1Offset, type Qcow2State } from './state.js';
import { altHex, signalCorruption } from './metadata.js';
import { bdrvDebugEvent } from '../../block/debug-event.js';

/** QEMU's QCow2SubclusterType, with the L2_* values of l2-scan.ts. */
export type SubclusterType =
  | typeof L2_UNALLOCATED
  | typeof L2_ZERO_PLAIN
  | typeof L2_ZERO_ALLOC
  | typeof L2_NORMAL
  | typeof L2_COMPRESSED
  | typeof L2_UNALLOCATED_ALLOC;

export interface MapRun {
  type: SubclusterType;
  /** Bytes from the asked offset the answer holds for (> 0). */
  bytes: number;
  /** Host offset of the first byte (normal, zero-alloc, unallocated-alloc). */
  host: number;
  /** For a compressed cluster: its descriptor (the run is inside one cluster). */
  compressed?: CompressedDescriptor;
}

function hasHost(t: SubclusterType): boolean {
  return t === L2_NORMAL || t === L2_ZERO_ALLOC || t === L2_UNALLOCATED_ALLOC;
}

function corrupt(s: Qcow2State, msg: string): BlockError {
  return new BlockError('ECORRUPT', `${s.image}: ${msg}`);
}

/** Loads an L2 slice for the cache, checking the table against the file. */
export function makeSliceLoader(s: Qcow2State) {
  return async (offset: number, into: Uint8Array): Promise<void> => {
    const fileSize = s.file.totalBytes;
    const table = offset - (offset % s.clusterSize);
    if (table + s.clusterSize > fileSize) {
      throw corrupt(s, `L2 table at ${hex(table)} extends beyond the end of the file (${fileSize} bytes)`);
    }
    await bdrvDebugEvent(s.file, 'l2_load');
    await bdrvPread(s.file, offset, into.length, into);
  };
}

/** One slice's answer, plus whether it ran to the slice's end (so it may continue). */
interface Piece extends MapRun {
  toSliceEnd: boolean;
}

async function mapPiece(s: Qcow2State, offset: number, bytes: number): Promise<Piece> {
  const cs = s.clusterSize;
  const tableCoverage = cs * s.l2Size;
  const l1Index = Math.floor(offset / tableCoverage);
  const l2Offset = l1Index < s.l1Size ? l1Offset(s, l1Index) : 0;
  if (l2Offset === 0) {
    // Unallocated L2 table: merge every following empty L1 entry.
    let end = (l1Index + 1) * tableCoverage;
    let i = l1Index + 1;
    while (end < offset + bytes && i < s.l1Size && l1Offset(s, i) === 0) {
      end += tableCoverage;
      i++;
    }
    if (l1Index >= s.l1Size) end = offset + bytes;
    return { type: L2_UNALLOCATED, bytes: Math.min(bytes, end - offset), host: 0, toSliceEnd: true };
  }
  if (l2Offset % cs !== 0) {
    throw corrupt(s, `L2 table offset ${hex(l2Offset)} unaligned (L1 index ${hex(l1Index)}, L1 table at ${hex(s.header.l1TableOffset)})`);
  }

  const inTable = offset - l1Index * tableCoverage;
  const clusterIndex = Math.floor(inTable / cs);
  const inCluster = inTable - clusterIndex * cs;
  const sliceIndex = Math.floor(clusterIndex / s.l2SliceSize);
  const idx = clusterIndex - sliceIndex * s.l2SliceSize;
  const ext = s.extendedL2;

  const slice = await s.l2Cache.acquire(l2Offset + sliceIndex * s.l2Cache.entrySize);
  try {
    const data = slice.data;
    const kind = l2EntryKind(data, idx, ext);
    // QEMU's notices name the table and the entry's index in its slice (qcow2_get_host_offset).
    const entryAt = () => `L2 offset: ${hex(l2Offset)}, L2 index: ${altHex(idx)}`;
    const hostOf = async (): Promise<number> => {
      const h = l2HostOffset(data, idx, ext);
      if (h % cs !== 0) throw await signalCorruption(s, `Cluster allocation offset ${hex(h)} unaligned (${entryAt()})`);
      return h;
    };

    if (kind === L2_COMPRESSED) {
      const p = idx * s.l2EntryBytes;
      const compressed = parseCompressedDescriptor(entryHi(data, p), entryLo(data, p), s.clusterBits);
      return { type: L2_COMPRESSED, bytes: Math.min(bytes, cs - inCluster), host: 0, compressed, toSliceEnd: false };
    }

    // With an external data file, host offset 0 is a real cluster: QEMU tells it from
    // "unallocated" by the COPIED flag (data file clusters always have refcount 1).
    const hostZeroAllocated =
      s.dataFile !== s.file && (kind === L2_UNALLOCATED || ext) && l2Copied(data, idx, ext) && l2HostOffset(data, idx, ext) === 0;

    if (hostZeroAllocated && !ext) {
      let run = cs - inCluster;
      let n = 1;
      const end = Math.min(s.l2SliceSize, idx + Math.ceil((inCluster + bytes) / cs));
      if (idx + 1 < end && l2EntryKind(data, idx + 1, ext) === L2_NORMAL && l2HostOffset(data, idx + 1, ext) === cs) {
        const more = l2FindRun(data, idx + 1, end, ext, s.clusterBits, false);
        run += more * cs;
        n += more;
      }
      return { type: L2_NORMAL, bytes: Math.min(bytes, run), host: inCluster, toSliceEnd: idx + n === s.l2SliceSize };
    }

    if (kind === L2_MIXED || hostZeroAllocated) {
      // Extended L2 with differing subclusters: QEMU's qcow2_get_subcluster_type per subcluster.
      const p = idx * 16;
      const zeroBits = l2ZeroBitmap(data, idx);
      const allocBits = l2AllocBitmap(data, idx);
      const offsetSet = hostZeroAllocated || entryHasOffset(entryHi(data, p), entryLo(data, p));
      if ((zeroBits & allocBits) !== 0 || (!offsetSet && allocBits !== 0)) {
        // QEMU's read path words it with two spaces before the parenthesis.
        throw await signalCorruption(s, `Invalid cluster entry found  (${entryAt()})`);
      }
      const typeOf = (sc: number): SubclusterType => {
        if ((zeroBits >>> sc) & 1) return offsetSet ? L2_ZERO_ALLOC : L2_ZERO_PLAIN;
        if ((allocBits >>> sc) & 1) return L2_NORMAL;
        return offsetSet ? L2_UNALLOCATED_ALLOC : L2_UNALLOCATED;
      };
      const first = Math.floor(inCluster / s.subclusterSize);
      const t = typeOf(first);
      let sc = first + 1;
      while (sc < 32 && sc * s.subclusterSize < inCluster + bytes && typeOf(sc) === t) sc++;
      const run = Math.min(bytes, sc * s.subclusterSize - inCluster);
      const host = hasHost(t) ? (await hostOf()) + inCluster : 0;
      return { type: t, bytes: run, host, toSliceEnd: false };
    }

    const wanted = Math.ceil((inCluster + bytes) / cs);
    const end = Math.min(s.l2SliceSize, idx + wanted);
    const n = l2FindRun(data, idx, end, ext, s.clusterBits, false);
    const type = kind as SubclusterType;
    const host = hasHost(type) ? (await hostOf()) + inCluster : 0;
    return { type, bytes: Math.min(bytes, n * cs - inCluster), host, toSliceEnd: idx + n === s.l2SliceSize };
  } finally {
    s.l2Cache.release(slice);
  }
}

/**
 * The run starting at guest `offset` (at most `bytes` long). `offset` is
 * inside the virtual disk; the answer never crosses a type change or a host
 * discontinuity.
 */
export async function mapRun(s: Qcow2State, offset: number, bytes: number): Promise<MapRun> {
  const run = await mapPiece(s, offset, bytes);
  let last: Piece = run;
  while (last.toSliceEnd && run.bytes < bytes) {
    const next = await mapPiece(s, offset + run.bytes, bytes - run.bytes);
    if (next.type !== run.type || (hasHost(run.type) && next.host !== run.host + run.bytes)) break;
    run.bytes += next.bytes;
    last = next;
  }
  return { type: run.type, bytes: run.bytes, host: run.host, compressed: run.compressed };
}
