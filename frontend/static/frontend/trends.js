/* AgentFlow overview: the trend charts (Chart.js, vendored in vendor/chart.js/).
 *
 * The first render reads the JSON the server embedded (#trends-data); afterwards every
 * run.updated or hitl.* event on the page's socket (live.js) refetches the same JSON
 * (?fragment=trends with the page's window and agent), debounced, and the charts update
 * in place: no polling, no reload. After the socket (re)connects the fragment is fetched
 * once too, so nothing that happened while it was down is missed.
 *
 * For tests: <section data-testid=trends data-updates="N"> counts applied fragments, and
 * each canvas gets data-rendered="1" once its chart exists (Chart.getChart(canvas)).
 */
(function () {
  "use strict";

  const DEBOUNCE_MS = 500;
  const COLORS = {
    runs: "#2457c5",
    rate: "#b42318",
    golden: "#1d7a46",
    tokens: "#8ca3d8",
    dollars: "#a86400",
    breaches: "#e5484d",
    p50: "#2457c5",
    p90: "#7a5af8",
    queue: "#14213d",
  };

  function numbers(values, scale) {
    return values.map((v) => (v === null || v === undefined ? null : Number(v) * (scale || 1)));
  }

  function minutes(values) {
    return values.map((v) => (v === null || v === undefined ? null : Math.round(Number(v) / 6) / 10));
  }

  function labels(data) {
    const hourly = data.unit === "hour";
    // Hours in the viewer's time zone; days are UTC days (the server buckets them so), and
    // named as such: UTC midnight is the evening before west of Greenwich.
    const format = new Intl.DateTimeFormat(undefined, hourly
      ? { hour: "2-digit", minute: "2-digit" }
      : { weekday: "short", day: "numeric", month: "short", timeZone: "UTC" });
    return data.series.buckets.map((iso) => format.format(new Date(iso)));
  }

  function bar(label, values, color, axis) {
    return { type: "bar", label: label, data: values, backgroundColor: color, yAxisID: axis || "y", order: 2 };
  }

  function line(label, values, color, axis) {
    return {
      type: "line", label: label, data: values, borderColor: color, backgroundColor: color,
      yAxisID: axis || "y", tension: 0.25, spanGaps: true, pointRadius: 2, order: 1,
    };
  }

  /* Each chart: its datasets from a fragment, and its axes. */
  const CHARTS = {
    runs: {
      datasets: (s) => [
        bar("Customer runs", s.runs, COLORS.runs),
        line("Escalation rate %", numbers(s.escalation_rate, 100), COLORS.rate, "y2"),
      ],
      axes: { y: "runs", y2: "%" },
    },
    golden: {
      datasets: (s) => [
        line("Answered from a golden path %", numbers(s.golden_rate, 100), COLORS.golden, "y"),
        bar("Completed runs", s.completed, "#c9d4ea", "y2"),
      ],
      axes: { y: "%", y2: "runs" },
    },
    cost: {
      datasets: (s) => [
        bar("Tokens", s.tokens, COLORS.tokens),
        line("Dollars", numbers(s.cost), COLORS.dollars, "y2"),
      ],
      axes: { y: "tokens", y2: "$" },
    },
    sla: {
      datasets: (s) => [
        bar("SLA breaches", s.breaches, COLORS.breaches),
        line("Minutes to decision (p50)", minutes(s.decision_p50_s), COLORS.p50, "y2"),
        line("Minutes to decision (p90)", minutes(s.decision_p90_s), COLORS.p90, "y2"),
      ],
      axes: { y: "breaches", y2: "min" },
    },
    queue: {
      datasets: (s) => [line("Open reviews", s.queue_depth, COLORS.queue)],
      axes: { y: "open" },
    },
  };

  function axis(title, position) {
    return {
      position: position, beginAtZero: true, title: { display: true, text: title },
      grid: { drawOnChartArea: position === "left" }, ticks: { precision: 0 },
    };
  }

  function options(spec) {
    const scales = { x: { grid: { display: false }, ticks: { maxRotation: 0, autoSkip: true } } };
    scales.y = axis(spec.axes.y, "left");
    if (spec.axes.y2) scales.y2 = axis(spec.axes.y2, "right");
    for (const name of ["y", "y2"]) {
      if (spec.axes[name] === "%") scales[name].suggestedMax = 100; // a rate reads on 0-100
    }
    return {
      responsive: true, maintainAspectRatio: false, animation: { duration: 250 },
      interaction: { mode: "index", intersect: false },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
      scales: scales,
    };
  }

  function percent(value) {
    return value === null || value === undefined ? "—" : (Number(value) * 100).toFixed(1) + "%";
  }

  function showTotals(section, data) {
    const t = data.totals;
    const text = {
      runs: t.runs, escalation_rate: percent(t.escalation_rate), golden: t.golden,
      golden_rate: percent(t.golden_rate), tokens: t.tokens,
      cost: window.AgentFlowPages.money(t.cost), breaches: t.breaches,
      decisions: t.decisions, queue_depth: t.queue_depth,
    };
    for (const [name, value] of Object.entries(text)) {
      const node = section.querySelector('[data-total="' + name + '"]');
      if (node) node.textContent = String(value);
    }
  }

  function requestRow(row, at) {
    const tr = document.createElement("tr");
    tr.dataset.requestId = row.id;
    const cells = [["When"], ["Question"], ["Why"], ["Status"]].map(([name]) => {
      const td = document.createElement("td");
      td.dataset.label = name;
      tr.appendChild(td);
      return td;
    });
    const time = document.createElement("time");
    time.setAttribute("datetime", at || "");
    time.textContent = at || "";
    cells[0].appendChild(time);
    const link = document.createElement("a");
    link.href = "/hitl/" + row.id + "/";
    link.textContent = row.question || "(no question)";
    cells[1].appendChild(link);
    if (row.agent) {
      const agent = document.createElement("small");
      agent.className = "muted";
      agent.textContent = " " + row.agent;
      cells[1].appendChild(agent);
    }
    cells[2].textContent = row.reason || row.kind;
    const badge = document.createElement("span");
    badge.className = "badge badge-" + row.status;
    badge.textContent = row.status;
    cells[3].appendChild(badge);
    return tr;
  }

  function showList(section, name, rows, field) {
    const body = section.querySelector('[data-testid="' + name + '"] tbody');
    if (!body || !rows.length) return; // the empty state stays until there is a row
    body.replaceChildren(...rows.map((row) => requestRow(row, row[field])));
    window.AgentFlowPages.formatTimes(body);
  }

  window.AgentFlowPages.register("overview", function () {
    const section = document.querySelector('[data-testid="trends"]');
    const source = document.getElementById("trends-data");
    if (!section || !source || typeof window.Chart === "undefined") return;
    const charts = {};
    let updates = 0;

    function apply(data) {
      const names = labels(data);
      for (const [name, spec] of Object.entries(CHARTS)) {
        const chart = charts[name];
        const fresh = spec.datasets(data.series);
        chart.data.labels = names;
        fresh.forEach((dataset, i) => { chart.data.datasets[i].data = dataset.data; });
        chart.update();
      }
      showTotals(section, data);
      showList(section, "recent-escalations", data.recent.escalations, "created_at");
      showList(section, "recent-breaches", data.recent.breaches, "breached_at");
      updates += 1;
      section.dataset.updates = String(updates);
    }

    const first = JSON.parse(source.textContent);
    for (const [name, spec] of Object.entries(CHARTS)) {
      const canvas = section.querySelector('canvas[data-chart="' + name + '"]');
      if (!canvas) continue;
      charts[name] = new window.Chart(canvas, {
        data: { labels: labels(first), datasets: spec.datasets(first.series) },
        options: options(spec),
      });
      canvas.dataset.rendered = "1";
    }
    section.dataset.updates = "0";

    let timer = null;
    function refresh() {
      if (timer !== null) window.clearTimeout(timer);
      timer = window.setTimeout(function () {
        timer = null;
        window.AgentFlowLive.fetchFragment("trends").then(apply).catch((error) => console.error(error));
      }, DEBOUNCE_MS);
    }
    window.AgentFlowLive.on("run.updated", refresh);
    window.AgentFlowLive.on("hitl.*", refresh);
    window.AgentFlowLive.onResync(refresh);
  });
})();
