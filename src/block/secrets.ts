/**
 * Secrets by id, as QEMU's `--object secret,id=ID,data=...` objects: drivers
 * that need a key (luks's `key-secret` option) look it up here by the id the
 * user names. Values never appear in messages.
 */
const secrets = new Map<string, Uint8Array>();

export function registerSecret(id: string, data: string | Uint8Array): void {
  secrets.set(id, typeof data === 'string' ? new TextEncoder().encode(data) : data.slice());
}

export function lookupSecret(id: string): Uint8Array | undefined {
  return secrets.get(id);
}

export function removeSecret(id: string): void {
  secrets.delete(id);
}
