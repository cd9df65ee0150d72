// Raftka console: live parts of the pages (node health, charts). Plain DOM, no framework.
"use strict";
window.raftka = (function () {
  const charts = {};
  const palette = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2",
                   "#db2777", "#65a30d", "#4b5563", "#ea580c"];

  function text(el, value) { if (el) el.textContent = value; }

  function renderNodes(data) {
    const body = document.querySelector("#nodes tbody");
    if (!body) return;
    body.replaceChildren(...data.nodes.map(function (n) {
      const tr = document.createElement("tr");
      tr.id = "node-" + n.id;
      tr.className = n.healthy ? "up" : (n.reachable ? "degraded" : "down");
      const health = n.healthy ? "healthy" : (n.reachable
        ? "reachable, cut off from " + n.seen_down_by.join(", ") : "unreachable");
      const cells = [String(n.id), n.address, health, String(n.leader_count),
                     String(n.replica_count), n.seen_down_by.join(", ") || "—"];
      cells.forEach(function (c, i) {
        const td = document.createElement("td");
        td.textContent = c;
        if (i === 2) td.className = "health";
        if (i === 0 && n.id === data.controller_id) {
          const tag = document.createElement("span");
          tag.className = "tag"; tag.textContent = "controller";
          td.append(" ", tag);
        }
        tr.append(td);
      });
      return tr;
    }));
    const up = data.nodes.filter(function (n) { return n.reachable; }).length;
    text(document.getElementById("nodes-up"), up + " / " + data.nodes.length);
    text(document.getElementById("controller"), data.controller_id || "none");
    text(document.getElementById("partitions"), data.partition_count);
    const under = document.getElementById("under-replicated");
    text(under, data.under_replicated.length);
    if (under) under.classList.toggle("bad", data.under_replicated.length > 0);
  }

  function pollOverview(url, periodMs) {
    async function once() {
      try {
        const response = await fetch(url, {cache: "no-store"});
        const data = await response.json();
        if (!response.ok) throw new Error(data.error || response.statusText);
        renderNodes(data);
        text(document.getElementById("overview-error"), "");
        text(document.getElementById("overview-at"), "Last update " + new Date(data.at).toISOString());
      } catch (e) {
        text(document.getElementById("overview-error"), "Cannot reach the cluster: " + e.message + ". ");
      }
    }
    setInterval(once, periodMs);
  }

  function lineChart(canvasId, url, periodMs, yLabel) {
    const canvas = document.getElementById(canvasId);
    if (!canvas || !window.Chart) return;
    const chart = new Chart(canvas, {
      type: "line",
      data: {labels: [], datasets: []},
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        spanGaps: true, elements: {point: {radius: 0}},
        scales: {y: {beginAtZero: true, title: {display: true, text: yLabel}},
                 x: {ticks: {maxTicksLimit: 8}}},
        plugins: {legend: {position: "bottom"}},
      },
    });
    charts[canvasId] = chart;
    async function once() {
      try {
        const response = await fetch(url, {cache: "no-store"});
        if (!response.ok) return;
        const data = await response.json();
        chart.data.labels = data.times.map(function (t) { return new Date(t).toISOString().slice(11, 19); });
        chart.data.datasets = Object.keys(data.series).map(function (name, i) {
          const color = palette[i % palette.length];
          return {label: name, data: data.series[name], borderColor: color,
                  backgroundColor: color, borderWidth: 2, tension: 0.2};
        });
        chart.update();
      } catch (e) { /* the next poll tries again */ }
    }
    once();
    setInterval(once, Math.max(periodMs, 1000));
  }

  return {pollOverview: pollOverview, lineChart: lineChart, charts: charts};
})();
