/**
 * The visible message region: every failure the user should know about ends
 * up here as a sentence naming the image and what is wrong, never as a blank
 * page or a console-only error. Engine errors (BlockError/QmpError, re-created
 * by the client with their `code`) keep the engine's message, which already
 * names the structure and offset; the code picks the headline.
 */
import { byId, h } from './dom.js';

const HEADLINES: Record<string, string> = {
  ECORRUPT: 'The image is corrupt',
  ENOENT: 'File not found',
  ENOTSUP: 'Not supported',
  EINVAL: 'Invalid image or value',
  EIO: 'Read or write failed',
  EPERM: 'Not allowed',
  EACCES: 'Permission denied',
  EBUSY: 'The image is in use',
  ENOSPC: 'Out of storage space',
  EFBIG: 'Too large',
  EROFS: 'Read-only storage',
  ELOOP: 'Backing chain loops',
  ECANCELED: 'Cancelled',
  ENOMEM: 'Out of memory',
};

export interface ErrorParts {
  headline: string;
  detail: string;
  code?: string;
}

/** Splits any thrown value into a headline and a readable detail. */
export function describeError(e: unknown): ErrorParts {
  const err = e as { code?: unknown; message?: unknown; name?: unknown };
  const code = typeof err?.code === 'string' ? err.code : undefined;
  const message = typeof err?.message === 'string' && err.message ? err.message : String(e);
  const headline = (code && HEADLINES[code]) || (err?.name === 'AbortError' ? 'Cancelled' : 'Something went wrong');
  return { headline, detail: message, code };
}

/** Shows an error about `context` (e.g. "Could not open disk.qcow2"). Returns the alert element. */
export function showError(context: string, e: unknown): HTMLElement {
  const { headline, detail, code } = describeError(e);
  return addAlert('error', `${context}: ${headline.toLowerCase()}`, detail, code);
}

export function showInfo(title: string, detail = ''): HTMLElement {
  return addAlert('info', title, detail);
}

function addAlert(kind: 'error' | 'info', title: string, detail: string, code?: string): HTMLElement {
  const region = byId('alerts');
  const close = h('button', { type: 'button', 'aria-label': 'Dismiss message' }, '×');
  const el = h(
    'div',
    { class: `alert ${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    h('p', {}, h('strong', {}, title), detail ? h('br') : null, detail, code ? h('span', { class: 'alert-code' }, ` (${code})`) : null),
    close,
  );
  close.addEventListener('click', () => el.remove());
  region.append(el);
  // Keep the region short: old messages go first.
  while (region.children.length > 4) region.firstElementChild?.remove();
  return el;
}

export function clearAlerts(): void {
  byId('alerts').replaceChildren();
}
