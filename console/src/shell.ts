// What every page shares: the console's base path, the page context, and the breadcrumbs.

import { api, type Info, type Page } from "./api";
import { field, h, messageOf, show } from "./dom";

export const BASE = "/console";

/** What a page gets: where to draw, how to move, and what the service told about itself. */
export interface PageContext {
  main: HTMLElement;
  info: Info | null;
  navigate: (path: string) => void;
  /** Called when the page is left: stop following, destroy charts. */
  onLeave: (cleanup: () => void) => void;
}

/** A link inside the console, followed without reloading the page. */
export function link(path: string, label: string | Node, attrs: Record<string, unknown> = {}): HTMLAnchorElement {
  return h("a", { href: `${BASE}${path}`, "data-link": true, ...attrs }, label);
}

type Label = string | Promise<string>;

/** Set the breadcrumbs: [label, path] pairs, the last one the current page. A label still being
 * looked up shows its fallback until it comes. */
export function crumbs(...items: [Label, string | null, string?][]): void {
  const nav = document.getElementById("crumbs");
  if (!nav) return;
  show(
    nav,
    items.map(([label, path, fallback], index) => {
      const el = path ? link(path, "") : h("span", { "aria-current": "page" });
      const last = index === items.length - 1;
      const set = (text: string) => {
        el.textContent = text;
        if (last) document.title = `${text} · Code Actions`;
      };
      if (typeof label === "string") set(label);
      else {
        set(fallback ?? "…");
        void label.then(set, () => undefined);
      }
      return [index > 0 ? h("span", { class: "sep", "aria-hidden": "true" }, "/") : null, el];
    }),
  );
}

const projectNames = new Map<string, Promise<string>>();
/** A project's name for headings and breadcrumbs (its uuid when it has no record), asked once. */
export function projectName(uuid: string): Promise<string> {
  let name = projectNames.get(uuid);
  if (!name) {
    name = api.project(uuid).then(
      (project) => String(project.name || uuid),
      () => uuid,
    );
    projectNames.set(uuid, name);
  }
  return name;
}

/** A status line that screen readers announce: errors as alerts, the rest politely. */
export function notice(): { el: HTMLElement; error: (text: string) => void; ok: (text: string) => void; clear: () => void } {
  const el = h("p", { class: "notice", role: "status", "aria-live": "polite" });
  return {
    el,
    error(text) {
      el.className = "notice error";
      el.setAttribute("role", "alert");
      el.textContent = text;
    },
    ok(text) {
      el.className = "notice ok";
      el.setAttribute("role", "status");
      el.textContent = text;
    },
    clear() {
      el.className = "notice";
      el.textContent = "";
    },
  };
}

/** Previous/next buttons and "page N of M" for a paged list. */
export function pager(page: number, pageSize: number, total: number, go: (page: number) => void): HTMLElement {
  const pages = Math.max(1, Math.ceil(total / pageSize));
  return h(
    "div",
    { class: "pager" },
    h("button", { type: "button", disabled: page <= 1, onclick: () => go(page - 1) }, "Previous"),
    h("span", {}, `Page ${page} of ${pages} · ${total} in all`),
    h("button", { type: "button", disabled: page >= pages, onclick: () => go(page + 1) }, "Next"),
  );
}

let flashed = "";
/** A message for the next page to show (say, after a delete that leaves the page). */
export function flash(text: string): void {
  flashed = text;
}
export function takeFlash(): string {
  const text = flashed;
  flashed = "";
  return text;
}

/** A search box and, under it, one page of what matches: `fetch` asks the service for a page;
 * typing waits a quarter second, then starts again from page 1. */
export function searchedPages<T>(options: {
  label: string;
  pageSize: number;
  fetch: (search: string, page: number, pageSize: number) => Promise<Page<T>>;
  table: (items: T[]) => HTMLElement;
  empty: (searching: boolean) => string;
}): { search: HTMLElement; status: HTMLElement; list: HTMLElement } {
  const input = h("input", { type: "search", placeholder: "name contains…" });
  const list = h("div", { class: "list" });
  const status = notice();
  let page = 1;
  let timer = 0;

  async function load(): Promise<void> {
    status.clear();
    const search = input.value.trim();
    try {
      const found = await options.fetch(search, page, options.pageSize);
      show(
        list,
        found.items.length ? options.table(found.items) : h("p", { class: "muted" }, options.empty(search !== "")),
        pager(page, options.pageSize, found.total, (next) => {
          page = next;
          void load();
        }),
      );
    } catch (error) {
      status.error(messageOf(error));
    }
  }
  input.addEventListener("input", () => {
    window.clearTimeout(timer);
    timer = window.setTimeout(() => {
      page = 1;
      void load();
    }, 250);
  });
  void load();
  return { search: field(options.label, input), status: status.el, list };
}
