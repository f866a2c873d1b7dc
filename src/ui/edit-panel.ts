/**
 * "Change the image": tools that write to the shown image, so snapshots and
 * overlays have something to show. They work on library images (opened
 * read-write); for anything else the panel offers to copy the image into the
 * library first.
 *
 * - Write test data: a pattern byte or zeros over a range (qemu-io's
 *   write -P / write -z), then the hex view jumps there.
 * - New overlay on top: qemu-img create -b on the library file, then the
 *   overlay is opened in its place (the image is closed first: on OPFS the
 *   overlay's read-only open of its backing file needs the write lock gone).
 * - Commit: qemu-img commit on the open node (the top's data goes into its
 *   backing file and the top is emptied), progress from the copy.
 * - Stream: QMP block-stream as a background job; progress from
 *   query-block-jobs while JOB_STATUS_CHANGE / BLOCK_JOB_COMPLETED report
 *   how it goes; Cancel sends block-job-cancel.
 */
import type { BlocktabClient } from '../client/index.js';
import type { QmpEvent } from '../client/client.js';
import { showError } from './alerts.js';
import { byId } from './dom.js';
import { baseName, formatSize, hexOffset, parseOffset } from './format.js';
import { EDIT_PROGRESS, jobRunning, runJob } from './jobs.js';
import type { ImageSession } from './session.js';

/** Largest single write request of the pattern tool. */
const WRITE_CHUNK = 4 * 1024 * 1024;
/** How often a running block job's progress is asked for. */
const JOB_POLL_MS = 150;

export interface EditCallbacks {
  /** The image changed: re-read its facts, redraw, and show `offset` in the hex view if given. */
  changed(what: string, offset?: number): Promise<void>;
  /**
   * Closes the shown image, runs `prepare`, then opens `filename` of the
   * library in its place; when `prepare` fails the old image is reopened.
   */
  replace(filename: string, prepare: () => Promise<void>): Promise<boolean>;
  /** Copies the shown image into the library and opens the copy read-write. */
  copyToLibrary(): Promise<void>;
  /** Files in the library (names), to refuse overwriting one with a new overlay. */
  libraryFiles(): Promise<string[]>;
}

let nextJob = 0;

export class EditPanel {
  private session: ImageSession | null = null;
  private readonly result = byId('edit-result');
  private readonly buttons: HTMLButtonElement[];
  private readonly jobListeners = new Set<(e: QmpEvent) => void>();

  constructor(
    private readonly client: BlocktabClient,
    private readonly hasLibrary: boolean,
    private readonly cb: EditCallbacks,
  ) {
    this.buttons = ['write-pattern-btn', 'write-zero-btn', 'overlay-btn', 'commit-btn', 'stream-btn', 'edit-copy'].map((id) => byId<HTMLButtonElement>(id));
    byId<HTMLFormElement>('write-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const zeros = (ev.submitter as HTMLButtonElement | null)?.value === 'zeros';
      void this.guard(() => this.writeData(zeros));
    });
    byId<HTMLFormElement>('overlay-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      void this.guard(() => this.newOverlay(byId<HTMLInputElement>('overlay-name').value.trim()));
    });
    byId('commit-btn').addEventListener('click', () => void this.guard(() => this.commit()));
    byId('stream-btn').addEventListener('click', () => void this.guard(() => this.stream()));
    byId('edit-copy').addEventListener('click', () => void this.guard(() => this.cb.copyToLibrary()));
    document.addEventListener('blocktab-job', () => this.updateButtons());
    void client.onEvent((e) => {
      for (const l of this.jobListeners) l(e);
    });
  }

  setSession(s: ImageSession | null): void {
    this.session = s;
    this.result.textContent = '';
    if (!s) return;
    const tools = byId('edit-tools');
    const ro = byId('edit-readonly');
    tools.hidden = !s.writable;
    ro.hidden = s.writable;
    if (!s.writable) {
      byId('edit-readonly-text').textContent = s.readOnlyReason
        ? `${s.label} is open read-only: ${s.readOnlyReason}`
        : `${s.label} is open read-only (it comes from ${s.storage === 'http' ? 'a web server' : 'a file you opened'}). Its copy in the library can be changed: snapshots, test writes, overlays.`;
      byId('edit-copy').hidden = !this.hasLibrary || s.readOnlyReason !== undefined;
    }
    const stem = baseName(s.filename).replace(/\.qcow2$/i, '');
    const n = stem.match(/-overlay(\d*)$/);
    byId<HTMLInputElement>('overlay-name').value = n ? `${stem.slice(0, n.index)}-overlay${Number(n[1] || 1) + 1}.qcow2` : `${stem}-overlay.qcow2`;
    this.updateButtons();
  }

  private updateButtons(): void {
    const s = this.session;
    const busy = jobRunning();
    for (const b of this.buttons) b.disabled = busy;
    const hasBacking = (s?.layers.length ?? 0) > 1;
    byId<HTMLButtonElement>('commit-btn').disabled = busy || !hasBacking;
    byId<HTMLButtonElement>('stream-btn').disabled = busy || !hasBacking;
    byId<HTMLButtonElement>('overlay-btn').disabled = busy || s?.info.format !== 'qcow2';
  }

  /** Runs one tool; failures become alerts. */
  private async guard(work: () => Promise<void>): Promise<void> {
    try {
      await work();
    } catch (e) {
      if ((e as { code?: string }).code === 'ECANCELED') this.result.textContent = 'Cancelled.';
      else showError(`Could not change ${this.session?.label ?? 'the image'}`, e);
    }
  }

  private async writeData(zeros: boolean): Promise<void> {
    const s = this.session;
    if (!s?.writable) return;
    const size = s.info['virtual-size'];
    const offset = parseOffset(byId<HTMLInputElement>('write-offset').value);
    const length = parseOffset(byId<HTMLInputElement>('write-length').value);
    const patternText = byId<HTMLInputElement>('write-pattern').value.trim();
    const pattern = /^0x[0-9a-f]{1,2}$/i.test(patternText) ? parseInt(patternText, 16) : /^\d{1,3}$/.test(patternText) ? Number(patternText) : NaN;
    if (offset === undefined || length === undefined || length <= 0) {
      throw Object.assign(new Error('Offset and length must be numbers such as 0x10000, 65536 or 64k, and the length more than 0'), { code: 'EINVAL' });
    }
    if (offset + length > size) {
      throw Object.assign(new Error(`${hexOffset(offset)} + ${length} bytes is past the end of the disk (${size} bytes)`), { code: 'EINVAL' });
    }
    if (!zeros && !(pattern >= 0 && pattern <= 255)) {
      throw Object.assign(new Error(`"${patternText}" is not a byte: use 0x00–0xff or 0–255`), { code: 'EINVAL' });
    }
    if (zeros) {
      await this.client.writeZeroes(s.node, offset, length);
    } else {
      for (let done = 0; done < length; done += WRITE_CHUNK) {
        const n = Math.min(WRITE_CHUNK, length - done);
        await this.client.write(s.node, offset + done, new Uint8Array(n).fill(pattern));
      }
    }
    await this.client.flush(s.node);
    const what = zeros ? 'zeros' : `pattern 0x${pattern.toString(16).padStart(2, '0')}`;
    const msg = `Wrote ${what} over ${formatSize(length)} at ${hexOffset(offset)}.`;
    await this.cb.changed(msg, offset);
    this.result.textContent = msg;
  }

  private async newOverlay(name: string): Promise<void> {
    const s = this.session;
    if (!s?.writable || !name) return;
    if (name.includes('/')) throw Object.assign(new Error(`"${name}": give a file name without a folder`), { code: 'EINVAL' });
    const dir = s.filename.includes('/') ? s.filename.slice(0, s.filename.lastIndexOf('/') + 1) : '';
    const file = dir + name;
    if ((await this.cb.libraryFiles()).includes(file)) {
      throw Object.assign(new Error(`${file} is already in the library; choose another name (or delete it first)`), { code: 'EEXIST' });
    }
    const backing = baseName(s.filename);
    const format = s.info.format;
    const ok = await this.cb.replace(file, async () => {
      await this.client.create('local', file, 'qcow2', undefined, { backingFile: backing, backingFormat: format });
    });
    if (ok) this.result.textContent = `Created ${name} on top of ${backing}: writes now go to the overlay.`;
  }

  private async commit(): Promise<void> {
    const s = this.session;
    if (!s?.writable || s.layers.length < 2) return;
    const base = baseName(s.layers[1]!.filename);
    await runJob(`Committing ${s.label} into ${base}`, (job) => this.client.commit(s.node, {}, job.progress), EDIT_PROGRESS, { cancellable: false });
    const msg = `Committed ${s.label} into ${base}; ${s.label} is empty again.`;
    await this.cb.changed(msg);
    this.result.textContent = msg;
  }

  private async stream(): Promise<void> {
    const s = this.session;
    if (!s?.writable || s.layers.length < 2) return;
    const id = `stream-${++nextJob}`;
    const label = `Streaming into ${s.label}`;
    const running = runJob(
      label,
      (job) =>
        new Promise<void>((resolve, reject) => {
          let timer: ReturnType<typeof setInterval> | undefined;
          const done = (err?: unknown) => {
            clearInterval(timer);
            this.jobListeners.delete(listener);
            if (err) reject(err);
            else resolve();
          };
          const listener = (e: QmpEvent) => {
            if (e.data.device !== id && e.data.id !== id) return;
            if (e.event === 'BLOCK_JOB_COMPLETED') {
              const error = e.data.error as string | undefined;
              if (error) done(Object.assign(new Error(error), { code: 'EIO' }));
              else {
                job.progress(Number(e.data.len), Number(e.data.len));
                done();
              }
            } else if (e.event === 'BLOCK_JOB_CANCELLED') {
              done(Object.assign(new Error(`block-stream ${id} cancelled`), { code: 'ECANCELED' }));
            }
          };
          this.jobListeners.add(listener);
          job.cancel.token = { cancel: () => this.client.execute('block-job-cancel', { device: id }).then(() => {}) };
          this.client.execute('block-stream', { device: s.node, 'job-id': id }).then(() => {
            timer = setInterval(() => {
              void this.client
                .execute<{ device: string; len: number; offset: number }[]>('query-block-jobs')
                .then((jobs) => {
                  const j = jobs.find((x) => x.device === id);
                  if (j && timer !== undefined) job.progress(j.offset, j.len);
                })
                .catch(() => {});
            }, JOB_POLL_MS);
          }, done);
        }),
      EDIT_PROGRESS,
    );
    try {
      await running;
    } catch (e) {
      // A cancelled or failed stream may have copied part of the data already: show what the image holds now.
      await this.cb.changed(`Stream stopped: ${(e as Error).message}`);
      throw e;
    }
    const msg = `Streamed the backing data into ${s.label}; it no longer needs a backing file.`;
    await this.cb.changed(msg);
    this.result.textContent = msg;
  }
}
