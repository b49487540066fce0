// One run: its request (params, body, headers as stored), result and logs; followed live while it runs.

import { api, type LogLine, type Run } from "../api";
import { h, messageOf, show, when } from "../dom";
import { live } from "../live";
import { LogView, resultView } from "../runview";
import { crumbs, link, type PageContext, projectName } from "../shell";

function pretty(value: unknown): string {
  if (value === null || value === undefined || value === "") return "(none)";
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

export function runPage(context: PageContext, projectUuid: string, codeId: string, runId: string): void {
  const projectPath = `/projects/${encodeURIComponent(projectUuid)}`;
  const codePath = `${projectPath}/codes/${encodeURIComponent(codeId)}`;
  const codeName = api.code(codeId).then((code) => code.name || code.id);
  crumbs(["Projects", "/"], [projectName(projectUuid), projectPath, projectUuid], [codeName, codePath, "Code"], [`Run ${runId.slice(0, 8)}`, null]);
  const logs = new LogView("No log line.");
  const result = h("div", { class: "result" }, h("p", { class: "muted" }, "Loading…"));
  const request = h("div", { class: "request" });
  const liveNote = h("p", { class: "muted", role: "status" });
  let followReq: string | null = null;
  let left = false;
  context.onLeave(() => {
    left = true;
    if (followReq) live.stop(followReq);
  });

  function showRun(run: Run): void {
    show(result, ...resultView(run));
    show(
      request,
      h("dl", { class: "facts" }, h("dt", {}, "Run"), h("dd", { class: "mono" }, run.id), h("dt", {}, "Created"), h("dd", {}, when(run.created_at))),
      h("h3", {}, "Params"),
      h("pre", { "aria-label": "Params" }, pretty(run.params)),
      h("h3", {}, "Body"),
      h("pre", { "aria-label": "Body" }, pretty(run.body)),
      h("h3", {}, "Headers"),
      h("pre", { "aria-label": "Headers" }, pretty(run.headers)),
    );
  }

  async function follow(afterSeq: number): Promise<void> {
    liveNote.textContent = "Running: lines appear as the code writes them.";
    const answer = await live.request(8, { run_id: runId, after_seq: afterSeq }, (event) => {
      const data = event.data;
      if (data.event === "log") logs.add(data as unknown as LogLine);
      else if (data.event === "run") {
        showRun(data.run as Run);
        liveNote.textContent = "";
      } else if (data.event === "lagged") {
        void follow(Number(data.resume_after_seq ?? 0));
      } else if (data.event === "closed") {
        liveNote.textContent = "The live channel closed; reload to see the rest.";
      }
    });
    if (left) live.stop(answer.req_id);
    else followReq = answer.req_id;
  }

  async function load(): Promise<void> {
    try {
      const answer = await live.request(7, { id: runId });
      const run = answer.data as unknown as Run & { logs: LogLine[] };
      showRun(run);
      for (const line of run.logs) logs.add(line);
      if (run.status === "started" && !left) await follow(run.logs.length);
    } catch (error) {
      show(result, h("p", { class: "error", role: "alert" }, messageOf(error)));
    }
  }

  show(
    context.main,
    h("div", { class: "titlebar" }, h("h1", {}, `Run ${runId}`), link(codePath, "Back to the code")),
    liveNote,
    h(
      "div",
      { class: "columns" },
      h("section", { "aria-label": "Result", class: "card" }, h("h2", {}, "Result"), result),
      h("section", { "aria-label": "Request", class: "card" }, h("h2", {}, "Request"), request),
    ),
    h("section", { "aria-label": "Logs", class: "card logs-region" }, h("h2", {}, "Logs"), logs.el),
  );
  void load();
}
