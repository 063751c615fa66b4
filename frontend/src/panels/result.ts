// What a conversion produced, and how to fine-tune it.
import { h, fmtInt, fmtDiff, replace } from "../dom";
import type { Inspection, JobResult, Manifest, ProbeUpload } from "../api";
import { VerificationStatus, verificationStatus, verificationText } from "../status";

export interface ResultFacts {
  variables: number | null;
  trainableParams: number | null;
  maxDiff: number | null;
  passed: boolean | null;
  missingGradients: string[] | null;
  trainingPath: string | null;
  outDir: string | null;
  savedModel: string | null;
  /** Why verification was not performed, when it was not. */
  notVerified: string | null;
  /** verified / verified_with_warnings / not_verified / failed. */
  status: VerificationStatus;
  /** The verification's own note (why it could not be done, what was skipped). */
  note: string | null;
  /** What the verification found wrong, or warns about, in its own words. */
  problems: string[];
}

/** Facts of a conversion: from its manifest when it is loaded, else from the job's summary (same contract). */
export function resultFacts(manifest: Manifest | null, result: JobResult | null | undefined): ResultFacts {
  if (manifest) {
    const ver = manifest.verification;
    const status = verificationStatus(ver) ?? "not_verified";
    return {
      variables: manifest.totals.variables,
      trainableParams: manifest.totals.trainable_parameters,
      maxDiff: ver.max_abs_diff ?? null,
      passed: ver.passed,
      missingGradients: ver.performed ? ver.gradients?.missing ?? [] : null,
      trainingPath: manifest.training_paths.note || null,
      outDir: manifest.out_dir,
      savedModel: manifest.saved_model,
      notVerified: ver.performed ? null : ver.note || "verification was skipped",
      status,
      problems: strings(ver.problems),
      note: ver.note || null,
    };
  }
  const ver = result?.verification;
  return {
    variables: result?.variables ?? null,
    trainableParams: result?.trainable_parameters ?? null,
    maxDiff: ver?.max_abs_diff ?? null,
    passed: ver?.passed ?? null,
    missingGradients: null,  // the summary counts them; the panel shows names once the manifest is loaded
    trainingPath: null,
    outDir: result?.out_dir ?? null,
    savedModel: result?.saved_model ?? null,
    notVerified: ver && !ver.performed ? ver.note || "verification was skipped" : null,
    status: verificationStatus(ver) ?? "not_verified",
    problems: strings(ver?.problems),
    note: ver?.note || null,
  };
}

function strings(x: unknown): string[] {
  return Array.isArray(x) ? x.filter((s): s is string => typeof s === "string" && !!s) : [];
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

export function tf1Snippet(savedModel: string): string {
  return [
    "import tensorflow as tf",
    "",
    "graph = tf.Graph()",
    "with graph.as_default(), tf.compat.v1.Session() as sess:",
    `    meta = tf.compat.v1.saved_model.load(sess, ["serve"], ${py(savedModel)})`,
    '    sig = meta.signature_def["serving_default"]',
    "    x = graph.get_tensor_by_name(next(iter(sig.inputs.values())).name)",
    "    out = graph.get_tensor_by_name(next(iter(sig.outputs.values())).name)",
    "    y = tf.compat.v1.placeholder(out.dtype, out.shape)",
    "    loss = tf.reduce_mean(tf.square(out - y))",
    "    opt = tf.compat.v1.train.AdamOptimizer(1e-4)",
    "    step = opt.minimize(loss, var_list=tf.compat.v1.trainable_variables())",
    "    sess.run(tf.compat.v1.variables_initializer(opt.variables()))",
    "    sess.run(step, {x: train_x, y: train_y})",
  ].join("\n");
}


export function kerasSnippet(savedModel: string, ins: Inspection | null): string {
  const first = ins?.inputs?.find((i) => !i.unused) ?? ins?.inputs?.[0];
  const shape = first?.shape ? first.shape.slice(1).map((d) => (d == null || d < 0 ? "None" : String(d))) : null;
  const shapeText = shape ? `(${shape.join(", ")}${shape.length === 1 ? "," : ""})` : "(None,)";
  const dtype = first?.dtype ?? null;  // TensorFlow's dtype names ("float32"), as Keras takes them
  return [
    "import tensorflow as tf",
    "from tb_unfreeze.keras import UnfrozenLayer",
    "",
    `layer = UnfrozenLayer(${py(savedModel)})`,
    `x = tf.keras.Input(shape=${shapeText}${dtype ? `, dtype=${py(dtype)}` : ""})`
      + (shape ? "" : `  # ${first?.name ?? "the input"} declares no shape in the graph: set it`),
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

/** What the tab can do about a result that is not verified: convert again, verifying against chosen outputs and
 * on probe inputs the user uploads (an .npz keyed by input name, as `tb-unfreeze convert --probe` takes). */
export interface ResultActions {
  reverify: (options: { outputs?: string[]; probe?: string }) => void;
  uploadProbe: (file: File) => Promise<ProbeUpload>;
}

function remedy(f: ResultFacts, ins: Inspection | null, actions: ResultActions): HTMLElement {
  const known = (ins?.outputs ?? []).map((o) => o.name);
  const fed = (ins?.inputs ?? []).filter((i) => (i.kind ?? "data") === "data").map((i) => i.name);
  const input = h("input.in.outputs-in", {
    type: "text", value: known.join(", "), "aria-label": "Outputs to compare",
    title: "Node names of the outputs the frozen and the unfrozen graph are compared on, comma-separated",
  });
  const file = h("input.in.probe-in", {
    type: "file", accept: ".npz", "aria-label": "Probe inputs (.npz)",
    title: `An .npz with one array per input (${fed.join(", ") || "the graph's inputs"}), e.g. numpy.savez("probe.npz", **{name: batch}); the conversion is verified on it`,
  }) as HTMLInputElement;
  const msg = h("div.probe-msg");
  const run = h("button.btn.small.reverify", {
    on: {
      click: async () => {
        const names = input.value.split(",").map((x) => x.trim()).filter(Boolean);
        const same = names.length === known.length && names.every((n, i) => n === known[i]);
        const options: { outputs?: string[]; probe?: string } = names.length && !same ? { outputs: names } : {};
        const chosen = file.files?.[0];
        if (chosen) {
          run.setAttribute("disabled", "");
          replace(msg, `Uploading ${chosen.name}…`);
          try {
            const up = await actions.uploadProbe(chosen);
            options.probe = up.probe;
            replace(msg, `Probe ${chosen.name}: ${Object.entries(up.inputs).map(([k, v]) => `${k} ${JSON.stringify(v.shape)}`).join(", ")}`
              + (up.missing.length ? `; searched for: ${up.missing.join(", ")}` : ""));
          } catch (e) {
            run.removeAttribute("disabled");
            replace(msg, h("span.err", null, (e as Error).message));
            return;
          }
        }
        actions.reverify(options);
      },
    },
  }, f.status === "failed" ? "Convert again and verify" : "Verify: convert again with verification");
  return h("div.remedy", null,
    h("label.lbl", null, "Outputs to compare ", input),
    h("label.lbl", null, "Probe inputs (.npz) ", file),
    run, msg);
}

export function resultPanel(f: ResultFacts, ins: Inspection | null, actions?: ResultActions): HTMLElement {
  const grad = f.missingGradients;
  const gradText = grad == null ? "—" : grad.length === 0 ? "every trainable variable gets a gradient" : `no gradient for ${grad.length}: ${grad.slice(0, 5).join(", ")}${grad.length > 5 ? "…" : ""}`;
  const status = h("span.chip.verification", { "data-status": f.status }, verificationText(f.status));
  const explain: Record<VerificationStatus, string> = {
    verified: "The unfrozen model computes what the frozen graph did, and every trainable variable gets a gradient.",
    verified_with_warnings: "The outputs match, but not every check passed (see the gradient check): train with care.",
    not_verified: "Nothing was compared: the result may still be right, but nobody checked. "
      + "Convert again with verification on, or check the outputs yourself before training.",
    failed: f.problems.length ? "Verification found a problem (below): do not train this model as it is."
      : "The unfrozen model does not compute what the frozen graph did: do not train it as it is.",
  };
  if (f.status === "verified_with_warnings" && f.problems.length) explain.verified_with_warnings = "The outputs match, but see the warnings below: train with care.";
  return h("div.result", { "data-status": f.status },
    h("div.verdict", { "data-status": f.status }, status, h("span.verdict-text", null, explain[f.status]),
      f.problems.length ? h("ul.verdict-problems", null, ...f.problems.map((p) => h("li", null, p))) : null,
      f.note && f.status !== "verified" ? h("div.verdict-note", null, "Verifier's note: ", f.note) : null,
      actions && (f.status === "not_verified" || f.status === "failed") ? remedy(f, ins, actions) : null),
    h("div.facts", null,
      fact("Variables created", fmtInt(f.variables), "variables"),
      fact("Trainable parameters", fmtInt(f.trainableParams), "trainable"),
      fact("Max |frozen − unfrozen|", f.status === "not_verified" ? "not compared" : fmtDiff(f.maxDiff), "max-diff"),
      fact("Gradient check", gradText, "gradients", grad ? (grad.length ? h("span.chip", { "data-status": "verified_with_warnings" }, "missing") : h("span.chip", { "data-status": "verified" }, "ok")) : null),
      f.trainingPath ? fact("Training path", f.trainingPath, "training-path") : null,
      fact("Output", f.savedModel ?? "—", "out-dir"),
    ),
    f.savedModel ? h("div.snippets", null, ...snippets(f.savedModel, ins)) : null,
  );
}

/** One snippet per way this model can be trained (the inspection says which work). */
function snippets(savedModel: string, ins: Inspection | null): HTMLElement[] {
  const paths = ins?.training_paths;
  const tf2 = paths?.tf2_eager ?? true;
  const keras = paths?.keras ?? true;
  const out: HTMLElement[] = [];
  if (tf2) out.push(snippetBox("Fine-tune with TensorFlow (GradientTape)", tfSnippet(savedModel)));
  if (keras) out.push(snippetBox("Fine-tune with Keras", kerasSnippet(savedModel, ins)));
  if (!tf2 || !keras) {
    if (paths?.note) out.unshift(h("div.snippet-note", null, paths.note));
    out.push(snippetBox("Fine-tune in a TF1 Session", tf1Snippet(savedModel)));
  }
  return out;
}

function fact(label: string, value: string, key: string, extra?: HTMLElement | null): HTMLElement {
  return h("div.fact", { "data-fact": key }, h("div.fact-label", null, label), h("div.fact-value", null, value, extra ? " " : "", extra ?? null));
}
