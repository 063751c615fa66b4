// Runs layoutView in a Web Worker (static/layout_worker.js, served by the plugin's own routes, so the iframe's
// 'self'-only CSP allows it). Falls back to the page's thread if no worker can be started.
import { Layout, LayoutCache, layoutView } from "./layout";
import type { View } from "./model";

export const WORKER_URL = "./static/layout_worker.js";

export class LayoutClient {
  private worker: Worker | null = null;
  private failed = false;
  private seq = 0;
  private pending = new Map<number, { resolve: (l: Layout) => void; reject: (e: Error) => void }>();
  private local = new Map<string, LayoutCache>();
  /** Where the last layout ran: "worker" or "main". */
  where: "worker" | "main" = "main";

  private start(): Worker | null {
    if (this.worker || this.failed) return this.worker;
    try {
      const w = new Worker(new URL(WORKER_URL, document.baseURI).href);
      w.onmessage = (e: MessageEvent<{ id: number; layout?: Layout; error?: string }>) => {
        const p = this.pending.get(e.data.id);
        if (!p) return;
        this.pending.delete(e.data.id);
        if (e.data.layout) p.resolve(e.data.layout);
        else p.reject(new Error(e.data.error ?? "layout failed"));
      };
      w.onerror = (e) => {
        // The worker could not load (or crashed): lay out here from now on, including what was pending.
        e.preventDefault?.();
        this.failed = true;
        this.worker = null;
        w.terminate();
        const waiting = [...this.pending.values()];
        this.pending.clear();
        for (const p of waiting) p.reject(new Error("worker unavailable"));
      };
      this.worker = w;
    } catch {
      this.failed = true;
    }
    return this.worker;
  }

  async layout(view: View, key: string): Promise<Layout> {
    const w = this.start();
    if (w) {
      const id = ++this.seq;
      try {
        const layout = await new Promise<Layout>((resolve, reject) => {
          this.pending.set(id, { resolve, reject });
          w.postMessage({ id, key, view: { units: view.units, clusters: view.clusters, edges: view.edges } });
        });
        this.where = "worker";
        return layout;
      } catch { /* fall through to the page's thread */ }
    }
    let cache = this.local.get(key);
    if (!cache) {
      this.local.clear();
      this.local.set(key, (cache = new Map()));
    }
    this.where = "main";
    return layoutView(view, cache);
  }
}
