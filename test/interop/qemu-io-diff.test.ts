/**
 * blocktab io against qemu-io 7.2 on raw twins: the same command lines go to
 * qemu-io on one image and to blocktab io on the other; the output lines
 * (timings normalised), the exit status and the final bytes must agree.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { blocktab, qemuImg, repoRoot, tmpDir } from '../helpers/qemu.js';
import { runIo } from '../../src/cli/qemu-io/main.js';
import { rng } from '../helpers/random.js';

const dir = tmpDir('blocktab-qemu-io-');

/** Replaces the timing part of report lines, keeping "64 KiB, 1 ops". */
function normalise(text: string): string {
  return text
    .split('\n')
    .map((l) => l.replace(/^(.*, \d+ ops); .* \(.*\/sec and .* ops\/sec\)$/, '$1; <timing>'))
    // -C: "bytes,ops,H:MM:SS.ss,bytes/sec,ops/sec"
    .map((l) => l.replace(/^(\d+,\d+),\d+:\d\d:[\d.]+,[^,]+,[^,]+$/, '$1,<timing>'))
    .map((l) => l.replace(/^(\d+,\d+),\d+:\d\d:[\d.]+,[^,]+,[^,]+$/, '$1,<timing>'))
    .join('\n');
}

function qemuIoRun(args: string[], input?: string): { status: number; stdout: string; stderr: string } {
  const r = spawnSync('qemu-io', args, { encoding: 'utf8', input });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

async function ours(args: string[], input?: string): Promise<{ status: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const { Readable } = await import('node:stream');
  const status = await runIo(args, { out: (t) => (stdout += t), err: (t) => (stderr += t) }, Readable.from(input ? [input] : []));
  return { status, stdout, stderr };
}

function twins(name: string, size: string): [string, string] {
  const a = path.join(dir, `${name}-qemu.raw`);
  const b = path.join(dir, `${name}-ours.raw`);
  qemuImg(['create', '-q', '-f', 'raw', a, size]);
  qemuImg(['create', '-q', '-f', 'raw', b, size]);
  return [a, b];
}

async function compare(name: string, cmds: string[], opts: { size?: string; fmt?: string | null; stdin?: boolean; readOnly?: boolean } = {}) {
  const [a, b] = twins(name, opts.size ?? '1M');
  const fmtArgs = opts.fmt === null ? [] : ['-f', opts.fmt ?? 'raw'];
  const ro = opts.readOnly ? ['-r'] : [];
  const q = opts.stdin
    ? qemuIoRun([...fmtArgs, ...ro, a], cmds.join('\n') + '\n')
    : qemuIoRun([...fmtArgs, ...ro, ...cmds.flatMap((c) => ['-c', c]), a]);
  const o = opts.stdin
    ? await ours([...fmtArgs, ...ro, b], cmds.join('\n') + '\n')
    : await ours([...fmtArgs, ...ro, ...cmds.flatMap((c) => ['-c', c]), b]);
  expect(normalise(o.stdout)).toBe(normalise(q.stdout));
  expect(o.stderr.replaceAll(b, a)).toBe(q.stderr);
  expect(o.status).toBe(q.status);
  return { a, b, q, o };
}


describe('blocktab io vs qemu-io on raw images', () => {
  it('reports reads, writes, pattern checks and hex dumps the same way', async () => {
    await compare('basic', [
      'write -P 0x41 0 64k',
      'read -P 0x41 0 64k',
      'read -P 0x42 512 1k',
      'read -v 0 40',
      'read -v 65530 20',
      'write -P 0x7a 100 17',
      'read -v 96 30',
      'read -P 0x7a -s 4 -l 17 96 30',
      'read -P 0x7a -s 4 -l 18 96 30',
      'read -q -P 0 1M-4k 4k',
      'write -z 4k 8k',
      'write -z -u 20000 3',
      'read -P 0 4k 8k',
      'write -C 0 1',
      'read 0 16 -v',
      'length',
      'map',
      'alloc 0',
      'alloc 1088 4k',
      'alloc 1048575 2',
      'alloc 1M',
      'info',
      'flush',
      'truncate 2M',
      'length',
      'truncate 1536',
      'length',
    ]);
  });

  it('prints the same errors and exit status for bad requests', async () => {
    await compare('errors', [
      'read 1M 1',
      'read 1048575 2',
      'write 2M 512',
      'write -z 1M 1',
      'discard 1M 1',
      'read 0 3G',
      'read 1x 1',
      'read -P 300 0 1',
      'write -P -1 0 1',
      'read 0',
      'read 0 1 2',
      'read -s 1 0 4',
      'read -P 0 -s 2 -l 3 0 4',
      'read -x 0 1',
      'write -z -P 1 0 1',
      'write -u 0 1',
      'write -n 0 1',
      'write -c 1 512',
      'write -c 0 100',
      'write -c 0 512',
      'write -f -c 0 512',
      'truncate -m foo 2M',
      'truncate',
      'length 1',
      'help nonexist',
      'bogus 0',
      'alloc 9223372036854775808',
      'read 0x 1',
    ]);
  });

  it('parses numbers as qemu-io does (suffixes, fractions, hex, limits)', async () => {
    const values = ['512', '0x200', '1k', '1K', '1.5k', '1.5', '0.5k', '1b', '1kb', '1KiB', '1m', '1g', '1t', '1e', '-1', '010', '1.5e', '1.k', '.5k',
      '1.0000000001k', '9223372036854775807', '18446744073709551616', '8E', '4.5E', '1,5k', '1.2345678k', '0.1', '1.0', '0x1.5k', '+1', '+0x10', '00x10', 'k', '1088', '3.0625k'];
    await compare('numbers', values.map((v) => `alloc ${v}`), { size: '8G' });
  });

  it('reads commands from standard input with the prompt, stops at quit', async () => {
    await compare('stdin', ['write -P 1 0 512', 'read -P 1 0 512', '', 'bogus', 'read 3M 1', 'quit', 'read 0 1'], { stdin: true });
    await compare('stdin-eof', ['write -P 2 1k 1k', 'read -v 1k 32'], { stdin: true });
  });

  it('refuses writes on a read-only image as qemu-io does', async () => {
    await compare('readonly', ['write 0 1', 'discard 0 512', 'truncate 1', 'read -P 0 0 512'], { readOnly: true });
  });

  it('warns about a probed raw image and still writes to it', async () => {
    await compare('probed', ['write -P 0x55 0 512', 'read -P 0x55 0 512'], { fmt: null });
  });

  it('refuses writes that would make a probed raw image look like another format, as qemu-io does (write -s pattern files)', async () => {
    const file = (name: string, bytes: number[]) => {
      const f = path.join(dir, name);
      fs.writeFileSync(f, Uint8Array.from(bytes));
      return f;
    };
    const magic = file('qcow2-magic.bin', [0x51, 0x46, 0x49, 0xfb]);
    const version = file('qcow2-version.bin', [0, 0, 0, 3]);
    const header = file('qcow2-header.bin', [0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3]);
    const qed = file('qed-magic.bin', [0x51, 0x45, 0x44, 0]);
    await compare(
      'probed-header',
      [
        `write -s ${header} 0 512`, // a whole qcow2 header at once
        `write -s ${magic} 0 4`, // the magic alone (version 0: still raw)
        `write -s ${version} 4 4`, // then the version that completes it
        `write -s ${qed} 0 4`, // another format's magic
        `write -s ${header} 512 8`, // past block 0: fine
        'read -P 0 4 4',
        `write -s ${path.join(dir, 'missing.bin')} 0 4`,
      ],
      { fmt: null },
    );
    // Told the format, a raw image takes any bytes.
    await compare('explicit-raw-header', [`write -s ${header} 0 512`, 'read -P 0x51 0 1'], { fmt: 'raw' });
  });

  it('stops at quit and reports open failures', async () => {
    await compare('quit', ['read -P 1 0 1', 'quit', 'read 0 1']);
    const q = qemuIoRun(['-c', 'read 0 1', path.join(dir, 'missing.raw')]);
    const o = await ours(['-c', 'read 0 1', path.join(dir, 'missing.raw')]);
    expect(o.stderr).toBe(q.stderr);
    expect(o.status).toBe(q.status);
  });

  for (const seed of [1, 2, 3, 4, 5, 6]) {
    it(`seeded random workload ${seed}: same output and same bytes`, async () => {
      const size = 1 << 20;
      const r = rng(seed * 7919);
      const model = new Uint8Array(size);
      // Discarded bytes are unspecified (QEMU punches a hole, Node has no fallocate): track what is defined.
      const defined = new Uint8Array(size).fill(1);
      const pick = (max: number, aligned: boolean): number => {
        const v = Math.floor(r() * max);
        return aligned ? v - (v % 512) : v;
      };
      const cmds: string[] = [];
      for (let i = 0; i < 60; i++) {
        const aligned = r() < 0.5;
        const len = Math.max(1, pick(aligned ? 128 * 1024 : 70000, aligned)) || 512;
        const off = Math.min(pick(size, aligned), size - len);
        const kind = r();
        const fmt = (n: number): string => (r() < 0.3 && n % 1024 === 0 && n > 0 ? `${n / 1024}k` : String(n));
        if (kind < 0.45) {
          const p = Math.floor(r() * 256);
          cmds.push(`write -P ${p} ${fmt(off)} ${fmt(len)}`);
          model.fill(p, off, off + len);
          defined.fill(1, off, off + len);
        } else if (kind < 0.6) {
          cmds.push(`write -z${r() < 0.5 ? ' -u' : ''} ${off} ${len}`);
          model.fill(0, off, off + len);
          defined.fill(1, off, off + len);
        } else if (kind < 0.68) {
          cmds.push(`discard ${off} ${len}`);
          defined.fill(0, off, off + len);
        } else {
          if (defined.subarray(off, off + len).includes(0)) continue;
          const p = r() < 0.8 ? model[off]! : Math.floor(r() * 256);
          const v = len <= 64 && r() < 0.5 ? '-v ' : '';
          cmds.push(`read ${v}-P ${p} ${off} ${len}`);
        }
      }
      cmds.push('read 1048000 1000', 'write -P 1 1048570 7', 'flush');
      const { a, b } = await compare(`random-${seed}`, cmds);
      const qa = fs.readFileSync(a);
      const ob = fs.readFileSync(b);
      expect(ob.length).toBe(qa.length);
      for (let i = 0; i < size; i++) {
        if (defined[i] && ob[i] !== qa[i]) throw new Error(`byte ${i} differs: qemu-io ${qa[i]}, blocktab ${ob[i]}`);
        if (defined[i] && ob[i] !== model[i]) throw new Error(`byte ${i} differs from the model`);
      }
    });
  }

  it('the built CLI runs `blocktab io` like qemu-io', () => {
    const main = path.join(repoRoot, 'dist/cli/main.js');
    expect(fs.existsSync(main), `${main} is missing: run 'npm run build:ts' first`).toBe(true);
    const [a, b] = twins('built', '256k');
    const cmds = ['write -P 0x63 1000 3000', 'read -P 0x63 1000 3000', 'read -v 996 8', 'read 256k 1'];
    const q = qemuIoRun(['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), a]);
    const o = blocktab(['io', '-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), b]);
    expect(normalise(o.stdout)).toBe(normalise(q.stdout));
    expect(o.status).toBe(q.status);
    expect(fs.readFileSync(b).equals(fs.readFileSync(a))).toBe(true);
  });
});

describe('blocktab io command-line options vs qemu-io', () => {
  /**
   * Runs both tools with `pre` options before the image and the same -c
   * commands: stderr, status and the image bytes must agree, and stdout too
   * (where qemu-io prints its usage, ours names blocktab io).
   */
  async function sameWithOptions(name: string, pre: string[], cmds: string[]) {
    const [a, b] = twins(name, '1M');
    const q = qemuIoRun([...pre, ...cmds.flatMap((c) => ['-c', c]), a]);
    const o = await ours([...pre, ...cmds.flatMap((c) => ['-c', c]), b]);
    expect(o.stderr.replaceAll(b, a)).toBe(q.stderr);
    expect(o.status).toBe(q.status);
    if (q.stdout.startsWith('Usage: qemu-io')) expect(o.stdout).toMatch(/^Usage: blocktab io /);
    else expect(normalise(o.stdout)).toBe(normalise(q.stdout));
    expect(fs.readFileSync(b).equals(fs.readFileSync(a))).toBe(true);
    return o;
  }
  const cmds = ['write -P 0x33 4k 8k', 'read -P 0x33 4k 8k', 'flush'];

  it('accepts the cache and aio modes qemu-iotests pass (-t/--cache, -i/--aio), long options and their prefixes', async () => {
    await sameWithOptions('cache-wt', ['-f', 'raw', '-t', 'writethrough', '-i', 'threads'], cmds);
    await sameWithOptions('cache-unsafe', ['--format=raw', '--cache=unsafe', '--aio=io_uring'], cmds);
    await sameWithOptions('cache-wb', ['--form', 'raw', '--cache', 'writeback', '--aio', 'threads', '-m'], cmds);
    await sameWithOptions('share-ro', ['-f', 'raw', '-U', '-r'], ['read -P 0 0 4k']);
    await sameWithOptions('share-rw', ['-f', 'raw', '-U'], ['read -P 0 0 4k']);
    await sameWithOptions('attached', ['-fraw', '-twriteback', '-ithreads'], cmds);
  });

  it('O_DIRECT modes (-t none, directsync, -n, with -i native / -k) are accepted and do the same I/O', async () => {
    // qemu-io itself cannot open with O_DIRECT on tmpfs, so these compare with the cached run instead.
    const [, plain] = twins('direct-ref', '1M');
    const ref = await ours(['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), plain]);
    expect(ref.status).toBe(0);
    for (const pre of [['-t', 'none', '-i', 'native'], ['--cache=directsync', '--aio=native'], ['-n', '-k'], ['-t', 'off']]) {
      const [, b] = twins(`direct-${pre.join('')}`, '1M');
      const o = await ours(['-f', 'raw', ...pre, ...cmds.flatMap((c) => ['-c', c]), b]);
      expect({ pre, status: o.status, stderr: o.stderr, out: normalise(o.stdout) }).toEqual({ pre, status: 0, stderr: '', out: normalise(ref.stdout) });
      expect(fs.readFileSync(b).equals(fs.readFileSync(plain))).toBe(true);
    }
  });

  it('refuses bad modes and options with qemu-io messages and status', async () => {
    await sameWithOptions('bad-cache', ['-f', 'raw', '-t', 'foo'], ['read 0 512']);
    await sameWithOptions('bad-aio', ['-f', 'raw', '--aio=foo'], ['read 0 512']);
    await sameWithOptions('native-no-direct', ['-f', 'raw', '-i', 'native'], ['read 0 512']);
    await sameWithOptions('unknown-long', ['-f', 'raw', '--foo'], ['read 0 512']);
    await sameWithOptions('unknown-short', ['-f', 'raw', '-x'], ['read 0 512']);
    await sameWithOptions('noarg-long', ['-f', 'raw', '--read-only=yes'], ['read 0 512']);
    await sameWithOptions('missing-arg', ['-f', 'raw', 'IMG', '--cache'], []);
  });
});

describe('qemu-io vectored, aio and open/close commands (as QEMU iotests use them)', () => {
  it('writev/readv/aio_write/aio_read/aio_flush print and fail like qemu-io', async () => {
    const { a, b } = await compare('vector', [
      'writev -P 0x11 0 512 1k 3k',
      'readv -P 0x11 0 512 1k 3k',
      'readv -P 0x12 0 4k',
      'readv -v 4090 4 4',
      'writev -C -q 8k 1',
      // QEMU completes aio requests in whatever order its thread pool finishes them; one at a time keeps the order defined.
      'aio_write -P 0x22 64k 4k 4k',
      'aio_flush',
      'aio_read -P 0x22 64k 8k',
      'aio_flush',
      'aio_write -z 128k 64k',
      'aio_flush',
      'aio_read -P 0 128k 64k',
      'aio_flush',
      'writev 1047552 2k',
      'readv 1M 1',
      'aio_write -u 0 4k',
      'aio_write -z 0 4k 4k',
      'writev -P -1 0 512',
      'readv 0 1x',
      'aio_read -i 0 1',
      'aio_write -i 0 1',
      'help writev',
    ]);
    expect(fs.readFileSync(b).equals(fs.readFileSync(a))).toBe(true);
  });

  it('open/close between commands, and -s keeps writes out of the image', async () => {
    const [a, b] = twins('openclose', '1M');
    const script = (img: string): string[] => ['-c', 'write -P 0x33 0 4k', '-c', 'close', '-c', 'read 0 512', '-c', `open -o driver=raw ${img}`, '-c', 'read -P 0x33 0 4k', '-c', `open ${img}`, '-c', 'close', '-c', 'open -r -o driver=raw', '-c', 'open -x'];
    const q = qemuIoRun(['-f', 'raw', ...script(a), a]);
    const o = await ours(['-f', 'raw', ...script(b), b]);
    expect(normalise(o.stdout)).toBe(normalise(q.stdout));
    expect(o.stderr.replaceAll(b, a)).toBe(q.stderr);
    expect(o.status).toBe(q.status);
    const snap = ['-c', 'write -P 0x44 0 4k', '-c', 'read -P 0x44 0 4k'];
    const qs = qemuIoRun(['-s', '-f', 'raw', ...snap, a]);
    const os = await ours(['-s', '-f', 'raw', ...snap, b]);
    expect(normalise(os.stdout)).toBe(normalise(qs.stdout));
    expect(os.status).toBe(qs.status);
    expect(fs.readFileSync(b).equals(fs.readFileSync(a))).toBe(true);
    expect(fs.readFileSync(b)[0]).toBe(0x33);
  });

  it('open -o driver=file/host_device checks the kind of file as QEMU does (iotest 226)', async () => {
    const [a, b] = twins('protocols', '64k');
    for (const [drv, file] of [['file', '/dev/null'], ['host_device', 'IMG'], ['file', 'IMG']]) {
      const c = (img: string) => ['-c', `open -r -o driver=${drv},filename=${file === 'IMG' ? img : file}`, '-c', 'read -P 0 0 4k'];
      const q = qemuIoRun(c(a));
      const o = await ours(c(b));
      expect({ drv, file, out: normalise(o.stdout), err: o.stderr.replaceAll(b, a), st: o.status }).toEqual({ drv, file, out: normalise(q.stdout), err: q.stderr, st: q.status });
    }
  });
});

describe('qemu-io read -b / write -b: the VM state area (iotests 022, 026, 029)', () => {
  it('qcow2 keeps it past the disk (the L1 table grows to reach it); the files stay byte-identical to qemu-io\'s', async () => {
    const a = path.join(dir, 'vmstate-qemu.qcow2');
    const b = path.join(dir, 'vmstate-ours.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', a, '6G']);
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', b, '6G']);
    const cmds = [
      'write -b -P 7 4294967296 8192', 'read -b -P 7 4294967296 8192', 'read -b -P 0 0 4096',
      'write -b 10485760 4096', 'read -P 0 10485760 4096', 'read -b -P 0xcd 10485760 4096',
      'write -b 1 512', 'write -b -z 0 512', 'write -b -f 0 512',
    ].flatMap((c) => ['-c', c]);
    const q = qemuIoRun(['-f', 'qcow2', ...cmds, a]);
    const o = await ours(['-f', 'qcow2', ...cmds, b]);
    expect(normalise(o.stdout)).toBe(normalise(q.stdout));
    expect(o.status).toBe(q.status);
    expect(spawnSync('cmp', [a, b]).status).toBe(0);
    expect(qemuImg(['check', b])).toContain('No errors were found');
  });

  it('raw has none: the request fails as qemu-io\'s does', async () => {
    await compare('vmstate-raw', ['write -b 0 512', 'read -b 0 512']);
  });
});
