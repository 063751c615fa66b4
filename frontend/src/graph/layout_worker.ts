// The layout runs here, off the page's thread: pan, zoom and the rest of the tab stay responsive while dagre
// works. Per-scope results are cached per graph, so opening a scope lays out only that scope's chain again.
import { layoutView, LayoutCache } from "./layout";
import type { View } from "./model";

const caches = new Map<string, LayoutCache>();

self.onmessage = (e: MessageEvent<{ id: number; key: string; view: Pick<View, "units" | "clusters" | "edges"> }>) => {
  const { id, key, view } = e.data;
  let cache = caches.get(key);
  if (!cache) {
    cache = new Map();
    caches.set(key, cache);
    while (caches.size > 4) caches.delete(caches.keys().next().value as string);
  }
  try {
    const layout = layoutView(view as View, cache);
    (self as unknown as Worker).postMessage({ id, layout });
  } catch (err) {
    (self as unknown as Worker).postMessage({ id, error: String((err as Error)?.message ?? err) });
  }
};
