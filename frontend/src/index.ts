// Entry point: TensorBoard's plugin page runs `import("./index.js").then(m => m.render())`.
import css from "./styles.css";
import { App } from "./app";

export function render(): void {
  const style = document.createElement("style");
  style.textContent = css;
  document.head.appendChild(style);
  document.body.classList.add("tbu");
  followTheme();
  const app = new App(document.body);
  (window as unknown as { unfreezeApp: App }).unfreezeApp = app;
  void app.start();
}

/** Dark when TensorBoard is (it sets class "dark-mode" on its own <body>), else when the browser prefers it. */
function followTheme(): void {
  let hostBody: HTMLElement | null = null;
  try {
    if (window.top && window.top !== window) hostBody = window.top.document.body;
  } catch { /* not reachable */ }
  const media = window.matchMedia?.("(prefers-color-scheme: dark)");
  const apply = (): void => {
    const dark = hostBody ? hostBody.classList.contains("dark-mode") : !!media?.matches;
    document.body.classList.toggle("dark", dark);
  };
  apply();
  if (hostBody) new MutationObserver(apply).observe(hostBody, { attributes: true, attributeFilter: ["class"] });
  else media?.addEventListener?.("change", apply);
}
