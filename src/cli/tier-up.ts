/**
 * V8 tiering for a one-shot CLI command that streams data.
 *
 * V8 hands a function to its optimizing compiler (TurboFan) once it has run
 * a budget of bytecode (`--interrupt-budget`). A convert runs a few dozen
 * functions (request path, qcow2 allocation, zero scan) a few thousand times
 * each, so by default all of them are compiled, which cost about a quarter
 * second of CPU per convert on the benches: as much as the copy's own
 * JavaScript, on a 2-core machine the CPU the I/O threads need. With a
 * larger budget only the functions that stay hot over a long copy are
 * compiled, and they are compiled a little later. Measured with
 * `perf stat` on `convert -O qcow2` of the 4 GiB mixed bench image: user
 * time 0.73 s → 0.47 s, the output identical.
 *
 * The flag is process-wide and only changes when code is optimized, never
 * what it does. It is set when a command that copies starts, before its
 * code runs hot.
 */
import { createRequire } from 'node:module';

/** The default budget (V8 11–12) times 8. */
const INTERRUPT_BUDGET = 8 * 67584;

let done = false;

export function optimizeLater(): void {
  if (done) return;
  done = true;
  try {
    (createRequire(import.meta.url)('node:v8') as typeof import('node:v8')).setFlagsFromString(`--interrupt-budget=${INTERRUPT_BUDGET}`);
  } catch {
    // Not Node's V8 (or flags are locked): keep the defaults.
  }
}
