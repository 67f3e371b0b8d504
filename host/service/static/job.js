// Live progress of a job page: Server-Sent Events from /api/v1/jobs/ID/events.
(function () {
  "use strict";
  var root = document.getElementById("job");
  if (!root || !window.EventSource) { return; }
  var id = root.getAttribute("data-job");
  var final = ["done", "failed", "interrupted"];
  if (final.indexOf(root.getAttribute("data-state")) >= 0) { return; }
  var source = new EventSource("/api/v1/jobs/" + encodeURIComponent(id) + "/events");
  function text(el, value) { if (el) { el.textContent = value; } }
  function drives(progress) {
    var body = document.getElementById("job-drives");
    if (!body || !progress.drives) { return; }
    while (body.firstChild) { body.removeChild(body.firstChild); }
    Object.keys(progress.drives).sort().forEach(function (serial) {
      var d = progress.drives[serial];
      var pct = d.total ? Math.floor(100 * d.done / d.total) : 0;
      var row = document.createElement("tr");
      var name = document.createElement("td"); name.textContent = serial;
      var bytes = document.createElement("td"); bytes.textContent = d.done + " of " + d.total + " bytes";
      var cell = document.createElement("td");
      var bar = document.createElement("progress");
      bar.max = d.total || 1; bar.value = d.done; cell.appendChild(bar);
      var pctCell = document.createElement("td"); pctCell.textContent = pct + "%";
      row.appendChild(name); row.appendChild(bytes); row.appendChild(cell); row.appendChild(pctCell);
      body.appendChild(row);
    });
  }
  source.addEventListener("state", function (event) {
    var job = JSON.parse(event.data);
    text(document.getElementById("job-state"), job.state);
    text(document.getElementById("job-phase"), (job.progress && job.progress.phase) || "");
    drives(job.progress || {});
    if (final.indexOf(job.state) >= 0) {
      source.close();
      window.location.reload();
    }
  });
  source.addEventListener("end", function () { source.close(); });
})();
