/**
 * rerror / werror on a device (QEMU's BlockdevOnError, as QEMU documents it:
 * with -machine none there is no device model to make QEMU apply it, so this
 * is checked against the documented behaviour): report / ignore / stop /
 * enospc, iostatus in query-block, BLOCK_IO_ERROR events, and a stopped
 * backend that holds requests (the failed one included, retried) until `cont`.
 * Errors come from the fault filter under the image.
 */
import { describe, expect, it } from 'vitest';
import { MemoryStorage } from '../../src/node.js';
import { Engine, type QmpEvent } from '../../src/engine/index.js';
import { faultyStorage, type FaultRule } from '../../src/filters/fault.js';
import type { ErrorAction } from '../../src/block/backend.js';

const tick = () => new Promise((r) => setTimeout(r, 5));

async function setup(rules: FaultRule[], policy: { rerror?: ErrorAction; werror?: ErrorAction }) {
  const mem = new MemoryStorage();
  mem.put('d.img', new Uint8Array(65536).fill(7));
  const engine = new Engine({ storages: { memory: faultyStorage(mem, { rules }) } });
  const node = await engine.open('memory', 'd.img', { format: 'raw' });
  engine.addDevice('d0', engine.findNode(node)!, policy);
  const events: QmpEvent[] = [];
  engine.onEvent((e) => events.push(e));
  const ioStatus = async () => ((await engine.execute('query-block')) as { 'io-status'?: string }[])[0]!['io-status'];
  const stats = async () => ((await engine.execute('query-blockstats')) as { stats: Record<string, number> }[])[0]!.stats;
  return { engine, mem, events, ioStatus, stats };
}

describe('error policy (rerror/werror)', () => {
  it('report: the error reaches the caller, iostatus failed, BLOCK_IO_ERROR with action report', async () => {
    const { engine, events, ioStatus, stats } = await setup([{ op: 'read', offset: 4096, bytes: 512, code: 'EIO' }], { rerror: 'report' });
    await expect(engine.read('d0', 4096, 512)).rejects.toMatchObject({ code: 'EIO' });
    expect(events.map((e) => [e.event, e.data.operation, e.data.action, e.data.nospace])).toEqual([['BLOCK_IO_ERROR', 'read', 'report', false]]);
    expect(events[0]!.data).toMatchObject({ device: 'd0', reason: expect.stringMatching(/injected EIO/) });
    expect(await ioStatus()).toBe('failed');
    expect((await stats()).failed_rd_operations).toBe(1);
    await engine.execute('cont');
    expect(await ioStatus()).toBe('ok');
    await engine.dispose();
  });

  it('ignore: the caller sees success, iostatus stays ok, the event says ignore', async () => {
    const { engine, events, ioStatus, stats } = await setup([{ op: 'write', offset: 0, bytes: 512, code: 'EIO' }], { werror: 'ignore' });
    await engine.write('d0', 0, new Uint8Array(512));
    expect(events.map((e) => [e.event, e.data.action])).toEqual([['BLOCK_IO_ERROR', 'ignore']]);
    expect(await ioStatus()).toBe('ok');
    expect((await stats()).failed_wr_operations).toBe(0);
    await engine.dispose();
  });

  it('stop: the backend stops (STOP, status io-error), holds that request and later ones, and retries on cont', async () => {
    const { engine, mem, events, ioStatus } = await setup([{ op: 'write', offset: 0, bytes: 512, code: 'EIO', times: 1 }], { werror: 'stop' });
    let wrote = false;
    const w = engine.write('d0', 0, new Uint8Array(512).fill(9)).then(() => (wrote = true));
    await tick();
    expect(events.map((e) => [e.event, e.data.action])).toEqual([
      ['BLOCK_IO_ERROR', 'stop'],
      ['STOP', undefined],
    ]);
    expect(await engine.execute('query-status')).toEqual({ status: 'io-error', singlestep: false, running: false });
    expect(await ioStatus()).toBe('failed');
    let read = false;
    const r = engine.read('d0', 1024, 512).then(() => (read = true));
    await tick();
    expect([wrote, read]).toEqual([false, false]);
    await engine.execute('cont');
    await Promise.all([w, r]);
    expect([wrote, read]).toEqual([true, true]);
    expect(events.map((e) => e.event)).toEqual(['BLOCK_IO_ERROR', 'STOP', 'RESUME']);
    expect(await ioStatus()).toBe('ok');
    expect(await engine.execute('query-status')).toMatchObject({ status: 'running', running: true });
    expect(mem.get('d.img')!.subarray(0, 512).every((b) => b === 9)).toBe(true);
    await engine.dispose();
  });

  it('enospc: ENOSPC stops (iostatus nospace), other errors are reported', async () => {
    const { engine, events, ioStatus } = await setup(
      [
        { op: 'write', offset: 0, bytes: 512, code: 'EIO', times: 1 },
        { op: 'write', offset: 8192, bytes: 512, code: 'ENOSPC', times: 1 },
      ],
      { werror: 'enospc' },
    );
    await expect(engine.write('d0', 0, new Uint8Array(512))).rejects.toMatchObject({ code: 'EIO' });
    expect(await ioStatus()).toBe('failed');
    await engine.execute('cont');
    const w = engine.write('d0', 8192, new Uint8Array(512));
    await tick();
    expect(events.map((e) => [e.event, e.data.action, e.data.nospace])).toEqual([
      ['BLOCK_IO_ERROR', 'report', false],
      ['BLOCK_IO_ERROR', 'stop', true],
      ['STOP', undefined, undefined],
    ]);
    expect(await ioStatus()).toBe('nospace');
    await engine.execute('cont');
    await w;
    await engine.dispose();
  });

  it('stop / cont by command: requests wait while stopped', async () => {
    const { engine, events } = await setup([], {});
    await engine.execute('stop');
    expect(await engine.execute('query-status')).toMatchObject({ status: 'paused', running: false });
    let read = false;
    const r = engine.read('d0', 0, 512).then(() => (read = true));
    await tick();
    expect(read).toBe(false);
    await engine.execute('cont');
    await r;
    expect(events.map((e) => e.event)).toEqual(['STOP', 'RESUME']);
    await engine.dispose();
  });
});
