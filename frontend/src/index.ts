// Entry point: TensorBoard's plugin page runs `import("./index.js").then(m => m.render())`.
import css from "./styles.css";
import { App } from "./app";

export function render(): void {
  const style = document.createElement("style");
  style.textContent = css;
  document.head.appendChild(style);
  document.body.classList.add("tbu");
  const app = new App(document.body);
  (window as unknown as { unfreezeApp: App }).unfreezeApp = app;
  void app.start();
}
