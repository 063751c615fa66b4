// One command (`npm run build`) writes the ES module TensorBoard serves to tb_unfreeze/plugin/static/.
import { build } from "esbuild";
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const outdir = path.join(here, "..", "tb_unfreeze", "plugin", "static");
mkdirSync(outdir, { recursive: true });

await build({
  entryPoints: [path.join(here, "src", "index.ts")],
  outfile: path.join(outdir, "index.js"),
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: false,
  legalComments: "eof",
  // The stylesheet is inlined into the module: one file to serve, nothing to load from elsewhere.
  loader: { ".css": "text" },
  logLevel: "info",
});
