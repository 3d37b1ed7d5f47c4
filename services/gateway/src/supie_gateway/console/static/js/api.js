// The HTTP API as the console uses it: the token (kept in sessionStorage) on every call;
// 429 / 503 / network failures shown and retried with backoff; 401 asks to sign in, then the
// same call goes on.
import { banner, unbanner } from "./banners.js";
import { t } from "./i18n.js";

const TOKEN_KEY = "supie.apiToken";
const RETRIED = new Set([429, 502, 503, 504]);
let signIn = null; // set by main.js: () => Promise that resolves once signed in
let waitingSignIn = null;

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}
export function onSignInNeeded(fn) { signIn = fn; }

export function authHeaders() {
  const tok = token();
  return tok ? { Authorization: `Bearer ${tok}` } : {};
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function needSignIn() {
  if (!signIn) throw new ApiError(401, t("err.401"));
  waitingSignIn ??= signIn().finally(() => { waitingSignIn = null; });
  await waitingSignIn;
}

// One call; `raw` returns the Response (exports), else the `data` of {success, data}.
export async function api(path, { method = "GET", body, raw = false, retries = 8 } = {}) {
  let delay = 1000;
  for (let attempt = 0; ; attempt++) {
    let resp;
    try {
      resp = await fetch(path, {
        method,
        headers: { ...authHeaders(), ...(body !== undefined ? { "Content-Type": "application/json" } : {}) },
        body: body !== undefined ? JSON.stringify(body) : undefined,
        cache: "no-store",
      });
    } catch (err) {
      if (attempt >= retries) { unbanner("api"); throw new ApiError(0, t("err.net")); }
      banner("api", `${t("err.net")} ${Math.round(delay / 1000)} ${t("err.seconds")}`, "error");
      await sleep(delay);
      delay = Math.min(delay * 2, 15000);
      continue;
    }
    if (resp.status === 401) {
      setToken("");
      banner("api", t("err.401"), "error");
      await needSignIn();
      unbanner("api");
      continue;
    }
    if (RETRIED.has(resp.status) && attempt < retries) {
      // Jittered, so the page's calls refused together do not all come back together.
      const after = Number(resp.headers.get("Retry-After")) * 1000 || delay * (0.5 + Math.random());
      const key = resp.status === 429 ? "err.429" : "err.503";
      banner("api", `${t(key)} ${Math.round(after / 1000)} ${t("err.seconds")}`, "error");
      await sleep(after);
      delay = Math.min(delay * 2, 15000);
      continue;
    }
    unbanner("api");
    if (raw) {
      if (!resp.ok) throw new ApiError(resp.status, await errorText(resp));
      return resp;
    }
    let payload = null;
    try { payload = await resp.json(); } catch { payload = null; }
    if (!resp.ok || !payload || payload.success === false) {
      throw new ApiError(resp.status, (payload && payload.error) || `${t("err.failed")} (${resp.status})`);
    }
    return payload.data;
  }
}

async function errorText(resp) {
  try {
    const payload = await resp.json();
    return payload.error || `${resp.status}`;
  } catch {
    return `${t("err.failed")} (${resp.status})`;
  }
}

// Whether a token is needed and whether ours is right (always answered 200).
export async function session() {
  const resp = await fetch("/console/session", { headers: authHeaders(), cache: "no-store" });
  if (resp.status === 429) return { tokenRequired: true, authorized: false, limited: true };
  return resp.json();
}
