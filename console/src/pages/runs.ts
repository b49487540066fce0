// A code's run history: status filter, time range, paging; refreshed live as runs start and end.

import { api, type Code, type Run } from "../api";
import { durationMs, field, formatMs, h, messageOf, show, statusBadge, when } from "../dom";
import { live } from "../live";
import { link, notice, pager } from "../shell";

const PAGE_SIZE = 20;

/** `datetime-local` text (local time) as RFC 3339 UTC, or undefined when empty. */
function isoOf(local: string): string | undefined {
  if (!local) return undefined;
  const date = new Date(local);
  return Number.isNaN(date.getTime()) ? undefined : date.toISOString();
}

export function runsSection(
  code: Code,
  projectPath: string,
): { el: HTMLElement; refresh: () => void; stop: () => void } {
  const status = h(
    "select",
    {},
    ["", "started", "completed", "failed"].map((value) => h("option", { value }, value || "any")),
  );
  const from = h("input", { type: "datetime-local" });
  const to = h("input", { type: "datetime-local" });
  const list = h("div", { class: "list" });
  const problems = notice();
  let page = 1;
  let followReq: string | null = null;
  let stopped = false;

  async function load(): Promise<void> {
    problems.clear();
    try {
      const result = await api.runs({
        code_id: code.id,
        status: status.value || undefined,
        after: isoOf(from.value),
        before: isoOf(to.value),
        page,
        page_size: PAGE_SIZE,
      });
      show(
        list,
        result.items.length ? table(result.items) : h("p", { class: "muted" }, "No run matches."),
        pager(page, PAGE_SIZE, result.total, (next) => {
          page = next;
          void load();
        }),
      );
    } catch (error) {
      problems.error(messageOf(error));
    }
  }

  function table(runs: Run[]): HTMLElement {
    return h(
      "table",
      { "aria-label": "Runs of the code" },
      h(
        "thead",
        {},
        h("tr", {}, h("th", {}, "Status"), h("th", {}, "Started"), h("th", {}, "Duration"), h("th", {}, "Status code"), h("th", {}, "Run")),
      ),
      h(
        "tbody",
        {},
        runs.map((run) =>
          h(
            "tr",
            { "data-run-id": run.id },
            h("td", {}, statusBadge(run.status)),
            h("td", {}, when(run.created_at)),
            h("td", {}, run.status === "started" ? "running" : formatMs(durationMs(run.created_at, run.updated_at))),
            h("td", {}, String(run.extra?.status_code ?? "")),
            h("td", {}, link(`${projectPath}/codes/${encodeURIComponent(code.id)}/runs/${encodeURIComponent(run.id)}`, run.id.slice(0, 8), { class: "mono", "aria-label": `Open run ${run.id}` })),
          ),
        ),
      ),
    );
  }

  // Runs started elsewhere (a flow, a webhook) appear as they start and end, on the first page.
  let pending = 0;
  function soon(): void {
    if (page !== 1) return;
    window.clearTimeout(pending);
    pending = window.setTimeout(() => void load(), 300);
  }
  live
    .request(9, { project_uuid: code.project_uuid }, (event) => {
      const run = event.data.run as Run | undefined;
      if ((event.data.event === "run.started" || event.data.event === "run.finished") && run?.code_id === code.id) soon();
    })
    .then((answer) => {
      if (stopped) live.stop(answer.req_id);
      else followReq = answer.req_id;
    })
    .catch(() => undefined); // without the live channel the list still refreshes after own runs

  const filters = h(
    "form",
    {
      class: "toolbar",
      "aria-label": "Filter runs",
      onsubmit: (event: Event) => {
        event.preventDefault();
        page = 1;
        void load();
      },
    },
    field("Status", status),
    field("From", from),
    field("To", to),
    h("button", { type: "submit" }, "Filter"),
  );
  status.addEventListener("change", () => {
    page = 1;
    void load();
  });
  void load();
  return {
    el: h("section", { "aria-label": "Runs", class: "card" }, h("h2", {}, "Runs"), filters, problems.el, list),
    refresh: soon,
    stop: () => {
      stopped = true;
      window.clearTimeout(pending);
      if (followReq) live.stop(followReq);
    },
  };
}
