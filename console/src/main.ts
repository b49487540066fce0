// The console's shell: sign-in gate, header, and the router from /console/... paths to pages.

import "./style.css";
import { api, type Info, session, whenSignedOut } from "./api";
import { h, show } from "./dom";
import { live } from "./live";
import { codePage } from "./pages/code";
import { projectPage } from "./pages/project";
import { projectsPage } from "./pages/projects";
import { runPage } from "./pages/run";
import { signInPage } from "./pages/signin";
import { BASE, type PageContext } from "./shell";

const root = document.getElementById("app")!;
let info: Info | null = null;
let cleanups: (() => void)[] = [];

function leave(): void {
  for (const cleanup of cleanups) {
    try {
      cleanup();
    } catch {
      /* a page's cleanup never blocks the next page */
    }
  }
  cleanups = [];
}

function navigate(path: string): void {
  const target = path.startsWith(BASE) ? path : `${BASE}${path}`;
  if (target !== location.pathname + location.search) history.pushState(null, "", target);
  void render();
}

function signOut(): void {
  session.signOut();
  live.close();
  void render();
}

function header(): HTMLElement {
  return h(
    "header",
    { class: "topbar" },
    h("a", { href: `${BASE}/`, class: "brand", "data-link": true }, "Code Actions"),
    h("nav", { "aria-label": "Breadcrumbs", id: "crumbs" }),
    h("span", { class: "spacer" }),
    info ? h("small", { class: "muted" }, `v${info.version}`) : null,
    h("button", { type: "button", onclick: signOut }, "Sign out"),
  );
}

async function render(): Promise<void> {
  leave();
  if (info === null) info = await api.info().catch(() => null);
  if (!session.token()) {
    const main = h("main", { id: "main" });
    show(root, main);
    signInPage(main, info, () => void render());
    return;
  }
  const main = h("main", { id: "main" });
  show(root, header(), main);
  const context: PageContext = {
    main,
    info,
    navigate,
    onLeave: (cleanup) => cleanups.push(cleanup),
  };
  const path = location.pathname.replace(/\/+$/, "");
  const parts = path.slice(BASE.length).split("/").filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) {
    projectsPage(context);
  } else if (parts[0] === "projects" && parts.length === 2) {
    projectPage(context, parts[1]);
  } else if (parts[0] === "projects" && parts[2] === "codes" && parts.length === 4) {
    codePage(context, parts[1], parts[3] === "new" ? null : parts[3]);
  } else if (parts[0] === "projects" && parts[2] === "codes" && parts[4] === "runs" && parts.length === 6) {
    runPage(context, parts[1], parts[3], parts[5]);
  } else {
    show(main, h("h1", {}, "Not found"), h("p", {}, "No console page has this address. "), h("a", { href: `${BASE}/`, "data-link": true }, "Projects"));
  }
}

document.addEventListener("click", (event) => {
  const link = (event.target as Element | null)?.closest?.("a[data-link]");
  if (!link || event.defaultPrevented || (event as MouseEvent).ctrlKey || (event as MouseEvent).metaKey) return;
  event.preventDefault();
  navigate(link.getAttribute("href")!);
});
window.addEventListener("popstate", () => void render());
whenSignedOut(() => {
  live.close();
  void render();
});
void render();
