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

test("the contract's status is shown as it is", () => {
  for (const s of ["verified", "verified_with_warnings", "not_verified", "failed"]) {
    assert.equal(verificationStatus({ status: s, performed: true, passed: true }), s);
  }
});

test("a record without a known status is never shown as verified", () => {
  assert.equal(verificationStatus({ performed: true, passed: true }), "not_verified");
  assert.equal(verificationStatus({ status: "bogus", passed: true }), "not_verified");
  assert.equal(verificationStatus({}), "not_verified");
  assert.equal(verificationStatus(null), null);
  assert.equal(verificationStatus(undefined), null);
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
