// convert's buffer memory advice (src/cli/buffer-memory.ts): the wasm kernels'
// memory is madvised MADV_HUGEPAGE through the native addon, once per process,
// and its contents are untouched. Checked in the kernel's own books
// (/proc/self/smaps: a madvised range has the `hg` VmFlag).
import * as fs from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initWasm } from '../../src/runtime.js';
import { wasmState } from '../../src/wasm/module.js';
import { adviseBufferMemory } from '../../src/cli/buffer-memory.js';
import { seekHoleSupported } from '../../src/protocols/seek-hole.js';

/** Total bytes of this process's mappings that carry the MADV_HUGEPAGE flag. */
function hugeAdvisedBytes(): number {
  let total = 0;
  let size = 0;
  for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const m = /^Size:\s+(\d+) kB/.exec(line);
    if (m) size = Number(m[1]) * 1024;
    if (line.startsWith('VmFlags:') && line.split(/\s+/).includes('hg')) total += size;
  }
  return total;
}

const linuxWithAddon = process.platform === 'linux' && fs.existsSync('/proc/self/smaps') && seekHoleSupported();

beforeAll(async () => {
  await initWasm();
});

describe('adviseBufferMemory', () => {
  it.skipIf(!linuxWithAddon)('marks the kernels memory for huge pages, once, leaving its bytes as they were', () => {
    const mem = wasmState()!.memory;
    const u8 = new Uint8Array(mem.buffer);
    const probe = [0, 4096, 1 << 20, (3 << 20) + 17, u8.length - 1];
    probe.forEach((at, i) => (u8[at] = 0x5a ^ i));
    const before = hugeAdvisedBytes();
    const advised = adviseBufferMemory();
    // The 2 MiB-aligned part of the memory: all of it but at most one huge page at each end.
    expect(advised % (2 << 20)).toBe(0);
    expect(advised).toBeGreaterThanOrEqual(u8.length - (4 << 20));
    expect(advised).toBeLessThanOrEqual(u8.length);
    expect(hugeAdvisedBytes() - before).toBe(advised);
    probe.forEach((at, i) => expect(u8[at]).toBe(0x5a ^ i));
    expect(adviseBufferMemory()).toBe(0);
    expect(hugeAdvisedBytes() - before).toBe(advised);
  });
});
