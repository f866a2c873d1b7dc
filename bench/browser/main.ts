/**
 * The browser bench page: blocktab's engine worker through the client, each
 * figure against a bare baseline (bare-worker.ts) measured in the same page
 * and the same profile. Node (bench/browser.bench.mjs) calls
 * `window.runBench()` and prints the BENCH lines.
 */
import { createClient } from '../../src/client/client.js';

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

function bareEcho(bytes: number): Promise<Uint8Array> {
  return new Promise((resolve) => {
    bare.onmessage = (ev: MessageEvent) => resolve(ev.data as Uint8Array);
    bare.postMessage({ cmd: 'echo', bytes });
  });
}

async function best(runs: number, fn: () => Promise<void>): Promise<number> {
  let min = Infinity;
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await fn();
    min = Math.min(min, performance.now() - t0);
  }
  return min;
}

const mbps = (bytes: number, ms: number) => bytes / MiB / (ms / 1000);
const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

async function runBench(): Promise<{ lines: BenchLine[]; wasm: boolean }> {
  const client = createClient();
  const { wasm } = await client.ready();
  const lines: BenchLine[] = [];
  for (const f of [SEQ, `${DIR}/conv.qcow2`, `${DIR}/copy.bin`]) await client.removeFile('opfs', f).catch(() => {});

  // A fully allocated qcow2 image, written through the engine (4 MiB of non-repeating data per request).
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

  // 1. Sequential read of the guest disk through the worker, 4 MiB requests, each buffer transferred to the page.
  const node = await client.open('opfs', SEQ, { format: 'qcow2', nodeName: 'r', readOnly: true });
  // A reader streams: it keeps a few requests in flight (the bare baseline streams too, without waiting for the page).
  const engineRead = await best(3, async () => {
    const inFlight: Promise<unknown>[] = [];
    for (let off = 0; off < IMAGE_BYTES; off += CHUNK) {
      inFlight.push(client.read(node, off, CHUNK));
      if (inFlight.length >= 4) await inFlight.shift();
    }
    await Promise.all(inFlight);
  });
  const engineReadSerial = await best(3, async () => {
    for (let off = 0; off < IMAGE_BYTES; off += CHUNK) await client.read(node, off, CHUNK);
  });
  const bareRead = await best(3, async () => void (await bareCall({ cmd: 'read', file: SEQ, chunk: CHUNK, bytes: IMAGE_BYTES, transfer: true })));
  const bareLoop = await best(3, async () => void (await bareCall({ cmd: 'read', file: SEQ, chunk: CHUNK, bytes: IMAGE_BYTES, transfer: false })));
  lines.push({
    name: 'browser: qcow2 sequential read through the worker (256 MiB, 4 MiB requests, 4 in flight) vs bare SyncAccessHandle loop + transfer',
    value: round(mbps(IMAGE_BYTES, engineRead), 1),
    unit: 'MiB/s',
    baseline: round(mbps(IMAGE_BYTES, bareRead), 1),
    ratio: round(bareRead / engineRead),
    aim: 'info',
  });
  lines.push({
    name: 'browser: qcow2 sequential read through the worker (256 MiB, 4 MiB requests, one at a time) vs bare SyncAccessHandle loop + transfer',
    value: round(mbps(IMAGE_BYTES, engineReadSerial), 1),
    unit: 'MiB/s',
    baseline: round(mbps(IMAGE_BYTES, bareRead), 1),
    ratio: round(bareRead / engineReadSerial),
    aim: '>= 0.9',
  });
  lines.push({
    name: 'browser: qcow2 sequential read through the worker (4 in flight) vs bare SyncAccessHandle loop (no transfer to the page)',
    value: round(mbps(IMAGE_BYTES, engineRead), 1),
    unit: 'MiB/s',
    baseline: round(mbps(IMAGE_BYTES, bareLoop), 1),
    ratio: round(bareLoop / engineRead),
    aim: 'info',
  });

  // 3. Small request round trip: a 4 KiB read through the client vs a bare postMessage echo with a transferred 4 KiB buffer.
  const N = 2000;
  for (let i = 0; i < 200; i++) await client.read(node, i * 4096, 4096);
  const engineRt = await best(3, async () => {
    for (let i = 0; i < N; i++) await client.read(node, (i % 4096) * 4096, 4096);
  });
  for (let i = 0; i < 200; i++) await bareEcho(4096);
  const bareRt = await best(3, async () => {
    for (let i = 0; i < N; i++) await bareEcho(4096);
  });
  const sizeRt = await best(3, async () => {
    for (let i = 0; i < N; i++) await client.size(node);
  });
  lines.push({
    name: 'browser: size() round trip through the client (comlink and engine lookup, no I/O) vs bare postMessage round trip',
    value: round((sizeRt * 1000) / N, 1),
    unit: 'us/request',
    baseline: round((bareRt * 1000) / N, 1),
    ratio: round(sizeRt / bareRt),
    aim: 'info',
  });
  lines.push({
    name: 'browser: 4 KiB read round trip through the client vs bare postMessage round trip',
    value: round((engineRt * 1000) / N, 1),
    unit: 'us/request',
    baseline: round((bareRt * 1000) / N, 1),
    ratio: round(engineRt / bareRt),
    aim: '<= 1.2',
  });
  await client.close(node);

  // 2. qcow2 -> qcow2 convert within OPFS vs a bare chunked copy of the image file.
  const fileBytes = (await client.info({ storage: 'opfs', filename: SEQ, format: 'qcow2' }))['actual-size'] as number;
  const engineConv = await best(3, async () => {
    await client.removeFile('opfs', `${DIR}/conv.qcow2`).catch(() => {});
    await client.convert([{ storage: 'opfs', filename: SEQ, format: 'qcow2' }], { storage: 'opfs', filename: `${DIR}/conv.qcow2`, format: 'qcow2' });
  });
  const bareCopy = await best(3, async () => void (await bareCall({ cmd: 'copy', file: SEQ, dst: `${DIR}/copy.bin`, chunk: CHUNK })));
  lines.push({
    name: 'browser: qcow2 -> qcow2 convert within OPFS (256 MiB allocated) vs bare chunked SyncAccessHandle copy of the file',
    value: round(mbps(IMAGE_BYTES, engineConv), 1),
    unit: 'MiB/s',
    baseline: round(mbps(fileBytes, bareCopy), 1),
    ratio: round(bareCopy / engineConv),
    aim: '>= 0.8',
  });

  for (const f of [SEQ, `${DIR}/conv.qcow2`, `${DIR}/copy.bin`]) await client.removeFile('opfs', f).catch(() => {});
  client.terminate();
  bare.terminate();
  return { lines, wasm };
}

(window as unknown as { runBench: typeof runBench }).runBench = runBench;
(window as unknown as { benchReady: boolean }).benchReady = true;
