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
  /** Where the last layout came from: the worker, the page's thread, or the browser's store of earlier layouts. */
  where: "worker" | "main" | "stored" = "main";

  /** Starts the worker now, so that its script is loaded and compiled while the graphs are still being fetched. */
  warm(): void {
    this.start();
  }

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
    // A layout is a function of the view alone: one laid out before (this page, or an earlier visit) is reused.
    const storeKey = viewKey(view);
    const stored = readStored(storeKey);
    if (stored) {
      this.where = "stored";
      return stored;
    }
    const layout = await this.compute(view, key);
    writeStored(storeKey, layout);
    return layout;
  }

  private async compute(view: View, key: string): Promise<Layout> {
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

// ---- layouts kept in the browser (localStorage), so a returning user does not wait for dagre again ----

/** Part of every stored layout's key: bump it when the layout algorithm changes, so older layouts are not reused. */
const LAYOUT_VERSION = 1;
const STORE_PREFIX = "unfreeze.layout.";
const STORE_INDEX = "unfreeze.layouts";
/** Layouts kept, newest first; one bigger than STORE_MAX_CHARS (an expanded 20k-node graph) is not kept. */
const STORE_KEEP = 12;
const STORE_MAX_CHARS = 1 << 20;

/** A hash (FNV-1a, 2 × 32 bits) of what the layout depends on: the units, the open scopes and the edges. */
export function viewKey(view: Pick<View, "units" | "clusters" | "edges">): string {
  const text = JSON.stringify([LAYOUT_VERSION, [...view.units.values()], view.clusters, [...view.edges.keys()]]);
  let a = 0x811c9dc5, b = 0x01000193 ^ text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
  }
  return (a >>> 0).toString(36) + (b >>> 0).toString(36) + text.length.toString(36);
}

function storage(): Storage | null {
  try {
    return window.localStorage ?? null;
  } catch {
    return null; // storage blocked (privacy settings, sandboxed frame)
  }
}

function readStored(key: string): Layout | null {
  const st = storage();
  if (!st) return null;
  try {
    const text = st.getItem(STORE_PREFIX + key);
    if (!text) return null;
    const o = JSON.parse(text);
    return {
      boxes: new Map(o.boxes), clusters: new Map(o.clusters), edges: new Map(o.edges),
      width: o.width, height: o.height, millis: 0,
    };
  } catch {
    return null;
  }
}

function writeStored(key: string, layout: Layout): void {
  const st = storage();
  if (!st) return;
  try {
    const text = JSON.stringify({
      boxes: [...layout.boxes], clusters: [...layout.clusters], edges: [...layout.edges],
      width: layout.width, height: layout.height,
    });
    if (text.length > STORE_MAX_CHARS) return;
    const index: string[] = JSON.parse(st.getItem(STORE_INDEX) ?? "[]").filter((k: unknown) => k !== key);
    index.unshift(key);
    for (const old of index.splice(STORE_KEEP)) st.removeItem(STORE_PREFIX + old);
    st.setItem(STORE_PREFIX + key, text);
    st.setItem(STORE_INDEX, JSON.stringify(index));
  } catch {
    /* quota exceeded or storage blocked: the layout is simply computed again next time */
  }
}
