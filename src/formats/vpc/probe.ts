/**
 * The vpc format's probe: all the driver registry needs before the driver
 * module loads (index.ts registers it with the descriptor; the driver object
 * uses the same function).
 */
export function vpcProbe(head: Uint8Array): number {
  return head.length >= 8 && String.fromCharCode(...head.subarray(0, 8)) === 'conectix' ? 100 : 0;
}
