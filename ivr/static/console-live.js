// Live calls: poll the JSON endpoint and redraw the table. Text goes in with textContent,
// never innerHTML, so nothing a caller or the recogniser produced can become markup.
(function () {
  "use strict";
  var table = document.getElementById("live-calls");
  if (!table) { return; }
  var body = table.querySelector("tbody");
  var empty = document.getElementById("live-empty");
  var updated = document.getElementById("live-updated");
  var columns = ["started", "on_line", "line", "language", "caller", "step",
                 "order_number", "ticket_number", "operator"];
  var numeric = { on_line: "num", caller: "mono", order_number: "mono", ticket_number: "mono" };
  var intervalMs = 3000;

  function draw(data) {
    var rows = document.createDocumentFragment();
    data.calls.forEach(function (call) {
      var tr = document.createElement("tr");
      tr.dataset.callSid = call.call_sid;
      columns.forEach(function (name) {
        var td = document.createElement("td");
        if (numeric[name]) { td.className = numeric[name]; }
        if (name === "started") {
          var link = document.createElement("a");
          link.href = call.url;
          link.textContent = call.started;
          td.appendChild(link);
        } else {
          td.textContent = call[name] == null ? "" : String(call[name]);
        }
        tr.appendChild(td);
      });
      rows.appendChild(tr);
    });
    body.replaceChildren(rows);
    empty.hidden = data.calls.length > 0;
    updated.textContent = data.updated;
    drawQueue(data.queue || []);
  }

  // The queue: who waits, how long, which operator is being rung.
  var queueTable = document.getElementById("live-queue");
  var queueEmpty = document.getElementById("queue-empty");
  var queueColumns = ["caller", "language", "ticket_number", "waiting", "ringing"];

  function drawQueue(queue) {
    if (!queueTable) { return; }
    var rows = document.createDocumentFragment();
    queue.forEach(function (entry) {
      var tr = document.createElement("tr");
      queueColumns.forEach(function (name) {
        var td = document.createElement("td");
        td.textContent = entry[name] == null ? "" : String(entry[name]);
        tr.appendChild(td);
      });
      rows.appendChild(tr);
    });
    queueTable.querySelector("tbody").replaceChildren(rows);
    if (queueEmpty) { queueEmpty.hidden = queue.length > 0; }
  }

  function poll() {
    fetch(table.dataset.source, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.status === 401) { window.location = table.dataset.login; return null; }
        return response.ok ? response.json() : null;
      })
      .then(function (data) { if (data) { draw(data); } })
      .catch(function () { /* offline for a moment: try again next time */ })
      .then(function () { window.setTimeout(poll, intervalMs); });
  }

  window.setTimeout(poll, intervalMs);
}());
