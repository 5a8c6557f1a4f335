// The overview's charts from the JSON data block (no inline script: the CSP forbids it), a "No data yet"
// note for an empty chart, and the optional auto-refresh (remembered in this browser).
(function () {
  "use strict";
  var refresh = document.getElementById("auto-refresh");
  if (refresh) {
    refresh.checked = window.localStorage.getItem("parley-refresh") === "1";
    var timer = null;
    var arm = function () {
      if (timer) { window.clearTimeout(timer); timer = null; }
      if (refresh.checked) { timer = window.setTimeout(function () { window.location.reload(); }, 60000); }
    };
    refresh.addEventListener("change", function () {
      window.localStorage.setItem("parley-refresh", refresh.checked ? "1" : "0");
      arm();
    });
    arm();
  }
  var block = document.getElementById("chart-data");
  if (!block || typeof Chart === "undefined") { return; }
  var d = JSON.parse(block.textContent);
  Chart.defaults.font.size = 13;
  Chart.defaults.color = "#333";
  function set(label, data, color) {
    return { label: label, data: data, borderColor: color, backgroundColor: color, spanGaps: true,
             pointRadius: 3, borderWidth: 2 };
  }
  function options(yTitle) {
    return {
      animation: false, responsive: true, maintainAspectRatio: false,
      plugins: { legend: { position: "bottom" } },
      scales: {
        x: { ticks: { maxRotation: 0, autoSkip: true, autoSkipPadding: 12 } },
        y: { beginAtZero: true, title: { display: !!yTitle, text: yTitle }, ticks: { precision: 0 } }
      }
    };
  }
  var turns = d.hourly
    ? [set("replies", d.answers, "#2f7ed8")]
    : [set("answers", d.answers, "#2f7ed8"), set("handoffs", d.handoffs, "#8bbc21"),
       set("refusals", d.refusals, "#f28f43"), set("errors", d.errors, "#c42525")];
  var specs = {
    turns: { type: "bar", labels: d.labels, sets: turns, y: "replies" },
    tokens: { type: "bar", labels: d.days, sets: [set("tokens in", d.tok_in, "#1aadce"),
                                                  set("tokens out", d.tok_out, "#492970")], y: "tokens" },
    cost: { type: "line", labels: d.days, sets: [set("USD", d.cost, "#77a1e5")], y: "USD" },
    feedback: { type: "bar", labels: d.days, sets: [set("thumbs up", d.up, "#8bbc21"),
                                                    set("thumbs down", d.down, "#c42525")], y: "votes" },
    latency: { type: "bar", labels: d.days, sets: [set("p50", d.p50, "#2f7ed8"),
                                                   set("p95", d.p95, "#f28f43")], y: "seconds" }
  };
  function empty(sets) {
    return sets.every(function (s) { return s.data.every(function (v) { return v === null || v === 0; }); });
  }
  document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
    var name = canvas.getAttribute("data-chart");
    var spec = specs[name];
    if (!spec) { return; }
    if (empty(spec.sets)) {
      canvas.hidden = true;
      var note = document.querySelector('[data-empty-for="' + name + '"]');
      if (note) { note.hidden = false; }
      return;
    }
    var opts = options(spec.y);
    if (name === "cost") { opts.scales.y.ticks = {}; }
    if (name === "latency") { opts.scales.y.ticks = {}; }
    new Chart(canvas, { type: spec.type, data: { labels: spec.labels, datasets: spec.sets }, options: opts });
  });
  document.body.setAttribute("data-charts", "drawn");
})();
