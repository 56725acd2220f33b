// fieldhub dashboard. Every piece of data comes from the REST API with the
// admin token (kept in sessionStorage). Device-provided strings are only
// ever set as text (textContent / text nodes), never as HTML.
"use strict";
(function () {
  const PAGE = 50;
  let timers = [];
  let charts = [];
  let stops = []; // ends live streams and their retries

  function token() { return sessionStorage.getItem("fieldhub-token") || ""; }

  // el builds an element; string children become text nodes.
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "on") for (const [ev, f] of Object.entries(v)) e.addEventListener(ev, f);
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v);
    }
    for (const k of kids) if (k != null) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    return e;
  }

  class HTTPError extends Error {
    constructor(status, body) { super(status + " " + ((body && body.error && body.error.message) || "")); this.status = status; this.body = body; }
  }

  async function api(method, path, body, headers) {
    const h = Object.assign({ "Authorization": "Bearer " + token() }, headers || {});
    if (body !== undefined) h["Content-Type"] = "application/json";
    const r = await fetch(path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
    if (r.status === 401) { logout("The token was refused."); throw new HTTPError(401); }
    const ct = r.headers.get("Content-Type") || "";
    const data = ct.includes("json") ? await r.json() : await r.text();
    if (!r.ok) throw new HTTPError(r.status, data);
    return { data, headers: r.headers };
  }
  const get = (p) => api("GET", p).then((x) => x.data);

  function every(ms, f) { f(); timers.push(setInterval(f, ms)); }
  function clear() {
    timers.forEach(clearInterval); timers = [];
    stops.forEach((f) => f()); stops = [];
    charts.forEach((c) => c.destroy()); charts = [];
  }
  function fmtTime(s) { return s ? new Date(s).toLocaleString() : "—"; }
  function fmtRate(r) { return typeof r === "number" ? (r >= 10 ? r.toFixed(0) : r.toFixed(1)) : "—"; }
  function fmtBytes(n) {
    if (typeof n !== "number") return "—";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + u[i];
  }
  function fmtAge(s) {
    if (typeof s !== "number") return "—";
    if (s < 120) return s.toFixed(0) + " s";
    if (s < 7200) return (s / 60).toFixed(0) + " min";
    return (s / 3600).toFixed(1) + " h";
  }
  // The charting library is installed by `make` (npm, from the lockfile);
  // a binary built without it serves the dashboard without charts.
  const CHARTS_MISSING = "charts unavailable: build with make";
  function hasCharts() { return typeof uPlot !== "undefined"; }

  function logout(msg) {
    sessionStorage.removeItem("fieldhub-token");
    clear();
    document.getElementById("top").hidden = true;
    document.getElementById("app").hidden = true;
    document.getElementById("app").replaceChildren();
    document.getElementById("login-view").hidden = false;
    document.getElementById("login-error").textContent = msg || "";
  }

  async function login(ev) {
    ev.preventDefault();
    const t = document.getElementById("token").value.trim();
    const r = await fetch("/api/v1/devices?limit=1", { headers: { "Authorization": "Bearer " + t } });
    if (r.status !== 200) { document.getElementById("login-error").textContent = "The token was refused (HTTP " + r.status + ")."; return; }
    sessionStorage.setItem("fieldhub-token", t);
    document.getElementById("token").value = "";
    if (!location.hash || location.hash === "#") location.hash = "#/fleet"; else route();
  }

  function route() {
    if (!token()) { logout(); return; }
    clear();
    document.getElementById("login-view").hidden = true;
    document.getElementById("top").hidden = false;
    const app = document.getElementById("app");
    app.hidden = false;
    app.replaceChildren();
    const parts = location.hash.replace(/^#\/?/, "").split("/");
    if (parts[0] === "device" && parts[1]) deviceView(app, decodeURIComponent(parts.slice(1).join("/")));
    else if (parts[0] === "alerts") alertsView(app);
    else if (parts[0] === "health") healthView(app);
    else fleetView(app);
  }

  // ---- fleet ----
  function alertingDevices(alerts) {
    // A device is alerting when the newest alert of any (metric, rule) it has is raised.
    const seen = new Set(), on = new Set();
    for (const a of alerts) { // newest first
      const k = a.device + "\u0000" + (a.metric || "") + "\u0000" + (a.rule || "");
      if (seen.has(k)) continue;
      seen.add(k);
      if (a.state !== "cleared") on.add(a.device);
    }
    return on;
  }

  function fleetView(app) {
    const nOn = el("b", { id: "count-online" }, "…"), nOff = el("b", { id: "count-offline" }, "…"), nAl = el("b", { id: "count-alerting" }, "…");
    const viaGw = el("span", { id: "count-via-gateway" });
    const search = el("input", { id: "search", type: "search", placeholder: "id prefix" });
    const body = el("tbody", { id: "fleet-rows" });
    const info = el("span", { id: "page-info" });
    const prev = el("button", { id: "prev", type: "button" }, "Previous"), next = el("button", { id: "next", type: "button" }, "Next");
    app.append(el("h1", {}, "Fleet"),
      el("div", { class: "counts" },
        el("div", { class: "count on" }, nOn, "online", viaGw), el("div", { class: "count off" }, nOff, "offline"), el("div", { class: "count alerting" }, nAl, "alerting")),
      el("label", {}, "Search by id prefix ", search), el("div", { class: "pager" }, prev, " ", next, " ", info),
      el("table", {}, el("thead", {}, el("tr", {}, ...["Device", "Name", "Gateway", "State", "Last seen", "Msg/min", "Firmware", "Status", "Labels"].map((h) => el("th", {}, h)))), body));
    let alerting = new Set();
    let stack = [""], next_ = "";
    async function load() {
      const after = stack[stack.length - 1];
      const q = new URLSearchParams({ limit: String(PAGE) });
      if (after) q.set("after", after);
      if (search.value) q.set("prefix", search.value);
      const d = await get("/api/v1/devices?" + q);
      next_ = d.next || "";
      // Devices behind a gateway have no session of their own: show their
      // gateway's state (one request per distinct gateway on the page).
      const gws = new Map();
      for (const x of d.devices || []) if (x.gateway && !gws.has(x.gateway)) gws.set(x.gateway, false);
      await Promise.all([...gws.keys()].map((g) => get("/api/v1/devices/" + encodeURIComponent(g)).then((gd) => gws.set(g, !!gd.online)).catch(() => {})));
      const state = (x) => x.online ? ["on", "online"] : x.gateway && gws.get(x.gateway) ? ["on", "online via " + x.gateway] : ["off", "offline"];
      body.replaceChildren(...(d.devices || []).map((x) => el("tr", { "data-id": x.id },
        el("td", {}, el("a", { href: "#/device/" + encodeURIComponent(x.id) }, x.id)),
        el("td", {}, x.name || ""), el("td", {}, x.gateway || ""),
        el("td", { class: state(x)[0] }, state(x)[1], alerting.has(x.id) ? el("span", { class: "alerting" }, " · alerting") : null),
        el("td", {}, fmtTime(x.last_seen)),
        el("td", { class: "rate num" }, fmtRate(x.msg_rate)), el("td", { class: "firmware" }, x.firmware || "—"),
        el("td", {}, x.status || ""),
        el("td", {}, ...Object.entries(x.labels || {}).map(([k, v]) => el("span", { class: "label" }, k + "=" + v))))));
      info.textContent = "page " + stack.length + ((d.devices || []).length ? "" : " (no devices)");
      prev.disabled = stack.length === 1; next.disabled = !next_;
    }
    async function counts() {
      try {
        const s = await get("/api/v1/dashboard/summary");
        nOn.textContent = s.online + (s.via_gateway || 0); nOff.textContent = s.offline;
        viaGw.textContent = s.via_gateway ? " (" + s.via_gateway + " via gateway)" : "";
      } catch (e) { if (e.status !== 401) { nOn.textContent = nOff.textContent = "?"; } }
      try {
        alerting = alertingDevices((await get("/api/v1/alerts?limit=1000")).alerts || []);
        nAl.textContent = alerting.size;
      } catch (e) { nAl.textContent = "—"; }
    }
    let deb;
    search.addEventListener("input", () => { clearTimeout(deb); deb = setTimeout(() => { stack = [""]; load(); }, 250); });
    prev.addEventListener("click", () => { if (stack.length > 1) { stack.pop(); load(); } });
    next.addEventListener("click", () => { if (next_) { stack.push(next_); load(); } });
    every(5000, () => { counts().then(load).catch(() => {}); });
  }

  // ---- device ----
  const RANGES = { "15m": { ms: 15 * 60e3 }, "24h": { ms: 24 * 3600e3, step: "5m" }, "7d": { ms: 7 * 24 * 3600e3, step: "1h" } };

  function deviceView(app, id) {
    const enc = encodeURIComponent(id);
    const title = el("h1", {}, "Device ", el("span", { id: "device-id" }, id));
    const meta = el("div", { class: "card", id: "device-meta" });
    const latest = el("tbody", { id: "latest" });
    const range = el("select", { id: "range" }, ...Object.keys(RANGES).map((k) => el("option", { value: k }, k === "15m" ? "15 min (raw)" : k + " (avg)")));
    const chartBox = el("div", { class: "charts", id: "charts" });
    app.append(el("p", {}, el("a", { href: "#/fleet" }, "← Fleet")), title, meta,
      el("div", { class: "card" }, el("h2", {}, "Latest values"), el("table", {}, latest)),
      el("div", { class: "card" }, el("h2", {}, "Telemetry"), el("label", {}, "Range ", range), chartBox),
      twinCard(enc), commandCard(enc));

    get("/api/v1/devices/" + enc).then(async (d) => {
      let via = false;
      if (!d.online && d.gateway) via = await get("/api/v1/devices/" + encodeURIComponent(d.gateway)).then((g) => !!g.online).catch(() => false);
      const rot = el("button", { id: "rotate", type: "button" }, "Rotate credentials");
      const out = el("pre", { id: "rotate-out", hidden: "" });
      rot.addEventListener("click", async () => {
        if (!confirm("Rotate the credentials of " + id + "? The old ones stop working at once.")) return;
        try { const r = await api("POST", "/api/v1/devices/" + enc + "/credentials", {}); out.hidden = false; out.textContent = "New credentials (shown once):\n" + JSON.stringify(r.data.credentials, null, 2); }
        catch (e) { out.hidden = false; out.textContent = "Rotation failed: " + e.message; }
      });
      meta.replaceChildren(
        el("div", {}, "Name: ", d.name || "—", " · Auth: ", d.auth, " · Gateway: ", d.gateway || "—"),
        el("div", {}, "State: ", el("span", { class: d.online || via ? "on" : "off", id: "device-state" }, d.online ? "online" : via ? "online via " + d.gateway : "offline"), " · Last seen: ", fmtTime(d.last_seen), " · Status: ", d.status || "—"),
        el("div", {}, "Firmware: ", el("span", { id: "device-firmware" }, d.firmware || "—"), " · Messages: ", el("span", { id: "device-rate" }, fmtRate(d.msg_rate)), " / min"),
        el("div", {}, "Labels: ", ...Object.entries(d.labels || {}).map(([k, v]) => el("span", { class: "label" }, k + "=" + v))),
        el("div", {}, "Credentials version ", String(d.credentials_version), " ", rot), out);
    }).catch((e) => meta.replaceChildren(el("p", { class: "error" }, "Could not load the device: " + e.message)));

    every(2000, async () => {
      try {
        const l = await get("/api/v1/devices/" + enc + "/telemetry/latest");
        latest.replaceChildren(...(l.metrics || []).map((m) => el("tr", {}, el("td", {}, m.metric), el("td", { class: "value" }, typeof m.value === "object" ? JSON.stringify(m.value) : String(m.value)), el("td", {}, fmtTime(m.ts)))));
      } catch (e) { }
    });

    // Live charts: one uPlot per numeric metric. In the raw 15-minute range
    // the view reads GET …/telemetry/live (Server-Sent Events, read with
    // fetch() so that it can send the token) and appends each point; while
    // the stream is down it polls telemetry?from=<last point> every 2 s and
    // tries the stream again after 1 s, 2 s, 4 s … at most 30 s.
    let series = new Map(); // metric -> {xs, ys, plot}
    let last = 0, gen = 0;
    let live = null, retry = null, backoff = 1000, streaming = false, stopped = false, drawPending = false;
    function liveState(st) { streaming = st === "streaming"; chartBox.dataset.live = st; }
    function stopLive() {
      clearTimeout(retry); retry = null;
      if (live) live.abort();
      live = null; liveState("off");
    }
    stops.push(() => { stopped = true; stopLive(); });
    function scheduleDraw() {
      if (drawPending) return;
      drawPending = true;
      setTimeout(() => { drawPending = false; if (!stopped) redraw(Date.now() - RANGES[range.value].ms); }, 250);
    }
    function onEvent(block) {
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (!data) return; // a heartbeat comment
      let e;
      try { e = JSON.parse(data); } catch (err) { return; }
      if (typeof e.value !== "number" || typeof e.metric !== "string") return;
      add({ series: [{ metric: e.metric, kind: "number", points: [{ ts: e.ts, value: e.value }] }] });
      scheduleDraw();
    }
    async function stream(g) {
      retry = null;
      if (stopped || g !== gen || RANGES[range.value].step) return;
      const ctl = new AbortController();
      live = ctl;
      try {
        const r = await fetch("/api/v1/devices/" + enc + "/telemetry/live", { headers: { "Authorization": "Bearer " + token() }, cache: "no-store", signal: ctl.signal });
        if (r.status === 401) { logout("The token was refused."); return; }
        if (!r.ok || !r.body) throw new Error("HTTP " + r.status);
        liveState("streaming");
        backoff = 1000;
        poll(); // the points stored between the last poll and the stream
        const rd = r.body.getReader(), dec = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await rd.read();
          if (done) break;
          buf += dec.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) { onEvent(buf.slice(0, i)); buf = buf.slice(i + 2); }
        }
      } catch (e) { }
      if (ctl.signal.aborted || live !== ctl) return;
      live = null; liveState("polling");
      retry = setTimeout(() => stream(g), backoff);
      backoff = Math.min(backoff * 2, 30000);
    }
    function plotFor(metric) {
      if (!hasCharts()) return null;
      let s = series.get(metric);
      if (s) return s;
      const box = el("div", { class: "chart", "data-metric": metric });
      chartBox.append(box);
      const plot = new uPlot({ title: metric, width: 540, height: 220, series: [{}, { label: metric, stroke: "#2b6cb0", width: 1.5 }], scales: { x: { time: true, range: () => [(Date.now() - RANGES[range.value].ms) / 1000, Date.now() / 1000] } } }, [[], []], box);
      charts.push(plot);
      s = { xs: [], ys: [], plot, box };
      series.set(metric, s);
      return s;
    }
    function add(resp) {
      let n = 0;
      for (const sr of resp.series || []) {
        if (sr.kind !== "number") continue;
        const s = plotFor(sr.metric);
        if (!s) continue;
        for (const p of sr.points || []) {
          const t = Date.parse(p.ts);
          if (s.xs.length && t <= s.xs[s.xs.length - 1] * 1000) continue;
          s.xs.push(t / 1000); s.ys.push(p.value); n++;
          if (t > last) last = t;
        }
        s.box.setAttribute("data-points", String(s.xs.length));
      }
      return n;
    }
    function redraw(cut) {
      for (const s of series.values()) {
        while (s.xs.length && s.xs[0] < cut / 1000) { s.xs.shift(); s.ys.shift(); }
        s.plot.setData([s.xs, s.ys]);
        s.box.setAttribute("data-points", String(s.xs.length));
      }
    }
    async function reload() {
      const g = ++gen;
      stopLive();
      charts.forEach((c) => c.destroy()); charts = []; series = new Map(); chartBox.replaceChildren(); last = 0;
      if (!hasCharts()) { chartBox.replaceChildren(el("p", { class: "error", id: "charts-unavailable" }, CHARTS_MISSING)); return; }
      const r = RANGES[range.value], now = Date.now();
      const q = new URLSearchParams({ from: String(now - r.ms), to: String(now + 60e3), limit: "10000" });
      if (r.step) { q.set("step", r.step); q.set("agg", "avg"); }
      try { const d = await get("/api/v1/devices/" + enc + "/telemetry?" + q); if (g === gen) { add(d); redraw(now - r.ms); } }
      catch (e) { chartBox.replaceChildren(el("p", { class: "error" }, "Could not load telemetry: " + e.message)); }
      if (g === gen && !r.step && !stopped) { liveState("polling"); stream(g); }
    }
    range.addEventListener("change", reload);
    reload();
    async function poll() {
      const r = RANGES[range.value];
      if (r.step) return; // long ranges: reloaded every minute below
      const g = gen, from = last ? last + 1 : Date.now() - r.ms;
      try {
        const d = await get("/api/v1/devices/" + enc + "/telemetry?" + new URLSearchParams({ from: String(from), to: String(Date.now() + 60e3), limit: "10000" }));
        if (g === gen && add(d) > 0) redraw(Date.now() - r.ms);
      } catch (e) { }
    }
    timers.push(setInterval(() => { if (!streaming) poll(); }, 2000));
    timers.push(setInterval(() => { if (RANGES[range.value].step) reload(); }, 60000));
  }

  function twinCard(enc) {
    const desired = el("pre", { id: "twin-desired" }), reported = el("pre", { id: "twin-reported" }), delta = el("pre", { id: "twin-delta" });
    const ver = el("span", { id: "twin-version" }), edit = el("textarea", { id: "twin-patch", spellcheck: "false" });
    const msg = el("p", { id: "twin-msg", role: "status" });
    let version = 0, dirty = false;
    edit.value = "{}";
    edit.addEventListener("input", () => { dirty = true; });
    async function load() {
      try {
        const t = await get("/api/v1/devices/" + enc + "/twin");
        version = t.desired.version;
        ver.textContent = String(version);
        desired.textContent = JSON.stringify(t.desired.state, null, 2);
        reported.textContent = JSON.stringify(t.reported.state, null, 2) + "\n(version " + t.reported.version + ")";
        delta.textContent = JSON.stringify(t.delta, null, 2);
        if (!dirty) edit.value = JSON.stringify(t.desired.state, null, 2);
      } catch (e) { msg.textContent = "Could not load the twin: " + e.message; }
    }
    const save = el("button", { id: "twin-save", type: "button" }, "Apply (merge patch)");
    save.addEventListener("click", async () => {
      let patch;
      try { patch = JSON.parse(edit.value); } catch (e) { msg.textContent = "Not JSON: " + e.message; msg.className = "error"; return; }
      try {
        await api("PATCH", "/api/v1/devices/" + enc + "/twin", { desired: patch }, { "If-Match": '"' + version + '"' });
        msg.textContent = "Saved."; msg.className = ""; dirty = false; load();
      } catch (e) {
        msg.className = "error";
        msg.textContent = e.status === 412 ? "412: the desired state changed meanwhile (version moved on). Reloaded; merge and apply again." : "Refused: " + e.message;
        if (e.status === 412) { dirty = false; load(); }
      }
    });
    timers.push(setInterval(load, 3000));
    load();
    return el("div", { class: "card" }, el("h2", {}, "Twin"),
      el("div", { class: "charts" },
        el("div", {}, el("h3", {}, "Desired (version ", ver, ")"), desired),
        el("div", {}, el("h3", {}, "Reported"), reported),
        el("div", {}, el("h3", {}, "Delta (not applied yet)"), delta)),
      el("h3", {}, "Edit desired (JSON merge patch; null removes a key)"), edit, save, msg);
  }

  function commandCard(enc) {
    const name = el("input", { id: "cmd-name", required: "", placeholder: "reboot" });
    const params = el("textarea", { id: "cmd-params", spellcheck: "false" });
    params.value = "{}";
    const out = el("pre", { id: "cmd-result" }), hist = el("tbody", { id: "cmd-history" });
    const send = el("button", { id: "cmd-send", type: "button" }, "Send (wait up to 10 s)");
    async function history() {
      try {
        const h = await get("/api/v1/devices/" + enc + "/commands?limit=20");
        hist.replaceChildren(...(h.commands || []).map((c) => el("tr", {},
          el("td", {}, c.name), el("td", { class: "cmd-state " + c.state }, c.state), el("td", {}, fmtTime(c.created_at)), el("td", {}, fmtTime(c.completed_at)),
          el("td", {}, c.error ? String(c.error) : c.result !== undefined ? JSON.stringify(c.result) : ""))));
      } catch (e) { }
    }
    send.addEventListener("click", async () => {
      let p;
      try { p = JSON.parse(params.value || "{}"); } catch (e) { out.textContent = "Params are not JSON: " + e.message; return; }
      out.textContent = "Sending…"; send.disabled = true;
      try {
        const r = await api("POST", "/api/v1/devices/" + enc + "/commands?wait=10s", { name: name.value, params: p });
        out.textContent = r.data.state + "\n" + JSON.stringify(r.data, null, 2);
      } catch (e) { out.textContent = "Refused: " + e.message; }
      send.disabled = false;
      history();
    });
    timers.push(setInterval(history, 3000));
    history();
    return el("div", { class: "card" }, el("h2", {}, "Commands"),
      el("label", {}, "Name ", name), el("label", { style: "display:block" }, "Params (JSON object)", params), send, out,
      el("table", {}, el("thead", {}, el("tr", {}, ...["Name", "State", "Created", "Completed", "Result / error"].map((h) => el("th", {}, h)))), hist));
  }

  // ---- alerts ----
  function alertsView(app) {
    const dev = el("input", { id: "alert-device", placeholder: "device id" });
    const sev = el("select", { id: "alert-severity" }, ...["", "info", "warning", "critical"].map((s) => el("option", { value: s }, s || "any")));
    const body = el("tbody", { id: "alert-rows" });
    const more = el("button", { type: "button", id: "alert-more" }, "Older");
    let before = "";
    app.append(el("h1", {}, "Alerts"), el("label", {}, "Device ", dev), el("label", {}, "Severity ", sev),
      el("table", {}, el("thead", {}, el("tr", {}, ...["Time", "Device", "Metric", "Value", "Rule", "Severity", "State", "Message"].map((h) => el("th", {}, h)))), body), more);
    async function load(append) {
      const q = new URLSearchParams({ limit: "100" });
      if (dev.value) q.set("device", dev.value);
      if (sev.value) q.set("severity", sev.value);
      if (append && before) q.set("before", before);
      try {
        const d = await get("/api/v1/alerts?" + q);
        before = d.next || ""; more.disabled = !before;
        const rows = (d.alerts || []).map((a) => el("tr", {}, el("td", {}, fmtTime(a.ts)),
          el("td", {}, el("a", { href: "#/device/" + encodeURIComponent(a.device) }, a.device)), el("td", {}, a.metric || ""),
          el("td", {}, a.value === undefined ? "" : String(a.value)), el("td", {}, a.rule || ""), el("td", { class: a.severity }, a.severity),
          el("td", {}, a.state || ""), el("td", {}, a.message || "")));
        if (append) body.append(...rows); else body.replaceChildren(...rows);
      } catch (e) { body.replaceChildren(el("tr", {}, el("td", { class: "error" }, e.message))); }
    }
    dev.addEventListener("change", () => load(false));
    sev.addEventListener("change", () => load(false));
    more.addEventListener("click", () => load(true));
    every(5000, () => { if (!before || body.children.length <= 100) load(false); });
  }

  // ---- hub health (from the Prometheus text at /metrics) ----
  function parseMetrics(text) {
    const out = [];
    for (const line of text.split("\n")) {
      if (!line || line[0] === "#") continue;
      const m = line.match(/^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/);
      if (m) out.push({ name: m[1], labels: m[2] || "", value: Number(m[3]) });
    }
    return out;
  }
  function healthView(app) {
    const body = el("tbody", { id: "health-rows" });
    const rate = el("b", { id: "ingest-rate" }, "…");
    const gwBody = el("tbody", { id: "gateway-rows" });
    const gwInfo = el("p", { id: "gateway-info" });
    app.append(el("h1", {}, "Hub health"), el("div", { class: "counts" }, el("div", { class: "count" }, rate, "points stored / s")),
      el("h2", {}, "Gateways"), gwInfo,
      el("table", {}, el("thead", {}, el("tr", {}, ...["Gateway", "State", "Firmware", "Devices behind", "Spool records", "Spool bytes", "Oldest record", "Drops", "Uplink", "Reported"].map((h) => el("th", {}, h)))), gwBody),
      el("h2", {}, "Hub metrics"),
      el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Metric"), el("th", {}, "Labels"), el("th", {}, "Value"))), body));
    // Spool state that each gateway reports in its twin (reported
    // "edge.spool"), from GET /api/v1/gateways.
    every(10000, async () => {
      try {
        const g = await get("/api/v1/gateways");
        const gws = g.gateways || [];
        gwInfo.textContent = gws.length ? "" : "No gateways (devices with devices registered behind them).";
        gwBody.replaceChildren(...gws.map((x) => {
          const sp = x.spool && typeof x.spool === "object" ? x.spool : null;
          const drops = sp && sp.drops && typeof sp.drops === "object" ? Object.entries(sp.drops).filter(([, v]) => v > 0).map(([k, v]) => k + "=" + v).join(" ") || "none" : "—";
          const up = sp && sp.uplink && typeof sp.uplink === "object" ? String(sp.uplink.state || "") + (sp.uplink.since ? " since " + fmtTime(sp.uplink.since) : "") + (sp.uplink.reconnects ? " · " + sp.uplink.reconnects + " reconnects" : "") : "—";
          return el("tr", { "data-id": x.id },
            el("td", {}, el("a", { href: "#/device/" + encodeURIComponent(x.id) }, x.id)),
            el("td", { class: x.online ? "on" : "off" }, x.online ? "online" : "offline"),
            el("td", { class: "firmware" }, x.firmware || "—"), el("td", { class: "num" }, String(x.children)),
            el("td", { class: "spool-records num" }, sp ? String(sp.records) : "not reported"),
            el("td", { class: "spool-bytes num" }, sp ? fmtBytes(sp.bytes) + (sp.max_bytes ? " of " + fmtBytes(sp.max_bytes) : "") : "—"),
            el("td", { class: "spool-age" }, sp ? (sp.records ? fmtAge(sp.oldest_age_s) : "—") : "—"),
            el("td", { class: "spool-drops" }, drops), el("td", { class: "spool-uplink" }, up),
            el("td", {}, fmtTime(sp && sp.reported_at)));
        }));
      } catch (e) { if (e.status !== 401) gwInfo.textContent = "Could not load the gateways: " + e.message; }
    });
    const want = /^fieldhub_(mqtt_connections|devices_online|mqtt_connect_refusals_total|mqtt_dropped_total|mqtt_acl_denials_total|telemetry_refused_total|telemetry_batch_refused_total|alerts_refused_total|telemetry_messages_total|telemetry_points_stored_total|alerts_total|commands_total)$/;
    let prev = null;
    every(3000, async () => {
      try {
        const ms = parseMetrics(await get("/metrics"));
        const stored = ms.filter((m) => m.name === "fieldhub_telemetry_points_stored_total").reduce((a, m) => a + m.value, 0);
        const now = Date.now();
        if (prev) rate.textContent = ((stored - prev.v) / ((now - prev.t) / 1000)).toFixed(1);
        prev = { v: stored, t: now };
        body.replaceChildren(...ms.filter((m) => want.test(m.name)).map((m) => el("tr", {}, el("td", {}, m.name), el("td", {}, m.labels), el("td", {}, String(m.value)))));
      } catch (e) { }
    });
  }

  document.getElementById("login-form").addEventListener("submit", login);
  document.getElementById("logout").addEventListener("click", () => logout());
  window.addEventListener("hashchange", route);
  if (token()) route(); else logout();
})();
