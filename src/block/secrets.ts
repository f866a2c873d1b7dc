/**
 * Secrets by id, as QEMU's `--object secret,id=ID,data=...` objects: drivers
 * that need a key (luks's `key-secret` option) look it up here by the id the
 * user names. Values never appear in messages.
 */
import { BlockError } from './errors.js';

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

/**
 * A secret used as a passphrase (luks's key-secret): QEMU reads it as a
 * UTF-8 string and refuses data that is not (282). Undefined when no secret
 * has the id.
 */
export function lookupSecretUtf8(id: string): Uint8Array | undefined {
  const s = secrets.get(id);
  if (s === undefined) return undefined;
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(s);
  } catch {
    throw new BlockError('EINVAL', `Data from secret ${id} is not valid UTF-8`);
  }
  return s;
}
