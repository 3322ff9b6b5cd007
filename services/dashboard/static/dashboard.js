// kdesk dashboard: polls GET /api/page and swaps in the fragments and charts that changed (no reload).
// Rendering is the server's: this file only places HTML it was sent and hands figures to plotly.js.
(function () {
  "use strict";
  const root = document.getElementById("dashboard");
  if (!root) return;
  const refreshMs = Number(root.dataset.refreshMs) || 2000;
  const html = {};
  const drawn = {};
  const liveState = document.getElementById("live-state");
  let polls = 0;

  function say(text, bad) {
    if (!liveState) return;
    liveState.textContent = text;
    liveState.classList.toggle("bad", !!bad);
  }

  function draw(id, chart) {
    if (typeof Plotly === "undefined" || drawn[id] === chart.v) return;
    let el = document.getElementById("chart-" + id);
    if (!el) {
      const box = document.getElementById(chart.into);
      if (!box) return;
      el = document.createElement("div");
      el.id = "chart-" + id;
      el.className = "chart";
      box.appendChild(el);
    }
    Plotly.react(el, chart.figure.data || [], chart.figure.layout || {}, {displayModeBar: false, responsive: true});
    drawn[id] = chart.v;
  }

  async function poll() {
    try {
      const r = await fetch("/api/page", {credentials: "same-origin", cache: "no-store",
                                          headers: {"Accept": "application/json"}});
      if (r.status === 401) { window.location.assign("/login"); return; }
      if (!r.ok) throw new Error("HTTP " + r.status);
      const d = await r.json();
      for (const [name, fragment] of Object.entries(d.panels)) {
        if (html[name] === fragment) continue;
        const el = document.querySelector('[data-panel="' + name + '"]');
        if (el) { el.innerHTML = fragment; html[name] = fragment; }
      }
      for (const [id, chart] of Object.entries(d.charts)) draw(id, chart);
      polls += 1;
      root.dataset.polls = String(polls);
      root.dataset.updated = d.generated_at;
      const age = d.ages_s && d.ages_s.status;
      say("live · updated " + d.generated_at.slice(11, 19) + " UTC" +
          (typeof age === "number" ? " · executor answer " + age.toFixed(1) + " s old" : ""), false);
    } catch (e) {
      say("cannot reach the dashboard (" + e.message + "); retrying", true);
    } finally {
      window.setTimeout(poll, refreshMs);
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", poll);
  else poll();
})();
