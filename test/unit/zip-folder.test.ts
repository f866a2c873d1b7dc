/**
 * The app's zip of a folder (src/ui/zip-folder.ts) over a fake worker: names
 * from the image stay inside the archive's folder, symlinks and unreadable
 * directories are left out and listed, and the stream python3's zipfile reads
 * holds every file byte for byte, read in chunks of at most 8 MiB.
 */
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { BlocktabClient, InspectTreeEntry } from '../../src/client/index.js';
import { planZip, zipEntryName, zipStream } from '../../src/ui/zip-folder.js';

function fakeClient(tree: InspectTreeEntry[], files: Record<string, Uint8Array>, reads: number[]): BlocktabClient {
  return {
    inspectTree: async () => tree,
    inspectRead: async (_v: unknown, _p: unknown, p: string, off: number, n: number) => {
      reads.push(n);
      const f = files[p];
      if (!f) throw new Error(`no file ${p}`);
      return f.slice(off, off + n);
    },
  } as unknown as BlocktabClient;
}

describe('zip of a folder', () => {
  it('makes names from the image safe path components', () => {
    expect(zipEntryName('a/../b')).toBe('a/__/b');
    expect(zipEntryName('/etc//passwd')).toBe('etc/passwd');
    expect(zipEntryName('x\\y/./z')).toBe('x_y/_/z');
  });

  it('streams the files into a zip python reads back, leaving out links and broken directories', async () => {
    const big = new Uint8Array(9 * 1024 * 1024 + 17);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
    const files: Record<string, Uint8Array> = { '/docs/a.txt': new TextEncoder().encode('alpha\n'), '/docs/sub/big.bin': big, '/docs/../evil': new Uint8Array([1]) };
    const tree: InspectTreeEntry[] = [
      { path: 'a.txt', name: 'a.txt', type: 'file', size: 6, mtime: 1_700_000_000 },
      { path: 'sub/big.bin', name: 'big.bin', type: 'file', size: big.length, mtime: null },
      { path: 'sub', name: 'sub', type: 'dir', size: 0, mtime: null },
      { path: 'link', name: 'link', type: 'symlink', size: 0, mtime: null, target: '/etc' },
      { path: 'loop', name: 'loop', type: 'dir', size: 0, mtime: null, error: 'disk: directory loop is already listed (a directory loop)' },
      { path: '../evil', name: '..', type: 'file', size: 1, mtime: null },
    ];
    const reads: number[] = [];
    const client = fakeClient(tree, files, reads);
    const plan = await planZip(client, { node: 'n' }, null, '/docs');
    expect(plan.files).toBe(3);
    expect(plan.bytes).toBe(6 + big.length + 1);
    expect(plan.skipped).toEqual(['link: a symbolic link', 'loop: disk: directory loop is already listed (a directory loop)']);
    const done: number[] = [];
    const zip = new Uint8Array(await new Response(zipStream(client, { node: 'n' }, null, '/docs/', plan, (n) => done.push(n))).arrayBuffer());
    expect(Math.max(...reads)).toBeLessThanOrEqual(8 * 1024 * 1024);
    expect(done).toEqual([1, 2, 3]);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zipf-'));
    try {
      fs.writeFileSync(path.join(dir, 'f.zip'), zip);
      const out = execFileSync('python3', ['-c', 'import zipfile,sys,json,hashlib; z=zipfile.ZipFile(sys.argv[1]); print(json.dumps({n: hashlib.sha256(z.read(n)).hexdigest() for n in z.namelist()}))', path.join(dir, 'f.zip')]);
      const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
      expect(JSON.parse(out.toString())).toEqual({
        'a.txt': sha(files['/docs/a.txt']!),
        'sub/big.bin': sha(big),
        'sub/': sha(new Uint8Array()),
        '__/evil': sha(new Uint8Array([1])),
      });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
