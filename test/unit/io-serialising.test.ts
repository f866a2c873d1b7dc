/**
 * Request serialisation in the request path (src/block/io.ts), as QEMU's
 * iotest 077 exercises it: raw over blkdebug with a 4 KiB alignment, so a
 * write smaller than a block is a read-modify-write cycle, held at
 * breakpoints while other requests arrive.
 */
import { describe, expect, it } from 'vitest';
import '../../src/drivers.js';
import { MemoryStorage } from '../../src/protocols/memory.js';
import { closeNode } from '../../src/block/open.js';
import { openTree } from '../../src/block/open-tree.js';
import { bdrvPread, bdrvPwrite } from '../../src/block/io.js';
import { bdrvDebugBreakpoint, bdrvDebugIsSuspended, bdrvDebugResume, setDebugMessageSink, untilDoneOrSuspended } from '../../src/block/debug-event.js';
import type { BlockNode } from '../../src/block/node.js';

const BLOCK = 4096;

async function alignedRaw(): Promise<{ st: MemoryStorage; bs: BlockNode; log: string[] }> {
  const st = new MemoryStorage();
  st.put('t.raw', new Uint8Array(16 * BLOCK));
  const log: string[] = [];
  setDebugMessageSink((l) => log.push(l));
  const bs = await openTree(st, { driver: 'raw', file: { driver: 'blkdebug', align: BLOCK, image: { driver: 'file', filename: 't.raw' } } });
  return { st, bs, log };
}

function write(bs: BlockNode, offset: number, bytes: number, pattern: number): Promise<void> {
  return bdrvPwrite(bs, offset, bytes, new Uint8Array(bytes).fill(pattern));
}

/**
 * Starts the request as an aio command does: true once it is held or waits for another one, false when it
 * completed; 'stuck' when it does neither (instead of hanging the test).
 */
async function started(request: () => Promise<void>): Promise<{ p: Promise<void>; yielded: boolean | 'stuck' }> {
  let p!: Promise<void>;
  const yielded = await Promise.race([
    untilDoneOrSuspended(() => (p = request())),
    new Promise<'stuck'>((r) => setTimeout(() => r('stuck'), 2000)),
  ]);
  return { p, yielded };
}

async function readBack(bs: BlockNode, offset: number, bytes: number): Promise<Uint8Array> {
  const out = new Uint8Array(bytes);
  await bdrvPread(bs, offset, bytes, out);
  return out;
}

const filled = (bytes: number, pattern: number) => new Uint8Array(bytes).fill(pattern);

describe('iotest 077: serialised read-modify-write', () => {
  it('an aligned write over a held cycle waits for it, and its submitter gets control back meanwhile', async () => {
    const { bs } = await alignedRaw();
    try {
      bdrvDebugBreakpoint(bs, 'pwritev_rmw_after_head', 'A');
      const cycle = await started(() => write(bs, 0x200, 0x200, 10));
      expect(cycle.yielded).toBe(true);
      expect(bdrvDebugIsSuspended(bs, 'A')).toBe(true);
      // The whole block, written while the cycle holds its stale copy of it.
      let landed = false;
      const whole = await started(() => write(bs, 0, BLOCK, 11).then(() => void (landed = true)));
      expect(whole.yielded).toBe(true);
      expect(landed).toBe(false);
      bdrvDebugResume(bs, 'A');
      await Promise.all([cycle.p, whole.p]);
      // The later write lands last: the cycle's write-back did not undo it.
      expect(await readBack(bs, 0, BLOCK)).toEqual(filled(BLOCK, 11));
    } finally {
      await closeNode(bs);
    }
  });

  it('chained cycles on one block complete in order and every sector keeps its bytes', async () => {
    const { bs, log } = await alignedRaw();
    try {
      bdrvDebugBreakpoint(bs, 'pwritev_rmw_after_tail', 'A');
      const done: number[] = [];
      const all: Promise<void>[] = [];
      for (let p = 10; p <= 17; p++) {
        const r = await started(() => write(bs, 0x5000 + (p - 10) * 0x200, 0x200, p).then(() => void done.push(p)));
        expect(r.yielded).toBe(true);
        all.push(r.p);
      }
      expect(done).toEqual([]);
      bdrvDebugResume(bs, 'A');
      await Promise.all(all);
      expect(done).toEqual([10, 11, 12, 13, 14, 15, 16, 17]);
      for (let p = 10; p <= 17; p++) expect(await readBack(bs, 0x5000 + (p - 10) * 0x200, 0x200)).toEqual(filled(0x200, p));
      expect(log).toEqual(["blkdebug: Suspended request 'A'", "blkdebug: Resuming request 'A'"]);
    } finally {
      await closeNode(bs);
    }
  });

  it('a cycle that pads only the tail raises the tail events, not the head ones (merged padding read)', async () => {
    const { bs, log } = await alignedRaw();
    try {
      bdrvDebugBreakpoint(bs, 'pwritev_rmw_head', 'H');
      expect((await started(() => write(bs, 0x1000, 0x800, 1))).yielded).toBe(false);
      expect(log).toEqual([]);
      bdrvDebugBreakpoint(bs, 'pwritev_rmw_tail', 'T');
      const tailOnly = await started(() => write(bs, 0x2000, 0x800, 2));
      expect(tailOnly.yielded).toBe(true);
      expect(bdrvDebugIsSuspended(bs, 'T')).toBe(true);
      bdrvDebugResume(bs, 'T');
      await tailOnly.p;
      expect(await readBack(bs, 0x2000, BLOCK)).toEqual(new Uint8Array([...filled(0x800, 2), ...filled(0x800, 0)]));
    } finally {
      await closeNode(bs);
    }
  });

  it('a cycle arriving while an aligned write is held at pwritev waits for that write, then reads what it wrote', async () => {
    const { bs } = await alignedRaw();
    try {
      bdrvDebugBreakpoint(bs, 'pwritev', 'A');
      const aligned = await started(() => write(bs, 0x3000, BLOCK, 10));
      expect(aligned.yielded).toBe(true);
      bdrvDebugBreakpoint(bs, 'pwritev_rmw_after_tail', 'B');
      const cycle = await started(() => write(bs, 0x3000, 0x400, 11));
      expect(cycle.yielded).toBe(true);
      // It waits before its own events: B is not reached while A holds the block.
      expect(bdrvDebugIsSuspended(bs, 'B')).toBe(false);
      bdrvDebugResume(bs, 'A');
      await aligned.p;
      while (!bdrvDebugIsSuspended(bs, 'B')) await new Promise((r) => setTimeout(r, 1));
      bdrvDebugResume(bs, 'B');
      await cycle.p;
      expect(await readBack(bs, 0x3000, BLOCK)).toEqual(new Uint8Array([...filled(0x400, 11), ...filled(BLOCK - 0x400, 10)]));
    } finally {
      await closeNode(bs);
    }
  });
});
