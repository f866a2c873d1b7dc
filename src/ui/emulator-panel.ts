/**
 * "Attach to emulator": boots v86 (the npm package, loaded only when asked:
 * its code and wasm stay out of the app's first load) with the open image as
 * its first hard disk. The disk is blocktab's attach adapter (V86Buffer) over
 * the image open in the engine worker (clientDevice): every sector the guest
 * reads or writes is a request to the worker, so with a web image under a
 * local overlay the guest's writes land in the overlay, and the overlay panel
 * and "Export changes" see them.
 *
 * v86's npm package ships no BIOS: the page fetches SeaBIOS and a VGA BIOS
 * from the URLs in the form (by default bios/seabios.bin and bios/vgabios.bin
 * next to the app; Debian's seabios package and v86's repository have them).
 */
import { clientDevice, type BlocktabClient, type ClientDevice } from '../client/index.js';
import { V86Buffer } from '../attach/v86-buffer.js';
import { showError } from './alerts.js';
import { byId } from './dom.js';
import type { ImageSession } from './session.js';

/** The part of v86's V86 class the panel uses. */
interface Emulator {
  destroy(): Promise<void>;
  add_listener(event: string, fn: (arg: unknown) => void): void;
}

async function fetchBuffer(url: string, what: string): Promise<ArrayBuffer> {
  const res = await fetch(new URL(url, document.baseURI));
  if (!res.ok) throw new Error(`the ${what} at ${url} could not be fetched: HTTP ${res.status}`);
  return res.arrayBuffer();
}

export class EmulatorPanel {
  private session: ImageSession | null = null;
  private emulator: Emulator | null = null;
  private device: ClientDevice | null = null;
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly client: BlocktabClient) {
    byId<HTMLFormElement>('emulator-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      void this.boot();
    });
    byId('emulator-stop').addEventListener('click', () => void this.stop());
  }

  /** The emulator holds the image's node: a new image stops it first. */
  async setSession(s: ImageSession | null): Promise<void> {
    if (s !== this.session) await this.stop();
    this.session = s;
    byId('emulator-section').hidden = !s;
    if (!s) return;
    const boot = byId<HTMLButtonElement>('emulator-boot');
    boot.disabled = !s.writable;
    byId('emulator-hint').textContent = s.writable
      ? `The guest's writes go to ${s.remoteUrl ? 'the local overlay over ' + s.remoteUrl : s.label}.`
      : `${s.label} is open read-only: open a URL with "keep my changes in this browser", or copy the image into the library, to boot it.`;
  }

  /** Boots v86 with the open image as hda. */
  async boot(): Promise<void> {
    const s = this.session;
    if (!s || !s.writable || this.emulator) return;
    const status = byId('emulator-status');
    status.textContent = 'Loading v86 and the BIOS…';
    try {
      const [{ V86 }, { default: wasmUrl }, bios, vgaBios] = await Promise.all([
        import('v86'),
        import('v86/build/v86.wasm?url'),
        fetchBuffer(byId<HTMLInputElement>('emulator-bios').value, 'BIOS'),
        fetchBuffer(byId<HTMLInputElement>('emulator-vga-bios').value, 'VGA BIOS'),
      ]);
      if (this.session !== s) return;
      const size = await this.client.size(s.node);
      this.device = clientDevice(this.client, s.node, size);
      const disk = new V86Buffer(this.device);
      disk.onerror = (e) => showError(`The emulator's disk request to ${s.label} failed`, e);
      const options = {
        wasm_path: wasmUrl,
        bios: { buffer: bios },
        vga_bios: { buffer: vgaBios },
        hda: disk,
        memory_size: 32 * 1024 * 1024,
        vga_memory_size: 2 * 1024 * 1024,
        screen: { container: byId('emulator-screen') },
        autostart: true,
        disable_mouse: true,
        disable_speaker: true,
      };
      // v86's typings describe hda as an image to load; any object with get/set/load is taken as a ready buffer.
      this.emulator = new V86(options as unknown as ConstructorParameters<typeof V86>[0]) as unknown as Emulator;
      this.emulator.add_listener('emulator-started', () => {
        document.body.dataset.emulator = 'running';
      });
      byId<HTMLButtonElement>('emulator-stop').hidden = false;
      byId<HTMLButtonElement>('emulator-boot').disabled = true;
      const device = this.device;
      this.timer = setInterval(() => {
        status.textContent = `Running: ${device.requests()} disk requests to ${s.label}.`;
        status.dataset.requests = String(device.requests());
      }, 500);
      status.textContent = 'Booting…';
    } catch (e) {
      status.textContent = '';
      showError('Could not start the emulator', e);
    }
  }

  /** Stops the emulator and waits for its last disk requests. */
  async stop(): Promise<void> {
    const emu = this.emulator;
    if (!emu) return;
    this.emulator = null;
    clearInterval(this.timer);
    await emu.destroy().catch(() => {});
    await this.device?.flush().catch(() => {});
    this.device = null;
    delete document.body.dataset.emulator;
    byId('emulator-status').textContent = 'Stopped.';
    byId<HTMLButtonElement>('emulator-stop').hidden = true;
    byId<HTMLButtonElement>('emulator-boot').disabled = !this.session?.writable;
    byId('emulator-screen').querySelector('div')?.replaceChildren();
  }
}
