// Lays out the union view once with dagre; both panes are drawn from the same positions,
// so a node that exists in both graphs sits at the same place on both sides.
//
// Like TensorBoard's own graph view, each expanded scope is laid out on its own (its members
// only, child scopes as boxes of their laid-out size) and the results are nested. One dagre
// run over a whole 2k-node graph, or one compound run, takes tens of seconds; many small runs
// take well under one.
import dagre from "@dagrejs/dagre";
import { View } from "./model";

export interface Point { x: number; y: number }
export interface Box { x: number; y: number; w: number; h: number }
export interface Layout {
  boxes: Map<string, Box>;
  clusters: Map<string, Box>;
  /** Edge key → polyline points (dagre's route inside one scope, or a plain drop across scopes). */
  edges: Map<string, Point[]>;
  width: number;
  height: number;
  millis: number;
}

export const NODE_W = 112;
export const NODE_H = 26;
export const SCOPE_W = 124;
export const SCOPE_H = 38;
export const CLUSTER_PAD = 8;
export const CLUSTER_TITLE = 22;
const CLUSTER_ID = "cluster:";

function parentOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? "" : path.slice(0, i);
}

export interface Local {
  /** Member id → centre and size relative to the scope's content origin. */
  pos: Map<string, { x: number; y: number; w: number; h: number }>;
  edges: Map<string, Point[]>;
  width: number;
  height: number;
}

/** Per-scope results keyed by everything they depend on: opening one scope redoes only its chain. */
export type LayoutCache = Map<string, Local>;

export function layoutView(view: View, cache: LayoutCache = new Map()): Layout {
  const t0 = performance.now();
  // Members of each visible scope ("" is the top level).
  const members = new Map<string, string[]>([["", []]]);
  for (const c of view.clusters) members.set(c, []);
  for (const c of view.clusters) members.get(parentOf(c))!.push(CLUSTER_ID + c);
  const clusterOfUnit = new Map<string, string>();
  for (const u of view.units.values()) {
    members.get(u.cluster)!.push(u.id);
    clusterOfUnit.set(u.id, u.cluster);
  }

  // Lift each edge to the innermost scope holding both ends.
  const localEdges = new Map<string, Map<string, [string, string]>>();
  const direct = new Map<string, string>(); // view edge key → scope whose layout routes it
  const chain = (c: string): string[] => {
    const out = [c];
    while (c) { c = parentOf(c); out.push(c); }
    return out;
  };
  for (const [key, [a, b]] of view.edges) {
    const ca = clusterOfUnit.get(a)!;
    const cb = clusterOfUnit.get(b)!;
    const up = chain(ca);
    const seen = new Set(up);
    const lca = chain(cb).find((c) => seen.has(c))!;
    const lift = (unit: string, c: string): string => {
      if (c === lca) return unit;
      while (parentOf(c) !== lca) c = parentOf(c);
      return CLUSTER_ID + c;
    };
    const la = lift(a, ca);
    const lb = lift(b, cb);
    if (la === lb) continue;
    let m = localEdges.get(lca);
    if (!m) localEdges.set(lca, (m = new Map()));
    const lkey = la + "\u0000" + lb;
    if (!m.has(lkey)) m.set(lkey, [la, lb]);
    if (la === a && lb === b) direct.set(key, lca);
  }

  // Lay out innermost scopes first so a parent knows its children's sizes. A scope is laid out under the names of
  // its members relative to it ("node:kernel", "cluster:block_2"), and the result is cached under those: the same
  // block repeated a hundred times (every residual unit, every batch norm) is laid out once.
  const locals = new Map<string, Local>();
  const order = [...members.keys()].sort((x, y) => depth(y) - depth(x));
  for (const scope of order) {
    const sizes: Array<[string, number, number]> = [];
    for (const id of members.get(scope)!) {
      const lid = localName(scope, id);
      if (id.startsWith(CLUSTER_ID)) {
        const inner = locals.get(id.slice(CLUSTER_ID.length))!;
        sizes.push([lid, Math.max(inner.width + 2 * CLUSTER_PAD, SCOPE_W), inner.height + 2 * CLUSTER_PAD + CLUSTER_TITLE]);
      } else {
        const isScope = view.units.get(id)!.kind === "scope";
        sizes.push([lid, isScope ? SCOPE_W : NODE_W, isScope ? SCOPE_H : NODE_H]);
      }
    }
    const scopeEdges: Array<[string, string]> = [];
    for (const [a, b] of (localEdges.get(scope) ?? new Map()).values()) scopeEdges.push([localName(scope, a), localName(scope, b)]);
    const cacheKey = sizes.map((s) => s.join(",")).join("|") + "\u0001" + scopeEdges.map(([a, b]) => a + "\u0000" + b).join("|");
    const hit = cache.get(cacheKey);
    if (hit) {
      locals.set(scope, hit);
      continue;
    }
    const g = new dagre.graphlib.Graph({ multigraph: false });
    g.setGraph({ rankdir: "TB", nodesep: 10, ranksep: 24, edgesep: 6, marginx: 0, marginy: 0 });
    g.setDefaultEdgeLabel(() => ({}));
    for (const [id, width, height] of sizes) g.setNode(id, { width, height });
    for (const [a, b] of scopeEdges) g.setEdge(a, b, { lkey: a + "\u0000" + b });
    dagre.layout(g);
    const pos = new Map<string, { x: number; y: number; w: number; h: number }>();
    for (const id of g.nodes()) {
      const n = g.node(id) as { x: number; y: number; width: number; height: number };
      pos.set(id, { x: n.x, y: n.y, w: n.width, h: n.height });
    }
    const edges = new Map<string, Point[]>();
    for (const e of g.edges()) {
      const label = g.edge(e) as { lkey: string; points: Point[] };
      edges.set(label.lkey, label.points);
    }
    const graph = g.graph() as { width?: number; height?: number };
    const local = { pos, edges, width: graph.width ?? 0, height: graph.height ?? 0 };
    locals.set(scope, local);
    cache.set(cacheKey, local);
  }

  // Place everything in absolute coordinates, top-down.
  const boxes = new Map<string, Box>();
  const clusters = new Map<string, Box>();
  const origin = new Map<string, Point>([["", { x: 20, y: 20 }]]);
  const topDown = [...order].reverse();
  for (const scope of topDown) {
    const o = origin.get(scope)!;
    const local = locals.get(scope)!;
    for (const id of members.get(scope)!) {
      const p = local.pos.get(localName(scope, id))!;
      const box = { x: o.x + p.x - p.w / 2, y: o.y + p.y - p.h / 2, w: p.w, h: p.h };
      if (id.startsWith(CLUSTER_ID)) {
        const path = id.slice(CLUSTER_ID.length);
        clusters.set(path, box);
        const inner = locals.get(path)!;
        origin.set(path, {
          x: box.x + (box.w - inner.width) / 2,
          y: box.y + CLUSTER_TITLE + CLUSTER_PAD,
        });
      } else {
        boxes.set(id, box);
      }
    }
  }

  const edges = new Map<string, Point[]>();
  for (const [key, [a, b]] of view.edges) {
    const scope = direct.get(key);
    if (scope !== undefined) {
      const o = origin.get(scope)!;
      const pts = locals.get(scope)!.edges.get(localName(scope, a) + "\u0000" + localName(scope, b));
      if (pts) {
        edges.set(key, pts.map((p) => ({ x: p.x + o.x, y: p.y + o.y })));
        continue;
      }
    }
    const ba = boxes.get(a)!;
    const bb = boxes.get(b)!;
    edges.set(key, [
      { x: ba.x + ba.w / 2, y: ba.y + ba.h },
      { x: bb.x + bb.w / 2, y: bb.y },
    ]);
  }
  const root = locals.get("")!;
  return {
    boxes, clusters, edges,
    width: root.width + 40, height: root.height + 40,
    millis: performance.now() - t0,
  };
}

/** A member's id relative to its scope: "node:a/b/kernel" in "a/b" → "node:kernel"; the node the scope is named
 * after (drawn inside it) → "node:/". Unique within the scope, and equal for members of repeated blocks. */
function localName(scope: string, id: string): string {
  if (!scope) return id;
  const i = id.indexOf(":");
  const name = id.slice(i + 1);
  if (name === scope) return id.slice(0, i + 1) + "/";
  return name.startsWith(scope + "/") ? id.slice(0, i + 1) + name.slice(scope.length + 1) : id;
}

function depth(path: string): number {
  return path ? path.split("/").length : 0;
}
