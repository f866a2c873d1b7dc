/**
 * The tab's library: images kept in the browser's persistent storage (the
 * worker's `local` storage: OPFS, or IndexedDB where OPFS is missing). Lists
 * names, sizes, formats and backing chains, shows quota use, imports the open
 * image (byte for byte, with its backing files) and deletes.
 */
import type { BlocktabClient } from '../client/index.js';
import type { QmpImageInfo } from '../engine/query.js';
import { describeError, showError } from './alerts.js';
import { byId, confirmTwice, h } from './dom.js';
import { baseName, formatSize } from './format.js';
import { runJob } from './jobs.js';
import { downloadFile } from './save.js';
import { chainOf, OVERLAY_DIR, type ImageSession } from './session.js';

export const LIBRARY = 'local';

export interface LibraryCallbacks {
  open(filename: string): void;
  /** Closes the shown image if it uses `filename` (an open file cannot be removed). */
  release(filename: string): Promise<void>;
  /**
   * Runs `work` with `filename` closed if the shown image has it open
   * read-write (OPFS allows no other handle on it then), and reopens it after.
   */
  withReleased<T>(filename: string, work: () => Promise<T>): Promise<T>;
  /** The facts of `filename` when the shown image holds it open (no second open needed). */
  infoOf(filename: string): QmpImageInfo | undefined;
}

export class Library {
  private readonly list = byId<HTMLUListElement>('library-list');
  private refreshing: Promise<void> | null = null;
  private again = false;

  constructor(
    private readonly client: BlocktabClient,
    readonly backend: 'OPFS' | 'IndexedDB',
    private readonly cb: LibraryCallbacks,
  ) {
    byId('library-where').textContent = `(${backend})`;
  }

  /** Re-reads the list; calls that arrive while one runs make it run once more. */
  refresh(): Promise<void> {
    if (this.refreshing) {
      this.again = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      do {
        this.again = false;
        await this.render();
      } while (this.again);
    })().finally(() => (this.refreshing = null));
    return this.refreshing;
  }

  private async render(): Promise<void> {
    void this.showEstimate();
    let files;
    try {
      files = await this.client.listFiles(LIBRARY);
    } catch (e) {
      this.list.replaceChildren(h('li', { class: 'lib-error' }, `The library cannot be read: ${describeError(e).detail}`));
      return;
    }
    files.sort((a, b) => a.name.localeCompare(b.name));
    if (files.length === 0) {
      this.list.replaceChildren(h('li', { class: 'muted' }, 'Empty. Open an image and add it here to keep it in this browser.'));
      return;
    }
    const items: HTMLLIElement[] = [];
    for (const f of files) {
      let meta: (Node | string)[];
      try {
        // Overlays over web images read their backing file through the storage that reaches the web.
        const storage = f.name.startsWith(OVERLAY_DIR) ? 'remote' : LIBRARY;
        const info = this.cb.infoOf(f.name) ?? (await this.client.info({ storage, filename: f.name }, { backingChain: true }));
        meta = [describeImage(info)];
      } catch (e) {
        meta = [h('span', { class: 'lib-error' }, describeError(e).detail)];
      }
      items.push(this.item(f.name, f.size, meta));
    }
    this.list.replaceChildren(...items);
  }

  private item(name: string, size: number, meta: (Node | string)[]): HTMLLIElement {
    const open = h('button', { type: 'button', 'aria-label': `Open ${name}` }, 'Open');
    const save = h('button', { type: 'button', 'aria-label': `Download ${name}` }, 'Download');
    const del = h('button', { type: 'button', 'aria-label': `Delete ${name} from the library` }, 'Delete');
    open.addEventListener('click', () => this.cb.open(name));
    save.addEventListener('click', () => void this.export(name));
    confirmTwice(del, 'Really delete?', () => void this.remove(name));
    return h(
      'li',
      { 'data-name': name },
      h('div', { class: 'lib-name' }, name),
      h('div', { class: 'lib-meta' }, formatSize(size), ' · ', ...meta),
      h('div', { class: 'lib-actions' }, open, save, del),
    );
  }

  private async showEstimate(): Promise<void> {
    const text = byId('storage-text');
    const meter = byId<HTMLMeterElement>('storage-meter');
    try {
      const est = await navigator.storage.estimate();
      const used = est.usage ?? 0;
      const quota = est.quota ?? 0;
      meter.max = Math.max(1, quota);
      meter.value = used;
      text.textContent = `${formatSize(used)} used, ${formatSize(Math.max(0, quota - used))} free`;
    } catch {
      text.textContent = 'Storage use is not available in this browser.';
    }
  }

  /**
   * Copies the open image and its backing files into the library, byte for
   * byte (each opened as raw). Resolves to the top image's name there, or
   * undefined when the copy failed (the error is shown).
   */
  async importSession(s: ImageSession): Promise<string | undefined> {
    const layers = s.layers.map((l) => ({ source: l.filename, target: baseName(l.filename) }));
    return (await this.importFiles(s.storage, layers)) ? layers[0]!.target : undefined;
  }

  async importFiles(storage: string, files: { source: string; target: string }[]): Promise<boolean> {
    try {
      await runJob(`Adding ${files.map((f) => f.target).join(', ')} to the library`, async (job) => {
        for (const f of files) {
          await this.client.convert(
            [{ storage, filename: f.source, format: 'raw' }],
            { storage: LIBRARY, filename: f.target, format: 'raw' },
            {},
            job.progress,
            job.cancel,
          );
        }
      });
      return true;
    } catch (e) {
      showError(`Could not add ${files.map((f) => f.target).join(', ')} to the library`, e);
      return false;
    } finally {
      await this.refresh();
    }
  }

  private async export(name: string): Promise<void> {
    try {
      await this.cb.withReleased(name, () =>
        runJob(`Exporting ${name}`, (job) => downloadFile(this.client, LIBRARY, name, baseName(name), job.progress, job.signal)),
      );
    } catch (e) {
      showError(`Could not export ${name}`, e);
    }
  }

  private async remove(name: string): Promise<void> {
    try {
      await this.cb.release(name);
      await this.client.removeFile(LIBRARY, name);
    } catch (e) {
      showError(`Could not delete ${name}`, e);
    }
    await this.refresh();
  }
}

function describeImage(info: QmpImageInfo): string {
  const chain = chainOf(info);
  let text = `${info.format}, ${formatSize(info['virtual-size'])} virtual`;
  if (chain.length > 1) text += ` · backing: ${chain.slice(1).map((l) => baseName(l.filename)).join(' → ')}`;
  return text;
}
