// Frozen graph on the left, unfrozen on the right, drawn from one shared layout.
// Pan, zoom, selection and scope expansion are one state applied to both panes.
//
// Drawing stays cheap on graphs of tens of thousands of boxes: each pane has a <canvas> for what is many and needs
// no DOM (scope backgrounds, every edge, and far out the boxes themselves), redrawn once per animation frame and only
// for what is in view; and an SVG layer for what one reads and clicks (boxes with their labels, scope titles), holding
// only the boxes in and near the view, at zooms where labels can be read. Pan and zoom change one transform.
import { h, s, replace, fmtShape, fmtInt } from "../dom";
import { GraphData, Side, SIDES, UnionGraph, Unit, View, SCOPE_PREFIX, NODE_PREFIX } from "./model";
import { Box, Layout } from "./layout";
import { LayoutClient } from "./layout_client";
import type { Drift, WeightStats } from "../api";

export interface SideBySideOptions {
  /** Runs of this model in TensorBoard's Graphs dashboard; null when the run does not exist. */
  runLink: (side: Side) => { href: string; open: () => void } | null;
  /** Const name → variable it became, from the manifest. */
  variableOf?: Map<string, string>;
  /** Statistics of a constant's or a variable's values (GET /weights). */
  weights?: (name: string) => Promise<WeightStats>;
  /** Other frozen graphs of the logdir whose weights can be compared with this one's. */
  otherModels?: () => string[];
  /** Per-weight drift between this model's frozen graph and another's (GET /drift). */
  drift?: (other: string) => Promise<Drift>;
}

/** Drift of one weight, and its level for colouring: 0 unchanged … 4 moved by 10% or more. */
interface DriftMark { relative: number | null; max: number; level: number }
function driftLevel(rel: number | null, changed: boolean): number {
  if (!changed) return 0;
  if (rel == null) return 4;
  return rel < 1e-3 ? 1 : rel < 1e-2 ? 2 : rel < 1e-1 ? 3 : 4;
}

/** Graphs above this many boxes start collapsed by scope. */
export const VISIBLE_BUDGET = 250;
/** "Expand all" is offered up to this many nodes; beyond it, open scopes one by one. */
export const EXPAND_ALL_LIMIT = 4000;

/** Below this zoom, labels are too small to read (11 px × 0.45 ≈ 5 px): boxes are painted on the canvas only. */
const FAR_ZOOM = 0.45;
/** The SVG layer holds the boxes within this fraction of the view's size around it, so a short pan adds nothing. */
const SVG_MARGIN = 0.3;
/** Motion (wheel, drag) is over when no event came for this long: the view is then drawn at rest. */
const SETTLE_MS = 250;
/** The zoom a graph opens at when fitting it would make labels smaller than this (11 px labels → ≥ 10 px). */
const READABLE_ZOOM = 0.92;

interface Transform { x: number; y: number; k: number }

/** What one pane paints, from the layout: built once per layout (or drift change), culled every frame. */
interface Scene {
  clusters: Array<{ path: string; b: Box; conv: number }>;
  /** Edges as flat [x0, y0, x1, y1, ...] with their bounding box. */
  edges: Array<{ p: number[]; x0: number; y0: number; x1: number; y1: number }>;
  units: Array<{ u: Unit; b: Box; present: boolean; conv: boolean; changed: boolean; drift?: number }>;
}
interface Rect { x0: number; y0: number; x1: number; y1: number }
interface PaneEls {
  svg: SVGSVGElement; vp: SVGGElement; clusterLayer: SVGGElement; nodeLayer: SVGGElement; sel: SVGPathElement;
  canvas: HTMLCanvasElement; body: HTMLElement; stats: HTMLElement; link: HTMLAnchorElement; mini: HTMLCanvasElement;
  /** Box id → its SVG group, for the boxes in the SVG layer now; scope path → its title group. */
  nodeEls: Map<string, SVGGElement>; clusterEls: Map<string, SVGGElement>;
  /** The world rectangle the SVG layer holds (null: nothing; far: the canvas paints the boxes). */
  held: Rect | null; far: boolean;
  /** Far out: the scope titles painted on the canvas, in pane pixels (a click on one closes its scope). */
  farTitles: Array<{ path: string; x: number; y: number; w: number; h: number }>;
  w: number; h: number;
}

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
  /** The graph `view` and `layout` were made from: until a new graph's layout arrives, they belong to the old one. */
  private viewGraph: UnionGraph | null = null;
  private layout!: Layout;
  private layouter = new LayoutClient();
  private layoutKey = "";
  private layoutSeq = 0;
  private dataSeq = 0;
  /** Resolves when the layout asked for last is drawn (tests and callers that frame after it). */
  ready: Promise<void> = Promise.resolve();
  private t: Transform = { x: 0, y: 0, k: 1 };
  private selected: string | null = null;
  /** Per side, the selected node's edges (points in layout space): painted on the canvas while the view moves. */
  private selectedEdges: Record<Side, Array<Array<{ x: number; y: number }>>> = { frozen: [], unfrozen: [] };
  private panes = {} as Record<Side, PaneEls>;
  private scenes: Record<Side, Scene | null> = { frozen: null, unfrozen: null };
  private miniScale = 1;
  private miniBase: Record<Side, HTMLCanvasElement | null> = { frozen: null, unfrozen: null };
  private weightsToken = 0;
  private driftSelect: HTMLSelectElement;
  private driftPanel: HTMLElement;
  private driftOther: string | null = null;
  private driftModel = "";
  /** Node name → drift, and scope path → the largest level inside it. */
  private driftOf = new Map<string, DriftMark>();
  private driftScope = new Map<string, number>();
  private details: HTMLElement;
  private status: HTMLElement;
  private search: HTMLInputElement;
  private expandAllBtn: HTMLButtonElement;
  private frame = 0;
  private moving = false;
  private settleTimer = 0;
  private lastInput = 0;
  private restFrame = 0;

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
      h("button.btn.small", { on: { click: () => this.revealConverted() }, title: "Open, one level deeper, the closed scopes that hold converted nodes (again to go deeper)" }, "Open converted"),
      h("span.sep"),
      this.search,
      h("span.sep"),
      this.driftSelect = h("select.in.gv-drift-select", {
        "aria-label": "Compare the weights with another frozen graph",
        title: "Compare this graph's weights with another frozen graph of the logdir (e.g. one re-frozen after fine-tuning): how far each weight moved",
        on: { focus: () => this.fillDriftOptions(), change: () => void this.setDriftOther(this.driftSelect.value || null) },
      }, h("option", { value: "" }, "Weights vs…")),
      h("span.grow"),
      this.status,
    );
    const paneEls = SIDES.map((side) => this.makePane(side));
    this.details = h("div.gv-details", null, h("div.muted", null, "Click a node to see its details. Double-click a scope to open it."));
    this.driftPanel = h("div.gv-drift", { hidden: true });
    this.el = h("div.gv", null, toolbar, this.driftPanel, h("div.gv-body", null, ...paneEls), this.details);
    // Any scroll (the page, or a scrolling ancestor) moves the panes: measure them again at the next wheel event.
    window.addEventListener("scroll", () => this.origins.clear(), { capture: true, passive: true });
    window.addEventListener("resize", () => this.origins.clear(), { passive: true });
    this.layouter.warm();
    // Benchmark and debug hook (bench/frontend.py drives stats() and expandAll() through it).
    (window as unknown as Record<string, unknown>).__unfreezeGraphView = this;
  }

  private makePane(side: Side): HTMLElement {
    const svg = s("svg", { class: "gv-svg", "data-side": side }) as SVGSVGElement;
    const vp = s("g", { class: "vp" }) as SVGGElement;
    const clusterLayer = s("g", { class: "clusters" }) as SVGGElement;
    const nodeLayer = s("g", { class: "nodes" }) as SVGGElement;
    const sel = s("path", { class: "sel-edges" }) as SVGPathElement;
    vp.append(clusterLayer, nodeLayer, sel);
    svg.appendChild(vp);
    const canvas = h("canvas.gv-canvas", { "data-side": side }) as HTMLCanvasElement;
    const stats = h("span.gv-pane-stats");
    const link = h("a.gv-run-link", {
      target: "_blank", rel: "noopener", title: "Open this run in TensorBoard's Graphs dashboard",
      on: { click: (e: MouseEvent) => { const l = this.opts.runLink(side); if (l && !e.ctrlKey && !e.metaKey && !e.shiftKey) { e.preventDefault(); l.open(); } } },
    }, "Open in Graphs ↗");
    const mini = h("canvas.gv-minimap", { title: "Overview: click or drag to move the view" }) as HTMLCanvasElement;
    const body = h("div.gv-pane-body", null, canvas, svg, mini);
    const pane = h("div.gv-pane", { "data-side": side },
      h("div.gv-pane-head", null,
        h("span.gv-pane-title", null, TITLES[side]),
        stats,
        h("span.grow"),
        link,
      ),
      body,
    );
    this.panes[side] = {
      svg, vp, clusterLayer, nodeLayer, sel, canvas, body, stats, link, mini,
      nodeEls: new Map(), clusterEls: new Map(), held: null, far: false, farTitles: [], w: 0, h: 0,
    };
    if (typeof ResizeObserver !== "undefined") {
      // A resize is not motion: the next frame draws the view at rest (unless a motion is under way; it ends at rest).
      new ResizeObserver(() => {
        this.panes[side].w = 0;
        this.origins.clear();
        if (!this.moving && !this.restFrame) this.restFrame = requestAnimationFrame(() => { this.restFrame = 0; if (!this.moving) this.applyTransform(); });
      }).observe(body);
    }
    this.bindMinimap(mini, body);
    this.bindPanZoom(body);
    body.addEventListener("click", (e) => this.onClick(e));
    body.addEventListener("dblclick", (e) => this.onDblClick(e));
    return pane;
  }

  /** Shows a pair of graphs; either may be null (e.g. the unfrozen one before any conversion). */
  setData(frozen: GraphData | null, unfrozen: GraphData | null, key = ""): Promise<void> {
    performance.mark("unfreeze:graph-data");
    this.graph = new UnionGraph(frozen, unfrozen);
    for (const side of SIDES) {
      const l = this.graph.hasSide[side] ? this.opts.runLink(side) : null;
      const a = this.panes[side].link;
      a.hidden = !l;
      if (l) a.href = l.href;
    }
    this.layoutKey = `${key}|${++this.dataSeq}`;
    // Before any conversion the frozen graph gets the room; the unfrozen pane only says it is not there yet.
    this.el.classList.toggle("single", !this.graph.hasSide.unfrozen);
    this.expanded = this.graph.defaultExpansion(VISIBLE_BUDGET);
    this.selected = null;
    this.expandAllBtn.disabled = this.graph.nodes.size > EXPAND_ALL_LIMIT;
    const seq = this.dataSeq;
    return this.relayout(false).then(() => new Promise<void>((done) => {
      // The panes may not be in the document yet: frame the graph once they have a size.
      requestAnimationFrame(() => { if (seq === this.dataSeq) this.frameInitial(); performance.mark("unfreeze:framed"); done(); });
    })).then(() => {
      if (seq !== this.dataSeq) return; // another graph was set meanwhile: it frames itself
      // The comparison is per model: a new model starts without one; the same model (reloaded) keeps it.
      const model = key.split("|")[0];
      if (model !== this.driftModel) {
        this.driftModel = model;
        this.driftSelect.value = "";
        return this.setDriftOther(null);
      }
      const other = this.driftSelect.value || null;
      return other ? this.setDriftOther(other) : undefined;
    });
  }

  setVariableNames(map: Map<string, string>): void {
    this.opts.variableOf = map;
  }

  /** Lays the current expansion out (in the worker) and draws it; an older request still running is dropped. */
  private relayout(keepSelection = true): Promise<void> {
    const view = this.graph.view(this.expanded);
    const graph = this.graph;
    const seq = ++this.layoutSeq;
    this.el.classList.add("busy");
    this.status.textContent = "Laying out…";
    const t0 = performance.now();
    performance.mark("unfreeze:layout-start");
    const run = this.layouter.layout(view, this.layoutKey).then((layout) => {
      performance.mark("unfreeze:layout-done");
      if (seq !== this.layoutSeq || graph !== this.graph) return;
      this.el.classList.remove("busy");
      this.view = view;
      this.layout = layout;
      this.viewGraph = graph;
      if (!keepSelection || (this.selected && !this.view.units.has(this.selected))) this.selected = null;
      for (const side of SIDES) this.draw(side);
      const n = this.graph.nodes.size;
      this.status.textContent = `${n.toLocaleString("en-US")} nodes · ${this.view.units.size.toLocaleString("en-US")} boxes · `
        + `layout ${Math.round(layout.millis)} ms (${{ worker: "worker", main: "page", stored: "stored" }[this.layouter.where]}), ready in ${Math.round(performance.now() - t0)} ms`;
      this.status.dataset.layoutMs = String(Math.round(layout.millis));
      this.applySelection();
      this.drawMinimap();
    });
    this.ready = run;
    return run;
  }

  /** Rebuilds what a pane paints from the current layout (after a layout, or when the drift colours change). */
  private draw(side: Side): void {
    const pane = this.panes[side];
    const { stats } = pane;
    const g = this.graph;
    const L = this.layout;
    pane.nodeEls.clear();
    pane.clusterEls.clear();
    replace(pane.nodeLayer);
    replace(pane.clusterLayer);
    pane.held = null;
    pane.far = false;
    if (!g.hasSide[side]) {
      this.scenes[side] = null;
      stats.textContent = side === "unfrozen" ? "not converted yet" : "";
      this.render(side);
      return;
    }
    const scene: Scene = { clusters: [], edges: [], units: [] };
    // Clusters (expanded scopes), outermost first so inner ones paint on top.
    for (const path of this.view.clusters) {
      const scope = g.scopes.get(path)!;
      if (scope.count[side] === 0) continue;
      scene.clusters.push({ path, b: L.clusters.get(path)!, conv: scope.converted[side] });
    }
    for (const key of this.view.sideEdges[side]) {
      const pts = L.edges.get(key);
      if (!pts || pts.length < 2) continue;
      const p: number[] = [];
      let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
      for (const q of pts) {
        p.push(q.x, q.y);
        x0 = Math.min(x0, q.x); y0 = Math.min(y0, q.y); x1 = Math.max(x1, q.x); y1 = Math.max(y1, q.y);
      }
      scene.edges.push({ p, x0, y0, x1, y1 });
    }
    for (const u of this.view.units.values()) {
      const b = L.boxes.get(u.id)!;
      const present = g.present(u, side);
      const conv = present && g.convertedIn(u, side) > 0;
      const changed = present && u.kind === "node" && !conv && g.changed[side].has(u.name);
      const drift = present && side === "frozen" && this.driftOther
        ? (u.kind === "scope" ? this.driftScope.get(u.name) : this.driftOf.get(u.name)?.level) : undefined;
      scene.units.push({ u, b, present, conv, changed, drift });
    }
    this.scenes[side] = scene;
    const nodes = g.scopes.get("")!.count[side];
    const conv = g.converted[side].size;
    stats.dataset.nodes = String(nodes);
    stats.dataset.converted = String(conv);
    const altered = g.changed[side].size;
    stats.dataset.changed = String(altered);
    stats.textContent = `${nodes.toLocaleString("en-US")} nodes · ${convertedText(side, conv)}`
      + (altered ? ` · ${altered} changed (not variables)` : "");
    stats.title = side === "unfrozen"
      ? `One node per variable: its ${g.folded.unfrozen.toLocaleString("en-US")} helper nodes (handle initializer, assign, read…) are folded into it.`
      : "Constants that became variables.";
    this.render(side);
  }

  /** The SVG group of one box: its rectangle, label, and what changed. */
  private nodeEl(side: Side, item: Scene["units"][number]): SVGGElement {
    const { u, b } = item;
    const g = this.graph;
    if (!item.present) {
      const ghost = s("g", { class: "ghost-box", "data-ghost": u.id, transform: `translate(${b.x},${b.y})` }) as SVGGElement;
      ghost.appendChild(s("rect", { class: "ghost", width: b.w, height: b.h, rx: 4 }));
      return ghost;
    }
    const conv = item.conv ? g.convertedIn(u, side) : 0;
    const other: Side = side === "frozen" ? "unfrozen" : "frozen";
    const added = g.hasSide[other] && !g.present(u, other);
    const changed = item.changed;
    const cls = ["node", u.kind === "scope" ? "scope" : "op", conv ? "converted" : "", changed ? "changed" : "", added ? "added" : "",
      u.id === this.selected ? "selected" : ""].join(" ");
    const ng = s("g", { class: cls, "data-id": u.id, transform: `translate(${b.x},${b.y})` }) as SVGGElement;
    ng.appendChild(s("rect", { width: b.w, height: b.h, rx: u.kind === "scope" ? 6 : 4 }));
    if (item.drift != null) {
      ng.setAttribute("data-drift", String(item.drift));
      ng.appendChild(s("rect", { class: "drift-bar", x: 3, y: b.h - 7, width: b.w - 6, height: 5, rx: 2 }));
    }
    const label = s("text", { x: 6, y: u.kind === "scope" ? 15 : 17, class: "label" });
    label.textContent = clip(tail(u.name, u.cluster), 15);
    ng.appendChild(label);
    if (u.kind === "scope") {
      const sub = s("text", { x: 6, y: 31, class: "sub" });
      const scope = g.scopes.get(u.name)!;
      // Short, to fit the box: "const→var" on the frozen side, "var" on the unfrozen one (title: the long form).
      sub.textContent = `${scope.count[side].toLocaleString("en-US")} nodes` + (conv ? ` · ${conv} ${side === "frozen" ? "const→var" : "var"}` : "");
      const tip = s("title");
      tip.textContent = `${u.name}: ${scope.count[side].toLocaleString("en-US")} nodes` + (conv ? `, ${convertedText(side, conv)}` : "");
      ng.appendChild(tip);
      ng.appendChild(sub);
      ng.appendChild(s("text", { x: b.w - 14, y: 15, class: "expander" })).textContent = "+";
    } else {
      const op = g.nodes.get(u.name)?.[side]?.op ?? "";
      if (conv || changed) {
        const tag = s("text", { x: b.w - 5, y: 17, class: "tag", "text-anchor": "end" });
        tag.textContent = conv ? CONVERTED_TAG[side] : "changed";
        ng.appendChild(tag);
      } else if (op && op.length <= 12 && op !== label.textContent && (label.textContent ?? "").length + op.length <= 19) {
        const tag = s("text", { x: b.w - 5, y: 17, class: "op", "text-anchor": "end" });
        tag.textContent = op;
        ng.appendChild(tag);
      }
    }
    return ng;
  }

  private clusterEl(side: Side, c: Scene["clusters"][number]): SVGGElement {
    const { b, conv, path } = c;
    const cg = s("g", { class: "cluster" + (conv ? " has-converted" : ""), "data-scope": path }) as SVGGElement;
    const title = s("text", { x: b.x + 8, y: b.y + 15, class: "cluster-title" });
    title.textContent = "▾ " + tail(path, parentOf(path)) + (conv ? `  (${convertedText(side, conv)})` : "");
    cg.appendChild(title);
    return cg;
  }

  private palette: { key: string; of: Map<string, string> } = { key: "\u0000", of: new Map() };

  /** The theme's colours for the canvas (CSS custom properties), read again only when the page's theme changes. */
  private colors(): (name: string, dflt: string) => string {
    const key = document.body.className;
    if (key !== this.palette.key) this.palette = { key, of: new Map() };
    const of = this.palette.of;
    return (name, dflt) => {
      let v = of.get(name);
      if (v === undefined) {
        v = getComputedStyle(document.body).getPropertyValue(name).trim() || dflt;
        of.set(name, v);
      }
      return v;
    };
  }

  /** Where a pane's body is in the window, measured once per scroll or resize: reading it on every wheel event would
   * make the browser lay the page out again each time (the SVG layer changed since the last frame). */
  private origins = new Map<HTMLElement, { left: number; top: number }>();
  private paneOrigin(body: HTMLElement): { left: number; top: number } {
    let o = this.origins.get(body);
    if (!o) {
      const r = body.getBoundingClientRect();
      o = { left: r.left, top: r.top };
      this.origins.set(body, o);
    }
    return o;
  }

  /** The pane's size in CSS pixels (from a ResizeObserver, or measured once when it has not reported yet). */
  private paneSize(side: Side): { w: number; h: number } {
    const p = this.panes[side];
    if (!p.w || !p.h) {
      p.w = p.body.clientWidth;
      p.h = p.body.clientHeight;
    }
    return { w: p.w, h: p.h };
  }

  /**
   * Paints one pane at the current transform: the canvas (clusters, edges in view; boxes too when far out), and the
   * SVG layer's boxes brought up to date with the view (added and removed, not rebuilt) when it has moved out of the
   * rectangle they cover.
   */
  private render(side: Side, moving = false): void {
    const pane = this.panes[side];
    const scene = this.scenes[side];
    const { w, h: hgt } = this.paneSize(side);
    const dpr = window.devicePixelRatio || 1;
    const cw = Math.max(1, Math.round(w * dpr));
    const ch = Math.max(1, Math.round(hgt * dpr));
    if (pane.canvas.width !== cw || pane.canvas.height !== ch) {
      pane.canvas.width = cw;
      pane.canvas.height = ch;
    }
    const c = pane.canvas.getContext("2d");
    if (!c) return;
    c.setTransform(1, 0, 0, 1, 0, 0);
    c.clearRect(0, 0, cw, ch);
    const { x: tx, y: ty, k } = this.t;
    if (!moving) {
      const tr = `translate(${tx},${ty}) scale(${k})`;
      if (pane.vp.getAttribute("transform") !== tr) pane.vp.setAttribute("transform", tr);
      if (pane.svg.style.visibility) pane.svg.style.visibility = "";
    }
    if (!scene || !w) return;
    const far = k < FAR_ZOOM;
    // The world rectangle in view.
    const view: Rect = { x0: -tx / k, y0: -ty / k, x1: (w - tx) / k, y1: (hgt - ty) / k };
    const color = this.colors();
    c.setTransform(dpr, 0, 0, dpr, 0, 0);
    const X = (x: number) => x * k + tx;
    const Y = (y: number) => y * k + ty;
    const hit = (b: Box) => b.x <= view.x1 && b.x + b.w >= view.x0 && b.y <= view.y1 && b.y + b.h >= view.y0;

    // Scope backgrounds.
    const clusterFill = color("--cluster", "#fafafa");
    const clusterLine = color("--cluster-line", "#d6d6d6");
    c.lineWidth = 1;
    for (const cl of scene.clusters) {
      if (!hit(cl.b)) continue;
      const x = X(cl.b.x), y = Y(cl.b.y), bw = cl.b.w * k, bh = cl.b.h * k;
      c.fillStyle = clusterFill;
      c.fillRect(x, y, bw, bh);
      if (bw > 3 && bh > 3) {
        c.strokeStyle = cl.conv ? "#ffcc80" : clusterLine;
        c.strokeRect(Math.round(x) + 0.5, Math.round(y) + 0.5, Math.round(bw), Math.round(bh));
      }
    }

    // Edges: one path, hairlines in screen space; far out, an edge shorter than 2 px is not drawn (the boxes it
    // joins touch on screen).
    c.beginPath();
    for (const e of scene.edges) {
      if (e.x0 > view.x1 || e.x1 < view.x0 || e.y0 > view.y1 || e.y1 < view.y0) continue;
      if (far && (e.x1 - e.x0) * k < 2 && (e.y1 - e.y0) * k < 2) continue;
      const p = e.p;
      c.moveTo(X(p[0]), Y(p[1]));
      if (p.length === 4) {
        // A drop between scopes: a soft S-curve reads better than a straight cut.
        const my = Y((p[1] + p[3]) / 2);
        c.bezierCurveTo(X(p[0]), my, X(p[2]), my, X(p[2]), Y(p[3]));
      } else {
        for (let i = 2; i < p.length; i += 2) c.lineTo(X(p[i]), Y(p[i + 1]));
      }
    }
    c.strokeStyle = color("--edge", "#bdbdbd");
    c.lineWidth = 1;
    c.stroke();
    if (moving) this.paintSelectedEdges(c, side, X, Y);

    if (moving && !far) {
      // While the view moves, the boxes and labels are painted here too and the SVG layer is hidden and left alone:
      // changing anything in it (even one transform) makes the browser walk the whole page again each frame, which
      // costs more than a frame when the page is big (thousands of candidate rows); a canvas repaint does not.
      this.paintBoxes(c, side, scene, view, X, Y, k, color);
      return;
    }
    if (far) {
      if (moving) {
        this.paintFar(c, side, scene, view, X, Y, k, color);
        return;
      }
      // Far out: the boxes on the canvas, one fill per kind, no labels; the SVG layer is empty.
      if (!pane.far || pane.held) {
        replace(pane.nodeLayer);
        replace(pane.clusterLayer);
        pane.nodeEls.clear();
        pane.clusterEls.clear();
        pane.held = null;
        pane.far = true;
      }
      this.paintFar(c, side, scene, view, X, Y, k, color);
      return;
    }
    pane.far = false;
    pane.farTitles = [];
    const held = pane.held;
    if (held && held.x0 <= view.x0 && held.y0 <= view.y0 && held.x1 >= view.x1 && held.y1 >= view.y1) return;
    // Out of what the SVG layer holds: hold the view and a margin around it; add what came in, drop what went out.
    const mx = (view.x1 - view.x0) * SVG_MARGIN;
    const my = (view.y1 - view.y0) * SVG_MARGIN;
    const hold: Rect = { x0: view.x0 - mx, y0: view.y0 - my, x1: view.x1 + mx, y1: view.y1 + my };
    const inHold = (b: Box) => b.x <= hold.x1 && b.x + b.w >= hold.x0 && b.y <= hold.y1 && b.y + b.h >= hold.y0;
    const keepN = new Set<string>();
    const addN: SVGGElement[] = [];
    for (const it of scene.units) {
      if (!inHold(it.b)) continue;
      keepN.add(it.u.id);
      if (!pane.nodeEls.has(it.u.id)) {
        const el = this.nodeEl(side, it);
        pane.nodeEls.set(it.u.id, el);
        addN.push(el);
      }
    }
    for (const [id, el] of pane.nodeEls) if (!keepN.has(id)) { el.remove(); pane.nodeEls.delete(id); }
    if (addN.length) pane.nodeLayer.append(...addN);
    const keepC = new Set<string>();
    const addC: SVGGElement[] = [];
    for (const cl of scene.clusters) {
      // Only the title row of a scope is in the SVG layer.
      if (!inHold({ x: cl.b.x, y: cl.b.y, w: cl.b.w, h: 22 })) continue;
      keepC.add(cl.path);
      if (!pane.clusterEls.has(cl.path)) {
        const el = this.clusterEl(side, cl);
        pane.clusterEls.set(cl.path, el);
        addC.push(el);
      }
    }
    for (const [path, el] of pane.clusterEls) if (!keepC.has(path)) { el.remove(); pane.clusterEls.delete(path); }
    if (addC.length) pane.clusterLayer.append(...addC);
    pane.held = hold;
  }

  /** The selected node's edges, as the SVG layer highlights them at rest (it is hidden while the view moves). */
  private paintSelectedEdges(c: CanvasRenderingContext2D, side: Side, X: (x: number) => number, Y: (y: number) => number): void {
    const edges = this.selectedEdges[side];
    if (!this.selected || !edges.length) return;
    c.beginPath();
    for (const pts of edges) {
      if (pts.length < 2) continue;
      c.moveTo(X(pts[0].x), Y(pts[0].y));
      if (pts.length === 2) {
        const my = Y((pts[0].y + pts[1].y) / 2);
        c.bezierCurveTo(X(pts[0].x), my, X(pts[1].x), my, X(pts[1].x), Y(pts[1].y));
      } else {
        for (let i = 1; i < pts.length; i++) c.lineTo(X(pts[i].x), Y(pts[i].y));
      }
    }
    c.strokeStyle = "#1565c0";
    c.lineWidth = 2;
    c.stroke();
  }

  /** Far out: every box in view as a flat rectangle, one fill per kind, no labels. */
  private paintFar(c: CanvasRenderingContext2D, side: Side, scene: Scene, view: Rect, X: (x: number) => number, Y: (y: number) => number,
    k: number, color: (name: string, dflt: string) => string): void {
    const hit = (b: Box) => b.x <= view.x1 && b.x + b.w >= view.x0 && b.y <= view.y1 && b.y + b.h >= view.y0;
    const kinds: Record<string, Path2D> = {};
    const add = (kind: string, b: Box) => {
      (kinds[kind] ??= new Path2D()).rect(X(b.x), Y(b.y), Math.max(1, b.w * k), Math.max(1, b.h * k));
    };
    let sel: Box | null = null;
    for (const it of scene.units) {
      if (!hit(it.b)) continue;
      if (it.u.id === this.selected) sel = it.b;
      add(!it.present ? "ghost" : it.conv ? "conv" : it.changed ? "changed" : it.u.kind === "scope" ? "scope" : "op", it.b);
    }
    const fills: Record<string, string> = {
      ghost: color("--line", "#e0e0e0"), op: color("--node-line", "#9e9e9e"), scope: color("--scope-line", "#90a4ae"),
      changed: color("--blue", "#1976d2"), conv: "#f57c00",
    };
    for (const kind of ["ghost", "op", "scope", "changed", "conv"]) {
      if (!kinds[kind]) continue;
      c.fillStyle = fills[kind];
      c.fill(kinds[kind]);
    }
    if (sel) {
      c.strokeStyle = "#1565c0";
      c.lineWidth = 2;
      c.strokeRect(X(sel.x) - 2, Y(sel.y) - 2, Math.max(1, sel.w * k) + 4, Math.max(1, sel.h * k) + 4);
    }
    this.paintFarTitles(c, side, scene, view, X, Y, k, color);
  }

  /**
   * Far out, the open scopes keep their names: a title at a readable size (11 px, whatever the zoom) on each scope
   * wide enough to hold one, outer scopes first, none over another. A click on one closes that scope, as the title
   * row does near in (the SVG layer, which holds those, is empty far out).
   */
  private paintFarTitles(c: CanvasRenderingContext2D, side: Side, scene: Scene, view: Rect, X: (x: number) => number,
    Y: (y: number) => number, k: number, color: (name: string, dflt: string) => string): void {
    const placed: Array<{ path: string; x: number; y: number; w: number; h: number }> = [];
    c.font = "11px Roboto, sans-serif";
    c.textBaseline = "middle";
    const band = 16;
    for (const cl of scene.clusters) {
      const b = cl.b;
      if (b.x > view.x1 || b.x + b.w < view.x0 || b.y > view.y1 || b.y + b.h < view.y0) continue;
      const sw = b.w * k;
      if (sw < 48 || b.h * k < band) continue;
      const text = "▾ " + tail(cl.path, parentOf(cl.path)) + (cl.conv ? `  (${convertedText(side, cl.conv)})` : "");
      const x = Math.max(X(b.x), 0), y = Math.max(Y(b.y), 0);
      const w = Math.min(c.measureText(text).width + 8, sw - (x - X(b.x)));
      if (w < 24) continue;
      if (placed.some((p) => x < p.x + p.w && p.x < x + w && y < p.y + p.h && p.y < y + band)) continue;
      placed.push({ path: cl.path, x, y, w, h: band });
      c.fillStyle = color("--cluster", "#fafafa");
      c.globalAlpha = 0.9;
      c.fillRect(x, y, w, band);
      c.globalAlpha = 1;
      c.fillStyle = cl.conv ? "#e65100" : color("--ink-3", "#616161");
      c.save();
      c.beginPath();
      c.rect(x, y, w, band);
      c.clip();
      c.fillText(text, x + 4, y + band / 2);
      c.restore();
    }
    this.panes[side].farTitles = placed;
  }

  /** Near: every box in view with its label, as the SVG layer draws it (painted while the view moves). */
  private paintBoxes(c: CanvasRenderingContext2D, side: Side, scene: Scene, view: Rect, X: (x: number) => number,
    Y: (y: number) => number, k: number, color: (name: string, dflt: string) => string): void {
    const hit = (b: Box) => b.x <= view.x1 && b.x + b.w >= view.x0 && b.y <= view.y1 && b.y + b.h >= view.y0;
    const convFill = side === "unfrozen" ? "#ffcc80" : color("--tb-orange-light", "#ffe0b2");
    const kinds: Record<string, { fill: string; stroke: string; width: number; path: Path2D }> = {};
    const style: Record<string, [string, string, number]> = {
      ghost: ["", color("--line", "#e0e0e0"), 1],
      op: [color("--bg", "#ffffff"), color("--node-line", "#9e9e9e"), 1],
      scope: [color("--scope", "#eceff1"), color("--scope-line", "#90a4ae"), 1],
      changed: [color("--bg", "#ffffff"), color("--blue", "#1976d2"), 1.5],
      conv: [convFill, "#f57c00", 2],
      selected: ["", "#1565c0", 3],
    };
    const labels: Array<[string, number, number]> = [];
    for (const it of scene.units) {
      if (!hit(it.b)) continue;
      const kind = !it.present ? "ghost" : it.conv ? "conv" : it.changed ? "changed" : it.u.kind === "scope" ? "scope" : "op";
      const [fill, stroke, width] = style[kind];
      const entry = (kinds[kind] ??= { fill, stroke, width, path: new Path2D() });
      const b = it.b;
      entry.path.rect(X(b.x), Y(b.y), b.w * k, b.h * k);
      if (it.u.id === this.selected) {
        const [, st, wd] = style.selected;
        (kinds.selected ??= { fill: "", stroke: st, width: wd, path: new Path2D() }).path.rect(X(b.x), Y(b.y), b.w * k, b.h * k);
      }
      if (it.present) labels.push([clip(tail(it.u.name, it.u.cluster), 15), X(b.x + 6), Y(b.y + (it.u.kind === "scope" ? 15 : 17))]);
    }
    for (const kind of ["ghost", "op", "scope", "changed", "conv", "selected"]) {
      const e = kinds[kind];
      if (!e) continue;
      if (e.fill) {
        c.fillStyle = e.fill;
        c.fill(e.path);
      }
      c.strokeStyle = e.stroke;
      c.lineWidth = e.width * k;
      c.stroke(e.path);
    }
    c.fillStyle = color("--ink", "#212121");
    c.font = `${11 * k}px Roboto, sans-serif`;
    c.textBaseline = "alphabetic";
    for (const [text, x, y] of labels) c.fillText(text, x, y);
    c.fillStyle = color("--ink-2", "#616161");
    for (const cl of scene.clusters) {
      const b = cl.b;
      if (!hit({ x: b.x, y: b.y, w: b.w, h: 22 })) continue;
      c.fillText("▾ " + tail(cl.path, parentOf(cl.path)), X(b.x + 8), Y(b.y + 15));
    }
  }

  // ---- pan / zoom, shared by both panes ----

  private bindPanZoom(body: HTMLElement): void {
    let drag: { x: number; y: number; tx: number; ty: number; moved: boolean } | null = null;
    body.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = this.paneOrigin(body);
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
      // (Only when it changes: even re-adding a class the element has is a style change the browser pays for.)
      if (!drag.moved) body.classList.add("panning");
      drag.moved = true;
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

  /** The zoom buttons: one step, drawn at rest at once (not as motion). */
  zoomBy(f: number): void {
    const { w, h: hgt } = this.paneSize("frozen");
    this.zoomAt(w / 2, hgt / 2, f);
    if (this.frame) {
      cancelAnimationFrame(this.frame);
      this.frame = 0;
    }
    this.applyTransform();
  }

  /** Fits the graph's width in the pane (never shrinks it to a sliver to fit its height): pan down for the rest. */
  fit(): void {
    const { body } = this.panes.frozen;
    const w = body.clientWidth || 400;
    const hgt = body.clientHeight || 400;
    const L = this.layout;
    if (!L || !L.width) return;
    const k = clamp((w / L.width) * 0.98, 0.02, 1.2);
    this.t = { k, x: (w - L.width * k) / 2, y: L.height * k < hgt ? (hgt - L.height * k) / 2 : 4 };
    this.applyTransform();
  }

  /**
   * Fit to width; if that makes labels smaller than readable, open at a readable zoom on the part that matters:
   * the inputs and the first converted layers, at the top of the pane.
   */
  frameInitial(): void {
    if (this.viewGraph !== this.graph) return;
    this.fit();
    if (this.t.k >= READABLE_ZOOM || !this.layout) return;
    const { body } = this.panes.frozen;
    const w = body.clientWidth || 400;
    // The topmost box that is an input or holds a converted node, and what else of that kind is near it.
    const marks: Array<{ x: number; y: number }> = [];
    for (const u of this.view.units.values()) {
      const n = u.kind === "node" ? this.graph.nodes.get(u.name) : undefined;
      const isInput = (n?.frozen ?? n?.unfrozen)?.op === "Placeholder";
      if (!isInput && !this.graph.convertedIn(u, "frozen") && !this.graph.convertedIn(u, "unfrozen")) continue;
      const b = this.layout.boxes.get(u.id)!;
      marks.push({ x: b.x + b.w / 2, y: b.y });
    }
    const k = READABLE_ZOOM;
    if (!marks.length) {
      this.t = { k, x: (w - this.layout.width * k) / 2, y: 4 };
    } else {
      const top = Math.min(...marks.map((m) => m.y));
      const near = marks.filter((m) => m.y <= top + (body.clientHeight || 400) / k);
      const cx = near.reduce((a, m) => a + m.x, 0) / near.length;
      // A little room above the topmost mark for the titles of the scopes around it.
      this.t = { k, x: w / 2 - cx * k, y: 44 - top * k };
    }
    this.applyTransform();
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

  /** A frame of continuous motion (wheel, drag, minimap): painted on the canvases only, the SVG layer hidden; once
   * the motion has stopped for a moment, the view is drawn at rest (labelled SVG boxes for the new view). */
  private scheduleTransform(): void {
    this.lastInput = performance.now();
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      if (!this.moving) {
        this.moving = true;
        for (const side of SIDES) this.panes[side].svg.style.visibility = "hidden";
      }
      for (const side of SIDES) this.render(side, true);
      this.drawMinimapViewport();
      clearTimeout(this.settleTimer);
      // At rest once no input came for SETTLE_MS (timed from the input, not from this frame: the first frame of a
      // motion, which hides the SVG layer, may itself be slow on a big page).
      const settle = (): void => {
        const idle = performance.now() - this.lastInput;
        if (idle < SETTLE_MS) this.settleTimer = window.setTimeout(settle, SETTLE_MS - idle);
        else this.applyTransform();
      };
      this.settleTimer = window.setTimeout(settle, SETTLE_MS);
    });
  }

  private applyTransform(): void {
    this.moving = false;
    clearTimeout(this.settleTimer);
    // One transform for both panes: each repaints its canvas for the view and updates its SVG layer's transform
    // (and, when the view left what that layer holds, its boxes). Called at most once per frame while panning.
    for (const side of SIDES) this.render(side);
    this.drawMinimapViewport();
  }

  // ---- weight drift against another frozen graph ----

  private fillDriftOptions(): void {
    const others = this.opts.otherModels?.() ?? [];
    const cur = this.driftSelect.value;
    replace(this.driftSelect, h("option", { value: "" }, others.length ? "Weights vs…" : "Weights vs… (no other graph)"),
      ...others.map((id) => h("option", { value: id }, id)));
    this.driftSelect.value = others.includes(cur) ? cur : "";
  }

  /** Colours the frozen side by how far each weight moved in `other`, and lists the weights that moved most. */
  async setDriftOther(other: string | null): Promise<void> {
    const had = this.driftOther != null;
    this.driftOther = null;
    this.driftOf.clear();
    this.driftScope.clear();
    if (!other || !this.opts.drift) {
      this.driftPanel.hidden = true;
      if (had && this.view && this.viewGraph === this.graph) for (const side of SIDES) this.draw(side);
      return;
    }
    this.driftPanel.hidden = false;
    replace(this.driftPanel, h("span.muted", null, `Comparing the weights with ${other}…`));
    let d: Drift;
    try {
      d = await this.opts.drift(other);
    } catch (e) {
      replace(this.driftPanel, h("span.err", null, (e as Error).message));
      return;
    }
    this.driftOther = other;
    for (const w of d.weights) {
      const level = driftLevel(w.relative, w.changed);
      this.driftOf.set(w.name, { relative: w.relative, max: w.max_abs_diff, level });
      const node = this.graph.nodes.get(w.name);
      if (!node) continue;
      const scopes = this.graph.ancestors(node.scope);
      for (const sc of scopes) this.driftScope.set(sc, Math.max(this.driftScope.get(sc) ?? 0, level));
    }
    const pct = (x: number | null) => (x == null ? "∞" : x >= 0.001 ? `${(x * 100).toPrecision(3)}%` : x.toExponential(1));
    const top = d.weights.filter((w) => w.changed).slice(0, 8);
    replace(this.driftPanel,
      h("div.gv-drift-head", null,
        h("b", null, `${d.changed} of ${d.compared} weights moved`), ` between this graph and ${other}`,
        d.only_a.length || d.only_b.length ? h("span.muted", null, ` · ${d.only_a.length} only here, ${d.only_b.length} only there`) : null,
        d.mismatched.length ? h("span.warn", null, ` · ${d.mismatched.length} changed shape or dtype`) : null,
        h("span.gv-drift-legend", null, ...[1, 2, 3, 4].map((l) => h("span", { "data-drift": String(l) },
          ["< 0.1%", "< 1%", "< 10%", "≥ 10%"][l - 1])))),
      top.length ? h("ol.gv-drift-list", null, ...top.map((w) => h("li", { "data-drift": String(driftLevel(w.relative, w.changed)) },
        h("a", { href: "#", on: { click: (e: Event) => { e.preventDefault(); this.find(w.name); } } }, w.name),
        h("span.muted", null, ` ${pct(w.relative)} · max |Δ| ${w.max_abs_diff.toPrecision(3)}`)))) : h("div.muted", null, "No weight moved."),
    );
    if (this.viewGraph === this.graph) {
      for (const side of SIDES) this.draw(side);
      this.applySelection();
    }
  }

  // ---- minimap ----

  private drawMinimap(): void {
    const L = this.layout;
    if (!L || this.viewGraph !== this.graph) return;
    const maxW = 120;
    const maxH = 130;
    this.miniScale = Math.min(maxW / L.width, maxH / L.height);
    const w = Math.max(24, Math.ceil(L.width * this.miniScale));
    const hgt = Math.max(24, Math.ceil(L.height * this.miniScale));
    const dark = document.body.classList.contains("dark");
    for (const side of SIDES) {
      const { mini } = this.panes[side];
      const big = L.width * READABLE_ZOOM > (this.panes[side].body.clientWidth || 400) || L.height * READABLE_ZOOM > (this.panes[side].body.clientHeight || 400);
      mini.hidden = !this.graph.hasSide[side] || !big;
      if (mini.hidden) continue;
      const base = this.miniBase[side] ?? document.createElement("canvas");
      this.miniBase[side] = base;
      base.width = w;
      base.height = hgt;
      const c = base.getContext("2d");
      if (!c) continue;
      c.fillStyle = dark ? "#202124" : "#ffffff";
      c.fillRect(0, 0, w, hgt);
      const k = this.miniScale;
      for (const [path, b] of L.clusters) {
        if (this.graph.scopes.get(path)!.count[side] === 0) continue;
        c.strokeStyle = dark ? "#5f6368" : "#cfd8dc";
        c.strokeRect(b.x * k, b.y * k, Math.max(1, b.w * k), Math.max(1, b.h * k));
      }
      for (const u of this.view.units.values()) {
        if (!this.graph.present(u, side)) continue;
        const b = L.boxes.get(u.id)!;
        c.fillStyle = this.graph.convertedIn(u, side) ? "#f57c00" : dark ? "#9aa0a6" : "#90a4ae";
        c.fillRect(b.x * k, b.y * k, Math.max(1, b.w * k), Math.max(1, b.h * k));
      }
      mini.width = w;
      mini.height = hgt;
    }
    this.drawMinimapViewport();
  }

  private drawMinimapViewport(): void {
    for (const side of SIDES) {
      const { mini } = this.panes[side];
      const size = this.paneSize(side);
      const base = this.miniBase[side];
      if (mini.hidden || !base) continue;
      const c = mini.getContext("2d");
      if (!c) continue;
      c.drawImage(base, 0, 0);
      const k = this.miniScale / this.t.k;
      c.strokeStyle = "#1976d2";
      c.lineWidth = 1.5;
      c.strokeRect(-this.t.x * k, -this.t.y * k, size.w * k, size.h * k);
    }
  }

  private bindMinimap(mini: HTMLCanvasElement, body: HTMLElement): void {
    let down = false;
    const go = (e: PointerEvent): void => {
      const r = mini.getBoundingClientRect();
      const gx = (e.clientX - r.left) / this.miniScale;
      const gy = (e.clientY - r.top) / this.miniScale;
      const side = (body.closest(".gv-pane") as HTMLElement | null)?.dataset.side as Side | undefined;
      const size = side ? this.paneSize(side) : { w: body.clientWidth, h: body.clientHeight };
      this.t.x = size.w / 2 - gx * this.t.k;
      this.t.y = size.h / 2 - gy * this.t.k;
      this.scheduleTransform();
    };
    mini.addEventListener("pointerdown", (e) => { e.stopPropagation(); down = true; mini.setPointerCapture?.(e.pointerId); go(e); });
    mini.addEventListener("pointermove", (e) => { if (down) { e.stopPropagation(); go(e); } });
    mini.addEventListener("pointerup", () => { down = false; });
    mini.addEventListener("click", (e) => e.stopPropagation());
    mini.addEventListener("dblclick", (e) => e.stopPropagation());
    mini.addEventListener("wheel", (e) => e.stopPropagation());
  }

  // ---- selection, expansion ----

  private unitAt(e: MouseEvent): string | null {
    const el = (e.target as Element).closest?.("[data-id]");
    if (el) return el.getAttribute("data-id");
    // Far out the boxes are painted on the canvas: find the one under the pointer.
    const side = ((e.currentTarget as Element | null)?.closest?.(".gv-pane") as HTMLElement | null)?.dataset.side as Side | undefined;
    const scene = side ? this.scenes[side] : null;
    if (!side || !scene || !this.panes[side].far) return null;
    const r = this.panes[side].body.getBoundingClientRect();
    const x = (e.clientX - r.left - this.t.x) / this.t.k;
    const y = (e.clientY - r.top - this.t.y) / this.t.k;
    const slop = 3 / this.t.k;
    for (const it of scene.units) {
      const b = it.b;
      if (it.present && x >= b.x - slop && x <= b.x + b.w + slop && y >= b.y - slop && y <= b.y + b.h + slop) return it.u.id;
    }
    return null;
  }

  private onClick(e: MouseEvent): void {
    const title = (e.target as Element).closest?.(".cluster");
    if (title && (e.target as Element).classList.contains("cluster-title")) {
      this.collapse(title.getAttribute("data-scope")!);
      return;
    }
    const far = this.farTitleAt(e);
    if (far) {
      this.collapse(far);
      return;
    }
    this.select(this.unitAt(e));
  }

  /** The scope whose title, painted on the canvas far out, is under the pointer. */
  private farTitleAt(e: MouseEvent): string | null {
    const side = ((e.currentTarget as Element | null)?.closest?.(".gv-pane") as HTMLElement | null)?.dataset.side as Side | undefined;
    if (!side || !this.panes[side].far) return null;
    const r = this.panes[side].body.getBoundingClientRect();
    const x = e.clientX - r.left, y = e.clientY - r.top;
    const hit = this.panes[side].farTitles.find((t) => x >= t.x && x <= t.x + t.w && y >= t.y && y <= t.y + t.h);
    return hit ? hit.path : null;
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
    if (this.viewGraph !== this.graph) return;
    for (const side of SIDES) {
      const { nodeLayer, nodeEls, sel } = this.panes[side];
      nodeLayer.querySelectorAll(".selected").forEach((n) => n.classList.remove("selected"));
      let d = "";
      this.selectedEdges[side] = [];
      if (this.selected) {
        nodeEls.get(this.selected)?.classList.add("selected");
        for (const key of this.view.sideEdges[side]) {
          const [a, b] = this.view.edges.get(key)!;
          if (a !== this.selected && b !== this.selected) continue;
          const pts = this.layout.edges.get(key)!;
          d += polyline(pts);
          this.selectedEdges[side].push(pts);
        }
      }
      sel.setAttribute("d", d);
      if (this.panes[side].far) this.render(side);
    }
    this.showDetails();
  }

  /** Opens one scope, one level: its members show, its sub-scopes stay closed. */
  expand(path: string): Promise<void> {
    this.expanded.add(path);
    for (const a of this.graph.ancestors(path)) this.expanded.add(a);
    this.selected = null;
    const before = this.layout?.clusters.get(path) ?? this.layout?.boxes.get(SCOPE_PREFIX + path);
    return this.relayout().then(() => {
      // Keep the opened scope where it was on screen, so the eye does not lose it.
      const after = this.layout.clusters.get(path);
      if (before && after) {
        this.t.x += (before.x - after.x) * this.t.k;
        this.t.y += (before.y - after.y) * this.t.k;
        this.applyTransform();
      }
    });
  }

  collapse(path: string): Promise<void> {
    for (const e of [...this.expanded]) if (e === path || e.startsWith(path + "/")) this.expanded.delete(e);
    return this.relayout().then(() => this.select(SCOPE_PREFIX + path));
  }

  expandAll(): Promise<void> {
    this.expanded = new Set(this.graph.scopes.keys());
    return this.relayout().then(() => this.frameInitial());
  }

  collapseAll(): Promise<void> {
    this.expanded = new Set();
    return this.relayout().then(() => this.fit());
  }

  /**
   * Opens, one level deeper, every closed scope shown that holds converted nodes (press again to go deeper):
   * lazily, so a big graph never turns into one huge layout.
   */
  revealConverted(): Promise<void> {
    if (this.viewGraph !== this.graph) return Promise.resolve();
    let opened = 0;
    for (const u of this.view.units.values()) {
      if (u.kind !== "scope" || this.graph.ownedByNode(u.name)) continue;
      if (this.graph.convertedIn(u, "frozen") || this.graph.convertedIn(u, "unfrozen")) {
        this.expanded.add(u.name);
        opened++;
      }
    }
    if (!opened) {
      this.status.textContent = "Every scope that holds a converted node is open.";
      return Promise.resolve();
    }
    return this.relayout().then(() => this.frameInitial());
  }

  /** Opens the scopes around the first node whose name contains `text`, selects and centres it. */
  find(text: string): boolean {
    const needle = text.trim().toLowerCase();
    if (!needle) return false;
    let hit: string | null = null;
    for (const [v, src] of this.graph.aliasOf) if (v.toLowerCase() === needle) hit = src;
    for (const name of hit ? [] : this.graph.nodes.keys()) {
      if (name.toLowerCase() === needle) { hit = name; break; }
      if (!hit && name.toLowerCase().includes(needle)) hit = name;
    }
    if (!hit) {
      this.status.textContent = `No node matches “${text}”.`;
      return false;
    }
    const node = this.graph.nodes.get(hit)!;
    for (const a of this.graph.ancestors(node.scope)) this.expanded.add(a);
    void this.relayout().then(() => {
      this.select(NODE_PREFIX + hit);
      this.centerOn(NODE_PREFIX + hit, READABLE_ZOOM);
    });
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

  /** The weight itself, fetched when its node is selected: numbers, a histogram, the first values. */
  private weightsBox(name: string): HTMLElement | null {
    if (!this.opts.weights) return null;
    const box = h("div.gv-weights", { "data-weights": name }, h("span.muted", null, "Loading the values…"));
    const token = ++this.weightsToken;
    this.opts.weights(name).then((w) => {
      if (token !== this.weightsToken) return;
      replace(box, weightsView(w));
      box.dataset.loaded = "1";
    }, (e: Error) => {
      if (token !== this.weightsToken) return;
      replace(box, h("span.muted", null, `No values: ${e.message}`));
    });
    return box;
  }

  private scopeDetails(unit: Unit): HTMLElement | null {
    const scope = this.graph.scopes.get(unit.name);
    if (!scope) return null;
    const owner = this.graph.ownedByNode(unit.name) ? this.graph.nodes.get(unit.name) : undefined;
    const ownerWeights = owner && (owner.frozen?.op === "Const" || owner.unfrozen?.variable) ? this.weightsBox(unit.name) : null;
    return h("div", null,
      h("div.gv-d-title", null, "Scope"),
      h("div.gv-d-name", null, unit.name),
      h("table.kv", null,
        row("Frozen", `${scope.count.frozen.toLocaleString("en-US")} nodes, ${convertedText("frozen", scope.converted.frozen)}`),
        row("Unfrozen", this.graph.hasSide.unfrozen ? `${scope.count.unfrozen.toLocaleString("en-US")} nodes, ${convertedText("unfrozen", scope.converted.unfrozen)}` : "—"),
      ),
      h("button.btn.small", { on: { click: () => void this.expand(unit.name) } }, "Open scope"),
      ownerWeights,
    );
  }

  private nodeDetails(unit: Unit): HTMLElement | null {
    const n = this.graph.nodes.get(unit.name);
    if (!n) return null;
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
    const dm = this.driftOf.get(unit.name);
    if (dm && this.driftOther) rows.push(row(`vs ${this.driftOther}`, dm.level === 0 ? "unchanged"
      : `moved ${dm.relative == null ? "from zero" : (dm.relative * 100).toPrecision(3) + "%"} (max |Δ| ${dm.max.toPrecision(3)})`));
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
    const hasWeights = n.frozen?.op === "Const" || !!v || this.graph.converted.frozen.has(unit.name);
    return h("div", null,
      h("div.gv-d-title", null, sides.length === 2 ? "Node (both graphs)" : `Node (${TITLES[sides[0]]} only)`),
      h("div.gv-d-name", null, unit.name),
      h("table.kv", null, ...rows),
      hasWeights ? this.weightsBox(variable && n.unfrozen ? variable : unit.name) : null,
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

const fmtNum = (x: number | null | undefined): string =>
  x == null ? "—" : x === 0 ? "0" : Math.abs(x) >= 1e4 || Math.abs(x) < 1e-3 ? x.toExponential(3) : x.toPrecision(4);

/** Numbers and a histogram of one weight. */
export function weightsView(w: WeightStats): HTMLElement {
  const hist = w.histogram;
  let chart: SVGElement | null = null;
  if (hist && hist.counts.length) {
    const W = 260;
    const H = 64;
    const max = Math.max(...hist.counts, 1);
    const bw = W / hist.counts.length;
    chart = s("svg", { class: "gv-hist", width: W, height: H + 14, viewBox: `0 0 ${W} ${H + 14}`, role: "img", "aria-label": `Histogram of ${w.name}` });
    hist.counts.forEach((c, i) => {
      const bh = c ? Math.max(1, (c / max) * H) : 0;
      const bar = s("rect", { x: i * bw + 0.5, y: H - bh, width: Math.max(1, bw - 1), height: bh, class: "bar" });
      const t = s("title");
      t.textContent = `${fmtNum(hist.edges[i])} … ${fmtNum(hist.edges[i + 1])}: ${c}`;
      bar.appendChild(t);
      chart!.appendChild(bar);
    });
    const lo = s("text", { x: 0, y: H + 12, class: "axis" });
    lo.textContent = fmtNum(hist.edges[0]);
    const hi = s("text", { x: W, y: H + 12, class: "axis", "text-anchor": "end" });
    hi.textContent = fmtNum(hist.edges[hist.edges.length - 1]);
    chart.appendChild(lo);
    chart.appendChild(hi);
  }
  return h("div.gv-w", null,
    h("table.kv", null,
      row("values", `${w.dtype ?? "?"} ${fmtShape(w.shape)} · ${fmtInt(w.size)}`),
      row("min / max", `${fmtNum(w.min)} / ${fmtNum(w.max)}`),
      row("mean ± std", `${fmtNum(w.mean)} ± ${fmtNum(w.std)}`),
      w.zeros ? row("zeros", fmtInt(w.zeros)) : null,
      w.nonfinite ? row("non-finite", fmtInt(w.nonfinite)) : null,
    ),
    chart,
    h("div.gv-w-first", { title: w.note ?? "" }, `first ${w.first.length}: `, w.first.map((x) => fmtNum(x)).join(", ")),
  );
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
