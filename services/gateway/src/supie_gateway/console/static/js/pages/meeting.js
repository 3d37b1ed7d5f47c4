// One meeting. While active: the transcript grows live (meeting:<id> feed), a finalize button.
// Once finalized: the seven-field summary above the paged transcript, exports, importing its
// actions into a group's tasks. Speaker labels (renameable) in both.
import { ApiError, api, authHeaders, token } from "../api.js";
import { banner, unbanner } from "../banners.js";
import { clear, clock, h, when } from "../dom.js";
import { t } from "../i18n.js";
import { LiveFeed } from "../live.js";

const PAGE = 100;
const SUMMARY_LISTS = ["bullets", "decisions", "actions", "risks", "nextSteps"];
const FORMATS = ["md", "txt", "vtt", "json"];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function renderMeeting(view, sessionId) {
  const base = `/supie/meetings/${encodeURIComponent(sessionId)}`;
  let feed = null;
  let alive = true;
  let labels = {};
  let startedAt = 0;
  let rendered = 0; // live: segments shown so far (by index)
  let list = null;

  function label(speakerId) { return labels[speakerId] || speakerId || "?"; }

  function segmentRow(seg, fresh = false) {
    return h("li", { class: fresh ? "fresh" : "", dataset: { speaker: seg.speakerId || "" } },
      h("span", { class: "when", text: clock((seg.ts || 0) - startedAt) }),
      h("span", { class: "who", text: label(seg.speakerId) }),
      h("span", { class: "text", text: seg.text }),
    );
  }

  function relabel() {
    for (const li of view.querySelectorAll(".transcript li")) {
      li.querySelector(".who").textContent = label(li.dataset.speaker);
    }
  }

  async function speakersPanel() {
    const box = h("section", { class: "card", id: "speakers" }, h("h2", { text: t("meeting.speakers") }));
    let data;
    try { data = await api(`${base}/speakers`); } catch (err) { box.append(h("p", { class: "empty", text: err.message })); return box; }
    labels = Object.fromEntries(data.items.map((s) => [s.speakerId, s.label]));
    if (!data.items.length) box.append(h("p", { class: "empty", text: t("meeting.noSegments") }));
    for (const s of data.items) {
      const input = h("input", { value: s.label === s.speakerId ? "" : s.label, placeholder: s.speakerId, maxlength: "64", "aria-label": `${t("meeting.rename")} ${s.speakerId}` });
      const everywhere = h("input", { type: "checkbox", checked: s.scope === "all" });
      box.append(h("form", { class: "inline", dataset: { speaker: s.speakerId },
        onsubmit: async (ev) => {
          ev.preventDefault();
          const res = await api(`${base}/speakers`, { method: "POST", body: { speakerId: s.speakerId, label: input.value, scope: everywhere.checked ? "all" : "meeting" } });
          labels[s.speakerId] = res.label || s.speakerId;
          relabel();
        } },
        h("span", { class: "mono", text: s.speakerId }), input,
        h("label", {}, everywhere, " ", t("meeting.everywhere")),
        h("button", { type: "submit", text: t("meeting.rename") }),
      ));
    }
    return box;
  }

  function header(title, meta, status) {
    const pill = status === "active"
      ? h("span", { class: "pill live", id: "status", text: t("live") })
      : h("span", { class: "pill", id: "status", text: t(`status.${status}`) });
    return [
      h("h1", {}, title, " ", pill),
      h("p", { class: "muted" },
        `${t("meeting.device")}: `, h("span", { class: "mono", id: "device", text: meta.deviceId }),
        ` · ${t("meeting.started")}: ${when(meta.startedAt)}`,
        meta.endedAt ? ` · ${t("meeting.ended")}: ${when(meta.endedAt)}` : "",
      ),
    ];
  }

  // -- active --------------------------------------------------------------------------------
  async function showLive(live) {
    startedAt = live.startedAt;
    const speakers = await speakersPanel();
    if (!alive) return;
    list = h("ol", { class: "transcript", id: "transcript" });
    const button = h("button", { class: "danger", id: "finalize", text: t("meeting.finalize"),
      disabled: live.status !== "active", onclick: () => finalize(button) });
    clear(view).append(
      ...header(t("meeting.title"), live, live.status),
      h("div", { class: "actions" }, button),
      h("section", { class: "card" }, h("h2", { text: t("meeting.transcript") }), list),
      speakers,
    );
    rendered = 0;
    appendPage(live);
    await catchUp(live);
    feed = new LiveFeed([`meeting:${sessionId}`], {
      segment: (ev) => {
        if (ev.index < rendered) return;
        if (ev.index > rendered) { catchUp().catch(() => {}); return; }
        list.querySelector(".empty")?.remove();
        list.append(segmentRow(ev.segment, true));
        rendered = ev.index + 1;
      },
      meeting: (ev) => {
        if (ev.status === "active") return;
        button.disabled = true;
        document.getElementById("status").textContent = t(`status.${ev.status}`);
        document.getElementById("status").className = "pill";
        if (ev.status === "finalized") waitSummary();
      },
      resync: () => catchUp().catch(() => {}),
    });
  }

  // Items of a page whose index is the next one shown (live events may have shown some).
  function appendPage(page) {
    if (!page.items.length && !rendered && !list.children.length) {
      list.append(h("li", { class: "empty", text: t("meeting.noSegments") }));
    }
    page.items.forEach((seg, i) => {
      if (page.offset + i !== rendered) return;
      list.querySelector(".empty")?.remove();
      list.append(segmentRow(seg));
      rendered += 1;
    });
  }

  let catching = null;
  async function catchUp(first) {
    if (catching) return catching;
    catching = (async () => {
      let page = first;
      while (page && page.nextOffset !== null && page.nextOffset !== undefined) {
        page = await api(`${base}/live?offset=${rendered}&limit=500`);
        appendPage(page);
      }
      if (!first) {
        page = await api(`${base}/live?offset=${rendered}&limit=500`);
        appendPage(page);
      }
    })().finally(() => { catching = null; });
    return catching;
  }

  async function finalize(button) {
    button.disabled = true;
    button.textContent = t("meeting.finalizing");
    try {
      await api(`${base}/finalize`, { method: "POST" });
    } catch (err) {
      button.disabled = false;
      button.textContent = t("meeting.finalize");
      view.querySelector(".actions").append(h("span", { class: "muted", text: err.message }));
      return;
    }
    waitSummary();
  }

  let waiting = false;
  async function waitSummary() {
    if (waiting) return;
    waiting = true;
    if (!document.getElementById("waiting")) {
      view.querySelector(".actions")?.append(h("span", { class: "muted", id: "waiting", text: t("meeting.waiting") }));
    }
    // The live state says finalized once the archive has the meeting: ask it, not the archive
    // (a meeting not archived yet would be a failed request).
    for (let i = 0; alive && i < 240; i++) {
      const state = await api(`${base}/live?limit=1`);
      if (state.status === "finalized" || state.status === "archived") {
        const detail = await api(`${base}?preview=1`);
        feed?.close();
        feed = null;
        await showFinal(detail);
        return;
      }
      await sleep(500);
    }
  }

  // -- finalized -----------------------------------------------------------------------------
  function summaryCard(s) {
    const rows = [
      ["sum.title", s.title],
      ["sum.duration", s.duration],
      ...SUMMARY_LISTS.map((k) => [`sum.${k}`, s[k]]),
    ];
    return h("section", { class: "card summary", id: "summary" },
      h("h2", { text: t("meeting.summary") }),
      h("dl", {}, rows.map(([key, value]) => [
        h("dt", { text: t(key) }),
        h("dd", { dataset: { field: key.slice(4) } }, Array.isArray(value)
          ? (value.length ? h("ul", {}, value.map((v) => h("li", { text: v }))) : h("span", { class: "muted", text: t("none") }))
          : value),
      ])),
    );
  }

  function exportLinks() {
    return FORMATS.map((fmt) => h("a", {
      class: "button", href: `${base}/export?format=${fmt}`, download: `${sessionId}.${fmt}`, dataset: { format: fmt },
      onclick: async (ev) => {
        if (!token()) return; // the plain link works without a token
        ev.preventDefault();
        const resp = await fetch(`${base}/export?format=${fmt}`, { headers: authHeaders() });
        if (!resp.ok) {
          let message = `${t("err.failed")} (${resp.status})`;
          try { message = (await resp.json()).error || message; } catch { /* not JSON */ }
          banner("export", message, "error");
          setTimeout(() => unbanner("export"), 8000);
          return;
        }
        const url = URL.createObjectURL(await resp.blob());
        const a = h("a", { href: url, download: `${sessionId}.${fmt}` });
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 10000);
      },
    }, fmt.toUpperCase()));
  }

  function importForm(detail) {
    const input = h("input", { id: "import-group", value: (detail.deviceId || "").slice(0, 8), "aria-label": t("meeting.groupKey"), size: "10" });
    const out = h("span", { class: "muted", id: "import-result" });
    return h("form", { class: "inline", id: "import-form",
      onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          const res = await api("/supie/workflow/import-from-meeting", { method: "POST", body: { groupKey: input.value.trim(), sessionId } });
          clear(out).append(`${t("meeting.importDone")} ${res.imported} `,
            h("a", { href: `/console/tasks?groupKey=${encodeURIComponent(input.value.trim())}`, text: t("nav.tasks") }));
        } catch (err) { out.textContent = err.message; }
      } },
      h("label", { for: "import-group", text: t("meeting.groupKey") }), input,
      h("button", { type: "submit", text: t("meeting.import") }), out,
    );
  }

  async function showFinal(detail) {
    startedAt = detail.startedAt;
    const speakers = await speakersPanel();
    if (!alive) return;
    list = h("ol", { class: "transcript", id: "transcript" });
    const pager = h("div", { class: "pager", id: "pager" });
    const total = detail.segmentsCount;
    let offset = 0;

    async function page(at) {
      const data = await api(`${base}/transcript?offset=${at}&limit=${PAGE}`);
      offset = at;
      clear(list);
      if (!data.items.length) list.append(h("li", { class: "empty", text: t("meeting.noSegments") }));
      for (const seg of data.items) list.append(segmentRow(seg));
      const shownTo = at + data.items.length;
      clear(pager).append(
        h("button", { type: "button", text: t("prev"), disabled: at === 0, onclick: () => page(Math.max(0, offset - PAGE)) }),
        h("span", { class: "muted", text: `${total ? at + 1 : 0}–${shownTo} / ${total} ${t("meeting.more")}` }),
        h("button", { type: "button", text: t("next"), disabled: data.nextOffset === null, onclick: () => page(data.nextOffset) }),
      );
    }

    clear(view).append(
      ...header(detail.summary.title || t("meeting.title"), detail, "finalized"),
      h("div", { class: "actions", id: "exports" }, h("b", { text: `${t("meeting.export")}:` }), ...exportLinks()),
      importForm(detail),
      summaryCard(detail.summary),
      h("section", { class: "card" }, h("h2", { text: t("meeting.transcript") }), list, pager),
      speakers,
    );
    await page(0);
  }

  async function load() {
    let live;
    try {
      live = await api(`${base}/live?limit=500`);
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 404) throw err;
      clear(view).append(h("h1", { text: t("meeting.title") }), h("p", { class: "empty", text: t("meeting.notFound") }));
      return;
    }
    if (live.status === "active" || live.status === "finalizing") {
      await showLive(live);
      if (live.status === "finalizing") waitSummary();
      return;
    }
    await showFinal(await api(`${base}?preview=1`));
  }

  load().catch((err) => clear(view).append(h("p", { class: "empty", text: err.message })));
  return () => { alive = false; feed?.close(); };
}
