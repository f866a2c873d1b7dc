/**
 * What QEMU's iotest 026 looks at, against qemu-io 7.2: an error injected by
 * blkdebug at one of qcow2's events while a write allocates (cache mode
 * writethrough, as 026 runs qemu-io). Whether the write fails, what qemu-io
 * reports when it closes the image ("Failed to flush the L2 table cache /
 * refcount block cache"), and what `qemu-img check` then finds, depend on the
 * order in which the driver writes and flushes its metadata and on what a
 * failure leaves behind (QEMU's l2_allocate: refcount block, L2 table, L1
 * entry, each made stable before the data; a failed data write frees its
 * fresh clusters). Twin images, one per tool; qemu-img checks both.
 *
 * The last case runs the built CLI as `qemu-io` with stderr and stdout in one
 * pipe (`2>&1`, as 080 does): C's stdout is fully buffered there, so the
 * close-time messages come before the write's "write failed".
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { cliEntry, qemuImg, qemuImgRun, tmpDir } from '../helpers/qemu.js';
import { runIo } from '../../src/cli/qemu-io/main.js';

const dir = tmpDir('blocktab-026-');
let seq = 0;

const timing = (t: string) => t.replace(/^(.*, \d+ ops); .*$/gm, '$1; <timing>');

function conf(event: string, errno: number, once: boolean): string {
  return `[inject-error]\nevent = "${event}"\nerrno = "${errno}"\nimmediately = "off"\nonce = "${once ? 'on' : 'off'}"\n`;
}

/** Runs `cmds` on twin 1 GiB images (cluster size 1024, as 026) through blkdebug with `config`; both tools' results and checks must agree. */
async function compare(config: string, cmds: string[], prep: string[] = []): Promise<string> {
  const n = ++seq;
  const imgs = [path.join(dir, `${n}-qemu.qcow2`), path.join(dir, `${n}-ours.qcow2`)] as const;
  const confs = [path.join(dir, `${n}-qemu.conf`), path.join(dir, `${n}-ours.conf`)] as const;
  for (let i = 0; i < 2; i++) {
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=1024', imgs[i], '1G']);
    if (prep.length) spawnSync('qemu-io', ['-f', 'qcow2', ...prep.flatMap((c) => ['-c', c]), imgs[i]]);
    fs.writeFileSync(confs[i], config);
  }
  const args = (i: 0 | 1) => ['-t', 'writethrough', ...cmds.flatMap((c) => ['-c', c]), `blkdebug:${confs[i]}:${imgs[i]}`];
  const r = spawnSync('qemu-io', args(0), { encoding: 'utf8' });
  let stdout = '';
  let stderr = '';
  const status = await runIo(args(1), { out: (t) => (stdout += t), err: (t) => (stderr += t) }, Readable.from([]));
  // In process, the tool's name is the test runner's: the prefix QEMU's error_report gives is qemu-io's.
  const fix = (t: string) => t.replaceAll(imgs[1], imgs[0]).replaceAll(confs[1], confs[0]).replace(/^blocktab: /gm, 'qemu-io: ');
  expect(timing(fix(stdout))).toBe(timing(r.stdout));
  expect(fix(stderr)).toBe(r.stderr);
  expect(status).toBe(r.status);
  const checks = imgs.map((img) => {
    const c = qemuImgRun(['check', '--output=json', img]);
    const j = JSON.parse(c.stdout) as Record<string, unknown>;
    return { leaks: j['leaks'] ?? 0, corruptions: j['corruptions'] ?? 0, allocated: j['allocated-clusters'] };
  });
  expect(checks[1]).toEqual(checks[0]);
  return r.stdout + r.stderr;
}

describe('qcow2 error paths against qemu-io (iotest 026)', () => {
  it.each([
    ['l1_update', false],
    ['l2_alloc_write', true],
    ['refblock_load', false],
    ['write_aio', true],
  ])('an error at %s (once: %s) while a write allocates an L2 table', async (event, once) => {
    const out = await compare(conf(event, 5, once), ['write 0 128k']);
    // Every one of these fails the write in QEMU: the L1 entry, the L2 table and its refcount are written before the data.
    expect(out).toContain('write failed: Input/output error');
  });

  it('an error at l2_update on an existing table, and in the VM state area (write -b grows the L1 table)', async () => {
    await compare(conf('l2_update', 28, true), ['write 0 128k'], ['write 0 512']);
    await compare(conf('l2_update', 28, false), ['write -b 0 128k']);
  });

  it('an error at l2_load reports nothing at close: nothing was written, so nothing is flushed', async () => {
    const out = await compare(conf('l2_load', 5, false), ['write 0 128k', 'read 0 128k'], ['write 0 128k']);
    expect(out).not.toContain('Failed to flush');
  });

  it('a data write that failed leaves no leaked clusters (its fresh clusters are freed)', async () => {
    await compare(conf('write_aio', 5, true), ['write 0 1M', 'write 0 1M']);
    await compare(conf('write_aio', 5, true), ['write 512 64k', 'write 512 64k']);
  });

  it("the close-time messages come before stdout's lines when both share a pipe (C stdio buffering)", () => {
    const link = path.join(dir, 'qemu-io');
    if (!fs.existsSync(link)) fs.symlinkSync(cliEntry, link);
    const outs = (['qemu-io', `node ${link}`] as const).map((tool, i) => {
      const img = path.join(dir, `pipe-${i}.qcow2`);
      const c = path.join(dir, `pipe-${i}.conf`);
      qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=1024', img, '1G']);
      fs.writeFileSync(c, conf('l1_update', 28, false));
      const r = spawnSync('sh', ['-c', `${tool} -t writethrough -c 'write 0 4k' -c 'read 0 4k' blkdebug:${c}:${img} 2>&1`], { encoding: 'utf8' });
      return timing(r.stdout.replaceAll(`pipe-${i}`, 'pipe'));
    });
    expect(outs[0]).toMatch(/^qemu-io: Failed to flush the L2 table cache: No space left on device\nqemu-io: Failed to flush the refcount/);
    expect(outs[1]).toBe(outs[0]);
  });
});
