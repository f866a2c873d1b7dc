/**
 * A vhdx BAT update reaches the file through the log, as QEMU's
 * vhdx_log_write_and_flush: LogGuid in both headers, one log entry, flush,
 * the entry applied, LogGuid cleared. A workload (two new blocks, an
 * overwrite) runs on a fault filter that cuts the power after the Nth
 * write. Wherever a cut leaves the headers naming a log, qemu-img replays
 * one copy (check -r all) and blocktab the other (a read/write open): the
 * two read the same guest bytes, their BAT regions are equal, and qemu-img
 * check finds blocktab's copy clean. Among the cuts there must be one that
 * falls after the log entry was flushed and before it was applied, where
 * the entry holds the only copy of the new BAT entry: after replay the
 * block's data is there. CI replays a seeded sample of the other cuts.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { closeNode, FileStorage, openImage } from '../../src/node.js';
import { BlockBackend } from '../../src/block/backend.js';
import { faultyStorage, newCounters, type FaultCounters } from '../../src/filters/fault.js';
import { createVhdx } from '../../src/formats/vhdx/create.js';
import { qemuImg, qemuImgRun, tmpDir } from '../helpers/qemu.js';
import { sampleCases } from '../helpers/sample.js';

const MiB = 1024 * 1024;
const K = 1024;
const fill = (n: number, v: number) => new Uint8Array(n).fill(v);

async function workload(file: string, dropAfter: number | undefined, counters: FaultCounters): Promise<void> {
  const storage = faultyStorage(new FileStorage(), dropAfter === undefined ? {} : { dropWritesAfter: dropAfter }, counters);
  const bs = await openImage(storage, file, { format: 'vhdx' });
  const blk = new BlockBackend(bs);
  try {
    await blk.write(0, 64 * K, fill(64 * K, 0x11));
    await blk.write(3 * MiB + 4 * K, 64 * K, fill(64 * K, 0x22));
    await blk.write(8 * K, 4 * K, fill(4 * K, 0x33));
  } finally {
    await closeNode(bs);
  }
}

const guidHex = (b: Buffer, at: number) => b.subarray(at, at + 16).toString('hex');
const ZERO = '0'.repeat(32);

/**
 * What the file says about its log: the current header's LogGuid (the
 * header with the higher SequenceNumber), whether the log's first entry
 * belongs to it, and whether that entry's first sector is already in place.
 */
function logState(file: string): { named: boolean; written: boolean; applied: boolean; target: number; sector: Buffer } {
  const b = fs.readFileSync(file);
  const h = [64 * K, 128 * K].map((at) => ({ at, seq: b.readBigUInt64LE(at + 8) })).sort((x, y) => (x.seq > y.seq ? -1 : 1))[0]!.at;
  const guid = guidHex(b, h + 48);
  const logOffset = Number(b.readBigUInt64LE(h + 72));
  const named = guid !== ZERO;
  const written = named && b.toString('latin1', logOffset, logOffset + 4) === 'loge' && guidHex(b, logOffset + 32) === guid;
  let applied = false;
  let target = -1;
  const sector = Buffer.alloc(4096);
  if (written) {
    // One descriptor (a BAT entry): leading bytes in the descriptor, the data sector after the descriptor sector.
    const desc = logOffset + 64;
    target = Number(b.readBigUInt64LE(desc + 16));
    b.copy(sector, 0, desc + 8, desc + 16);
    b.copy(sector, 8, logOffset + 4096 + 8, logOffset + 4096 + 4092);
    b.copy(sector, 4092, desc + 4, desc + 8);
    applied = b.subarray(target, target + 4096).equals(sector);
  }
  return { named, written, applied, target, sector };
}

/** The BAT region's bytes, from the region table (entry for the BAT GUID 2DC27766-F623-4200-9D64-115E9BFD4A08). */
function batBytes(file: string): Buffer {
  const b = fs.readFileSync(file);
  const rt = 192 * K;
  const count = b.readUInt32LE(rt + 8);
  for (let i = 0; i < count; i++) {
    const e = rt + 16 + i * 32;
    if (guidHex(b, e) === '6677c22d23f600429d64115e9bfd4a08') return b.subarray(Number(b.readBigUInt64LE(e + 16)), Number(b.readBigUInt64LE(e + 16)) + b.readUInt32LE(e + 24));
  }
  throw new Error(`${file}: no BAT region`);
}

describe('vhdx: BAT updates through the log, cut at every write', () => {
  it('each pending log is replayed by qemu-img and by blocktab to the same image', async () => {
    const dir = tmpDir('vhdx-log-crash-');
    const template = path.join(dir, 'template.vhdx');
    await createVhdx(new FileStorage(), template, 8 * MiB, { blockSize: MiB });

    const full = newCounters();
    const clean = path.join(dir, 'clean.vhdx');
    fs.copyFileSync(template, clean);
    await workload(clean, undefined, full);
    expect(qemuImgRun(['check', clean]).stdout).toContain('No errors were found on the image.');
    expect(logState(clean).named).toBe(false);

    const pending: { n: number; written: boolean; applied: boolean; target: number; sector: Buffer }[] = [];
    for (let n = 0; n <= full.writes; n++) {
      const file = path.join(dir, `cut-${n}.vhdx`);
      fs.copyFileSync(template, file);
      await workload(file, n, newCounters());
      const st = logState(file);
      if (st.named) pending.push({ n, ...st });
      else fs.rmSync(file);
    }
    const unapplied = pending.filter((p) => p.written && !p.applied);
    expect(unapplied.length, 'a cut between the log flush and its application').toBeGreaterThan(0);
    // Every cut whose log entry is the only copy of an update, and a seeded sample of the others.
    const chosen = [...unapplied, ...sampleCases('vhdx-log-crash', pending.filter((p) => !unapplied.includes(p)), 0.3, 2)];

    const failures: string[] = [];
    for (const { n, written, applied, target, sector } of chosen) {
      const file = path.join(dir, `cut-${n}.vhdx`);
      const q = path.join(dir, `q-${n}.vhdx`);
      fs.copyFileSync(file, q);
      const ro = qemuImgRun(['convert', '-O', 'raw', file, path.join(dir, 'ro.raw')]);
      if (written && ro.status === 0) failures.push(`cut ${n}: qemu-img opened a file with a pending log read-only`);
      const rep = qemuImgRun(['check', '-r', 'all', q]);
      if (rep.status !== 0) failures.push(`cut ${n}: qemu-img check -r all: ${rep.stdout}${rep.stderr}`);
      const bs = await openImage(new FileStorage(), file, { format: 'vhdx' });
      await closeNode(bs);
      // A log that was replayed is cleared; headers naming a log no entry belongs to stay as they are, in both tools.
      if (logState(file).named !== logState(q).named || (written && logState(file).named)) failures.push(`cut ${n}: the log is left ${logState(file).named ? 'named' : 'clear'} by blocktab, ${logState(q).named ? 'named' : 'clear'} by qemu-img`);
      const chk = qemuImgRun(['check', file]);
      if (!chk.stdout.includes('No errors were found on the image.')) failures.push(`cut ${n}: qemu-img check of blocktab's replay: ${chk.stdout}${chk.stderr}`);
      qemuImg(['convert', '-O', 'raw', q, path.join(dir, 'q.raw')]);
      qemuImg(['convert', '-O', 'raw', file, path.join(dir, 'b.raw')]);
      const qr = fs.readFileSync(path.join(dir, 'q.raw'));
      const br = fs.readFileSync(path.join(dir, 'b.raw'));
      if (!qr.equals(br)) failures.push(`cut ${n}: the guest bytes differ after replay`);
      if (!batBytes(q).equals(batBytes(file))) failures.push(`cut ${n}: the BATs differ after replay`);
      // An entry flushed but not applied holds the only copy of its BAT entry: both replays put it in place.
      if (written && !applied) {
        for (const f of [q, file]) {
          if (!fs.readFileSync(f).subarray(target, target + 4096).equals(sector)) failures.push(`cut ${n}: ${path.basename(f)}: the logged BAT sector is not in place after replay`);
        }
      }
    }
    expect(failures).toEqual([]);
  }, 300_000);
});
