// Live progress of a job page: Server-Sent Events from /api/v1/jobs/ID/events. Once the job
// ends, the page reloads to show the result as the server renders it.
(function () {
  "use strict";
  var root = document.getElementById("job");
  if (!root || !window.EventSource) { return; }
  var id = root.getAttribute("data-job");
  var final = ["done", "failed", "interrupted"];
  if (final.indexOf(root.getAttribute("data-state")) >= 0) { return; }
  var source = new EventSource("/api/v1/jobs/" + encodeURIComponent(id) + "/events");

  function size(n) {
    var units = ["B", "KiB", "MiB", "GiB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? String(n) : n.toFixed(1)) + " " + units[i];
  }
  function cell(row, value, className) {
    var td = document.createElement("td");
    if (className) { td.className = className; }
    if (typeof value === "string") { td.textContent = value; } else { td.appendChild(value); }
    row.appendChild(td);
  }
  function drives(progress) {
    var body = document.getElementById("job-drives");
    if (!body || !progress.drives || !Object.keys(progress.drives).length) { return; }
    while (body.firstChild) { body.removeChild(body.firstChild); }
    Object.keys(progress.drives).sort().forEach(function (serial) {
      var d = progress.drives[serial];
      var row = document.createElement("tr");
      var bar = document.createElement("progress");
      bar.max = d.total || 1;
      bar.value = d.done;
      cell(row, serial, "mono");
      cell(row, d.total && d.done >= d.total ? "written" : d.done ? "writing" : "waiting");
      cell(row, size(d.done) + " of " + size(d.total), "num");
      cell(row, bar);
      cell(row, (d.total ? Math.floor(100 * d.done / d.total) : 0) + "%", "num");
      body.appendChild(row);
    });
  }
  function timeLeft(seconds) {
    if (seconds < 90) { return "about " + Math.max(1, Math.round(seconds)) + " s"; }
    return "about " + Math.round(seconds / 60) + " min";
  }
  source.addEventListener("state", function (event) {
    var job = JSON.parse(event.data);
    var state = document.getElementById("job-state");
    if (state) { state.textContent = job.state; }
    var phase = document.getElementById("job-phase");
    var progress = job.progress || {};
    if (phase) {
      var text = progress.phase || "";
      if (progress.total) { text += " (" + progress.done + " of " + progress.total + ")"; }
      if (typeof progress.left_s === "number" && progress.left_s > 0) {
        text += ", " + timeLeft(progress.left_s) + " left";
      }
      phase.textContent = text;
    }
    drives(progress);
    if (final.indexOf(job.state) >= 0) {
      source.close();
      window.location.reload();
    }
  });
  source.addEventListener("end", function () { source.close(); });
})();
