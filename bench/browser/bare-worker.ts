/**
 * The baselines of the browser bench: what a page gets from OPFS without
 * blocktab — a bare FileSystemSyncAccessHandle read loop, a bare chunked copy
 * between two files, a bare postMessage round trip, and the same round trip
 * carrying a small SyncAccessHandle read. Plain messages
 * (no comlink) so nothing but the platform is measured.
 */
type SyncHandle = {
  read(b: ArrayBufferView, o?: { at?: number }): number;
  write(b: ArrayBufferView, o?: { at?: number }): number;
  truncate(n: number): void;
  getSize(): number;
  flush(): void;
  close(): void;
};

async function handle(path: string, mode: 'read-only' | 'readwrite', create = false): Promise<SyncHandle> {
  let dir = await navigator.storage.getDirectory();
  const parts = path.split('/');
  for (const p of parts.slice(0, -1)) dir = await dir.getDirectoryHandle(p, { create });
  const fh = await dir.getFileHandle(parts[parts.length - 1]!, { create });
  return (fh as unknown as { createSyncAccessHandle(o: { mode: string }): Promise<SyncHandle> }).createSyncAccessHandle({ mode });
}

/** The file `echo-read` reads from, opened once by `hold` (as an open image keeps its handle). */
let held: SyncHandle | undefined;

self.onmessage = async (ev: MessageEvent) => {
  const m = ev.data as { cmd: string; file?: string; dst?: string; chunk?: number; bytes?: number; transfer?: boolean; at?: number };
  try {
    if (m.cmd === 'echo') {
      const b = new Uint8Array(m.bytes ?? 4096);
      (self as unknown as Worker).postMessage(b, [b.buffer]);
      return;
    }
    if (m.cmd === 'num') {
      // A round trip that moves no buffer (the profile's yardstick for what a transfer costs).
      (self as unknown as Worker).postMessage(m.bytes);
      return;
    }
    if (m.cmd === 'echo-read') {
      // The same round trip, but the reply holds `bytes` bytes read from the open file at `at`: what a small read costs without blocktab.
      const b = new Uint8Array(m.bytes ?? 4096);
      held!.read(b, { at: m.at ?? 0 });
      (self as unknown as Worker).postMessage(b, [b.buffer]);
      return;
    }
    if (m.cmd === 'hold') {
      held?.close();
      held = m.file ? await handle(m.file, 'read-only') : undefined;
      (self as unknown as Worker).postMessage({ done: 0 });
      return;
    }
    if (m.cmd === 'read') {
      // Reads `bytes` bytes in `chunk`-byte requests; with `transfer`, each chunk goes to the page in a fresh buffer, as the engine's read does.
      const h = await handle(m.file!, 'read-only');
      const chunk = m.chunk!;
      const total = Math.min(m.bytes ?? h.getSize(), h.getSize());
      let reused = new Uint8Array(chunk);
      for (let off = 0; off < total; off += chunk) {
        const n = Math.min(chunk, total - off);
        if (m.transfer) {
          const b = new Uint8Array(n);
          h.read(b, { at: off });
          (self as unknown as Worker).postMessage({ chunk: b }, [b.buffer]);
        } else {
          h.read(reused.subarray(0, n), { at: off });
        }
      }
      h.close();
      reused = new Uint8Array(0);
      (self as unknown as Worker).postMessage({ done: total });
      return;
    }
    if (m.cmd === 'copy') {
      const src = await handle(m.file!, 'read-only');
      const dst = await handle(m.dst!, 'readwrite', true);
      dst.truncate(0);
      const size = src.getSize();
      const buf = new Uint8Array(m.chunk!);
      for (let off = 0; off < size; off += buf.length) {
        const n = Math.min(buf.length, size - off);
        src.read(buf.subarray(0, n), { at: off });
        dst.write(buf.subarray(0, n), { at: off });
      }
      dst.flush();
      src.close();
      dst.close();
      (self as unknown as Worker).postMessage({ done: size });
      return;
    }
    throw new Error(`unknown command ${m.cmd}`);
  } catch (e) {
    (self as unknown as Worker).postMessage({ error: e instanceof Error ? `${e.name}: ${e.message}` : String(e) });
  }
};
