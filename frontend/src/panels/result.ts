// What a conversion produced, and how to fine-tune it.
import { h, fmtInt, fmtDiff } from "../dom";
import type { Inspection, JobResult, Manifest } from "../api";

export interface ResultFacts {
  variables: number | null;
  trainableParams: number | null;
  maxDiff: number | null;
  passed: boolean | null;
  missingGradients: string[] | null;
  trainingPath: string | null;
  outDir: string | null;
  savedModel: string | null;
}

function prod(shape: Array<number | null> | null | undefined): number {
  if (!shape) return 0;
  return shape.reduce<number>((a, d) => a * (d == null || d < 0 ? 1 : d), 1);
}

function diffOf(x: unknown): number | null {
  if (typeof x === "number") return x;
  if (x && typeof x === "object" && typeof (x as { max_abs_diff?: unknown }).max_abs_diff === "number") {
    return (x as { max_abs_diff: number }).max_abs_diff;
  }
  return null;
}

/** Facts of the latest conversion: from its manifest when there is one, else from the job's result. */
export function resultFacts(manifest: Manifest | null, result: JobResult | null | undefined): ResultFacts {
  const m = manifest ?? {};
  const r = result ?? {};
  const vars = m.variables ?? null;
  const ver = m.verification ?? {};
  const perOutput = Object.values(ver.outputs ?? {}).map(diffOf).filter((x): x is number => x != null);
  const maxDiff = typeof ver.max_abs_diff === "number" ? ver.max_abs_diff
    : perOutput.length ? Math.max(...perOutput) : diffOf(r.verification);
  const outDir = (m.out_dir as string | undefined) ?? r.out_dir ?? null;
  const savedModel = (typeof m.saved_model === "string" ? m.saved_model : null) ?? r.saved_model
    ?? (outDir ? outDir.replace(/\/$/, "") + "/saved_model" : null);
  const missing = Array.isArray(ver.gradients?.missing) ? (ver.gradients!.missing as string[]) : null;
  const passed = typeof ver.passed === "boolean" ? ver.passed
    : typeof r.verification?.passed === "boolean" ? r.verification.passed : null;
  return {
    variables: vars ? vars.length : m.totals?.variables ?? r.variables ?? null,
    trainableParams: m.totals?.trainable_parameters
      ?? (vars ? vars.filter((v) => v.trainable).reduce((a, v) => a + prod(v.shape), 0) : r.trainable_parameters ?? null),
    maxDiff,
    passed,
    missingGradients: missing,
    trainingPath: (ver.training_path as string | undefined) ?? null,
    outDir,
    savedModel,
  };
}

/** A Python identifier-safe string literal. */
const py = (s: string) => JSON.stringify(s);

export function tfSnippet(savedModel: string): string {
  return [
    "import tensorflow as tf",
    "",
    `m = tf.saved_model.load(${py(savedModel)})`,
    'f = m.signatures["serving_default"]',
    "input_name = next(iter(f.structured_input_signature[1]))",
    "variables = [v for v in m.variables if v.trainable]",
    "opt = tf.keras.optimizers.Adam(1e-4)",
    "",
    "def train_step(x, y):",
    "    with tf.GradientTape() as tape:",
    "        out = next(iter(f(**{input_name: x}).values()))",
    "        loss = tf.reduce_mean(tf.square(out - y))",
    "    grads = tape.gradient(loss, variables)",
    "    opt.apply_gradients(zip(grads, variables))",
    "    return loss",
  ].join("\n");
}

export function kerasSnippet(savedModel: string, ins: Inspection | null): string {
  const first = ins?.inputs?.find((i) => !i.unused) ?? ins?.inputs?.[0];
  const shape = first?.shape ? first.shape.slice(1).map((d) => (d == null || d < 0 ? "None" : String(d))) : null;
  const shapeText = shape ? `(${shape.join(", ")}${shape.length === 1 ? "," : ""})` : "(...)";
  return [
    "import tensorflow as tf",
    "from tb_unfreeze.keras import UnfrozenLayer",
    "",
    `layer = UnfrozenLayer(${py(savedModel)})`,
    `x = tf.keras.Input(shape=${shapeText}${first?.dtype ? `, dtype=${py(first.dtype)}` : ""})`,
    "model = tf.keras.Model(x, layer(x))",
    'model.compile(optimizer=tf.keras.optimizers.Adam(1e-4), loss="mse")',
    "model.fit(train_x, train_y, epochs=1)",
  ].join("\n");
}

export function snippetBox(title: string, code: string): HTMLElement {
  const pre = h("pre.snippet", null, code);
  const btn = h("button.btn.small.copy", {
    on: {
      click: async () => {
        const ok = await copyText(code, pre);
        btn.textContent = ok ? "Copied" : "Select and copy";
        setTimeout(() => (btn.textContent = "Copy"), 1500);
      },
    },
  }, "Copy");
  return h("div.snippet-box", null, h("div.snippet-head", null, h("span", null, title), btn), pre);
}

async function copyText(text: string, el: HTMLElement): Promise<boolean> {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // The iframe may lack clipboard permission: fall back to selecting the text.
    const range = document.createRange();
    range.selectNodeContents(el);
    const sel = window.getSelection();
    sel?.removeAllRanges();
    sel?.addRange(range);
    try { return document.execCommand("copy"); } catch { return false; }
  }
}

export function resultPanel(f: ResultFacts, ins: Inspection | null): HTMLElement {
  const grad = f.missingGradients;
  const gradText = grad == null ? "—" : grad.length === 0 ? "every trainable variable gets a gradient" : `no gradient for ${grad.length}: ${grad.slice(0, 5).join(", ")}${grad.length > 5 ? "…" : ""}`;
  const verdict = f.passed == null ? null : f.passed ? h("span.chip.ok", null, "verified") : h("span.chip.bad", null, "verification failed");
  return h("div.result", null,
    h("div.facts", null,
      fact("Variables created", fmtInt(f.variables), "variables"),
      fact("Trainable parameters", fmtInt(f.trainableParams), "trainable"),
      fact("Max |frozen − unfrozen|", fmtDiff(f.maxDiff), "max-diff", verdict),
      fact("Gradient check", gradText, "gradients", grad ? (grad.length ? h("span.chip.bad", null, "missing") : h("span.chip.ok", null, "ok")) : null),
      f.trainingPath ? fact("Training path", f.trainingPath, "training-path") : null,
      fact("Output", f.savedModel ?? "—", "out-dir"),
    ),
    f.savedModel
      ? h("div.snippets", null,
        snippetBox("Fine-tune with TensorFlow (GradientTape)", tfSnippet(f.savedModel)),
        snippetBox("Fine-tune with Keras", kerasSnippet(f.savedModel, ins)),
      )
      : null,
  );
}

function fact(label: string, value: string, key: string, extra?: HTMLElement | null): HTMLElement {
  return h("div.fact", { "data-fact": key }, h("div.fact-label", null, label), h("div.fact-value", null, value, extra ? " " : "", extra ?? null));
}
