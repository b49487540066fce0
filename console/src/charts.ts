// Per code, over a chosen range: runs per hour by status, and p50/p95 duration (Chart.js, bundled).

import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
} from "chart.js";
import { api, type Code, type StatsBucket } from "./api";
import { field, h, messageOf, when } from "./dom";
import { notice } from "./shell";

Chart.register(BarController, BarElement, CategoryScale, LinearScale, LineController, LineElement, PointElement, Legend, Tooltip);

const RANGES: [string, number, string][] = [
  ["Last 24 hours", 24, "hour"],
  ["Last 7 days", 24 * 7, "hour"],
  ["Last 30 days", 24 * 30, "day"],
];

function label(start: string, bucket: string): string {
  return bucket === "day"
    ? when(start, { month: "short", day: "numeric" })
    : when(start, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

export function charts(code: Code): { el: HTMLElement; reload: () => void; destroy: () => void } {
  const range = h("select", {}, RANGES.map(([name], index) => h("option", { value: index }, name)));
  const runsCanvas = h("canvas", { role: "img", "aria-label": "Runs per hour by status" });
  const durationCanvas = h("canvas", { role: "img", "aria-label": "Duration p50 and p95" });
  const status = notice();
  const summary = h("p", { class: "muted", "aria-live": "polite" });
  let runsChart: Chart | null = null;
  let durationChart: Chart | null = null;

  function destroy(): void {
    runsChart?.destroy();
    durationChart?.destroy();
    runsChart = durationChart = null;
  }

  async function load(): Promise<void> {
    status.clear();
    const [, hours, bucket] = RANGES[Number(range.value)];
    const before = new Date();
    const after = new Date(before.getTime() - hours * 3600_000);
    try {
      const stats = await api.stats({ code_id: code.id, after: after.toISOString(), before: before.toISOString(), bucket });
      draw(stats.buckets, bucket);
    } catch (error) {
      status.error(messageOf(error));
    }
  }

  function draw(buckets: StatsBucket[], bucket: string): void {
    destroy();
    const labels = buckets.map((b) => label(b.start, bucket));
    const total = buckets.reduce((sum, b) => sum + b.completed + b.failed + b.started, 0);
    const failed = buckets.reduce((sum, b) => sum + b.failed, 0);
    summary.textContent = `${total} runs in the range, ${failed} failed.`;
    const per = bucket === "day" ? "day" : "hour";
    runsCanvas.setAttribute("aria-label", `Runs per ${per} by status: ${total} runs, ${failed} failed`);
    runsChart = new Chart(runsCanvas, {
      type: "bar",
      data: {
        labels,
        datasets: [
          { label: "completed", data: buckets.map((b) => b.completed), backgroundColor: "#2e9d5b", stack: "runs" },
          { label: "failed", data: buckets.map((b) => b.failed), backgroundColor: "#d1453b", stack: "runs" },
          { label: "running", data: buckets.map((b) => b.started), backgroundColor: "#d99a1e", stack: "runs" },
        ],
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        plugins: { title: { display: false } },
        scales: { x: { stacked: true, ticks: { maxTicksLimit: 12 } }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
      },
    });
    durationChart = new Chart(durationCanvas, {
      type: "line",
      data: {
        labels,
        datasets: [
          { label: "p50 (ms)", data: buckets.map((b) => b.p50_ms), borderColor: "#3a6fd8", backgroundColor: "#3a6fd8", spanGaps: true },
          { label: "p95 (ms)", data: buckets.map((b) => b.p95_ms), borderColor: "#8e44ad", backgroundColor: "#8e44ad", spanGaps: true },
        ],
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: { x: { ticks: { maxTicksLimit: 12 } }, y: { beginAtZero: true, title: { display: true, text: "ms" } } },
      },
    });
  }

  range.addEventListener("change", () => void load());
  void load();
  return {
    el: h(
      "section",
      { "aria-label": "Charts", class: "card" },
      h("div", { class: "toolbar" }, h("h2", {}, "Charts"), field("Range", range)),
      status.el,
      summary,
      h("div", { class: "charts" }, h("figure", {}, h("figcaption", {}, "Runs by status"), h("div", { class: "chart" }, runsCanvas)), h("figure", {}, h("figcaption", {}, "Duration p50 / p95"), h("div", { class: "chart" }, durationCanvas))),
    ),
    reload: () => void load(),
    destroy,
  };
}
