/**
 * The blocktab web app: wires the page (index.html) to the engine worker.
 * Everything about images goes through the typed client (src/client/); this
 * module only decides what to open and which panel shows what.
 */
import { createClient, type BlocktabClient, type TargetFormat } from '../client/index.js';
import { AllocMap } from './alloc-map.js';
import { showError, clearAlerts } from './alerts.js';
import { ConvertPanel } from './convert-panel.js';
import { byId } from './dom.js';
import { renderFacts } from './facts.js';
import { baseName } from './format.js';
import { HexView } from './hex-view.js';
import { jobRunning } from './jobs.js';
import { LIBRARY, Library } from './library.js';
import { EditPanel } from './edit-panel.js';
import { SnapshotsPanel } from './snapshots-panel.js';
import { BlockJobsPanel } from './block-jobs-panel.js';
import { InsidePanel } from './inside-panel.js';
import { knownOverlays, openRemoteSession, openSession, OVERLAY_DIR, refreshSession, type ImageSession } from './session.js';
import { RemotePanel } from './remote-panel.js';
import { EmulatorPanel } from './emulator-panel.js';

const VISITED_KEY = 'blocktab-visited';
const DEMOS = { base: 'demo/demo.qcow2', overlay: 'demo/demo-overlay.qcow2' };

class App {
  private session: ImageSession | null = null;
  /** Increases with every open request, so a slow open never replaces a newer one. */
  private opening = 0;
  private library: Library | null = null;
  private readonly map: AllocMap;
  private readonly hex: HexView;
  private readonly convert: ConvertPanel;
  private readonly snapshots: SnapshotsPanel;
  private readonly blockJobs: BlockJobsPanel;
  private readonly edit: EditPanel;
  private readonly inside: InsidePanel;
  private readonly remote: RemotePanel;
  private readonly emulator: EmulatorPanel;

  constructor(
    private readonly client: BlocktabClient,
    storages: string[],
    targetFormats: TargetFormat[],
  ) {
    this.map = new AllocMap(client, byId<HTMLCanvasElement>('map-canvas'), byId('map-status'), byId('map-range'), byId('legend'), {
      onPick: (offset) => void this.hex.show(offset),
      onError: (e) => showError(`Could not read the allocation map of ${this.session?.label ?? 'the image'}`, e),
    });
    this.hex = new HexView(client, {
      kindAt: (offset) => this.map.kindAt(offset),
      onShow: (offset) => this.map.mark(offset),
      onError: (e) => showError(`Could not read ${this.session?.label ?? 'the image'}`, e),
    });
    if (storages.includes(LIBRARY)) {
      this.library = new Library(client, storages.includes('opfs') ? 'OPFS' : 'IndexedDB', {
        open: (name) => void (name.startsWith(OVERLAY_DIR) ? this.openOverlay(name) : this.open(LIBRARY, name, name)),
        release: async (name) => {
          const s = this.session;
          if ((s?.storage === LIBRARY || s?.storage === 'remote') && s.layers.some((l) => l.filename === name)) await this.closeImage();
        },
        withReleased: (name, work) => this.withReleased(name, work),
        infoOf: (name) => {
          const s = this.session;
          return s?.storage === LIBRARY || s?.storage === 'remote' ? s.layers.find((l) => l.filename === name) : undefined;
        },
      });
      void this.library.refresh();
    } else {
      byId('library-list').textContent = 'This browser has no persistent storage for a library.';
    }
    this.convert = new ConvertPanel(client, targetFormats, this.library !== null, () => void this.library?.refresh());
    this.snapshots = new SnapshotsPanel(client, { changed: (what) => this.changed(what) });
    this.blockJobs = new BlockJobsPanel(client, () => void this.library?.refresh());
    this.edit = new EditPanel(client, this.library !== null, {
      changed: (what, offset) => this.changed(what, offset),
      replace: (filename, prepare) => this.replace(filename, prepare),
      copyToLibrary: () => this.copyToLibrary(),
      libraryFiles: async () => (await client.listFiles(LIBRARY)).map((f) => f.name),
    });
    this.inside = new InsidePanel(client);
    this.remote = new RemotePanel(client);
    this.emulator = new EmulatorPanel(client);
    this.bindOpenControls();
  }

  /** The shown image changed (a write, a snapshot, a commit): re-read its facts and redraw everything. */
  private async changed(what: string, offset?: number): Promise<void> {
    const s = this.session;
    if (!s) return;
    const hexAt = offset ?? this.hex.current();
    try {
      await refreshSession(this.client, s);
    } catch (e) {
      showError(`Could not read ${s.label} again after the change`, e);
      return;
    }
    if (this.session !== s) return;
    this.render(s);
    this.map.load(s);
    if (hexAt !== undefined) await this.hex.show(hexAt);
    byId('edit-result').textContent = what;
    void this.library?.refresh();
  }

  /**
   * Closes the shown image, runs `prepare` (which may create files next to
   * it), and opens `filename` of the library instead. When anything fails
   * the old image is opened again.
   */
  private async replace(filename: string, prepare: () => Promise<void>): Promise<boolean> {
    const old = this.session;
    if (!old) return false;
    await this.closeImage();
    try {
      await prepare();
    } catch (e) {
      await this.open(old.storage, old.filename, old.label);
      throw e;
    }
    const ok = await this.open(LIBRARY, filename, filename);
    if (!ok) await this.open(old.storage, old.filename, old.label);
    void this.library?.refresh();
    return ok;
  }

  /** Runs `work` with library file `name` closed if the shown image holds it read-write, then reopens it. */
  private async withReleased<T>(name: string, work: () => Promise<T>): Promise<T> {
    const s = this.session;
    if (!s?.writable || s.storage !== LIBRARY || s.filename !== name) return work();
    const hexAt = this.hex.current();
    await this.closeImage();
    try {
      return await work();
    } finally {
      if (await this.open(s.storage, s.filename, s.label)) {
        if (hexAt !== undefined) await this.hex.show(hexAt);
      }
    }
  }

  /** "Copy into the library to edit": the shown image and its backing files, then the copy opens read-write. */
  private async copyToLibrary(): Promise<void> {
    const s = this.session;
    if (!s || !this.library) return;
    const name = await this.library.importSession(s);
    if (name) await this.open(LIBRARY, name, name);
  }

  /** Opens `filename` of `storage` and shows it; the previous image closes once the new one is up. */
  async open(storage: string, filename: string, label: string, how?: () => Promise<ImageSession>): Promise<boolean> {
    const ticket = ++this.opening;
    document.body.dataset.state = 'opening';
    // An emulator holds the shown image's node: stop it before that node closes.
    await this.emulator.setSession(null);
    // A read-write image holds its file's lock: close it first, the new image may need that file.
    const held = this.session?.writable ? this.session : null;
    if (held) {
      await this.closeImage();
      this.opening = ticket;
    }
    try {
      let s: ImageSession;
      try {
        s = how ? await how() : await openSession(this.client, storage, filename, label, storage === LIBRARY || storage === 'remote');
      } catch (e) {
        if (held) await this.open(held.storage, held.filename, held.label).catch(() => {});
        throw e;
      }
      if (ticket !== this.opening) {
        await this.client.close(s.node).catch(() => {});
        return false;
      }
      const old = this.session;
      this.show(s);
      if (old) await this.client.close(old.node).catch(() => {});
      localStorage.setItem(VISITED_KEY, '1');
      return true;
    } catch (e) {
      if (ticket === this.opening) showError(`Could not open ${label}`, e);
      return false;
    } finally {
      if (ticket === this.opening) document.body.dataset.state = 'idle';
    }
  }

  /** Closes the shown image and goes back to the empty state. */
  async closeImage(): Promise<void> {
    const s = this.session;
    if (!s) return;
    this.session = null;
    this.opening++;
    this.map.load(null);
    this.hex.setSession(null);
    this.convert.setSession(null);
    this.snapshots.setSession(null);
    this.blockJobs.setSession(null);
    this.edit.setSession(null);
    this.inside.setSession(null);
    this.remote.setSession(null);
    await this.emulator.setSession(null);
    byId('image-view').hidden = true;
    byId('empty-state').hidden = false;
    byId<HTMLButtonElement>('import-current').disabled = true;
    await this.client.close(s.node).catch(() => {});
  }

  private show(s: ImageSession): void {
    this.session = s;
    byId('empty-state').hidden = true;
    byId('image-view').hidden = false;
    this.render(s);
    this.hex.setSession(s);
    this.convert.setSession(s);
    this.remote.setSession(s);
    void this.emulator.setSession(s);
    this.map.load(s);
    byId<HTMLButtonElement>('import-current').disabled = !this.library || s.storage === LIBRARY || jobRunning();
  }

  /** The facts, the chain picture and the panels that follow the image's state. */
  private render(s: ImageSession): void {
    renderFacts(s, { onPickSnapshot: (layer, id) => (layer === 0 ? this.snapshots.focusRow(id) : undefined) });
    this.snapshots.setSession(s);
    this.blockJobs.setSession(s);
    this.edit.setSession(s);
    this.inside.setSession(s);
  }

  /**
   * Dropped or picked files: all go to the worker's blob storage under their
   * names (so an overlay finds its backing file), and the top of the deepest
   * chain among them is opened.
   */
  async openFiles(files: File[]): Promise<void> {
    if (files.length === 0) return;
    clearAlerts();
    const names: string[] = [];
    for (const f of files) names.push(await this.client.addFile(f, f.name));
    let best = names[0]!;
    if (names.length > 1) {
      let bestDepth = -1;
      for (const n of names) {
        try {
          const info = await this.client.info({ storage: 'blob', filename: n }, { backingChain: true });
          let depth = 0;
          for (let i = info['backing-image']; i; i = i['backing-image']) depth++;
          if (depth > bestDepth) [best, bestDepth] = [n, depth];
        } catch {
          // Not openable alone (a missing backing file, say): the open below reports it if it is the only choice.
        }
      }
    }
    await this.open('blob', best, best);
  }

  /** Opens a web image: read-only, or (`overlay`) read-write under a local overlay that keeps the changes. */
  openUrl(url: string, overlay = false): Promise<boolean> {
    clearAlerts();
    if (!overlay) return this.open('http', url, baseName(url));
    return this.open('remote', url, baseName(url), () => openRemoteSession(this.client, url, baseName(url)));
  }

  /** An overlay of the library over a web image: opened as its URL was, with its changes. */
  openOverlay(name: string): Promise<boolean> {
    const url = knownOverlays()[name];
    if (url) return this.openUrl(url, true);
    // Made by an earlier version or another tab's lost record: the open explains what is refused.
    return this.open('remote', name, name);
  }

  openDemo(which: keyof typeof DEMOS = 'base'): Promise<boolean> {
    return this.open('http', new URL(DEMOS[which], document.baseURI).href, baseName(DEMOS[which]));
  }

  private bindOpenControls(): void {
    const input = byId<HTMLInputElement>('file-input');
    byId('open-files').addEventListener('click', () => input.click());
    input.addEventListener('change', () => {
      const files = [...(input.files ?? [])];
      input.value = '';
      void this.openFiles(files);
    });
    byId<HTMLFormElement>('url-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const url = byId<HTMLInputElement>('url-input').value.trim();
      if (url) void this.openUrl(url, byId<HTMLInputElement>('url-overlay').checked);
    });
    byId('open-demo').addEventListener('click', () => void this.openDemo('base'));
    byId('open-demo-overlay').addEventListener('click', () => void this.openDemo('overlay'));
    byId('zoom-in').addEventListener('click', () => this.map.zoomIn());
    byId('zoom-out').addEventListener('click', () => this.map.zoomOut());
    byId('zoom-reset').addEventListener('click', () => this.map.reset());
    byId('import-current').addEventListener('click', () => {
      if (this.session && this.library) void this.library.importSession(this.session);
    });
    document.addEventListener('blocktab-job', (ev) => {
      const running = (ev as CustomEvent<{ running: boolean }>).detail.running;
      byId<HTMLButtonElement>('import-current').disabled = running || !this.library || !this.session || this.session.storage === LIBRARY;
    });

    // Drop anywhere. dragenter/dragleave fire for every child, so count them.
    const overlay = byId('drop-overlay');
    let depth = 0;
    const hasFiles = (ev: DragEvent) => ev.dataTransfer?.types.includes('Files') ?? false;
    window.addEventListener('dragenter', (ev) => {
      if (!hasFiles(ev)) return;
      ev.preventDefault();
      depth++;
      overlay.hidden = false;
    });
    window.addEventListener('dragover', (ev) => {
      if (!hasFiles(ev)) return;
      ev.preventDefault();
      ev.dataTransfer!.dropEffect = 'copy';
    });
    window.addEventListener('dragleave', () => {
      depth = Math.max(0, depth - 1);
      if (depth === 0) overlay.hidden = true;
    });
    window.addEventListener('drop', (ev) => {
      if (!hasFiles(ev)) return;
      ev.preventDefault();
      depth = 0;
      overlay.hidden = true;
      void this.openFiles([...(ev.dataTransfer?.files ?? [])]);
    });
  }
}

async function main(): Promise<void> {
  window.addEventListener('error', (ev) => showError('Unexpected error in the page', ev.error ?? ev.message));
  window.addEventListener('unhandledrejection', (ev) => showError('Unexpected error in the page', ev.reason));
  let client: BlocktabClient;
  let storages: string[];
  let targetFormats: TargetFormat[];
  try {
    client = createClient();
    ({ storages, targetFormats } = await client.ready());
  } catch (e) {
    showError('The blocktab engine could not start (it runs in a Web Worker; this browser may not support module workers)', e);
    return;
  }
  // The origins of the overlays made earlier: their library entries read the web images under them.
  for (const url of Object.values(knownOverlays())) await client.allowRemoteBacking(url).catch(() => {});
  const app = new App(client, storages, targetFormats);
  (window as unknown as { blocktab: unknown }).blocktab = { app, client };
  document.body.dataset.ready = 'true';
  const params = new URLSearchParams(location.search);
  const url = params.get('url');
  if (url) await app.openUrl(url, params.has('overlay'));
  else if (!localStorage.getItem(VISITED_KEY) || params.has('demo')) await app.openDemo('base');
}

/**
 * The production build registers its service worker (sw.js, made by the vite
 * plugin in vite.config.ts): the app shell and the wasm are cached, so the app
 * works offline after one visit. The dev server does not (it would cache
 * modules vite rewrites on every edit).
 */
function registerServiceWorker(): void {
  // import.meta.hot exists only under the dev server (a build under NODE_ENV=test is still a build).
  if ((import.meta as ImportMeta & { hot?: unknown }).hot || !('serviceWorker' in navigator)) return;
  navigator.serviceWorker.register('./sw.js').catch((e: unknown) => console.warn('blocktab: service worker not registered', e));
}

registerServiceWorker();
void main();
