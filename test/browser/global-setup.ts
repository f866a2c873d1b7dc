/**
 * Node side of the browser suite: makes interop images with qemu-img in a temp
 * directory, records the SHA-256 of each one's `qemu-img convert -O raw`,
 * serves the directory over HTTP with Range support (range-server.ts), and
 * hands the base URL and the expected hashes to the page with provide().
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { TestProject } from 'vitest/node';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu.js';
import { startRangeServer } from './range-server.js';
import { buildDmg } from '../helpers/readonly-images.js';
import { seededBytes } from '../helpers/random.js';
import { conformanceFiles, CONFORMANCE_DIR, type InteropImage, type StorageServerInfo } from './fixtures.js';
import { startWorkloadServer } from './workload-server.js';

const MiB = 1024 * 1024;

function rawHash(dir: string, name: string, format: string): { sha256: string; virtualSize: number } {
  const out = path.join(dir, '.convert.raw');
  qemuImg(['convert', '-f', format, '-O', 'raw', path.join(dir, name), out]);
  const bytes = fs.readFileSync(out);
  fs.rmSync(out);
  return { sha256: createHash('sha256').update(bytes).digest('hex'), virtualSize: bytes.length };
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const dir = tmpDir('blocktab-browser-');
  for (const [name, bytes] of Object.entries(conformanceFiles())) {
    const p = path.join(dir, CONFORMANCE_DIR, name);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, bytes);
  }
  const server = await startRangeServer(dir);
  const at = (n: string) => path.join(dir, n);
  for (const d of ['raw', 'qcow2', 'chain/sub', 'remote']) fs.mkdirSync(at(d), { recursive: true });

  // raw: patterns at aligned and unaligned places, a hole in between.
  qemuImg(['create', '-f', 'raw', at('raw/data.raw'), '4M']);
  qemuIo(at('raw/data.raw'), ['write -P 0x5a 0 64k', 'write -P 0xa5 1000000 70000', 'write -P 0x01 4193792 512'], 'raw');
  // qcow2: data clusters, a partial cluster, an unallocated gap.
  qemuImg(['create', '-f', 'qcow2', at('qcow2/plain.qcow2'), '4M']);
  qemuIo(at('qcow2/plain.qcow2'), ['write -P 0x11 0 64k', 'write -P 0x22 1M 100k', 'write -P 0x33 3146240 1000'], 'qcow2');
  // qcow2 compressed clusters (from the raw image).
  qemuImg(['convert', '-c', '-f', 'raw', '-O', 'qcow2', at('raw/data.raw'), at('qcow2/compressed.qcow2')]);
  // qcow2 zero clusters: allocated then zeroed, and zeroed while unallocated.
  qemuImg(['create', '-f', 'qcow2', at('qcow2/zero.qcow2'), '4M']);
  qemuIo(at('qcow2/zero.qcow2'), ['write -P 0xaa 0 1M', 'write -z 256k 256k', 'write -z 2M 64k', 'write -P 0xbb 3M 4k'], 'qcow2');
  // A backing chain across directories: chain/sub/top.qcow2 -> ../base.qcow2.
  qemuImg(['create', '-f', 'qcow2', at('chain/base.qcow2'), '4M']);
  qemuIo(at('chain/base.qcow2'), ['write -P 0x44 0 2M', 'write -P 0x45 3M 1M'], 'qcow2');
  qemuImg(['create', '-f', 'qcow2', '-b', '../base.qcow2', '-F', 'qcow2', at('chain/sub/top.qcow2')]);
  qemuIo(at('chain/sub/top.qcow2'), ['write -P 0x66 512k 128k', 'write -z 1M 64k', 'write -P 0x67 3500000 3000'], 'qcow2');
  // An overlay whose backing file is the chain's base, named by absolute URL (rebased unsafely after writing).
  qemuImg(['create', '-f', 'qcow2', '-b', '../chain/base.qcow2', '-F', 'qcow2', at('remote/overlay.qcow2')]);
  qemuIo(at('remote/overlay.qcow2'), ['write -P 0x77 64k 64k', 'write -P 0x78 2M 100k'], 'qcow2');
  const overlayHash = rawHash(dir, 'remote/overlay.qcow2', 'qcow2');
  qemuImg(['rebase', '-u', '-b', `${server.baseUrl}chain/base.qcow2`, '-F', 'qcow2', at('remote/overlay.qcow2')]);

  const images: InteropImage[] = [
    { name: 'raw/data.raw', format: 'raw', needs: [] },
    { name: 'qcow2/plain.qcow2', format: 'qcow2', needs: [] },
    { name: 'qcow2/compressed.qcow2', format: 'qcow2', needs: [] },
    { name: 'qcow2/zero.qcow2', format: 'qcow2', needs: [] },
    { name: 'chain/sub/top.qcow2', format: 'qcow2', needs: ['chain/base.qcow2'] },
  ].map((i) => ({ ...i, ...rawHash(dir, i.name, i.format) }) as InteropImage);

  // dmg with bzip2 chunks (Debian's qemu-img 7.2 has no dmg-bz2 module: the expected bytes are the builder's).
  fs.mkdirSync(at('dmg'), { recursive: true });
  const text = new TextEncoder().encode('bzip2 chunk in a browser '.repeat(4000)).subarray(0, 160 * 512);
  const dmg = buildDmg({
    partitions: [[{ kind: 'bzip2', sectors: 160, data: text }, { kind: 'zero', sectors: 24 }, { kind: 'bzip2', sectors: 40, data: seededBytes(40 * 512, 77) }]],
  });
  fs.writeFileSync(at('dmg/udbz.dmg'), dmg.image);
  const bzip2Dmg: InteropImage = { name: 'dmg/udbz.dmg', format: 'dmg', needs: [], virtualSize: dmg.disk.length, sha256: createHash('sha256').update(dmg.disk).digest('hex') };

  const info: StorageServerInfo = {
    baseUrl: server.baseUrl,
    images,
    remoteOverlay: { name: 'remote/overlay.qcow2', format: 'qcow2', needs: [], ...overlayHash },
    bzip2Dmg,
  };
  project.provide('storageServer', info);
  // The workload tests' endpoint: qemu-img check / qemu-io replay / qemu-img compare of images the page sends.
  const workload = await startWorkloadServer();
  project.provide('workloadServer', workload.url);
  // The crash tests: a seeded sample of kill points, or 100 per operation with BLOCKTAB_SWEEP=full (npm run crash).
  project.provide('crashSweep', { full: process.env.BLOCKTAB_SWEEP === 'full', seed: Number(process.env.BLOCKTAB_SEED ?? 20261206) >>> 0 });
  return async () => {
    await workload.close();
    await server.close();
  };
}
