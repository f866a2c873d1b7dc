/**
 * The raw format's probe: all the driver registry needs before the driver
 * module loads (index.ts registers it with the descriptor; the driver object
 * uses the same function).
 */
/** Raw is the fallback: every image is raw data, with the lowest score. */
export function rawProbe(): number {
  return 1;
}
