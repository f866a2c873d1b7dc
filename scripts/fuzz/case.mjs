// One fuzz case: open the mutated image from memory, read all of it, map it
// (block status), check it, write to it (on the in-memory copy) and read the
// writes back. The verdict is 'ok' (data or BlockErrors only) or a finding:
// another exception class, an impossible block-status answer, or writes that
// do not read back. `lib` is blocktab's library (dist/node.js plus checkNode),
// passed in so the same code runs the fuzzer (on dist/) and the regression
// test (on src/ under vitest).

const MiB = 1024 * 1024;
/** Read all of disks up to this size; bigger (mutated) sizes are sampled. */
const READ_ALL_LIMIT = 16 * MiB;
const MAP_STEPS = 4096;
/** How much the image file may grow in one case (three writes of at most 32 KiB, plus metadata). */
const GROWTH_LIMIT = 64 * MiB;

class Finding extends Error {}

/** Runs `step`; a BlockError is an answer (recorded), anything else propagates. */
async function guarded(lib, log, name, step) {
  try {
    return await step();
  } catch (e) {
    if (e instanceof lib.BlockError) {
      log.push(`${name}: ${e.code} ${e.message}`);
      return undefined;
    }
    throw e;
  }
}

function readRanges(total, r) {
  if (total <= READ_ALL_LIMIT) {
    const out = [];
    for (let o = 0; o < total; o += MiB) out.push([o, Math.min(MiB, total - o)]);
    return out;
  }
  const out = [
    [0, MiB],
    [total - MiB, MiB],
  ];
  for (let i = 0; i < 8; i++) {
    const o = Math.floor((r.next() / 2 ** 32) * (total - 65536));
    out.push([o - (o % 512), 65536]);
  }
  return out;
}

/**
 * Runs the case. `c` = { seed, image, rng }. Resolves to { verdict: 'ok', log }
 * or { verdict: 'finding', kind, message, log }.
 */
export async function runCase(lib, c) {
  const log = [];
  try {
    await body(lib, c, log);
    return { verdict: 'ok', log };
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    const kind = e instanceof Finding ? 'wrong answer' : `exception ${err.constructor?.name ?? typeof e}`;
    return { verdict: 'finding', kind, message: String(err.stack ?? err.message).split('\n').slice(0, 8).join('\n'), log };
  }
}

async function body(lib, c, log) {
  const { seed, image, rng: r } = c;
  const st = new lib.MemoryStorage();
  for (const [name, bytes] of Object.entries(seed.files)) if (name !== seed.main) st.put(name, bytes);
  st.put(seed.main, image);
  const probe = r.chance(0.15);
  const bs = await guarded(lib, log, 'open', () =>
    lib.openImage(st, seed.main, { format: probe ? undefined : seed.format, readOnly: seed.readOnly, driverOptions: seed.driverOptions }),
  );
  if (!bs) return;
  try {
    const total = bs.totalBytes;
    if (!Number.isSafeInteger(total) || total < 0) throw new Finding(`virtual size ${total} is not a byte count`);
    // read
    for (const [o, n] of readRanges(total, r)) {
      if (n <= 0) continue;
      await guarded(lib, log, `read 0x${o.toString(16)}`, () => lib.bdrvPread(bs, o, n, new Uint8Array(n)));
    }
    // map
    await guarded(lib, log, 'map', async () => {
      let o = 0;
      for (let i = 0; i < MAP_STEPS && o < total; i++) {
        const ans = await lib.blockStatus(bs, true, o, total - o);
        if (!(ans.pnum > 0) || o + ans.pnum > total) throw new Finding(`block status at 0x${o.toString(16)} answered pnum ${ans.pnum} (disk size ${total})`);
        o += ans.pnum;
      }
    });
    // check
    // An image the check finds corrupt (a refcount too low, a cluster used twice) may lose writes the way
    // QEMU's driver loses them there; read-back mismatches count only on images the check passes.
    let checkedClean = false;
    if (bs.driver.check) {
      const run = await guarded(lib, log, 'check', () => lib.checkNode(bs, seed.main, { leaks: false, errors: false }));
      checkedClean = !!run && !run.check.corruptions && !run.check['check-errors'];
      if (run && !checkedClean) log.push(`check: ${run.check.corruptions ?? 0} corruptions, ${run.check['check-errors']} check errors`);
    }
    // write, flush, read back
    if (!seed.readOnly && !bs.readOnly && total > 0) {
      for (let i = 0; i < 3; i++) {
        const n = Math.min(total, 512 * (1 + r.below(64)));
        const o = 512 * r.below(Math.floor((Math.min(total, 4 * MiB) - n) / 512) + 1);
        const data = new Uint8Array(n);
        for (let k = 0; k < n; k += 4) data[k] = r.next() & 0xff;
        const wrote = await guarded(lib, log, `write 0x${o.toString(16)}`, async () => {
          await lib.bdrvPwrite(bs, o, n, data);
          return true;
        });
        if (!wrote) continue;
        const back = new Uint8Array(n);
        const read = await guarded(lib, log, `read back 0x${o.toString(16)}`, async () => {
          await lib.bdrvPread(bs, o, n, back);
          return true;
        });
        if (read && Buffer.compare(back, data) !== 0 && (checkedClean || !bs.driver.check)) throw new Finding(`${n} bytes written at 0x${o.toString(16)} do not read back`);
      }
      await guarded(lib, log, 'flush', () => lib.bdrvFlush(bs));
    }
  } finally {
    await guarded(lib, log, 'close', () => lib.closeNode(bs));
  }
  // A crafted offset must not make a few small writes grow the image without bound.
  const grown = st.get(seed.main)?.length ?? 0;
  if (grown > image.length + GROWTH_LIMIT) throw new Finding(`the image grew from ${image.length} to ${grown} bytes`);
}
