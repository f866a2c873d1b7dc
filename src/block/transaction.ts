/**
 * Transactions (QEMU's Transaction / TransactionActionDrv): every action is
 * prepared in order; if one fails, every action prepared so far — and the
 * failing one, which must undo its own partial work — is aborted in reverse
 * order; otherwise every action commits. Prepare does the work, abort undoes
 * it, commit makes it final (drops what abort would have needed).
 */
export interface TransactionAction {
  prepare(): Promise<void>;
  commit?(): Promise<void> | void;
  abort?(): Promise<void> | void;
}

export async function runTransaction(actions: TransactionAction[]): Promise<void> {
  const started: TransactionAction[] = [];
  try {
    for (const a of actions) {
      started.push(a);
      await a.prepare();
    }
  } catch (e) {
    for (const a of started.reverse()) {
      try {
        await a.abort?.();
      } catch {
        // Aborts are best effort; the first failure is what the caller needs to see.
      }
    }
    throw e;
  }
  for (const a of actions) await a.commit?.();
}
