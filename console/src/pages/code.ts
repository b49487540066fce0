// A code: the editor, the test panel with live logs, its endpoint card, run history and charts.

import { api, ApiError, type Code, type LogLine, type Run } from "../api";
import { charts } from "../charts";
import { createEditor, type SourceEditor } from "../editor";
import { field, h, messageOf, show } from "../dom";
import { live, LiveError } from "../live";
import { LogView, resultView } from "../runview";
import { crumbs, flash, notice, type PageContext, projectName } from "../shell";
import { TEMPLATES } from "../templates";
import { runsSection } from "./runs";

const METHODS = ["POST", "GET", "PUT", "PATCH", "DELETE"];
const LANGUAGES = ["python", "javascript", "go"];
const TYPES = ["endpoint", "flow"];

function select(options: string[], value: string): HTMLSelectElement {
  return h("select", {}, options.map((option) => h("option", { value: option, selected: option === value }, option)));
}

/** Key/value rows (query params or headers); "Add" gives another row. */
function pairRows(noun: string): { el: HTMLElement; values: () => [string, string][] } {
  const rows = h("div", { class: "pairs" });
  let count = 0;
  function addRow(): void {
    count += 1;
    const suffix = count === 1 ? "" : ` ${count}`;
    const key = h("input", { type: "text", "aria-label": `${noun} key${suffix}`, placeholder: "key", spellcheck: "false" });
    const value = h("input", { type: "text", "aria-label": `${noun} value${suffix}`, placeholder: "value", spellcheck: "false" });
    rows.append(h("div", { class: "pair" }, key, value));
    if (count > 1) key.focus();
  }
  addRow();
  const add = h("button", { type: "button", class: "small", onclick: addRow }, `Add ${noun.toLowerCase()}`);
  return {
    el: h("div", {}, rows, add),
    values: () =>
      [...rows.querySelectorAll<HTMLElement>(".pair")]
        .map((row) => {
          const [key, value] = row.querySelectorAll("input");
          return [key.value.trim(), value.value] as [string, string];
        })
        .filter(([key]) => key !== ""),
  };
}

export function codePage(context: PageContext, projectUuid: string, codeId: string | null): void {
  const projectPath = `/projects/${encodeURIComponent(projectUuid)}`;
  crumbs(["Projects", "/"], [projectName(projectUuid), projectPath, projectUuid], [codeId ? "…" : "New code", null]);
  show(context.main, h("p", { class: "muted" }, "Loading…"));
  if (codeId === null) {
    build(context, projectUuid, null);
    return;
  }
  api
    .code(codeId)
    .then((code) => {
      if (code.project_uuid !== projectUuid) {
        context.navigate(`/projects/${encodeURIComponent(code.project_uuid)}/codes/${encodeURIComponent(code.id)}`);
        return;
      }
      build(context, projectUuid, code);
    })
    .catch((error: unknown) => show(context.main, h("h1", {}, "Code not available"), h("p", { role: "alert" }, messageOf(error))));
}

function build(context: PageContext, projectUuid: string, saved: Code | null): void {
  const projectPath = `/projects/${encodeURIComponent(projectUuid)}`;
  crumbs(["Projects", "/"], [projectName(projectUuid), projectPath, projectUuid], [saved ? saved.name || saved.id : "New code", null]);
  const language = saved?.language ?? "python";
  const name = h("input", { type: "text", value: saved?.name ?? "", required: true, autocomplete: "off" });
  const languageSelect = select(LANGUAGES, language);
  const typeSelect = select(TYPES, saved?.type ?? "endpoint");
  const timeout = h("input", {
    type: "number",
    min: 5,
    max: 300,
    value: saved?.timeout ?? context.info?.default_timeout ?? 60,
  });
  const saveStatus = notice();
  const dirtyMark = h("span", { class: "muted dirty" });
  let current = saved;
  let editor: SourceEditor;

  const isDirty = () => current === null || editor.text() !== current.source;
  const markDirty = () => {
    dirtyMark.textContent = current && isDirty() ? "Unsaved changes: Run uses the draft." : "";
  };

  const saveButton = h("button", { type: "submit", class: "primary" }, "Save");
  const editorHost = h("div", { class: "editor" });
  editor = createEditor(editorHost, {
    text: saved?.source ?? TEMPLATES[language],
    language,
    onChange: markDirty,
    onSave: () => void save(),
  });
  context.onLeave(() => editor.destroy());

  languageSelect.addEventListener("change", () => {
    const next = languageSelect.value;
    const onTemplate = Object.values(TEMPLATES).includes(editor.text());
    if (current === null && onTemplate) editor.setText(TEMPLATES[next]);
    editor.setLanguage(next);
  });

  async function save(): Promise<Code | null> {
    saveStatus.clear();
    editor.clearErrors();
    const query = {
      name: name.value.trim(),
      language: languageSelect.value,
      type: typeSelect.value,
      timeout: Number(timeout.value) || 0,
    };
    if (!query.name) {
      saveStatus.error("Give the code a name.");
      name.focus();
      return null;
    }
    saveButton.disabled = true;
    saveStatus.ok(query.language === "go" ? "Saving: Go compiles the code first…" : "Saving…");
    try {
      const code = current
        ? await api.updateCode(current.id, query, editor.text())
        : await api.createCode({ ...query, project_uuid: projectUuid }, editor.text());
      const created = current === null;
      current = code;
      markDirty();
      saveStatus.ok(`Saved at ${new Date().toLocaleTimeString()}.`);
      if (created) {
        history.replaceState(null, "", `/console${projectPath}/codes/${encodeURIComponent(code.id)}`);
        crumbs(["Projects", "/"], [projectName(projectUuid), projectPath, projectUuid], [code.name, null]);
        showSavedParts(code);
      }
      return code;
    } catch (error) {
      const text = messageOf(error);
      saveStatus.error(text);
      if (error instanceof ApiError && error.status === 400) editor.showErrors(text);
      return null;
    } finally {
      saveButton.disabled = false;
    }
  }

  async function remove(): Promise<void> {
    if (!current) return;
    saveStatus.clear();
    try {
      await api.deleteCode(current.id);
      flash(`Deleted the code ${current.name}.`);
      context.navigate(projectPath);
    } catch (error) {
      saveStatus.error(messageOf(error));
    }
  }

  // The test panel.
  const method = select(METHODS, "POST");
  const params = pairRows("Param");
  const headers = pairRows("Header");
  const body = h("textarea", { rows: 4, spellcheck: "false" });
  const runButton = h("button", { type: "submit", class: "primary" }, "Run");
  const runStatus = notice();
  const logs = new LogView("Run the code to see its log lines here as they are written.");
  const result = h("div", { class: "result" }, h("p", { class: "muted" }, "No run yet."));
  let following: string | null = null;
  context.onLeave(() => following && live.stop(following));

  async function run(event: Event): Promise<void> {
    event.preventDefault();
    runStatus.clear();
    if (current === null && (await save()) === null) return;
    runButton.disabled = true;
    logs.reset();
    show(result, h("p", { class: "muted" }, "Running…"));
    if (following) live.stop(following);
    const headerMap: Record<string, string[]> = {};
    for (const [key, value] of headers.values()) (headerMap[key] ??= []).push(value);
    const data: Record<string, unknown> = {
      id: current!.id,
      params: Object.fromEntries(params.values()),
      headers: headerMap,
      body: body.value,
      method: method.value,
    };
    if (isDirty()) data.source = editor.text();
    const started = performance.now();
    try {
      const answer = await live.request(5, data, (event) => {
        const payload = event.data;
        if (payload.event === "log") logs.add(payload as unknown as LogLine);
        else if (payload.event === "run") {
          const finished = payload.run as Run;
          runStatus.ok(`Run ${finished.id} ${finished.status}.`);
          show(result, ...resultView(finished), h("p", { class: "muted" }, `Answered in ${Math.round(performance.now() - started)} ms, as seen from this browser.`));
          runButton.disabled = false;
          if (following) live.stop(following);
          following = null;
          runHistory.refresh();
        } else if (payload.event === "lagged") {
          runStatus.error("Some lines were skipped while the browser was busy; the run's page has them all.");
        } else if (payload.event === "closed") {
          runStatus.error(event.msg ?? "The live channel closed.");
          runButton.disabled = false;
        }
      });
      following = answer.req_id;
      runStatus.ok(`Run ${String(answer.data.run_id)} started.`);
    } catch (error) {
      if (error instanceof LiveError && error.closed && !isDirty()) {
        await runOverHttp(data, started);
      } else {
        show(result, h("p", { class: "error", role: "alert" }, messageOf(error)));
        if (error instanceof LiveError && error.statusCode === 2) editor.showErrors(messageOf(error));
      }
      runButton.disabled = false;
    }
  }

  /** Without the live channel (refused, or too many tabs open), the saved code still runs over
   * HTTP: the result comes, its lines with it, none of them live. */
  async function runOverHttp(data: Record<string, unknown>, started: number): Promise<void> {
    runStatus.error("The live channel is not available: running over HTTP, lines come with the result.");
    try {
      const answer = await api.runCode(current!.id, {
        params: data.params as Record<string, string>,
        body: data.body as string,
        headers: data.headers as Record<string, string[]>,
        method: data.method as string,
      });
      const logged = await api.logs(answer.result.id).catch(() => null);
      for (const line of logged?.data ?? []) logs.add(line);
      show(result, ...resultView(answer.result), h("p", { class: "muted" }, `Answered in ${Math.round(performance.now() - started)} ms.`));
      runHistory.refresh();
    } catch (error) {
      show(result, h("p", { class: "error", role: "alert" }, messageOf(error)));
    }
  }

  const deleteButton = h("button", { type: "button", class: "danger", onclick: () => void remove(), hidden: saved === null }, "Delete");
  const savedParts = h("div", { class: "saved-parts" });
  const runHistory = { refresh: () => undefined as void };

  function showSavedParts(code: Code): void {
    deleteButton.hidden = false;
    const runs = runsSection(code, projectPath);
    context.onLeave(runs.stop);
    const chartCard = charts(code);
    context.onLeave(chartCard.destroy);
    runHistory.refresh = () => {
      runs.refresh();
      chartCard.reload();
    };
    show(savedParts, endpointCard(context, code), runs.el, chartCard.el);
  }

  show(
    context.main,
    h(
      "div",
      { class: "code-layout" },
      h(
        "form",
        {
          class: "card editor-card",
          "aria-label": "Code",
          onsubmit: (event: Event) => {
            event.preventDefault();
            void save();
          },
        },
        h("div", { class: "form-row" }, field("Name", name), field("Language", languageSelect), field("Type", typeSelect), field("Timeout (seconds)", timeout)),
        h("section", { "aria-label": "Source", class: "source" }, editorHost),
        h("div", { class: "buttons" }, saveButton, deleteButton, dirtyMark),
        saveStatus.el,
      ),
      h(
        "div",
        { class: "card test-panel" },
        h(
          "form",
          { "aria-label": "Test run", onsubmit: (event: Event) => void run(event) },
          h("h2", {}, "Test"),
          field("Method", method),
          h("fieldset", {}, h("legend", {}, "Query params"), params.el),
          h("fieldset", {}, h("legend", {}, "Headers"), headers.el),
          field("Body", body),
          h("div", { class: "buttons" }, runButton),
          runStatus.el,
        ),
        h("section", { "aria-label": "Logs", class: "logs-region" }, h("h3", {}, "Logs"), logs.el),
        h("section", { "aria-label": "Result", class: "result-region" }, h("h3", {}, "Result"), result),
      ),
    ),
    savedParts,
  );
  if (saved) showSavedParts(saved);
  else name.focus();
}

function endpointCard(context: PageContext, code: Code): HTMLElement {
  const url = `${location.origin}/action/endpoint/${code.id}`;
  const curl = `curl -s -X POST '${url}?name=Ana' -H 'Content-Type: application/json' -d '{}'`;
  const limit = context.info?.rate_limit;
  const copy = (text: string, label: string) =>
    h(
      "button",
      {
        type: "button",
        onclick: (event: Event) => {
          void navigator.clipboard?.writeText(text);
          (event.target as HTMLButtonElement).textContent = "Copied";
        },
      },
      label,
    );
  return h(
    "section",
    { "aria-label": "Endpoint", class: "card" },
    h("h2", {}, "Endpoint"),
    h("p", {}, code.type === "endpoint" ? "Public: anyone with the address can run this code." : "A flow step: flows run it; the address works too."),
    h("div", { class: "copyline" }, h("code", {}, url), copy(url, "Copy URL")),
    h("div", { class: "copyline" }, h("code", {}, curl), copy(curl, "Copy curl")),
    h(
      "p",
      { class: "muted" },
      limit ? `Rate limit: ${limit.max_requests} runs per ${limit.window_seconds} s for this code (429 above).` : "",
      ` Timeout: ${code.timeout} s.`,
    ),
  );
}
