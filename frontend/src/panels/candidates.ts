// The candidate table: what will become a variable, whether it trains, filtered and totalled.
import { h, replace, fmtBytes, fmtInt, fmtShape } from "../dom";
import type { Candidate, Inspection } from "../api";

export interface Selection {
  only: string[];
  trainable: Record<string, boolean>;
}

export class CandidateTable {
  readonly el: HTMLElement;
  private include = new Set<string>();
  private trainable = new Map<string, boolean>();
  private candidates: Candidate[] = [];
  private roleFilter: HTMLSelectElement;
  private textFilter: HTMLInputElement;
  private tbody: HTMLElement;
  private totals: HTMLElement;
  private headCheck: HTMLInputElement;
  private shown: Candidate[] = [];
  private tableEl: HTMLTableElement;
  private resize: ResizeObserver | null = null;
  private elideFrame = 0;
  /** Rows in the DOM: the first ROWS_CHUNK of `shown`, more as the table is scrolled (6,666 rows at once made
   * the tab take seconds to show them and every frame of a graph pan/zoom pay for their layout). */
  private rendered = 0;
  private moreRow: HTMLElement | null = null;

  constructor(private onChange: () => void) {
    this.roleFilter = h("select.in", { "aria-label": "Filter by role", on: { change: () => this.renderRows() } });
    this.textFilter = h("input.in", {
      type: "search", placeholder: "Filter by name, variable, reason…", "aria-label": "Filter by text",
      on: { input: () => this.renderRows() },
    });
    this.headCheck = h("input", {
      type: "checkbox", title: "Include every row shown",
      on: { change: () => this.setShown(this.headCheck.checked) },
    });
    this.tbody = h("tbody");
    this.totals = h("div.totals");
    this.el = h("div.cands", null,
      h("div.toolbar", null,
        h("label.lbl", null, "Role ", this.roleFilter),
        this.textFilter,
        h("button.btn.small", { on: { click: () => this.setShown(true) }, title: "Include every row shown" }, "Select all"),
        h("button.btn.small", { on: { click: () => this.setShown(false) }, title: "Exclude every row shown" }, "Select none"),
        h("button.btn.small", { on: { click: () => this.selectRecommended() }, title: "Back to the recommended selection" }, "Recommended"),
        h("span.grow"),
        this.totals,
      ),
      h("div.table-wrap", { on: { scroll: (e: Event) => this.maybeMore(e.currentTarget as HTMLElement) } },
        this.tableEl = h("table.dense.cand-table", null,
          h("colgroup", null, ...["c-inc", "c-name", "c-role", "c-train", "c-shape", "c-dtype", "c-params", "c-bytes", "c-var", "c-reason"]
            .map((c) => h("col", { class: c }))),
          h("thead", null, h("tr", null,
            h("th.c-inc", null, this.headCheck),
            h("th", null, "Const"),
            h("th", null, "Role"),
            h("th.c-train", null, "Trainable"),
            h("th", null, "Shape"),
            h("th", null, "dtype"),
            h("th.num", null, "Params"),
            h("th.num", null, "Bytes"),
            h("th.c-var", null, "Variable name"),
            h("th", null, "Reason"),
          )),
          this.tbody,
        ),
      ),
    );
    // Names are elided in the middle to fit their column (the end of a TF name is what tells layers apart).
    if (typeof ResizeObserver !== "undefined") {
      this.resize = new ResizeObserver(() => this.scheduleElide());
      this.resize.observe(this.tableEl);
    }
  }

  private scheduleElide(): void {
    if (this.elideFrame) return;
    this.elideFrame = requestAnimationFrame(() => { this.elideFrame = 0; this.elide(); });
  }

  /** Fits every name cell's text to its column: "MobilenetV2/expa…/depthwise_weights", full name on hover. */
  private elide(): void {
    const first = this.tbody.querySelector("td.c-name") as HTMLElement | null;
    if (!first) return;
    const charW = measureChar(first);
    const n = Math.max(6, Math.floor((first.clientWidth - 12) / charW));
    this.tbody.querySelectorAll<HTMLElement>("td.c-name [data-full]").forEach((el) => {
      const full = el.dataset.full ?? "";
      const text = middleEllipsis(full, n - (el.dataset.indent ? 2 : 0));
      if (el.textContent !== text) el.textContent = text;
    });
  }

  setInspection(ins: Inspection): void {
    this.candidates = ins.candidates ?? [];
    // No column for variable names: most are the constant's own name; the few that differ show under it.
    this.tableEl.classList.add("same-names");
    this.include = new Set(this.candidates.filter((c) => c.recommended).map((c) => c.name));
    this.trainable = new Map(this.candidates.map((c) => [c.name, !!c.trainable]));
    const roles = [...new Set(this.candidates.map((c) => c.role))].sort();
    replace(this.roleFilter,
      h("option", { value: "" }, `all (${this.candidates.length})`),
      ...roles.map((r) => h("option", { value: r }, `${r} (${this.candidates.filter((c) => c.role === r).length})`)),
    );
    this.textFilter.value = "";
    this.renderRows();
  }

  /** Shows the selection a conversion was made with (`only` null: the recommended ones less `exclude`). */
  applySelection(only: string[] | null | undefined, trainable: Record<string, boolean> | undefined, exclude: string[] = []): void {
    const known = new Set(this.candidates.map((c) => c.name));
    const base = Array.isArray(only) ? only : this.candidates.filter((c) => c.recommended).map((c) => c.name);
    const out = new Set(exclude);
    this.include = new Set(base.filter((n) => known.has(n) && !out.has(n)));
    this.trainable = new Map(this.candidates.map((c) => [c.name, !!c.trainable]));
    for (const [n, t] of Object.entries(trainable ?? {})) if (known.has(n)) this.trainable.set(n, !!t);
    this.renderRows();
    this.onChange();
  }

  selection(): Selection {
    const only = this.candidates.filter((c) => this.include.has(c.name)).map((c) => c.name);
    const trainable: Record<string, boolean> = {};
    for (const n of only) trainable[n] = this.trainable.get(n) ?? true;
    return { only, trainable };
  }

  private matches(c: Candidate): boolean {
    const role = this.roleFilter.value;
    if (role && c.role !== role) return false;
    const t = this.textFilter.value.trim().toLowerCase();
    if (!t) return true;
    return [c.name, c.variable_name, c.reason, c.role, c.dtype].some((x) => (x ?? "").toLowerCase().includes(t));
  }

  private setShown(on: boolean): void {
    for (const c of this.shown) on ? this.include.add(c.name) : this.include.delete(c.name);
    this.renderRows();
    this.onChange();
  }

  private selectRecommended(): void {
    this.include = new Set(this.candidates.filter((c) => c.recommended).map((c) => c.name));
    this.renderRows();
    this.onChange();
  }

  private renderRows(): void {
    this.shown = this.candidates.filter((c) => this.matches(c));
    if (!this.candidates.length) {
      replace(this.tbody, h("tr", null, h("td.empty", { colSpan: 10 }, "No constant in this graph looks like a weight.")));
    } else if (!this.shown.length) {
      replace(this.tbody, h("tr", null, h("td.empty", { colSpan: 10 }, "No candidate matches the filter.")));
    } else {
      this.rendered = Math.min(this.shown.length, ROWS_CHUNK);
      this.moreRow = this.rendered < this.shown.length ? h("tr.more", null, h("td.empty", { colSpan: 10 })) : null;
      replace(this.tbody, ...this.shown.slice(0, this.rendered).map((c) => this.row(c)), this.moreRow);
      this.updateMore();
    }
    this.renderTotals();
    this.scheduleElide();
  }

  /** Appends the next rows when the table is scrolled near its end. */
  private maybeMore(wrap: HTMLElement): void {
    if (!this.moreRow || wrap.scrollTop + wrap.clientHeight < wrap.scrollHeight - 120) return;
    const next = this.shown.slice(this.rendered, this.rendered + ROWS_CHUNK);
    for (const c of next) this.tbody.insertBefore(this.row(c), this.moreRow);
    this.rendered += next.length;
    this.updateMore();
    this.scheduleElide();
  }

  private updateMore(): void {
    if (!this.moreRow) return;
    if (this.rendered >= this.shown.length) {
      this.moreRow.remove();
      this.moreRow = null;
      return;
    }
    replace(this.moreRow.firstChild as HTMLElement,
      `${fmtInt(this.rendered)} of ${fmtInt(this.shown.length)} rows shown; scroll for more, or filter. `
      + "Select all / none apply to every row that matches the filter.");
  }

  private row(c: Candidate): HTMLElement {
    const inc = h("input", {
      type: "checkbox", checked: this.include.has(c.name), "aria-label": `Include ${c.name}`,
      on: { change: () => { inc.checked ? this.include.add(c.name) : this.include.delete(c.name); tr.classList.toggle("off", !inc.checked); this.renderTotals(); this.onChange(); } },
    });
    const train = h("input", {
      type: "checkbox", checked: this.trainable.get(c.name) ?? true, "aria-label": `Trainable ${c.name}`,
      on: { change: () => { this.trainable.set(c.name, train.checked); this.renderTotals(); this.onChange(); } },
    });
    const tr = h("tr", { "data-name": c.name, class: this.include.has(c.name) ? "" : "off" },
      h("td.c-inc", null, inc),
      h("td.mono.c-name", { title: c.variable_name && c.variable_name !== c.name ? `${c.name}\n→ variable ${c.variable_name}` : c.name },
        h("div", { "data-full": c.name }, c.name),
        c.variable_name && c.variable_name !== c.name
          ? h("div.var-line", null, "→ ", h("span", { "data-full": c.variable_name, "data-indent": "1" }, c.variable_name)) : null),
      h("td", null, h("span.role", { "data-role": c.role }, c.role)),
      h("td.c-train", null, h("label.switch", null, train, h("span.slider"))),
      h("td.mono", null, fmtShape(c.shape)),
      h("td.mono", null, c.dtype),
      h("td.num", null, fmtInt(c.size)),
      h("td.num", null, fmtBytes(c.nbytes)),
      h("td.mono.c-var", { title: c.variable_name, "data-full": c.variable_name }, c.variable_name),
      h("td.reason", { title: [c.reason, c.recommendation].filter(Boolean).join("\n") },
        c.recommended ? "" : h("span.warn", null, "not recommended · "), c.reason),
    );
    return tr;
  }

  private renderTotals(): void {
    const sel = this.candidates.filter((c) => this.include.has(c.name));
    const params = sel.reduce((a, c) => a + (c.size ?? 0), 0);
    const trainParams = sel.filter((c) => this.trainable.get(c.name)).reduce((a, c) => a + (c.size ?? 0), 0);
    const bytes = sel.reduce((a, c) => a + (c.nbytes ?? 0), 0);
    this.headCheck.checked = this.shown.length > 0 && this.shown.every((c) => this.include.has(c.name));
    this.headCheck.indeterminate = !this.headCheck.checked && this.shown.some((c) => this.include.has(c.name));
    replace(this.totals,
      h("span.total", { "data-total": "variables" }, h("b", null, fmtInt(sel.length)), ` of ${fmtInt(this.candidates.length)} variables`),
      h("span.total", { "data-total": "parameters" }, h("b", null, fmtInt(params)), " params"),
      h("span.total", { "data-total": "trainable" }, h("b", null, fmtInt(trainParams)), " trainable"),
      h("span.total", { "data-total": "bytes" }, h("b", null, fmtBytes(bytes))),
    );
  }
}

export const ROWS_CHUNK = 200;

/** "abcdefghij" → "ab…ghij" in `n` characters, keeping most of the end (where TF names differ). */
export function middleEllipsis(text: string, n: number): string {
  if (text.length <= n) return text;
  const keep = Math.max(2, n - 1);
  const head = Math.floor(keep * 0.25);
  return text.slice(0, head) + "…" + text.slice(text.length - (keep - head));
}

let charWidth = 0;
function measureChar(cell: HTMLElement): number {
  if (charWidth) return charWidth;
  const probe = document.createElement("span");
  probe.style.cssText = "position:absolute;visibility:hidden;white-space:pre";
  probe.textContent = "0".repeat(40);
  cell.appendChild(probe);
  const w = probe.getBoundingClientRect().width / 40;
  probe.remove();
  if (w > 0) charWidth = w;
  return w || 7.2;
}
