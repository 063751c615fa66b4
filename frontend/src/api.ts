// The plugin's routes, relative to the iframe page (its <base> is data/plugin/unfreeze/).
import type { GraphData } from "./graph/model";

export type ModelStatus = "frozen" | "converting" | "converted" | "failed" | "invalid";

// The conversion's contract (tb_unfreeze/contract.py; schemas in docs/schema/, described in docs/contract.md).
// tests/test_contract.py checks that these interfaces name exactly the fields the Python classes write.

export type VerificationStatus = "verified" | "verified_with_warnings" | "not_verified" | "failed";

/** tb_unfreeze.request/1: ConversionRequest.to_json(); POST /convert sends it with `model` added. */
export interface ConversionRequest {
  schema?: "tb_unfreeze.request/1";
  only: string[] | null;
  exclude: string[];
  trainable: Record<string, boolean>;
  inputs: string[] | null;
  outputs: string[] | null;
  verify: boolean;
  /** Over HTTP: the id POST /probe answered with; in a manifest or history line: the stored file. */
  probe: string | null;
  dequantize: boolean;
}

/** Verification.summary_json(): what a job, a history line and the model list carry. */
export interface VerificationSummary {
  status: VerificationStatus;
  requested: boolean;
  performed: boolean;
  passed: boolean;
  note: string;
  problems: string[];
  max_abs_diff: number | null;
  gradients_checked: number;
  gradients_missing: number;
  gradient_errors: number;
  finite_difference: boolean | null;
}

/** ConversionResult.summary_json() plus the runs: what a finished job reports (also a history record's `result`). */
export interface JobResult {
  variables: number;
  trainable_variables: number;
  parameters: number;
  trainable_parameters: number;
  verification: VerificationSummary;
  out_dir: string;
  saved_model: string;
  runs: { frozen?: string | null; unfrozen?: string | null };
  warnings?: string[];
}

/** POST /probe: an uploaded .npz of probe inputs, checked against the model's inputs. */
export interface ProbeUpload {
  probe: string;
  inputs: Record<string, { shape: number[]; dtype: string }>;
  missing: string[];
}

export interface ModelInfo {
  id: string;
  path: string;
  size?: number;
  mtime?: number;
  status: ModelStatus;
  message?: string | null;
  /** The newest history record, or null. */
  latest?: HistoryEntry | null;
  totals?: Record<string, number>;
  stale?: boolean;
  job?: Job | null;
  runs?: { frozen?: string | null; unfrozen?: string | null };
}

export interface Candidate {
  name: string;
  tensor?: string;
  role: string;
  trainable: boolean;
  recommended: boolean;
  dtype: string;
  shape: number[] | null;
  size: number;
  nbytes: number;
  variable_name: string;
  reason: string;
  recommendation?: string;
  evidence?: string;
}

export interface Inspection {
  model: { path: string; format?: string; size?: number; nodes?: number };
  inputs: Array<{ name: string; dtype: string; shape: number[] | null; kind?: string; unused?: boolean }>;
  outputs: Array<{ name: string; op: string }>;
  control_flow?: string;
  training_paths?: { tf2_eager?: boolean; keras?: boolean; tf1_session?: boolean; note?: string };
  candidates: Candidate[];
  totals?: Record<string, number>;
}

export interface Job {
  id: string;
  model: string;
  state: "queued" | "running" | "done" | "failed";
  progress?: { fraction?: number; step?: string };
  error?: string | null;
  result?: JobResult | null;
  request?: ConversionRequest;
  /** Unix times (s). */
  created?: number | null;
  started?: number | null;
  finished?: number | null;
}

export interface ManifestVariable {
  variable_name: string;
  source: string;
  role: string;
  trainable: boolean;
  dtype: string;
  shape: number[];
  size: number;
  checkpoint_key: string;
}

/** verify.verify_conversion's record (its scalar facts are VerificationSummary's). */
export interface ManifestVerification {
  status: VerificationStatus;
  performed: boolean;
  passed: boolean;
  requested?: boolean;
  note?: string;
  problems?: string[];
  max_abs_diff?: number | null;
  outputs?: Record<string, { max_abs_diff: number | null; passed: boolean; tolerance?: number; note?: string }>;
  outputs_finite?: boolean;
  gradients?: { checked: number; missing: string[]; errors: string[]; finite: boolean; finite_difference: Record<string, unknown> | null; note?: string };
}

/** tb_unfreeze.manifest/2: ConversionResult.to_json(), the `unfreeze.json` of an output folder. */
export interface Manifest {
  schema: string;
  source: { path: string; sha256: string; size: number; format: string };
  out_dir: string;
  saved_model: string;
  saved_model_tf1: string;
  unfrozen_graph: string;
  request: ConversionRequest;
  dequantized: boolean;
  variables: ManifestVariable[];
  totals: { variables: number; trainable_variables: number; parameters: number; trainable_parameters: number };
  removed_nodes: string[];
  inputs: Array<{ name: string; dtype: string; shape: number[] | null; kind: string; default?: number | boolean | null }>;
  input_defaults: Record<string, number | boolean>;
  outputs: string[];
  trainable_outputs: string[];
  output_notes: Record<string, string>;
  optional_inputs: string[];
  notes: string[];
  signature: { inputs: Record<string, string>; outputs: Record<string, string>; optional_inputs?: Record<string, string> };
  control_flow: string;
  loops: Array<Record<string, unknown>>;
  training_paths: { tf2_eager?: boolean; keras?: boolean; tf1_session?: boolean; note?: string };
  verification: ManifestVerification;
  versions: Record<string, string>;
  timings: Record<string, number>;
  runs?: Record<string, string>;
  fine_tuned_from?: string;
  archived?: { job: string; from: string };
}

/** GET /weights: a constant's (or a variable's initial) values, summarized. */
export interface WeightStats {
  name: string;
  source: string;
  variable?: string;
  trainable?: boolean;
  dtype: string | null;
  shape: number[];
  size: number;
  min: number | null;
  max: number | null;
  mean: number | null;
  std: number | null;
  zeros: number;
  nonfinite: number;
  histogram: { edges: number[]; counts: number[] } | null;
  first: Array<number | null>;
  note?: string;
}

/** GET /conversion: one kept conversion (the current one or an earlier, archived one). */
export interface KeptConversion {
  job: string;
  state: "current" | "archived";
  manifest: Manifest;
  graphs: { frozen: GraphData; unfrozen: GraphData };
}

/** GET /drift: how far each weight moved between two frozen graphs. */
export interface Drift {
  model: string;
  other: string;
  weights: Array<{ name: string; shape: number[]; size: number; max_abs_diff: number; mean_abs_diff: number; relative: number | null; changed: boolean }>;
  compared: number;
  changed: number;
  only_a: string[];
  only_b: string[];
  mismatched: Array<{ name: string }>;
}

export interface HistoryEntry {
  time: number | string;
  model?: string;
  job?: string;
  client?: string;
  user_agent?: string;
  request?: ConversionRequest;
  ok?: boolean;
  result?: JobResult | null;
  error?: string | null;
  seconds?: number;
}

export class HttpError extends Error {
  constructor(readonly status: number, message: string) { super(message); }
}

async function get<T>(route: string): Promise<T> {
  const r = await fetch(route, { headers: { Accept: "application/json" } });
  if (!r.ok) throw new HttpError(r.status, (await r.text()).trim() || `${route}: HTTP ${r.status}`);
  return r.json() as Promise<T>;
}

const q = encodeURIComponent;

/** The routes wrap lists in an object ({"models": [...]}); a bare list is accepted too. */
function unwrap<T>(key: string) {
  return (r: unknown): T[] => (Array.isArray(r) ? r : ((r as Record<string, T[]>)?.[key] ?? [])) as T[];
}

export const api = {
  models: () => get<unknown>("./models").then(unwrap<ModelInfo>("models")),
  candidates: (model: string) => get<Inspection>(`./candidates?model=${q(model)}`),
  jobs: () => get<unknown>("./jobs").then(unwrap<Job>("jobs")),
  history: (model: string) => get<unknown>(`./history?model=${q(model)}`).then(unwrap<HistoryEntry>("history")),
  graph: (model: string, which: "frozen" | "unfrozen") => get<GraphData>(`./graph?model=${q(model)}&which=${which}`),
  manifest: (model: string) => get<Manifest>(`./manifest?model=${q(model)}`),
  conversions: (model: string) => get<{ conversions: Record<string, "current" | "archived"> }>(`./conversions?model=${q(model)}`)
    .then((r) => r.conversions ?? {}),
  conversion: (model: string, job: string) => get<KeptConversion>(`./conversion?model=${q(model)}&job=${q(job)}`),
  drift: (model: string, other: string) => get<Drift>(`./drift?model=${q(model)}&other=${q(other)}`),
  weights: (model: string, node: string) => get<WeightStats>(`./weights?model=${q(model)}&node=${q(node)}`),
  async probe(model: string, file: Blob): Promise<ProbeUpload> {
    const r = await fetch(`./probe?model=${q(model)}`, {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream", "X-XSRF-Protected": "1" },
      body: file,
    });
    if (!r.ok) throw new HttpError(r.status, (await r.text()).trim() || `probe: HTTP ${r.status}`);
    return r.json();
  },
  async convert(body: Partial<ConversionRequest> & { model: string }): Promise<{ job: Job }> {
    const r = await fetch("./convert", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-XSRF-Protected": "1" },
      body: JSON.stringify(body),
    });
    if (!r.ok) throw new HttpError(r.status, (await r.text()).trim() || `convert: HTTP ${r.status}`);
    return r.json();
  },
};
