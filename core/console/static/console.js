// Draws the overview's charts from the JSON data block (no inline script: the CSP forbids it).
(function () {
  "use strict";
  var block = document.getElementById("chart-data");
  if (!block || typeof Chart === "undefined") { return; }
  var d = JSON.parse(block.textContent);
  var common = { animation: false, responsive: false, plugins: { legend: { position: "bottom" } } };
  function line(label, data, color) {
    return { label: label, data: data, borderColor: color, backgroundColor: color, spanGaps: true };
  }
  var specs = {
    turns: { type: "bar", data: { labels: d.labels, datasets: [
      line("answers", d.answers, "#2f7ed8"), line("refusals", d.refusals, "#f28f43"),
      line("handoffs", d.handoffs, "#8bbc21"), line("errors", d.errors, "#c42525")] } },
    tokens: { type: "bar", data: { labels: d.labels, datasets: [
      line("tokens in", d.tok_in, "#1aadce"), line("tokens out", d.tok_out, "#492970")] } },
    cost: { type: "line", data: { labels: d.labels, datasets: [line("USD", d.cost, "#77a1e5")] } },
    feedback: { type: "bar", data: { labels: d.labels, datasets: [
      line("thumbs up", d.up, "#8bbc21"), line("thumbs down", d.down, "#c42525")] } },
    latency: { type: "line", data: { labels: d.labels, datasets: [
      line("p50", d.p50, "#2f7ed8"), line("p95", d.p95, "#f28f43")] } }
  };
  document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
    var spec = specs[canvas.getAttribute("data-chart")];
    if (spec) { new Chart(canvas, { type: spec.type, data: spec.data, options: common }); }
  });
  document.body.setAttribute("data-charts", "drawn");
})();
