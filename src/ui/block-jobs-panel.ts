/**
 * Block jobs and dirty bitmaps of the shown image, over the worker's QMP
 * commands (the same ones QEMU answers):
 *
 * - the job list (query-block-jobs): a progress bar (offset of len), the
 *   speed measured between refreshes and the limit, and Pause / Resume /
 *   Cancel / Complete as the job's state allows. It is redrawn on every
 *   JOB_STATUS_CHANGE / BLOCK_JOB_* event and polled while a job runs.
 * - the node's dirty bitmaps (query-named-block-nodes `dirty-bitmaps`) with
 *   their dirty bytes; "Full backup and track changes" adds a bitmap and
 *   starts a full backup in one transaction, "Back up what changed" makes a
 *   qcow2 overlay of the previous backup and runs an incremental backup into
 *   it (the README's recipe), "Mirror to a copy" starts drive-mirror.
 *
 * Backups and mirrors go next to the image, in its storage.
 */
import type { BlocktabClient } from '../client/index.js';
import { showError, showInfo } from './alerts.js';
import { byId, h } from './dom.js';
import { formatSize } from './format.js';
import type { ImageSession } from './session.js';

interface BlockJobInfo {
  type: string;
  device: string;
  len: number;
  offset: number;
  speed: number;
  paused: boolean;
  ready: boolean;
  status: string;
  error?: string;
}

interface BitmapInfo {
  name: string;
  count: number;
  granularity: number;
  recording: boolean;
  busy: boolean;
}

const POLL_MS = 500;

export class BlockJobsPanel {
  private session: ImageSession | null = null;
  private readonly jobsBox = byId('block-jobs');
  private readonly bitmapsBox = byId('bitmaps');
  private readonly trackForm = byId<HTMLFormElement>('bitmap-track');
  private readonly trackName = byId<HTMLInputElement>('bitmap-name');
  private readonly mirrorBtn = byId<HTMLButtonElement>('mirror-start');
  private timer: ReturnType<typeof setInterval> | undefined;
  /** Last offset seen per job, for the measured speed. */
  private readonly last = new Map<string, { offset: number; at: number; rate: number }>();
  /** The newest backup made for each bitmap: the next incremental's backing file. */
  private readonly lastBackup = new Map<string, string>();
  private serial = 0;

  constructor(
    private readonly client: BlocktabClient,
    /** A job made or finished a file next to the image (the library lists it). */
    private readonly filesChanged: () => void = () => {},
  ) {
    void client.onEvent((ev) => {
      if (ev.event.startsWith('BLOCK_JOB_') || ev.event === 'JOB_STATUS_CHANGE') void this.refresh();
      if (ev.event === 'BLOCK_JOB_COMPLETED' || ev.event === 'BLOCK_JOB_CANCELLED') this.filesChanged();
      if (ev.event === 'BLOCK_JOB_READY') showInfo(`Job ${String((ev.data as { device: string }).device)} is ready: Complete switches to the copy`);
    });
    this.trackForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      void this.fullBackup(this.trackName.value.trim());
    });
    this.mirrorBtn.addEventListener('click', () => void this.mirror());
  }

  setSession(s: ImageSession | null): void {
    this.session = s;
    this.trackForm.hidden = !s?.writable;
    this.mirrorBtn.hidden = !s?.writable;
    void this.refresh();
  }

  /** Redraws jobs and bitmaps; keeps polling while a job exists. */
  async refresh(): Promise<void> {
    try {
      const jobs = await this.client.execute<BlockJobInfo[]>('query-block-jobs', {});
      this.renderJobs(jobs);
      if (jobs.length > 0 && this.timer === undefined) this.timer = setInterval(() => void this.refresh(), POLL_MS);
      if (jobs.length === 0 && this.timer !== undefined) {
        clearInterval(this.timer);
        this.timer = undefined;
      }
      await this.renderBitmaps();
    } catch (e) {
      showError('Could not list the block jobs', e);
    }
  }

  private renderJobs(jobs: BlockJobInfo[]): void {
    if (jobs.length === 0) {
      this.jobsBox.replaceChildren(h('p', { class: 'muted' }, 'No block job running'));
      return;
    }
    const now = performance.now();
    this.jobsBox.replaceChildren(
      h(
        'ul',
        { class: 'block-jobs', 'aria-label': 'Block jobs' },
        ...jobs.map((j) => {
          const prev = this.last.get(j.device);
          const rate = prev && now > prev.at ? ((j.offset - prev.offset) / (now - prev.at)) * 1000 : (prev?.rate ?? 0);
          this.last.set(j.device, { offset: j.offset, at: now, rate: Math.max(0, rate) });
          const bar = h('progress', { max: Math.max(1, j.len), value: j.offset, 'aria-label': `${j.device} progress` });
          const pct = j.len ? Math.floor((j.offset / j.len) * 100) : 100;
          const speed = `${formatSize(Math.max(0, rate))}/s${j.speed ? ` (limit ${formatSize(j.speed)}/s)` : ''}`;
          const buttons: HTMLButtonElement[] = [];
          const verb = (label: string, cmd: string, args: Record<string, unknown>) => {
            const b = h('button', { type: 'button', 'data-verb': cmd }, label);
            b.addEventListener('click', () => void this.verb(cmd, args));
            buttons.push(b);
          };
          if (j.paused) verb('Resume', 'block-job-resume', { device: j.device });
          else verb('Pause', 'block-job-pause', { device: j.device });
          if (j.ready) verb('Complete', 'block-job-complete', { device: j.device });
          verb('Cancel', 'block-job-cancel', { device: j.device, force: true });
          return h(
            'li',
            { 'data-job': j.device, 'data-status': j.status },
            h('span', { class: 'job-name' }, `${j.type} ${j.device}`),
            bar,
            h('span', { class: 'job-text' }, `${j.status} · ${pct}% of ${formatSize(j.len)} · ${speed}`),
            ...buttons,
          );
        }),
      ),
    );
  }

  private async renderBitmaps(): Promise<void> {
    const s = this.session;
    if (!s) {
      this.bitmapsBox.replaceChildren();
      return;
    }
    const nodes = await this.client.execute<{ 'node-name': string; 'dirty-bitmaps'?: BitmapInfo[] }[]>('query-named-block-nodes', { flat: true });
    const bitmaps = nodes.find((n) => n['node-name'] === s.node)?.['dirty-bitmaps'] ?? [];
    if (bitmaps.length === 0) {
      this.bitmapsBox.replaceChildren(h('p', { class: 'muted' }, 'No dirty bitmap on this image'));
      return;
    }
    this.bitmapsBox.replaceChildren(
      h(
        'table',
        { class: 'bitmaps', 'aria-labelledby': 'bitmaps-title' },
        h('thead', {}, h('tr', {}, ...['Name', 'Changed', 'Granularity', 'State', ''].map((t) => h('th', { scope: 'col' }, t)))),
        h(
          'tbody',
          {},
          ...bitmaps.map((b) => {
            const act = h('button', { type: 'button', class: 'bitmap-backup', disabled: b.busy || !s.writable }, 'Back up what changed');
            act.addEventListener('click', () => void this.incremental(b.name));
            return h(
              'tr',
              { 'data-bitmap': b.name },
              h('td', {}, b.name),
              h('td', { class: 'bitmap-count' }, formatSize(b.count)),
              h('td', {}, formatSize(b.granularity)),
              h('td', {}, b.busy ? 'in use by a job' : b.recording ? 'recording' : 'disabled'),
              h('td', {}, act),
            );
          }),
        ),
      ),
    );
  }

  private async verb(cmd: string, args: Record<string, unknown>): Promise<void> {
    try {
      await this.client.execute(cmd, args);
    } catch (e) {
      showError(`${cmd} failed`, e);
    }
    await this.refresh();
  }

  /** A target name next to the image that does not exist yet. */
  private async freshName(suffix: string): Promise<string> {
    const s = this.session!;
    const have = new Set((await this.client.listFiles(s.storage)).map((f) => f.name));
    const base = s.filename.replace(/\.[^./]*$/, '');
    for (;;) {
      const name = `${base}.${suffix}-${++this.serial}.qcow2`;
      if (!have.has(name)) return name;
    }
  }

  private async start(what: string, fn: (s: ImageSession) => Promise<void>): Promise<void> {
    const s = this.session;
    if (!s?.writable) return;
    try {
      await fn(s);
    } catch (e) {
      showError(`Could not start the ${what}`, e);
    }
    await this.refresh();
  }

  /** One transaction: the bitmap starts recording exactly when the full backup starts. */
  private fullBackup(name: string): Promise<void> {
    if (!name) return Promise.resolve();
    return this.start('full backup', async (s) => {
      const target = await this.freshName('full');
      await this.client.execute('transaction', {
        actions: [
          { type: 'block-dirty-bitmap-add', data: { node: s.node, name } },
          { type: 'drive-backup', data: { 'job-id': `backup-${this.serial}`, device: s.node, target, sync: 'full', format: 'qcow2' } },
        ],
      });
      this.lastBackup.set(name, target);
      showInfo(`Backing up to ${target}; bitmap ${name} records what changes from now on`);
    });
  }

  /** An overlay of the previous backup, and the clusters the bitmap marks copied into it. */
  private incremental(bitmap: string): Promise<void> {
    return this.start('incremental backup', async (s) => {
      const target = await this.freshName('inc');
      const prev = this.lastBackup.get(bitmap);
      await this.client.create(s.storage, target, 'qcow2', s.info['virtual-size'], prev ? { backingFile: prev, backingFormat: 'qcow2' } : {});
      await this.client.execute('drive-backup', {
        'job-id': `backup-${this.serial}`,
        device: s.node,
        target,
        format: 'qcow2',
        mode: 'existing',
        sync: 'incremental',
        bitmap,
      });
      this.lastBackup.set(bitmap, target);
      showInfo(prev ? `Backing up what changed into ${target} (over ${prev})` : `Backing up what changed into ${target}`);
    });
  }

  private mirror(): Promise<void> {
    return this.start('mirror', async (s) => {
      const target = await this.freshName('mirror');
      await this.client.execute('drive-mirror', { 'job-id': `mirror-${this.serial}`, device: s.node, target, sync: 'full', format: 'qcow2' });
      showInfo(`Mirroring to ${target}`);
    });
  }
}
