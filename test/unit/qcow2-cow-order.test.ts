/**
 * What QEMU's iotest 046 looks at: a qcow2 write that allocates a cluster
 * over a backing file, held at a blkdebug breakpoint, and later writes to the
 * same cluster. The held write raises QEMU's copy-on-write events in QEMU's
 * order, and a write that must wait for it hands control back to its aio
 * command instead of blocking it; all land.
 */
import { describe, expect, it } from 'vitest';
import '../../src/drivers.js';
import { MemoryStorage } from '../../src/protocols/memory.js';
import { createImage, planCreate } from '../../src/img/create.js';
import { closeNode, openImage } from '../../src/block/open.js';
import { openTree } from '../../src/block/open-tree.js';
import { bdrvPread, bdrvPwrite } from '../../src/block/io.js';
import { bdrvDebugBreakpoint, bdrvDebugIsSuspended, bdrvDebugResume, setDebugMessageSink, untilDoneOrSuspended } from '../../src/block/debug-event.js';
import type { BlockNode } from '../../src/block/node.js';

const KIB = 1024;
const MIB = 1024 * KIB;

async function overlay(): Promise<BlockNode> {
  const st = new MemoryStorage();
  await createImage(st, await planCreate(st, { filename: 'b.qcow2', format: 'qcow2', size: 4 * MIB }));
  const base = await openImage(st, 'b.qcow2', { format: 'qcow2', readOnly: false });
  await bdrvPwrite(base, 0, MIB, new Uint8Array(MIB).fill(1));
  await closeNode(base);
  await createImage(st, await planCreate(st, { filename: 't.qcow2', format: 'qcow2', size: 4 * MIB, backingFile: 'b.qcow2', backingFormat: 'qcow2' }));
  setDebugMessageSink(() => {});
  return openTree(st, { driver: 'qcow2', file: { driver: 'blkdebug', image: { driver: 'file', filename: 't.qcow2' } } });
}

const write = (bs: BlockNode, offset: number, bytes: number, p: number) => bdrvPwrite(bs, offset, bytes, new Uint8Array(bytes).fill(p));

/** Starts a request as an aio command does: true once it is held or waits, false once done, 'stuck' otherwise. */
async function started(request: () => Promise<void>): Promise<{ p: Promise<void>; yielded: boolean | 'stuck' }> {
  let p!: Promise<void>;
  const yielded = await Promise.race([untilDoneOrSuspended(() => (p = request())), new Promise<'stuck'>((r) => setTimeout(() => r('stuck'), 2000))]);
  return { p, yielded };
}

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 2000 && !cond(); i++) await new Promise((r) => setTimeout(r, 1));
}

/** Which of `tags` the request stops at, in order, resuming each. */
async function stops(bs: BlockNode, tags: string[], request: Promise<void>): Promise<string[]> {
  const seen: string[] = [];
  let finished = false;
  void request.finally(() => (finished = true));
  for (;;) {
    await until(() => finished || tags.some((t) => bdrvDebugIsSuspended(bs, t)));
    const t = tags.find((t) => bdrvDebugIsSuspended(bs, t));
    if (!t) break;
    seen.push(t);
    bdrvDebugResume(bs, t);
  }
  await request;
  return seen;
}

describe('iotest 046: copy-on-write allocations at breakpoints', () => {
  it('an allocating write raises cow_read, write_aio, cow_write; ends farther apart than 16 KiB are read apart', async () => {
    const bs = await overlay();
    try {
      const events: [string, string][] = [['cow_read', 'R'], ['write_aio', 'W'], ['cow_write', 'C']];
      for (const [e, t] of events) bdrvDebugBreakpoint(bs, e, t);
      expect(await stops(bs, ['R', 'W', 'C'], write(bs, 0x18000, 0x2000, 10))).toEqual(['R', 'W', 'C']);
      // 0x41000 + 0x6000: both ends to copy, 24 KiB of data between them: two reads, each a cow_read.
      bdrvDebugBreakpoint(bs, 'cow_read', 'R');
      bdrvDebugBreakpoint(bs, 'write_aio', 'W');
      const two = write(bs, 0x41000, 0x6000, 30);
      await until(() => bdrvDebugIsSuspended(bs, 'R'));
      bdrvDebugResume(bs, 'R');
      // Set again before the held request goes on: the second read raises it again.
      bdrvDebugBreakpoint(bs, 'cow_read', 'R2');
      expect(await stops(bs, ['R2', 'W'], two)).toEqual(['R2', 'W']);
    } finally {
      await closeNode(bs);
    }
  });

  it('writes into a cluster whose allocation is held wait for it, hand control back, and every byte lands', async () => {
    const bs = await overlay();
    try {
      bdrvDebugBreakpoint(bs, 'write_aio', 'A');
      const a = await started(() => write(bs, 0x18000, 0x2000, 10));
      expect(a.yielded).toBe(true);
      const b = await started(() => write(bs, 0x12000, 0x2000, 11));
      const c = await started(() => write(bs, 0x1c000, 0x2000, 12));
      expect([b.yielded, c.yielded]).toEqual([true, true]);
      bdrvDebugResume(bs, 'A');
      await Promise.all([a.p, b.p, c.p]);
      const out = new Uint8Array(0x10000);
      await bdrvPread(bs, 0x10000, 0x10000, out);
      const want = new Uint8Array(0x10000).fill(1);
      want.fill(11, 0x2000, 0x4000);
      want.fill(10, 0x8000, 0xa000);
      want.fill(12, 0xc000, 0xe000);
      expect(out).toEqual(want);
    } finally {
      await closeNode(bs);
    }
  });
});

// iotest 026: which events a write raises decides where an injected error lands.
describe('iotest 026: a new L2 table is not loaded back', () => {
  it('the write that allocates an L2 table raises no l2_load; the next open loads it (and fails there)', async () => {
    const st = new MemoryStorage();
    await createImage(st, await planCreate(st, { filename: 't.qcow2', format: 'qcow2', size: 64 * MIB, clusterSize: 1024 }));
    const open = () =>
      openTree(st, {
        driver: 'qcow2',
        file: { driver: 'blkdebug', 'inject-error': [{ event: 'l2_load', errno: '5', once: true }], image: { driver: 'file', filename: 't.qcow2' } },
      });
    let bs = await open();
    try {
      await write(bs, 0, 128 * KIB, 7);
    } finally {
      await closeNode(bs);
    }
    bs = await open();
    try {
      await expect(write(bs, 0, 128 * KIB, 8)).rejects.toThrow(/Input\/output error/);
    } finally {
      await closeNode(bs);
    }
  });
});
