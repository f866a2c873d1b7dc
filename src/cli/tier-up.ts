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
 * code runs hot, and set back when the copy ends. V8 stamps a hash of its
 * flags into code-cache data and refuses data whose hash is not the current
 * one, so the CLI's code cache (compile-cache.ts) loads chunks under the
 * default budget (`underUsualFlags`) and writes its data at exit, after the
 * budget is back: otherwise the chunks a convert loads (format drivers,
 * codecs) and those it writes were refused and compiled again at every start.
 * A budget given on Node's command line is left alone.
 */
import { createRequire } from 'node:module';

/** The default budget (V8 11–12). */
const DEFAULT_BUDGET = 67584;
/** The raised budget: 8 times the default. */
export const RAISED_BUDGET = 8 * DEFAULT_BUDGET;
/**
 * Commands the bin's shell launcher (vite.cli.config.ts) starts with the
 * raised budget on Node's command line: then nothing is changed at run time,
 * so neither `node:v8` (about 2.5 ms of start-up: it loads Node's heap
 * utilities and the streams stack) nor the flag switches around each
 * compile are needed, and the code cache holds data made under the flags it
 * runs with (its entries are kept apart by `flagsKey`).
 */
export const LAUNCHER_RAISED_COMMANDS = ['convert'] as const;

let raised = false;

function setBudget(budget: number): boolean {
  try {
    (createRequire(import.meta.url)('node:v8') as typeof import('node:v8')).setFlagsFromString(`--interrupt-budget=${budget}`);
    return true;
  } catch {
    // Not Node's V8 (or flags are locked): keep the defaults.
    return false;
  }
}

/** The budget given on Node's command line (NODE_OPTIONS cannot carry V8 flags), or undefined. */
function startBudget(): string | undefined {
  return /interrupt[-_]budget[= ](\d+)/.exec(process.execArgv.join(' '))?.[1];
}

/** Whether Node was started with its own budget. */
const userBudget = (): boolean => startBudget() !== undefined;

/**
 * The budget Node was started with, as a name part for the code cache's
 * entries ('' for V8's own): data made under one budget is refused under
 * another, so runs with and without the launcher's flag keep their own.
 */
export function flagsKey(): string {
  const budget = startBudget();
  return budget === undefined ? '' : `+budget${budget}`;
}

/** Raises the budget 8 times, until `optimizeAsUsual`. */
export function optimizeLater(): void {
  if (raised || userBudget()) return;
  raised = setBudget(RAISED_BUDGET);
}

/** Runs `compile` under the default budget (see above). */
export function underUsualFlags<T>(compile: () => T): T {
  if (!raised) return compile();
  setBudget(DEFAULT_BUDGET);
  try {
    return compile();
  } finally {
    setBudget(RAISED_BUDGET);
  }
}

/** Back to V8's default budget (and flag hash), so the code cache written at exit matches the next start-up's. */
export function optimizeAsUsual(): void {
  if (!raised) return;
  raised = false;
  setBudget(DEFAULT_BUDGET);
}
