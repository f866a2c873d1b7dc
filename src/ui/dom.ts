/** Small DOM helpers: the app builds its few dynamic parts by hand, no framework. */

/** The element with `id`; the page's HTML defines every id the app uses. */
export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`index.html has no element #${id}`);
  return el as T;
}

type Child = Node | string | null | undefined | false;

/** Creates an element with attributes (`class`, `aria-*`, …) and children (strings become text). */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number | boolean | undefined> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c) el.append(c);
  return el;
}

/**
 * A button that acts on the second click: the first one changes its label to
 * `armedLabel` for a few seconds. A stray
 * click never loses data, and there are no modal dialogs in this app.
 */
export function confirmTwice(button: HTMLButtonElement, armedLabel: string, action: () => void): void {
  const label = button.textContent ?? '';
  let armed: ReturnType<typeof setTimeout> | undefined;
  const disarm = () => {
    clearTimeout(armed);
    armed = undefined;
    button.textContent = label;
    button.removeAttribute('aria-description');
    button.classList.remove('armed');
  };
  button.addEventListener('click', () => {
    if (!armed) {
      button.textContent = armedLabel;
      // The accessible name (aria-label) stays; the description says what the next click does.
      button.setAttribute('aria-description', `${armedLabel} Press again to confirm.`);
      button.classList.add('armed');
      armed = setTimeout(disarm, 4000);
      return;
    }
    disarm();
    action();
  });
}
