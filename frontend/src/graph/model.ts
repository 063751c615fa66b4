// The union of the frozen and the unfrozen graph, grouped by name scope.
// Pure data: no DOM, no layout, so it can be checked with plain node.

export interface GraphNode {
  name: string;
  op: string;
  inputs: string[];
  control_inputs?: string[];
  dtype?: string;
  shape?: number[] | null;
  converted?: boolean;
  /** Both graphs have the node, but the conversion altered it without making it a variable ("Placeholder → …"). */
  changed?: string;
  /** Only in the unfrozen graph, and no variable (saving, restoring). */
  added?: boolean;
  /** A variable of the unfrozen graph, its helper nodes (handle, initializer, assign, read) folded into it. */
  variable?: { source?: string; trainable?: boolean; role?: string; helpers?: string[] };
}

export interface GraphData {
  nodes: GraphNode[];
  converted: string[];
  changed?: Record<string, string>;
  /** Unfrozen side: the number of variables (one node each). */
  variables?: number;
  /** Unfrozen side: helper nodes folded into their variable's node. */
  folded?: number;
}

export type Side = "frozen" | "unfrozen";
export const SIDES: Side[] = ["frozen", "unfrozen"];

/** A node of either graph, as the union sees it. */
export interface UnionNode {
  name: string;
  /** Scope path this node sits in ("" for the root). */
  scope: string;
  /** Node as it is in each graph, if present there. */
  frozen?: GraphNode;
  unfrozen?: GraphNode;
}

/** A name scope: every prefix of a node name that ends before a "/". */
export interface Scope {
  path: string;
  parent: string;
  depth: number;
  childScopes: string[];
  childNodes: string[];
  /** Number of nodes anywhere below, per side, and converted ones per side. */
  count: Record<Side, number>;
  converted: Record<Side, number>;
}

/** What one visible box stands for: a single node or a collapsed scope. */
export interface Unit {
  id: string;
  kind: "node" | "scope";
  /** Node name or scope path. */
  name: string;
  /** The expanded scope this unit is drawn inside ("" = top level). */
  cluster: string;
}

export interface View {
  units: Map<string, Unit>;
  /** Expanded scopes that are visible, drawn as clusters around their members. */
  clusters: string[];
  /** Union edges between units, keyed "a\u0000b". */
  edges: Map<string, [string, string]>;
  /** Per side: the union edge keys that exist on that side. */
  sideEdges: Record<Side, Set<string>>;
  /** Node name → id of the unit that shows it. */
  repOf: Map<string, string>;
}

export const SCOPE_PREFIX = "scope:";
export const NODE_PREFIX = "node:";

/** "^a/b:1" → "a/b": control and output-slot decorations are not part of the node name. */
export function inputNode(input: string): string {
  let s = input.startsWith("^") ? input.slice(1) : input;
  const colon = s.lastIndexOf(":");
  if (colon > 0 && /^\d+$/.test(s.slice(colon + 1))) s = s.slice(0, colon);
  return s;
}

function parentScope(name: string): string {
  const i = name.lastIndexOf("/");
  return i < 0 ? "" : name.slice(0, i);
}

export class UnionGraph {
  readonly nodes = new Map<string, UnionNode>();
  readonly scopes = new Map<string, Scope>();
  readonly converted: Record<Side, Set<string>> = { frozen: new Set(), unfrozen: new Set() };
  /** Nodes the conversion altered without making them variables (e.g. a keep_prob placeholder), per side. */
  readonly changed: Record<Side, Map<string, string>> = { frozen: new Map(), unfrozen: new Map() };
  /** Helper nodes folded into variables, per side. */
  readonly folded: Record<Side, number> = { frozen: 0, unfrozen: 0 };
  /** Distinct [src, dst] node-name pairs per side. */
  readonly edges: Record<Side, Array<[string, string]>> = { frozen: [], unfrozen: [] };
  readonly hasSide: Record<Side, boolean> = { frozen: false, unfrozen: false };

  /** Unfrozen variable name → the frozen constant it was made from, where the two names differ. */
  readonly aliasOf = new Map<string, string>();

  constructor(frozen: GraphData | null, unfrozen: GraphData | null) {
    this.scopes.set("", this.newScope("", "", 0));
    if (frozen && unfrozen) unfrozen = this.mapVariables(frozen, unfrozen);
    const sides: Array<[Side, GraphData]> = [];
    if (frozen) sides.push(["frozen", frozen]);
    if (unfrozen) sides.push(["unfrozen", unfrozen]);
    // Every name, including inputs that name no node (a trimmed graph still gets a box per edge end).
    const names = new Set<string>();
    for (const [, data] of sides) for (const n of data.nodes) {
      names.add(n.name);
      for (const i of [...(n.inputs ?? []), ...(n.control_inputs ?? [])]) names.add(inputNode(i));
    }
    const scopePaths = new Set<string>();
    for (const name of names) for (let p = parentScope(name); p && !scopePaths.has(p); p = parentScope(p)) scopePaths.add(p);
    for (const name of names) {
      // A node whose name is also a scope ("w" beside "w/read") is drawn inside that scope: closed, the
      // scope stands for the node and its helpers, as a variable with its Read and Assign ops.
      const scope = scopePaths.has(name) ? name : parentScope(name);
      this.nodes.set(name, { name, scope });
      this.ensureScope(scope).childNodes.push(name);
    }
    for (const [side, data] of sides) this.addSide(side, data);
    for (const scope of this.scopes.values()) {
      scope.childScopes.sort();
      scope.childNodes.sort();
    }
  }

  /**
   * A variable named differently from its constant (the constant's name was taken or invalid) is the same node
   * as that constant for the comparison: the unfrozen side is renamed so both sit in one place and select together.
   */
  private mapVariables(frozen: GraphData, unfrozen: GraphData): GraphData {
    const frozenNames = new Set(frozen.nodes.map((n) => n.name));
    const unfrozenNames = new Set(unfrozen.nodes.map((n) => n.name));
    const rename = new Map<string, string>();
    for (const n of unfrozen.nodes) {
      const src = n.variable?.source ? inputNode(n.variable.source) : null;
      if (src && src !== n.name && frozenNames.has(src) && !unfrozenNames.has(src)) rename.set(n.name, src);
    }
    if (!rename.size) return unfrozen;
    for (const [v, src] of rename) this.aliasOf.set(v, src);
    const r = (x: string): string => rename.get(inputNode(x)) ?? inputNode(x);
    return {
      ...unfrozen,
      converted: (unfrozen.converted ?? []).map((x) => rename.get(x) ?? x),
      nodes: unfrozen.nodes.map((n) => (rename.has(n.name) || n.inputs.some((i) => rename.has(inputNode(i)))
        || (n.control_inputs ?? []).some((i) => rename.has(inputNode(i)))
        ? { ...n, name: rename.get(n.name) ?? n.name, inputs: n.inputs.map(r), control_inputs: n.control_inputs?.map(r) }
        : n)),
    };
  }

  private newScope(path: string, parent: string, depth: number): Scope {
    return {
      path, parent, depth, childScopes: [], childNodes: [],
      count: { frozen: 0, unfrozen: 0 }, converted: { frozen: 0, unfrozen: 0 },
    };
  }

  private ensureScope(path: string): Scope {
    let scope = this.scopes.get(path);
    if (scope) return scope;
    const parent = parentScope(path);
    const up = this.ensureScope(parent);
    scope = this.newScope(path, parent, path.split("/").length);
    this.scopes.set(path, scope);
    up.childScopes.push(path);
    return scope;
  }

  /** Whether a scope is the helpers of the node of the same name. */
  ownedByNode(path: string): boolean {
    return this.nodes.has(path);
  }

  private addSide(side: Side, data: GraphData): void {
    this.hasSide[side] = true;
    const converted = this.converted[side];
    for (const name of data.converted ?? []) converted.add(name);
    for (const n of data.nodes) if (n.converted) converted.add(n.name);
    for (const [name, what] of Object.entries(data.changed ?? {})) if (!converted.has(name)) this.changed[side].set(name, what);
    for (const n of data.nodes) if (n.changed && !converted.has(n.name)) this.changed[side].set(n.name, n.changed);
    this.folded[side] = data.folded ?? 0;
    for (const n of data.nodes) {
      const u = this.nodes.get(n.name)!;
      u[side] = n;
      const isConverted = converted.has(n.name);
      for (let s: Scope | undefined = this.scopes.get(u.scope); s; s = s.path === "" ? undefined : this.scopes.get(s.parent)) {
        s.count[side]++;
        if (isConverted) s.converted[side]++;
      }
    }
    const seen = new Set<string>();
    const edges = this.edges[side];
    for (const n of data.nodes) {
      for (const input of [...(n.inputs ?? []), ...(n.control_inputs ?? [])]) {
        const src = inputNode(input);
        if (src === n.name) continue;
        const key = src + "\u0000" + n.name;
        if (seen.has(key)) continue;
        seen.add(key);
        edges.push([src, n.name]);
      }
    }
  }

  /** Scope chain of a node from the top ("a", "a/b", ...), excluding the root. */
  ancestors(scopePath: string): string[] {
    if (!scopePath) return [];
    const parts = scopePath.split("/");
    const out: string[] = [];
    for (let i = 1; i <= parts.length; i++) out.push(parts.slice(0, i).join("/"));
    return out;
  }

  /**
   * The scopes to expand so that about `budget` boxes are visible: shallow scopes first,
   * small ones before big ones. Small graphs come out fully expanded.
   */
  defaultExpansion(budget: number, maxMembers = 250): Set<string> {
    const expanded = new Set<string>();
    const top = this.scopes.get("")!;
    let visible = top.childScopes.length + top.childNodes.length;
    let frontier = [...top.childScopes];
    while (frontier.length) {
      frontier.sort((a, b) => this.scopeSize(a) - this.scopeSize(b));
      const next: string[] = [];
      for (const path of frontier) {
        const s = this.scopes.get(path)!;
        // A scope only one graph has (the unfrozen graph's save/restore machinery) is noise
        // next to the comparison: it starts closed.
        if (this.hasSide.frozen && this.hasSide.unfrozen && (s.count.frozen === 0 || s.count.unfrozen === 0)) continue;
        if (this.ownedByNode(path)) continue;
        const grow = s.childScopes.length + s.childNodes.length - 1;
        // Too big for the budget, unless the view would otherwise show next to nothing (a model wrapped in one
        // top scope of hundreds of blocks): then its first level opens anyway, and the rest stays closed.
        const tiny = visible <= 12 && visible + grow <= 4 * budget;
        if (!tiny && (visible + grow > budget || grow + 1 > maxMembers)) continue;
        visible += grow;
        expanded.add(path);
        next.push(...s.childScopes);
      }
      frontier = next;
    }
    return expanded;
  }

  scopeSize(path: string): number {
    const s = this.scopes.get(path)!;
    return Math.max(s.count.frozen, s.count.unfrozen);
  }

  /** Boxes, clusters and edges to draw for a given set of expanded scopes. */
  view(expanded: Set<string>): View {
    const units = new Map<string, Unit>();
    const repOf = new Map<string, string>();
    const clusters: string[] = [];
    const walk = (path: string): void => {
      const s = this.scopes.get(path)!;
      for (const child of s.childScopes) {
        if (expanded.has(child)) {
          clusters.push(child);
          walk(child);
        } else {
          const id = SCOPE_PREFIX + child;
          units.set(id, { id, kind: "scope", name: child, cluster: path });
        }
      }
      for (const name of s.childNodes) {
        const id = NODE_PREFIX + name;
        units.set(id, { id, kind: "node", name, cluster: path });
        repOf.set(name, id);
      }
    };
    walk("");
    for (const u of this.nodes.values()) {
      if (repOf.has(u.name)) continue;
      for (const a of this.ancestors(u.scope)) {
        if (!expanded.has(a)) {
          repOf.set(u.name, SCOPE_PREFIX + a);
          break;
        }
      }
    }
    const edges = new Map<string, [string, string]>();
    const sideEdges: Record<Side, Set<string>> = { frozen: new Set(), unfrozen: new Set() };
    for (const side of SIDES) {
      for (const [src, dst] of this.edges[side]) {
        const a = repOf.get(src);
        const b = repOf.get(dst);
        if (!a || !b || a === b) continue;
        const key = a + "\u0000" + b;
        if (!edges.has(key)) edges.set(key, [a, b]);
        sideEdges[side].add(key);
      }
    }
    return { units, clusters, edges, sideEdges, repOf };
  }

  /** Whether a unit has anything on the given side. */
  present(unit: Unit, side: Side): boolean {
    if (unit.kind === "scope") return this.scopes.get(unit.name)!.count[side] > 0;
    return !!this.nodes.get(unit.name)?.[side];
  }

  /** Number of converted nodes a unit holds on the given side. */
  convertedIn(unit: Unit, side: Side): number {
    if (unit.kind === "scope") return this.scopes.get(unit.name)!.converted[side];
    return this.converted[side].has(unit.name) ? 1 : 0;
  }

  /** Every scope that holds a converted node, so they can be opened to show it. */
  scopesOfConverted(): Set<string> {
    const out = new Set<string>();
    for (const side of SIDES) for (const name of this.converted[side]) {
      const u = this.nodes.get(name);
      if (u) for (const a of this.ancestors(u.scope)) out.add(a);
    }
    return out;
  }
}
