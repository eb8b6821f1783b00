// Ronin's dashboard, on every page: live job progress and the overview's change list.
// The pages are complete without this file; it only keeps them current. Updates are
// buffered and applied at most once per 500 ms, whatever the rate of events.
(function () {
  "use strict";
  var TICK_MS = 500;
  var MAX_JOB_STREAMS = 3; // each stream holds one of the browser's connections to this node
  var ronin = (window.ronin = window.ronin || {});

  // fn(batch) called at most once per TICK_MS with the items pushed since the last call.
  ronin.coalesce = function (fn) {
    var buffer = [];
    var timer = null;
    return function (item) {
      buffer.push(item);
      if (timer === null) {
        timer = setTimeout(function () {
          timer = null;
          var batch = buffer;
          buffer = [];
          fn(batch);
        }, TICK_MS);
      }
    };
  };

  ronin.ready = function () {
    document.body.dataset.ready = "1";
  };

  ronin.nodePath = function (id) {
    return "/nodes/" + encodeURIComponent(id).replace(/%3A/gi, ":").replace(/%40/g, "@");
  };

  ronin.number = function (n) {
    return Number(n).toLocaleString("en-US");
  };

  function el(tag, text, attrs) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    for (var name in attrs || {}) node.setAttribute(name, attrs[name]);
    return node;
  }
  ronin.el = el;

  // Job progress: every running job on the page, from its event stream.
  function followJobs() {
    var seen = {};
    var ids = [];
    document.querySelectorAll(".progress[data-job]").forEach(function (bar) {
      var status = bar.dataset.status;
      var id = bar.dataset.job;
      if ((status === "running" || status === "pending") && !seen[id]) {
        seen[id] = true;
        ids.push(id);
      }
    });
    ids.slice(0, MAX_JOB_STREAMS).forEach(followJob);
  }

  function showJob(id, status, progress, message) {
    document.querySelectorAll('.progress[data-job="' + id + '"]').forEach(function (bar) {
      bar.dataset.status = status;
      var meter = bar.querySelector("progress");
      if (meter) {
        meter.value = status === "completed" ? 100 : progress;
        meter.textContent = progress + "%";
      }
      var text = bar.querySelector(".progress-text");
      if (text) {
        text.textContent =
          status === "running" ? status + " " + progress + "%" + (message ? " · " + message : "") : status;
      }
    });
  }

  function followJob(id) {
    var source = new EventSource("/v1/jobs/" + encodeURIComponent(id) + "/events");
    var last = null;
    var apply = ronin.coalesce(function () {
      if (last) showJob(id, last.status, last.progress, last.message);
    });
    source.addEventListener("TASK_PROGRESS", function (event) {
      var payload = JSON.parse(event.data).payload || {};
      last = { status: "running", progress: payload.progress || 0, message: payload.message || "" };
      apply(last);
    });
    source.addEventListener("TASK_RESPONSE", function (event) {
      var payload = JSON.parse(event.data).payload || {};
      source.close();
      last = { status: payload.status || "completed", progress: 100, message: "" };
      apply(last);
      var result = document.getElementById("job-result");
      if (result && document.body.dataset.page === "job") {
        var note = el("p", "The job has ended: ");
        note.appendChild(el("a", "reload for its result", { href: location.pathname }));
        note.id = "job-ended";
        result.replaceWith(note);
      }
    });
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) source.close();
    };
  }

  // The overview: the last changes and the services per state, live.
  function followChanges() {
    var table = document.getElementById("change-list");
    if (!table) return;
    var body = table.tBodies[0];
    var keep = Math.max(body.rows.length, 20);
    var counts = document.getElementById("state-counts");
    var apply = ronin.coalesce(function (batch) {
      var empty = body.querySelector("tr.empty");
      if (empty) empty.remove();
      batch.forEach(function (change) {
        var row = el("tr");
        row.appendChild(el("td", change.at.replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC")));
        var what = change.type;
        if (change.type === "service_state") what += ": " + change.from + " → " + change.to;
        row.appendChild(el("td", what));
        var nodeCell = el("td");
        nodeCell.appendChild(el("a", change.node_id, { href: ronin.nodePath(change.node_id) }));
        row.appendChild(nodeCell);
        row.appendChild(el("td", change.service_id));
        body.insertBefore(row, body.firstChild);
        if (counts) count(counts, change);
      });
      while (body.rows.length > keep) body.deleteRow(body.rows.length - 1);
    });
    var source = new EventSource("/v1/changes/stream?since=" + encodeURIComponent(table.dataset.cursor));
    ["service_added", "service_changed", "service_state", "service_removed"].forEach(function (type) {
      source.addEventListener(type, function (event) {
        apply(JSON.parse(event.data));
      });
    });
  }

  function count(table, change) {
    function add(state, delta) {
      var cell = table.querySelector('tr[data-state="' + state + '"] td[data-count="services"]');
      if (!cell) return;
      var value = Number(cell.textContent.replace(/,/g, "")) + delta;
      cell.textContent = ronin.number(Math.max(0, value));
    }
    if (change.type === "service_state") {
      add(change.from, -1);
      add(change.to, 1);
    } else if (change.type === "service_added") {
      add(change.service.state, 1);
    } else if (change.type === "service_removed") {
      add(change.service.state, -1);
    }
  }

  // A node's page: its state, its services' states and its history, from the changes to it.
  function followNode() {
    var box = document.getElementById("node");
    if (!box) return;
    var id = box.dataset.node;
    var apply = ronin.coalesce(function () {
      fetch("/v1/nodes/" + ronin.nodePath(id).slice("/nodes/".length), { credentials: "same-origin" })
        .then(function (answer) { return answer.ok ? answer.json() : null; })
        .then(function (node) { if (node) showNode(node); }, function () {});
    });
    var query = "?node_id=" + encodeURIComponent(id) + "&since=" + encodeURIComponent(box.dataset.cursor);
    var source = new EventSource("/v1/changes/stream" + query);
    ["service_added", "service_changed", "service_state", "service_removed"].forEach(function (type) {
      source.addEventListener(type, apply);
    });
  }

  function badge(state) {
    return el("span", state, { "class": "state state-" + state });
  }

  function showNode(node) {
    document.getElementById("node-state").replaceChildren(badge(node.state));
    node.services.forEach(function (service) {
      var row = document.querySelector('tr[data-service="' + CSS.escape(service.service_id) + '"]');
      var cell = row && row.querySelector(".state");
      if (cell) cell.replaceWith(badge(service.state));
    });
    var history = document.getElementById("state-history");
    if (!history || !node.history.length) return;
    var body = history.tBodies[0];
    body.replaceChildren();
    node.history.forEach(function (change) {
      var row = el("tr");
      row.appendChild(el("td", change.at.replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC")));
      row.appendChild(el("td", change.service_id));
      [change["from"], change.to].forEach(function (state) {
        var cell = el("td");
        cell.appendChild(state ? badge(state) : document.createTextNode("\u2013"));
        row.appendChild(cell);
      });
      body.appendChild(row);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (window.EventSource) {
      followJobs();
      followChanges();
      followNode();
    }
    if (document.body.dataset.page !== "network") ronin.ready();
  });
})();
