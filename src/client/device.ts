/**
 * An open image in the engine worker as a BlockDevice (src/attach/), for an
 * emulator that runs in the page: `new V86Buffer(clientDevice(client, node,
 * size))` is v86's disk. Requests run one after another in the order they
 * were made — the client's reads travel on their own channel and would
 * otherwise overtake a write still on its way — and each write sends a copy
 * (the client transfers, i.e. detaches, what it sends; emulators reuse their
 * buffers).
 */
import { requestQueue, type BlockDevice } from '../attach/block-device.js';
import type { BlocktabClient } from './client.js';

export interface ClientDevice extends BlockDevice {
  /** Requests made so far (the app shows the disk's activity). */
  requests(): number;
}

export function clientDevice(client: BlocktabClient, node: string, byteLength: number, readOnly = false): ClientDevice {
  const queue = requestQueue();
  let count = 0;
  const inOrder = <T>(op: () => Promise<T>): Promise<T> => {
    count++;
    return queue(op);
  };
  const check = (offset: number, bytes: number, what: string) => {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(bytes) || offset < 0 || bytes < 0 || offset + bytes > byteLength) {
      throw new RangeError(`${node}: ${what} of ${bytes} bytes at ${offset} is outside the ${byteLength}-byte disk`);
    }
  };
  return {
    byteLength,
    readOnly,
    requests: () => count,
    async read(offset, bytes) {
      check(offset, bytes, 'read');
      return inOrder(() => client.read(node, offset, bytes));
    },
    async readInto(offset, buf) {
      check(offset, buf.length, 'read');
      buf.set(await inOrder(() => client.read(node, offset, buf.length)));
    },
    async write(offset, data) {
      check(offset, data.length, 'write');
      const copy = data.slice();
      return inOrder(() => client.write(node, offset, copy));
    },
    flush: () => inOrder(() => client.flush(node)),
  };
}
