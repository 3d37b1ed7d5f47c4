// Plain, visible status lines (lost live connection, 401, 429, ...), one per key.
import { h } from "./dom.js";

const shown = new Map();

export function banner(key, text, kind = "warn") {
  const box = document.getElementById("banners");
  let el = shown.get(key);
  if (!el) {
    el = h("div", { class: `banner ${kind}`, dataset: { banner: key } });
    shown.set(key, el);
    box.append(el);
  }
  el.className = `banner ${kind}`;
  el.textContent = text;
}

export function unbanner(key) {
  const el = shown.get(key);
  if (el) { el.remove(); shown.delete(key); }
}
