/**
 * The hex view: one 512-byte sector of the guest view (offset, hex bytes,
 * ASCII), read through the client, with next/previous and "go to offset".
 * Reads are tagged with a sequence number so a slow answer for an old sector
 * never overwrites a newer one.
 */
import type { BlocktabClient } from '../client/index.js';
import { byId, h } from './dom.js';
import { hexOffset, parseOffset } from './format.js';
import type { ImageSession } from './session.js';

export const SECTOR = 512;
const ROW = 16;

export interface HexCallbacks {
  /** What the allocation map knows about the sector (shown in the caption). */
  kindAt(offset: number): string | undefined;
  onShow(offset: number): void;
  onError(e: unknown): void;
}

export class HexView {
  private session: ImageSession | null = null;
  private offset = -1;
  private seq = 0;
  private readonly pre = byId<HTMLPreElement>('hex');
  private readonly caption = byId('hex-caption');
  private readonly input = byId<HTMLInputElement>('hex-offset');

  constructor(
    private readonly client: BlocktabClient,
    private readonly cb: HexCallbacks,
  ) {
    byId('hex-prev').addEventListener('click', () => this.step(-1));
    byId('hex-next').addEventListener('click', () => this.step(1));
    byId<HTMLFormElement>('hex-goto').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const off = parseOffset(this.input.value);
      if (off === undefined) {
        this.caption.textContent = `"${this.input.value}" is not an offset (try 0x10000, 65536 or 64k).`;
        return;
      }
      void this.show(off);
    });
    this.pre.addEventListener('keydown', (ev) => {
      if (ev.key === 'PageDown') this.step(1);
      else if (ev.key === 'PageUp') this.step(-1);
      else return;
      ev.preventDefault();
    });
  }

  setSession(s: ImageSession | null): void {
    this.session = s;
    this.offset = -1;
    this.seq++;
    this.pre.replaceChildren();
    this.input.value = '';
    this.caption.textContent = 'Click a cell of the map (or press Enter on it) to see its bytes.';
  }

  /** Offset of the sector on show, or undefined when none is. */
  current(): number | undefined {
    return this.offset >= 0 ? this.offset : undefined;
  }

  private step(dir: number): void {
    if (this.offset >= 0) void this.show(this.offset + dir * SECTOR);
  }

  /** Shows the sector holding `offset` (clamped to the disk). */
  async show(offset: number): Promise<void> {
    const s = this.session;
    if (!s) return;
    const size = s.info['virtual-size'];
    const lastSector = Math.max(0, Math.ceil(size / SECTOR) - 1) * SECTOR;
    const start = Math.min(lastSector, Math.max(0, Math.floor(offset / SECTOR) * SECTOR));
    const bytes = Math.min(SECTOR, size - start);
    const seq = ++this.seq;
    try {
      const data = bytes > 0 ? await this.client.read(s.node, start, bytes) : new Uint8Array(0);
      if (seq !== this.seq) return;
      this.offset = start;
      this.input.value = hexOffset(start);
      const kind = this.cb.kindAt(start);
      this.caption.textContent = `Sector ${start / SECTOR} · ${hexOffset(start)}–${hexOffset(start + bytes)}${kind ? ` · ${kind}` : ''}`;
      this.pre.replaceChildren(...render(start, data));
      this.cb.onShow(start);
    } catch (e) {
      if (seq === this.seq) this.cb.onError(e);
    }
  }
}

/** One line per 16 bytes; zero bytes are dimmed so data stands out. */
function render(base: number, data: Uint8Array): (Node | string)[] {
  const out: (Node | string)[] = [];
  for (let row = 0; row < data.length; row += ROW) {
    out.push(h('span', { class: 'off' }, base + row === 0 ? '00000000' : (base + row).toString(16).padStart(8, '0')), '  ');
    let ascii = '';
    for (let i = 0; i < ROW; i++) {
      const p = row + i;
      if (p >= data.length) {
        out.push('   ');
        continue;
      }
      const b = data[p]!;
      const text = b.toString(16).padStart(2, '0') + (i === 7 ? '  ' : ' ');
      out.push(b === 0 ? h('span', { class: 'z' }, text) : text);
      ascii += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.';
    }
    out.push(' |', ascii, '|\n');
  }
  return out;
}
