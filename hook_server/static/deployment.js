// A deployment page: follows the log live (Server-Sent Events, else polling) and runs the actions
// with the API token the viewer pasted. Plain JS, no build step; text goes in with textContent only.
(function () {
  "use strict";

  var root = document.getElementById("deployment");
  if (!root) return;

  var TOKEN_KEY = "deployhook.apiToken";
  var BATCH = 1000; // the server's LOG_BATCH: a reply this long means more is waiting
  var logBox = document.getElementById("log");
  var logEmpty = document.getElementById("log-empty");
  var logState = document.getElementById("log-state");
  var lastId = root.dataset.lastLogId || "";
  var finished = root.dataset.final === "true";

  // --- the log ---------------------------------------------------------------------------

  function clock(t) {
    var date = new Date(parseFloat(t) * 1000);
    return isNaN(date.getTime()) ? "" : date.toISOString().slice(11, 19); // UTC, as the server writes it
  }

  function newer(id, than) {
    if (!than) return true;
    var a = id.split("-"), b = than.split("-");
    var ms = Number(a[0]) - Number(b[0]);
    return ms !== 0 ? ms > 0 : Number(a[1]) > Number(b[1]);
  }

  function row(id, t, line) {
    var shown = document.createElement("span");
    shown.className = "line";
    shown.dataset.id = id;
    var stamp = document.createElement("span");
    stamp.className = "t";
    stamp.textContent = clock(t);
    shown.appendChild(stamp);
    shown.appendChild(document.createTextNode(line + "\n"));
    return shown;
  }

  function append(id, t, line) {
    if (!logBox || !newer(id, lastId)) return; // a reconnect may send a line twice
    var following = logBox.scrollHeight - logBox.scrollTop - logBox.clientHeight < 48;
    logBox.appendChild(row(id, t, line));
    lastId = id;
    if (logEmpty) logEmpty.hidden = true;
    if (following) logBox.scrollTop = logBox.scrollHeight;
  }

  // --- earlier lines: the page shows the log's tail; "show earlier lines" prepends the batch before it ------

  var earlier = document.getElementById("log-earlier-link");

  function prepend(entries) {
    var first = logBox.querySelector(".line");
    var rows = document.createDocumentFragment();
    entries.forEach(function (entry) {
      if (!first || newer(first.dataset.id, entry.id)) rows.appendChild(row(entry.id, entry.t, entry.line));
    });
    var height = logBox.scrollHeight;
    logBox.insertBefore(rows, first);
    logBox.scrollTop += logBox.scrollHeight - height; // the lines in view stay where they were
  }

  function showEarlier(event) {
    event.preventDefault();
    if (earlier.getAttribute("aria-busy") === "true") return;
    earlier.setAttribute("aria-busy", "true");
    fetch(root.dataset.logUrl + "?before=" + encodeURIComponent(earlier.dataset.before), { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : Promise.reject(response.status); })
      .then(function (body) {
        prepend(body.entries);
        if (!body.more || !body.entries.length) { earlier.parentNode.remove(); return; }
        // The count is the page's, less what came: a running log may drop lines meanwhile, so never below 1.
        var left = Math.max(Number(earlier.dataset.count) - body.entries.length, 1);
        earlier.dataset.count = String(left);
        earlier.dataset.before = body.entries[0].id;
        earlier.href = root.dataset.logUrl + "?before=" + encodeURIComponent(body.entries[0].id);
        earlier.textContent = "show earlier lines (" + left + " more)";
      })
      .catch(function () {
        earlier.textContent = "show earlier lines (" + earlier.dataset.count + " more): that failed, try again";
      })
      .then(function () { earlier.removeAttribute("aria-busy"); });
  }

  if (earlier && logBox) earlier.addEventListener("click", showEarlier);

  // --- status and steps: the server renders them; swap in its fresh sections -------------------

  var refreshTimer = null;
  var refreshing = false;
  var refreshAgain = false; // a change arrived while a fetch was on its way: that fetch may predate it

  // Show a status at once; fetch the fresh sections when it changed, or when asked to (steps moved).
  function showStatus(status, refresh) {
    var pill = document.getElementById("status");
    if (pill && status && pill.dataset.status !== status) {
      pill.textContent = status.replace(/_/g, " ");
      pill.className = "pill status-" + status;
      pill.dataset.status = status;
      refresh = true;
    }
    if (refresh) scheduleRefresh();
  }

  function scheduleRefresh() {
    if (refreshing) { refreshAgain = true; return; }
    if (refreshTimer !== null) return;
    refreshTimer = setTimeout(refreshSections, 250);
  }

  function refreshSections() {
    refreshTimer = null;
    refreshing = true;
    fetch(location.pathname, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) { return response.ok ? response.text() : Promise.reject(response.status); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        ["summary", "steps", "action-buttons"].forEach(function (id) {
          var from = fresh.getElementById(id), to = document.getElementById(id);
          if (from && to) to.innerHTML = from.innerHTML;
        });
        applyToken();
      })
      .catch(function () { /* the next status change tries again */ })
      .then(function () {
        refreshing = false;
        if (refreshAgain) { refreshAgain = false; scheduleRefresh(); }
      });
  }

  function done(status) {
    finished = true;
    root.dataset.final = "true";
    if (logState) logState.textContent = "complete";
    showStatus(status, true);
  }

  // --- following: SSE first, polling when the browser or a proxy will not stream ------------------

  function follow() {
    if (finished || !logBox) return;
    if (!window.EventSource) { poll(0); return; }
    var url = root.dataset.eventsUrl + (lastId ? "?since=" + encodeURIComponent(lastId) : "");
    var source = new EventSource(url);
    var failures = 0;
    var lastState = "";
    source.onopen = function () { failures = 0; };
    source.addEventListener("log", function (event) {
      var entry = JSON.parse(event.data);
      append(event.lastEventId, entry.t, entry.line);
    });
    source.addEventListener("status", function (event) {
      // Each (re)connected stream starts with the current state: refresh only when it moved.
      if (event.data === lastState) return;
      lastState = event.data;
      showStatus(JSON.parse(event.data).status, true);
    });
    source.addEventListener("end", function (event) {
      source.close();
      done(JSON.parse(event.data).status);
    });
    source.onerror = function () {
      // The server ends each stream after a while and the browser reconnects on its own; only
      // repeated failures to reconnect mean the stream does not work here.
      failures += 1;
      if (source.readyState === EventSource.CLOSED || failures >= 3) {
        source.close();
        poll(0);
      }
    };
  }

  function poll(round) {
    if (finished) return;
    var url = root.dataset.logUrl + (lastId ? "?since=" + encodeURIComponent(lastId) : "");
    fetch(url, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : Promise.reject(response.status); })
      .then(function (body) {
        body.entries.forEach(function (entry) { append(entry.id, entry.t, entry.line); });
        if (body.final && body.entries.length < BATCH) { done(body.status); return; }
        showStatus(body.status, round % 5 === 4); // steps move without the status changing
        setTimeout(function () { poll(round + 1); }, body.entries.length >= BATCH ? 0 : 2000);
      })
      .catch(function () { setTimeout(function () { poll(round + 1); }, 5000); });
  }

  // --- actions with the API token ------------------------------------------------------------------

  var actions = document.getElementById("actions");
  var tokenForm = document.getElementById("token-form");
  var tokenInput = document.getElementById("api-token");
  var tokenSet = document.getElementById("token-set");
  var result = document.getElementById("action-result");

  function token() {
    try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
  }

  function setToken(value) {
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* storage disabled: actions stay hidden */ }
    applyToken();
  }

  function applyToken() {
    var has = token() !== "";
    var buttons = document.getElementById("action-buttons");
    if (buttons) buttons.hidden = !has;
    if (tokenForm) tokenForm.hidden = has;
    if (tokenSet) tokenSet.hidden = !has;
  }

  function say(text, kind) {
    if (!result) return;
    result.textContent = text;
    result.className = "action-result " + (kind || "");
  }

  function act(button) {
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    button.disabled = true;
    say("", "");
    fetch(button.dataset.url, {
      method: button.dataset.method || "POST",
      headers: { Authorization: "Bearer " + token(), "Content-Type": "application/json" },
      body: button.dataset.body || "{}",
      credentials: "same-origin",
    })
      .then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (body) {
          return { status: response.status, body: body };
        });
      })
      .then(function (reply) {
        if (reply.status === 401) { setToken(""); say(reply.body.error || "The API token was refused.", "error"); return; }
        if (reply.status >= 400) { say(reply.body.error || "Failed (HTTP " + reply.status + ").", "error"); return; }
        if (button.dataset.action === "cancel") { say("Cancelled.", "ok"); scheduleRefresh(); return; }
        say("Queued as deployment #" + reply.body.id + "; opening it.", "ok");
        location.assign(location.pathname.replace(/[^/]+$/, encodeURIComponent(reply.body.id)));
      })
      .catch(function () { say("The request failed: is deployhook reachable?", "error"); })
      .then(function () { button.disabled = false; });
  }

  if (actions) {
    actions.addEventListener("click", function (event) {
      var button = event.target.closest("button[data-action]");
      if (button) act(button);
      if (event.target.id === "forget-token") { setToken(""); say("", ""); }
    });
  }
  if (tokenForm) {
    tokenForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var value = tokenInput.value.trim();
      tokenInput.value = "";
      setToken(value);
    });
  }

  applyToken();
  if (logBox) logBox.scrollTop = logBox.scrollHeight;
  follow();
})();
