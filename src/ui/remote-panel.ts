/**
 * The "Remote disk" panel: for an image whose chain reaches a web server, the
 * HTTP block cache at work (hits, blocks and bytes fetched, requests in flight)
 * and, when it is open under a local overlay, the overlay's size and the guest
 * bytes it holds; "Export changes" streams the overlay (small: only what was
 * written, still naming the URL as its backing file) or the whole merged disk
 * as raw into a file the user picks (File System Access) or, where the browser
 * has no picker, into a scratch file in OPFS that is then downloaded — the
 * browser reads the download from disk, so no export is ever whole in memory.
 */
import type { BlocktabClient, DiskStatus, ExportMode } from '../client/index.js';
import { showError } from './alerts.js';
import { byId, h } from './dom.js';
import { baseName, formatSize } from './format.js';
import { offerDownload, saveFilePicker } from './save.js';
import type { ImageSession } from './session.js';

/** How often the figures refresh while a remote image is shown. */
const POLL_MS = 1000;
/** The OPFS folder where exports wait to be downloaded (hidden from the library: a dot-name). */
const EXPORT_DIR = '.blocktab-export';

export class RemotePanel {
  private session: ImageSession | null = null;
  private timer: ReturnType<typeof setInterval> | undefined;
  private exporting = false;

  constructor(private readonly client: BlocktabClient) {
    byId('export-overlay').addEventListener('click', () => void this.export('overlay'));
    byId('export-merged').addEventListener('click', () => void this.export('merged'));
  }

  setSession(s: ImageSession | null): void {
    this.session = s;
    clearInterval(this.timer);
    this.timer = undefined;
    byId('remote-section').hidden = true;
    if (!s) return;
    void this.refresh(s).then((remote) => {
      if (remote && this.session === s) this.timer = setInterval(() => void this.refresh(s), POLL_MS);
    });
  }

  /** Reads and shows the figures; false when the image has nothing on the web. */
  private async refresh(s: ImageSession): Promise<boolean> {
    let st: DiskStatus;
    try {
      st = await this.client.diskStatus(s.node);
    } catch {
      // Closed meanwhile (the session changed); the next setSession starts over.
      return false;
    }
    if (this.session !== s) return false;
    if (!st.http) return false;
    byId('remote-section').hidden = false;
    const overlay = byId('export-overlay') as HTMLButtonElement;
    overlay.hidden = !st.overlay;
    (byId('export-merged') as HTMLButtonElement).disabled = this.exporting;
    overlay.disabled = this.exporting;
    const rows: [string, string, number][] = [
      ['Source', st.http.url, 0],
      ['Block cache hits', String(st.http.cacheHits + st.http.storeHits), st.http.cacheHits + st.http.storeHits],
      ['Blocks fetched (misses)', String(st.http.blocksFetched), st.http.blocksFetched],
      ['Bytes fetched', formatSize(st.http.bytesFetched), st.http.bytesFetched],
      ['Requests', `${st.http.requests} (${st.http.retries} retried)`, st.http.requests],
      ['In flight', `${st.http.inflight} (at most ${st.http.peakInflight} so far)`, st.http.inflight],
    ];
    if (st.overlay) {
      rows.push(['Overlay file', `${formatSize(st.overlay.fileBytes)} in ${s.storage === 'remote' ? 'this browser' : s.storage}: ${s.filename}`, st.overlay.fileBytes]);
      rows.push(['Allocated in the overlay', `${formatSize(st.overlay.allocatedBytes)} of ${formatSize(st.overlay.virtualBytes)}`, st.overlay.allocatedBytes]);
    }
    byId('remote-status').replaceChildren(
      ...rows.map(([k, v, n]) => h('div', { 'data-fact': k, 'data-value': n }, h('dt', {}, k), h('dd', {}, v))),
    );
    return true;
  }

  /** Streams the overlay or the merged disk out of the worker into a file the user keeps. */
  async export(mode: ExportMode): Promise<void> {
    const s = this.session;
    if (!s || this.exporting) return;
    const stem = baseName(s.remoteUrl ?? s.filename).replace(/\.(qcow2|raw|img)$/i, '');
    const suggestedName = mode === 'overlay' ? `${stem}-changes.qcow2` : `${stem}.raw`;
    const result = byId('export-result');
    const progress = byId<HTMLProgressElement>('export-progress');
    const onProgress = (done: number, total: number) => {
      progress.max = total || 1;
      progress.value = done;
    };
    this.exporting = true;
    progress.hidden = false;
    result.textContent = `Exporting ${suggestedName}…`;
    try {
      const picker = saveFilePicker();
      let bytes: number;
      if (picker) {
        let handle: FileSystemFileHandle;
        try {
          handle = await picker({ suggestedName });
        } catch (e) {
          if ((e as Error).name === 'AbortError') {
            result.textContent = '';
            return;
          }
          throw e;
        }
        bytes = await this.client.exportTo(s.node, mode, handle, onProgress);
        result.textContent = `Saved ${suggestedName}: ${formatSize(bytes)}.`;
      } else {
        bytes = await this.downloadThroughOpfs(s.node, mode, suggestedName, onProgress);
        result.textContent = `Downloading ${suggestedName}: ${formatSize(bytes)}.`;
      }
      result.dataset.bytes = String(bytes);
    } catch (e) {
      result.textContent = '';
      showError(`Could not export ${suggestedName}`, e);
    } finally {
      this.exporting = false;
      progress.hidden = true;
    }
  }

  /** No file picker: the worker writes the export into OPFS, and the page downloads that file (read from disk). */
  private async downloadThroughOpfs(node: string, mode: ExportMode, name: string, onProgress: (done: number, total: number) => void): Promise<number> {
    const root = await navigator.storage.getDirectory();
    // One export waits at a time: the previous one's download has long started.
    await root.removeEntry(EXPORT_DIR, { recursive: true }).catch(() => {});
    const dir = await root.getDirectoryHandle(EXPORT_DIR, { create: true });
    const handle = await dir.getFileHandle(name, { create: true });
    const bytes = await this.client.exportTo(node, mode, handle, onProgress);
    offerDownload(await handle.getFile(), name);
    return bytes;
  }
}
