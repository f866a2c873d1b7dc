/**
 * The browser bench page: blocktab's engine worker through the client, each
 * figure against a bare baseline (bare-worker.ts) measured in the same page
 * and the same profile. Node (bench/browser.bench.mjs) calls
 * `window.runBench()` and prints the BENCH lines.
 */
import * as Comlink from 'comlink';
import { createClient } from '../../src/client/client.js';
import type { Probes } from './probe-worker.js';
import type { EngineWorkerApi, IoPortReply, IoPortRequest } from '../../src/worker/api.js';

const MiB = 1024 * 1024;
const IMAGE_BYTES = 256 * MiB;
const CHUNK = 4 * MiB;
const DIR = 'blocktab-bench';
const SEQ = `${DIR}/seq.qcow2`;

export interface BenchLine {
  name: string;
  value: number;
  unit: string;
  baseline: number;
  ratio: number;
  aim: string;
  note?: string;
}

const bare = new Worker(new URL('./bare-worker.ts', import.meta.url), { type: 'module' });

/** Sends one command to the bare worker; resolves on its `done` (counting transferred chunks on the way). */
function bareCall(msg: Record<string, unknown>): Promise<{ done: number; chunks: number }> {
  return new Promise((resolve, reject) => {
    let chunks = 0;
    bare.onmessage = (ev: MessageEvent) => {
      const d = ev.data as { chunk?: Uint8Array; done?: number; error?: string };
      if (d.error) reject(new Error(d.error));
      else if (d.chunk) chunks++;
      else if (d.done !== undefined) resolve({ done: d.done, chunks });
    };
    bare.postMessage(msg);
  });
}

function bareEcho(bytes: number, at?: number, cmd = at === undefined ? 'echo' : 'echo-read'): Promise<Uint8Array> {
  return new Promise((resolve) => {
    bare.onmessage = (ev: MessageEvent) => resolve(ev.data as Uint8Array);
    bare.postMessage({ cmd, bytes, at });
  });
}

/** Milliseconds `fn` takes. */
async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/**
 * Best (lowest) milliseconds of each contender over `rounds` interleaved
 * rounds (a, b, c, a, b, c, …) after one warm-up round, as
 * bench/wasm-kernels.bench.mjs does: a burst of load from other processes on
 * this shared machine hits every contender alike. A contender returns the
 * milliseconds of its timed part (so set-up such as removing the previous
 * output stays outside).
 */
async function interleaved<K extends string>(rounds: number, contenders: Record<K, () => Promise<number>>): Promise<Record<K, number>> {
  const keys = Object.keys(contenders) as K[];
  const best = Object.fromEntries(keys.map((k) => [k, Infinity])) as Record<K, number>;
  for (let r = 0; r <= rounds; r++) {
    for (const k of keys) {
      const ms = await contenders[k]();
      if (r > 0) best[k] = Math.min(best[k], ms);
    }
  }
  return best;
}

/**
 * Microseconds per request of each contender for small requests: each round
 * runs `n` requests of every contender in turn (a, b, c, a, b, c, …); best
 * round of `rounds`, after a warm-up round. (Finer interleaving, blocks of
 * 50, was tried: switching workers that often makes the idle one's wake-ups
 * dominate and inflates the engine worker's figures twofold.)
 */
async function interleavedRequests<K extends string>(rounds: number, n: number, contenders: Record<K, (i: number) => Promise<unknown>>): Promise<Record<K, number>> {
  const keys = Object.keys(contenders) as K[];
  const best = Object.fromEntries(keys.map((k) => [k, Infinity])) as Record<K, number>;
  for (let r = 0; r <= rounds; r++) {
    const sum = Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;
    for (const k of keys) {
      const t0 = performance.now();
      for (let i = 0; i < n; i++) await contenders[k](i);
      sum[k] += performance.now() - t0;
    }
    if (r > 0) for (const k of keys) best[k] = Math.min(best[k], (sum[k] * 1000) / n);
  }
  return best;
}

const mbps = (bytes: number, ms: number) => bytes / MiB / (ms / 1000);
const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

type Client = ReturnType<typeof createClient>;

/**
 * Reads on the worker API's `ioPort` channel (no comlink on the path): what
 * a client fast path for small requests sends and receives.
 */
async function ioPortReader(remote: Comlink.Remote<Pick<EngineWorkerApi, 'ioPort'>>) {
  const { port1, port2 } = new MessageChannel();
  await remote.ioPort(Comlink.transfer(port2, [port2]));
  const pending = new Map<number, { resolve: (b: Uint8Array) => void; reject: (e: Error) => void }>();
  let nextId = 0;
  port1.onmessage = (ev: MessageEvent) => {
    const [id, data, error] = ev.data as IoPortReply;
    const p = pending.get(id)!;
    pending.delete(id);
    if (data) p.resolve(data);
    else p.reject(new Error(error!.message));
  };
  return (name: string, offset: number, bytes: number) =>
    new Promise<Uint8Array>((resolve, reject) => {
      const id = ++nextId;
      pending.set(id, { resolve, reject });
      port1.postMessage([id, name, offset, bytes] satisfies IoPortRequest);
    });
}

/** A fully allocated qcow2 image at SEQ, written through the engine (4 MiB of non-repeating data per request). */
async function makeImage(client: Client): Promise<void> {
  for (const f of [SEQ, `${DIR}/conv.qcow2`, `${DIR}/copy.bin`]) await client.removeFile('opfs', f).catch(() => {});
  await client.create('opfs', SEQ, 'qcow2', IMAGE_BYTES);
  const w = await client.open('opfs', SEQ, { format: 'qcow2', nodeName: 'w' });
  const block = new Uint8Array(64 * 1024);
  crypto.getRandomValues(block);
  for (let off = 0; off < IMAGE_BYTES; off += CHUNK) {
    const b = new Uint8Array(CHUNK);
    for (let i = 0; i < CHUNK; i += block.length) b.set(block, i);
    new DataView(b.buffer).setUint32(0, off);
    await client.write(w, off, b);
  }
  await client.close(w);
}

async function runBench(): Promise<{ lines: BenchLine[]; wasm: boolean }> {
  const client = createClient();
  const { wasm } = await client.ready();
  const lines: BenchLine[] = [];
  await makeImage(client);

  // 1. Sequential read of the guest disk through the worker, 4 MiB requests, each buffer transferred to the page.
  const node = await client.open('opfs', SEQ, { format: 'qcow2', nodeName: 'r', readOnly: true });
  const seq = await interleaved(5, {
    // A reader that streams keeps a few requests in flight (the bare baseline streams too, without waiting for the page).
    stream: () =>
      timed(async () => {
        const inFlight: Promise<unknown>[] = [];
        for (let off = 0; off < IMAGE_BYTES; off += CHUNK) {
          inFlight.push(client.read(node, off, CHUNK));
          if (inFlight.length >= 4) await inFlight.shift();
        }
        await Promise.all(inFlight);
      }),
    serial: () =>
      timed(async () => {
        for (let off = 0; off < IMAGE_BYTES; off += CHUNK) await client.read(node, off, CHUNK);
      }),
    bareTransfer: () => timed(() => bareCall({ cmd: 'read', file: SEQ, chunk: CHUNK, bytes: IMAGE_BYTES, transfer: true })),
    bareLoop: () => timed(() => bareCall({ cmd: 'read', file: SEQ, chunk: CHUNK, bytes: IMAGE_BYTES, transfer: false })),
  });
  lines.push({
    name: 'browser: qcow2 sequential read through the worker (256 MiB, 4 MiB requests, 4 in flight) vs bare SyncAccessHandle loop + transfer',
    value: round(mbps(IMAGE_BYTES, seq.stream), 1),
    unit: 'MiB/s',
    baseline: round(mbps(IMAGE_BYTES, seq.bareTransfer), 1),
    ratio: round(seq.bareTransfer / seq.stream),
    aim: 'info',
  });
  lines.push({
    name: 'browser: qcow2 sequential read through the worker (256 MiB, 4 MiB requests, one at a time) vs bare SyncAccessHandle loop + transfer',
    value: round(mbps(IMAGE_BYTES, seq.serial), 1),
    unit: 'MiB/s',
    baseline: round(mbps(IMAGE_BYTES, seq.bareTransfer), 1),
    ratio: round(seq.bareTransfer / seq.serial),
    aim: '>= 0.9',
  });
  lines.push({
    name: 'browser: qcow2 sequential read through the worker (4 in flight) vs bare SyncAccessHandle loop (no transfer to the page)',
    value: round(mbps(IMAGE_BYTES, seq.stream), 1),
    unit: 'MiB/s',
    baseline: round(mbps(IMAGE_BYTES, seq.bareLoop), 1),
    ratio: round(seq.bareLoop / seq.stream),
    aim: 'info',
  });

  // 3. Small request round trip. The baseline that does the same work is a bare postMessage round trip whose
  // reply carries 4 KiB read from the same file with a SyncAccessHandle (the worker keeps it open, as an open
  // image does); the empty echo (a fresh 4 KiB buffer, no read) is reported too.
  const N = 2000;
  const at = (i: number) => (i % 4096) * 4096;
  await bareCall({ cmd: 'hold', file: SEQ });
  const portRead = await ioPortReader(client.remote);
  const rt = await interleavedRequests(5, N, {
    echo: () => bareEcho(4096),
    // The guest's 4 KiB lies inside the file's data clusters; any 4 KiB of the file costs the same to read.
    echoRead: (i) => bareEcho(4096, 3 * 65536 + at(i)),
    read: (i) => client.read(node, at(i), 4096),
    size: () => client.size(node),
    port: (i) => portRead(node, at(i), 4096),
  });
  await bareCall({ cmd: 'hold' });
  const us = (x: number) => round(x, 1);
  lines.push({
    name: 'browser: size() round trip through the client (comlink and engine lookup, no I/O) vs bare postMessage round trip',
    value: us(rt.size),
    unit: 'us/request',
    baseline: us(rt.echo),
    ratio: round(rt.size / rt.echo),
    aim: 'info',
  });
  lines.push({
    name: 'browser: 4 KiB read round trip through the client vs bare postMessage round trip with the same 4 KiB SyncAccessHandle read',
    value: us(rt.read),
    unit: 'us/request',
    baseline: us(rt.echoRead),
    ratio: round(rt.read / rt.echoRead),
    aim: '<= 1.2',
  });
  lines.push({
    name: "browser: 4 KiB read round trip on the worker API's ioPort (no comlink: the client fast path) vs bare postMessage round trip with the same 4 KiB read",
    value: us(rt.port),
    unit: 'us/request',
    baseline: us(rt.echoRead),
    ratio: round(rt.port / rt.echoRead),
    aim: 'info',
  });
  lines.push({
    name: 'browser: 4 KiB read round trip through the client vs bare postMessage echo (no read)',
    value: us(rt.read),
    unit: 'us/request',
    baseline: us(rt.echo),
    ratio: round(rt.read / rt.echo),
    aim: 'info',
  });
  await client.close(node);

  // 2. qcow2 -> qcow2 convert within OPFS vs a bare chunked copy of the image file.
  const fileBytes = (await client.info({ storage: 'opfs', filename: SEQ, format: 'qcow2' }))['actual-size'] as number;
  const conv = await interleaved(5, {
    convert: async () => {
      await client.removeFile('opfs', `${DIR}/conv.qcow2`).catch(() => {});
      return timed(() =>
        client.convert([{ storage: 'opfs', filename: SEQ, format: 'qcow2' }], { storage: 'opfs', filename: `${DIR}/conv.qcow2`, format: 'qcow2' }),
      );
    },
    // Both outputs are new files: the previous round's is removed outside the timed part.
    copy: async () => {
      await client.removeFile('opfs', `${DIR}/copy.bin`).catch(() => {});
      return timed(() => bareCall({ cmd: 'copy', file: SEQ, dst: `${DIR}/copy.bin`, chunk: CHUNK }));
    },
  });
  lines.push({
    name: 'browser: qcow2 -> qcow2 convert within OPFS (256 MiB allocated) vs bare chunked SyncAccessHandle copy of the file',
    value: round(mbps(IMAGE_BYTES, conv.convert), 1),
    unit: 'MiB/s',
    baseline: round(mbps(fileBytes, conv.copy), 1),
    ratio: round(conv.copy / conv.convert),
    aim: '>= 0.8',
  });

  for (const f of [SEQ, `${DIR}/conv.qcow2`, `${DIR}/copy.bin`]) await client.removeFile('opfs', f).catch(() => {});
  client.terminate();
  bare.terminate();
  return { lines, wasm };
}

/** Per-layer timings of a read inside one worker (bench/browser/profile-worker.ts). */
async function runProfile(): Promise<Record<string, number>> {
  const client = createClient();
  await client.ready();
  await makeImage(client);
  // Round trips through the client, split by what the worker does: nothing (size), an empty read, a 4 KiB read.
  const node = await client.open('opfs', SEQ, { format: 'qcow2', nodeName: 'r', readOnly: true });
  await bareCall({ cmd: 'hold', file: SEQ });
  const N = 2000;
  const rt = await interleavedRequests(7, N, {
    'page: bare round trip, no buffer': () => bareEcho(4096, undefined, 'num'),
    'page: bare echo, 0-byte buffer': () => bareEcho(0),
    'page: bare echo': () => bareEcho(4096),
    'page: bare echo + 4K read': (i) => bareEcho(4096, 3 * 65536 + (i % 4096) * 4096),
    'page: client.size': () => client.size(node),
    'page: client.read 0 bytes': () => client.read(node, 0, 0),
    'page: client.read 4K': (i) => client.read(node, (i % 4096) * 4096, 4096),
  });
  await bareCall({ cmd: 'hold' });
  await client.close(node);
  client.terminate();

  // The same call shapes against probe-worker.ts: comlink without the engine, the engine without a transfer.
  const pw = new Worker(new URL('./probe-worker.ts', import.meta.url), { type: 'module' });
  const probe = Comlink.wrap<Probes>(pw);
  await probe.ready();
  const pn = await probe.open('opfs', SEQ, { format: 'qcow2', nodeName: 'r', readOnly: true });
  const portRead = await ioPortReader(probe);
  // The channel answers errors too: a read past the end is refused as through comlink.
  const refused = await portRead(pn, IMAGE_BYTES, 4096).then(() => 'nothing', (e: Error) => e.message);
  if (!refused.includes('past the end')) throw new Error(`ioPort: a read past the end answered ${refused}`);
  Object.assign(
    rt,
    await interleavedRequests(7, N, {
      'probe: size': () => probe.size(pn),
      'probe: three args, number back': () => probe.three(pn, 0, 0),
      'probe: fresh 0-byte buffer back': () => probe.freshBuffer(pn, 0, 0),
      'probe: fresh 4K buffer back': () => probe.freshBuffer(pn, 0, 4096),
      'probe: api.read 0': () => probe.read(pn, 0, 0),
      'probe: api.read 4K': (i) => probe.read(pn, (i % 4096) * 4096, 4096),
      'probe: api.ioPort read 4K': (i) => portRead(pn, (i % 4096) * 4096, 4096),
      'probe: engine.read 4K cloned': (i) => probe.readCloned(pn, (i % 4096) * 4096, 4096),
    }),
  );
  await probe.close(pn);
  const w = new Worker(new URL('./profile-worker.ts', import.meta.url), { type: 'module' });
  const result = await new Promise<Record<string, number>>((resolve, reject) => {
    w.onmessage = (ev: MessageEvent) => {
      const d = ev.data as { result?: Record<string, number>; error?: string };
      if (d.error) reject(new Error(d.error));
      else resolve(d.result!);
    };
    w.postMessage({ file: SEQ });
  });
  w.terminate();
  await probe.removeFile('opfs', SEQ);
  pw.terminate();
  Object.assign(result, rt);
  return result;
}

(window as unknown as { runProfile: typeof runProfile }).runProfile = runProfile;
(window as unknown as { runBench: typeof runBench }).runBench = runBench;
(window as unknown as { benchReady: boolean }).benchReady = true;
