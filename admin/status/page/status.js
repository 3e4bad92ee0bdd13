// The edge status page: polls /status.json every second and redraws the tables.
// Counters arrive as totals; rates and percentiles are the difference between the
// newest poll and the one WINDOW polls before it.
"use strict";
(function () {
  var POLL_MS = 1000;
  var WINDOW = 5; // polls: rates over about five seconds
  var history = []; // [{t: seconds, s: status}], oldest first, at most WINDOW+1

  function $(id) { return document.getElementById(id); }

  // Formatting.
  function num(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    var a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(a >= 1e10 ? 0 : 1) + "G";
    if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(a >= 1e5 ? 0 : 1) + "k";
    return String(Math.round(v));
  }
  // count is an exact total, grouped in thousands: it moves with every request.
  function count(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    return String(Math.round(v)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }
  function rate(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    if (v === 0) return "0";
    if (Math.abs(v) < 10) return v.toFixed(1);
    return num(v);
  }
  function dur(s) {
    if (s === null || s === undefined || !isFinite(s)) return "–";
    if (s < 1e-3) return (s * 1e6).toFixed(0) + " µs";
    if (s < 1) return (s * 1e3).toFixed(s < 0.01 ? 2 : s < 0.1 ? 1 : 0) + " ms";
    if (s < 120) return s.toFixed(s < 10 ? 2 : 0) + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    if (s < 172800) return (s / 3600).toFixed(1) + " h";
    return Math.round(s / 86400) + " d";
  }
  function bytes(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    var units = ["B", "kB", "MB", "GB", "TB"], i = 0;
    while (Math.abs(v) >= 1000 && i < units.length - 1) { v /= 1000; i++; }
    return (i === 0 ? Math.round(v) : v.toFixed(v < 10 ? 1 : 0)) + " " + units[i];
  }
  function pct(v) { return v === null || !isFinite(v) ? "–" : (v * 100).toFixed(v >= 0.995 || v === 0 ? 0 : 1) + "%"; }

  // Lookups in an older poll.
  function byName(list, key) {
    var m = {};
    (list || []).forEach(function (x) { m[x[key || "name"]] = x; });
    return m;
  }
  function sumValues(o) {
    var s = 0;
    for (var k in o) if (Object.prototype.hasOwnProperty.call(o, k)) s += o[k];
    return s;
  }
  // perSec is the rate of a counter between the old and new value; null without an old one.
  function perSec(now, old, dt) {
    if (old === undefined || old === null || now === undefined || dt <= 0) return null;
    var d = now - old;
    return d < 0 ? now / dt : d / dt; // a restart resets counters
  }

  // quantile mirrors status.Quantile in Go: histogram_quantile's interpolation.
  function quantile(q, bounds, counts) {
    var total = counts[counts.length - 1];
    if (!(total > 0)) return null;
    var rank = q * total, i = 0;
    while (i < bounds.length && counts[i] < rank) i++;
    if (i === bounds.length) return i === 0 ? null : bounds[i - 1];
    var lo = i > 0 ? bounds[i - 1] : 0, below = i > 0 ? counts[i - 1] : 0;
    if (counts[i] === below) return bounds[i];
    return lo + (bounds[i] - lo) * (rank - below) / (counts[i] - below);
  }
  function windowQuantile(q, now, old) {
    if (!old || old.bounds.length !== now.bounds.length || old.counts[old.counts.length - 1] > now.counts[now.counts.length - 1]) {
      return null;
    }
    var counts = now.counts.map(function (c, i) { return c - old.counts[i]; });
    return quantile(q, now.bounds, counts);
  }

  // DOM building: el("td", {class: "n"}, "text", child…).
  function el(tag, attrs) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, attrs[k]);
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      e.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  function td(text, cls) { return el("td", cls ? { "class": cls } : null, text); }
  function badge(text, cls) { return el("span", { "class": "badge " + cls }, text); }
  // fill replaces the rows of table id; empty is the message when there are none.
  function fill(id, rows, empty) {
    var table = $(id), body = table.tBodies[0];
    var frag = document.createDocumentFragment();
    rows.forEach(function (r) { frag.appendChild(r); });
    if (rows.length === 0) {
      frag.appendChild(el("tr", null, el("td", { "class": "empty", colspan: String(table.tHead.rows[0].cells.length) }, empty)));
    }
    body.replaceChildren(frag);
  }
  function show(id, on) { $(id).hidden = !on; }
  function text(id, s) { $(id).textContent = s; }

  function render(now, old) {
    var s = now.s, o = old ? old.s : null, dt = old ? now.t - old.t : 0;
    var ro = o ? byName(o.routes) : {};

    // Summary.
    var total = 0, totalOld = 0, x5 = 0, x5Old = 0, complete = !!o;
    s.routes.forEach(function (r) {
      total += r.requests; x5 += r.classes["5xx"];
      var p = ro[r.name];
      if (p) { totalOld += p.requests; x5Old += p.classes["5xx"]; } else complete = false;
    });
    text("sum-rps", rate(complete ? perSec(total, totalOld, dt) : null));
    text("sum-5xx", rate(complete ? perSec(x5, x5Old, dt) : null));
    text("sum-banned", rate(o ? perSec(sumValues(s.bans.blocked), sumValues(o.bans.blocked), dt) : null));
    text("sum-inflight", num(s.edge.inflight));
    var cfg = $("sum-config");
    cfg.textContent = "v" + num(s.edge.config_version) + (s.edge.reload_ok ? "" : " · last reload failed");
    cfg.className = s.edge.reload_ok ? "" : "bad";
    text("sum-uptime", s.edge.start > 0 ? dur(s.time - s.edge.start) : "–");
    text("sum-version", s.edge.version || "–");
    var err = $("error");
    err.hidden = !s.error;
    err.textContent = s.error || "";

    // Routes.
    // Requests no route matched get a row once there are some.
    var routes = s.routes.filter(function (r) { return r.name !== "" || r.requests > 0; });
    fill("routes", routes.map(function (r) {
      var p = ro[r.name];
      var f = function (a, b) { return rate(p ? perSec(a, b, dt) : null); };
      var hit = null;
      if (r.cache) {
        var looked = function (c) { return c ? (c.hit || 0) + (c.stale || 0) + (c.revalidated || 0) + (c.miss || 0) : 0; };
        var served = function (c) { return c ? (c.hit || 0) + (c.stale || 0) + (c.revalidated || 0) : 0; };
        var dl = looked(r.cache) - (p ? looked(p.cache) : 0), ds = served(r.cache) - (p ? served(p.cache) : 0);
        if (p && dl > 0) hit = ds / dl;
        else if (looked(r.cache) > 0) hit = served(r.cache) / looked(r.cache); // idle: since start
      }
      var p50 = p ? windowQuantile(0.5, r.latency, p.latency) : null;
      var p99 = p ? windowQuantile(0.99, r.latency, p.latency) : null;
      var name = el("td", { "class": "name" }, r.name === "" ? el("span", { "class": "muted" }, "(no route)") : r.name);
      if (r.degraded) name.appendChild(badge("degraded", "warn"));
      var c5 = p ? perSec(r.classes["5xx"], p.classes["5xx"], dt) : null;
      return el("tr", { "data-route": r.name },
        name,
        td(f(r.requests, p && p.requests), "n rps"),
        td(count(r.requests), "n total"),
        td(f(r.classes["2xx"], p && p.classes["2xx"]), "n"),
        td(f(r.classes["3xx"], p && p.classes["3xx"]), "n"),
        td(f(r.classes["4xx"], p && p.classes["4xx"]), "n"),
        td(rate(c5), "n" + (c5 > 0 ? " bad" : "")),
        td(dur(p50), "n p50"),
        td(dur(p99), "n p99"),
        td(r.cache ? pct(hit) : "", "n"),
        td(f(r.limited, p && p.limited), "n"),
        td(f(r.shed, p && p.shed), "n"),
        td(num(r.inflight), "n"));
    }), "no routes");
    var b = s.bans, bo = o ? o.bans : null;
    text("bans", "Blacklist: " + rate(bo ? perSec(sumValues(b.blocked), sumValues(bo.blocked), dt) : null) +
      " blocked/s (" + num(sumValues(b.blocked)) + " since start) · " + num(sumValues(b.entries)) + " entries · " +
      num(b.auto_bans) + " auto-bans");

    // Upstreams and cells.
    var uo = o ? byName(o.upstreams) : {};
    fill("upstreams", s.upstreams.map(function (u) {
      var p = uo[u.name];
      var up = u.servers.filter(function (x) { return x.up; }).length;
      var down = u.servers.filter(function (x) { return !x.up; }).map(function (x) { return x.address; });
      var servers = el("td", { "class": up === u.servers.length ? "ok" : up === 0 ? "bad" : "warn" },
        up + "/" + u.servers.length + " up");
      if (down.length) servers.appendChild(el("span", { "class": "muted" }, " · down: " + down.join(", ")));
      var brk = u.breaker ? el("td", { "class": u.breaker === "closed" ? "ok" : u.breaker === "open" ? "bad" : "warn" },
        u.breaker.replace("_", "-")) : td("–", "muted");
      var name = el("td", { "class": "name" }, u.name);
      if (u.cell) name.appendChild(badge("cell", "muted"));
      return el("tr", { "data-upstream": u.name },
        name, servers, brk,
        td(u.inflight === undefined ? "–" : num(u.inflight), "n"),
        td(u.requests === undefined ? "–" : rate(p ? perSec(u.requests, p.requests, dt) : null), "n"),
        td(rate(p ? perSec(u.errors, p.errors, dt) : null), "n"),
        td(rate(p ? perSec(u.retries, p.retries, dt) : null), "n"));
    }), "no upstreams");

    // Seckill.
    show("seckill-section", !!s.seckill);
    if (s.seckill) {
      var k = s.seckill, ko = o && o.seckill ? o.seckill : null;
      var rq = function (name) { return rate(ko ? perSec(k.requests[name] || 0, ko.requests[name] || 0, dt) : null); };
      text("seckill-summary", "Store " + (k.store_up ? "up" : "DOWN") + " · token requests/s: " + rq("issued") + " issued, " +
        rq("sold_out") + " sold out, " + rq("repeat") + " repeat · orders: " + num(k.orders.ok || 0) + " ok");
      $("seckill-summary").className = "note" + (k.store_up ? "" : " bad");
      var io = ko ? byName(ko.items, "item") : {};
      fill("seckill", k.items.map(function (it) {
        var p = io[it.item];
        return el("tr", { "data-item": it.item }, td(it.item, "name"),
          td(num(it.stock), "n" + (it.stock === 0 ? " bad" : "")), td(num(it.issued), "n"),
          td(rate(p ? perSec(it.issued, p.issued, dt) : null), "n"));
      }), "no sale seen by this node");
    }

    // Waiting rooms.
    show("rooms-section", s.waiting_rooms.length > 0);
    var wo = o ? byName(o.waiting_rooms) : {};
    fill("rooms", s.waiting_rooms.map(function (w) {
      var p = wo[w.name];
      return el("tr", { "data-room": w.name }, td(w.name, "name"), td(num(w.waiting), "n"), td(num(w.active), "n"),
        td(rate(w.admit_rate) + "/s", "n"), td(rate(p ? perSec(w.admitted, p.admitted, dt) : null), "n"), td(dur(w.eta), "n"));
    }), "no waiting rooms");

    // Cluster.
    show("cluster-section", !!s.cluster);
    if (s.cluster) {
      var counts = [];
      for (var st in s.cluster.counts) if (s.cluster.counts[st] > 0) counts.push(num(s.cluster.counts[st]) + " " + st);
      text("cluster-counts", counts.join(" · "));
      fill("cluster", s.cluster.members.map(function (m) {
        var name = el("td", { "class": "name" }, m.name);
        if (m.local) name.appendChild(badge("this node", "muted"));
        return el("tr", { "data-member": m.name }, name, td(m.address),
          td(m.state, m.state === "alive" ? "ok" : m.state === "suspect" ? "warn" : m.state === "left" ? "muted" : "bad"));
      }), "no members");
    }

    // Listeners.
    var lo = o ? byName(o.listeners) : {};
    fill("listeners", s.listeners.map(function (l) {
      var p = lo[l.name];
      var certs = el("td");
      if (l.certs.length === 0) certs.appendChild(el("span", { "class": "muted" }, "–"));
      l.certs.forEach(function (c, i) {
        var left = c.not_after - s.time;
        var days = left / 86400;
        if (i > 0) certs.appendChild(document.createTextNode(" · "));
        certs.appendChild(el("span", { "class": days < 7 ? "bad" : days < 21 ? "warn" : "ok", title: new Date(c.not_after * 1000).toISOString() },
          (c.name || "(no name)") + " " + (left <= 0 ? "EXPIRED" : dur(left))));
      });
      return el("tr", { "data-listener": l.name }, td(l.name, "name"),
        td(num(sumValues(l.connections)), "n"),
        td(rate(p ? perSec(l.accepted, p.accepted, dt) : null), "n"),
        td(rate(p ? perSec(l.requests, p.requests, dt) : null), "n"),
        td(num(l.refused), "n"), certs);
    }), "no listeners");

    // Streams.
    show("streams-section", s.streams.length > 0);
    var so = o ? byName(o.streams) : {};
    fill("streams", s.streams.map(function (x) {
      var p = so[x.name];
      var f = function (a, b) { return p ? perSec(a, b, dt) : null; };
      return el("tr", { "data-stream": x.name }, td(x.name, "name"), td(x.protocol), td(num(x.connections), "n"),
        td(rate(f(x.accepted, p && p.accepted)), "n"), td(num(x.refused), "n"),
        td(p ? bytes(f(x.bytes_up, p.bytes_up)) + "/s" : "–", "n"), td(p ? bytes(f(x.bytes_down, p.bytes_down)) + "/s" : "–", "n"));
    }), "no streams");
  }

  function setConn(cls, msg) {
    var c = $("conn");
    c.className = "conn " + cls;
    c.textContent = msg;
  }

  function poll() {
    var ctl = typeof AbortController === "function" ? new AbortController() : null;
    var timer = ctl ? setTimeout(function () { ctl.abort(); }, 3000) : null;
    fetch("/status.json", { cache: "no-store", signal: ctl ? ctl.signal : undefined })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (s) {
        var now = { t: s.time, s: s };
        // A time going backwards means another process answered: start over.
        if (history.length && history[history.length - 1].t >= now.t) history = [];
        history.push(now);
        while (history.length > WINDOW + 1) history.shift();
        render(now, history.length > 1 ? history[0] : null);
        setConn("live", "live · " + new Date(s.time * 1000).toLocaleTimeString());
      })
      .catch(function (e) {
        setConn("down", "no answer (" + (e && e.name === "AbortError" ? "timeout" : e && e.message ? e.message : "error") + ") · retrying");
      })
      .then(function () {
        if (timer) clearTimeout(timer);
        setTimeout(poll, POLL_MS);
      });
  }

  document.querySelectorAll(".window").forEach(function (e) { e.textContent = String(WINDOW); });
  poll();
})();
