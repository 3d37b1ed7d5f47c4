// Server-Sent Events from /console/live: handlers per event name; a lost connection is shown
// and retried (the browser reconnects by itself; a refused one is reopened with backoff), and
// every reconnect asks the page to reload what it shows (events may have been missed).
import { banner, unbanner } from "./banners.js";
import { t } from "./i18n.js";
import { token, session } from "./api.js";

let feedCount = 0;

export class LiveFeed {
  constructor(topics, handlers) {
    this.topics = topics;
    this.handlers = handlers;
    this.key = `live${++feedCount}`;
    this.es = null;
    this.stopped = false;
    this.hellos = 0;
    this.delay = 1000;
    this.timer = null;
    this.open();
  }

  url() {
    const params = new URLSearchParams({ topics: this.topics.join(",") });
    const tok = token();
    if (tok) params.set("token", tok); // EventSource cannot send headers
    return `/console/live?${params}`;
  }

  open() {
    if (this.stopped) return;
    const es = new EventSource(this.url());
    this.es = es;
    es.addEventListener("hello", () => {
      unbanner(this.key);
      this.delay = 1000;
      if (this.hellos++ > 0) this.handlers.resync?.();
      this.handlers.open?.();
    });
    es.addEventListener("resync", () => this.handlers.resync?.());
    // The server could not subscribe (the bus is down): it ends the stream; say so and retry.
    es.addEventListener("error", (ev) => {
      if (!ev.data) return; // a connection error, handled by onerror
      let text = t("err.live");
      try { text = `${t("err.live")} (${JSON.parse(ev.data).error})`; } catch { /* plain */ }
      banner(this.key, text, "error");
    });
    for (const [name, fn] of Object.entries(this.handlers)) {
      if (["resync", "open", "hello"].includes(name)) continue;
      es.addEventListener(name, (ev) => {
        let data;
        try { data = JSON.parse(ev.data); } catch { return; }
        fn(data);
      });
    }
    es.onerror = () => {
      if (this.stopped) return;
      if (es.readyState === EventSource.CLOSED) {
        // refused (401, 503, ...): find out which, then reopen later
        es.close();
        this.retryLater();
      } else {
        banner(this.key, t("err.live"), "warn");
      }
    };
  }

  async retryLater() {
    let text = t("err.live");
    try {
      const s = await session();
      if (s.limited) text = `${t("err.429")} ${Math.round(this.delay / 1000)} ${t("err.seconds")}`;
      else if (s.tokenRequired && !s.authorized) text = t("err.live401");
    } catch { /* unreachable: the plain message */ }
    banner(this.key, text, "error");
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), this.delay);
    this.delay = Math.min(this.delay * 2, 15000);
  }

  close() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.es?.close();
    unbanner(this.key);
  }
}
