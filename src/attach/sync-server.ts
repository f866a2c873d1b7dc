/**
 * The side of the synchronous channel (sync-client.ts) that owns the disk:
 * waits without blocking (Atomics.waitAsync, or a short timer where that is
 * missing) for a client's request, runs it on the BlockDevice and wakes the
 * client. One request at a time, in order: the client is blocked anyway.
 */
import type { BlockDevice } from './block-device.js';
import { SYNC } from './sync-client.js';

export interface SyncChannel {
  /** Hand this to the emulator's worker (postMessage) and wrap it in a SyncBlockClient there. */
  readonly buffer: SharedArrayBuffer;
  /** Requests served so far. */
  requests(): number;
  /** Stops serving; a waiting or later client call throws "detached". */
  close(): Promise<void>;
}

type WaitAsync = (a: Int32Array, i: number, v: number) => { async: boolean; value: Promise<string> | string };

/** Serves `device` over a new channel whose data area holds `capacity` bytes per request (default 1 MiB). */
export function serveSyncAccess(device: BlockDevice, capacity = 1 << 20): SyncChannel {
  if (typeof SharedArrayBuffer === 'undefined') {
    throw new Error('SharedArrayBuffer is unavailable: the page must be cross-origin isolated (COOP same-origin, COEP require-corp)');
  }
  const buffer = new SharedArrayBuffer(SYNC.HEADER_BYTES + capacity);
  const ctl = new Int32Array(buffer, 0, SYNC.HEADER_BYTES / 4);
  const data = new Uint8Array(buffer, SYNC.HEADER_BYTES);
  ctl[6] = device.byteLength >>> 0;
  ctl[7] = Math.floor(device.byteLength / 2 ** 32);
  const waitAsync = (Atomics as unknown as { waitAsync?: WaitAsync }).waitAsync;
  let served = 0;

  const waitChange = async (v: number): Promise<void> => {
    const r = waitAsync?.(ctl, 0, v);
    if (!r) await new Promise((res) => setTimeout(res, 1));
    else if (r.async) await r.value;
  };

  const handle = async (): Promise<void> => {
    const op = ctl[1]!;
    const offset = (ctl[2]! >>> 0) + (ctl[3]! >>> 0) * 2 ** 32;
    const bytes = ctl[4]!;
    try {
      if (bytes > data.length || bytes < 0) throw new Error(`request of ${bytes} bytes exceeds the channel's ${data.length}`);
      // The device works on its own buffers: SharedArrayBuffer views cannot reach every API (TextDecoder, some fetch paths).
      if (op === SYNC.READ) data.set(await device.read(offset, bytes));
      else if (op === SYNC.WRITE) await device.write(offset, data.slice(0, bytes));
      else if (op === SYNC.FLUSH) await device.flush();
      else throw new Error(`unknown operation ${op}`);
      Atomics.compareExchange(ctl, 0, SYNC.REQUEST, SYNC.DONE);
    } catch (e) {
      const msg = new TextEncoder().encode(String((e as Error)?.message ?? e)).subarray(0, data.length);
      data.set(msg);
      ctl[5] = msg.length;
      Atomics.compareExchange(ctl, 0, SYNC.REQUEST, SYNC.FAILED);
    }
    served++;
    // compareExchange: a close() during the request stays CLOSED.
    Atomics.notify(ctl, 0);
  };

  const loop = (async () => {
    for (;;) {
      const v = Atomics.load(ctl, 0);
      if (v === SYNC.CLOSED) return;
      if (v === SYNC.REQUEST) await handle();
      else await waitChange(v);
    }
  })();

  return {
    buffer,
    requests: () => served,
    async close() {
      Atomics.store(ctl, 0, SYNC.CLOSED);
      Atomics.notify(ctl, 0);
      await loop;
    },
  };
}
