/**
 * "Inside the disk": a tree of the shown image (disk → partitions →
 * directories → files), a preview of the chosen file (text, image or hex)
 * and its download, for the image as it is now, as any layer of its chain
 * shows it, or as an internal snapshot; for a layer with a layer under it,
 * what that layer changed (files added, removed, changed); a directory as a
 * streamed zip (zip-folder.ts). Everything is read in the worker
 * (src/engine/inspect.ts); directories load when opened.
 */
import { safeName, type BlocktabClient, type InspectEntry, type InspectView, type PartitionTable } from '../client/index.js';
import { showError } from './alerts.js';
import { byId, h } from './dom.js';
import { formatSize } from './format.js';
import { saveFilePicker } from './save.js';
import type { ImageSession } from './session.js';
import { planZip, zipStream } from './zip-folder.js';

/** Bytes read for a preview. */
const PREVIEW_BYTES = 64 * 1024;
/** Bytes per read when downloading a file. */
const CHUNK = 8 * 1024 * 1024;
const IMAGE_TYPES: Record<string, string> = { png: 'image/png', jpg: 'image/jpeg', jpeg: 'image/jpeg', gif: 'image/gif', webp: 'image/webp', svg: 'image/svg+xml', bmp: 'image/bmp' };

function hexDump(b: Uint8Array): string {
  let out = '';
  for (let o = 0; o < b.length; o += 16) {
    const row = b.subarray(o, o + 16);
    const hx = [...row].map((x) => x.toString(16).padStart(2, '0')).join(' ');
    const asc = [...row].map((x) => (x >= 32 && x < 127 ? String.fromCharCode(x) : '.')).join('');
    out += `${o.toString(16).padStart(8, '0')}  ${hx.padEnd(47)}  ${asc}\n`;
  }
  return out;
}

function looksLikeText(b: Uint8Array): string | null {
  if (b.includes(0)) return null;
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(b);
  } catch {
    return null;
  }
}

export class InsidePanel {
  private session: ImageSession | null = null;
  private view: InspectView | null = null;
  private table: PartitionTable | null = null;
  private readonly tree = byId('inside-tree');
  private readonly select = byId<HTMLSelectElement>('inside-view');
  private readonly preview = byId('inside-preview');
  private readonly status = byId('inside-status');
  private readonly diffBtn = byId<HTMLButtonElement>('inside-diff');
  private generation = 0;
  private objectUrl: string | null = null;

  constructor(private readonly client: BlocktabClient) {
    this.select.addEventListener('change', () => void this.load());
    this.diffBtn.addEventListener('click', () => void this.showDiff());
  }

  setSession(s: ImageSession | null): void {
    this.session = s;
    this.generation++;
    this.tree.replaceChildren();
    this.clearPreview();
    if (!s) return;
    const opts: HTMLOptionElement[] = [h('option', { value: JSON.stringify({ node: s.node }) }, 'The image as it is now')];
    for (const sn of s.info.snapshots ?? []) opts.push(h('option', { value: JSON.stringify({ node: s.node, snapshot: sn.id }) }, `Snapshot ${sn.name} (id ${sn.id})`));
    s.layers.forEach((l, i) => {
      if (i === 0) return;
      opts.push(h('option', { value: JSON.stringify({ node: s.node, layer: i }) }, `Layer ${i}: ${l.filename} (as the disk was before the layers above)`));
      for (const sn of l.snapshots ?? []) {
        opts.push(h('option', { value: JSON.stringify({ node: s.node, layer: i, snapshot: sn.id }) }, `Layer ${i}: ${l.filename}, snapshot ${sn.name} (id ${sn.id})`));
      }
    });
    this.select.replaceChildren(...opts);
    void this.load();
  }

  private async load(): Promise<void> {
    const s = this.session;
    if (!s) return;
    const gen = ++this.generation;
    this.view = JSON.parse(this.select.value) as InspectView;
    this.diffBtn.hidden = !((this.view.layer ?? 0) < s.layers.length - 1 && this.view.snapshot === undefined);
    this.tree.replaceChildren();
    this.clearPreview();
    this.status.textContent = 'Reading the partition table…';
    try {
      const t = await this.client.inspectPartitions(this.view);
      if (gen !== this.generation) return;
      this.table = t;
      const root = h('ul', { role: 'tree', 'aria-label': 'Disk contents' });
      const disk = this.treeItem(`Disk: ${t.table === 'none' ? (t.filesystem ?? 'no partition table, no file system found') : `${t.table.toUpperCase()} partition table`}`, 'disk');
      root.append(disk.li);
      if (t.table === 'none') {
        if (t.filesystem) {
          this.addDirChildren(disk, null, '/', true);
          disk.label.after(this.zipButton(null, '/'));
        }
      } else {
        for (const p of t.partitions) {
          const label = `Partition ${p.number}: ${p.name || p.type}, ${formatSize(p.size)}${p.filesystem ? `, ${p.filesystem}` : ''}${p.error ? ` — ${p.error}` : ''}`;
          const item = this.treeItem(label, 'partition');
          disk.group.append(item.li);
          if (p.filesystem && !p.error) {
            this.addDirChildren(item, p.number, '/', false);
            item.label.after(this.zipButton(p.number, '/'));
          }
        }
        disk.li.setAttribute('aria-expanded', 'true');
        disk.group.hidden = false;
      }
      this.tree.replaceChildren(root);
      this.status.textContent = [...t.warnings].join(' ') || '';
    } catch (e) {
      if (gen !== this.generation) return;
      this.status.textContent = '';
      showError('Could not read the disk inside the image', e);
    }
  }

  private treeItem(label: string, kind: string): { li: HTMLLIElement; label: HTMLElement; group: HTMLUListElement } {
    const lab = h('span', { class: `inside-label inside-${kind}` }, label);
    const group = h('ul', { role: 'group' });
    group.hidden = true;
    const li = h('li', { role: 'treeitem', tabindex: 0 }, lab, group);
    return { li, label: lab, group };
  }

  /** Makes `item` an expandable directory whose children load on the first expand. */
  private addDirChildren(item: { li: HTMLLIElement; label: HTMLElement; group: HTMLUListElement }, partition: number | null, path: string, expandNow: boolean): void {
    let loaded = false;
    item.li.setAttribute('aria-expanded', 'false');
    const toggle = async (ev?: Event): Promise<void> => {
      ev?.stopPropagation();
      const open = item.li.getAttribute('aria-expanded') === 'true';
      item.li.setAttribute('aria-expanded', String(!open));
      item.group.hidden = open;
      if (open || loaded) return;
      loaded = true;
      try {
        const entries = await this.client.inspectList(this.view!, partition, path);
        item.group.replaceChildren(...entries.map((e) => this.entryItem(e, partition, path === '/' ? `/${e.name}` : `${path}/${e.name}`)));
        if (entries.length === 0) item.group.append(h('li', { class: 'muted' }, '(empty)'));
      } catch (e) {
        item.group.replaceChildren(h('li', { class: 'inside-error', role: 'alert' }, e instanceof Error ? e.message : String(e)));
      }
    };
    item.label.addEventListener('click', (ev) => void toggle(ev));
    item.li.addEventListener('keydown', (ev) => {
      if (ev.target === item.li && (ev.key === 'Enter' || ev.key === ' ')) {
        ev.preventDefault();
        void toggle(ev);
      }
    });
    if (expandNow) void toggle();
  }

  private entryItem(e: InspectEntry, partition: number | null, path: string): HTMLLIElement {
    const suffix = e.type === 'dir' ? '/' : e.type === 'symlink' ? ` → ${e.target ?? ''}` : ` (${formatSize(e.size)})`;
    const item = this.treeItem(`${e.name}${suffix}`, e.type);
    item.li.dataset.path = path;
    if (e.type === 'dir') {
      this.addDirChildren(item, partition, path, false);
      item.label.after(this.zipButton(partition, path));
    }
    else if (e.type === 'file') {
      const pick = (ev: Event) => {
        ev.stopPropagation();
        void this.showFile(e, partition, path);
      };
      item.label.addEventListener('click', pick);
      item.li.addEventListener('keydown', (ev) => {
        if (ev.target === item.li && ev.key === 'Enter') pick(ev);
      });
    }
    return item.li;
  }

  private zipButton(partition: number | null, path: string): HTMLButtonElement {
    const b = h('button', { type: 'button', class: 'inside-zip', 'aria-label': `Download ${path} as a zip` }, 'zip');
    b.addEventListener('click', (ev) => {
      ev.stopPropagation();
      void this.showFolder(partition, path);
    });
    return b;
  }

  /** The folder's summary in the preview, with its zip download. */
  private async showFolder(partition: number | null, path: string): Promise<void> {
    const view = this.view!;
    this.clearPreview();
    const gen = this.generation;
    try {
      const plan = await planZip(this.client, view, partition, path);
      if (gen !== this.generation) return;
      const base = path === '/' ? (partition === null ? 'disk' : `partition-${partition}`) : safeName(path.split('/').filter(Boolean).pop()!);
      const zipName = `${base}.zip`;
      const progress = h('p', { class: 'muted', id: 'inside-zip-progress', 'aria-live': 'polite' });
      const download = h('button', { type: 'button', id: 'inside-zip-download' }, `Download ${zipName}`);
      const buttons: HTMLElement[] = [download];
      const picker = saveFilePicker();
      const toFile = picker ? h('button', { type: 'button', id: 'inside-zip-file' }, 'Save the zip to a file I choose…') : null;
      if (toFile) buttons.push(toFile);
      const run = async (target: 'download' | 'file'): Promise<void> => {
        // The picker needs the click's user activation, so it comes before any other await.
        const handle = target === 'file' ? await picker!({ suggestedName: zipName }) : null;
        for (const b of buttons) (b as HTMLButtonElement).disabled = true;
        progress.textContent = 'Zipping…';
        try {
          const stream = zipStream(this.client, view, partition, path, plan, (n) => (progress.textContent = `Zipping… ${n} of ${plan.files} files`));
          if (handle) {
            await stream.pipeTo(await handle.createWritable());
          } else {
            const url = URL.createObjectURL(await new Response(stream).blob());
            const a = h('a', { href: url, download: zipName, hidden: true });
            document.body.append(a);
            a.click();
            a.remove();
            setTimeout(() => URL.revokeObjectURL(url), 60_000);
          }
          progress.textContent = `${zipName}: ${plan.files} files, ${formatSize(plan.bytes)}.`;
          progress.dataset.state = 'complete';
        } catch (err) {
          progress.textContent = '';
          showError(`Could not zip ${path}`, err);
        } finally {
          for (const b of buttons) (b as HTMLButtonElement).disabled = false;
        }
      };
      download.addEventListener('click', () => void run('download'));
      toFile?.addEventListener('click', () => void run('file'));
      const skipped = plan.skipped.length
        ? h('details', { class: 'inside-skipped' }, h('summary', {}, `Left out of the zip (${plan.skipped.length})`), h('ul', {}, ...plan.skipped.map((x) => h('li', {}, x))))
        : h('span');
      this.preview.replaceChildren(h('h3', {}, `Folder ${path} — ${plan.files} files, ${formatSize(plan.bytes)}`), ...buttons, progress, skipped);
    } catch (err) {
      showError(`Could not list ${path}`, err);
    }
  }

  private clearPreview(): void {
    if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
    this.objectUrl = null;
    this.preview.replaceChildren(h('p', { class: 'muted' }, 'Choose a file in the tree to see it here.'));
  }

  private async showFile(e: InspectEntry, partition: number | null, path: string): Promise<void> {
    const view = this.view!;
    this.clearPreview();
    try {
      const head = await this.client.inspectRead(view, partition, path, 0, Math.min(PREVIEW_BYTES, e.size));
      const ext = e.name.split('.').pop()?.toLowerCase() ?? '';
      const download = h('button', { type: 'button', id: 'inside-download' }, `Download ${e.name}`);
      download.addEventListener('click', () => void this.download(e, partition, path));
      const title = h('h3', {}, `${path} — ${formatSize(e.size)}`);
      let body: HTMLElement;
      const text = looksLikeText(head);
      if (IMAGE_TYPES[ext] && e.size <= 16 * 1024 * 1024) {
        const whole = e.size <= head.length ? head : await this.readAll(view, partition, path, e.size);
        this.objectUrl = URL.createObjectURL(new Blob([whole as BlobPart], { type: IMAGE_TYPES[ext] }));
        body = h('img', { src: this.objectUrl, alt: e.name, class: 'inside-image' });
      } else if (text !== null) {
        body = h('pre', { class: 'inside-text', 'data-kind': 'text' }, text + (e.size > head.length ? '\n…' : ''));
      } else {
        body = h('pre', { class: 'inside-hex', 'data-kind': 'hex' }, hexDump(head.subarray(0, 4096)));
      }
      this.preview.replaceChildren(title, download, body);
    } catch (err) {
      showError(`Could not read ${path}`, err);
    }
  }

  private async readAll(view: InspectView, partition: number | null, path: string, size: number): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    for (let off = 0; off < size; off += CHUNK) parts.push(await this.client.inspectRead(view, partition, path, off, Math.min(CHUNK, size - off)));
    const out = new Uint8Array(size);
    let pos = 0;
    for (const p of parts) {
      out.set(p, pos);
      pos += p.length;
    }
    return out;
  }

  private async download(e: InspectEntry, partition: number | null, path: string): Promise<void> {
    try {
      const parts: BlobPart[] = [];
      for (let off = 0; off < e.size; off += CHUNK) parts.push(await this.client.inspectRead(this.view!, partition, path, off, Math.min(CHUNK, e.size - off)));
      const url = URL.createObjectURL(new Blob(parts, { type: 'application/octet-stream' }));
      const a = h('a', { href: url, download: safeName(e.name), hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (err) {
      showError(`Could not download ${path}`, err);
    }
  }

  /** What the chosen layer changed compared with the layer under it. */
  private async showDiff(): Promise<void> {
    const view = this.view;
    const t = this.table;
    if (!view || !t) return;
    const below: InspectView = { node: view.node, layer: (view.layer ?? 0) + 1 };
    const parts = t.table === 'none' ? [null] : t.partitions.filter((p) => p.filesystem && !p.error).map((p) => p.number);
    const box = h('div', { id: 'inside-diff-result', class: 'inside-diff' });
    this.preview.replaceChildren(h('h3', {}, 'What this layer changed'), box);
    for (const p of parts) {
      try {
        const d = await this.client.inspectDiff(view, below, p);
        const list = (label: string, items: string[], cls: string) =>
          h('div', { class: cls }, h('h4', {}, `${label} (${items.length})`), h('ul', {}, ...items.map((i) => h('li', {}, i))));
        box.append(
          h('h4', {}, p === null ? 'File system' : `Partition ${p}`),
          list('Added', d.added, 'diff-added'),
          list('Removed', d.removed, 'diff-removed'),
          list('Changed', d.changed, 'diff-changed'),
        );
      } catch (err) {
        box.append(h('p', { class: 'inside-error' }, err instanceof Error ? err.message : String(err)));
      }
    }
    box.dataset.state = 'complete';
  }
}
