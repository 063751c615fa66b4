// Frozen graph on the left, unfrozen on the right, drawn in SVG from one shared layout.
// Pan, zoom, selection and scope expansion are one state applied to both panes.
import { h, s, replace, fmtShape } from "../dom";
import { GraphData, Side, SIDES, UnionGraph, Unit, View, SCOPE_PREFIX, NODE_PREFIX } from "./model";
import { Layout, LayoutCache, layoutView } from "./layout";

export interface SideBySideOptions {
  /** Runs of this model in TensorBoard's Graphs dashboard; null when the run does not exist. */
  runLink: (side: Side) => { href: string; open: () => void } | null;
  /** Const name → variable it became, from the manifest. */
  variableOf?: Map<string, string>;
}

/** Graphs above this many boxes start collapsed by scope. */
export const VISIBLE_BUDGET = 400;
/** "Expand all" is offered up to this many nodes; beyond it, open scopes one by one. */
export const EXPAND_ALL_LIMIT = 4000;

/** Below this zoom, labels are too small to read and are not drawn. */
const FAR_ZOOM = 0.38;

interface Transform { x: number; y: number; k: number }

const TITLES: Record<Side, string> = { frozen: "Frozen", unfrozen: "Unfrozen" };
const CONVERTED_TAG: Record<Side, string> = { frozen: "const", unfrozen: "var" };
/** How a number of converted nodes reads on each side: consts that became variables, and the variables. */
const convertedText = (side: Side, n: number): string =>
  side === "frozen" ? `${n.toLocaleString("en-US")} const${n === 1 ? "" : "s"} converted` : `${n.toLocaleString("en-US")} variable${n === 1 ? "" : "s"}`;

export class SideBySide {
  readonly el: HTMLElement;
  private graph!: UnionGraph;
  private expanded = new Set<string>();
  private view!: View;
  private layout!: Layout;
  private cache: LayoutCache = new Map();
  private t: Transform = { x: 0, y: 0, k: 1 };
  private selected: string | null = null;
  private panes = {} as Record<Side, { svg: SVGSVGElement; vp: SVGGElement; sel: SVGPathElement; body: HTMLElement; stats: HTMLElement; link: HTMLAnchorElement }>;
  private details: HTMLElement;
  private status: HTMLElement;
  private search: HTMLInputElement;
  private expandAllBtn: HTMLButtonElement;
  private frame = 0;
  private settle = 0;

  constructor(private opts: SideBySideOptions) {
    this.status = h("span.gv-status");
    this.search = h("input.gv-search", {
      type: "search", placeholder: "Find node…", "aria-label": "Find node",
      on: { keydown: (e: KeyboardEvent) => { if (e.key === "Enter") this.find(this.search.value); } },
    });
    this.expandAllBtn = h("button.btn.small", { on: { click: () => this.expandAll() }, title: "Open every scope" }, "Expand all");
    const toolbar = h("div.gv-toolbar", null,
      h("button.btn.small", { on: { click: () => this.fit() }, title: "Fit the graph in view" }, "Fit"),
      h("button.btn.small", { on: { click: () => this.zoomBy(1.25) }, title: "Zoom in" }, "+"),
      h("button.btn.small", { on: { click: () => this.zoomBy(0.8) }, title: "Zoom out" }, "−"),
      h("span.sep"),
      this.expandAllBtn,
      h("button.btn.small", { on: { click: () => this.collapseAll() }, title: "Close every scope" }, "Collapse all"),
      h("button.btn.small", { on: { click: () => this.revealConverted() }, title: "Open the scopes that hold converted nodes" }, "Open converted"),
      h("span.sep"),
      this.search,
      h("span.grow"),
      this.status,
    );
    const paneEls = SIDES.map((side) => this.makePane(side));
    this.details = h("div.gv-details", null, h("div.muted", null, "Click a node to see its details. Double-click a scope to open it."));
    this.el = h("div.gv", null, toolbar, h("div.gv-body", null, ...paneEls), this.details);
  }

  private makePane(side: Side): HTMLElement {
    const svg = s("svg", { class: "gv-svg", "data-side": side }) as SVGSVGElement;
    const vp = s("g", { class: "vp" }) as SVGGElement;
    svg.appendChild(vp);
    const sel = s("path", { class: "sel-edges" }) as SVGPathElement;
    const stats = h("span.gv-pane-stats");
    const link = h("a.gv-run-link", {
      target: "_blank", rel: "noopener", title: "Open this run in TensorBoard's Graphs dashboard",
      on: { click: (e: MouseEvent) => { const l = this.opts.runLink(side); if (l && !e.ctrlKey && !e.metaKey && !e.shiftKey) { e.preventDefault(); l.open(); } } },
    }, "Open in Graphs ↗");
    const body = h("div.gv-pane-body", null, svg);
    const pane = h("div.gv-pane", { "data-side": side },
      h("div.gv-pane-head", null,
        h("span.gv-pane-title", null, TITLES[side]),
        stats,
        h("span.grow"),
        link,
      ),
      body,
    );
    this.panes[side] = { svg, vp, sel, body, stats, link };
    this.bindPanZoom(body, svg);
    body.addEventListener("click", (e) => this.onClick(e));
    body.addEventListener("dblclick", (e) => this.onDblClick(e));
    return pane;
  }

  /** Shows a pair of graphs; either may be null (e.g. the unfrozen one before any conversion). */
  setData(frozen: GraphData | null, unfrozen: GraphData | null): void {
    this.graph = new UnionGraph(frozen, unfrozen);
    for (const side of SIDES) {
      const l = this.graph.hasSide[side] ? this.opts.runLink(side) : null;
      const a = this.panes[side].link;
      a.hidden = !l;
      if (l) a.href = l.href;
    }
    this.cache.clear();
    this.expanded = this.graph.defaultExpansion(VISIBLE_BUDGET);
    this.selected = null;
    this.expandAllBtn.disabled = this.graph.nodes.size > EXPAND_ALL_LIMIT;
    this.relayout();
    // The panes may not be in the document yet: frame the graph once they have a size.
    requestAnimationFrame(() => this.frameInitial());
  }

  setVariableNames(map: Map<string, string>): void {
    this.opts.variableOf = map;
  }

  private relayout(keepSelection = true): void {
    this.view = this.graph.view(this.expanded);
    this.layout = layoutView(this.view, this.cache);
    if (!keepSelection || (this.selected && !this.view.units.has(this.selected))) this.selected = null;
    for (const side of SIDES) this.draw(side);
    const n = this.graph.nodes.size;
    this.status.textContent = `${n.toLocaleString("en-US")} nodes · ${this.view.units.size.toLocaleString("en-US")} boxes · layout ${Math.round(this.layout.millis)} ms`;
    this.applySelection();
  }

  private draw(side: Side): void {
    const { vp, sel, stats } = this.panes[side];
    const g = this.graph;
    const L = this.layout;
    const parts: SVGElement[] = [];
    if (!g.hasSide[side]) {
      replace(vp);
      stats.textContent = side === "unfrozen" ? "not converted yet" : "";
      return;
    }
    // Clusters (expanded scopes), outermost first so inner ones paint on top.
    for (const path of this.view.clusters) {
      const b = L.clusters.get(path)!;
      const scope = g.scopes.get(path)!;
      if (scope.count[side] === 0) continue;
      const conv = scope.converted[side];
      const cg = s("g", { class: "cluster" + (conv ? " has-converted" : ""), "data-scope": path });
      cg.appendChild(s("rect", { x: b.x, y: b.y, width: b.w, height: b.h, rx: 6 }));
      const title = s("text", { x: b.x + 8, y: b.y + 15, class: "cluster-title" });
      title.textContent = "▾ " + tail(path, parentOf(path)) + (conv ? `  (${convertedText(side, conv)})` : "");
      cg.appendChild(title);
      parts.push(cg);
    }
    // Edges of this side, as one path: thousands of <path>s would cost more than they show.
    let d = "";
    for (const key of this.view.sideEdges[side]) d += polyline(L.edges.get(key)!);
    parts.push(s("path", { class: "edges", d }));
    let converted = 0;
    for (const u of this.view.units.values()) {
      const b = L.boxes.get(u.id)!;
      const present = g.present(u, side);
      if (!present) {
        parts.push(s("rect", { class: "ghost", x: b.x, y: b.y, width: b.w, height: b.h, rx: 4 }));
        continue;
      }
      const conv = g.convertedIn(u, side);
      if (conv) converted += conv;
      const other: Side = side === "frozen" ? "unfrozen" : "frozen";
      const added = g.hasSide[other] && !g.present(u, other);
      const changed = u.kind === "node" && !conv && g.changed[side].has(u.name);
      const cls = ["node", u.kind === "scope" ? "scope" : "op", conv ? "converted" : "", changed ? "changed" : "", added ? "added" : ""].join(" ");
      const ng = s("g", { class: cls, "data-id": u.id, transform: `translate(${b.x},${b.y})` });
      ng.appendChild(s("rect", { width: b.w, height: b.h, rx: u.kind === "scope" ? 6 : 4 }));
      const label = s("text", { x: 6, y: u.kind === "scope" ? 15 : 17, class: "label" });
      label.textContent = clip(tail(u.name, u.cluster), u.kind === "scope" ? 15 : 15);
      ng.appendChild(label);
      if (u.kind === "scope") {
        const sub = s("text", { x: 6, y: 31, class: "sub" });
        const scope = g.scopes.get(u.name)!;
        sub.textContent = `${scope.count[side].toLocaleString("en-US")} nodes` + (conv ? ` · ${convertedText(side, conv)}` : "");
        ng.appendChild(sub);
        ng.appendChild(s("text", { x: b.w - 14, y: 15, class: "expander" })).textContent = "+";
      } else {
        const op = this.graph.nodes.get(u.name)?.[side]?.op ?? "";
        if (conv || changed) {
          const tag = s("text", { x: b.w - 5, y: 17, class: "tag", "text-anchor": "end" });
          tag.textContent = conv ? CONVERTED_TAG[side] : "changed";
          ng.appendChild(tag);
        } else if (op && op.length <= 12 && op !== label.textContent) {
          const tag = s("text", { x: b.w - 5, y: 17, class: "op", "text-anchor": "end" });
          tag.textContent = op;
          ng.appendChild(tag);
        }
      }
      parts.push(ng);
    }
    parts.push(sel);
    replace(vp, ...parts);
    const { svg } = this.panes[side];
    svg.setAttribute("width", String(Math.ceil(L.width)));
    svg.setAttribute("height", String(Math.ceil(L.height)));
    const nodes = g.scopes.get("")!.count[side];
    const conv = g.converted[side].size;
    stats.dataset.nodes = String(nodes);
    stats.dataset.converted = String(conv);
    stats.textContent = `${nodes.toLocaleString("en-US")} nodes · ${convertedText(side, conv)}`;
    stats.title = side === "unfrozen"
      ? `One node per variable: its ${g.folded.unfrozen.toLocaleString("en-US")} helper nodes (handle initializer, assign, read…) are folded into it.`
      : "Constants that became variables.";
    this.applyTransform();
  }

  // ---- pan / zoom, shared by both panes ----

  private bindPanZoom(body: HTMLElement, svg: SVGSVGElement): void {
    let drag: { x: number; y: number; tx: number; ty: number; moved: boolean } | null = null;
    body.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = body.getBoundingClientRect();
      const f = Math.exp(-e.deltaY * (e.deltaMode === 1 ? 0.05 : 0.0015));
      this.zoomAt(e.clientX - r.left, e.clientY - r.top, f);
    }, { passive: false });
    body.addEventListener("pointerdown", (e) => {
      if (e.button !== 0) return;
      drag = { x: e.clientX, y: e.clientY, tx: this.t.x, ty: this.t.y, moved: false };
    });
    window.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x;
      const dy = e.clientY - drag.y;
      if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 4) return;
      drag.moved = true;
      body.classList.add("panning");
      this.t.x = drag.tx + dx;
      this.t.y = drag.ty + dy;
      this.scheduleTransform();
    });
    window.addEventListener("pointerup", () => {
      if (drag?.moved) {
        // Swallow the click that ends a drag.
        body.addEventListener("click", (ev) => ev.stopPropagation(), { capture: true, once: true });
      }
      drag = null;
      body.classList.remove("panning");
    });
  }

  private zoomAt(px: number, py: number, f: number): void {
    const k = clamp(this.t.k * f, 0.02, 4);
    const real = k / this.t.k;
    this.t = { k, x: px - (px - this.t.x) * real, y: py - (py - this.t.y) * real };
    this.scheduleTransform();
  }

  zoomBy(f: number): void {
    const { body } = this.panes.frozen;
    this.zoomAt(body.clientWidth / 2, body.clientHeight / 2, f);
  }

  fit(): void {
    const { body } = this.panes.frozen;
    const w = body.clientWidth || 400;
    const hgt = body.clientHeight || 400;
    const L = this.layout;
    if (!L || !L.width) return;
    const k = clamp(Math.min(w / L.width, hgt / L.height) * 0.95, 0.02, 1.4);
    this.t = { k, x: (w - L.width * k) / 2, y: Math.max(4, (hgt - L.height * k) / 2) };
    this.applyTransform();
  }

  /** Fit; if that makes labels unreadable, zoom to a readable size around the first converted node instead. */
  frameInitial(): void {
    this.fit();
    if (this.t.k >= FAR_ZOOM || !this.layout) return;
    let focus: string | null = null;
    let best = Infinity;
    for (const u of this.view.units.values()) {
      if (!this.graph.convertedIn(u, "frozen") && !this.graph.convertedIn(u, "unfrozen")) continue;
      const b = this.layout.boxes.get(u.id)!;
      if (b.y + b.x * 0.01 < best) { best = b.y + b.x * 0.01; focus = u.id; }
    }
    if (focus) this.centerOn(focus, 0.7, 0.25);
  }

  /** Brings a box into view: horizontally centred, at `anchorY` of the pane's height. */
  private centerOn(id: string, zoom = 0.8, anchorY = 0.5): void {
    const b = this.layout.boxes.get(id);
    if (!b) return;
    const { body } = this.panes.frozen;
    const k = Math.max(this.t.k, zoom);
    this.t = { k, x: body.clientWidth / 2 - (b.x + b.w / 2) * k, y: body.clientHeight * anchorY - (b.y + b.h / 2) * k };
    this.applyTransform();
  }

  private scheduleTransform(): void {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => { this.frame = 0; this.applyTransform(); });
  }

  private applyTransform(): void {
    // The transform is a CSS transform of the whole <svg>, not an attribute of an inner group: the browser
    // then moves and scales the already painted picture instead of repainting every node and edge.
    // When the motion stops, `will-change` is dropped so the picture is repainted sharp at the new scale.
    const tr = `translate(${this.t.x}px,${this.t.y}px) scale(${this.t.k})`;
    const far = this.t.k < FAR_ZOOM;
    for (const side of SIDES) {
      const p = this.panes[side];
      p.svg.style.transform = tr;
      p.svg.style.willChange = "transform";
      // Far out, labels are unreadable anyway and cost the most to paint.
      if (p.svg.classList.contains("far") !== far) p.svg.classList.toggle("far", far);
    }
    clearTimeout(this.settle);
    this.settle = window.setTimeout(() => {
      for (const side of SIDES) this.panes[side].svg.style.willChange = "auto";
    }, 180);
  }

  // ---- selection, expansion ----

  private unitAt(e: Event): string | null {
    const el = (e.target as Element).closest?.("[data-id]");
    return el ? el.getAttribute("data-id") : null;
  }

  private onClick(e: MouseEvent): void {
    const title = (e.target as Element).closest?.(".cluster");
    if (title && (e.target as Element).classList.contains("cluster-title")) {
      this.collapse(title.getAttribute("data-scope")!);
      return;
    }
    this.select(this.unitAt(e));
  }

  private onDblClick(e: MouseEvent): void {
    const id = this.unitAt(e);
    if (id && id.startsWith(SCOPE_PREFIX)) this.expand(id.slice(SCOPE_PREFIX.length));
  }

  select(id: string | null): void {
    this.selected = id;
    this.applySelection();
  }

  private applySelection(): void {
    for (const side of SIDES) {
      const { vp, sel } = this.panes[side];
      vp.querySelectorAll(".selected").forEach((n) => n.classList.remove("selected"));
      let d = "";
      if (this.selected) {
        vp.querySelector(`[data-id="${cssEscape(this.selected)}"]`)?.classList.add("selected");
        for (const key of this.view.sideEdges[side]) {
          const [a, b] = this.view.edges.get(key)!;
          if (a === this.selected || b === this.selected) d += polyline(this.layout.edges.get(key)!);
        }
      }
      sel.setAttribute("d", d);
    }
    this.showDetails();
  }

  expand(path: string): void {
    this.expanded.add(path);
    for (const a of this.graph.ancestors(path)) this.expanded.add(a);
    this.selected = null;
    this.relayout();
  }

  collapse(path: string): void {
    for (const e of [...this.expanded]) if (e === path || e.startsWith(path + "/")) this.expanded.delete(e);
    this.relayout();
    this.select(SCOPE_PREFIX + path);
  }

  expandAll(): void {
    this.busy(() => {
      this.expanded = new Set(this.graph.scopes.keys());
      this.relayout();
      this.fit();
    });
  }

  /** Says "Laying out…" before work that may take seconds, and lets the browser paint it first. */
  private busy(work: () => void): void {
    this.status.textContent = "Laying out…";
    this.el.classList.add("busy");
    requestAnimationFrame(() => setTimeout(() => {
      try { work(); } finally { this.el.classList.remove("busy"); }
    }, 0));
  }

  collapseAll(): void {
    this.expanded = new Set();
    this.relayout();
    this.fit();
  }

  revealConverted(): void {
    this.busy(() => {
      for (const p of this.graph.scopesOfConverted()) this.expanded.add(p);
      this.relayout();
      this.fit();
    });
  }

  /** Opens the scopes around the first node whose name contains `text`, selects and centres it. */
  find(text: string): boolean {
    const needle = text.trim().toLowerCase();
    if (!needle) return false;
    let hit: string | null = null;
    for (const name of this.graph.nodes.keys()) {
      if (name.toLowerCase() === needle) { hit = name; break; }
      if (!hit && name.toLowerCase().includes(needle)) hit = name;
    }
    if (!hit) {
      this.status.textContent = `No node matches “${text}”.`;
      return false;
    }
    const node = this.graph.nodes.get(hit)!;
    for (const a of this.graph.ancestors(node.scope)) this.expanded.add(a);
    this.relayout();
    this.select(NODE_PREFIX + hit);
    this.centerOn(NODE_PREFIX + hit);
    return true;
  }

  private showDetails(): void {
    const id = this.selected;
    const unit = id ? this.view.units.get(id) : undefined;
    if (!unit) {
      replace(this.details, h("div.muted", null, "Click a node to see its details. Double-click a scope to open it."));
      return;
    }
    replace(this.details, unit.kind === "scope" ? this.scopeDetails(unit) : this.nodeDetails(unit));
  }

  private scopeDetails(unit: Unit): HTMLElement {
    const scope = this.graph.scopes.get(unit.name)!;
    return h("div", null,
      h("div.gv-d-title", null, "Scope"),
      h("div.gv-d-name", null, unit.name),
      h("table.kv", null,
        row("Frozen", `${scope.count.frozen.toLocaleString("en-US")} nodes, ${convertedText("frozen", scope.converted.frozen)}`),
        row("Unfrozen", this.graph.hasSide.unfrozen ? `${scope.count.unfrozen.toLocaleString("en-US")} nodes, ${convertedText("unfrozen", scope.converted.unfrozen)}` : "—"),
      ),
      h("button.btn.small", { on: { click: () => this.expand(unit.name) } }, "Open scope"),
    );
  }

  private nodeDetails(unit: Unit): HTMLElement {
    const n = this.graph.nodes.get(unit.name)!;
    const sides = SIDES.filter((sd) => n[sd]);
    const variable = this.opts.variableOf?.get(unit.name);
    const rows: HTMLElement[] = [];
    for (const sd of SIDES) {
      const gn = n[sd];
      if (!this.graph.hasSide[sd]) continue;
      rows.push(row(TITLES[sd], gn ? gn.op : "absent"));
    }
    const any = n.frozen ?? n.unfrozen;
    if (any?.dtype) rows.push(row("dtype", any.dtype));
    if (any?.shape !== undefined) rows.push(row("shape", fmtShape(any.shape)));
    const v = n.unfrozen?.variable;
    if (this.graph.converted.frozen.has(unit.name) || this.graph.converted.unfrozen.has(unit.name)) {
      const name = variable ?? (v ? unit.name : null);
      rows.push(row("Converted", `const → variable${name ? " " + name : ""}` + (v ? (v.trainable ? ", trainable" : ", not trainable") : "")));
      if (v?.role) rows.push(row("Role", v.role));
      if (v?.helpers?.length) rows.push(row("Folded", `${v.helpers.length} helper nodes: ${v.helpers.map((x) => x.slice(unit.name.length + 1)).join(", ")}`));
    } else {
      const what = this.graph.changed.unfrozen.get(unit.name) ?? this.graph.changed.frozen.get(unit.name);
      if (what) rows.push(row("Changed", `${what} (not a variable)`));
    }
    const inputs = (n.unfrozen ?? n.frozen)?.inputs ?? [];
    return h("div", null,
      h("div.gv-d-title", null, sides.length === 2 ? "Node (both graphs)" : `Node (${TITLES[sides[0]]} only)`),
      h("div.gv-d-name", null, unit.name),
      h("table.kv", null, ...rows),
      inputs.length
        ? h("div", null, h("div.gv-d-sub", null, `Inputs (${inputs.length})`),
          h("ul.gv-inputs", null, ...inputs.slice(0, 30).map((i) => h("li", null, i))))
        : null,
    );
  }

  /** Test and debug hook: the current view's numbers. */
  stats(): { nodes: number; boxes: number; layoutMs: number } {
    return { nodes: this.graph.nodes.size, boxes: this.view.units.size, layoutMs: this.layout.millis };
  }
}

function row(k: string, v: string): HTMLElement {
  return h("tr", null, h("th", null, k), h("td", null, v));
}

function polyline(pts: Array<{ x: number; y: number }>): string {
  if (!pts || pts.length < 2) return "";
  if (pts.length === 2) {
    // A drop between scopes: a soft S-curve reads better than a straight cut.
    const [a, b] = pts;
    const my = (a.y + b.y) / 2;
    return `M${r1(a.x)},${r1(a.y)}C${r1(a.x)},${r1(my)} ${r1(b.x)},${r1(my)} ${r1(b.x)},${r1(b.y)}`;
  }
  let d = `M${r1(pts[0].x)},${r1(pts[0].y)}`;
  for (let i = 1; i < pts.length; i++) d += `L${r1(pts[i].x)},${r1(pts[i].y)}`;
  return d;
}

const r1 = (x: number) => Math.round(x * 10) / 10;
const clamp = (x: number, lo: number, hi: number) => Math.max(lo, Math.min(hi, x));

function parentOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? "" : path.slice(0, i);
}

function tail(name: string, cluster: string): string {
  if (name === cluster) return name.slice(name.lastIndexOf("/") + 1);
  return cluster && name.startsWith(cluster + "/") ? name.slice(cluster.length + 1) : name;
}

function clip(text: string, n: number): string {
  return text.length <= n ? text : "…" + text.slice(text.length - n + 1);
}

function cssEscape(v: string): string {
  return typeof CSS !== "undefined" && CSS.escape ? CSS.escape(v) : v.replace(/["\\]/g, "\\$&");
}
