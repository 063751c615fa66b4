// Every conversion of this model on this logdir, newest first, whoever ran it.
import { h, fmtDiff, fmtInt, fmtTime } from "../dom";
import type { HistoryEntry } from "../api";
import { verificationStatus, verificationText } from "../status";

function selectionText(e: HistoryEntry): string {
  const req = e.request ?? {};
  const parts = [Array.isArray(req.only) ? `${req.only.length} consts` : "recommended"];
  if (req.exclude?.length) parts.push(`${req.exclude.length} excluded`);
  const kept = Object.values(req.trainable ?? {}).filter((v) => v === false).length;
  if (kept) parts.push(`${kept} non-trainable`);
  return parts.join(", ");
}

function resultText(e: HistoryEntry): HTMLElement {
  if (e.error || e.ok === false) return h("span.err", null, e.error ?? "failed");
  const r = e.result ?? {};
  const ver = r.verification;
  const status = verificationStatus(ver) ?? "not_verified";
  return h("span", null,
    `${fmtInt(r.variables ?? null)} variables · ${fmtInt(r.trainable_parameters ?? null)} trainable params · max diff ${status === "not_verified" ? "—" : fmtDiff(ver?.max_abs_diff ?? null)}`,
    h("span.chip.verification", { "data-status": status, style: "margin-left:6px" }, verificationText(status)),
  );
}

export function historyTable(entries: HistoryEntry[]): HTMLElement {
  if (!entries.length) return h("div.muted", null, "No conversion of this model yet.");
  const sorted = [...entries].sort((a, b) => String(b.time).localeCompare(String(a.time), undefined, { numeric: true }));
  return h("table.dense.history", null,
    h("thead", null, h("tr", null, h("th", null, "When"), h("th", null, "Client"), h("th", null, "Selection"), h("th", null, "Result"), h("th.num", null, "Took"))),
    h("tbody", null, ...sorted.map((e) => h("tr", { class: e.error ? "failed" : "" },
      h("td.mono", null, fmtTime(e.time)),
      h("td.mono", { title: e.user_agent ?? "" }, e.client ?? "—"),
      h("td", null, selectionText(e)),
      h("td", null, resultText(e)),
      h("td.num", null, e.seconds != null ? `${e.seconds.toFixed(1)} s` : "—"),
    ))),
  );
}
