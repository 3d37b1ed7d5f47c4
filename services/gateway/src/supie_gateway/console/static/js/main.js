// The console shell: sign-in when the server has an API token, the language switch, and one
// page per path (/console/, /console/meetings/<id>, /console/tasks, /console/devices).
import { onSignInNeeded, session, setToken, token } from "./api.js";
import { banner, unbanner } from "./banners.js";
import { clear, h } from "./dom.js";
import { language, setLanguage, t, translateStatic } from "./i18n.js";
import { renderHome } from "./pages/home.js";
import { renderMeeting } from "./pages/meeting.js";
import { renderTasks } from "./pages/tasks.js";
import { renderDevices } from "./pages/devices.js";

const view = document.getElementById("view");
let cleanup = null;

function route() {
  const path = location.pathname.replace(/\/+$/, "");
  const meeting = path.match(/^\/console\/meetings\/([A-Za-z0-9_-]{1,128})$/);
  if (meeting) return { name: "meeting", render: (el) => renderMeeting(el, meeting[1]) };
  if (path === "/console/tasks") {
    const groupKey = new URLSearchParams(location.search).get("groupKey") || "";
    return { name: "tasks", render: (el) => renderTasks(el, groupKey) };
  }
  if (path === "/console/devices") return { name: "devices", render: renderDevices };
  return { name: "home", render: renderHome };
}

function loginForm() {
  return new Promise((resolve) => {
    cleanup?.();
    cleanup = null;
    const input = h("input", { type: "password", id: "token", autocomplete: "current-password", required: true });
    const error = h("p", { class: "muted", id: "login-error" });
    const form = h("form", {
      class: "card login",
      onsubmit: async (ev) => {
        ev.preventDefault();
        setToken(input.value.trim());
        const s = await session();
        if (s.authorized) {
          document.getElementById("logout").hidden = false;
          resolve();
        } else {
          setToken("");
          error.textContent = t("login.wrong");
        }
      },
    },
      h("h1", { text: t("login.title") }),
      h("p", { text: t("login.text") }),
      h("label", { for: "token", text: t("login.token") }), " ",
      input, " ",
      h("button", { type: "submit", class: "primary", text: t("login.go") }),
      error,
    );
    clear(view).append(form);
    input.focus();
  });
}

async function signIn() {
  await loginForm();
  show();
}

function show() {
  cleanup?.();
  const page = route();
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("current", a.dataset.nav === page.name);
  }
  clear(view);
  cleanup = page.render(view) || null;
}

async function boot() {
  translateStatic();
  const langButton = document.getElementById("lang");
  langButton.textContent = t("lang.other");
  langButton.addEventListener("click", () => {
    setLanguage(language() === "zh" ? "en" : "zh");
    translateStatic();
    langButton.textContent = t("lang.other");
    show();
  });
  const logout = document.getElementById("logout");
  logout.addEventListener("click", () => { setToken(""); location.reload(); });
  onSignInNeeded(signIn);
  let s = await session();
  for (let delay = 1000; s.limited; delay = Math.min(delay * 2, 15000)) {
    banner("api", `${t("err.429")} ${Math.round(delay / 1000)} ${t("err.seconds")}`, "error");
    await new Promise((r) => setTimeout(r, delay));
    s = await session();
  }
  unbanner("api");
  if (s.tokenRequired && !s.authorized) {
    setToken("");
    await loginForm();
  }
  logout.hidden = !(s.tokenRequired || token());
  show();
}

boot();
