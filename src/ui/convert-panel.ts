/**
 * The convert section: qemu-img convert from the open image to a new image of
 * any format the worker can create (its driver registry says which, with
 * their -o options): qcow2 with its own controls (-o cluster_size=…,
 * compression_type=… [-c]), every format with a free -o field, and -S;
 * saved as a download, into a file the user picks, or into the library. The
 * copy runs in the worker with progress and a real Cancel (see jobs.ts).
 */
import type { BlocktabClient } from '../client/index.js';
import { showError, showInfo } from './alerts.js';
import { byId, h } from './dom.js';
import type { TargetFormat } from '../client/index.js';
import { baseName, formatSize } from './format.js';
import { runJob, type JobContext } from './jobs.js';
import { downloadFile, saveFilePicker } from './save.js';
import type { ImageSession } from './session.js';

type Dest = 'download' | 'file' | 'library';

let scratch = 0;

/** File name extensions where the format's name is not the usual one. */
const EXTENSION: Record<string, string> = { vpc: 'vhd', parallels: 'hdd' };

export class ConvertPanel {
  private session: ImageSession | null = null;
  private readonly form = byId<HTMLFormElement>('convert-form');
  private readonly format = byId<HTMLSelectElement>('convert-format');
  private readonly sparse = byId<HTMLSelectElement>('convert-sparse');
  private readonly cluster = byId<HTMLSelectElement>('convert-cluster');
  private readonly ctype = byId<HTMLSelectElement>('convert-ctype');
  private readonly compress = byId<HTMLInputElement>('convert-compress');
  private readonly dest = byId<HTMLSelectElement>('convert-dest');
  private readonly name = byId<HTMLInputElement>('convert-name');
  private readonly extra = byId<HTMLInputElement>('convert-options');
  private readonly extraHelp = byId('convert-options-help');
  private readonly result = byId('convert-result');

  constructor(
    private readonly client: BlocktabClient,
    private readonly targets: TargetFormat[],
    private readonly hasLibrary: boolean,
    private readonly onLibraryChanged: () => void,
  ) {
    const options: [Dest, string][] = [['download', 'a download']];
    if (saveFilePicker()) options.push(['file', 'a file I choose…']);
    if (hasLibrary) options.push(['library', 'the library (this browser)']);
    this.dest.replaceChildren(...options.map(([v, label]) => h('option', { value: v }, label)));
    this.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      void this.run();
    });
    // Raw first, then the rest in the registry's order (raw is what most people want out).
    const names = targets.map((t) => t.name).sort((a, b) => Number(b === 'raw') - Number(a === 'raw'));
    this.format.replaceChildren(...names.map((n) => h('option', { value: n }, n)));
    this.format.value = 'raw';
    this.format.addEventListener('change', () => this.formatChanged());
    this.formatChanged();
  }

  private formatChanged(): void {
    const qcow2 = this.format.value === 'qcow2';
    this.cluster.disabled = !qcow2;
    this.compress.disabled = !qcow2;
    this.ctype.disabled = !qcow2;
    const opts = this.targets.find((t) => t.name === this.format.value)?.options ?? [];
    this.extra.value = '';
    this.extra.placeholder = opts.length ? opts.slice(0, 3).map((o) => `${o.name}=${o.def ?? '…'}`).join(',') : 'none';
    this.extra.disabled = opts.length === 0;
    this.extraHelp.textContent = opts.length ? `Options of ${this.format.value}: ${opts.map((o) => o.name).join(', ')}` : '';
    this.suggestName();
  }

  /** The target's -o options and -c, from the form (the free -o field last, so it wins). */
  private targetOptions(format: string): { options?: string[]; compressed?: boolean } {
    const extra = this.extra.value.trim() ? [this.extra.value.trim()] : [];
    if (format !== 'qcow2') return extra.length ? { options: extra } : {};
    return { options: [`cluster_size=${this.cluster.value}`, `compression_type=${this.ctype.value}`, ...extra], compressed: this.compress.checked };
  }

  setSession(s: ImageSession | null): void {
    this.session = s;
    this.result.textContent = '';
    this.suggestName();
  }

  private suggestName(): void {
    if (!this.session) return;
    const stem = baseName(this.session.label).replace(/\.(qcow2?|img|raw|iso|bin|vmdk|vhdx?|vdi|qed|hdd|dmg)$/i, '');
    this.name.value = `${stem}.${EXTENSION[this.format.value] ?? this.format.value}`;
  }

  private async run(): Promise<void> {
    const s = this.session;
    if (!s) return;
    const dest = this.dest.value as Dest;
    const format = this.format.value;
    const filename = this.name.value.trim();
    const minSparse = Number(this.sparse.value);
    const { options, compressed } = this.targetOptions(format);
    const convertOpts = { minSparse, compressed };
    this.result.textContent = '';
    // The picker needs the click's user activation, so it comes before any await.
    let handle: FileSystemFileHandle | undefined;
    try {
      if (dest === 'file') handle = await saveFilePicker()!({ suggestedName: filename });
    } catch (e) {
      if ((e as { name?: string }).name !== 'AbortError') showError(`Could not choose where to save ${filename}`, e);
      return;
    }
    const started = performance.now();
    try {
      const bytes = await runJob(`Converting ${s.label} to ${format}`, async (job) => {
        if (dest === 'library') {
          return (await this.client.convert([s.node], { storage: 'local', filename, format, options }, convertOpts, job.progress, job.cancel)).bytes;
        }
        if (dest === 'file' && format === 'raw') return this.convertIntoHandle(s, handle!, minSparse, job);
        // A download (or a qcow2 for a picked file): convert into worker memory, then copy it out.
        const tmp = `convert-${++scratch}/${filename}`;
        try {
          const { bytes } = await this.client.convert([s.node], { storage: 'memory', filename: tmp, format, options }, convertOpts, job.progress, job.cancel);
          if (dest === 'file') await this.copyIntoHandle(tmp, handle!, job);
          else await downloadFile(this.client, 'memory', tmp, filename, job.progress, job.signal);
          return bytes;
        } finally {
          await this.client.removeFile('memory', tmp).catch(() => {});
        }
      });
      const secs = ((performance.now() - started) / 1000).toFixed(1);
      const where = dest === 'library' ? 'into the library' : dest === 'file' ? `into ${handle!.name}` : 'as a download';
      const how = format === 'qcow2' ? `, ${this.cluster.selectedOptions[0]!.text} clusters${compressed ? `, compressed with ${this.ctype.value}` : ''}` : '';
      this.result.textContent = `Converted ${s.label} to ${format}${how} (${formatSize(bytes)} virtual) ${where} in ${secs} s.`;
      this.result.dataset.done = String(Date.now());
    } catch (e) {
      if ((e as { code?: string }).code === 'ECANCELED') {
        if (dest === 'library') await this.client.removeFile('local', filename).catch(() => {});
        showInfo(`Conversion of ${s.label} cancelled`, dest === 'file' ? `${handle?.name} may hold a partial copy.` : 'Nothing was saved.');
        this.result.textContent = 'Cancelled.';
      } else {
        showError(`Could not convert ${s.label}`, e);
      }
    } finally {
      if (dest === 'library') this.onLibraryChanged();
    }
  }

  /** Writes straight into the picked file: it becomes a writable blob-storage node, grown to size, then the target. */
  private async convertIntoHandle(
    s: ImageSession,
    handle: FileSystemFileHandle,
    minSparse: number,
    job: JobContext,
  ): Promise<number> {
    const name = await this.client.addFile(handle, `save-${++scratch}/${handle.name}`);
    const node = await this.client.open('blob', name, { format: 'raw' });
    try {
      const size = s.info['virtual-size'];
      // Emptied, then grown: the picked file reads as zeros, so holes need no writes.
      await this.client.execute('block_resize', { 'node-name': node, size: 0 });
      await this.client.execute('block_resize', { 'node-name': node, size });
      return (await this.client.convert([s.node], node, { minSparse, targetHasZeroInit: true }, job.progress, job.cancel)).bytes;
    } finally {
      await this.client.close(node);
    }
  }

  /** Copies the image file `tmp` of the memory storage byte for byte into the picked file. */
  private async copyIntoHandle(tmp: string, handle: FileSystemFileHandle, job: JobContext): Promise<void> {
    const src = await this.client.open('memory', tmp, { format: 'raw', readOnly: true });
    const name = await this.client.addFile(handle, `save-${++scratch}/${handle.name}`);
    const dst = await this.client.open('blob', name, { format: 'raw' });
    try {
      const size = await this.client.size(src);
      await this.client.execute('block_resize', { 'node-name': dst, size: 0 });
      await this.client.execute('block_resize', { 'node-name': dst, size });
      const CHUNK = 8 * 1024 * 1024;
      for (let off = 0; off < size; off += CHUNK) {
        if (job.signal.aborted) throw Object.assign(new Error(`saving into ${handle.name} cancelled by the user`), { code: 'ECANCELED' });
        await this.client.write(dst, off, await this.client.read(src, off, Math.min(CHUNK, size - off)));
        job.progress(Math.min(size, off + CHUNK), size);
      }
      await this.client.flush(dst);
    } finally {
      await this.client.close(dst);
      await this.client.close(src);
    }
  }
}
