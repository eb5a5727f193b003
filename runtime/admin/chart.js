// Live traffic on the status page: polls /status.json every 2 s (same origin, session
// cookie) and draws requests per second for the last 60 samples as an SVG line.
// Served from 9090 itself; the page's CSP allows no inline script and no other origin.
"use strict";
(function () {
  var svg = document.getElementById("traffic");
  if (!svg) { return; }
  var NS = "http://www.w3.org/2000/svg";
  var line = document.createElementNS(NS, "polyline");
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "#1f6feb");
  line.setAttribute("stroke-width", "2");
  svg.appendChild(line);
  var rate = document.getElementById("rate");
  var samples = [];
  var last = null;
  function total(snap) {
    var sum = 0, vs = snap.virtual_servers || {};
    Object.keys(vs).forEach(function (k) { sum += vs[k].requests || 0; });
    return sum;
  }
  function draw() {
    var max = Math.max.apply(null, samples.concat([1]));
    var points = samples.map(function (v, i) {
      return (i * 600 / 59).toFixed(1) + "," + (115 - (v / max) * 110).toFixed(1);
    });
    line.setAttribute("points", points.join(" "));
  }
  function poll() {
    fetch("/status.json", {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (snap) {
        if (!snap) { return; }
        var now = {t: snap.time, n: total(snap)};
        if (last && now.t > last.t) {
          var r = Math.max(0, (now.n - last.n) / (now.t - last.t));
          samples.push(r);
          if (samples.length > 60) { samples.shift(); }
          rate.textContent = r.toFixed(1) + " requests/s (" + now.n + " in total)";
          svg.setAttribute("data-samples", String(samples.length));
          draw();
        }
        last = now;
      })
      .catch(function () { /* the next poll tries again */ });
  }
  poll();
  setInterval(poll, 2000);
})();
