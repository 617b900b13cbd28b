/* AgentFlow dashboard pages: how each page applies live events (see live.js for the socket).
 *
 * Every list page keeps its rows as a Map of the same JSON the server renders and the
 * fragment returns (run_json / request_json), applies events to it with the rules below,
 * and re-renders the table from it. tests/platform/frontend/test_live_state.py mirrors
 * these rules in Python and checks that applying events equals a fresh fragment load:
 * change a rule here and change it there.
 *
 * Reuse for a new page (e.g. /learning/):
 *   AgentFlowPages.register("learning", function () {
 *     const table = AgentFlowPages.liveTable({ ... });   // see liveTable below
 *     AgentFlowLive.on("learning.golden_path.*", (e) => table.apply(e.golden_path));
 *     AgentFlowLive.onResync(() => AgentFlowLive.fetchFragment("rows").then((d) => table.replace(d.rows)));
 *   });
 */
(function () {
  "use strict";

  const pages = {};
  const RUN_RANK = {
    pending: 0,
    processing: 1,
    awaiting_review: 2,
    completed: 3,
    failed: 3,
    cancelled: 3,
  };
  const OPEN_REQUEST = ["pending", "assigned", "escalated"];
  const PRIORITY_RANK = { low: 1, medium: 2, high: 3, critical: 4 };

  function readJson(id, fallback) {
    const node = document.getElementById(id);
    if (!node) return fallback;
    try {
      return JSON.parse(node.textContent);
    } catch (error) {
      return fallback;
    }
  }

  function setField(root, name, text) {
    const node = root.querySelector('[data-field="' + name + '"]');
    if (node) node.textContent = text === null || text === undefined ? "" : String(text);
    return node;
  }

  function compareText(a, b) {
    return a < b ? -1 : a > b ? 1 : 0;
  }

  function time(value) {
    return value ? Date.parse(value) : 0;
  }

  /* A table whose rows are a keyed, ordered, capped set of JSON objects.
   * options: table (element), template (<template> element), rows (initial JSON list),
   * key(row) -> id, attr (the tr attribute holding the id, e.g. "data-run-id"),
   * fill(tr, row), accept(row, current) -> true (keep/insert) | false (remove) | null (ignore),
   * compare(a, b) for the order, limit, empty (element shown when there are no rows),
   * merge(row, known) (optional) -> what to keep when an update carries fewer fields. */
  function liveTable(options) {
    const tbody = options.table.tBodies[0];
    let state = new Map();
    for (const row of options.rows || []) state.set(options.key(row), row);

    function render() {
      const wanted = Array.from(state.values());
      const existing = new Map();
      for (const tr of Array.from(tbody.rows)) existing.set(tr.getAttribute(options.attr), tr);
      const fragment = document.createDocumentFragment();
      for (const row of wanted) {
        const id = options.key(row);
        let tr = existing.get(id);
        existing.delete(id);
        if (!tr) tr = options.template.content.firstElementChild.cloneNode(true);
        tr.setAttribute(options.attr, id);
        options.fill(tr, row);
        fragment.appendChild(tr);
      }
      for (const stale of existing.values()) stale.remove();
      tbody.appendChild(fragment);
      if (options.empty) options.empty.hidden = wanted.length > 0;
    }

    function settle() {
      const ordered = Array.from(state.values()).sort(options.compare);
      state = new Map(ordered.slice(0, options.limit).map((row) => [options.key(row), row]));
      render();
    }

    return {
      apply: function (row) {
        const id = options.key(row);
        const verdict = options.accept(row, state.get(id));
        if (verdict === null) return;
        if (verdict) state.set(id, options.merge ? options.merge(row, state.get(id)) : row);
        else state.delete(id);
        settle();
      },
      replace: function (rows) {
        state = new Map(rows.map((row) => [options.key(row), row]));
        settle();
      },
      rows: function () {
        return Array.from(state.values());
      },
    };
  }

  function debounce(fn, ms) {
    let timer = null;
    return function () {
      if (timer !== null) window.clearTimeout(timer);
      timer = window.setTimeout(function () {
        timer = null;
        fn();
      }, ms);
    };
  }

  /* --- SLA countdowns: re-rendered from data-deadline once a second (no requests) ------ */

  function formatCountdown(ms) {
    const total = Math.floor(Math.abs(ms) / 1000);
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = total % 60;
    const text = (h ? h + "h " : "") + String(m).padStart(h ? 2 : 1, "0") + "m " + String(s).padStart(2, "0") + "s";
    return ms >= 0 ? "in " + text : "overdue " + text;
  }

  function tickCountdowns() {
    const now = Date.now();
    for (const node of document.querySelectorAll("[data-deadline]")) {
      const deadline = Date.parse(node.getAttribute("data-deadline"));
      if (Number.isNaN(deadline)) continue;
      const left = deadline - now;
      node.textContent = formatCountdown(left);
      node.classList.toggle("overdue", left < 0);
      node.classList.toggle("soon", left >= 0 && left < 5 * 60 * 1000);
    }
  }

  /* --- moments: <time datetime> in the viewer's time zone, with a relative hint ---------- */

  const RELATIVE = [
    ["year", 365 * 86400],
    ["month", 30 * 86400],
    ["day", 86400],
    ["hour", 3600],
    ["minute", 60],
  ];
  const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: "auto", style: "short" });
  const absoluteFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

  function relative(ms) {
    const seconds = Math.round((ms - Date.now()) / 1000);
    for (const [unit, size] of RELATIVE) {
      if (Math.abs(seconds) >= size) return relativeFormat.format(Math.round(seconds / size), unit);
    }
    return Math.abs(seconds) < 10 ? "just now" : relativeFormat.format(seconds, "second");
  }

  function formatTimes(root) {
    for (const node of (root || document).querySelectorAll("time[datetime]")) {
      const value = node.getAttribute("datetime");
      const at = value ? Date.parse(value) : NaN;
      if (Number.isNaN(at)) continue;
      const text = absoluteFormat.format(at) + " · " + relative(at);
      if (node.textContent !== text) node.textContent = text;
      node.title = new Date(at).toISOString().replace(".000Z", "Z") + " (UTC)";
    }
  }

  function money(value, offline) {
    const amount = Number(value);
    if (offline && !amount) return "offline provider: free";
    if (Number.isNaN(amount)) return String(value);
    if (amount > 0 && amount < 0.01) return "< $0.01";
    return "$" + amount.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  }

  /* --- runs list --------------------------------------------------------------------------- */

  function runAccepts(filters) {
    const since = filters.since ? Date.parse(filters.since) : null;
    return function (run, current) {
      // A run never goes backwards: a late event about an earlier state changes nothing.
      if (current && RUN_RANK[run.status] < RUN_RANK[current.status]) return null;
      if (filters.status && run.status !== filters.status) return false;
      if (filters.agent && run.agent_id !== filters.agent) return false;
      if (since !== null && time(run.created_at) < since) return false;
      return true;
    };
  }

  function compareRuns(a, b) {
    return time(b.created_at) - time(a.created_at) || compareText(b.id, a.id);
  }

  register("runs", function () {
    const table = document.querySelector('[data-testid="runs-table"]');
    if (table) return runsList(table);
    const status = document.querySelector('[data-testid="run-status"]');
    if (status) runDetail(status);
  });

  function runsList(table) {
    const agents = readJson("agents-data", {});
    const offline = new Set(readJson("offline-agents-data", []));
    // Events carry the API's run, without the list's excerpt, intent and confidence: a row
    // keeps what it knew, and a new or newly settled row refetches the list once (debounced).
    const refetch = debounce(function () {
      AgentFlowLive.fetchFragment("rows").then((data) => list.replace(data.rows));
    }, 500);
    const list = liveTable({
      table: table,
      template: document.getElementById("run-row-template"),
      rows: readJson("rows-data", []),
      key: (run) => run.id,
      attr: "data-run-id",
      limit: parseInt(table.dataset.limit || "50", 10),
      empty: document.querySelector('[data-testid="runs-empty"]'),
      compare: compareRuns,
      accept: runAccepts({
        status: table.dataset.filterStatus || "",
        agent: table.dataset.filterAgent || "",
        since: table.dataset.filterSince || "",
      }),
      merge: (run, known) => Object.assign({}, known || {}, run),
      fill: function (tr, run) {
        const link = tr.querySelector('[data-field="link"]');
        link.setAttribute("href", "/runs/" + run.id + "/");
        link.textContent = run.excerpt || run.id.slice(0, 8);
        setField(tr, "agent", agents[run.agent_id] || run.agent_id);
        setField(tr, "intent", run.intent || "");
        setField(tr, "confidence", run.confidence === null || run.confidence === undefined ? "" : Number(run.confidence).toFixed(2));
        setField(tr, "status", run.status).setAttribute("data-status", run.status);
        setField(tr, "user_id", run.user_id);
        tr.querySelector("time").setAttribute("datetime", run.created_at || "");
        setField(tr, "cost_usd", money(run.cost_usd, offline.has(run.agent_id)));
        formatTimes(tr);
      },
    });
    AgentFlowLive.on("run.updated", function (event) {
      list.apply(event.run);
      const row = list.rows().find((each) => each.id === event.run.id);
      if (row && (row.excerpt === undefined || (RUN_RANK[row.status] >= 2 && row.intent === undefined))) refetch();
    });
    AgentFlowLive.onResync(function () {
      AgentFlowLive.fetchFragment("rows").then((data) => list.replace(data.rows));
    });
  }

  function runDetail(status) {
    const runId = document.querySelector("[data-run-id]").getAttribute("data-run-id");
    const initial = status.textContent.trim();
    let current = readJson("run-data", null);
    function show(run) {
      if (!run || run.id !== runId) return;
      if (current && RUN_RANK[run.status] < RUN_RANK[current.status]) return;
      current = run;
      status.textContent = run.status;
      status.setAttribute("data-status", run.status);
      const finished = document.querySelector('[data-testid="run-finished"]');
      if (finished && run.finished_at) {
        finished.setAttribute("datetime", run.finished_at);
        formatTimes(finished.parentNode);
      }
      const note = document.querySelector('[data-testid="run-settled-note"]');
      if (note) note.hidden = run.status === initial;
    }
    AgentFlowLive.on("run.updated", (event) => show(event.run));
    AgentFlowLive.onResync(function () {
      AgentFlowLive.fetchFragment("run").then((data) => show(data.run));
    });
  }

  /* --- review queue -------------------------------------------------------------------------- */

  function compareRequests(a, b) {
    return (
      (PRIORITY_RANK[b.priority] || 0) - (PRIORITY_RANK[a.priority] || 0) ||
      time(a.sla_deadline) - time(b.sla_deadline) ||
      time(a.created_at) - time(b.created_at) ||
      compareText(a.id, b.id)
    );
  }

  register("hitl", function () {
    const table = document.querySelector('[data-testid="hitl-table"]');
    if (table) return queueList(table);
    const panel = document.querySelector('[data-testid="request"]');
    if (panel) requestDetail(panel);
  });

  function queueList(table) {
    const agents = readJson("agents-data", {});
    const list = liveTable({
      table: table,
      template: document.getElementById("request-row-template"),
      rows: readJson("rows-data", []),
      key: (request) => request.id,
      attr: "data-request-id",
      limit: 200,
      empty: document.querySelector('[data-testid="hitl-empty"]'),
      compare: compareRequests,
      accept: (request) => OPEN_REQUEST.includes(request.status),
      fill: function (tr, request) {
        tr.setAttribute("data-run-id", request.run_id);
        tr.setAttribute("data-priority", request.priority);
        const link = tr.querySelector('[data-field="link"]');
        link.setAttribute("href", "/hitl/" + request.id + "/");
        link.textContent =
          request.question.length > 90 ? request.question.slice(0, 89) + "…" : request.question;
        const priority = setField(tr, "priority", request.priority);
        priority.className = "badge prio-" + request.priority;
        setField(tr, "agent", agents[request.agent_id] || request.agent_id || "");
        setField(tr, "intent", request.intent);
        setField(tr, "confidence", request.confidence === null ? "" : request.confidence.toFixed(2));
        setField(tr, "status", request.status).setAttribute("data-status", request.status);
        setField(tr, "assignee", request.assignee ? request.assignee.username : "");
        tr.querySelector('[data-field="deadline"]').setAttribute("data-deadline", request.sla_deadline);
      },
    });
    AgentFlowLive.on("hitl.*", function (event) {
      list.apply(event.request);
      tickCountdowns();
    });
    AgentFlowLive.onResync(function () {
      AgentFlowLive.fetchFragment("rows").then(function (data) {
        list.replace(data.rows);
        tickCountdowns();
      });
    });
  }

  function requestDetail(panel) {
    const requestId = panel.getAttribute("data-request-id");
    const status = panel.querySelector('[data-field="status"]');
    const initial = status.textContent.trim();
    function show(request) {
      if (!request || request.id !== requestId) return;
      status.textContent = request.status;
      status.setAttribute("data-status", request.status);
      setField(panel, "assignee", request.assignee ? request.assignee.username : "nobody");
      const note = document.querySelector('[data-testid="request-changed"]');
      if (note) note.hidden = request.status === initial;
    }
    AgentFlowLive.on("hitl.*", (event) => show(event.request));
    AgentFlowLive.onResync(function () {
      AgentFlowLive.fetchFragment("request").then((data) => show(data.request));
    });
    document.addEventListener("keydown", function (event) {
      const target = event.target;
      const typing = target && /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName);
      if (typing) {
        // Ctrl/Cmd+Enter sends the form being typed in (edit or reject); Esc leaves the field.
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && target.form) {
          event.preventDefault();
          target.form.requestSubmit();
        } else if (event.key === "Escape") {
          target.blur();
        }
        return;
      }
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      const key = event.key.toLowerCase();
      if (key === "c" || key === "a") {
        const button = document.querySelector('[data-action="' + (key === "c" ? "claim" : "approve") + '"]');
        if (button && !button.disabled) {
          event.preventDefault();
          button.click();
        } else if (key === "a") {
          // No Approve for a draft that is no answer: point at the reason instead.
          const reason = document.querySelector('[data-testid="no-approve"]');
          if (reason) {
            event.preventDefault();
            reason.focus();
          }
        }
      } else if (key === "e" || key === "r") {
        // e edits, r rejects: the first press opens the field (the draft to edit, the
        // reason to give); once it holds an edit or a reason, the press sends it. Esc
        // leaves a field, Ctrl/Cmd+Enter sends from inside it.
        // An action request's edit is of the call's arguments (id_arguments).
        const field =
          key === "e"
            ? document.getElementById("id_response") || document.getElementById("id_arguments")
            : document.getElementById("id_reason");
        if (!field) return;
        event.preventDefault();
        if (key === "e" ? field.value.trim() && field.value !== field.defaultValue : field.value.trim()) {
          field.form.requestSubmit();
        } else {
          field.focus();
          if (key === "e") field.select();
          const hint = document.querySelector('[data-testid="shortcut-hint"]');
          if (hint) {
            hint.textContent =
              key === "e"
                ? "Edit the answer, then Ctrl+Enter (or Esc, then e) to send it."
                : "Give the reason, then Ctrl+Enter (or Esc, then r) to reject.";
            hint.hidden = false;
          }
        }
      }
    });
  }

  /* --- agent page: the playground follows a run that outlived the wait ------------------ */

  register("agents", function () {
    const message = document.getElementById("id_message");
    if (message) {
      message.addEventListener("keydown", function (event) {
        // Ctrl/Cmd+Enter sends the playground message.
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
          event.preventDefault();
          message.form.requestSubmit();
        }
      });
    }
    const pending = document.querySelector('[data-testid="playground-pending"]');
    if (!pending) return;
    const runId = pending.closest("[data-run-id]").getAttribute("data-run-id");
    function settled(run) {
      if (run && run.id === runId && RUN_RANK[run.status] >= 2) window.location.reload();
    }
    AgentFlowLive.on("run.updated", (event) => settled(event.run));
    AgentFlowLive.onResync(function () {
      fetch("/runs/" + runId + "/?fragment=run", { credentials: "same-origin" })
        .then((response) => (response.ok ? response.json() : null))
        .then((data) => settled(data && data.run));
    });
  });

  /* --- overview: counters refetched (debounced) when something they count changes -------- */

  function percent(value) {
    return value === null || value === undefined ? "—" : (Number(value) * 100).toFixed(1) + "%";
  }

  register("overview", function () {
    function show(data) {
      const m = data.metrics || {};
      const set = (name, text) => {
        for (const node of document.querySelectorAll('[data-metric="' + name + '"]')) node.textContent = text;
      };
      set("runs-per-minute", Number(m.runs_per_minute).toFixed(2));
      set("runs-window", m.runs_window);
      set("active-runs", m.active_runs);
      set("escalation-rate", percent(m.escalation_rate));
      set("escalations-today", m.escalations_today);
      set("runs-today", m.runs_today);
      set("cost-today", money(m.cost_today));
      set("cost-month", money(m.cost_month));
      set("open-hitl", m.open_hitl);
      set("breaches", m.breaches);
      for (const gauge of data.quotas || []) {
        const node = document.querySelector('[data-quota="' + gauge.name + '"]');
        if (!node) continue;
        node.setAttribute("data-used", gauge.used);
        setField(node, "used", gauge.used);
        const bar = node.querySelector(".bar span");
        if (bar) bar.style.width = (gauge.percent || 0) + "%";
      }
      for (const row of data.tenants || []) {
        const tr = document.querySelector('tr[data-tenant-id="' + row.id + '"]');
        if (!tr) continue;
        setField(tr, "runs_per_minute", Number(row.metrics.runs_per_minute).toFixed(2));
        setField(tr, "runs_today", row.metrics.runs_today);
        setField(tr, "escalation_rate", percent(row.metrics.escalation_rate));
        setField(tr, "cost_today", money(row.metrics.cost_today));
        setField(tr, "open_hitl", row.metrics.open_hitl);
        setField(tr, "breaches", row.metrics.breaches);
      }
    }
    const refresh = debounce(function () {
      AgentFlowLive.fetchFragment("metrics").then(show);
    }, 750);
    AgentFlowLive.on("run.updated", refresh);
    AgentFlowLive.on("hitl.*", refresh);
    AgentFlowLive.onResync(refresh);
  });

  /* --- registry ---------------------------------------------------------------------------------- */

  function register(page, init) {
    (pages[page] = pages[page] || []).push(init);
  }

  function start() {
    for (const init of pages[document.body.dataset.page] || []) init();
    tickCountdowns();
    formatTimes();
    window.setInterval(tickCountdowns, 1000);
    // Relative hints age, and rows other scripts fill (learning.js) get formatted too.
    window.setInterval(() => formatTimes(), 1000);
  }

  window.AgentFlowPages = {
    register: register,
    liveTable: liveTable,
    tickCountdowns: tickCountdowns,
    formatTimes: formatTimes,
    money: money,
  };
  // Scripts sit at the end of <body>: the DOM is there; page scripts loaded after this
  // one may still register until DOMContentLoaded.
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
