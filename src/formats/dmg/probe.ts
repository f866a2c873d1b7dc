/**
 * The dmg format's probe: all the driver registry needs before the driver
 * module loads (index.ts registers it with the descriptor; the driver object
 * uses the same function).
 */
/** QEMU probes dmg by file name only (".dmg" scores 2, just above raw): its only signature is its trailer. */
export function dmgProbe(_head: Uint8Array, filename: string): number {
  return filename.length > 4 && filename.endsWith('.dmg') ? 2 : 0;
}
