/**
 * A Web Worker of the browser's DeflatePool (deflate-pool-browser.ts): pako's
 * raw deflate with QEMU's settings, the codec the engine uses in a page, so
 * clusters come out the same as compressed in the engine's own thread.
 */
import { deflateRaw } from 'pako';

interface Scope {
  onmessage: ((ev: MessageEvent<{ id: number; inputs: Uint8Array[] }>) => void) | null;
  postMessage(m: unknown, transfer: Transferable[]): void;
}
const scope = self as unknown as Scope;

scope.onmessage = (ev) => {
  const { id, inputs } = ev.data;
  try {
    const outs = inputs.map((input) => deflateRaw(input, { windowBits: 12, level: 6, memLevel: 9 }));
    scope.postMessage({ id, outs }, outs.map((o) => o.buffer));
  } catch (e) {
    scope.postMessage({ id, error: String(e instanceof Error ? e.message : e) }, []);
  }
};
