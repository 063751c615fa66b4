// Every conversion of this model on this logdir, newest first, whoever ran it.
import { h, fmtDiff, fmtInt, fmtTime } from "../dom";
import type { HistoryEntry } from "../api";
import { verificationStatus, verificationText } from "../status";

function selectionText(e: HistoryEntry): string {
  const req = e.request;
  if (!req) return "—";
  const parts = [Array.isArray(req.only) ? `${req.only.length} consts` : "recommended"];
  if (req.exclude?.length) parts.push(`${req.exclude.length} excluded`);
  const kept = Object.values(req.trainable ?? {}).filter((v) => v === false).length;
  if (kept) parts.push(`${kept} non-trainable`);
  if (req.outputs?.length) parts.push(`outputs ${req.outputs.join(", ")}`);
  if (req.probe) parts.push("uploaded probe");
  return parts.join(", ");
}

function resultText(e: HistoryEntry): HTMLElement {
  if (e.error || e.ok === false) return h("span.err", null, e.error ?? "failed");
  const r = e.result;
  const ver = r?.verification;
  const status = verificationStatus(ver) ?? "not_verified";
  return h("span", null,
    `${fmtInt(r?.variables ?? null)} variables · ${fmtInt(r?.trainable_parameters ?? null)} trainable params · max diff ${status === "not_verified" ? "—" : fmtDiff(ver?.max_abs_diff ?? null)}`,
    h("span.chip.verification", { "data-status": status, style: "margin-left:6px" }, verificationText(status)),
  );
}

export interface HistoryOptions {
  /** Jobs whose output is still on disk: "current" (the latest) or "archived" (kept when replaced). */
  kept?: Record<string, "current" | "archived">;
  /** The job whose result the tab shows. */
  shown?: string | null;
  open?: (entry: HistoryEntry) => void;
}

export function historyTable(entries: HistoryEntry[], opts: HistoryOptions = {}): HTMLElement {
  if (!entries.length) return h("div.muted", null, "No conversion of this model yet.");
  const sorted = [...entries].sort((a, b) => String(b.time).localeCompare(String(a.time), undefined, { numeric: true }));
  const kept = opts.kept ?? {};
  const openCell = (e: HistoryEntry): HTMLElement => {
    if (!e.ok || !e.job) return h("td", null);
    const state = kept[e.job];
    if (!state) return h("td.muted.small", { title: "Its output was replaced by later conversions and is no longer kept." }, "not kept");
    if (opts.shown === e.job) return h("td", null, h("span.chip", { "data-status": "shown" }, "shown"));
    return h("td", null, h("button.btn.small.open-conversion", {
      "data-job": e.job, title: state === "current" ? "Show the latest conversion" : "Show this earlier conversion: its result, graphs and selection",
      on: { click: () => opts.open?.(e) },
    }, state === "current" ? "Open latest" : "Open"));
  };
  return h("table.dense.history", null,
    h("thead", null, h("tr", null, h("th", null, "When"), h("th", null, "Client"), h("th", null, "Selection"), h("th", null, "Result"), h("th.num", null, "Took"), h("th", null, ""))),
    h("tbody", null, ...sorted.map((e) => h("tr", { class: [e.error ? "failed" : "", opts.shown && opts.shown === e.job ? "shown" : ""].join(" ").trim(), "data-job": e.job ?? "" },
      h("td.mono", null, fmtTime(e.time)),
      h("td.mono", { title: e.user_agent ?? "" }, e.client ?? "—"),
      h("td", null, selectionText(e)),
      h("td", null, resultText(e)),
      h("td.num", null, e.seconds != null ? `${e.seconds.toFixed(1)} s` : "—"),
      openCell(e),
    ))),
  );
}
