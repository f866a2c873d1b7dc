// Two tabs of one user and a full disk, in Chromium (more tabs through the
// browser commands of tab-commands.ts, each running the engine in a worker):
// a second tab opening an image another tab writes gets "image in use" (Web
// Locks, QEMU's "Failed to get "write" lock"), read-only with force-share (the
// -U analogue) works, and the lock goes with the tab or worker that held it.
// Then the real quota, lowered over CDP in a context of its own: a write past
// it fails with ENOSPC and the image stays consistent for qemu-img.
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { commands } from 'vitest/browser';
import { createClient, type BlocktabClient } from '../../src/client/client.js';
import { BlockError } from '../../src/block/errors.js';
import type { WorkloadVerdict } from './workload-ops.js';

const MiB = 1024 * 1024;
const tabUrl = new URL('./tab.html', import.meta.url).href;
const dir = `blocktab-tests/tabs-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
const spawn = () => createClient(new Worker(new URL('../../src/worker/engine-worker.ts', import.meta.url), { type: 'module' }));
let client: BlocktabClient;

interface Answer<T = unknown> {
  value?: T;
  error?: { code: string; message: string };
}
const call = <T = unknown>(tab: number, method: string, ...args: unknown[]) => commands.tabCall<Answer<T>>(tab, method, args);

beforeAll(async () => {
  client = spawn();
  await client.ready();
});
afterAll(async () => {
  await client.removeFile('opfs', `${dir}/shared.qcow2`).catch(() => {});
  client?.terminate();
});

/** Opens read-write, waiting up to 5 s for a lock a dead tab or worker held to be dropped. */
async function openWhenFree(c: BlocktabClient, f: string): Promise<string> {
  for (let i = 0; ; i++) {
    try {
      return await c.open('opfs', f, { format: 'qcow2' });
    } catch (e) {
      if (!(e instanceof BlockError && e.code === 'EBUSY') || i >= 50) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

it('two tabs: a second writer or reader gets "image in use", force-share reads; the lock goes with the tab and with a dead worker', async () => {
  const f = `${dir}/shared.qcow2`;
  await client.create('opfs', f, 'qcow2', 4 * MiB);
  const node = await client.open('opfs', f, { format: 'qcow2' });
  await client.write(node, 65536, new Uint8Array(70_000).fill(0x3c));
  await client.flush(node);
  const tab = await commands.tabOpen(tabUrl);
  try {
    const rw = await call(tab, 'open', 'opfs', f, { format: 'qcow2' });
    expect(rw.error?.code).toBe('EBUSY');
    expect(rw.error?.message).toMatch(/shared\.qcow2: Failed to get "write" lock: image in use/);
    const ro = await call(tab, 'open', 'opfs', f, { format: 'qcow2', readOnly: true });
    expect(ro.error?.code).toBe('EBUSY');
    expect(ro.error?.message).toMatch(/Failed to get shared "write" lock/);
    // -U: read-only, no lock, the writer's flushed data visible.
    const shared = await call<string>(tab, 'open', 'opfs', f, { format: 'qcow2', readOnly: true, forceShare: true });
    expect(shared.error).toBeUndefined();
    expect((await call<boolean>(tab, 'holds', shared.value, 65536, 70_000, 0x3c)).value).toBe(true);
    expect((await call(tab, 'close', shared.value)).error).toBeUndefined();
    expect((await call(tab, 'open', 'opfs', f, { format: 'qcow2', forceShare: true })).error?.message).toMatch(/force-share=on can only be used with read-only images/);
    // The first tab lets go: the second one writes, and now the first is refused.
    await client.close(node);
    const second = await call<string>(tab, 'open', 'opfs', f, { format: 'qcow2' });
    expect(second.error).toBeUndefined();
    expect((await call(tab, 'fill', second.value, 0, 512, 0x77)).error).toBeUndefined();
    expect((await call(tab, 'flush', second.value)).error).toBeUndefined();
    const refused = await client.open('opfs', f, { format: 'qcow2' }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(BlockError);
    expect((refused as BlockError).code).toBe('EBUSY');
  } finally {
    // Closing the tab (its node still open) drops its lock.
    await commands.tabClose(tab);
  }
  const mine = await openWhenFree(client, f);
  expect((await client.read(mine, 0, 512)).every((b) => b === 0x77)).toBe(true);
  await client.close(mine);
  // A worker that dies holding the image frees it too.
  const other = spawn();
  await other.ready();
  await other.open('opfs', f, { format: 'qcow2' });
  expect(await client.open('opfs', f, { format: 'qcow2' }).catch((e: BlockError) => e.code)).toBe('EBUSY');
  other.terminate();
  await client.close(await openWhenFree(client, f));
});

it('the real quota (CDP Storage.overrideQuotaForOrigin) runs out mid-write: ENOSPC, earlier writes kept, the image consistent for qemu-img', async () => {
  // A context of its own: a low quota must not reach the other test files' storage.
  const tab = await commands.tabOpen(tabUrl, { isolated: true });
  const f = 'quota/q.qcow2';
  try {
    expect((await call(tab, 'create', 'opfs', f, 'qcow2', 64 * MiB)).error).toBeUndefined();
    const length = (await call<number>(tab, 'fileLength', f)).value!;
    const node = (await call<string>(tab, 'open', 'opfs', f, { format: 'qcow2', nodeName: 'q' })).value!;
    await commands.tabQuota(tab, length + 600_000);
    const good: { offset: number; pattern: number }[] = [];
    let failure: Answer['error'];
    // New clusters 3 MiB apart: data clusters, and now and then an L2 table.
    for (let i = 0; i < 40 && !failure; i++) {
      const w = { offset: i * 3 * MiB + 4096, pattern: 0x40 + i };
      const r = await call(tab, 'fill', node, w.offset, 70_000, w.pattern);
      if (r.error) failure = r.error;
      else good.push(w);
    }
    expect(failure?.code, failure?.message).toBe('ENOSPC');
    expect(failure?.message).toMatch(/q\.qcow2: write of \d+ bytes at 0x[0-9a-f]+ failed: No space left on device \(storage quota exceeded\)/);
    expect(good.length).toBeGreaterThan(2);
    // With the quota still low, every write that succeeded reads back, and the check finds leaks at most.
    for (const w of good) expect((await call<boolean>(tab, 'holds', node, w.offset, 70_000, w.pattern)).value, `write at ${w.offset}`).toBe(true);
    const ck = (await call<Record<string, number>>(tab, 'check', node)).value!;
    expect(ck['check-errors']).toBe(0);
    expect(ck.corruptions ?? 0).toBe(0);
    expect((await call(tab, 'close', node)).error).toBeUndefined();
    const v = (await call<WorkloadVerdict>(tab, 'qemuCheck', f, inject('workloadServer'))).value!;
    expect(v.check.corruptions, JSON.stringify(v.check)).toBeUndefined();
    expect([0, 3]).toContain(v.checkStatus);
    // Room again: the image takes the failed write.
    await commands.tabQuota(tab, null);
    const again = (await call<string>(tab, 'open', 'opfs', f, { format: 'qcow2' })).value!;
    expect((await call(tab, 'fill', again, 200 * 65536, 70_000, 0xee)).error).toBeUndefined();
    expect((await call<boolean>(tab, 'holds', again, 200 * 65536, 70_000, 0xee)).value).toBe(true);
    expect((await call(tab, 'close', again)).error).toBeUndefined();
    console.log('BENCH ' + JSON.stringify({ name: 'OPFS quota exhausted mid-write (Chromium, CDP quota)', value: good.length, unit: 'writes before ENOSPC', baseline: null, ratio: null, aim: null, code: failure?.code, qemuCheck: v.checkStatus, leaks: v.check.leaks ?? 0, corruptions: v.check.corruptions ?? 0 }));
  } finally {
    await commands.tabClose(tab);
  }
});
