// Live progress of a job: polls /ui/jobs/{id}/live.json while the job runs and draws the oracle's
// probability against queries. When the job ends the page reloads once to show frames and metrics.
(function () {
  "use strict";
  const section = document.getElementById("progress");
  if (!section) return;
  const svg = document.getElementById("curve");
  const NS = "http://www.w3.org/2000/svg";
  const W = 720, H = 240, L = 48, R = 12, T = 12, B = 36;

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceMax(n) {
    if (n <= 10) return 10;
    const p = Math.pow(10, Math.floor(Math.log10(n)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= n) return m * p;
    return 10 * p;
  }

  function draw(data) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const xMax = niceMax(Math.max(data.queries_used, 1));
    const x = (q) => L + (W - L - R) * q / xMax;
    const y = (p) => T + (H - T - B) * (1 - p);
    svg.appendChild(el("rect", {x: L, y: T, width: W - L - R, height: H - T - B, fill: "#fff", stroke: "#d8dbe2"}));
    for (const p of [0, 0.25, 0.5, 0.75, 1]) {
      svg.appendChild(el("line", {x1: L, x2: W - R, y1: y(p), y2: y(p), stroke: "#eee"}));
      svg.appendChild(el("text", {x: L - 6, y: y(p) + 4, "text-anchor": "end", "font-size": 11}, p.toFixed(2)));
    }
    for (let i = 0; i <= 5; i++) {
      const q = xMax * i / 5;
      svg.appendChild(el("text", {x: x(q), y: H - B + 16, "text-anchor": "middle", "font-size": 11},
                         Math.round(q).toLocaleString()));
    }
    svg.appendChild(el("text", {x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", "font-size": 12}, "queries"));
    svg.appendChild(el("text", {x: 12, y: (T + H - B) / 2, "text-anchor": "middle", "font-size": 12,
                                transform: `rotate(-90 12 ${(T + H - B) / 2})`}, "top-1 probability"));
    for (const [seq, prob, role] of data.points) {
      if (prob === null) continue;
      const dot = el("circle", {cx: x(seq), cy: y(prob), r: 2.2, class: role});
      dot.appendChild(el("title", {}, `query ${seq}: p = ${prob.toFixed(4)} (${role})`));
      svg.appendChild(dot);
    }
    svg.setAttribute("data-points", String(data.points.length));
    document.getElementById("curve-stride").textContent =
      data.stride > 1 ? `; every ${data.stride}th query is shown` : "";
  }

  function setField(name, value, text) {
    for (const node of section.querySelectorAll(`[data-field="${name}"]`)) {
      node.dataset.value = value === null ? "" : String(value);
      node.textContent = text;
    }
  }

  async function poll() {
    let data;
    try {
      const response = await fetch(section.dataset.liveUrl, {credentials: "same-origin", cache: "no-store"});
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      data = await response.json();
    } catch (err) {
      setField("live-status", null, `cannot reach the server (${err.message}); retrying`);
      setTimeout(poll, 3000);
      return;
    }
    setField("queries_used", data.queries_used, data.queries_used.toLocaleString());
    setField("best_score", data.best_score, data.best_score === null ? "—" : Number(data.best_score.toPrecision(4)).toString());
    setField("best_distance", data.best_distance, data.best_distance === null ? "—" : Number(data.best_distance.toPrecision(4)).toString());
    setField("live-status", data.status, data.status);
    section.querySelector(".fill").style.width = `${(100 * data.queries_used / data.max_queries).toFixed(1)}%`;
    draw(data);
    if (section.dataset.terminal === "true") return;
    if (data.terminal) { window.location.reload(); return; }
    setTimeout(poll, 1500);
  }
  poll();
})();
