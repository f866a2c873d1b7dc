/**
 * Asks the browser to keep this origin's storage (OPFS, IndexedDB) under
 * pressure instead of evicting it, once, when images are first stored.
 *
 * Best effort: `navigator.storage.persist()` exists only in windows (not in
 * workers), may be denied, and a denial changes nothing for correctness. The
 * app can call it again from a user gesture, where browsers are more willing.
 */
let asked: Promise<boolean> | undefined;

export function requestPersistence(): Promise<boolean> {
  if (!asked) {
    const storage = (globalThis as { navigator?: { storage?: { persist?: () => Promise<boolean> } } }).navigator?.storage;
    asked = typeof storage?.persist === 'function' ? storage.persist().catch(() => false) : Promise.resolve(false);
  }
  return asked;
}
