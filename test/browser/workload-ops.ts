/**
 * Workloads the browser tests run through the engine worker and the Node
 * side replays with qemu-io / qemu-img on a twin image (environment-neutral:
 * both sides import it). A workload is a list of operations; the seeded
 * generator makes the same list on both sides from the same numbers.
 */
import { xorshift32 } from '../helpers/random.js';

export type WorkloadOp =
  | { op: 'write'; offset: number; bytes: number; pattern: number }
  | { op: 'zero'; offset: number; bytes: number }
  | { op: 'discard'; offset: number; bytes: number }
  | { op: 'snapshot'; action: 'create' | 'apply' | 'delete'; name: string };

/** What the Node side answers after replaying a workload on a twin (workload-server.ts). */
export interface WorkloadVerdict {
  /** qemu-img check --output=json of the image the page sent, and its exit status. */
  check: Record<string, unknown>;
  checkStatus: number;
  /** With checkOnly: qemu-img check's human report. */
  checkText?: string;
  /** qemu-img compare of the page's image with the twin (0 equal, 1 different); its output. */
  compareStatus: number;
  compareOutput: string;
  /** Snapshot names (qemu-img info) of the page's image and of the twin. */
  snapshots: string[];
  twinSnapshots: string[];
}

export interface WorkloadRequest {
  /** Virtual size of the twin (qemu-img create -f qcow2 NAME SIZE). */
  size: number;
  /** -o options for the twin's qemu-img create. */
  createOptions?: string;
  ops: WorkloadOp[];
  /** The twin's backing file (-b, an http URL of the range server works: qemu-img has curl) and its format (-F). */
  backingFile?: string;
  backingFormat?: string;
  /** Only run qemu-img check (no twin, no compare). */
  checkOnly?: boolean;
}

/** xorshift32 stream of integers below `n`. */
/** Integers in [0, n) from the shared xorshift32 stream. */
function rng(seed: number): (n: number) => number {
  const next = xorshift32(seed);
  return (n) => next() % n;
}

/**
 * `count` operations over an image of `size` bytes: pattern writes (half of
 * them cluster-aligned, half at any byte), zero writes and discards (aligned
 * and not), sizes from 1 byte to 3 clusters.
 */
export function seededWorkload(seed: number, count: number, size: number, cluster = 65536): WorkloadOp[] {
  const r = rng(seed);
  const ops: WorkloadOp[] = [];
  for (let i = 0; i < count; i++) {
    const kind = r(10);
    const aligned = r(2) === 0;
    const bytes = aligned ? cluster * (1 + r(3)) : 1 + r(3 * cluster);
    const offset = Math.min(aligned ? cluster * r(size / cluster) : r(size), size - bytes);
    if (kind < 6) ops.push({ op: 'write', offset, bytes, pattern: 1 + r(255) });
    else if (kind < 8) ops.push({ op: 'zero', offset, bytes });
    else ops.push({ op: 'discard', offset, bytes });
  }
  return ops;
}

/** The qemu-io command for a data operation. */
export function qemuIoCommand(o: Exclude<WorkloadOp, { op: 'snapshot' }>): string {
  if (o.op === 'write') return `write -P ${o.pattern} ${o.offset} ${o.bytes}`;
  if (o.op === 'zero') return `write -z ${o.offset} ${o.bytes}`;
  return `discard ${o.offset} ${o.bytes}`;
}

declare module 'vitest' {
  export interface ProvidedContext {
    /** URL of the Node side's POST endpoint that checks and replays workloads. */
    workloadServer: string;
  }
}
