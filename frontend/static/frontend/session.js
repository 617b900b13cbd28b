/* The conversation page: messages appear live, and a change of who answers is shown.
 *
 * Events: session.message (a message of a session in human mode: the customer's, or a
 * person's reply), session.updated (taken over, handed back) and run.updated (the agent's
 * own turns). Any of them naming this session re-reads the page's conversation fragment,
 * which holds the messages exactly as GET /api/v1/sessions/{id}/conversation returns them.
 */
(function () {
  "use strict";

  function who(message) {
    if (message.role === "user") return "customer";
    return message.author ? message.author.username : "agent";
  }

  function item(message) {
    const li = document.createElement("li");
    li.className = "message message-" + message.role;
    li.dataset.messageId = message.message_id;
    li.dataset.role = message.role;
    li.dataset.author = message.author ? message.author.username : "";
    const by = document.createElement("span");
    by.className = "muted small";
    by.dataset.field = "who";
    by.textContent = who(message);
    // pages.js formats every time[datetime] (absolute and relative), as the server renders it.
    const at = document.createElement("time");
    at.className = "when muted small";
    at.setAttribute("datetime", message.created_at || "");
    const text = document.createElement("blockquote");
    text.dataset.field = "content";
    text.textContent = message.content;
    li.append(by, " ", at, text);
    return li;
  }

  AgentFlowPages.register("sessions", function () {
    const panel = document.querySelector('[data-testid="session"]');
    const list = document.querySelector('[data-testid="conversation"]');
    if (!panel || !list) return;
    const sessionId = panel.dataset.sessionId;
    const badge = document.querySelector('[data-testid="session-mode"]');
    const shownMode = badge ? badge.dataset.mode : "";

    function render(data) {
      list.replaceChildren(...data.messages.map(item));
      AgentFlowPages.formatTimes(list);
      const empty = document.querySelector('[data-testid="conversation-empty"]');
      if (empty) empty.hidden = data.messages.length > 0;
      // Buttons follow who answers: a changed mode asks for a reload rather than guessing.
      const changed = document.querySelector('[data-testid="session-changed"]');
      if (changed) changed.hidden = data.session.mode === shownMode;
    }

    function refresh() {
      AgentFlowLive.fetchFragment("conversation").then(render).catch(console.error);
    }

    function concerns(event) {
      if (event.session) return String(event.session.id) === sessionId;
      return Boolean(event.run && String(event.run.session_id) === sessionId);
    }

    AgentFlowLive.on("session.*", (event) => concerns(event) && refresh());
    AgentFlowLive.on("run.updated", (event) => concerns(event) && refresh());
    AgentFlowLive.onResync(refresh);
  });
})();
