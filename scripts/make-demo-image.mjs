#!/usr/bin/env node
/**
 * Builds the web app's demo image at build time: public/demo/demo.qcow2, a
 * 64 MiB qcow2 (v3, 64 KiB clusters) that shows every kind of cluster the
 * allocation map draws — data with recognisable text patterns, zero
 * clusters, unallocated ranges and compressed clusters — plus
 * public/demo/demo-overlay.qcow2, a small overlay backed by it (so the map
 * shows a backing layer).
 *
 * Why a tiny writer of its own: users never need qemu-img, and until
 * blocktab's qcow2 writer is wired into a script this is ~100 lines of plain
 * layout (one L1 entry, one L2 table, one refcount block). The layout is
 * fixed and small, so refcounts are simply "1 for every cluster written".
 *
 * Usage: node scripts/make-demo-image.mjs [outdir]   (default public/demo)
 */
import { deflateRawSync } from 'node:zlib';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const outDir = resolve(process.argv[2] ?? join(root, 'public/demo'));

const CLUSTER_BITS = 16;
const CLUSTER = 1 << CLUSTER_BITS;
const COPIED = 1n << 63n;
const COMPRESSED = 1n << 62n;
const ZERO = 1n;

/** Text repeated over a cluster, one line per 64 bytes, so the hex view shows readable ASCII. */
function textCluster(label, guestOffset) {
  const buf = Buffer.alloc(CLUSTER);
  for (let off = 0; off < CLUSTER; off += 64) {
    const line = `${label} @${(guestOffset + off).toString(16).padStart(8, '0')} `.padEnd(63, '.') + '\n';
    buf.write(line, off, 'latin1');
  }
  return buf;
}

/** A byte ramp (00 01 02 … ff) mixed with the cluster index: visibly "binary" data. */
function rampCluster(index) {
  const buf = Buffer.alloc(CLUSTER);
  for (let i = 0; i < CLUSTER; i++) buf[i] = (i + index * 7) & 0xff;
  return buf;
}

/**
 * Writes one qcow2 image. `clusters` maps guest cluster index to
 * { kind: 'data' | 'zero' | 'compressed', bytes? }. Unlisted clusters stay
 * unallocated (they read from the backing file, or as zeros without one).
 */
function qcow2Image({ virtualSize, clusters, backingFile }) {
  const l2Entries = CLUSTER / 8;
  const l1Size = Math.ceil(virtualSize / (l2Entries * CLUSTER));
  if (l1Size > 1) throw new Error('demo writer keeps to one L2 table');
  // Host layout: header | L1 | refcount table | refcount block | L2 | data…
  const L1_OFF = 1 * CLUSTER;
  const RT_OFF = 2 * CLUSTER;
  const RB_OFF = 3 * CLUSTER;
  const L2_OFF = 4 * CLUSTER;
  const chunks = [];
  let next = 5 * CLUSTER;
  const l2 = Buffer.alloc(CLUSTER);
  // Compressed clusters are packed back to back into shared host clusters, as QEMU does.
  let packOff = -1;
  let packEnd = 0;
  // Refcount of each host cluster: metadata and data clusters have one user; a
  // host cluster holding compressed data has one per compressed cluster in it.
  const refs = new Map([0, 1, 2, 3, 4].map((c) => [c, 1]));
  const ref = (hostOffset) => refs.set(Math.floor(hostOffset / CLUSTER), (refs.get(Math.floor(hostOffset / CLUSTER)) ?? 0) + 1);
  for (const [index, c] of [...clusters.entries()].sort((a, b) => a[0] - b[0])) {
    let entry;
    if (c.kind === 'zero') {
      entry = ZERO;
    } else if (c.kind === 'data') {
      entry = BigInt(next) | COPIED;
      chunks.push([next, c.bytes]);
      ref(next);
      next += CLUSTER;
    } else {
      // QEMU compresses with raw deflate and a 4 KiB window (windowBits -12).
      const z = deflateRawSync(c.bytes, { windowBits: 12, level: 9 });
      if (z.length >= CLUSTER) throw new Error('pattern does not compress');
      if (packOff < 0 || packEnd + z.length > Math.ceil((packOff + 1) / CLUSTER) * CLUSTER) {
        packOff = next;
        packEnd = next;
        next += CLUSTER;
      }
      const host = packEnd;
      chunks.push([host, z]);
      packEnd += z.length;
      ref(host);
      if (Math.floor((packEnd - 1) / CLUSTER) !== Math.floor(host / CLUSTER)) ref(packEnd - 1);
      // Bits 0..x-1: host offset; x..61: additional 512-byte sectors (x = 62 - (cluster_bits - 8)).
      const x = BigInt(62 - (CLUSTER_BITS - 8));
      const nbSectors = BigInt(Math.floor((host + z.length - 1) / 512) - Math.floor(host / 512));
      entry = COMPRESSED | (nbSectors << x) | BigInt(host);
    }
    l2.writeBigUInt64BE(entry, index * 8);
  }
  const fileSize = next;

  const header = Buffer.alloc(CLUSTER);
  header.writeUInt32BE(0x514649fb, 0); // magic "QFI\xfb"
  header.writeUInt32BE(3, 4); // version
  header.writeUInt32BE(CLUSTER_BITS, 20);
  header.writeBigUInt64BE(BigInt(virtualSize), 24);
  header.writeUInt32BE(0, 32); // crypt_method
  header.writeUInt32BE(l1Size, 36);
  header.writeBigUInt64BE(BigInt(L1_OFF), 40);
  header.writeBigUInt64BE(BigInt(RT_OFF), 48);
  header.writeUInt32BE(1, 56); // refcount_table_clusters
  header.writeUInt32BE(0, 60); // nb_snapshots
  header.writeBigUInt64BE(0n, 64); // snapshots_offset
  header.writeUInt32BE(4, 96); // refcount_order: 16-bit refcounts
  header.writeUInt32BE(104, 100); // header_length
  // Header extensions start at 104; a zero type ends the list.
  let ext = 104;
  header.writeUInt32BE(0, ext);
  header.writeUInt32BE(0, ext + 4);
  ext += 8;
  if (backingFile) {
    const name = Buffer.from(backingFile, 'utf8');
    header.writeBigUInt64BE(BigInt(ext), 8);
    header.writeUInt32BE(name.length, 16);
    name.copy(header, ext);
  }

  const l1 = Buffer.alloc(8);
  l1.writeBigUInt64BE(BigInt(L2_OFF) | COPIED, 0);
  const rt = Buffer.alloc(8);
  rt.writeBigUInt64BE(BigInt(RB_OFF), 0);
  const rb = Buffer.alloc(CLUSTER);
  for (const [hc, n] of refs) rb.writeUInt16BE(n, hc * 2);

  const img = Buffer.alloc(fileSize);
  header.copy(img, 0);
  l1.copy(img, L1_OFF);
  rt.copy(img, RT_OFF);
  rb.copy(img, RB_OFF);
  l2.copy(img, L2_OFF);
  for (const [off, bytes] of chunks) bytes.copy(img, off);
  return img;
}

const MiB = 1024 * 1024;
const base = new Map();
const put = (index, kind, bytes) => base.set(index, { kind, bytes });
put(0, 'data', textCluster('blocktab demo image: cluster 0 (data)', 0));
for (let i = 1; i < 8; i++) put(i, 'data', textCluster(`blocktab demo: data cluster ${i}`, i * CLUSTER));
for (let i = 16; i < 32; i++) put(i, 'zero');
for (let i = 32; i < 36; i++) put(i, 'compressed', textCluster(`compressed cluster ${i}`, i * CLUSTER));
for (let i = 64; i < 96; i += 2) {
  put(i, 'data', rampCluster(i));
  put(i + 1, 'zero');
}
for (let i = 256; i < 264; i++) put(i, 'compressed', textCluster(`compressed cluster ${i}`, i * CLUSTER));
for (let i = 512; i < 576; i++) put(i, 'zero');
for (let i = 1008; i < 1024; i++) put(i, 'data', textCluster(`blocktab demo: tail data cluster ${i}`, i * CLUSTER));

const overlay = new Map();
for (let i = 4; i < 12; i++) overlay.set(i, { kind: 'data', bytes: textCluster(`overlay wrote cluster ${i}`, i * CLUSTER) });
for (let i = 600; i < 616; i++) overlay.set(i, { kind: 'zero' });

mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, 'demo.qcow2'), qcow2Image({ virtualSize: 64 * MiB, clusters: base }));
writeFileSync(join(outDir, 'demo-overlay.qcow2'), qcow2Image({ virtualSize: 64 * MiB, clusters: overlay, backingFile: 'demo.qcow2' }));
console.log(`demo images written to ${outDir}`);
