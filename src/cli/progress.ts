/**
 * qemu-img's `-p` progress display, re-created by hand rather than with a
 * progress-bar library because its exact text matters more than looks:
 * scripts parse `    (12.34/100%)\r`. As QEMU's qemu-progress.c, a new line
 * is printed only when the value moved by more than `minSkip` percent or hits
 * 0 or 100, values are single-precision floats, and the end prints a newline.
 */
export class Progress {
  private current = 0;
  private lastPrint = 0;

  constructor(
    private readonly enabled: boolean,
    private readonly write: (s: string) => void,
    private readonly minSkip = 1.0,
  ) {}

  /** Sets progress to `percent` (0..100), as qemu_progress_print with an absolute value. */
  set(percent: number): void {
    this.update(Math.fround(percent));
  }

  /** Adds `delta` percent (qemu_progress_print(delta, 100) as compare uses it). */
  add(delta: number): void {
    this.update(Math.fround(this.current + Math.fround(delta)));
  }

  private update(current: number): void {
    if (!this.enabled) return;
    if (current > 100) current = 100;
    this.current = current;
    if (current > this.lastPrint + this.minSkip || current < this.lastPrint - this.minSkip || current === 100 || current === 0) {
      this.lastPrint = current;
      this.write(`    (${fixed2(current)}/100%)\r`);
    }
  }

  end(): void {
    if (this.enabled) this.write('\n');
  }
}

/**
 * printf's "%.2f": the exact binary value rounded, a tie (3.125) to even as
 * glibc does ("3.12"), where toFixed rounds ties up.
 */
export function fixed2(v: number): string {
  const exact = v.toFixed(60);
  const dot = exact.indexOf('.');
  if (exact[dot + 3] === '5' && /^0*$/.test(exact.slice(dot + 4))) {
    const down = exact.slice(0, dot + 3);
    const last = Number(exact[dot + 2]);
    if (last % 2 === 0) return down;
  }
  return v.toFixed(2);
}
