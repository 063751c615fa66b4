// The Unfreeze tab: models on the left; for the selected one, candidates, conversion,
// result, the frozen and unfrozen graphs side by side, and the history.
import { h, replace, fmtBytes, fmtInt, fmtTime } from "./dom";
import { api, HistoryEntry, Inspection, Job, Manifest, ModelInfo } from "./api";
import { CandidateTable } from "./panels/candidates";
import { resultFacts, resultPanel } from "./panels/result";
import { historyTable } from "./panels/history";
import { SideBySide } from "./graph/view";
import { graphsRunUrl, openGraphsRun, readSelectedModel, shareUrl, writeSelectedModel } from "./url";
import { VerificationStatus, verificationStatus, verificationText } from "./status";
import type { GraphData, Side } from "./graph/model";

const MODELS_POLL_MS = 4000;
const JOBS_POLL_MS = 600;

function latestKey(m: ModelInfo): string {
  return `${m.latest?.time ?? ""}|${m.latest?.job ?? ""}|${m.job?.id ?? ""}`;
}

const STATUS_TEXT: Record<string, string> = {
  frozen: "frozen", converting: "converting", converted: "converted", failed: "failed", invalid: "invalid",
};

/** The verification state of a model's latest successful conversion, or null. */
function modelVerification(m: ModelInfo): VerificationStatus | null {
  if (m.status !== "converted" || !m.latest?.ok) return null;
  return verificationStatus(m.latest.result?.verification) ?? "not_verified";
}

/** The status chip of a model: "converted" is never shown as plain success unless it was verified. */
function modelChip(m: ModelInfo): HTMLElement {
  const ver = modelVerification(m);
  const text = ver ? (ver === "verified" ? "converted · verified" : `converted · ${verificationText(ver)}`)
    : STATUS_TEXT[m.status] ?? m.status;
  return h("span.chip", { "data-status": m.status, "data-verification": ver ?? false, title: text }, text);
}

function fmtSeconds(ms: number): string {
  const s = ms / 1000;
  return s < 10 ? `${s.toFixed(1)} s` : `${Math.round(s)} s`;
}

export class App {
  private models: ModelInfo[] = [];
  private selected: string | null = readSelectedModel();
  private inspection: Inspection | null = null;
  private manifest: Manifest | null = null;
  private job: Job | null = null;
  private loadToken = 0;
  /** The latest conversion shown, to notice one made by someone else on the same logdir. */
  private shownLatest: string | null = null;
  /** The conversion whose result and graphs are shown (the latest, or one opened from the history). */
  private shownJob: string | null = null;
  private historyEntries: HistoryEntry[] = [];
  private historyModel: string | null = null;
  /** The graph view's requests, started with the candidates' when a model is selected (loadConversion takes them). */
  private prefetched: Prefetch | null = null;
  /** Settles when the selected model's candidates have arrived (or failed to). */
  private inspectionReady: Promise<void> = Promise.resolve();
  private kept: Record<string, "current" | "archived"> = {};

  private modelList = h("ul.model-list");
  /** One <li> per model, kept across refreshes: a refresh that changes nothing touches no DOM node. */
  private modelRows = new Map<string, { li: HTMLElement; sig: string }>();
  private headSig = "";
  /** Sub-steps the running job reported, with when each was first seen. */
  private steps: { job: string; list: Array<{ step: string; at: number }> } = { job: "", list: [] };
  private stepTimer = 0;
  private trailKey = "";
  private modelsNote = h("div.muted.small");
  private head = h("div.model-head");
  private table = new CandidateTable(() => this.updateConvertButton());
  private convertBtn = h("button.btn.primary", { on: { click: () => this.convert() } }, "Convert");
  private progress = h("div.progress", { hidden: true }, h("div.bar"), h("span.progress-text"));
  private stepTrail = h("ol.step-trail", { hidden: true });
  private convertMsg = h("div.convert-msg");
  private result = h("div");
  private compare: SideBySide;
  private history = h("div");
  private main: HTMLElement;
  private sections: Record<string, HTMLElement> = {};

  constructor(private root: HTMLElement) {
    this.compare = new SideBySide({
      runLink: (side) => this.runLink(side),
      weights: (name) => api.weights(this.selected!, name),
      otherModels: () => this.models.filter((m) => m.id !== this.selected && m.status !== "invalid").map((m) => m.id),
      drift: (other) => api.drift(this.selected!, other),
    });
    const section = (key: string, title: string, ...body: Array<HTMLElement | null>) =>
      (this.sections[key] = h("section.card", { "data-section": key }, h("h2", null, title), ...body));
    this.main = h("main.main", null,
      this.head,
      section("candidates", "Candidates", this.table.el,
        h("div.convert-bar", null, this.convertBtn, this.progress, this.convertMsg), this.stepTrail),
      section("result", "Result", this.result),
      section("compare", "Frozen and unfrozen, side by side", this.compare.el),
      section("history", "History", this.history),
    );
    replace(root,
      h("div.app", null,
        h("aside.sidebar", null,
          h("div.side-head", null, h("span", null, "Frozen models"),
            h("button.btn.icon", { title: "Refresh", "aria-label": "Refresh", on: { click: () => this.refreshModels() } }, "⟳")),
          this.modelList, this.modelsNote),
        this.main,
      ),
    );
    this.showSections(false);
  }

  async start(): Promise<void> {
    // A link that names a model (#unfreeze&unfreeze_model=…) starts its graphs and manifest before the model list
    // answers (if it turns out not to be converted, the two extra requests answer 404 at once).
    if (this.selected) this.prefetched = prefetch(this.selected, true);
    await this.refreshModels(true);
    setInterval(() => void this.refreshModels(), MODELS_POLL_MS);
    if (this.selected && this.models.some((m) => m.id === this.selected)) await this.select(this.selected);
    else if (this.models.length) await this.select(this.models[0].id);
    else this.renderEmpty();
  }

  // ---- model list ----

  /** `starting`: the first listing, before any model is shown (select() loads it; nothing to refresh yet). */
  private async refreshModels(starting = false): Promise<void> {
    try {
      this.models = await api.models();
      this.modelsNote.textContent = "";
    } catch (e) {
      this.modelsNote.textContent = `Cannot list models: ${(e as Error).message}`;
      return;
    }
    this.renderModelList();
    if (!this.selected && this.models.length) {
      await this.select(this.models[0].id);
      return;
    }
    const cur = this.models.find((m) => m.id === this.selected);
    const busy = this.job && (this.job.state === "queued" || this.job.state === "running");
    if (!starting && cur && cur.status !== "invalid" && !busy && latestKey(cur) !== this.shownLatest) {
      // Someone converted this model (another browser on the same logdir): show their result.
      const token = this.loadToken;
      if (cur.job && !this.job) await this.resumeJob(token);
      else await Promise.all([this.loadConversion(token), this.loadHistory(token)]);
    }
  }

  private renderModelList(): void {
    const list = this.modelList;
    if (!this.models.length) {
      this.modelRows.clear();
      if (!list.querySelector("li.empty")) {
        replace(list, h("li.muted.small.empty", null, "No .pb or .pbtxt under the logdir yet. Drop a frozen graph in and it shows up here."));
      }
      return;
    }
    list.querySelector("li.empty")?.remove();
    const ids = new Set(this.models.map((m) => m.id));
    for (const [id, row] of this.modelRows) {
      if (!ids.has(id)) { row.li.remove(); this.modelRows.delete(id); }
    }
    let prev: Element | null = null;
    for (const m of this.models) {
      let row = this.modelRows.get(m.id);
      if (!row) {
        const id = m.id;
        row = { li: h("li.model", { "data-model": id, on: { click: () => void this.select(id) } }), sig: "" };
        this.modelRows.set(id, row);
      }
      const sig = JSON.stringify([m.status, modelVerification(m), m.size, m.message ?? m.path, m.stale]);
      if (row.sig !== sig) {
        row.sig = sig;
        row.li.title = m.message ?? m.path;
        replace(row.li,
          h("div.model-name", null, m.id),
          h("div.model-meta", null, modelChip(m), h("span.muted", null, fmtBytes(m.size))),
        );
      }
      const active = m.id === this.selected;
      if (row.li.classList.contains("active") !== active) row.li.classList.toggle("active", active);
      const at: Element | null = prev ? prev.nextElementSibling : list.firstElementChild;
      if (at !== row.li) list.insertBefore(row.li, at);
      prev = row.li;
    }
    const cur = this.models.find((m) => m.id === this.selected);
    if (cur) this.renderHead(cur);
  }

  private renderEmpty(): void {
    this.showSections(false);
    replace(this.head, h("div.empty-state", null,
      h("h1", null, "Unfreeze"),
      h("p", null, "Put a frozen TensorFlow graph (.pb or .pbtxt) under the logdir; it appears on the left. "
        + "Review which constants become variables, convert, and compare the frozen and the unfrozen graph here."),
    ));
  }

  private showSections(on: boolean): void {
    for (const el of Object.values(this.sections)) el.hidden = !on;
  }

  // ---- one model ----

  async select(id: string): Promise<void> {
    const token = ++this.loadToken;
    if (id !== this.selected) this.resetScroll();
    this.selected = id;
    writeSelectedModel(id);
    this.renderModelList();
    const model = this.models.find((m) => m.id === id);
    if (!model) return;
    this.renderHead(model);
    this.manifest = null;
    this.inspection = null;
    replace(this.result, h("div.muted", null, "Not converted yet."));
    replace(this.history, h("div.muted", null, "Loading…"));
    replace(this.convertMsg);
    if (model.status === "invalid") {
      this.prefetched = null;
      this.showSections(false);
      return;
    }
    this.showSections(true);
    // The graphs (and the manifest) are fetched while the candidates are: loadConversion picks the requests up.
    if (this.prefetched?.id !== id) this.prefetched = prefetch(id, isConverted(model));
    // The candidates and the graphs load side by side: the graph view does not wait for the table (the result
    // panel, which shows how to train this model, waits for the candidates in loadConversion).
    const candidates = (async () => {
      try {
        const ins = await api.candidates(id);
        if (token !== this.loadToken) return;
        this.inspection = ins;
        performance.mark("unfreeze:candidates");
        this.table.setInspection(ins);
        performance.mark("unfreeze:table");
        // After a reload the table shows what the result below was converted from, not the recommendation.
        const req = model.latest?.ok ? model.latest.request : null;
        if (req) this.table.applySelection(req.only, req.trainable, req.exclude);
        this.renderHead(model);
      } catch (e) {
        if (token !== this.loadToken) return;
        replace(this.convertMsg, h("span.err", null, (e as Error).message));
      }
      this.updateConvertButton();
    })();
    this.inspectionReady = candidates;
    await Promise.all([candidates, this.loadConversion(token), this.loadHistory(token), this.resumeJob(token)]);
  }

  /** A newly chosen model starts at the top of the page, not where the previous one was scrolled to. */
  private resetScroll(): void {
    window.scrollTo(0, 0);
    this.main.scrollTop = 0;
    document.scrollingElement?.scrollTo?.(0, 0);
  }

  private renderHead(m: ModelInfo): void {
    const ins = this.inspection;
    const sig = JSON.stringify([m.id, m.status, modelVerification(m), m.size, m.path, m.message, ins?.model?.nodes ?? null, !!ins]);
    if (sig === this.headSig) return;
    this.headSig = sig;
    const tp = ins?.training_paths;
    const paths = tp ? [tp.tf2_eager && "TF2 eager", tp.keras && "Keras", tp.tf1_session && "TF1 session"].filter(Boolean).join(", ") : "";
    const share = h("button.btn.small", {
      title: "Copy a link that opens this tab with this model selected",
      on: {
        click: async () => {
          const url = shareUrl(m.id);
          try { await navigator.clipboard.writeText(url); share.textContent = "Link copied"; } catch { share.textContent = url; }
          setTimeout(() => (share.textContent = "Copy link"), 2000);
        },
      },
    }, "Copy link");
    replace(this.head,
      h("div.head-row", null,
        h("h1", null, m.id),
        modelChip(m),
        h("span.grow"),
        share,
      ),
      h("div.head-meta", null,
        h("span", { title: m.path }, m.path),
        h("span", null, fmtBytes(m.size)),
        ins?.model?.nodes != null ? h("span", null, `${fmtInt(ins.model.nodes)} nodes`) : null,
        ins ? h("span", null, `inputs: ${ins.inputs.map((i) => i.name).join(", ") || "—"}`) : null,
        ins ? h("span", null, `outputs: ${ins.outputs.map((o) => o.name).join(", ") || "—"}`) : null,
        ins?.control_flow && ins.control_flow !== "none" ? h("span", null, `control flow: ${ins.control_flow}`) : null,
        paths ? h("span", { title: tp?.note ?? "" }, `trains with: ${paths}`) : null,
      ),
      m.status === "invalid" || m.status === "failed" ? h("div.err", null, m.message ?? "") : null,
    );
  }

  private async loadConversion(token: number): Promise<void> {
    const model = this.models.find((m) => m.id === this.selected);
    let frozen = null;
    // The three requests at once (one after another they add up: ~2 s per graph on a 20k-node model), started
    // by select() when it is the one asking.
    const converted = isConverted(model);
    const pending = this.prefetched;
    this.prefetched = null;
    const { frozen: frozenP, manifest: manifestP, unfrozen: unfrozenP } =
      pending && pending.id === this.selected && (pending.converted || !converted) ? pending : prefetch(this.selected!, converted);
    try {
      frozen = await frozenP;
    } catch (e) {
      if (token === this.loadToken) replace(this.convertMsg, h("span.err", null, `Frozen graph: ${(e as Error).message}`));
    }
    const [manifest, unfrozen] = await Promise.all([manifestP, unfrozenP]);
    if (converted) this.manifest = manifest;
    if (token !== this.loadToken) return;
    this.shownLatest = model ? latestKey(model) : null;
    this.shownJob = model?.latest?.ok ? model.latest.job ?? null : null;
    const variableOf = new Map<string, string>();
    for (const v of this.manifest?.variables ?? []) variableOf.set(v.source, v.variable_name);
    this.compare.setVariableNames(variableOf);
    void this.compare.setData(frozen, unfrozen, `${this.selected}|${this.shownLatest ?? ""}`);
    await this.inspectionReady;
    if (token !== this.loadToken) return;
    const result = this.job?.state === "done" && this.job.result ? this.job.result : model?.latest?.ok ? model.latest.result : null;
    if (this.manifest || result) {
      const stale = model?.stale ? h("div.warn", null, "The model file changed after this conversion; convert again to refresh it.") : null;
      replace(this.result, stale, resultPanel(resultFacts(this.manifest, result), this.inspection, {
        reverify: (options) => void this.convert(options),
        uploadProbe: (file) => api.probe(this.selected!, file),
      }));
    } else if (model?.latest && !model.latest.ok) {
      replace(this.result, h("div.err", null, `The latest conversion failed: ${model.latest.error ?? "no message"}`));
    }
    this.renderHistory();
  }

  private async loadHistory(token: number): Promise<void> {
    try {
      const [entries, kept] = await Promise.all([
        api.history(this.selected!),
        api.conversions(this.selected!).catch(() => ({} as Record<string, "current" | "archived">)),
      ]);
      if (token !== this.loadToken) return;
      this.historyEntries = entries;
      this.historyModel = this.selected;
      this.kept = kept;
      this.renderHistory();
    } catch (e) {
      if (token === this.loadToken) replace(this.history, h("span.err", null, (e as Error).message));
    }
  }

  private renderHistory(): void {
    if (this.historyModel !== this.selected) return;
    replace(this.history, historyTable(this.historyEntries, {
      kept: this.kept, shown: this.shownJob, open: (entry) => void this.openConversion(entry),
    }));
  }

  /** Shows a conversion from the history: its result, its graphs and the selection it was made with. */
  private async openConversion(entry: HistoryEntry): Promise<void> {
    if (!this.selected || !entry.job) return;
    const token = this.loadToken;
    const model = this.models.find((m) => m.id === this.selected);
    if (this.kept[entry.job] === "current") {
      await this.loadConversion(token);
      if (token !== this.loadToken) return;
      if (entry.request) this.table.applySelection(entry.request.only, entry.request.trainable, entry.request.exclude);
      this.renderHistory();
      this.sections.result.scrollIntoView?.({ block: "start" });
      return;
    }
    let data;
    try {
      data = await api.conversion(this.selected, entry.job);
    } catch (e) {
      replace(this.convertMsg, h("span.err", null, (e as Error).message));
      return;
    }
    if (token !== this.loadToken) return;
    this.manifest = data.manifest;
    this.shownJob = entry.job;
    const back = h("button.btn.small", {
      on: {
        click: async () => {
          await this.loadConversion(this.loadToken);
          const latest = model?.latest;
          if (latest?.ok && latest.request) this.table.applySelection(latest.request.only, latest.request.trainable, latest.request.exclude);
          this.renderHistory();
        },
      },
    }, "Show the latest");
    replace(this.result,
      h("div.archived-note", { "data-job": entry.job }, `Showing an earlier conversion, made ${fmtTime(entry.time)}; its output is kept in ${data.manifest.out_dir ?? "—"}. `, back),
      resultPanel(resultFacts(data.manifest, entry.result), this.inspection, {
        reverify: (options) => void this.convert(options),
        uploadProbe: (file) => api.probe(this.selected!, file),
      }),
    );
    if (entry.request) this.table.applySelection(entry.request.only, entry.request.trainable, entry.request.exclude);
    const variableOf = new Map<string, string>();
    for (const v of data.manifest.variables ?? []) variableOf.set(v.source, v.variable_name);
    this.compare.setVariableNames(variableOf);
    void this.compare.setData(data.graphs.frozen, data.graphs.unfrozen, `${this.selected}|job:${entry.job}`);
    this.renderHistory();
    this.sections.result.scrollIntoView?.({ block: "start" });
  }

  private runLink(side: Side): { href: string; open: () => void } | null {
    if (!this.selected) return null;
    const model = this.models.find((m) => m.id === this.selected);
    const run = model?.runs?.[side] ?? `unfreeze/${this.selected}/${side}`;
    const href = graphsRunUrl(run);
    return { href, open: () => openGraphsRun(run) };
  }

  // ---- conversion ----

  private updateConvertButton(): void {
    const n = this.table.selection().only.length;
    const busy = this.job != null && (this.job.state === "queued" || this.job.state === "running");
    this.convertBtn.disabled = busy || n === 0 || !this.inspection;
    this.convertBtn.textContent = busy ? "Converting…" : `Convert ${n} constant${n === 1 ? "" : "s"}`;
  }

  private async convert(extra: { outputs?: string[]; probe?: string } = {}): Promise<void> {
    if (!this.selected) return;
    const sel = this.table.selection();
    replace(this.convertMsg);
    try {
      const { job } = await api.convert({ model: this.selected, only: sel.only, trainable: sel.trainable, verify: true, ...extra });
      this.job = { ...job, state: job.state ?? "queued", model: job.model ?? this.selected };
      this.showJob();
      void this.pollJob(this.loadToken);
    } catch (e) {
      replace(this.convertMsg, h("span.err", null, (e as Error).message));
    }
  }

  /** Picks up a conversion of this model that is already queued or running (started by anyone). */
  private async resumeJob(token: number): Promise<void> {
    try {
      const jobs = await api.jobs();
      if (token !== this.loadToken) return;
      const active = jobs.filter((j) => j.model === this.selected && (j.state === "queued" || j.state === "running"));
      if (active.length) {
        this.job = active[active.length - 1];
        this.showJob();
        void this.pollJob(token);
      } else {
        this.job = null;
        this.showJob();
      }
    } catch { /* the job list is a convenience here */ }
  }

  private async pollJob(token: number): Promise<void> {
    while (this.job && (this.job.state === "queued" || this.job.state === "running")) {
      await new Promise((r) => setTimeout(r, JOBS_POLL_MS));
      if (token !== this.loadToken) return;
      try {
        const jobs = await api.jobs();
        const j = jobs.find((x) => x.id === this.job!.id);
        if (j) this.job = j;
      } catch (e) {
        replace(this.convertMsg, h("span.err", null, `Lost track of the job: ${(e as Error).message}`));
      }
      this.showJob();
    }
    if (token !== this.loadToken || !this.job) return;
    if (this.job.state === "done") {
      await this.refreshModels();
      await Promise.all([this.loadConversion(token), this.loadHistory(token)]);
      this.sections.result.scrollIntoView?.({ block: "nearest" });
    } else if (this.job.state === "failed") {
      await this.refreshModels();
      await this.loadHistory(token);
    }
  }

  private showJob(): void {
    const j = this.job;
    this.updateConvertButton();
    const bar = this.progress.querySelector(".bar") as HTMLElement;
    const text = this.progress.querySelector(".progress-text") as HTMLElement;
    clearTimeout(this.stepTimer);
    if (!j) {
      this.progress.hidden = true;
      this.stepTrail.hidden = true;
      return;
    }
    this.progress.hidden = false;
    this.progress.dataset.state = j.state;
    const frac = j.state === "done" ? 1 : Math.max(0, Math.min(1, j.progress?.fraction ?? 0));
    bar.style.transform = `scaleX(${frac.toFixed(3)})`;
    // The sub-steps the conversion reports, each with how long it took (the current one: so far).
    if (this.steps.job !== j.id) this.steps = { job: j.id, list: [] };
    const list = this.steps.list;
    const now = Date.now();
    const step = j.progress?.step ?? "";
    if (step && j.state === "running" && list[list.length - 1]?.step !== step) list.push({ step, at: now });
    // A warm worker can finish between two polls: show at least the last step it reported.
    if (step && !list.length && (j.state === "done" || j.state === "failed")) list.push({ step, at: now });
    const running = j.state === "queued" || j.state === "running";
    const current = list[list.length - 1];
    const verification = j.state === "done" ? verificationStatus(j.result?.verification) ?? "not_verified" : null;
    if (verification) this.progress.dataset.verification = verification;
    else delete this.progress.dataset.verification;
    if (j.state === "done") {
      text.textContent = verification === "verified" ? "Done · verified" : `Done · ${verificationText(verification)}`;
    } else if (j.state === "failed") {
      text.textContent = "Failed";
    } else {
      text.textContent = `${j.state === "queued" ? "Queued" : "Converting"} ${Math.round(frac * 100)}%`
        + (current ? ` · ${current.step} · ${fmtSeconds(now - current.at)}` : "");
    }
    this.stepTrail.hidden = list.length === 0;
    const took = (i: number) => {
      const end = list[i + 1]?.at ?? (running ? now : (j.finished ? j.finished * 1000 : now));
      return ` ${fmtSeconds(Math.max(0, end - list[i].at))}`;
    };
    // The same steps as last time: only the live step's time changes (re-making the trail every second made the
    // page lay out and repaint while converting, on the cores the conversion needs).
    const trailKey = `${j.id}:${list.length}:${running}`;
    const lastTime = this.stepTrail.lastElementChild?.querySelector(".muted");
    if (trailKey === this.trailKey && lastTime && list.length) {
      lastTime.textContent = took(list.length - 1);
    } else {
      this.trailKey = trailKey;
      replace(this.stepTrail, ...list.map((s, i) => {
        const live = running && i === list.length - 1;
        return h("li", { "data-step": s.step, class: live ? "live" : "" }, s.step, h("span.muted", null, took(i)));
      }));
    }
    if (running) this.stepTimer = window.setTimeout(() => this.showJob(), 1000);
    if (j.state === "failed") replace(this.convertMsg, h("span.err", null, j.error ?? "The conversion failed."));
    else if (j.state === "done") {
      const msg = verification === "verified" ? h("span.ok", null, `Converted and verified at ${fmtTime(Date.now())}.`)
        : h("span.warn", null, `Converted at ${fmtTime(Date.now())}, ${verificationText(verification)}: see Result.`);
      replace(this.convertMsg, msg);
    }
  }
}

interface Prefetch {
  id: string;
  converted: boolean;
  frozen: Promise<GraphData>;
  manifest: Promise<Manifest | null>;
  unfrozen: Promise<GraphData | null>;
}

function isConverted(model: ModelInfo | undefined): boolean {
  return model?.status === "converted" || !!model?.latest?.ok;
}

/** The frozen graph, and for a converted model its manifest and unfrozen graph, requested at once. */
function prefetch(id: string, converted: boolean): Prefetch {
  const frozen = api.graph(id, "frozen");
  frozen.catch(() => undefined); // awaited (and reported) by loadConversion
  return {
    id,
    converted,
    frozen,
    manifest: converted ? api.manifest(id).catch(() => null) : Promise.resolve(null),
    unfrozen: converted ? api.graph(id, "unfrozen").catch(() => null) : Promise.resolve(null),
  };
}
