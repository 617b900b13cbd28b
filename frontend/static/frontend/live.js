/* AgentFlow dashboard: the one live socket of a page, and a small registry of handlers.
 *
 * Pages (pages.js, or a page's own script) register what they do with events:
 *
 *   AgentFlowLive.on("run.updated", (event) => { ... });   // exact type
 *   AgentFlowLive.on("hitl.*", (event) => { ... });        // a family
 *   AgentFlowLive.onResync(() => fetchFragmentAndReplace()); // after every (re)connect
 *
 * The socket goes to /ws/live/?tenant=<body data-live-tenant>, keeps
 * <body data-live-status="connecting|connected|disconnected"> current and reconnects with
 * exponential backoff and full jitter (0.5 s doubling, capped at 10 s). After each
 * connect the page's resync callbacks run once (fetch the live fragment), so nothing
 * that happened while the socket was down, or before it first opened, is missed. There
 * is no polling: only events and those one-off resyncs change the page.
 */
(function () {
  "use strict";

  const BASE_DELAY_MS = 500;
  const MAX_DELAY_MS = 10000;
  const handlers = [];
  const resyncs = [];
  let socket = null;
  let attempt = 0;
  let retryTimer = null;
  let stopped = false;

  function setStatus(status) {
    document.body.dataset.liveStatus = status;
  }

  function matches(pattern, type) {
    if (pattern === "*" || pattern === type) return true;
    return pattern.endsWith(".*") && type.startsWith(pattern.slice(0, -1));
  }

  function dispatch(event) {
    for (const handler of handlers) {
      if (!matches(handler.pattern, event.type)) continue;
      try {
        handler.fn(event);
      } catch (error) {
        console.error("live handler failed", handler.pattern, error);
      }
    }
  }

  function resync() {
    for (const fn of resyncs) {
      try {
        fn();
      } catch (error) {
        console.error("live resync failed", error);
      }
    }
  }

  function socketUrl() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const tenant = document.body.dataset.liveTenant || "";
    const query = tenant ? "?tenant=" + encodeURIComponent(tenant) : "";
    return scheme + "//" + window.location.host + "/ws/live/" + query;
  }

  function nextDelay() {
    // Full jitter: a fleet of pages reconnecting after a restart spreads out.
    const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** attempt);
    attempt += 1;
    return Math.max(250, Math.random() * ceiling);
  }

  function scheduleReconnect() {
    if (stopped || retryTimer !== null) return;
    retryTimer = window.setTimeout(function () {
      retryTimer = null;
      connect();
    }, nextDelay());
  }

  function connect() {
    if (stopped) return;
    setStatus("connecting");
    let ws;
    try {
      ws = new WebSocket(socketUrl());
    } catch (error) {
      setStatus("disconnected");
      scheduleReconnect();
      return;
    }
    socket = ws;
    ws.onopen = function () {
      attempt = 0;
      setStatus("connected");
      resync();
    };
    ws.onmessage = function (message) {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch (error) {
        return;
      }
      if (event && typeof event.type === "string") dispatch(event);
    };
    ws.onclose = function () {
      if (socket === ws) socket = null;
      setStatus("disconnected");
      scheduleReconnect();
    };
    ws.onerror = function () {
      /* onclose follows and reconnects */
    };
  }

  window.AgentFlowLive = {
    on: function (pattern, fn) {
      handlers.push({ pattern: pattern, fn: fn });
    },
    onResync: function (fn) {
      resyncs.push(fn);
    },
    /* For tests and debugging: close the socket as a network failure would. */
    drop: function () {
      if (socket) socket.close();
    },
    stop: function () {
      stopped = true;
      if (socket) socket.close();
    },
    /* Fetch this page's JSON fragment (same URL, same filters, ?fragment=<name>). */
    fetchFragment: function (name) {
      const url = new URL(window.location.href);
      url.searchParams.set("fragment", name);
      return fetch(url.toString(), {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      }).then(function (response) {
        if (!response.ok) throw new Error("fragment " + name + ": HTTP " + response.status);
        return response.json();
      });
    },
  };

  function start() {
    if (document.body.dataset.liveEvents === undefined) return; // not a dashboard page
    connect();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
