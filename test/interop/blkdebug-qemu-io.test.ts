/**
 * The blkdebug filter, null-co and nested option trees, against qemu-io 7.2:
 * the same command lines run through qemu-io on one qcow2 image and through
 * blocktab io (in process) on its twin. Injected errors depend on where the
 * qcow2 driver raises its debug events and on which host sector its clusters
 * land, so agreeing output also says both drivers allocate alike.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { qemuImg, tmpDir } from '../helpers/qemu.js';
import { runIo } from '../../src/cli/qemu-io/main.js';

const dir = tmpDir('blocktab-blkdebug-');
let seq = 0;

function normalise(text: string): string {
  return text
    .split('\n')
    .map((l) => l.replace(/^(.*, \d+ ops); .* \(.*\/sec and .* ops\/sec\)$/, '$1; <timing>'))
    .join('\n');
}

async function ours(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const status = await runIo(['-t', 'writeback', ...args], { out: (t) => (stdout += t), err: (t) => (stderr += t) }, Readable.from([]));
  return { status, stdout, stderr };
}

/** Two identical images (`prep` written by qemu-io to both); `args(img)` builds the qemu-io arguments. */
async function compare(fmt: 'qcow2' | 'raw', prep: string[], args: (img: string, conf: string) => string[], config?: string) {
  const n = ++seq;
  const a = path.join(dir, `${n}-qemu.${fmt}`);
  const b = path.join(dir, `${n}-ours.${fmt}`);
  const confA = path.join(dir, `${n}-qemu.conf`);
  const confB = path.join(dir, `${n}-ours.conf`);
  for (const [img, conf] of [[a, confA], [b, confB]] as const) {
    qemuImg(['create', '-q', '-f', fmt, img, '4M']);
    if (prep.length) spawnSync('qemu-io', ['-f', fmt, ...prep.flatMap((c) => ['-c', c]), img]);
    if (config !== undefined) fs.writeFileSync(conf, config);
  }
  // writeback, as the iotests run qemu-io (its default, writethrough, flushes after every write).
  const r = spawnSync('qemu-io', ['-t', 'writeback', ...args(a, confA)], { encoding: 'utf8' });
  const o = await ours(args(b, confB));
  expect(normalise(o.stdout).replaceAll(b, a).replaceAll(confB, confA)).toBe(normalise(r.stdout));
  expect(o.stderr.replaceAll(b, a).replaceAll(confB, confA)).toBe(r.stderr);
  expect(o.status).toBe(r.status ?? -1);
  const cmp = spawnSync('qemu-img', ['compare', '-f', fmt, '-F', fmt, a, b], { encoding: 'utf8' });
  expect(cmp.stdout).toContain('Images are identical');
}

const json = (o: unknown) => `json:${JSON.stringify(o)}`;
const cmds = (...c: string[]) => c.flatMap((x) => ['-c', x]);

describe('blkdebug against qemu-io', () => {
  it('injects errors on qcow2 events: once, sticky, by sector, after a state change', async () => {
    await compare('qcow2', ['write -P 1 0 128k'], (img) => [
      ...cmds('read -P 1 0 64k', 'read -P 1 0 64k', 'write -P 2 1M 64k', 'read -P 1 64k 64k', 'write -P 3 2M 4k', 'read -P 3 2M 4k'),
      json({
        driver: 'qcow2',
        file: {
          driver: 'blkdebug',
          image: { driver: 'file', filename: img },
          'inject-error': [
            { event: 'read_aio', once: true },
            { event: 'write_aio', errno: 28, state: 2, once: true },
            { event: 'write_aio', sector: 0x60000 / 512, once: true },
          ],
          'set-state': [{ event: 'cluster_alloc', state: 1, new_state: 2 }],
        },
      }),
    ]);
  });

  it('reads a config file from blkdebug:CONFIG:IMAGE names', async () => {
    const conf = '[inject-error]\nevent = "write_aio"\nerrno = "5"\nonce = "on"\n\n[set-state]\nevent = "l2_load"\nstate = "1"\nnew_state = "3"\n';
    await compare('qcow2', ['write -P 7 0 64k'], (img, c) => ['-f', 'qcow2', ...cmds('write -P 8 0 4k', 'write -P 8 0 4k', 'read -P 8 0 4k'), `blkdebug:${c}:${img}`], conf);
  });

  it('holds a request at a breakpoint until resume', async () => {
    await compare('qcow2', [], (img) => [
      '-f', 'qcow2',
      ...cmds('break write_aio A', 'aio_write -P 9 0 4k', 'wait_break A', 'resume A', 'aio_flush', 'read -P 9 0 4k', 'resume B', 'remove_break C', 'break nosuchevent X'),
      `blkdebug::${img}`,
    ]);
  });

  it('gives raw over blkdebug its align and RMW events', async () => {
    await compare('raw', [], (img) => [
      ...cmds('break pwritev_rmw_after_head X', 'aio_write -P 5 100 1000', 'wait_break X', 'resume X', 'aio_flush', 'read -P 5 100 1000', 'read -P 0 0 100'),
      '--image-opts', `driver=raw,file.driver=blkdebug,file.align=4096,file.image.filename=${img}`,
    ]);
  });

  // iotest 077: requests that overlap a read-modify-write cycle wait for it, in QEMU's order of completions.
  it('serialises overlapping read-modify-writes at breakpoints in the order QEMU completes them (077)', async () => {
    const opts = (img: string) => ['--image-opts', `driver=raw,file.driver=blkdebug,file.align=4096,file.image.filename=${img}`];
    // Chained: seven sector writes queue behind a cycle held after its tail read; a tail-only write and an aligned one.
    await compare('raw', [], (img) => [
      ...cmds(
        'break pwritev_rmw_after_tail A', 'aio_write -P 10 0x5000 0x200', 'wait_break A',
        ...[11, 12, 13, 14, 15, 16, 17].map((p, i) => `aio_write -P ${p} ${0x5200 + i * 0x200} 0x200`),
        'sleep 10', 'resume A', 'aio_flush',
        'break pwritev_rmw_tail B', 'aio_write -P 20 0xe000 0x1800', 'wait_break B', 'aio_write -P 21 0xf000 0xc00', 'aio_write -P 22 0xf000 0x1000', 'resume B', 'aio_flush',
        'read -P 10 0x5000 0x200', 'read -P 17 0x5e00 0x200', 'read -P 20 0xe000 0x1000', 'read -P 22 0xf000 0x1000',
      ),
      ...opts(img),
    ]);
    // Two held cycles around one aligned write that overlaps both; then a cycle waiting behind a held aligned write.
    await compare('raw', [], (img) => [
      ...cmds(
        'break pwritev_rmw_after_tail A', 'aio_write -P 10 0x8000 0x200', 'wait_break A',
        'break pwritev_rmw_after_head B', 'aio_write -P 10 0x9e00 0x200', 'wait_break B',
        'aio_write -P 11 0x8800 0x1000', 'resume B', 'sleep 10', 'resume A', 'aio_flush',
        'break pwritev A', 'aio_write -P 10 0x10000 0x800', 'wait_break A',
        'break pwritev_rmw_after_tail B', 'aio_write -P 11 0x10000 0x400',
        'break pwritev_done C', 'resume A', 'wait_break C', 'resume C', 'sleep 10', 'wait_break B', 'resume B', 'aio_flush',
        'read -P 11 0x8800 0x1000', 'read -P 0 0x9800 0x600', 'read -P 11 0x10000 0x400', 'read -P 10 0x10400 0x400',
      ),
      ...opts(img),
    ]);
  });

  // iotest 046: an allocating write over a backing file, held at its copy-on-write events, and a second write into the
  // clusters it allocates. The same events hold it (cow_read, write_aio, cow_write) and the second write waits.
  it('holds copy-on-write allocations at their events and makes later writes to the cluster wait (046)', async () => {
    const base = path.join(dir, 'cow-base.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', base, '4M']);
    spawnSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 1M', base]);
    const run = async (cases: string[]) => {
      const imgs = [path.join(dir, `cow-${++seq}-qemu.qcow2`), path.join(dir, `cow-${seq}-ours.qcow2`)] as const;
      for (const img of imgs) qemuImg(['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', img, '4M']);
      const r = spawnSync('qemu-io', ['-t', 'writeback', ...cmds(...cases), `blkdebug::${imgs[0]}`], { encoding: 'utf8' });
      const o = await ours([...cmds(...cases), `blkdebug::${imgs[1]}`]);
      expect(normalise(o.stdout)).toBe(normalise(r.stdout));
      expect(o.stderr).toBe(r.stderr);
      expect(spawnSync('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', ...imgs], { encoding: 'utf8' }).stdout).toContain('Images are identical');
    };
    await run([
      // Merged reads of both ends, the events in order; then a sequential write into the next cluster.
      'break cow_read A', 'break write_aio B', 'break cow_write C', 'aio_write -P 10 0x18000 0x2000',
      'wait_break A', 'resume A', 'wait_break B', 'resume B', 'wait_break C', 'resume C', 'aio_flush',
      'break write_aio A', 'aio_write -P 20 0x28000 0x2000', 'wait_break A', 'aio_write -P 21 0x2a000 0x10000', 'resume A', 'aio_flush',
      // Two reads (more than 16 KiB between the ends), each its own cow_read.
      'break cow_read A', 'aio_write -P 30 0x41000 0x6000', 'wait_break A', 'break cow_read B', 'resume A', 'wait_break B', 'resume B', 'aio_flush',
      // Reverse sequential, then a larger write over an area being allocated.
      'break write_aio A', 'aio_write -P 121 0x5c000 0x2000', 'wait_break A', 'aio_write -P 120 0x44000 0x18000', 'resume A', 'aio_flush',
      'break write_aio A', 'aio_write -P 161 0x8c000 0x8000', 'wait_break A', 'aio_write -P 160 0x84000 0x18000', 'resume A', 'aio_flush',
      'read -P 10 0x18000 0x2000', 'read -P 21 0x2a000 0x10000', 'read -P 30 0x41000 0x6000', 'read -P 160 0x84000 0x18000',
    ]);
  });

  it('opens null-co through json: and image-opts trees', async () => {
    await compare('raw', [], () => [...cmds('read -v 0 32', 'write 0 4k', 'length'), json({ driver: 'raw', file: { driver: 'null-co', size: 65536, 'read-zeroes': true } })]);
    await compare('raw', [], () => [...cmds('read -P 0 1k 4k', 'length'), '--image-opts', 'driver=null-co,size=1M,read-zeroes=on']);
  });
});
