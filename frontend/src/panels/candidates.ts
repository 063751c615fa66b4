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
      h("div.table-wrap", null,
        h("table.dense.cand-table", null,
          h("thead", null, h("tr", null,
            h("th.c-inc", null, this.headCheck),
            h("th", null, "Const"),
            h("th", null, "Role"),
            h("th.c-train", null, "Trainable"),
            h("th", null, "Shape"),
            h("th", null, "dtype"),
            h("th.num", null, "Params"),
            h("th.num", null, "Bytes"),
            h("th", null, "Variable name"),
            h("th", null, "Reason"),
          )),
          this.tbody,
        ),
      ),
    );
  }

  setInspection(ins: Inspection): void {
    this.candidates = ins.candidates ?? [];
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
      replace(this.tbody, ...this.shown.map((c) => this.row(c)));
    }
    this.renderTotals();
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
      h("td.mono.c-name", { title: c.tensor ?? c.name }, c.name),
      h("td", null, h("span.role", { "data-role": c.role }, c.role)),
      h("td.c-train", null, h("label.switch", null, train, h("span.slider"))),
      h("td.mono", null, fmtShape(c.shape)),
      h("td.mono", null, c.dtype),
      h("td.num", null, fmtInt(c.size)),
      h("td.num", null, fmtBytes(c.nbytes)),
      h("td.mono.c-var", { title: c.variable_name }, c.variable_name),
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
