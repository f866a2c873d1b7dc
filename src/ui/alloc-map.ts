/**
 * The allocation map: a canvas picture of the virtual disk, one cell per
 * range of clusters, coloured by what `qemu-img map` says about it.
 *
 * How it stays fast on huge images:
 * - The worker does all the walking: the disk is split into at most
 *   MAX_CHUNKS ranges and each is one `map` call (two in flight), so the
 *   first colours appear after one round trip and the page never blocks.
 *   Chunks that overlap the current view are fetched first, so zooming into
 *   a far part of a big disk does not wait for the rest.
 * - Extents are kept per chunk in typed arrays; a paint is one pass over the
 *   extents in view plus one over the cells, scheduled with
 *   requestAnimationFrame so bursts of arriving chunks cost one paint.
 * - Map extents are exact, so zooming in needs no new requests.
 *
 * Compressed clusters: MapEntry has no `compressed` member yet. qcow2 reports
 * every uncompressed data cluster with its host offset and compressed ones
 * without (QEMU's qcow2_co_block_status does the same), so for a qcow2 layer
 * "data without an offset" means compressed. An explicit `compressed` flag
 * wins when the engine adds one.
 */
import type { BlocktabClient } from '../client/index.js';
import type { MapEntry } from '../img/map.js';
import { h } from './dom.js';
import { formatSize, hexOffset } from './format.js';
import { KIND_COUNT, Kind, MAX_LAYER_COLOURS, kindColour, kindName } from './palette.js';
import type { ImageSession } from './session.js';

/** Cell pitch in CSS pixels (a 1 px gap between cells). */
const CELL = 9;
/** The disk is fetched in at most this many map requests. */
const MAX_CHUNKS = 32;
/** Smallest chunk worth a round trip. */
const MIN_CHUNK = 16 * 1024 * 1024;
const IN_FLIGHT = 2;
const ZOOM_STEP = 4;
const MIN_ROWS = 6;
const MAX_ROWS = 20;

interface Chunk {
  start: number;
  end: number;
  state: 'pending' | 'loading' | 'done' | 'failed';
  starts?: Float64Array;
  ends?: Float64Array;
  kinds?: Uint8Array;
}

export interface MapCallbacks {
  /** The user picked a cell (click or Enter): show the sector at `offset`. */
  onPick(offset: number): void;
  onError(e: unknown): void;
}

export function entryKind(e: MapEntry & { compressed?: boolean }, layerFormats: string[]): number {
  if (!e.present) return Kind.Unallocated;
  if (e.depth > 0) return Kind.Backing + Math.min(e.depth, MAX_LAYER_COLOURS) - 1;
  if (!e.data) return Kind.Zero;
  const compressed = e.compressed ?? (layerFormats[e.depth] === 'qcow2' && e.offset === undefined);
  return compressed ? Kind.Compressed : Kind.Data;
}

export class AllocMap {
  private session: ImageSession | null = null;
  private generation = 0;
  private total = 0;
  /** Smallest cell: the top image's cluster size (512 bytes for formats without clusters). */
  private grain = 512;
  private chunks: Chunk[] = [];
  private viewStart = 0;
  private cellBytes = 512;
  private cols = 1;
  private rows = 1;
  private focus = 0;
  private hover = -1;
  private marked = -1;
  private dragFrom = -1;
  private dragTo = -1;
  private paintQueued = false;
  /** Fetch loops running for the current generation. */
  private loops = 0;
  private acc = new Float64Array(0);
  private cellKinds = new Uint8Array(0);
  private readonly ctx: CanvasRenderingContext2D;

  constructor(
    private readonly client: BlocktabClient,
    private readonly canvas: HTMLCanvasElement,
    private readonly status: HTMLElement,
    private readonly rangeLabel: HTMLElement,
    private readonly legend: HTMLElement,
    private readonly cb: MapCallbacks,
  ) {
    this.ctx = canvas.getContext('2d')!;
    new ResizeObserver(() => this.layout()).observe(canvas);
    this.bindInput();
  }

  /** Starts drawing `s` (or clears the map with null); earlier requests are ignored when they arrive. */
  load(s: ImageSession | null): void {
    this.generation++;
    this.loops = 0;
    this.session = s;
    this.chunks = [];
    this.marked = -1;
    if (!s) return;
    this.total = s.info['virtual-size'];
    this.grain = s.info['cluster-size'] ?? 512;
    const chunkBytes = Math.max(MIN_CHUNK, roundUp(Math.ceil(this.total / MAX_CHUNKS), this.grain));
    for (let start = 0; start < this.total; start += chunkBytes) {
      this.chunks.push({ start, end: Math.min(this.total, start + chunkBytes), state: 'pending' });
    }
    this.renderLegend(s);
    this.layout();
    this.reset();
    this.pump();
  }

  /** Whether every chunk has arrived (tests and the status line use it). */
  get complete(): boolean {
    return this.chunks.length > 0 && this.chunks.every((c) => c.state === 'done');
  }

  /** What the map knows about `offset` (for the hex view's caption). */
  kindAt(offset: number): string | undefined {
    const c = this.chunks.find((ch) => offset >= ch.start && offset < ch.end);
    if (!c?.starts) return undefined;
    const i = upperBound(c.ends!, offset);
    return i < c.kinds!.length ? kindName(c.kinds![i]!) : undefined;
  }

  /** Marks the cell holding `offset` (the sector in the hex view). */
  mark(offset: number): void {
    const cell = Math.floor((offset - this.viewStart) / this.cellBytes);
    this.marked = cell >= 0 && cell < this.cells ? cell : -1;
    this.schedulePaint();
  }

  zoomIn(): void {
    this.zoomAround(this.cellStart(this.focus) + this.cellBytes / 2, this.cellBytes / ZOOM_STEP);
  }

  zoomOut(): void {
    this.zoomAround(this.cellStart(this.focus) + this.cellBytes / 2, this.cellBytes * ZOOM_STEP);
  }

  reset(): void {
    this.cellBytes = this.fitCellBytes();
    this.viewStart = 0;
    this.focus = Math.min(this.focus, this.usedCells - 1);
    this.viewChanged();
  }

  // ---------------------------------------------------------------- fetching

  /** Keeps IN_FLIGHT fetch loops running while chunks are pending. */
  private pump(): void {
    while (this.session && this.loops < IN_FLIGHT && this.nextChunk()) {
      this.loops++;
      const gen = this.generation;
      void this.fetchLoop(gen).finally(() => {
        if (gen === this.generation) this.loops--;
      });
    }
  }

  private async fetchLoop(gen: number): Promise<void> {
    for (;;) {
      if (gen !== this.generation || !this.session) return;
      const chunk = this.nextChunk();
      if (!chunk) return;
      chunk.state = 'loading';
      try {
        const entries = await this.client.map(this.session.node, { start: chunk.start, maxLength: chunk.end - chunk.start });
        if (gen !== this.generation) return;
        const formats = this.session.layers.map((l) => l.format);
        const n = entries.length;
        chunk.starts = new Float64Array(n);
        chunk.ends = new Float64Array(n);
        chunk.kinds = new Uint8Array(n);
        for (let i = 0; i < n; i++) {
          const e = entries[i]!;
          chunk.starts[i] = e.start;
          chunk.ends[i] = e.start + e.length;
          chunk.kinds[i] = entryKind(e, formats);
        }
        chunk.state = 'done';
      } catch (e) {
        if (gen !== this.generation) return;
        chunk.state = 'failed';
        // One message for the map, not one per chunk.
        if (!this.chunks.some((c) => c !== chunk && c.state === 'failed')) this.cb.onError(e);
      }
      this.updateTotals();
      this.schedulePaint();
    }
  }

  /** Bytes per kind over the chunks read so far, shown in the legend (and the map's state for tests). */
  private updateTotals(): void {
    const totals = new Float64Array(KIND_COUNT);
    for (const ch of this.chunks) {
      if (!ch.starts) {
        totals[Kind.Loading]! += ch.end - ch.start;
        continue;
      }
      for (let i = 0; i < ch.starts.length; i++) totals[ch.kinds![i]!]! += ch.ends![i]! - ch.starts[i]!;
    }
    for (const li of this.legend.querySelectorAll<HTMLElement>('li[data-kind]')) {
      const k = Number(li.dataset.kind);
      li.dataset.bytes = String(totals[k]);
      li.querySelector('.amount')!.textContent = totals[k] ? ` ${formatSize(totals[k]!)}` : '';
    }
    if (this.hover < 0) this.describe(this.focus);
    this.canvas.dataset.state = this.complete ? 'complete' : this.chunks.some((c) => c.state === 'failed') ? 'failed' : 'loading';
  }

  /** The next chunk to fetch: first one that overlaps the view, else the first pending. */
  private nextChunk(): Chunk | undefined {
    const vs = this.viewStart;
    const ve = this.viewEnd;
    return this.chunks.find((c) => c.state === 'pending' && c.end > vs && c.start < ve) ?? this.chunks.find((c) => c.state === 'pending');
  }

  // ------------------------------------------------------------------ geometry

  private get cells(): number {
    return this.cols * this.rows;
  }

  private get viewEnd(): number {
    return Math.min(this.total, this.viewStart + this.cells * this.cellBytes);
  }

  /** Cells that hold a part of the disk in the current view. */
  private get usedCells(): number {
    return Math.max(1, Math.ceil((this.viewEnd - this.viewStart) / this.cellBytes));
  }

  private cellStart(cell: number): number {
    return this.viewStart + cell * this.cellBytes;
  }

  /** Smallest cell size (grain × a power of two) that shows the whole disk. */
  private fitCellBytes(): number {
    let b = this.grain;
    while (b * this.cells < this.total) b *= 2;
    return b;
  }

  private zoomAround(offset: number, cellBytes: number): void {
    if (!this.session) return;
    const fit = this.fitCellBytes();
    cellBytes = Math.min(fit, Math.max(this.grain, cellBytes));
    // Keep the size a grain × power of two, so cells line up with clusters.
    let b = this.grain;
    while (b < cellBytes) b *= 2;
    this.cellBytes = b;
    const span = this.cells * b;
    const maxStart = Math.max(0, roundUp(this.total - span, b));
    this.viewStart = Math.min(maxStart, Math.max(0, alignDown(offset - span / 2, b)));
    this.focus = clamp(Math.floor((offset - this.viewStart) / b), 0, this.usedCells - 1);
    this.viewChanged();
  }

  /** Zooms so that [a, b) fills the view. */
  private zoomToRange(a: number, b: number): void {
    let cb = this.grain;
    while (cb * this.cells < b - a) cb *= 2;
    this.zoomAround(a + (b - a) / 2, cb);
  }

  private pan(cells: number): void {
    const span = this.cells * this.cellBytes;
    const maxStart = Math.max(0, roundUp(this.total - span, this.cellBytes));
    const next = clamp(this.viewStart + cells * this.cellBytes, 0, maxStart);
    if (next === this.viewStart) return;
    this.viewStart = next;
    this.viewChanged();
  }

  private viewChanged(): void {
    this.marked = -1;
    const s = this.viewStart;
    const e = this.viewEnd;
    this.rangeLabel.textContent = this.session
      ? `${hexOffset(s)}–${hexOffset(e)} · ${formatSize(e - s)} shown · ${formatSize(this.cellBytes)} per cell`
      : '';
    this.describe(this.focus);
    this.schedulePaint();
  }

  private layout(): void {
    const rect = this.canvas.getBoundingClientRect();
    if (rect.width === 0) return;
    const dpr = window.devicePixelRatio || 1;
    this.canvas.width = Math.round(rect.width * dpr);
    this.canvas.height = Math.round(rect.height * dpr);
    this.ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const wasFit = this.session !== null && this.cellBytes === this.fitCellBytes() && this.viewStart === 0;
    this.cols = Math.max(1, Math.floor(rect.width / CELL));
    // Small disks get only the rows they need at one cluster per cell.
    const wantRows = this.session ? clamp(Math.ceil(Math.ceil(this.total / this.grain) / this.cols), MIN_ROWS, MAX_ROWS) : MAX_ROWS;
    if (Math.round(rect.height) !== wantRows * CELL) {
      this.canvas.style.height = `${wantRows * CELL}px`;
      return; // the ResizeObserver calls back with the new size
    }
    this.rows = wantRows;
    if (this.session && (wasFit || this.cellBytes > this.fitCellBytes())) {
      this.cellBytes = this.fitCellBytes();
      this.viewStart = 0;
    }
    if (this.session) this.viewChanged();
  }

  // ------------------------------------------------------------------ painting

  private schedulePaint(): void {
    if (this.paintQueued) return;
    this.paintQueued = true;
    requestAnimationFrame(() => {
      this.paintQueued = false;
      this.paint();
    });
  }

  /** Sums, per cell and kind, the bytes the extents in view cover; then picks each cell's colour. */
  private classify(): void {
    const cells = this.cells;
    if (this.acc.length < cells * KIND_COUNT) this.acc = new Float64Array(cells * KIND_COUNT);
    else this.acc.fill(0, 0, cells * KIND_COUNT);
    if (this.cellKinds.length < cells) this.cellKinds = new Uint8Array(cells);
    const vs = this.viewStart;
    const ve = this.viewEnd;
    const add = (a: number, b: number, kind: number) => {
      a = Math.max(a, vs);
      b = Math.min(b, ve);
      if (a >= b) return;
      const cb = this.cellBytes;
      const c0 = Math.floor((a - vs) / cb);
      const c1 = Math.floor((b - 1 - vs) / cb);
      for (let c = c0; c <= c1; c++) {
        const cs = vs + c * cb;
        this.acc[c * KIND_COUNT + kind]! += Math.min(b, cs + cb) - Math.max(a, cs);
      }
    };
    for (const ch of this.chunks) {
      if (ch.end <= vs || ch.start >= ve) continue;
      if (!ch.starts) {
        add(ch.start, ch.end, Kind.Loading);
        continue;
      }
      for (let i = upperBound(ch.ends!, vs); i < ch.starts.length && ch.starts[i]! < ve; i++) add(ch.starts[i]!, ch.ends![i]!, ch.kinds![i]!);
    }
    for (let c = 0; c < cells; c++) {
      // A cell shows the largest kind of content it holds, however little: a
      // 1 MiB write in a 512 MiB cell must stay visible. Then zero, then the
      // larger of unallocated and not-read-yet.
      const base = c * KIND_COUNT;
      let best = -1;
      let bestBytes = 0;
      for (let k = Kind.Compressed; k < KIND_COUNT; k++) {
        if (this.acc[base + k]! > bestBytes) [best, bestBytes] = [k, this.acc[base + k]!];
      }
      if (this.acc[base + Kind.Data]! > 0 && this.acc[base + Kind.Data]! >= bestBytes) best = Kind.Data;
      if (best < 0 && this.acc[base + Kind.Zero]! > 0) best = Kind.Zero;
      if (best < 0) best = this.acc[base + Kind.Loading]! > this.acc[base + Kind.Unallocated]! ? Kind.Loading : Kind.Unallocated;
      this.cellKinds[c] = best;
    }
  }

  private paint(): void {
    const ctx = this.ctx;
    const rect = this.canvas.getBoundingClientRect();
    ctx.clearRect(0, 0, rect.width, rect.height);
    if (!this.session) return;
    this.classify();
    const used = this.usedCells;
    const size = CELL - 1;
    for (let c = 0; c < used; c++) {
      ctx.fillStyle = kindColour(this.cellKinds[c]!);
      ctx.fillRect((c % this.cols) * CELL, Math.floor(c / this.cols) * CELL, size, size);
    }
    if (this.dragFrom >= 0 && this.dragTo >= 0) {
      ctx.fillStyle = 'rgba(255, 176, 0, 0.45)';
      const [a, b] = [Math.min(this.dragFrom, this.dragTo), Math.max(this.dragFrom, this.dragTo)];
      for (let c = a; c <= b && c < used; c++) ctx.fillRect((c % this.cols) * CELL, Math.floor(c / this.cols) * CELL, size, size);
    }
    const ring = (cell: number, colour: string, width: number) => {
      if (cell < 0 || cell >= used) return;
      ctx.strokeStyle = colour;
      ctx.lineWidth = width;
      ctx.strokeRect((cell % this.cols) * CELL - 0.5, Math.floor(cell / this.cols) * CELL - 0.5, size + 1, size + 1);
    };
    ring(this.marked, '#d7263d', 2);
    if (document.activeElement === this.canvas) ring(this.focus, '#111', 2);
    else ring(this.hover, '#111', 1);
  }

  private renderLegend(s: ImageSession): void {
    const kinds = [Kind.Data, Kind.Compressed, Kind.Zero, Kind.Unallocated];
    for (let d = 1; d < s.layers.length && d <= MAX_LAYER_COLOURS; d++) kinds.push(Kind.Backing + d - 1);
    kinds.push(Kind.Loading);
    this.legend.replaceChildren(
      ...kinds.map((k) =>
        h(
          'li',
          { 'data-kind': k },
          h('span', { class: 'swatch', style: `background:${kindColour(k)}`, 'aria-hidden': 'true' }),
          kindName(k),
          h('span', { class: 'amount muted' }),
        ),
      ),
    );
    this.updateTotals();
  }

  /** Says what a cell holds in the status line (also read by screen readers). */
  private describe(cell: number): void {
    if (!this.session || cell < 0 || cell >= this.usedCells) {
      this.status.textContent = '';
      return;
    }
    this.classify();
    const a = this.cellStart(cell);
    const b = Math.min(this.total, a + this.cellBytes);
    const parts: string[] = [];
    for (let k = 0; k < KIND_COUNT; k++) {
      const v = this.acc[cell * KIND_COUNT + k]!;
      const pct = (v / (b - a)) * 100;
      if (v > 0) parts.push(`${kindName(k)} ${pct < 1 ? '<1' : Math.round(pct)}%`);
    }
    this.status.textContent = `${hexOffset(a)}–${hexOffset(b)} (${formatSize(b - a)}): ${parts.join(', ')}`;
  }

  // -------------------------------------------------------------------- input

  private cellAt(ev: MouseEvent): number {
    const r = this.canvas.getBoundingClientRect();
    const col = Math.floor((ev.clientX - r.left) / CELL);
    const row = Math.floor((ev.clientY - r.top) / CELL);
    if (col < 0 || col >= this.cols || row < 0) return -1;
    const c = row * this.cols + col;
    return c < this.usedCells ? c : -1;
  }

  private bindInput(): void {
    const cv = this.canvas;
    cv.addEventListener('mousemove', (ev) => {
      const c = this.cellAt(ev);
      if (this.dragFrom >= 0 && c >= 0) this.dragTo = c;
      if (c !== this.hover) {
        this.hover = c;
        this.describe(c);
        this.schedulePaint();
      }
    });
    cv.addEventListener('mouseleave', () => {
      this.hover = -1;
      this.schedulePaint();
    });
    cv.addEventListener('mousedown', (ev) => {
      if (ev.button !== 0) return;
      this.dragFrom = this.cellAt(ev);
      this.dragTo = -1;
    });
    window.addEventListener('mouseup', (ev) => {
      if (this.dragFrom < 0) return;
      const from = this.dragFrom;
      const to = this.dragTo;
      this.dragFrom = this.dragTo = -1;
      const c = this.cellAt(ev);
      if (to >= 0 && to !== from) {
        // A drag across cells zooms into that range.
        const [a, b] = [Math.min(from, to), Math.max(from, to)];
        this.zoomToRange(this.cellStart(a), Math.min(this.total, this.cellStart(b + 1)));
      } else if (c >= 0 && c === from) {
        this.focus = c;
        this.cb.onPick(this.cellStart(c));
      }
      this.schedulePaint();
    });
    cv.addEventListener(
      'wheel',
      (ev) => {
        if (!this.session) return;
        const c = this.cellAt(ev);
        if (c < 0) return;
        ev.preventDefault();
        const at = this.cellStart(c) + this.cellBytes / 2;
        this.zoomAround(at, ev.deltaY < 0 ? this.cellBytes / ZOOM_STEP : this.cellBytes * ZOOM_STEP);
      },
      { passive: false },
    );
    cv.addEventListener('focus', () => {
      this.describe(this.focus);
      this.schedulePaint();
    });
    cv.addEventListener('blur', () => this.schedulePaint());
    cv.addEventListener('keydown', (ev) => this.onKey(ev));
  }

  private onKey(ev: KeyboardEvent): void {
    if (!this.session) return;
    const used = this.usedCells;
    let f = this.focus;
    switch (ev.key) {
      case 'ArrowRight':
        f++;
        break;
      case 'ArrowLeft':
        f--;
        break;
      case 'ArrowDown':
        f += this.cols;
        break;
      case 'ArrowUp':
        f -= this.cols;
        break;
      case 'Home':
        f = 0;
        break;
      case 'End':
        f = used - 1;
        break;
      case 'PageDown':
        this.pan(this.cells);
        break;
      case 'PageUp':
        this.pan(-this.cells);
        break;
      case 'Enter':
      case ' ':
        this.cb.onPick(this.cellStart(f));
        break;
      case '+':
      case '=':
        this.zoomIn();
        break;
      case '-':
        this.zoomOut();
        break;
      case '0':
        this.reset();
        break;
      default:
        return;
    }
    ev.preventDefault();
    // Moving past the first or last row pans by one row.
    if (f < 0 && this.viewStart > 0) {
      this.pan(-this.cols);
      f += this.cols;
    } else if (f >= used && this.viewEnd < this.total) {
      this.pan(this.cols);
      f -= this.cols;
    }
    this.focus = clamp(f, 0, this.usedCells - 1);
    this.describe(this.focus);
    this.schedulePaint();
  }
}

function roundUp(n: number, m: number): number {
  return Math.ceil(n / m) * m;
}

function alignDown(n: number, m: number): number {
  return Math.floor(n / m) * m;
}

function clamp(n: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, n));
}

/** First index whose value is greater than `x` (arrays sorted ascending). */
function upperBound(a: Float64Array, x: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]! <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
