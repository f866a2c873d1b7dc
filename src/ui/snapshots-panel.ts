/**
 * The internal snapshots of the shown image: qemu-img snapshot -l as a table
 * and, when the image is open read-write (a library image), take / apply /
 * delete. Taking and deleting use QEMU's QMP commands on the open node
 * (blockdev-snapshot-internal-sync, blockdev-snapshot-delete-internal-sync);
 * applying has no QMP command in QEMU, so it is qemu-img snapshot -a on the
 * node. Apply and delete ask for a second click: applying throws away what
 * was written since the snapshot.
 */
import type { BlocktabClient } from '../client/index.js';
import type { SnapshotInfoQapi } from '../img/info.js';
import { showError } from './alerts.js';
import { byId, confirmTwice, h } from './dom.js';
import { snapshotDate } from './facts.js';
import { formatSize } from './format.js';
import { jobRunning } from './jobs.js';
import type { ImageSession } from './session.js';

export interface SnapshotCallbacks {
  /** The image changed: re-read its facts and redraw. */
  changed(what: string): Promise<void>;
}

function clock(sec: number, nsec: number): string {
  const t = sec + nsec / 1e9;
  const hh = Math.floor(t / 3600);
  const mm = Math.floor((t % 3600) / 60);
  const ss = (t % 60).toFixed(3).padStart(6, '0');
  return `${String(hh).padStart(4, '0')}:${String(mm).padStart(2, '0')}:${ss}`;
}

export class SnapshotsPanel {
  private session: ImageSession | null = null;
  private readonly box = byId('snapshots');
  private readonly form = byId<HTMLFormElement>('snap-create');
  private readonly name = byId<HTMLInputElement>('snap-name');
  private busy = false;

  constructor(
    private readonly client: BlocktabClient,
    private readonly cb: SnapshotCallbacks,
  ) {
    this.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      void this.create(this.name.value.trim());
    });
    document.addEventListener('blocktab-job', () => this.setBusy(this.busy));
  }

  setSession(s: ImageSession | null): void {
    this.session = s;
    if (!s) return;
    this.form.hidden = !s.writable;
    const snaps = s.info.snapshots ?? [];
    if (!this.name.value || snaps.some((sn) => sn.name === this.name.value)) this.name.value = this.suggestName(snaps);
    this.render(s, snaps);
  }

  /** Moves the focus to the row of snapshot `id` (the chain picture's dots call this). */
  focusRow(id: string): void {
    const row = this.box.querySelector<HTMLElement>(`tr[data-id="${CSS.escape(id)}"]`);
    if (!row) return;
    const target = row.querySelector<HTMLElement>('button') ?? row;
    target.focus();
    row.classList.add('picked');
    setTimeout(() => row.classList.remove('picked'), 1500);
  }

  private suggestName(snaps: SnapshotInfoQapi[]): string {
    for (let i = snaps.length + 1; ; i++) if (!snaps.some((sn) => sn.name === `snap${i}`)) return `snap${i}`;
  }

  private render(s: ImageSession, snaps: SnapshotInfoQapi[]): void {
    if (snaps.length === 0) {
      this.box.replaceChildren(h('p', { class: 'muted' }, s.writable ? 'none yet' : 'none'));
      return;
    }
    const head = ['ID', 'Tag', 'VM size', 'Date', 'VM clock'];
    if (s.writable) head.push('Actions');
    this.box.replaceChildren(
      h(
        'table',
        { class: 'snapshots', 'aria-labelledby': 'snapshots-title' },
        h('thead', {}, h('tr', {}, ...head.map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, ...snaps.map((sn) => this.row(s, sn))),
      ),
    );
  }

  private row(s: ImageSession, sn: SnapshotInfoQapi): HTMLTableRowElement {
    const cells = [
      h('td', {}, sn.id),
      h('td', {}, sn.name),
      h('td', {}, formatSize(sn['vm-state-size'])),
      h('td', {}, snapshotDate(sn)),
      h('td', {}, clock(sn['vm-clock-sec'], sn['vm-clock-nsec'])),
    ];
    if (s.writable) {
      const apply = h('button', { type: 'button', class: 'snap-apply', 'aria-label': `Apply snapshot ${sn.name}` }, 'Apply');
      const del = h('button', { type: 'button', class: 'snap-delete', 'aria-label': `Delete snapshot ${sn.name}` }, 'Delete');
      confirmTwice(apply, 'Revert? Click again', () => void this.apply(sn));
      confirmTwice(del, 'Delete? Click again', () => void this.remove(sn));
      apply.title = 'Reverts the image to this snapshot: what was written since is lost';
      cells.push(h('td', { class: 'snap-actions' }, apply, del));
    }
    return h('tr', { 'data-id': sn.id }, ...cells);
  }

  private setBusy(busy: boolean): void {
    this.busy = busy;
    const off = busy || jobRunning();
    for (const b of this.box.querySelectorAll<HTMLButtonElement>('button')) b.disabled = off;
    byId<HTMLButtonElement>('snap-create-btn').disabled = off;
  }

  /** Runs one snapshot operation on the open node, then redraws; failures become alerts. */
  private async run(what: string, failure: string, op: (s: ImageSession) => Promise<unknown>): Promise<void> {
    const s = this.session;
    if (!s?.writable || this.busy) return;
    this.setBusy(true);
    try {
      await op(s);
      await this.cb.changed(what);
    } catch (e) {
      showError(failure, e);
    } finally {
      this.setBusy(false);
    }
  }

  private create(name: string): Promise<void> {
    if (!name) return Promise.resolve();
    return this.run(`Took snapshot ${name}`, `Could not take snapshot ${name}`, (s) =>
      this.client.execute('blockdev-snapshot-internal-sync', { device: s.node, name }),
    );
  }

  private apply(sn: SnapshotInfoQapi): Promise<void> {
    return this.run(`Applied snapshot ${sn.name}: the image is back to how it was then`, `Could not apply snapshot ${sn.name}`, (s) =>
      this.client.snapshotApply(s.node, sn.id),
    );
  }

  private remove(sn: SnapshotInfoQapi): Promise<void> {
    return this.run(`Deleted snapshot ${sn.name}`, `Could not delete snapshot ${sn.name}`, (s) =>
      this.client.execute('blockdev-snapshot-delete-internal-sync', { device: s.node, id: sn.id, name: sn.name }),
    );
  }
}
