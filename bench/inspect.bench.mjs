// Looking inside an ext4 image (issue 17): listing a directory of 10,000
// files, and extracting a 200 MiB file, with blocktab (`ls -l`, `cat` on a
// raw image) against debugfs (`ls -l`, `dump`) on the same image in the same
// run, best of three, interleaved. Aim: at most 1.5× debugfs's time.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { bench, best, MiB, runBlocktab, scratchDir } from './lib.mjs';

const dir = scratchDir();
const src = path.join(dir, 'src');
fs.mkdirSync(path.join(src, 'many'), { recursive: true });
for (let i = 0; i < 10_000; i++) fs.writeFileSync(path.join(src, 'many', `file-${i}.txt`), `file ${i}\n`);
const big = Buffer.alloc(200 * MiB);
for (let o = 0; o < big.length; o += 65536) big.set(crypto.getRandomValues(new Uint8Array(65536)), o);
fs.writeFileSync(path.join(src, 'big.bin'), big);
const img = path.join(dir, 'ext4.img');
const mk = spawnSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-d', src, img, '300M'], { stdio: 'ignore' });
if (mk.status !== 0) throw new Error('mke2fs failed');
fs.rmSync(src, { recursive: true, force: true });

function debugfs(cmd) {
  const t0 = performance.now();
  const r = spawnSync('debugfs', ['-R', cmd, img], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'], maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`debugfs ${cmd} failed`);
  return performance.now() - t0;
}

function figure(name, ours, theirs) {
  const b = best(3, ours);
  const q = best(3, theirs);
  bench({ name, value: Math.round(b.ms ?? b), unit: 'ms', baseline: Math.round(q), ratio: +((b.ms ?? b) / q).toFixed(2), aim: '<=1.5x debugfs' });
}

figure('inspect: ls -l of a 10,000-file ext4 directory vs debugfs ls -l', () => runBlocktab(dir, ['ls', '-l', '-f', 'raw', img, '/many']), () => debugfs('ls -l /many'));
// The same listing in a running engine (what the app's worker pays: no
// process start-up), from opening the image to the sorted entries with their
// inodes, each round on a fresh open so no cache carries over.
const { FileStorage, openImage, closeNode } = await import('../dist/node.js');
const { openVolumeFileSystem, listPath } = await import('../dist/inspect/index.js');
async function listInEngine() {
  const t0 = performance.now();
  const bs = await openImage(new FileStorage(), img, { readOnly: true, format: 'raw' });
  const vol = await openVolumeFileSystem(bs);
  const n = (await listPath(vol.fs, '/many')).length;
  await vol.close();
  await closeNode(bs);
  if (n !== 10_000) throw new Error(`listed ${n} entries`);
  return performance.now() - t0;
}
await listInEngine();
let engineMs = Infinity;
for (let i = 0; i < 5; i++) engineMs = Math.min(engineMs, await listInEngine());
const dbg = best(3, () => debugfs('ls -l /many'));
bench({
  name: 'inspect: list a 10,000-file ext4 directory in a running engine (the app) vs debugfs ls -l',
  value: Math.round(engineMs),
  unit: 'ms',
  baseline: Math.round(dbg),
  ratio: +(engineMs / dbg).toFixed(2),
  aim: '<=1.5x debugfs',
});

const out = path.join(dir, 'out.bin');
figure(
  'inspect: extract a 200 MiB file vs debugfs dump',
  () => runBlocktab(dir, ['cat', '-f', 'raw', img, '/big.bin']),
  () => {
    const ms = debugfs(`dump /big.bin ${out}`);
    fs.rmSync(out, { force: true });
    return ms;
  },
);
fs.rmSync(dir, { recursive: true, force: true });
