// nexus-schedweb live updates: the daemon's Watch events arrive as Server-Sent
// Events on /events. Status badges update in place; the overview keeps a feed.
(function () {
  "use strict";
  if (!window.EventSource) { return; }
  var state = document.getElementById("live-state");
  var feed = document.getElementById("live-feed");
  var source = new EventSource("/events");

  function setState(up, text) {
    if (!state) { return; }
    state.className = "live " + (up ? "up" : "down");
    state.textContent = text;
  }

  function describe(change) {
    var job = change.job, run = change.run, parts = [];
    var name = job ? (job.name || job.id) : (run ? run.job_id : "");
    parts.push(change.kind.replace("_", " "), name);
    if (run && run.outcome) { parts.push("→ " + run.outcome); }
    if (run && run.duration_ms !== null && run.duration_ms !== undefined) {
      parts.push("(" + run.duration_ms.toFixed(1) + " ms)");
    }
    if (job && !run) { parts.push("→ " + job.status); }
    return parts.join(" ");
  }

  source.addEventListener("daemon", function (message) {
    var data = JSON.parse(message.data);
    setState(data.up, data.up ? "live" : "daemon down");
  });

  source.addEventListener("change", function (message) {
    var change = JSON.parse(message.data);
    setState(true, "live");
    if (change.job) {
      var badges = document.querySelectorAll("[data-job-status]");
      for (var i = 0; i < badges.length; i++) {
        if (badges[i].getAttribute("data-job-status") === change.job.id) {
          badges[i].textContent = change.job.status;
          badges[i].className = "badge s-" + change.job.status;
        }
      }
    }
    if (feed) {
      var empty = feed.querySelector(".empty");
      if (empty) { feed.removeChild(empty); }
      var item = document.createElement("li");
      var time = document.createElement("span");
      time.className = "rel";
      time.textContent = new Date(change.at).toLocaleTimeString() + " ";
      item.appendChild(time);
      item.appendChild(document.createTextNode(describe(change)));
      item.setAttribute("data-kind", change.kind);
      feed.insertBefore(item, feed.firstChild);
      while (feed.children.length > 25) { feed.removeChild(feed.lastChild); }
    }
  });

  source.onerror = function () { setState(false, "reconnecting…"); };
})();
