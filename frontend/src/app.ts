// The Unfreeze tab: models on the left; for the selected one, candidates, conversion,
// result, the frozen and unfrozen graphs side by side, and the history.
import { h, replace, fmtBytes, fmtInt, fmtTime } from "./dom";
import { api, Inspection, Job, Manifest, ModelInfo } from "./api";
import { CandidateTable } from "./panels/candidates";
import { resultFacts, resultPanel } from "./panels/result";
import { historyTable } from "./panels/history";
import { SideBySide } from "./graph/view";
import { graphsRunUrl, openInTop, readSelectedModel, shareUrl, writeSelectedModel } from "./url";
import type { Side } from "./graph/model";

const MODELS_POLL_MS = 4000;
const JOBS_POLL_MS = 600;

function latestKey(m: ModelInfo): string {
  return `${m.latest?.time ?? ""}|${m.latest?.job ?? ""}|${m.job?.id ?? ""}`;
}

const STATUS_TEXT: Record<string, string> = {
  frozen: "frozen", converting: "converting", converted: "converted", failed: "failed", invalid: "invalid",
};

export class App {
  private models: ModelInfo[] = [];
  private selected: string | null = readSelectedModel();
  private inspection: Inspection | null = null;
  private manifest: Manifest | null = null;
  private job: Job | null = null;
  private loadToken = 0;
  /** The latest conversion shown, to notice one made by someone else on the same logdir. */
  private shownLatest: string | null = null;

  private modelList = h("ul.model-list");
  private modelsNote = h("div.muted.small");
  private head = h("div.model-head");
  private table = new CandidateTable(() => this.updateConvertButton());
  private convertBtn = h("button.btn.primary", { on: { click: () => this.convert() } }, "Convert");
  private progress = h("div.progress", { hidden: true }, h("div.bar"), h("span.progress-text"));
  private convertMsg = h("div.convert-msg");
  private result = h("div");
  private compare: SideBySide;
  private history = h("div");
  private main: HTMLElement;
  private sections: Record<string, HTMLElement> = {};

  constructor(private root: HTMLElement) {
    this.compare = new SideBySide({ runLink: (side) => this.runLink(side) });
    const section = (key: string, title: string, ...body: Array<HTMLElement | null>) =>
      (this.sections[key] = h("section.card", { "data-section": key }, h("h2", null, title), ...body));
    this.main = h("main.main", null,
      this.head,
      section("candidates", "Candidates", this.table.el,
        h("div.convert-bar", null, this.convertBtn, this.progress, this.convertMsg)),
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
    await this.refreshModels();
    setInterval(() => void this.refreshModels(), MODELS_POLL_MS);
    if (this.selected && this.models.some((m) => m.id === this.selected)) await this.select(this.selected);
    else if (this.models.length) await this.select(this.models[0].id);
    else this.renderEmpty();
  }

  // ---- model list ----

  private async refreshModels(): Promise<void> {
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
    if (cur && cur.status !== "invalid" && !busy && latestKey(cur) !== this.shownLatest) {
      // Someone converted this model (another browser on the same logdir): show their result.
      const token = this.loadToken;
      if (cur.job && !this.job) await this.resumeJob(token);
      else await Promise.all([this.loadConversion(token), this.loadHistory(token)]);
    }
  }

  private renderModelList(): void {
    if (!this.models.length) {
      replace(this.modelList, h("li.muted.small", null, "No .pb or .pbtxt under the logdir yet. Drop a frozen graph in and it shows up here."));
      return;
    }
    replace(this.modelList, ...this.models.map((m) => h("li", {
      class: "model" + (m.id === this.selected ? " active" : ""), "data-model": m.id, title: m.message ?? m.path,
      on: { click: () => void this.select(m.id) },
    },
      h("div.model-name", null, m.id),
      h("div.model-meta", null,
        h("span.chip", { "data-status": m.status }, STATUS_TEXT[m.status] ?? m.status),
        h("span.muted", null, fmtBytes(m.size)),
      ),
    )));
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
      this.showSections(false);
      return;
    }
    this.showSections(true);
    try {
      const ins = await api.candidates(id);
      if (token !== this.loadToken) return;
      this.inspection = ins;
      this.table.setInspection(ins);
      this.renderHead(model);
    } catch (e) {
      if (token !== this.loadToken) return;
      replace(this.convertMsg, h("span.err", null, (e as Error).message));
    }
    this.updateConvertButton();
    await Promise.all([this.loadConversion(token), this.loadHistory(token), this.resumeJob(token)]);
  }

  private renderHead(m: ModelInfo): void {
    const ins = this.inspection;
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
        h("span.chip", { "data-status": m.status }, STATUS_TEXT[m.status] ?? m.status),
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
    let unfrozen = null;
    let frozen = null;
    try {
      frozen = await api.graph(this.selected!, "frozen");
    } catch (e) {
      if (token === this.loadToken) replace(this.convertMsg, h("span.err", null, `Frozen graph: ${(e as Error).message}`));
    }
    if (model?.status === "converted" || model?.latest?.ok) {
      try {
        this.manifest = await api.manifest(this.selected!);
      } catch { this.manifest = null; }
      try {
        unfrozen = await api.graph(this.selected!, "unfrozen");
      } catch { unfrozen = null; }
    }
    if (token !== this.loadToken) return;
    this.shownLatest = model ? latestKey(model) : null;
    const result = this.job?.state === "done" && this.job.result ? this.job.result : model?.latest?.ok ? model.latest.result : null;
    if (this.manifest || result) {
      const stale = model?.stale ? h("div.warn", null, "The model file changed after this conversion; convert again to refresh it.") : null;
      replace(this.result, stale, resultPanel(resultFacts(this.manifest, result), this.inspection));
    } else if (model?.latest && !model.latest.ok) {
      replace(this.result, h("div.err", null, `The latest conversion failed: ${model.latest.error ?? "no message"}`));
    }
    const variableOf = new Map<string, string>();
    for (const v of this.manifest?.variables ?? []) variableOf.set(v.source, v.variable_name);
    this.compare.setVariableNames(variableOf);
    this.compare.setData(frozen, unfrozen);
  }

  private async loadHistory(token: number): Promise<void> {
    try {
      const entries = await api.history(this.selected!);
      if (token === this.loadToken) replace(this.history, historyTable(entries));
    } catch (e) {
      if (token === this.loadToken) replace(this.history, h("span.err", null, (e as Error).message));
    }
  }

  private runLink(side: Side): { href: string; open: () => void } | null {
    if (!this.selected) return null;
    const model = this.models.find((m) => m.id === this.selected);
    const run = model?.runs?.[side] ?? `unfreeze/${this.selected}/${side}`;
    const href = graphsRunUrl(run);
    return { href, open: () => openInTop(href, true) };
  }

  // ---- conversion ----

  private updateConvertButton(): void {
    const n = this.table.selection().only.length;
    const busy = this.job != null && (this.job.state === "queued" || this.job.state === "running");
    this.convertBtn.disabled = busy || n === 0 || !this.inspection;
    this.convertBtn.textContent = busy ? "Converting…" : `Convert ${n} constant${n === 1 ? "" : "s"}`;
  }

  private async convert(): Promise<void> {
    if (!this.selected) return;
    const sel = this.table.selection();
    replace(this.convertMsg);
    try {
      const { job } = await api.convert({ model: this.selected, only: sel.only, trainable: sel.trainable, verify: true });
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
    if (!j) {
      this.progress.hidden = true;
      return;
    }
    this.progress.hidden = false;
    this.progress.dataset.state = j.state;
    const frac = j.state === "done" ? 1 : Math.max(0, Math.min(1, j.progress?.fraction ?? 0));
    bar.style.width = `${Math.round(frac * 100)}%`;
    const step = j.progress?.step ? ` · ${j.progress.step}` : "";
    text.textContent = j.state === "done" ? "Done" : j.state === "failed" ? "Failed" : `${j.state === "queued" ? "Queued" : "Converting"} ${Math.round(frac * 100)}%${step}`;
    if (j.state === "failed") replace(this.convertMsg, h("span.err", null, j.error ?? "The conversion failed."));
    else if (j.state === "done") replace(this.convertMsg, h("span.ok", null, `Converted at ${fmtTime(Date.now())}.`));
  }
}
