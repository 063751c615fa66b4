// Node-only checks of what the tab says about a conversion: the four verification states and elided names.
import { test } from "node:test";
import assert from "node:assert/strict";
import { build } from "esbuild";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const out = await build({
  stdin: {
    contents: 'export * from "./status"; export { middleEllipsis } from "./panels/candidates";',
    resolveDir: path.join(here, "..", "src"), loader: "ts",
  },
  bundle: true, format: "esm", platform: "node", write: false,
});
const file = path.join(mkdtempSync(path.join(tmpdir(), "tbu-")), "status.mjs");
writeFileSync(file, out.outputFiles[0].text);
const { verificationStatus, verificationText, middleEllipsis } = await import(pathToFileURL(file).href);

test("the manifest's own status wins when it has one", () => {
  for (const s of ["verified", "verified_with_warnings", "not_verified", "failed"]) {
    assert.equal(verificationStatus({ status: s, performed: true, passed: true }), s);
  }
});

test("without a status, it is derived; only a full pass is 'verified'", () => {
  assert.equal(verificationStatus({ performed: false, passed: null }), "not_verified");
  assert.equal(verificationStatus({ performed: true, passed: false }), "failed");
  assert.equal(verificationStatus({ performed: true, passed: true, gradients: { missing: [], errors: [] } }), "verified");
  assert.equal(verificationStatus({ performed: true, passed: true, gradients: { missing: ["w"] } }), "verified_with_warnings");
  assert.equal(verificationStatus({ performed: true, passed: true, gradients_missing: 2 }), "verified_with_warnings");
  assert.equal(verificationStatus({ performed: true, passed: true, gradient_errors: 1 }), "verified_with_warnings");
  assert.equal(verificationStatus({ performed: true }), "failed");
  assert.equal(verificationStatus({}), "not_verified");
  assert.equal(verificationStatus(null), null);
  assert.equal(verificationStatus({ status: "bogus", performed: false }), "not_verified");
});

test("'not verified' is its own words, not a variant of 'verified'", () => {
  assert.equal(verificationText("not_verified"), "not verified");
  assert.equal(verificationText("verified_with_warnings"), "verified with warnings");
});

test("names are elided in the middle, keeping more of the end", () => {
  assert.equal(middleEllipsis("short", 10), "short");
  const e = middleEllipsis("MobilenetV2/expanded_conv_12/depthwise/BatchNorm/moving_variance", 30);
  assert.equal(e.length, 30);
  assert.ok(e.startsWith("Mobile") && e.endsWith("BatchNorm/moving_variance".slice(-20)) && e.includes("…"), e);
});
