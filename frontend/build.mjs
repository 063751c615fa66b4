// One command (`npm run build`) writes what TensorBoard serves to tb_unfreeze/plugin/static/: the tab's ES module
// and the Web Worker that lays graphs out.
import { build } from "esbuild";
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const outdir = path.join(here, "..", "tb_unfreeze", "plugin", "static");
mkdirSync(outdir, { recursive: true });

const common = { bundle: true, target: "es2022", minify: true, sourcemap: false, legalComments: "eof", logLevel: "info" };

await build({
  ...common,
  entryPoints: [path.join(here, "src", "index.ts")],
  outfile: path.join(outdir, "index.js"),
  format: "esm",
  // The stylesheet is inlined into the module: one file to serve, nothing to load from elsewhere.
  loader: { ".css": "text" },
});

await build({
  ...common,
  entryPoints: [path.join(here, "src", "graph", "layout_worker.ts")],
  outfile: path.join(outdir, "layout_worker.js"),
  format: "iife",
});
