// The plugin's routes, relative to the iframe page (its <base> is data/plugin/unfreeze/).
import type { GraphData } from "./graph/model";

export type ModelStatus = "frozen" | "converting" | "converted" | "failed" | "invalid";

/** What a finished job reports (also the `result` of a history record). */
export interface JobResult {
  variables?: number;
  trainable_variables?: number;
  parameters?: number;
  trainable_parameters?: number;
  verification?: { status?: string; performed?: boolean; passed?: boolean; max_abs_diff?: number | null; note?: string; gradients_missing?: number; [k: string]: unknown };
  out_dir?: string;
  saved_model?: string;
  runs?: { frozen?: string | null; unfrozen?: string | null };
  warnings?: string[];
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
  /** Unix times (s). */
  created?: number | null;
  started?: number | null;
  finished?: number | null;
}

export interface Manifest {
  variables?: Array<{ variable_name: string; source: string; role: string; trainable: boolean; dtype: string; shape: number[] | null }>;
  totals?: { variables?: number; trainable_variables?: number; parameters?: number; trainable_parameters?: number };
  verification?: {
    status?: string;
    performed?: boolean;
    note?: string;
    outputs?: Record<string, number | { max_abs_diff?: number | null; passed?: boolean } | null>;
    max_abs_diff?: number | null;
    passed?: boolean;
    gradients?: { checked?: number; missing?: string[]; note?: string; [k: string]: unknown };
    training_path?: string;
    [k: string]: unknown;
  };
  out_dir?: string;
  saved_model?: string;
  [k: string]: unknown;
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

export interface ConversionRequest {
  only?: string[] | null;
  exclude?: string[];
  trainable?: Record<string, boolean>;
  verify?: boolean;
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
  async convert(body: { model: string; only: string[]; trainable: Record<string, boolean>; verify: boolean; outputs?: string[] }): Promise<{ job: Job }> {
    const r = await fetch("./convert", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-XSRF-Protected": "1" },
      body: JSON.stringify(body),
    });
    if (!r.ok) throw new HttpError(r.status, (await r.text()).trim() || `convert: HTTP ${r.status}`);
    return r.json();
  },
};
