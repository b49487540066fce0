// The projects the principal can see, with search and paging; or open one by its uuid.

import { api, type Project } from "../api";
import { field, h, show } from "../dom";
import { crumbs, link, type PageContext, searchedPages } from "../shell";

const PAGE_SIZE = 50;

export function projectsPage(context: PageContext): void {
  crumbs(["Projects", null]);
  const uuid = h("input", { type: "text", placeholder: "project uuid", spellcheck: "false" });
  const projects = searchedPages<Project>({
    label: "Search projects",
    pageSize: PAGE_SIZE,
    fetch: (search, page, pageSize) => api.projects({ search, page, page_size: pageSize }),
    table,
    empty: (searching) => (searching ? "No project matches." : "No project yet."),
  });
  show(
    context.main,
    h("h1", {}, "Projects"),
    h(
      "div",
      { class: "toolbar" },
      projects.search,
      h(
        "form",
        {
          class: "inline",
          onsubmit: (event: Event) => {
            event.preventDefault();
            if (uuid.value.trim()) context.navigate(`/projects/${encodeURIComponent(uuid.value.trim())}`);
          },
        },
        field("Project uuid", uuid),
        h("button", { type: "submit" }, "Open project"),
      ),
    ),
    projects.status,
    h("section", { "aria-label": "Project list", class: "card" }, projects.list),
  );
}

function table(projects: Project[]): HTMLElement {
  return h(
    "table",
    { "aria-label": "Projects" },
    h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Uuid"), h("th", {}, "Your role"))),
    h(
      "tbody",
      {},
      projects.map((project) =>
        h(
          "tr",
          {},
          h("td", {}, link(`/projects/${encodeURIComponent(project.uuid)}`, String(project.name || project.uuid))),
          h("td", { class: "mono" }, project.uuid),
          h("td", {}, project.role ?? ""),
        ),
      ),
    ),
  );
}
