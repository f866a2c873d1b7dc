/**
 * blocktab check vs qemu-img check on twins of clean, leaking and corrupted
 * images: the same messages (stderr), summary (human and JSON) and exit
 * code; after `-r leaks` / `-r all` on both twins the same repair report,
 * the same verdict of a later `qemu-img check`, and the same guest data.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { qemuImg, qemuImgRun, qemuIo, tmpDir } from '../helpers/qemu.js';
import { main } from '../../src/cli/main.js';

const dir = tmpDir('check-qemu-');

async function bt(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const status = await main(args, { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s) });
  return { status, stdout, stderr };
}

/** Writes a big-endian integer of `bytes` bytes at `offset`. */
function poke(file: string, offset: number, value: bigint, bytes: 2 | 8): void {
  const b = Buffer.alloc(bytes);
  if (bytes === 2) b.writeUInt16BE(Number(value));
  else b.writeBigUInt64BE(value);
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, b, 0, bytes, offset);
  fs.closeSync(fd);
}

const COPIED = 1n << 63n;
/**
 * 4 MiB image, 64 KiB clusters: 0 header, 1 refcount table, 2 refcount
 * block, 3 L1, 4 L2, 5-6 data (guest 0-128k), 7 data (guest 1M).
 */
function base(file: string, extra: string[] = []): void {
  qemuImg(['create', '-q', '-f', 'qcow2', ...extra, file, '4M']);
  qemuIo(file, ['write -P 0x11 0 128k', 'write -P 0x22 1M 64k'], 'qcow2');
}
const RB = 0x20000;
const L1 = 0x30000;
const L2 = 0x40000;

const cases: Record<string, (f: string) => void> = {
  clean: (f) => base(f),
  'leaked data cluster (L2 entry dropped)': (f) => {
    base(f);
    poke(f, L2 + 16 * 8, 0n, 8);
  },
  'refcount raised (leak and COPIED mismatch)': (f) => {
    base(f);
    poke(f, RB + 2 * 5, 2n, 2);
  },
  'refcount of a data cluster 0': (f) => {
    base(f);
    poke(f, RB + 2 * 5, 0n, 2);
  },
  'L2 entry outside the file': (f) => {
    base(f);
    poke(f, L2 + 8, COPIED | 0x10000000n, 8);
  },
  'L2 entry unaligned': (f) => {
    base(f);
    poke(f, L2 + 8, COPIED | 0x60200n, 8);
  },
  'COPIED missing on a data cluster': (f) => {
    base(f);
    poke(f, L2, 0x50000n, 8);
  },
  'COPIED missing on an L2 table': (f) => {
    base(f);
    poke(f, L1, 0x40000n, 8);
  },
  'L1 entry outside the file': (f) => {
    base(f);
    poke(f, L1, COPIED | 0x10000000n, 8);
  },
  'refcount block outside the file': (f) => {
    base(f);
    poke(f, 0x10000, 0x10000000n, 8);
  },
  'refcount block unaligned': (f) => {
    base(f);
    poke(f, 0x10000, 0x20200n, 8);
  },
  'preallocated zero cluster unaligned': (f) => {
    base(f);
    poke(f, L2 + 2 * 8, COPIED | 0x70200n | 1n, 8);
  },
  'L2 entry with reserved bits': (f) => {
    base(f);
    poke(f, L2, COPIED | 0x50000n | 0x2n, 8);
  },
  'snapshot sharing clusters, refcount too low': (f) => {
    base(f);
    qemuImg(['snapshot', '-c', 'snap', f]);
    // The L2 table is shared by both L1 tables (refcount 2): make it 1.
    poke(f, RB + 2 * 4, 1n, 2);
  },
  'compressed clusters': (f) => {
    const raw = `${f}.raw`;
    fs.writeFileSync(raw, Buffer.alloc(1 << 20, 0x5a));
    qemuImg(['convert', '-c', '-f', 'raw', '-O', 'qcow2', raw, f]);
  },
  'extended L2, leaked cluster': (f) => {
    base(f, ['-o', 'extended_l2=on']);
    poke(f, L2 + 16 * 16, 0n, 8);
  },
  'refcount_bits=1, leak': (f) => {
    base(f, ['-o', 'refcount_bits=1']);
    poke(f, L2 + 16 * 8, 0n, 8);
  },
};

function twins(name: string, make: (f: string) => void, tag: string): { ours: string; theirs: string } {
  const d = path.join(dir, `${name.replace(/\W+/g, '-')}-${tag}`);
  fs.mkdirSync(d);
  // Same file name in two directories, so the messages and JSON match byte for byte.
  fs.mkdirSync(path.join(d, 'o'));
  fs.mkdirSync(path.join(d, 't'));
  const ours = path.join(d, 'o', 'img.qcow2');
  const theirs = path.join(d, 't', 'img.qcow2');
  make(theirs);
  fs.copyFileSync(theirs, ours);
  return { ours, theirs };
}

describe('check: same verdict as qemu-img check', () => {
  for (const [name, make] of Object.entries(cases)) {
    it(name, async () => {
      const { ours, theirs } = twins(name, make, 'ro');
      for (const output of ['human', 'json']) {
        const t = qemuImgRun(['check', `--output=${output}`, 'img.qcow2'], { cwd: path.dirname(theirs) });
        const o = await bt(['check', `--output=${output}`, ours]);
        expect(o.status).toBe(t.status);
        expect(o.stdout).toBe(t.stdout.replaceAll('img.qcow2', ours));
        expect(o.stderr).toBe(t.stderr.replace(/^qemu-img: /gm, 'blocktab: '));
      }
    });
  }
});

describe('check -r: same repairs as qemu-img check -r', () => {
  for (const [name, make] of Object.entries(cases)) {
    for (const mode of ['leaks', 'all']) {
      it(`${name}, -r ${mode}`, async () => {
        const { ours, theirs } = twins(name, make, mode);
        const t = qemuImgRun(['check', '-r', mode, 'img.qcow2'], { cwd: path.dirname(theirs) });
        const o = await bt(['check', '-r', mode, ours]);
        if (name === 'refcount block unaligned' && mode === 'all') {
          // QEMU marks the image corrupt on the unaligned block and then cannot write the
          // rebuilt structure ("ERROR writing refblock"); we rebuild it and the image is clean.
          expect(t.status).toBe(1);
          expect(t.stderr).toContain('ERROR writing refblock');
          expect(o.status).toBe(0);
          expect(o.stderr).toContain('Rebuilding refcount structure');
          expect(qemuImgRun(['check', ours]).status).toBe(0);
          return;
        }
        expect(o.status).toBe(t.status);
        expect(o.stderr).toBe(t.stderr.replace(/^qemu-img: /gm, 'blocktab: '));
        // Where the repair report and summary are QEMU's word for word.
        const norm = (s: string) => s.replace(/^Image end offset: \d+$/m, 'Image end offset: N');
        expect(norm(o.stdout)).toBe(norm(t.stdout.replaceAll('img.qcow2', ours)));
        // Afterwards qemu-img judges both the same way, and the guest sees the same data.
        const after = qemuImgRun(['check', ours]);
        const afterTheirs = qemuImgRun(['check', theirs]);
        expect(after.status).toBe(afterTheirs.status);
        if (afterTheirs.status === 0) {
          expect(qemuImgRun(['compare', '-f', 'qcow2', '-F', 'qcow2', ours, theirs]).status).toBe(0);
        }
      });
    }
  }
});

describe('check: other formats and bad arguments', () => {
  it('raw: "This image format does not support checks", exit 63', async () => {
    const f = path.join(dir, 'r.raw');
    fs.writeFileSync(f, Buffer.alloc(4096));
    const o = await bt(['check', '-f', 'raw', f]);
    const t = qemuImgRun(['check', '-f', 'raw', f]);
    expect(t.status).toBe(63);
    expect(o.status).toBe(63);
    expect(o.stderr).toBe(t.stderr.replace(/^qemu-img: /, 'blocktab: '));
  });
  it('-r with an unknown mode', async () => {
    const o = await bt(['check', '-r', 'foo', path.join(dir, 'r.raw')]);
    expect(o.status).toBe(1);
    expect(o.stderr).toBe("blocktab: Unknown option value for -r (expecting 'leaks' or 'all'): foo\n");
  });
  it('-q prints nothing and keeps the exit code', async () => {
    const { ours } = twins('quiet', cases['refcount of a data cluster 0']!, 'q');
    const o = await bt(['check', '-q', ours]);
    expect(o.status).toBe(2);
    expect(o.stdout).toBe('');
  });
});
