// The hub app's plots: uPlot drawing the API's JSON. The time plot asks the hub for the window
// at the plot's width (min/max per pixel column) and asks again when zoomed; a running test is
// followed by polling its summary.
"use strict";
(function () {
  const api = (path) =>
    fetch(path, { credentials: "same-origin" }).then((r) => {
      if (!r.ok) {
        return r.json().then((e) => { throw new Error(e.error || r.statusText); },
          () => { throw new Error(r.statusText); });
      }
      return r.json();
    });

  const width = (el) => Math.max(280, Math.min(el.clientWidth || 800, 1600));
  const palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

  function makePlot(el, opts, data) {
    el.textContent = "";
    const o = Object.assign({ width: width(el), height: 260 }, opts);
    const plot = new uPlot(o, data, el);
    window.addEventListener("resize", () => plot.setSize({ width: width(el), height: o.height }));
    return plot;
  }

  function status(text) {
    const s = document.getElementById("plot-status");
    if (s) s.textContent = text;
  }

  // --- the test page -------------------------------------------------------------------------
  function testPage(section) {
    const id = section.dataset.testId;
    const base = "/api/v1/tests/" + encodeURIComponent(id);
    const el = document.getElementById("plot-vit");
    let plot = null;
    let zoomed = null; // [from, to] while zoomed in
    let loading = false;

    function load() {
      if (loading) return Promise.resolve();
      loading = true;
      let q = base + "/plot?series=voltage_v,current_a,temperature_c&width=" + width(el);
      if (zoomed) q += "&from=" + zoomed[0] + "&to=" + zoomed[1];
      const started = performance.now();
      return api(q).then((p) => {
        const data = [p.t, p.series.voltage_v, p.series.current_a, p.series.temperature_c];
        if (!plot) {
          plot = makePlot(el, {
            scales: { x: { time: false } },
            axes: [{ label: "test time / s" }, { scale: "V", label: "V" },
              { scale: "A", side: 1, label: "A", grid: { show: false } }],
            series: [{ label: "t / s" },
              { label: "voltage / V", scale: "V", stroke: palette[0], spanGaps: false },
              { label: "current / A", scale: "A", stroke: palette[1] },
              { label: "temperature / °C", scale: "°C", stroke: palette[2] }],
            cursor: { drag: { x: true, y: false } },
            hooks: {
              setSelect: [(u) => {
                if (u.select.width < 2) return;
                const a = u.posToVal(u.select.left, "x");
                const b = u.posToVal(u.select.left + u.select.width, "x");
                u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
                zoomed = [Math.max(0, a), Math.max(0, b)];
                load();
              }],
            },
          }, data);
        } else {
          plot.setData(data);
        }
        status(p.samples + " samples" + (p.reduced ? " reduced to " + p.t.length + " points" : "")
          + " in " + Math.round(performance.now() - started) + " ms");
        el.dataset.loaded = String(p.t.length);
      }).catch((e) => status("plot failed: " + e.message)).finally(() => { loading = false; });
    }

    function cycles() {
      return api(base + "/cycles").then((c) => {
        const x = c.cycles.map((r) => r.cycle);
        const col = (k) => c.cycles.map((r) => (r[k] == null ? null : r[k]));
        const xAxis = { label: "cycle" };
        makePlot(document.getElementById("plot-capacity"), {
          height: 200, scales: { x: { time: false } }, axes: [xAxis, { label: "Ah" }],
          series: [{ label: "cycle" }, { label: "charge / Ah", stroke: palette[0] },
            { label: "discharge / Ah", stroke: palette[1] }],
        }, [x, col("charge_capacity_ah"), col("discharge_capacity_ah")]);
        makePlot(document.getElementById("plot-efficiency"), {
          height: 200, scales: { x: { time: false } }, axes: [xAxis, { label: "efficiency" }],
          series: [{ label: "cycle" }, { label: "coulombic", stroke: palette[2] },
            { label: "energy", stroke: palette[3] }],
        }, [x, col("coulombic_efficiency"), col("energy_efficiency")]);
        makePlot(document.getElementById("plot-retention"), {
          height: 200, scales: { x: { time: false } }, axes: [xAxis, { label: "retention" }],
          series: [{ label: "cycle" }, { label: "retention", stroke: palette[4] }],
        }, [x, col("capacity_retention")]);
      }).catch((e) => status("cycles failed: " + e.message));
    }

    function dqdv(cyclesText) {
      const el2 = document.getElementById("plot-dqdv");
      return api(base + "/dqdv?cycles=" + encodeURIComponent(cyclesText)).then((d) => {
        // Bins share one 5 mV grid: align every curve on the union of their voltages.
        const keys = new Set();
        const curves = [];
        d.cycles.forEach((c) => {
          ["charge", "discharge"].forEach((dir) => {
            const m = new Map();
            c[dir].voltage_v.forEach((v, i) => {
              const k = Math.round(v / d.bin_v);
              keys.add(k);
              m.set(k, c[dir].dqdv_ah_per_v[i]);
            });
            curves.push({ label: "cycle " + c.cycle + " " + dir, m });
          });
        });
        const ks = Array.from(keys).sort((a, b) => a - b);
        const data = [ks.map((k) => k * d.bin_v)]
          .concat(curves.map((c) => ks.map((k) => (c.m.has(k) ? c.m.get(k) : null))));
        makePlot(el2, {
          height: 260, scales: { x: { time: false } },
          axes: [{ label: "V" }, { label: "dQ/dV / Ah/V" }],
          series: [{ label: "V" }].concat(curves.map((c, i) =>
            ({ label: c.label, stroke: palette[i % palette.length] }))),
        }, data);
      }).catch((e) => { el2.textContent = "dQ/dV failed: " + e.message; });
    }

    document.getElementById("reset-zoom").addEventListener("click", () => { zoomed = null; load(); });
    document.getElementById("dqdv-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      dqdv(document.getElementById("dqdv-cycles").value);
    });
    load();
    cycles();
    dqdv(document.getElementById("dqdv-cycles").value);

    // Follow a running test: poll its summary, redraw when samples arrived.
    if (section.dataset.running === "true") {
      let count = -1;
      const tick = () => api(base).then((d) => {
        const s = d.summary;
        document.getElementById("samples").textContent = s.sample_count;
        const st = document.getElementById("state");
        st.textContent = s.state;
        st.className = "state-" + s.state;
        if (s.sample_count !== count) {
          count = s.sample_count;
          if (!zoomed) load();
          cycles();
        }
        if (s.state === "running") setTimeout(tick, 2000);
      }).catch(() => setTimeout(tick, 5000));
      setTimeout(tick, 2000);
    }
  }

  // --- several tests' retention ----------------------------------------------------------------
  function comparePage(div) {
    const ids = div.dataset.tests.split(",").filter((s) => s);
    if (!ids.length) return;
    Promise.all(ids.map((id) => api("/api/v1/tests/" + encodeURIComponent(id) + "/cycles")))
      .then((all) => {
        const xs = new Set();
        all.forEach((c) => c.cycles.forEach((r) => xs.add(r.cycle)));
        const x = Array.from(xs).sort((a, b) => a - b);
        const data = [x].concat(all.map((c) => {
          const m = new Map(c.cycles.map((r) => [r.cycle, r.capacity_retention]));
          return x.map((k) => (m.has(k) && m.get(k) != null ? m.get(k) : null));
        }));
        makePlot(document.getElementById("plot-compare"), {
          height: 320, scales: { x: { time: false } },
          axes: [{ label: "cycle" }, { label: "retention" }],
          series: [{ label: "cycle" }].concat(ids.map((id, i) =>
            ({ label: id.slice(0, 8), stroke: palette[i % palette.length], spanGaps: true }))),
        }, data);
      })
      .catch((e) => { document.getElementById("plot-compare").textContent = "failed: " + e.message; });
  }

  function start() {
    const section = document.getElementById("plots");
    if (section) testPage(section);
    const compare = document.getElementById("compare");
    if (compare) comparePage(compare);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
