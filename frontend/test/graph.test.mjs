// Node-only checks of the graph model and layout (no browser): `npm --prefix frontend test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { build } from "esbuild";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const out = await build({
  stdin: { contents: 'export * from "./graph/model"; export * from "./graph/layout"; export * from "./graph/layout_client";', resolveDir: path.join(here, "..", "src"), loader: "ts" },
  bundle: true, format: "esm", platform: "node", write: false,
});
const file = path.join(mkdtempSync(path.join(tmpdir(), "tbu-")), "graph.mjs");
writeFileSync(file, out.outputFiles[0].text);
const { UnionGraph, layoutView, inputNode, LayoutClient, viewKey } = await import(pathToFileURL(file).href);

// A dense layer, frozen (Const + read) and unfrozen (VarHandleOp with its helpers), as TF names them.
const frozen = {
  nodes: [
    { name: "x", op: "Placeholder", inputs: [] },
    { name: "dense/kernel", op: "Const", inputs: [] },
    { name: "dense/kernel/read", op: "Identity", inputs: ["dense/kernel"] },
    { name: "dense/MatMul", op: "MatMul", inputs: ["x", "dense/kernel/read:0"] },
    { name: "out", op: "Identity", inputs: ["dense/MatMul", "^x"] },
  ],
  converted: ["dense/kernel"],
};
const unfrozen = {
  nodes: [
    { name: "x", op: "Placeholder", inputs: [] },
    { name: "dense/kernel", op: "VarHandleOp", inputs: [] },
    { name: "dense/kernel/Read/ReadVariableOp", op: "ReadVariableOp", inputs: ["dense/kernel"] },
    { name: "dense/MatMul", op: "MatMul", inputs: ["x", "dense/kernel/Read/ReadVariableOp"] },
    { name: "out", op: "Identity", inputs: ["dense/MatMul"] },
    { name: "save/Const", op: "Const", inputs: [] },
  ],
  converted: ["dense/kernel", "dense/kernel/Read/ReadVariableOp"],
};

test("input names lose their port and control marks", () => {
  assert.equal(inputNode("^a/b"), "a/b");
  assert.equal(inputNode("a/b:1"), "a/b");
  assert.equal(inputNode("a:b"), "a:b");
});

test("the union holds each name once, with both sides' ops", () => {
  const g = new UnionGraph(frozen, unfrozen);
  assert.equal(g.nodes.get("dense/kernel").frozen.op, "Const");
  assert.equal(g.nodes.get("dense/kernel").unfrozen.op, "VarHandleOp");
  assert.equal(g.nodes.size, 7);
  // A node that shares its name with a scope lives inside it, with its helpers.
  assert.equal(g.nodes.get("dense/kernel").scope, "dense/kernel");
  assert.deepEqual(g.scopes.get("dense/kernel").converted, { frozen: 1, unfrozen: 2 });
});

test("default expansion opens shared scopes, keeps node helpers and one-sided scopes closed", () => {
  const g = new UnionGraph(frozen, unfrozen);
  const open = g.defaultExpansion(400);
  assert.ok(open.has("dense"));
  assert.ok(!open.has("dense/kernel"));
  assert.ok(!open.has("save"));
  const v = g.view(open);
  assert.ok(v.units.has("scope:dense/kernel"));
  assert.equal(v.repOf.get("dense/kernel/read"), "scope:dense/kernel");
  assert.equal(g.convertedIn(v.units.get("scope:dense/kernel"), "frozen"), 1);
});

test("one layout places shared boxes identically for both sides, siblings never overlap", () => {
  const g = new UnionGraph(frozen, unfrozen);
  const v = g.view(new Set(g.scopes.keys()));
  const L = layoutView(v);
  const boxes = [...v.units.keys()].map((id) => [id, L.boxes.get(id)]);
  for (const [id, b] of boxes) assert.ok(b && b.w > 0 && b.h > 0, id);
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const [, a] = boxes[i];
    const [, b] = boxes[j];
    const overlap = a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
    assert.ok(!overlap, `${boxes[i][0]} overlaps ${boxes[j][0]}`);
  }
  // Every edge of either side has a route.
  for (const key of [...v.sideEdges.frozen, ...v.sideEdges.unfrozen]) assert.ok(L.edges.get(key)?.length >= 2, key);
  // Inputs are drawn above their consumers.
  assert.ok(L.boxes.get("node:x").y < L.boxes.get("node:dense/MatMul").y);
});

test("a 20k-node graph starts collapsed to about the budget", () => {
  const nodes = [];
  for (let t = 0; t < 20; t++) for (let i = 0; i < 1000; i++) {
    nodes.push({ name: `tower${t}/block${i % 50}/op${i}`, op: "Relu", inputs: i ? [`tower${t}/block${(i - 1) % 50}/op${i - 1}`] : [] });
  }
  const g = new UnionGraph({ nodes, converted: [] }, null);
  const v = g.view(g.defaultExpansion(400));
  assert.ok(v.units.size <= 400 && v.units.size >= 20, String(v.units.size));
  const L = layoutView(v);
  assert.ok(L.millis < 20000, String(L.millis));
});

test("a variable named unlike its constant is the same node as that constant", () => {
  const f = { nodes: [
    { name: "Const", op: "Const", inputs: [] },
    { name: "y", op: "Mul", inputs: ["x", "Const"] },
    { name: "x", op: "Placeholder", inputs: [] },
  ], converted: ["Const"] };
  const u = { nodes: [
    { name: "anchors/constant", op: "VarHandleOp", inputs: [], converted: true, variable: { source: "Const", trainable: true, helpers: [] } },
    { name: "y", op: "Mul", inputs: ["x", "anchors/constant"] },
    { name: "x", op: "Placeholder", inputs: [] },
  ], converted: ["anchors/constant"], variables: 1 };
  const g = new UnionGraph(f, u);
  assert.equal(g.nodes.get("Const").unfrozen.op, "VarHandleOp");
  assert.ok(!g.nodes.has("anchors/constant"));
  assert.equal(g.aliasOf.get("anchors/constant"), "Const");
  assert.deepEqual([...g.converted.unfrozen], ["Const"]);
  assert.deepEqual(g.edges.unfrozen.find(([, b]) => b === "y"), ["x", "y"]);
  assert.ok(g.edges.unfrozen.some(([a, b]) => a === "Const" && b === "y"));
});

test("repeated blocks are laid out once: the same shape, shifted, and one cache entry per distinct scope", () => {
  // Ten residual layers with the same member names in their own scopes, and one that differs.
  const nodes = [{ name: "x", op: "Placeholder", inputs: [] }];
  let prev = "x";
  for (let i = 0; i < 11; i++) {
    const p = `net/layer${i}`;
    nodes.push({ name: `${p}/kernel`, op: "Const", inputs: [] });
    nodes.push({ name: `${p}/MatMul`, op: "MatMul", inputs: [prev, `${p}/kernel`] });
    nodes.push({ name: `${p}/Relu`, op: "Relu", inputs: [`${p}/MatMul`] });
    if (i === 10) nodes.push({ name: `${p}/extra`, op: "Identity", inputs: [`${p}/Relu`] });
    nodes.push({ name: `${p}/add`, op: "AddV2", inputs: [prev, `${p}/Relu`] });
    prev = `${p}/add`;
  }
  const g = new UnionGraph({ nodes, converted: [] }, null);
  const v = g.view(new Set(g.scopes.keys()));
  const cache = new Map();
  const L = layoutView(v, cache);
  // layer0..9 share one entry, layer10 has its own, plus "net" and the root.
  assert.equal(cache.size, 4);
  const rel = (i, n) => {
    const c = L.clusters.get(`net/layer${i}`);
    const b = L.boxes.get(`node:net/layer${i}/${n}`);
    return [b.x - c.x, b.y - c.y, b.w, b.h];
  };
  for (const n of ["kernel", "MatMul", "Relu", "add"]) assert.deepEqual(rel(7, n), rel(0, n), n);
  // Every box is still placed, edges routed, nothing overlapping within a layer.
  for (const id of v.units.keys()) assert.ok(L.boxes.get(id), id);
  for (const key of v.sideEdges.frozen) assert.ok(L.edges.get(key)?.length >= 2, key);
  // A second layout of the same view is all cache hits and places everything identically.
  const again = layoutView(v, cache);
  assert.equal(cache.size, 4);
  for (const id of v.units.keys()) assert.deepEqual(again.boxes.get(id), L.boxes.get(id), id);
});

test("a layout is kept in the browser's storage and reused for the same view only", async () => {
  const items = new Map();
  globalThis.window = { localStorage: {
    getItem: (k) => (items.has(k) ? items.get(k) : null),
    setItem: (k, v) => void items.set(k, String(v)),
    removeItem: (k) => void items.delete(k),
  } };
  try {
    const g = new UnionGraph(frozen, unfrozen);
    const v = g.view(g.defaultExpansion(500));
    const client = new LayoutClient(); // no Worker in Node: laid out on this thread
    const first = await client.layout(v, "a");
    assert.equal(client.where, "main");
    const page2 = new LayoutClient(); // another page: a new client, the same storage
    const again = await page2.layout(v, "b");
    assert.equal(page2.where, "stored");
    assert.deepEqual([...again.boxes], [...first.boxes]);
    assert.deepEqual([...again.edges], [...first.edges]);
    const other = g.view(new Set([...g.scopes.keys()]));
    assert.notEqual(viewKey(other), viewKey(v), "another expansion is another layout");
    const c2 = new LayoutClient();
    await c2.layout(other, "c");
    assert.equal(c2.where, "main");
  } finally {
    delete globalThis.window;
  }
});
