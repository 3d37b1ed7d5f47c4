// A group's task list as its badges see it, live (group:<key> feed); complete / assign / add
// go through the workflow operations a badge would send, so the badges get the change too.
import { api } from "../api.js";
import { clear, h, when } from "../dom.js";
import { t } from "../i18n.js";
import { LiveFeed } from "../live.js";

const PRIORITIES = [0, 1, 2, 3];

function newTaskId() {
  const bytes = new Uint8Array(6);
  crypto.getRandomValues(bytes);
  return "c" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function renderTasks(view, initialGroup) {
  let groupKey = initialGroup;
  let feed = null;
  const groupsBox = h("div", { class: "chips", id: "groups" });
  const board = h("div", { id: "board" });
  const note = h("p", { class: "muted", id: "task-note" });
  const groupInput = h("input", { id: "group-key", value: groupKey, placeholder: t("tasks.group"), size: "12", "aria-label": t("tasks.group") });

  async function operate(message) {
    note.textContent = "";
    try {
      await api("/supie/workflow/operate", { method: "POST", body: { groupKey, message, by: "console" } });
    } catch (err) {
      note.textContent = err.message;
    }
  }

  function draw(tasks) {
    const sorted = [...tasks].sort((a, b) => (a.status === b.status ? (a.priority ?? 2) - (b.priority ?? 2) : a.status === "open" ? -1 : 1));
    const rows = sorted.map((task) => {
      const owner = h("input", { value: task.owner || "", placeholder: t("tasks.ownerPlaceholder"), size: "10", maxlength: "64", "aria-label": t("tasks.assign") });
      return h("tr", { class: task.status === "done" ? "task-done" : "", dataset: { task: task.id } },
        h("td", { class: "title", text: task.title || task.id }),
        h("td", { text: `P${task.priority ?? 2}` }),
        h("td", {}, h("span", { class: `pill ${task.status === "done" ? "done" : ""}`, text: t(`tasks.${task.status}`) })),
        h("td", {}, h("form", { class: "inline assign", onsubmit: (ev) => { ev.preventDefault(); operate({ event: "assign", id: task.id, owner: owner.value.trim() || null }); } },
          owner, h("button", { type: "submit", text: t("tasks.assign") }))),
        h("td", {}, task.status === "open"
          ? h("button", { type: "button", class: "complete", text: t("tasks.complete"), onclick: () => operate({ event: "complete", ids: [task.id] }) })
          : h("span", { class: "muted", text: when(task.updatedAt) })),
      );
    });
    clear(board).append(rows.length
      ? h("table", { id: "task-table" },
          h("thead", {}, h("tr", {}, ["col.task", "col.priority", "col.status", "col.owner", ""].map((x) => h("th", { text: x ? t(x) : "" })))),
          h("tbody", {}, rows))
      : h("p", { class: "empty", id: "task-table", text: t("tasks.none") }));
  }

  async function loadGroups() {
    const data = await api("/supie/workflow/groups");
    clear(groupsBox).append(...data.items.map((g) => h("a", {
      class: `pill ${g.groupKey === groupKey ? "on" : ""}`, href: `/console/tasks?groupKey=${encodeURIComponent(g.groupKey)}`,
      dataset: { group: g.groupKey }, text: `${g.groupKey} (${g.count})`,
    })));
  }

  async function loadTasks() {
    const data = await api(`/supie/workflow?${new URLSearchParams({ groupKey })}`);
    if (data.groupKey && data.groupKey !== groupKey) groupKey = data.groupKey;
    draw(data.items);
    return data;
  }

  const title = h("input", { id: "new-title", class: "grow", placeholder: t("tasks.newTitle"), maxlength: "200", required: true, "aria-label": t("tasks.newTitle") });
  const priority = h("select", { id: "new-priority", "aria-label": t("col.priority") }, PRIORITIES.map((p) => h("option", { value: String(p), selected: p === 2, text: `P${p}` })));
  const addForm = h("form", { class: "inline", id: "add-form",
    onsubmit: (ev) => {
      ev.preventDefault();
      const text = title.value.trim();
      if (!text) return;
      operate({ event: "update", tasks: [{ id: newTaskId(), title: text, priority: Number(priority.value) }] });
      title.value = "";
    } }, title, priority, h("button", { type: "submit", class: "primary", text: t("tasks.add") }));

  view.append(
    h("h1", { text: t("tasks.title") }),
    h("section", { class: "card" },
      h("form", { class: "inline", id: "group-form",
        onsubmit: (ev) => { ev.preventDefault(); location.href = `/console/tasks?groupKey=${encodeURIComponent(groupInput.value.trim())}`; } },
        h("label", { for: "group-key", text: t("tasks.group") }), groupInput, h("button", { type: "submit", text: t("tasks.show") })),
      h("h3", { text: t("tasks.groups") }), groupsBox),
  );
  loadGroups().catch((err) => { groupsBox.textContent = err.message; });
  if (!groupKey) {
    view.append(h("p", { class: "empty", text: t("tasks.pick") }));
    return () => {};
  }
  view.append(h("section", { class: "card" },
    h("h2", {}, `${t("tasks.group")} `, h("span", { class: "mono", id: "group-name", text: groupKey })),
    board, addForm, note));
  loadTasks().then(() => {
    document.getElementById("group-name").textContent = groupKey;
    feed = new LiveFeed([`group:${groupKey}`, "groups"], {
      tasks: (ev) => {
        if (ev.group_key === groupKey) draw(ev.tasks);
        loadGroups().catch(() => {});
      },
      resync: () => { loadTasks().catch(() => {}); loadGroups().catch(() => {}); },
    });
  }).catch((err) => { board.textContent = err.message; });
  return () => feed?.close();
}
