// A project: its codes (search, paging, last run status), its secrets and its members.

import { api, ApiError, type Code, type Member, type Secret } from "../api";
import { field, h, messageOf, show, statusBadge, when } from "../dom";
import { crumbs, link, notice, type PageContext, projectName, searchedPages, takeFlash } from "../shell";

const PAGE_SIZE = 50;
const ROLE_NAMES: Record<number, string> = { 1: "viewer", 2: "contributor", 3: "moderator" };

export function projectPage(context: PageContext, projectUuid: string): void {
  const base = `/projects/${encodeURIComponent(projectUuid)}`;
  const name = projectName(projectUuid);
  crumbs(["Projects", "/"], [name, null, projectUuid]);
  const title = h("h1", {}, projectUuid);
  const role = h("span", { class: "muted" });
  void name.then((text) => (title.textContent = text));
  api
    .project(projectUuid)
    .then((project) => {
      if (project.role) role.textContent = `Your role: ${project.role}`;
    })
    .catch(() => undefined); // a project known only by its codes has no record: the uuid stays the title

  const flashed = takeFlash();
  show(
    context.main,
    h("div", { class: "titlebar" }, title, role),
    flashed ? h("p", { class: "notice ok", role: "status" }, flashed) : null,
    codesSection(context, projectUuid, base),
    h("div", { class: "columns" }, secretsSection(projectUuid), membersSection(projectUuid)),
  );
}

function codesSection(context: PageContext, projectUuid: string, base: string): HTMLElement {
  const codes = searchedPages<Code>({
    label: "Search codes",
    pageSize: PAGE_SIZE,
    fetch: (search, page, pageSize) => api.codes({ project_uuid: projectUuid, search, page, page_size: pageSize }),
    table: (items) => codesTable(items, base),
    empty: (searching) => (searching ? "No code matches." : "No code yet: start with New code."),
  });
  return h(
    "section",
    { "aria-label": "Codes", class: "card" },
    h(
      "div",
      { class: "toolbar" },
      h("h2", {}, "Codes"),
      codes.search,
      h("button", { type: "button", class: "primary", onclick: () => context.navigate(`${base}/codes/new`) }, "New code"),
    ),
    codes.status,
    codes.list,
  );
}

function codesTable(codes: Code[], base: string): HTMLElement {
  return h(
    "table",
    { "aria-label": "Codes of the project" },
    h(
      "thead",
      {},
      h("tr", {}, h("th", {}, "Name"), h("th", {}, "Language"), h("th", {}, "Type"), h("th", {}, "Last run"), h("th", {}, "Updated")),
    ),
    h(
      "tbody",
      {},
      codes.map((code) =>
        h(
          "tr",
          {},
          h("td", {}, link(`${base}/codes/${encodeURIComponent(code.id)}`, code.name || code.id)),
          h("td", {}, code.language),
          h("td", {}, code.type),
          h("td", {}, code.last_run ? [statusBadge(code.last_run.status), " ", h("small", {}, when(code.last_run.created_at))] : h("span", { class: "muted" }, "never")),
          h("td", {}, when(code.updated_at)),
        ),
      ),
    ),
  );
}

function secretsSection(projectUuid: string): HTMLElement {
  const list = h("div", { class: "list" });
  const status = notice();
  const name = h("input", { type: "text", autocomplete: "off", spellcheck: "false" });
  const value = h("input", { type: "password", autocomplete: "new-password" });
  let secrets: Secret[] = [];

  async function load(): Promise<void> {
    try {
      secrets = await api.secrets(projectUuid);
      show(list, secrets.length ? secretsTable() : h("p", { class: "muted" }, "No secret yet."));
    } catch (error) {
      status.error(messageOf(error));
    }
  }

  async function act(work: () => Promise<unknown>, done: string): Promise<void> {
    status.clear();
    try {
      await work();
      status.ok(done);
      await load();
    } catch (error) {
      status.error(messageOf(error));
    }
  }

  /** Save: a new name creates the secret, a known one replaces its value. */
  function save(event: Event): void {
    event.preventDefault();
    const wanted = name.value.trim();
    const existing = secrets.find((secret) => secret.name === wanted);
    void act(
      async () => {
        if (existing) await api.replaceSecret(existing.id, value.value);
        else await api.createSecret(projectUuid, wanted, value.value);
        name.value = "";
        value.value = "";
      },
      existing ? `Replaced the value of ${wanted}.` : `Saved the secret ${wanted}.`,
    );
  }

  function secretsTable(): HTMLElement {
    return h(
      "table",
      { "aria-label": "Secrets of the project" },
      h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Value"), h("th", {}, "Updated"), h("th", {}, ""))),
      h(
        "tbody",
        {},
        secrets.map((secret) =>
          h(
            "tr",
            {},
            h("td", { class: "mono" }, secret.name),
            h("td", { class: "mono" }, secret.value),
            h("td", {}, when(secret.updated_at)),
            h(
              "td",
              { class: "actions" },
              h(
                "button",
                {
                  type: "button",
                  "aria-label": `Replace ${secret.name}`,
                  onclick: () => {
                    name.value = secret.name;
                    value.value = "";
                    value.focus();
                    status.ok(`Type the new value of ${secret.name}, then Save.`);
                  },
                },
                "Replace",
              ),
              h(
                "button",
                {
                  type: "button",
                  class: "danger",
                  "aria-label": `Delete secret ${secret.name}`,
                  onclick: () => void act(() => api.deleteSecret(secret.id), `Deleted the secret ${secret.name}.`),
                },
                "Delete",
              ),
            ),
          ),
        ),
      ),
    );
  }

  void load();
  return h(
    "section",
    { "aria-label": "Secrets", class: "card" },
    h("h2", {}, "Secrets"),
    h("p", { class: "muted" }, "Values are write-only: runs of this project read them with engine.secrets. Saving a name that exists replaces its value."),
    list,
    h(
      "form",
      { class: "inline", "aria-label": "Save a secret", onsubmit: save },
      field("Name", name),
      field("Value", value),
      h("button", { type: "submit" }, "Save"),
    ),
    status.el,
  );
}

function membersSection(projectUuid: string): HTMLElement {
  const list = h("div", { class: "list" }, h("p", { class: "muted" }, "Loading…"));
  api
    .members(projectUuid)
    .then((members: Member[]) =>
      show(
        list,
        members.length
          ? h(
              "table",
              { "aria-label": "Members of the project" },
              h("thead", {}, h("tr", {}, h("th", {}, "Email"), h("th", {}, "Role"))),
              h("tbody", {}, members.map((member) => h("tr", {}, h("td", {}, member.email), h("td", {}, ROLE_NAMES[member.role] ?? String(member.role))))),
            )
          : h("p", { class: "muted" }, "No member has a role here yet."),
      ),
    )
    .catch((error: unknown) =>
      show(list, h("p", { class: "muted" }, error instanceof ApiError && error.status === 403 ? "Only moderators see the members." : messageOf(error))),
    );
  return h("section", { "aria-label": "Members", class: "card" }, h("h2", {}, "Members"), list);
}
