/**
 * The blocktab web app: wires the page (index.html) to the engine worker.
 * Everything about images goes through the typed client (src/client/); this
 * module only decides what to open and which panel shows what.
 */
import { createClient, type BlocktabClient } from '../client/index.js';
import { AllocMap } from './alloc-map.js';
import { showError, clearAlerts } from './alerts.js';
import { ConvertPanel } from './convert-panel.js';
import { byId } from './dom.js';
import { renderFacts } from './facts.js';
import { baseName } from './format.js';
import { HexView } from './hex-view.js';
import { jobRunning } from './jobs.js';
import { LIBRARY, Library } from './library.js';
import { openSession, type ImageSession } from './session.js';

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

  constructor(
    private readonly client: BlocktabClient,
    storages: string[],
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
        open: (name) => void this.open(LIBRARY, name, name),
        release: async (name) => {
          const s = this.session;
          if (s?.storage === LIBRARY && s.layers.some((l) => l.filename === name)) await this.closeImage();
        },
      });
      void this.library.refresh();
    } else {
      byId('library-list').textContent = 'This browser has no persistent storage for a library.';
    }
    this.convert = new ConvertPanel(client, this.library !== null, () => void this.library?.refresh());
    this.bindOpenControls();
  }

  /** Opens `filename` of `storage` and shows it; the previous image closes once the new one is up. */
  async open(storage: string, filename: string, label: string): Promise<boolean> {
    const ticket = ++this.opening;
    document.body.dataset.state = 'opening';
    try {
      const s = await openSession(this.client, storage, filename, label);
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
    byId('image-view').hidden = true;
    byId('empty-state').hidden = false;
    byId<HTMLButtonElement>('import-current').disabled = true;
    await this.client.close(s.node).catch(() => {});
  }

  private show(s: ImageSession): void {
    this.session = s;
    byId('empty-state').hidden = true;
    byId('image-view').hidden = false;
    renderFacts(s);
    this.hex.setSession(s);
    this.convert.setSession(s);
    this.map.load(s);
    byId<HTMLButtonElement>('import-current').disabled = !this.library || s.storage === LIBRARY || jobRunning();
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

  openUrl(url: string): Promise<boolean> {
    clearAlerts();
    return this.open('http', url, baseName(url));
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
      if (url) void this.openUrl(url);
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
  try {
    client = createClient();
    ({ storages } = await client.ready());
  } catch (e) {
    showError('The blocktab engine could not start (it runs in a Web Worker; this browser may not support module workers)', e);
    return;
  }
  const app = new App(client, storages);
  (window as unknown as { blocktab: unknown }).blocktab = { app, client };
  document.body.dataset.ready = 'true';
  const params = new URLSearchParams(location.search);
  const url = params.get('url');
  if (url) await app.openUrl(url);
  else if (!localStorage.getItem(VISITED_KEY) || params.has('demo')) await app.openDemo('base');
}

void main();
