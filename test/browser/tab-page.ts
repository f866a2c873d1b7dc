/**
 * A second tab for the browser tests (tab.html, opened by tab-commands.ts):
 * its own engine worker (the crash worker: the normal API plus a kill point)
 * and `globalThis.tab`, which the Node side drives with page.evaluate. Answers
 * are JSON: a value, or the BlockError's code and message.
 */
import * as Comlink from 'comlink';
import { createClient, type BlocktabClient } from '../../src/client/client.js';
import { BlockError } from '../../src/block/errors.js';
import { crashScenarios, newProgress, type CrashProgress, type ScenarioName } from './crash-ops.js';
import type { CrashWorkerApi } from './crash-worker.js';

const worker = new Worker(new URL('./crash-worker.ts', import.meta.url), { type: 'module' });
const client = createClient(worker);
const crash = client.remote as unknown as Comlink.Remote<CrashWorkerApi>;
let killedAt: number | null = null;
let finished: string | null = null;
let progress: CrashProgress = newProgress();
worker.addEventListener('message', (e: MessageEvent) => {
  const at = (e.data as { crashAt?: unknown } | null)?.crashAt;
  if (typeof at === 'number') killedAt = at;
});

async function opfsFile(filename: string): Promise<File> {
  let dir = await navigator.storage.getDirectory();
  const parts = filename.split('/');
  for (const d of parts.slice(0, -1)) dir = await dir.getDirectoryHandle(d);
  return (await dir.getFileHandle(parts.at(-1)!)).getFile();
}

type Answer = { value?: unknown; error?: { code: string; message: string } };

const extra: Record<string, (...a: never[]) => Promise<unknown>> = {
  /** Writes `bytes` of `pattern` at `offset`. */
  async fill(node: string, offset: number, bytes: number, pattern: number) {
    await client.write(node, offset, new Uint8Array(bytes).fill(pattern));
  },
  /** Whether every byte of the range reads as `pattern`. */
  async holds(node: string, offset: number, bytes: number, pattern: number) {
    return (await client.read(node, offset, bytes)).every((b) => b === pattern);
  },
  /** The length of an OPFS file (read by the page, not the worker). */
  async fileLength(filename: string) {
    return (await opfsFile(filename)).size;
  },
  /** qemu-img check of an OPFS file by the Node side's workload server (its WorkloadVerdict). */
  async qemuCheck(filename: string, url: string) {
    const body = await (await opfsFile(filename)).arrayBuffer();
    const res = await fetch(url, { method: 'POST', body, headers: { 'X-Workload': JSON.stringify({ size: 0, ops: [], checkOnly: true }) } });
    return JSON.parse(await res.text()) as unknown;
  },
  /** Starts crash scenario `name` armed to die after `killAfter` storage writes; tab.settled() says when it stopped. */
  async start(name: ScenarioName, dir: string, killAfter: number) {
    await crash.arm(killAfter);
    progress = newProgress();
    void crashScenarios[name].run(client, dir, progress).then(
      () => (finished = 'done'),
      (e: unknown) => (finished = `failed: ${e instanceof Error ? e.message : String(e)}`),
    );
  },
};

(globalThis as unknown as { tab: unknown }).tab = {
  async call(method: string, args: unknown[]): Promise<Answer> {
    try {
      const f = (extra[method] ?? (client as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>)[method]) as (...a: unknown[]) => Promise<unknown>;
      if (typeof f !== 'function') throw new Error(`tab: no method ${method}`);
      return { value: await f(...args) };
    } catch (e) {
      if (e instanceof BlockError) return { error: { code: e.code, message: e.message } };
      const x = e as { code?: string; message?: string };
      return { error: { code: x.code ?? 'Error', message: x.message ?? String(e) } };
    }
  },
  settled: () => killedAt !== null || finished !== null,
  state: () => ({ killedAt, finished, progress }),
};
await client.ready();
(globalThis as { tabReady?: boolean }).tabReady = true;
