// The selected model lives in the URL so a link can be shared. TensorBoard's own hash is
// "#unfreeze" (tab id first, then "&key=value" pairs, as in "#graphs&run=x"); the iframe is
// same-origin, so we add "unfreeze_model=ID" to the top window's hash. The iframe's own hash
// carries it too, for when the top window cannot be reached.
const KEY = "unfreeze_model";

function topWindow(): Window | null {
  try {
    const t = window.top;
    if (t && t !== window) { void t.location.hash; return t; }
  } catch { /* cross-origin: not reachable */ }
  return null;
}

function readFrom(hash: string): string | null {
  for (const part of hash.replace(/^#/, "").split("&")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq) === KEY) return decodeURIComponent(part.slice(eq + 1));
  }
  return null;
}

function withParam(hash: string, value: string | null, tab: string | null): string {
  const parts = hash.replace(/^#/, "").split("&").filter((p) => p && !p.startsWith(KEY + "="));
  if (tab && (parts.length === 0 || parts[0].includes("="))) parts.unshift(tab);
  if (value) parts.push(KEY + "=" + encodeURIComponent(value));
  return "#" + parts.join("&");
}

export function readSelectedModel(): string | null {
  const top = topWindow();
  return (top && readFrom(top.location.hash)) || readFrom(window.location.hash);
}

export function writeSelectedModel(id: string | null): void {
  const own = withParam(window.location.hash, id, null);
  if (own !== window.location.hash && !(own === "#" && !window.location.hash)) {
    history.replaceState(history.state, "", window.location.pathname + window.location.search + own);
  }
  const top = topWindow();
  if (!top) return;
  const next = withParam(top.location.hash, id, "unfreeze");
  if (next !== top.location.hash) {
    // replaceState: no hashchange event, so TensorBoard does not re-route the page.
    top.history.replaceState(top.history.state, "", top.location.pathname + top.location.search + next);
  }
}

/** URL of a run in TensorBoard's Graphs dashboard, for the top window. */
export function graphsRunUrl(run: string): string {
  const top = topWindow();
  const base = top ? top.location.pathname + top.location.search : "/";
  return base + "#graphs&run=" + encodeURIComponent(run);
}

/**
 * Shows `run` in TensorBoard's Graphs dashboard, in this window. TensorBoard 2.21 does not honour
 * "#graphs&run=…" on its own (the dashboard's run picker keeps its first run), so once the dashboard has
 * listed its runs, its run picker is set to this one. Without access to the top window: a new tab.
 */
export function openGraphsRun(run: string): void {
  const top = topWindow();
  const url = graphsRunUrl(run);
  if (!top) {
    window.open(url, "_blank", "noopener");
    return;
  }
  top.location.hash = "#graphs&run=" + encodeURIComponent(run);
  selectGraphsRun(top, run);
}

/** Sets the Graphs dashboard's run picker to `run` once it lists it (gives up after `timeoutMs`). */
export function selectGraphsRun(top: Window, run: string, timeoutMs = 20000): void {
  const until = Date.now() + timeoutMs;
  const tick = (): void => {
    try {
      const dash = top.document.querySelector("tf-graph-dashboard") as (HTMLElement & { shadowRoot: ShadowRoot | null }) | null;
      const controls = (dash?.shadowRoot ?? dash)?.querySelector?.("tf-graph-controls") as
        (HTMLElement & { datasets?: Array<{ name: string }>; set?: (k: string, v: unknown) => void; _selectedRunIndex?: number }) | null;
      const i = controls?.datasets?.findIndex((d) => d.name === run) ?? -1;
      if (controls && i >= 0) {
        if (controls._selectedRunIndex !== i) {
          if (controls.set) controls.set("_selectedRunIndex", i);
          else controls._selectedRunIndex = i;
        }
        return;
      }
    } catch { /* the dashboard is not there yet, or not reachable */ }
    if (Date.now() < until) top.setTimeout(tick, 200);
  };
  top.setTimeout(tick, 200);
}

export function openInTop(url: string, newTab: boolean): void {
  const top = topWindow();
  if (newTab || !top) window.open(url, "_blank", "noopener");
  else top.location.href = url;
}

/** A link to this tab with the model selected, for sharing. */
export function shareUrl(id: string): string {
  const top = topWindow();
  const loc = top ? top.location : window.location;
  return loc.origin + loc.pathname + loc.search + withParam("#unfreeze", id, "unfreeze");
}
