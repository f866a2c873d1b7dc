/**
 * A check's lines are streamed, not collected: an image whose refcount blocks
 * mark every cluster of the file used (one "Leaked cluster" line per
 * cluster, tens of thousands here, millions for a hostile image) prints the
 * same bytes as qemu-img check, the lines reach the caller while the check
 * still runs (between its reads and writes), and the result holds no list of
 * lines.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileStorage } from '../../src/node.js';
import { openImage, closeNode } from '../../src/block/open.js';
import { checkNode } from '../../src/img/check.js';
import { main } from '../../src/cli/main.js';
import { spawnSync } from 'node:child_process';
import { qemuImg, tmpDir } from '../helpers/qemu.js';

const dir = tmpDir('check-stream-');

/** qemu-img with room for megabytes of output (the shared helper's default buffer is 1 MiB). */
function qemuImgRun(args: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync('qemu-img', args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const CLUSTER = 512;
/** 16-bit refcounts: entries per refcount block. */
const PER_BLOCK = CLUSTER / 2;

/**
 * A 64 MiB qcow2 image with 512-byte clusters in a sparse file of `clusters`
 * clusters, whose new refcount table (at cluster 100) and blocks (after it)
 * give every cluster of the file refcount 1: all but the header, L1 table,
 * refcount table and blocks are leaked. Returns where the blocks start (they follow each other).
 */
function leakyImage(file: string, clusters: number): number {
  qemuImg(['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${CLUSTER},refcount_bits=16`, file, '64M']);
  const blocks = clusters / PER_BLOCK;
  const tableAt = 100;
  const tableClusters = Math.ceil((blocks * 8) / CLUSTER);
  const blocksAt = tableAt + tableClusters;
  const table = Buffer.alloc(tableClusters * CLUSTER);
  for (let i = 0; i < blocks; i++) table.writeBigUInt64BE(BigInt((blocksAt + i) * CLUSTER), i * 8);
  const refblocks = Buffer.alloc(blocks * CLUSTER);
  for (let k = 0; k < clusters; k++) refblocks.writeUInt16BE(1, k * 2);
  const header = Buffer.alloc(12);
  header.writeBigUInt64BE(BigInt(tableAt * CLUSTER), 0);
  header.writeUInt32BE(tableClusters, 8);
  const fd = fs.openSync(file, 'r+');
  fs.ftruncateSync(fd, clusters * CLUSTER);
  fs.writeSync(fd, table, 0, table.length, tableAt * CLUSTER);
  fs.writeSync(fd, refblocks, 0, refblocks.length, blocksAt * CLUSTER);
  fs.writeSync(fd, header, 0, 12, 48); // refcount_table_offset, refcount_table_clusters
  fs.closeSync(fd);
  return blocksAt * CLUSTER;
}

async function bt(args: string[]): Promise<{ status: number; stdout: string; stderr: string; writes: number }> {
  let stdout = '';
  let stderr = '';
  let writes = 0;
  const status = await main(args, {
    stdout: (s) => void (stdout += s),
    stderr: (s) => {
      writes++;
      stderr += s;
    },
  });
  return { status, stdout, stderr, writes };
}

describe('check streams its lines', () => {
  const clusters = 64 * PER_BLOCK * 4; // 65536 clusters, 32 MiB sparse

  it('a leaky image: the same bytes and exit code as qemu-img check, written in batches', async () => {
    const f = path.join(dir, 'leaky.qcow2');
    leakyImage(f, clusters);
    const theirs = qemuImgRun(['check', f]);
    expect(theirs.status).toBe(3);
    const leaked = theirs.stderr.split('\n').filter((l) => l.startsWith('Leaked cluster')).length;
    expect(leaked).toBeGreaterThan(60000);
    const ours = await bt(['check', f]);
    expect({ status: ours.status, stdout: ours.stdout, stderr: ours.stderr }).toEqual({ status: theirs.status, stdout: theirs.stdout, stderr: theirs.stderr });
    // More than 2 MiB of lines: several writes of at most 64 KiB (plus the last line), not one.
    expect(ours.writes).toBeGreaterThan(Math.floor(ours.stderr.length / 70000));
  });

  it('-r leaks: the lines arrive while the check runs, the result keeps none, the repair equals qemu-img -r leaks', async () => {
    const a = path.join(dir, 'ours.qcow2');
    const b = path.join(dir, 'theirs.qcow2');
    // Fewer clusters: qemu-img's repair writes one refcount at a time.
    const clusters = 64 * PER_BLOCK;
    const refblocks = leakyImage(a, clusters);
    fs.copyFileSync(a, b);
    // The stored refcount of cluster k in the file, read when a line arrives.
    const fd = fs.openSync(a, 'r');
    const stored = (k: number): number => {
      const v = Buffer.alloc(2);
      fs.readSync(fd, v, 0, 2, refblocks + k * 2);
      return v.readUInt16BE();
    };
    const lines: string[] = [];
    // For the first Leaked line and the first Repairing line of the last refcount block: the first leaked cluster's refcount then.
    const seen: { firstLeaked?: number; lastBlockRepairing?: number } = {};
    let firstCluster = -1;
    const bs = await openImage(new FileStorage(), a, { format: 'qcow2', readOnly: false, driverOptions: { check: true } });
    let run;
    try {
      run = await checkNode(bs, a, { leaks: true, errors: false }, {
        line: (m) => {
          lines.push(m);
          const k = Number(/^(?:Leaked|Repairing) cluster (\d+) /.exec(m)?.[1] ?? -1);
          if (k < 0) return;
          if (firstCluster < 0) {
            firstCluster = k;
            seen.firstLeaked = stored(k);
          }
          if (m.startsWith('Repairing') && k >= clusters - PER_BLOCK && seen.lastBlockRepairing === undefined) seen.lastBlockRepairing = stored(firstCluster);
        },
      });
    } finally {
      fs.closeSync(fd);
      await closeNode(bs);
    }
    // Lines arrive while the check runs: the first before any repair, the last block's after the first block was written.
    expect(seen).toEqual({ firstLeaked: 1, lastBlockRepairing: 0 });
    expect(Object.values(run).some(Array.isArray)).toBe(false);
    const theirs = qemuImgRun(['check', '-r', 'leaks', b]);
    expect(lines.join('\n') + '\n').toBe(theirs.stderr);
    const fixed = /(\d+) leaked clusters\n\s+(\d+) corruptions/.exec(theirs.stdout);
    expect(run.repaired).toEqual({ leaks: Number(fixed?.[1]), corruptions: Number(fixed?.[2]) });
    // Both repaired images now check the same (clean).
    expect(qemuImgRun(['check', a])).toEqual(qemuImgRun(['check', b]));
    expect(qemuImgRun(['check', a]).status).toBe(0);
  });
});
