// How a run reads on every page: its log lines, and its result with status code, type and duration.

import type { LogLine, Run } from "./api";
import { durationMs, formatMs, h, show, statusBadge, when } from "./dom";

/** A growing list of log lines; lines arriving twice (by seq) are shown once. */
export class LogView {
  readonly el: HTMLOListElement;
  private seen = new Set<string>();

  constructor(private readonly empty: string) {
    this.el = h("ol", { class: "logs" });
    this.reset();
  }

  reset(): void {
    this.seen.clear();
    show(this.el, h("li", { class: "muted empty" }, this.empty));
  }

  add(line: LogLine): void {
    const key = line.seq !== undefined ? `seq:${line.seq}` : (line.id ?? `${line.created_at}:${line.content}`);
    if (this.seen.has(key)) return;
    this.seen.add(key);
    this.el.querySelector(".empty")?.remove();
    this.el.append(
      h(
        "li",
        { class: `log log-${line.type}` },
        h("time", { datetime: line.created_at }, new Date(line.created_at).toLocaleTimeString()),
        h("span", { class: "log-type" }, line.type),
        h("span", { class: "log-content" }, line.content),
      ),
    );
    this.el.scrollTop = this.el.scrollHeight;
  }
}

function extraText(run: Run, key: string): string {
  const value = run.extra?.[key];
  return value === undefined || value === null ? "" : String(value);
}

/** The run's outcome: status, status code, content type, duration, reason, and what the code set. */
export function resultView(run: Run): HTMLElement[] {
  const duration = run.status === "started" ? null : durationMs(run.created_at, run.updated_at);
  const reason = extraText(run, "reason");
  const error = extraText(run, "error");
  const rows: [string, Node | string][] = [
    ["Status", statusBadge(run.status)],
    ["Status code", extraText(run, "status_code")],
    ["Content type", extraText(run, "content_type")],
    ["Duration", formatMs(duration)],
    ["Started", when(run.created_at)],
  ];
  if (reason) rows.push(["Reason", reason]);
  if (error && error !== run.result) rows.push(["Error", error]);
  return [
    h("dl", { class: "facts" }, rows.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)])),
    h("pre", { class: "result-body", "aria-label": "Result body" }, prettyResult(run)),
  ];
}

function prettyResult(run: Run): string {
  const text = run.result ?? "";
  if (extraText(run, "content_type") === "json" || text.startsWith("{") || text.startsWith("[")) {
    try {
      return JSON.stringify(JSON.parse(text), null, 2);
    } catch {
      /* not JSON after all */
    }
  }
  return text;
}

export function isFinished(run: Run): boolean {
  return run.status !== "started";
}
