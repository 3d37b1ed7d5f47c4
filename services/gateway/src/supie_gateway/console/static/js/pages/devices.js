// Badges online (and seen lately): group, mode, gateway replica, language, last seen; live.
import { api } from "../api.js";
import { ago, clear, debounce, h, when } from "../dom.js";
import { t } from "../i18n.js";
import { LiveFeed } from "../live.js";

export function renderDevices(view) {
  const box = h("div", { id: "devices" });
  async function load() {
    const data = await api("/supie/devices");
    if (!data.items.length) { clear(box).append(h("p", { class: "empty", text: t("devices.none") })); return; }
    const headers = ["col.device", "col.online", "col.group", "col.mode", "col.gateway", "col.language", "col.lastSeen", "col.protocol"];
    clear(box).append(h("table", { id: "device-table" },
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { text: t(x) })))),
      h("tbody", {}, data.items.map((d) => h("tr", { dataset: { device: d.deviceId, online: d.online ? "1" : "0" } },
        h("td", { class: "mono", text: d.deviceId }),
        h("td", {}, h("span", { class: `pill ${d.online ? "on" : "off"}`, text: t(d.online ? "online" : "offline") })),
        h("td", {}, d.group ? h("a", { href: `/console/tasks?groupKey=${encodeURIComponent(d.group)}`, text: d.group }) : "–"),
        h("td", { class: "mode", text: d.mode || "–" }),
        h("td", { class: "mono", text: d.gateway || "–" }),
        h("td", { text: d.language || "–" }),
        h("td", { title: when(d.lastSeen), text: ago(d.lastSeen) }),
        h("td", { text: d.protocol ?? "–" }),
      ))),
    ));
  }
  const reload = debounce(() => load().catch(() => {}), 250);
  view.append(h("h1", { text: t("devices.title") }), h("section", { class: "card" }, box));
  const feed = new LiveFeed(["devices"], { device: reload, resync: reload });
  load().catch((err) => { box.textContent = err.message; });
  return () => feed.close();
}
