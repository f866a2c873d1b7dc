/**
 * Image locks across the tabs and workers of an origin, with the Web Locks
 * API: the browser's counterpart of QEMU's image locking (byte-range locks on
 * the image file that say "I write" and "I need nobody else to write").
 *
 * - A read-write open takes the image's lock exclusively: it fails while
 *   anyone else has the image open, as QEMU's `Failed to get "write" lock`.
 * - A read-only open takes it shared: readers coexist, but not with a
 *   writer (QEMU's `Failed to get shared "write" lock`).
 * - A read-only open with force-share takes no lock (qemu-img's -U).
 *
 * The browser releases a lock when its holder closes the image, and also when
 * the worker holding it is terminated or its tab is closed, so a killed tab
 * never leaves an image locked. Locks are only ever requested with
 * `ifAvailable` (an open fails at once instead of waiting). Where the API is
 * missing, opens take no lock (OPFS's own handle exclusivity still refuses a
 * second writer).
 */

/** A lock held until `release` resolves. */
export interface ImageLock {
  release(): Promise<void>;
}

interface LockManagerLike {
  request(name: string, options: { mode: 'exclusive' | 'shared'; ifAvailable: boolean }, cb: (lock: unknown) => Promise<void>): Promise<void>;
}

const noLock: ImageLock = { release: async () => {} };

function lockManager(): LockManagerLike | undefined {
  const locks = (globalThis as { navigator?: { locks?: LockManagerLike } }).navigator?.locks;
  return typeof locks?.request === 'function' ? locks : undefined;
}

/** Whether opens coordinate through Web Locks here (then OPFS handles may be shared, the locks keep writers apart). */
export function hasWebLocks(): boolean {
  return lockManager() !== undefined;
}

/**
 * Takes the lock named `key`: exclusively for a writer, shared for a reader.
 * Resolves to null when someone else holds it in a conflicting mode.
 */
export async function tryLockImage(key: string, write: boolean): Promise<ImageLock | null> {
  const locks = lockManager();
  if (!locks) return noLock;
  let granted!: (held: boolean) => void;
  const decided = new Promise<boolean>((r) => (granted = r));
  let unlock!: () => void;
  const held = new Promise<void>((r) => (unlock = r));
  // request() settles after the callback's promise does, i.e. once the lock is released.
  const done = locks.request(key, { mode: write ? 'exclusive' : 'shared', ifAvailable: true }, async (lock) => {
    granted(lock !== null);
    if (lock !== null) await held;
  });
  if (!(await decided)) {
    await done;
    return null;
  }
  return {
    async release() {
      unlock();
      // The next open of the same image (a commit reopening its base read-write) must find it free.
      await done;
    },
  };
}
