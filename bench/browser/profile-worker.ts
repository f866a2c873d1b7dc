/**
 * Where the time of a read goes, measured inside one worker (no messages):
 * the engine, built as src/worker/engine-worker.ts builds it, next to the
 * layers a read passes through and a bare SyncAccessHandle on the same file.
 * Run with `node bench/browser.bench.mjs --profile`; not part of the figures.
 */
import '../../src/browser.js';
import { Engine } from '../../src/engine/engine.js';
import { OpfsStorage, opfsDriver, type SyncAccessHandle } from '../../src/protocols/opfs.js';
import { BlockBackend } from '../../src/block/backend.js';
import { bdrvPread } from '../../src/block/io.js';
import { createWorkerApi } from '../../src/worker/api.js';
import { initWasm } from '../../src/runtime.js';
import { mapRun } from '../../src/formats/qcow2/cluster-map.js';
import { qcow2Read } from '../../src/formats/qcow2/read.js';
import type { Qcow2State } from '../../src/formats/qcow2/state.js';

async function handle(path: string): Promise<SyncAccessHandle> {
  let dir = await navigator.storage.getDirectory();
  const parts = path.split('/');
  for (const p of parts.slice(0, -1)) dir = await dir.getDirectoryHandle(p);
  const fh = await dir.getFileHandle(parts[parts.length - 1]!);
  return (fh as unknown as { createSyncAccessHandle(o: { mode: string }): Promise<SyncAccessHandle> }).createSyncAccessHandle({ mode: 'read-only' });
}

/** Best-of-5 microseconds per call of `fn(i)` over `n` calls. */
async function per(n: number, fn: (i: number) => unknown): Promise<number> {
  for (let i = 0; i < Math.min(n, 200); i++) await fn(i);
  let best = Infinity;
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) await fn(i);
    best = Math.min(best, performance.now() - t0);
  }
  return (best * 1000) / n;
}

self.onmessage = async (ev: MessageEvent) => {
  const { file } = ev.data as { file: string };
  try {
    await initWasm({ arenaBytes: 64 * 1024 * 1024 });
    const engine = new Engine({ storages: { opfs: new OpfsStorage() } });
    const name = await engine.open('opfs', file, { format: 'qcow2', nodeName: 'p', readOnly: true });
    const root = engine.lookup(name);
    const s = root.state<Qcow2State>();
    const fileNode = root.file!.node;
    const backend = new BlockBackend(root);
    const h = await handle(file);
    const K4 = 4096;
    const M4 = 4 * 1024 * 1024;
    const off = (i: number) => (i % 4096) * K4;
    const fixed = new Uint8Array(M4);
    const hostOf = async (o: number) => (await mapRun(s, o, K4)).host;
    const host0 = await hostOf(0);
    const out: Record<string, number> = {};
    const N = 20000;
    out['empty await'] = await per(N, async () => {});
    out['new Uint8Array(4K)'] = await per(N, () => new Uint8Array(K4));
    out['bare h.read 4K, fixed buffer'] = await per(N, (i) => h.read(fixed.subarray(0, K4), { at: host0 + off(i) }));
    out['bare h.read 4K, fresh buffer'] = await per(N, (i) => h.read(new Uint8Array(K4), { at: host0 + off(i) }));
    out['opfsDriver.preadv 4K'] = await per(N, (i) => opfsDriver.preadv(fileNode, host0 + off(i), K4, fixed));
    out['bdrvPread(file) 4K'] = await per(N, (i) => bdrvPread(fileNode, host0 + off(i), K4, fixed));
    out['mapRun 4K'] = await per(N, (i) => mapRun(s, off(i), K4));
    out['qcow2Read 4K'] = await per(N, (i) => qcow2Read(root, s, off(i), K4, fixed));
    out['bdrvPread(root) 4K'] = await per(N, (i) => bdrvPread(root, off(i), K4, fixed));
    out['backend.read 4K'] = await per(N, (i) => backend.read(off(i), K4, fixed));
    out['engine.read 4K'] = await per(N, (i) => engine.read(name, off(i), K4));
    out['subarray(0, 4K) of 4K'] = await per(N, () => fixed.subarray(0, K4));
    out['performance.now()'] = await per(N, () => performance.now());
    out['new Uint8Array(0)'] = await per(N, () => new Uint8Array(0));
    out['engine.size'] = await per(N, () => engine.size(name));
    out['engine.read 0 bytes'] = await per(N, () => engine.read(name, 0, 0));
    const api = createWorkerApi(engine);
    out['api.read 0 bytes'] = await per(N, () => api.read(name, 0, 0));
    out['api.read 4K'] = await per(N, (i) => api.read(name, off(i), K4));

    const n4 = 64;
    const big = (i: number) => (i % 64) * M4;
    out['new Uint8Array(4M)'] = await per(n4, () => new Uint8Array(M4));
    out['bare h.read 4M, fixed buffer'] = await per(n4, (i) => h.read(fixed, { at: host0 + big(i) }));
    out['bare h.read 4M, fresh buffer'] = await per(n4, (i) => h.read(new Uint8Array(M4), { at: host0 + big(i) }));
    out['mapRun 4M'] = await per(n4, (i) => mapRun(s, big(i), M4));
    out['qcow2Read 4M, fixed buffer'] = await per(n4, (i) => qcow2Read(root, s, big(i), M4, fixed));
    out['engine.read 4M'] = await per(n4, (i) => engine.read(name, big(i), M4));
    h.close();
    await engine.dispose();
    (self as unknown as Worker).postMessage({ result: out });
  } catch (e) {
    (self as unknown as Worker).postMessage({ error: e instanceof Error ? `${e.name}: ${e.message}\n${e.stack}` : String(e) });
  }
};
