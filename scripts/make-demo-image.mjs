#!/usr/bin/env node
/**
 * Builds the web app's demo images at build time with blocktab's own engine
 * (the compiled library in dist/, so run `npm run build:ts` first):
 *
 *   public/demo/demo.qcow2          64 MiB qcow2 v3, 64 KiB clusters: data with
 *                                   readable text, zero clusters, compressed
 *                                   clusters, unallocated gaps, and two internal
 *                                   snapshots, "installed" and "configured",
 *                                   whose contents differ from each other and
 *                                   from the current state
 *   public/demo/demo-overlay.qcow2  an overlay backed by it (the map shows a
 *                                   backing layer)
 *
 * The story the data tells: an OS is "installed" (clusters 0–7 and the tail),
 * then "configured" (clusters 8–11 written, a range zeroed), then used
 * (clusters 2–3 rewritten, more data). Applying a snapshot in the app shows
 * the difference in the map and the hex view.
 *
 * Usage: node scripts/make-demo-image.mjs [outdir]   (default public/demo)
 */
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const outDir = resolve(process.argv[2] ?? join(root, 'public/demo'));
const dist = join(root, 'dist');
if (!existsSync(join(dist, 'node.js')) || !existsSync(join(dist, 'engine/engine.js'))) {
  console.error('make-demo-image: the compiled library is missing (dist/node.js); run `npm run build:ts` first');
  process.exit(1);
}
const lib = await import(pathToFileURL(join(dist, 'node.js')).href);
const { Engine } = await import(pathToFileURL(join(dist, 'engine/engine.js')).href);

const MiB = 1024 * 1024;
const CLUSTER = 64 * 1024;

/** Text repeated over `clusters` clusters, one 64-byte line each, so the hex view shows readable ASCII. */
function text(label, firstCluster, clusters = 1) {
  const buf = new Uint8Array(clusters * CLUSTER);
  const enc = new TextEncoder();
  for (let off = 0; off < buf.length; off += 64) {
    const guest = firstCluster * CLUSTER + off;
    const line = `${label} @${guest.toString(16).padStart(8, '0')} `.padEnd(63, '.') + '\n';
    buf.set(enc.encode(line), off);
  }
  return buf;
}

/** A byte ramp mixed with the cluster index: visibly "binary" data. */
function ramp(cluster) {
  const buf = new Uint8Array(CLUSTER);
  for (let i = 0; i < CLUSTER; i++) buf[i] = (i + cluster * 7) & 0xff;
  return buf;
}

const engine = new Engine({ storages: { file: new lib.FileStorage() } });
const base = join(outDir, 'demo.qcow2');
const overlay = join(outDir, 'demo-overlay.qcow2');
mkdirSync(outDir, { recursive: true });
for (const f of [base, overlay]) rmSync(f, { force: true });

await engine.create('file', base, 'qcow2', 64 * MiB, { options: { cluster_size: CLUSTER, compat: '1.1' } });
const node = await engine.open('file', base, { format: 'qcow2' });
const write = (cluster, data) => engine.write(node, cluster * CLUSTER, data);
const zero = (cluster, count) => engine.writeZeroes(node, cluster * CLUSTER, count * CLUSTER);
// Compressed clusters go through the block layer's compressed write (qemu-io write -c).
const compress = (cluster, data) => lib.bdrvPwrite(engine.lookup(node), cluster * CLUSTER, data.length, data, { compressed: true });

// "installed"
await write(0, text('blocktab demo image: cluster 0 (installed)', 0));
for (let i = 1; i < 8; i++) await write(i, text(`installed: data cluster ${i}`, i));
await zero(16, 16);
for (let i = 32; i < 36; i++) await compress(i, text(`compressed cluster ${i}`, i));
for (let i = 64; i < 96; i += 2) {
  await write(i, ramp(i));
  await zero(i + 1, 1);
}
for (let i = 1008; i < 1024; i++) await write(i, text(`installed: tail data cluster ${i}`, i));
await engine.snapshot(node, { create: 'installed' });

// "configured": new data, a zeroed range, more compressed clusters.
await write(8, text('configured: settings', 8, 4));
await zero(4, 2);
for (let i = 256; i < 264; i++) await compress(i, text(`configured: compressed cluster ${i}`, i));
await zero(512, 64);
await engine.snapshot(node, { create: 'configured' });

// The current state: in use since "configured".
await write(0, text('blocktab demo image: cluster 0 (current state)', 0));
await write(2, text('current: rewritten after configured', 2, 2));
await write(128, text('current: user data', 128, 8));
await engine.close(node);

await engine.create('file', overlay, 'qcow2', undefined, { backingFile: 'demo.qcow2', backingFormat: 'qcow2' });
const top = await engine.open('file', overlay, { format: 'qcow2' });
await engine.write(top, 4 * CLUSTER, text('overlay wrote this', 4, 8));
await engine.writeZeroes(top, 600 * CLUSTER, 16 * CLUSTER);
await engine.close(top);
await engine.dispose();

const check = await engine.check({ storage: 'file', filename: base, format: 'qcow2' });
if (check['check-errors'] !== 0 || (check.corruptions ?? 0) !== 0 || (check.leaks ?? 0) !== 0) {
  console.error(`make-demo-image: ${base} does not check clean: ${JSON.stringify(check)}`);
  process.exit(1);
}
console.log(`demo images written to ${outDir}`);
