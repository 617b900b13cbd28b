/* The learning page: golden paths appear and change live (learning.golden_path.*).
 *
 * Rules (the same as tests/platform/frontend/test_learning_page.py mirrors): rows are the
 * golden-path JSON of the API; the newest updated_at first; the page's "show" filter keeps
 * active ones ("active"), deactivated ones ("inactive") or both ("all"); an event older
 * than the row the page holds changes nothing.
 */
(function () {
  "use strict";

  function time(value) {
    return value ? Date.parse(value) : 0;
  }

  function setField(root, name, text) {
    const node = root.querySelector('[data-field="' + name + '"]');
    if (node) node.textContent = text === null || text === undefined ? "" : String(text);
    return node;
  }

  function readJson(id) {
    const node = document.getElementById(id);
    try {
      return node ? JSON.parse(node.textContent) : [];
    } catch (error) {
      return [];
    }
  }

  AgentFlowPages.register("learning", function () {
    const table = document.querySelector('[data-testid="golden-paths-table"]');
    if (!table) return;
    const show = table.dataset.show || "active";
    const list = AgentFlowPages.liveTable({
      table: table,
      template: document.getElementById("golden-path-row-template"),
      rows: readJson("golden-paths-data"),
      key: (path) => path.id,
      attr: "data-golden-path-id",
      limit: parseInt(table.dataset.limit || "100", 10),
      empty: document.querySelector('[data-testid="golden-paths-empty"]'),
      compare: (a, b) => time(b.updated_at) - time(a.updated_at) || (a.id < b.id ? 1 : -1),
      accept: function (path, current) {
        if (current && time(path.updated_at) < time(current.updated_at)) return null;
        if (show === "active") return path.is_active;
        if (show === "inactive") return !path.is_active;
        return true;
      },
      fill: function (tr, path) {
        tr.setAttribute("data-active", path.is_active ? "true" : "false");
        for (const name of ["question", "answer", "category", "source", "score", "usage_count", "merged_count"]) {
          setField(tr, name, path[name]);
        }
        setField(tr, "updated_at", path.updated_at).setAttribute("datetime", path.updated_at || "");
        const id = tr.querySelector('[data-field-value="id"]');
        if (id) id.value = path.id;
        const toggle = tr.querySelector('[data-action="toggle"]');
        if (toggle) {
          toggle.value = path.is_active ? "deactivate" : "activate";
          toggle.textContent = path.is_active ? "Deactivate" : "Activate";
        }
      },
    });
    AgentFlowLive.on("learning.golden_path.*", (event) => list.apply(event.golden_path));
    AgentFlowLive.onResync(function () {
      AgentFlowLive.fetchFragment("rows").then((data) => list.replace(data.rows));
    });
  });
})();
