/**
 * Zero read-ahead for convert: finds the source's written zeros far ahead of
 * the copy while the copy waits for its writes.
 *
 * A convert is write-bound once every worker holds its step's data and waits
 * for its write turn; the source then sits idle. qemu-img reads a zero-filled
 * region (a raw image's written zeros) only when its coroutines reach it,
 * after the data before it is written, so a data region followed by zeros
 * ends with a tail of reads and zero scans that write nothing. The scout uses
 * that idle time: while the copy says it may (convert: at least two steps read
 * and waiting for their write turn), it reads one buffer at a time ahead of
 * the workers' frontier and scans it. All zero: the range is recorded, and a
 * step wholly inside recorded ranges is not read again (its zero runs are
 * known: the whole step). Data: the read is wasted, and the scout jumps
 * ahead (twice as far at each data buffer in a row, so a data region of n
 * buffers costs about log2(n) wasted reads); the workers read it in turn.
 * A jump that lands in zeros may have passed their start: the scout then
 * probes backwards from there (nearest the workers first) until it meets
 * data again, and then goes on forwards. Once it has wasted more reads than
 * it found zeros (beyond a small allowance) it stops for the rest of the copy.
 *
 * It never changes what is written: a step is treated as zeros only when
 * every byte of it was read as zero (the sources are read-only during the
 * copy), which is what the workers' own scan would find. Only DATA runs of
 * block status are probed; zero and hole runs cost no read anyway.
 */
/** Wasted probes allowed before the scout gives up on a source where it wastes more reads than it finds zeros. */
const WASTE_ALLOWANCE = 16;

/** What the scout needs of the copy: block status, reads and the zero test. */
export interface ScoutSource {
  readonly total: number;
  /** The status run at `pos`: whether it must be read (DATA), and where it ends. */
  runAt(pos: number): Promise<{ data: boolean; end: number }>;
  read(pos: number, n: number, buf: Uint8Array): Promise<void>;
  isZero(buf: Uint8Array): boolean;
}

/** A known-zero range [start, end) of the guest address space. */
interface Range {
  start: number;
  end: number;
}

export class ZeroScout {
  /** Ranges read as all zeros, in increasing order, adjacent ones merged. */
  private readonly known: Range[] = [];
  /** Index of the first range that may still matter (ranges before it end below every later step). */
  private head = 0;
  /** Where the next probe starts (at least the workers' frontier). */
  private cursor = 0;
  /** How far to jump past a data buffer; doubles while the probes find data. */
  private skip: number;
  private running: Promise<void> | null = null;
  private stopped = false;
  private buf: Uint8Array | null = null;
  /** End of the last probe that found data. */
  private dataEnd = 0;
  /** Going back from a zero probe that followed a jump: the next probe ends at `pos`, none starts below `floor`. */
  private back: { pos: number; floor: number } | null = null;
  /** Probes made, and how many of them found data (for tests and measurements). */
  probes = 0;
  wasted = 0;

  /**
   * @param bufSize bytes per probe (the copy's step size)
   * @param frontier where the workers' next step starts
   * @param idle whether the copy is waiting for its writes, so a probe may run
   * @param alloc / free the probe buffer
   */
  constructor(
    private readonly src: ScoutSource,
    private readonly bufSize: number,
    private readonly frontier: () => number,
    private readonly idle: () => boolean,
    private readonly alloc: (n: number) => Uint8Array,
    private readonly free: (b: Uint8Array) => void,
  ) {
    this.skip = bufSize;
  }

  /**
   * The copy may have gone idle: probe until it is busy again (one probe in
   * flight at most). The promise ends with that run of probes (the copy does
   * not wait for it; stop does).
   */
  poke(): Promise<void> {
    if (this.running) return this.running;
    if (this.stopped || !this.idle()) return Promise.resolve();
    // A probe that fails stops the scout: the workers read that range themselves and report the error.
    const run = this.run()
      .catch(() => {
        this.stopped = true;
      })
      .finally(() => (this.running = null));
    this.running = run;
    return run;
  }

  /**
   * Whether every byte of [start, end) was read as zero. Called in
   * increasing order of `start` (the workers take steps in order): ranges
   * that end before `start` are dropped.
   */
  covers(start: number, end: number): boolean {
    const k = this.known;
    while (this.head < k.length && k[this.head]!.end <= start) this.head++;
    if (this.head > 64 && this.head * 2 > k.length) {
      k.splice(0, this.head);
      this.head = 0;
    }
    const r = k[this.head];
    return r !== undefined && r.start <= start && end <= r.end;
  }

  /** Stops probing and waits for the probe in flight (before the sources close); frees the buffer. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
    if (this.buf) this.free(this.buf);
    this.buf = null;
  }

  private async run(): Promise<void> {
    const src = this.src;
    while (!this.stopped && this.idle()) {
      if (this.back) {
        await this.probeBack(this.back);
        continue;
      }
      const pos = Math.max(this.cursor, this.frontier());
      if (pos >= src.total) {
        this.stopped = true;
        return;
      }
      const run = await src.runAt(pos);
      if (!run.data) {
        this.cursor = run.end;
        continue;
      }
      const n = Math.min(this.bufSize, run.end - pos);
      if (await this.probe(pos, n)) {
        // Landed in zeros after a jump: the zeros may begin anywhere since the last data, nearer the workers.
        if (this.skip > this.bufSize) this.back = { pos, floor: this.dataEnd };
        this.cursor = pos + n;
        this.skip = this.bufSize;
      } else {
        this.dataEnd = pos + n;
        this.cursor = pos + n + this.skip;
        this.skip *= 2;
      }
    }
  }

  /** Probes the buffer that ends at `back.pos`, going back towards the last data seen (and never behind the workers). */
  private async probeBack(back: { pos: number; floor: number }): Promise<void> {
    const start = back.pos - this.bufSize;
    if (start < Math.max(back.floor, this.frontier())) {
      this.back = null;
      return;
    }
    // Only a whole buffer of DATA joins the range probed after it.
    const run = await this.src.runAt(start);
    if (!run.data || run.end < back.pos || !(await this.probe(start, this.bufSize))) {
      this.back = null;
      return;
    }
    back.pos = start;
  }

  /** Reads [pos, pos + n) and records it when all zeros; whether it was. */
  private async probe(pos: number, n: number): Promise<boolean> {
    this.buf ??= this.alloc(this.bufSize);
    const view = this.buf.subarray(0, n);
    await this.src.read(pos, n, view);
    this.probes++;
    if (!this.src.isZero(view)) {
      this.wasted++;
      // A source whose zeros come in small pieces costs more reads than it saves: give up.
      if (this.wasted >= WASTE_ALLOWANCE && this.wasted > this.probes - this.wasted) this.stopped = true;
      return false;
    }
    this.record(pos, pos + n);
    return true;
  }

  /** Adds [start, end) to the known ranges, kept sorted and merged (backward probes insert before the last one). */
  private record(start: number, end: number): void {
    const k = this.known;
    let i = k.length;
    while (i > this.head && k[i - 1]!.start > start) i--;
    const before = i > 0 ? k[i - 1] : undefined;
    const after = k[i];
    if (before && before.end === start) {
      before.end = end;
      if (after && after.start === end) {
        before.end = after.end;
        k.splice(i, 1);
      }
    } else if (after && after.start === end) {
      after.start = start;
    } else {
      k.splice(i, 0, { start, end });
    }
  }
}
