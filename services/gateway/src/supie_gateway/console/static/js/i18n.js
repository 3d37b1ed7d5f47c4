// Interface text in English and Chinese; meeting and task text is shown as it came.
const TEXT = {
  en: {
    "nav.home": "Meetings", "nav.tasks": "Tasks", "nav.devices": "Badges", "nav.logout": "Sign out",
    "lang.other": "中文",
    "home.title": "Meetings", "home.active": "In progress", "home.recent": "Recent meetings",
    "home.badges": "Online badges", "home.noActive": "No meeting in progress.",
    "home.noRecent": "No finalized meeting yet.", "home.noBadges": "No badge online.",
    "search.placeholder": "Search summaries and transcripts (中文 or English)",
    "search.go": "Search", "search.none": "Nothing found for", "search.results": "results",
    "search.clear": "Clear",
    "col.device": "Device", "col.started": "Started", "col.segments": "Segments",
    "col.title": "Title", "col.when": "When", "col.duration": "Duration", "col.bullets": "Bullets",
    "col.status": "Status", "col.group": "Group", "col.mode": "Mode", "col.gateway": "Gateway",
    "col.language": "Language", "col.lastSeen": "Last seen", "col.online": "Online",
    "col.protocol": "Protocol", "col.task": "Task", "col.priority": "Priority",
    "col.owner": "Owner", "col.client": "Client",
    "live": "live", "online": "online", "offline": "offline", "nomode": "no mode",
    "meeting.title": "Meeting", "meeting.finalize": "Finalize meeting",
    "meeting.finalizing": "Finalizing…", "meeting.export": "Export",
    "meeting.import": "Import actions into group", "meeting.importDone": "Imported tasks:",
    "meeting.groupKey": "group key", "meeting.transcript": "Transcript",
    "meeting.speakers": "Speakers", "meeting.rename": "Rename", "meeting.everywhere": "in every meeting",
    "meeting.notFound": "No such meeting.", "meeting.waiting": "Waiting for the summary…",
    "meeting.noSegments": "Nothing said yet.", "meeting.summary": "Summary",
    "meeting.device": "Device", "meeting.started": "Started", "meeting.ended": "Ended",
    "meeting.more": "segments", "prev": "Previous", "next": "Next",
    "sum.title": "Title", "sum.duration": "Duration", "sum.bullets": "Key points",
    "sum.decisions": "Decisions", "sum.actions": "Actions", "sum.risks": "Risks",
    "sum.nextSteps": "Next steps", "none": "none",
    "status.active": "in progress", "status.finalizing": "finalizing", "status.finalized": "finalized",
    "tasks.title": "Tasks", "tasks.group": "Group", "tasks.show": "Show", "tasks.add": "Add task",
    "tasks.newTitle": "New task title", "tasks.complete": "Complete", "tasks.assign": "Assign",
    "tasks.ownerPlaceholder": "owner", "tasks.none": "No task in this group.",
    "tasks.pick": "Pick a group to see its tasks.", "tasks.open": "open", "tasks.done": "done",
    "tasks.groups": "Groups",
    "devices.title": "Badges", "devices.none": "No badge seen lately.",
    "login.title": "Sign in", "login.text": "This server needs its API token.",
    "login.token": "API token", "login.go": "Sign in", "login.wrong": "That token was refused.",
    "err.live": "Live updates lost: reconnecting…", "err.live401": "Live updates refused (401): sign in again.",
    "err.401": "Not signed in (401): enter the API token.",
    "err.429": "Too many requests (429): retrying in", "err.net": "Server unreachable: retrying in",
    "err.503": "Service unavailable (503): retrying in", "err.seconds": "s",
    "err.failed": "Request failed",
  },
  zh: {
    "nav.home": "会议", "nav.tasks": "任务", "nav.devices": "工牌", "nav.logout": "退出",
    "lang.other": "English",
    "home.title": "会议", "home.active": "进行中", "home.recent": "最近的会议",
    "home.badges": "在线工牌", "home.noActive": "没有进行中的会议。",
    "home.noRecent": "还没有已完成的会议。", "home.noBadges": "没有在线的工牌。",
    "search.placeholder": "搜索纪要和转写（中文或 English）",
    "search.go": "搜索", "search.none": "没有找到", "search.results": "条结果",
    "search.clear": "清除",
    "col.device": "设备", "col.started": "开始", "col.segments": "片段",
    "col.title": "标题", "col.when": "时间", "col.duration": "时长", "col.bullets": "要点",
    "col.status": "状态", "col.group": "组", "col.mode": "模式", "col.gateway": "网关",
    "col.language": "语言", "col.lastSeen": "最后活动", "col.online": "在线",
    "col.protocol": "协议", "col.task": "任务", "col.priority": "优先级",
    "col.owner": "负责人", "col.client": "客户端",
    "live": "直播", "online": "在线", "offline": "离线", "nomode": "无模式",
    "meeting.title": "会议", "meeting.finalize": "结束会议",
    "meeting.finalizing": "正在生成纪要…", "meeting.export": "导出",
    "meeting.import": "导入行动项到任务组", "meeting.importDone": "已导入任务：",
    "meeting.groupKey": "组", "meeting.transcript": "转写",
    "meeting.speakers": "发言人", "meeting.rename": "改名", "meeting.everywhere": "所有会议",
    "meeting.notFound": "没有这个会议。", "meeting.waiting": "正在等待纪要…",
    "meeting.noSegments": "还没有发言。", "meeting.summary": "纪要",
    "meeting.device": "设备", "meeting.started": "开始", "meeting.ended": "结束",
    "meeting.more": "个片段", "prev": "上一页", "next": "下一页",
    "sum.title": "标题", "sum.duration": "时长", "sum.bullets": "要点",
    "sum.decisions": "决定", "sum.actions": "行动项", "sum.risks": "风险",
    "sum.nextSteps": "下一步", "none": "无",
    "status.active": "进行中", "status.finalizing": "生成纪要中", "status.finalized": "已结束",
    "tasks.title": "任务", "tasks.group": "组", "tasks.show": "查看", "tasks.add": "添加任务",
    "tasks.newTitle": "新任务标题", "tasks.complete": "完成", "tasks.assign": "指派",
    "tasks.ownerPlaceholder": "负责人", "tasks.none": "这个组没有任务。",
    "tasks.pick": "选择一个组查看任务。", "tasks.open": "待办", "tasks.done": "已完成",
    "tasks.groups": "组列表",
    "devices.title": "工牌", "devices.none": "最近没有工牌。",
    "login.title": "登录", "login.text": "这个服务器需要 API 令牌。",
    "login.token": "API 令牌", "login.go": "登录", "login.wrong": "令牌不正确。",
    "err.live": "实时连接已断开：正在重连…", "err.live401": "实时连接被拒绝（401）：请重新登录。",
    "err.401": "未登录（401）：请输入 API 令牌。",
    "err.429": "请求过多（429）：重试于", "err.net": "无法连接服务器：重试于",
    "err.503": "服务不可用（503）：重试于", "err.seconds": "秒后",
    "err.failed": "请求失败",
  },
};

function initial() {
  const saved = localStorage.getItem("supie.lang");
  if (saved === "en" || saved === "zh") return saved;
  return (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
}

let lang = initial();

export function language() { return lang; }

export function setLanguage(next) {
  lang = next === "zh" ? "zh" : "en";
  localStorage.setItem("supie.lang", lang);
}

export function t(key) {
  return TEXT[lang][key] ?? TEXT.en[key] ?? key;
}

// Static markup: elements carrying data-i18n get their text in the current language.
export function translateStatic(root = document) {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
}
