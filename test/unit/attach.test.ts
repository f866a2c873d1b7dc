// The emulator attach adapters against a memory model: the plain async
// device, v86's async buffer (requests issued without waiting, as a disk
// controller does), and the blocking SharedArrayBuffer channel driven from a
// real worker thread. Each runs the same seeded random reads and writes over a
// qcow2 image (in memory) and must read back exactly what the model holds.
import { describe, expect, it } from 'vitest';
import { Worker } from 'node:worker_threads';
import * as fs from 'node:fs';
import ts from 'typescript';
import { MemoryStorage, openImage, BlockBackend, attachBackend, V86Buffer, serveSyncAccess, type BlockDevice } from '../../src/index.js';
import { createImage, planCreate } from '../../src/img/create.js';
import { rng, seededBytes } from '../helpers/random.js';
import { repoRoot } from '../helpers/qemu.js';
import { clientDevice } from '../../src/client/device.js';
import type { BlocktabClient } from '../../src/client/client.js';

const SIZE = 4 << 20;

type Op = { kind: 'read'; offset: number; bytes: number } | { kind: 'write'; offset: number; data: Uint8Array } | { kind: 'flush' };

/** Seeded ops: unaligned offsets, lengths from 1 byte to 300 KiB, clustered so reads often meet earlier writes. */
function workload(seed: number, count: number): Op[] {
  const r = rng(seed);
  const ops: Op[] = [];
  for (let i = 0; i < count; i++) {
    const bytes = 1 + Math.floor(r() ** 3 * 300_000);
    const offset = Math.floor(r() * (SIZE - bytes));
    const k = r();
    if (k < 0.45) ops.push({ kind: 'write', offset, data: seededBytes(bytes, seed * 1000 + i) });
    else if (k < 0.95) ops.push({ kind: 'read', offset, bytes });
    else ops.push({ kind: 'flush' });
  }
  return ops;
}

async function device(): Promise<BlockDevice> {
  const st = new MemoryStorage();
  await createImage(st, await planCreate(st, { filename: 'd.qcow2', format: 'qcow2', size: SIZE, options: ['cluster_size=4096'] }));
  const node = await openImage(st, 'd.qcow2', { readOnly: false });
  return attachBackend(new BlockBackend(node));
}

/** Applies the ops to the model; returns what each read must give. */
function expected(ops: Op[]): Uint8Array[] {
  const model = new Uint8Array(SIZE);
  const out: Uint8Array[] = [];
  for (const op of ops) {
    if (op.kind === 'write') model.set(op.data, op.offset);
    else if (op.kind === 'read') out.push(model.slice(op.offset, op.offset + op.bytes));
  }
  return out;
}

function checkReads(got: Uint8Array[], want: Uint8Array[]): void {
  expect(got.length).toBe(want.length);
  got.forEach((g, i) => expect(Buffer.from(g).equals(Buffer.from(want[i]!)), `read #${i}`).toBe(true));
}

describe('emulator attach adapters (conformance against a memory model)', () => {
  const ops = workload(5, 160);

  it('plain device: read/write/flush issued at once still apply in order', async () => {
    const dev = await device();
    const reads = ops.flatMap((op) =>
      op.kind === 'read' ? [dev.read(op.offset, op.bytes)] : (op.kind === 'write' ? dev.write(op.offset, op.data) : dev.flush(), []),
    );
    checkReads(await Promise.all(reads), expected(ops));
    await expect(dev.read(SIZE - 1, 2)).rejects.toThrow(/outside the 4194304-byte disk/);
  });

  it("v86's async buffer: get/set callbacks, load/onload, get_buffer", async () => {
    const buf = new V86Buffer(await device());
    expect(buf.byteLength).toBe(SIZE);
    await new Promise<void>((resolve) => {
      buf.onload = () => resolve();
      buf.load();
    });
    const reads: Promise<Uint8Array>[] = [];
    for (const op of ops) {
      if (op.kind === 'read') reads.push(new Promise((res) => buf.get(op.offset, op.bytes, res)));
      else if (op.kind === 'write') {
        const data = op.data.slice();
        buf.set(op.offset, data, () => {});
        data.fill(0xa5); // v86 reuses its buffers: the adapter must have copied
      }
    }
    checkReads(await Promise.all(reads), expected(ops));
    const whole = await new Promise<ArrayBuffer | undefined>((res) => buf.get_buffer(res));
    const model = new Uint8Array(SIZE);
    for (const op of ops) if (op.kind === 'write') model.set(op.data, op.offset);
    expect(Buffer.from(new Uint8Array(whole!)).equals(Buffer.from(model))).toBe(true);
  });

  it("v86's cache calls: get_from_cache answers what get_and_cache read, with later writes applied", async () => {
    const buf = new V86Buffer(await device());
    const model = new Uint8Array(SIZE);
    const first = seededBytes(4096, 77);
    model.set(first, 0);
    await new Promise<void>((res) => buf.set(0, first, res));
    expect(buf.get_from_cache(0, 512)).toBeUndefined();
    const got = await new Promise<Uint8Array>((res) => buf.get_and_cache(0, 512, res));
    expect(Buffer.from(got).equals(Buffer.from(model.subarray(0, 512)))).toBe(true);
    // A write over part of the cached sector (and beyond it): the cache follows, the disk too.
    const w = seededBytes(700, 78);
    model.set(w, 300);
    await new Promise<void>((res) => buf.set(300, w, res));
    expect(Buffer.from(buf.get_from_cache(0, 512)!).equals(Buffer.from(model.subarray(0, 512)))).toBe(true);
    expect(buf.get_from_cache(512, 512)).toBeUndefined();
    const back = await new Promise<Uint8Array>((res) => buf.get(0, 1024, res));
    expect(Buffer.from(back).equals(Buffer.from(model.subarray(0, 1024)))).toBe(true);
  });

  it('client device: requests to the worker apply in order although reads travel faster than writes', async () => {
    const dev = await device();
    const r = rng(9);
    // A stand-in for the worker client: reads answer at once (their own channel), writes arrive later and
    // take the caller's buffer (transferred, so detached on this side), as BlocktabClient does.
    const client = {
      read: (_n: string, offset: number, bytes: number) => dev.read(offset, bytes),
      write: async (_n: string, offset: number, data: Uint8Array) => {
        const moved = structuredClone(data, { transfer: [data.buffer] });
        await new Promise((res) => setTimeout(res, Math.floor(r() * 3)));
        await dev.write(offset, moved);
      },
      flush: () => dev.flush(),
    } as unknown as BlocktabClient;
    const cd = clientDevice(client, 'disk0', SIZE);
    const reads: Promise<Uint8Array>[] = [];
    const written = new Map<number, Uint8Array>();
    for (const [i, op] of ops.entries()) {
      if (op.kind === 'read') reads.push(cd.read(op.offset, op.bytes));
      else if (op.kind === 'write') {
        const data = op.data.slice();
        written.set(i, data);
        void cd.write(op.offset, data);
      } else void cd.flush();
    }
    checkReads(await Promise.all(reads), expected(ops));
    // The caller's buffers are its own still (the device sent copies).
    for (const [i, data] of written) expect(Buffer.from(data).equals(Buffer.from((ops[i] as { data: Uint8Array }).data)), `write #${i}`).toBe(true);
    expect(cd.requests()).toBe(ops.length);
    await expect(cd.read(SIZE - 1, 2)).rejects.toThrow(/outside the 4194304-byte disk/);
  });

  it('synchronous channel: a worker thread blocks in readSync/writeSync while this thread serves the disk', async () => {
    const dev = await device();
    // A small data area makes large requests split over several round trips.
    const ch = serveSyncAccess(dev, 64 * 1024);
    // The client file imports nothing: transpiled alone, it runs in the worker as a data: module.
    const client = ts.transpileModule(fs.readFileSync(`${repoRoot}/src/attach/sync-client.ts`, 'utf8'), {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    }).outputText;
    const driver = `
      import { parentPort, workerData } from 'node:worker_threads';
      const c = new SyncBlockClient(workerData.buffer);
      const reads = [];
      for (const op of workerData.ops) {
        if (op.kind === 'read') { const b = new Uint8Array(op.bytes); c.readSync(op.offset, b); reads.push(b); }
        else if (op.kind === 'write') c.writeSync(op.offset, op.data);
        else c.flushSync();
      }
      let error = '';
      try { c.readSync(c.byteLength - 1, new Uint8Array(2)); } catch (e) { error = e.message; }
      parentPort.postMessage({ size: c.byteLength, reads, error });`;
    const w = new Worker(new URL(`data:text/javascript,${encodeURIComponent(client + driver)}`), { workerData: { buffer: ch.buffer, ops } });
    const res = await new Promise<{ size: number; reads: Uint8Array[]; error: string }>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    });
    await w.terminate();
    expect(res.size).toBe(SIZE);
    checkReads(res.reads, expected(ops));
    expect(res.error).toMatch(/outside the 4194304-byte disk/);
    // Requests over 64 KiB were split: more round trips than ops.
    expect(ch.requests()).toBeGreaterThan(ops.length);
    await ch.close();
  });
});
