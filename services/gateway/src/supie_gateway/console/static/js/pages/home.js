// Home: search, meetings in progress, recent meetings, online badges by group and mode; all
// kept current by the live feed (meetings, devices).
import { api } from "../api.js";
import { ago, clear, clock, debounce, h, when } from "../dom.js";
import { t } from "../i18n.js";
import { LiveFeed } from "../live.js";

function meetingLink(sessionId, text) {
  return h("a", { href: `/console/meetings/${encodeURIComponent(sessionId)}`, text: text || sessionId });
}

function table(headers, rows, emptyText, id) {
  if (!rows.length) return h("p", { class: "empty", id, text: emptyText });
  return h("table", { id },
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { text: t(x) })))),
    h("tbody", {}, rows),
  );
}

export function renderHome(view) {
  const searchBox = h("input", { type: "search", id: "search-q", name: "q", placeholder: t("search.placeholder"), "aria-label": t("search.go") });
  const results = h("div", { id: "search-results" });
  const active = h("div", { id: "active" });
  const recent = h("div", { id: "recent" });
  const badges = h("div", { id: "badges" });
  const counts = new Map(); // sessionId -> the segments cell

  async function search(q) {
    if (!q.trim()) { clear(results); return; }
    const data = await api(`/supie/meetings/search?${new URLSearchParams({ q, limit: "20" })}`);
    clear(results);
    if (!data.items.length) {
      results.append(h("p", { class: "empty", text: `${t("search.none")} “${q}”.` }));
      return;
    }
    results.append(h("p", { class: "muted", text: `${data.total}${data.totalCapped ? "+" : ""} ${t("search.results")}` }));
    for (const hit of data.items) {
      results.append(h("div", { class: "hit", dataset: { session: hit.sessionId } },
        meetingLink(hit.sessionId, hit.title || hit.sessionId), " ",
        h("span", { class: "muted", text: `· ${hit.deviceId} · ${when(hit.endedAt)} · ${clock(hit.durationMs)}` }),
        hit.snippet ? h("div", { class: "snippet", text: hit.snippet }) : null,
      ));
    }
  }

  async function loadActive() {
    const data = await api("/supie/meetings/active");
    counts.clear();
    const rows = data.items.map((m) => {
      const cell = h("td", { class: "segments", text: String(m.segmentsCount) });
      counts.set(m.sessionId, cell);
      return h("tr", { dataset: { session: m.sessionId } },
        h("td", {}, meetingLink(m.sessionId, m.deviceId)),
        h("td", { text: when(m.startedAt) }),
        cell,
        h("td", {}, m.status === "active"
          ? h("span", { class: "pill live", text: t("live") })
          : h("span", { class: "pill", text: t(`status.${m.status}`) })),
      );
    });
    clear(active).append(table(["col.device", "col.started", "col.segments", "col.status"], rows, t("home.noActive"), "active-table"));
  }

  async function loadRecent() {
    const items = await api("/supie/meetings/recent?limit=20");
    const rows = items.map((m) => h("tr", { dataset: { session: m.sessionId } },
      h("td", {}, meetingLink(m.sessionId, m.title || m.sessionId)),
      h("td", { class: "mono", text: m.deviceId || "" }),
      h("td", { text: when(m.endedAt) }),
      h("td", { text: clock(m.durationMs || 0) }),
      h("td", { text: String(m.bulletsLength ?? 0) }),
    ));
    clear(recent).append(table(["col.title", "col.device", "col.when", "col.duration", "col.bullets"], rows, t("home.noRecent"), "recent-table"));
  }

  async function loadBadges() {
    const data = await api("/supie/devices");
    const online = data.items.filter((d) => d.online);
    clear(badges);
    if (!online.length) { badges.append(h("p", { class: "empty", text: t("home.noBadges") })); return; }
    const groups = new Map();
    for (const d of online) {
      const g = d.group || "–";
      if (!groups.has(g)) groups.set(g, []);
      groups.get(g).push(d);
    }
    for (const [g, devices] of [...groups.entries()].sort()) {
      badges.append(h("div", { class: "group", dataset: { group: g } },
        h("b", {}, h("a", { href: `/console/tasks?groupKey=${encodeURIComponent(g)}`, text: g })),
        h("span", { class: "muted", text: `${devices.length}` }),
        h("div", { class: "chips" }, devices.map((d) => h("span", { class: "pill on", dataset: { device: d.deviceId } },
          `${d.deviceId} · ${d.mode || t("nomode")}`))),
      ));
    }
  }

  const quiet = (fn) => () => fn().catch((err) => console.warn(err.message));
  const reloadMeetings = debounce(() => { quiet(loadActive)(); quiet(loadRecent)(); }, 250);
  const reloadBadges = debounce(quiet(loadBadges), 250);

  const form = h("form", { class: "inline", role: "search", id: "search-form",
    onsubmit: (ev) => { ev.preventDefault(); search(searchBox.value).catch((err) => { clear(results).append(h("p", { class: "empty", text: err.message })); }); },
  }, searchBox,
    h("button", { type: "submit", class: "primary", text: t("search.go") }),
    h("button", { type: "button", text: t("search.clear"), onclick: () => { searchBox.value = ""; clear(results); } }),
  );

  view.append(
    h("h1", { text: t("home.title") }),
    h("section", { class: "card" }, form, results),
    h("div", { class: "grid" },
      h("section", { class: "card" }, h("h2", { text: t("home.active") }), active),
      h("section", { class: "card" }, h("h2", { text: t("home.badges") }), badges),
    ),
    h("section", { class: "card" }, h("h2", { text: t("home.recent") }), recent),
  );

  const feed = new LiveFeed(["meetings", "devices"], {
    meeting: () => reloadMeetings(),
    count: (ev) => {
      const cell = counts.get(ev.meeting_id);
      if (cell) cell.textContent = String(Math.max(Number(cell.textContent) || 0, ev.count));
      else reloadMeetings();
    },
    device: () => { reloadBadges(); },
    resync: () => { reloadMeetings(); reloadBadges(); },
  });
  // The first render is done once all three are drawn (bench/console.py reads the mark).
  Promise.allSettled([loadActive(), loadRecent(), loadBadges()]).then((results) => {
    for (const r of results) if (r.status === "rejected") console.warn(r.reason?.message);
    performance.mark("supie:home-ready");
  });
  const q = new URLSearchParams(location.search).get("q");
  if (q) { searchBox.value = q; search(q).catch(() => {}); }
  return () => feed.close();
}
