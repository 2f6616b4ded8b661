// The monitor's pages: live values from /events (server-sent events), plots with uPlot.
// The server formats every value; this script only puts them in place.
"use strict";
var cyclerdMonitor = (function () {
  function setFields(root, view) {
    root.querySelectorAll("[data-field]").forEach(function (el) {
      var name = el.dataset.field;
      if (!(name in view)) return;
      var text = view[name] === null ? "" : String(view[name]);
      if (el.textContent !== text) el.textContent = text;
      if (name === "state") el.className = "state-" + view.state;
    });
  }

  function live(url, handlers) {
    var status = document.getElementById("live");
    var source = new EventSource(url);
    source.onopen = function () { if (status) status.textContent = "connected"; };
    source.onerror = function () { if (status) status.textContent = "reconnecting…"; };
    Object.keys(handlers).forEach(function (name) {
      source.addEventListener(name, function (e) { handlers[name](JSON.parse(e.data)); });
    });
    return source;
  }

  function showStatus(st) {
    var hub = document.getElementById("hub");
    if (hub) hub.textContent = st.hub;
    showAlerts(st.alerts || []);
    var alarms = document.getElementById("alarms");
    if (!alarms) return;
    var now = st.alarms.join("\n");
    if (alarms.dataset.shown === now) return;
    alarms.dataset.shown = now;
    alarms.textContent = "";
    st.alarms.forEach(function (a) {
      var p = document.createElement("p");
      p.className = "alarm";
      p.textContent = a;
      alarms.appendChild(p);
    });
  }

  // The alerts section: a heading and one paragraph per alert, redrawn only when they change.
  function showAlerts(list) {
    var box = document.getElementById("alerts");
    if (!box) return;
    var now = list.join("\n");
    if (box.dataset.shown === now) return;
    box.dataset.shown = now;
    box.textContent = "";
    if (list.length === 0) return;
    var h = document.createElement("h2");
    h.textContent = "Alerts";
    box.appendChild(h);
    list.forEach(function (a) {
      var p = document.createElement("p");
      if (a.indexOf("NOT SENT") >= 0) p.className = "alarm";
      p.textContent = a;
      box.appendChild(p);
    });
  }

  function overview() {
    live("/events", {
      channel: function (view) {
        var row = document.querySelector('tr[data-channel="' + CSS.escape(view.channel) + '"]');
        if (row) setFields(row, view);
      },
      status: showStatus,
    });
  }

  function plot(id, label, stroke) {
    var el = document.getElementById(id);
    var width = function () { return Math.max(240, el.clientWidth || 320); };
    var u = new uPlot({
      width: width(),
      height: 240,
      scales: { x: { time: false } },
      series: [{ label: "test time (h)" }, { label: label, stroke: stroke, width: 1.5 }],
      axes: [{ label: "test time (h)" }, {}],
    }, [[], []], el);
    window.addEventListener("resize", function () { u.setSize({ width: width(), height: 240 }); });
    return u;
  }

  function fixed(x, n) { return x === null || x === undefined ? "–" : Number(x).toFixed(n); }

  function channel(id) {
    var plots = {
      v: plot("plot-v", "V", "#0b63c4"),
      i: plot("plot-i", "A", "#c4261d"),
      temp: plot("plot-t", "°C", "#9a6700"),
    };
    var rec = { test_id: "", t: [], v: [], i: [], temp: [], cycles: [] };
    var lastSamples = -1;
    var dirty = false;
    var body = document.querySelector("#cycles tbody");

    function addCycle(c) {
      var tr = document.createElement("tr");
      [String(c.cycle), fixed(c.discharge_ah, 4), fixed(c.coulombic_efficiency * 100, 2) + " %"].forEach(function (text) {
        var td = document.createElement("td");
        td.className = "num";
        td.textContent = text;
        tr.appendChild(td);
      });
      body.appendChild(tr);
    }
    function reset(testId) {
      rec = { test_id: testId, t: [], v: [], i: [], temp: [], cycles: [] };
      body.textContent = "";
      lastSamples = -1;
      dirty = true;
    }
    function redraw() {
      if (!dirty) return;
      dirty = false;
      var hours = rec.t.map(function (s) { return s / 3600; });
      plots.v.setData([hours, rec.v]);
      plots.i.setData([hours, rec.i]);
      plots.temp.setData([hours, rec.temp]);
      // How many points are drawn, for whoever checks the page (a test, a screen reader).
      document.getElementById("plot-v").dataset.points = String(rec.t.length);
    }
    var source = null;
    fetch("/channel/" + id + "/history", { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error("history: HTTP " + r.status); return r.json(); })
      .then(function (h) {
        rec = h;
        rec.cycles.forEach(addCycle);
        dirty = true;
        redraw();
      })
      .catch(function (e) { var s = document.getElementById("live"); if (s) s.textContent = String(e); })
      .finally(function () {
        source = live("/events?channel=" + encodeURIComponent(id), {
          channel: function (view) {
            setFields(document.getElementById("now"), view);
            if (!view.test_id) return;
            if (view.test_id !== rec.test_id) reset(view.test_id);
            if (view.samples !== lastSamples && view.v !== null) {
              lastSamples = view.samples;
              var n = rec.t.length;
              if (n === 0 || view.t > rec.t[n - 1]) {
                rec.t.push(view.t); rec.v.push(view.v); rec.i.push(view.i); rec.temp.push(view.temp);
                dirty = true;
              }
            }
            var last = rec.cycles.length ? rec.cycles[rec.cycles.length - 1].cycle : 0;
            if (view.last_full_cycle > last) {
              var c = { cycle: view.last_full_cycle, discharge_ah: view.last_full_discharge_ah,
                        coulombic_efficiency: view.last_full_coulombic_efficiency };
              rec.cycles.push(c);
              addCycle(c);
            }
          },
        });
      });
    // Redraw at most 4 times a second, whatever the sample rate.
    setInterval(redraw, 250);
    return function () { if (source) source.close(); };
  }

  return { overview: overview, channel: channel };
})();
