/**
 * The one long-running job at a time (convert, import, export, commit,
 * stream), with a progress bar and Cancel button: the convert section's, or
 * the edit section's for changes to the image. The work runs in the worker;
 * the page only updates the bar, so it never freezes. Panels disable their
 * start buttons on the `blocktab-job` event.
 */
import type { CancelToken } from '../client/index.js';
import { byId } from './dom.js';
import { formatSize } from './format.js';

export interface JobContext {
  progress(done: number, total: number): void;
  /** Holder the client fills with the worker-side cancel token (client.convert's last argument). */
  cancel: { token?: CancelToken };
  /** Aborted when the user cancels: page-side loops (exports) check it between reads. */
  signal: AbortSignal;
}

let running = false;

/** Ids of a progress area: its wrapper, <progress>, text and Cancel button. */
export interface ProgressArea {
  wrap: string;
  bar: string;
  text: string;
  cancel: string;
}

export const CONVERT_PROGRESS: ProgressArea = { wrap: 'convert-progress-wrap', bar: 'convert-progress', text: 'convert-progress-text', cancel: 'convert-cancel' };
export const EDIT_PROGRESS: ProgressArea = { wrap: 'edit-progress-wrap', bar: 'edit-progress', text: 'edit-progress-text', cancel: 'edit-cancel' };

export function jobRunning(): boolean {
  return running;
}

/** Runs `work` with the progress UI; returns its result. Rejects with ECANCELED when the user cancelled. */
export async function runJob<T>(
  label: string,
  work: (ctx: JobContext) => Promise<T>,
  area: ProgressArea = CONVERT_PROGRESS,
  opts: { cancellable?: boolean } = {},
): Promise<T> {
  if (running) throw Object.assign(new Error('Another job is still running; wait for it or cancel it first'), { code: 'EBUSY' });
  running = true;
  const wrap = byId(area.wrap);
  const bar = byId<HTMLProgressElement>(area.bar);
  const text = byId(area.text);
  const cancelBtn = byId<HTMLButtonElement>(area.cancel);
  const startBtn = byId<HTMLButtonElement>('convert-start');
  const abort = new AbortController();
  const ctx: JobContext = {
    cancel: {},
    signal: abort.signal,
    progress(done, total) {
      bar.max = Math.max(1, total);
      bar.value = done;
      text.textContent = `${label}: ${total ? Math.floor((done / total) * 100) : 100}% (${formatSize(done)} of ${formatSize(total)})`;
    },
  };
  const onCancel = () => {
    cancelBtn.disabled = true;
    text.textContent = `${label}: cancelling…`;
    abort.abort();
    void ctx.cancel.token?.cancel();
  };
  wrap.hidden = false;
  bar.removeAttribute('value');
  text.textContent = `${label}…`;
  cancelBtn.hidden = opts.cancellable === false;
  cancelBtn.disabled = false;
  startBtn.disabled = true;
  cancelBtn.addEventListener('click', onCancel);
  document.dispatchEvent(new CustomEvent('blocktab-job', { detail: { running: true } }));
  try {
    return await work(ctx);
  } finally {
    running = false;
    cancelBtn.removeEventListener('click', onCancel);
    cancelBtn.hidden = true;
    startBtn.disabled = false;
    wrap.hidden = true;
    document.dispatchEvent(new CustomEvent('blocktab-job', { detail: { running: false } }));
  }
}
