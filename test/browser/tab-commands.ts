/**
 * Node side of the multi-tab tests (vitest browser commands, registered in
 * vitest.config.ts): opens more tabs next to the test's page — in the same
 * browser context (same origin storage: two tabs of one user) or in an
 * isolated one (its own storage, for a quota that must not touch the other
 * test files) — drives the blocktab engine in them (tab-page.ts), lowers a
 * tab's storage quota over CDP (Storage.overrideQuotaForOrigin), and closes
 * tabs, which kills their workers as a user closing a tab does.
 */
import type { BrowserCommand } from 'vitest/node';
import type { BrowserContext, CDPSession, Page } from 'playwright';

interface Tab {
  page: Page;
  own?: BrowserContext;
  /** The session a quota override was sent on: detaching it would undo the override. */
  cdp?: CDPSession;
}
const tabs = new Map<number, Tab>();
let nextTab = 0;

function tab(id: number): Tab {
  const t = tabs.get(id);
  if (!t) throw new Error(`no tab ${id}`);
  return t;
}

/** Opens `url` (tab.html) in a new tab; `isolated`: in a context of its own. Resolves to the tab's id once its engine is ready. */
export const tabOpen: BrowserCommand<[url: string, opts?: { isolated?: boolean }]> = async (ctx, url, opts = {}) => {
  const own = opts.isolated ? await ctx.context.browser()!.newContext() : undefined;
  const page = await (own ?? ctx.context).newPage();
  await page.goto(url);
  await page.waitForFunction(() => (globalThis as { tabReady?: boolean }).tabReady === true, undefined, { timeout: 30_000 });
  const id = ++nextTab;
  tabs.set(id, { page, own });
  return id;
};

/** Calls `tab.call(method, args)` in the tab (tab-page.ts); resolves to its JSON answer. */
export const tabCall: BrowserCommand<[id: number, method: string, args: unknown[]]> = async (_ctx, id, method, args) =>
  tab(id).page.evaluate(([m, a]) => (globalThis as unknown as { tab: { call(m: string, a: unknown[]): Promise<unknown> } }).tab.call(m as string, a as unknown[]), [method, args] as const);

/** Sets the tab's origin quota in bytes (null: back to the browser's own). */
export const tabQuota: BrowserCommand<[id: number, bytes: number | null]> = async (_ctx, id, bytes) => {
  const t = tab(id);
  t.cdp ??= await t.page.context().newCDPSession(t.page);
  const origin = new URL(t.page.url()).origin;
  await t.cdp.send('Storage.overrideQuotaForOrigin', bytes === null ? { origin } : { origin, quotaSize: bytes });
};

/**
 * Waits until the tab's operation reached its kill point (or ended), reads
 * what it recorded, and closes the tab with its worker spinning at that point.
 */
export const tabKill: BrowserCommand<[id: number]> = async (_ctx, id) => {
  const { page, own } = tab(id);
  await page.waitForFunction(() => (globalThis as unknown as { tab: { settled(): boolean } }).tab.settled(), undefined, { timeout: 60_000, polling: 10 });
  const state = await page.evaluate(() => (globalThis as unknown as { tab: { state(): unknown } }).tab.state());
  await page.close();
  await own?.close();
  tabs.delete(id);
  return state;
};

/** Closes a tab (its workers die with it). */
export const tabClose: BrowserCommand<[id: number]> = async (_ctx, id) => {
  const { page, own } = tab(id);
  await page.close();
  await own?.close();
  tabs.delete(id);
};

export const tabCommands = { tabOpen, tabCall, tabQuota, tabKill, tabClose };

declare module 'vitest/browser' {
  interface BrowserCommands {
    tabOpen(url: string, opts?: { isolated?: boolean }): Promise<number>;
    tabCall<T = unknown>(id: number, method: string, args: unknown[]): Promise<T>;
    tabQuota(id: number, bytes: number | null): Promise<void>;
    tabKill<T = unknown>(id: number): Promise<T>;
    tabClose(id: number): Promise<void>;
  }
}
