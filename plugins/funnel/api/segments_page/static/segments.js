// The Segments page: reads funnel's API (relative URLs: ../v1/...), draws everything itself.
// This file only reads (GET); segment_form.js adds and edits definitions for who may. Every
// value from the API goes into the page as text (textContent, SVG text nodes), never as HTML.
"use strict";

const API = new URL("../", window.location.href); // /funnel/ui/ -> /funnel/, /ui/ -> /
const TOKEN_KEY = "funnel.readToken";
const RUNS_SHOWN = 20;
const SVG_NS = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
let segments = [];

// ------------------------------------------------------------------ the API

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// A request to the API: GET by default; ``options``: method, a JSON body, extra headers. The
// X-Funnel-Page header says the page sent it: inside Airflow, a write with the login cookie
// counts only with it (another site cannot send it without the API's consent).
async function api(path, options = {}) {
  const headers = { Accept: "application/json", "X-Funnel-Page": "1", ...(options.headers || {}) };
  const token = window.sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method: options.method || "GET", headers, credentials: "same-origin", cache: "no-store" };
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  let response;
  try {
    response = await fetch(new URL(path, API), init);
  } catch (err) {
    throw new ApiError(0, `the API did not answer (${err.message})`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  if (!response.ok) {
    const message = body && typeof body.error === "string" ? body.error : `HTTP ${response.status}`;
    throw new ApiError(response.status, message);
  }
  return body;
}

function segmentPath(segmentId, rest = "") {
  return `v1/segments/${encodeURIComponent(segmentId)}${rest}`;
}

// ------------------------------------------------------------------ small helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function num(value) {
  return value === null || value === undefined ? "—" : Number(value).toLocaleString("en-US");
}

function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return `${date.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

function ago(iso) {
  if (!iso) return "";
  const seconds = (Date.now() - new Date(iso).getTime()) / 1000;
  if (!Number.isFinite(seconds)) return "";
  const past = seconds >= 0;
  const s = Math.abs(seconds);
  const text = s < 90 ? `${Math.round(s)} s` : s < 5400 ? `${Math.round(s / 60)} min` : s < 172800 ? `${Math.round(s / 3600)} h` : `${Math.round(s / 86400)} days`;
  return past ? `${text} ago` : `in ${text}`;
}

function took(startedIso, finishedIso) {
  if (!startedIso || !finishedIso) return "—";
  const seconds = (new Date(finishedIso) - new Date(startedIso)) / 1000;
  return seconds < 120 ? `${seconds.toFixed(1)} s` : `${(seconds / 60).toFixed(1)} min`;
}

function badge(text, kind) {
  return el("span", { class: `badge ${kind || text || ""}`, text: text || "—" });
}

// Freshness (fresh / stale / failing, with the reason) and the latest attempt, as
// GET /v1/segments gives them.
function freshnessOf(segment) {
  return { state: segment.freshness || null, reason: segment.freshness_reason || null };
}

function lastRunOf(segment) {
  const run = segment.last_run || {};
  return { status: run.status || null, error: run.error || null, at: run.finished_at || run.started_at || null };
}

// ------------------------------------------------------------------ problems and the token

function showProblem(message) {
  const box = $("problem");
  box.textContent = message || "";
  box.hidden = !message;
}

// What keeps segments from being refreshed though the API serves (GET /readyz, no token:
// a missing Airflow pool), in the API's words with the fix.
async function loadWarnings() {
  let warnings = [];
  try {
    warnings = (await api("readyz")).warnings || [];
  } catch (err) {
    warnings = []; // a store that does not answer: the list says so
  }
  const box = $("warning");
  box.textContent = warnings.join(" ");
  box.hidden = warnings.length === 0;
}

function askForToken(reason) {
  $("token-why").textContent = `${reason}. Log in to Airflow (inside Airflow this page uses your login), or paste a funnel token (read; write also changes definitions).`;
  $("token-form").hidden = false;
}

function handle(err) {
  if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
    askForToken(err.message);
    showProblem("");
  } else {
    showProblem(err.message);
  }
}

// ------------------------------------------------------------------ the list

async function loadList() {
  document.body.dataset.state = "loading";
  loadWarnings();
  const query = new URLSearchParams();
  if ($("only-stale").checked) query.set("stale", "true");
  if ($("filter-owner").value.trim()) query.set("owner", $("filter-owner").value.trim());
  if ($("filter-label").value.trim()) query.set("label", $("filter-label").value.trim());
  try {
    const body = await api(query.toString() ? `v1/segments?${query}` : "v1/segments");
    segments = body.segments || [];
    $("token-form").hidden = true;
    showProblem("");
    renderList();
    window.dispatchEvent(new CustomEvent("funnel:list-loaded"));
    document.body.dataset.state = "ready";
    await showPicked();
  } catch (err) {
    document.body.dataset.state = "error";
    handle(err);
  }
}

function renderList() {
  const tbody = $("segments").tBodies[0];
  tbody.replaceChildren();
  const counts = {};
  for (const segment of segments) {
    const fresh = freshnessOf(segment);
    const run = lastRunOf(segment);
    if (fresh.state) counts[fresh.state] = (counts[fresh.state] || 0) + 1;
    const link = el("a", { href: `#${encodeURIComponent(segment.segment_id)}`, text: segment.segment_id });
    const row = el(
      "tr",
      { "data-segment": segment.segment_id },
      el("td", { class: "id" }, link, el("div", { class: "muted", text: segment.name })),
      el(
        "td",
        {},
        badge(segment.kind, "kind"),
        segment.enabled === false ? badge("disabled") : null,
        segment.operands ? el("div", { class: "muted operands", text: `of ${segment.operands.join(", ")}` }) : null,
      ),
      el("td", { class: "num", text: num(segment.size) }),
      el("td", { class: "num", text: segment.version === null || segment.version === undefined ? "—" : String(segment.version) }),
      el("td", { title: when(segment.refreshed_at), text: segment.refreshed_at ? ago(segment.refreshed_at) : "never" }),
      el("td", { title: fresh.reason || "" }, fresh.state ? badge(fresh.state) : el("span", { class: "muted", text: "—" })),
      el("td", { title: run.at ? when(run.at) : "" }, run.status ? badge(run.status) : el("span", { class: "muted", text: "—" })),
      el("td", { class: "error", title: run.error || "", text: run.error || "" }),
    );
    row.addEventListener("click", (event) => {
      if (event.target.tagName !== "A") window.location.hash = encodeURIComponent(segment.segment_id);
    });
    tbody.append(row);
  }
  $("empty").hidden = segments.length > 0;
  const parts = [`${segments.length} segment${segments.length === 1 ? "" : "s"}`];
  for (const state of ["fresh", "stale", "failing"]) if (counts[state]) parts.push(`${counts[state]} ${state}`);
  $("summary").textContent = parts.join(" · ");
}

// ------------------------------------------------------------------ one segment

function pickedId() {
  const raw = window.location.hash.slice(1);
  if (!raw) return null;
  try {
    return decodeURIComponent(raw);
  } catch (err) {
    return null;
  }
}

async function showPicked() {
  const segmentId = pickedId();
  for (const row of $("segments").tBodies[0].rows) row.classList.toggle("picked", row.dataset.segment === segmentId);
  if (!segmentId) {
    $("detail").hidden = true;
    return;
  }
  $("detail").dataset.state = "loading";
  try {
    const segment = await api(segmentPath(segmentId));
    const proxy = segment.kind === "proxy";
    const [versions, runs] = proxy
      ? [null, null]
      : await Promise.all([api(segmentPath(segmentId, "/versions")), api(segmentPath(segmentId, `/runs?limit=${RUNS_SHOWN}`))]);
    if (pickedId() !== segmentId) return; // another segment was picked meanwhile
    renderDetail(segment, versions, runs);
    window.dispatchEvent(new CustomEvent("funnel:segment-shown", { detail: segment }));
    $("detail").dataset.state = "ready";
  } catch (err) {
    $("detail").dataset.state = "error";
    handle(err);
  }
}

function renderDetail(segment, versions, runs) {
  $("detail").hidden = false;
  $("detail").dataset.segment = segment.segment_id;
  $("d-name").textContent = segment.name || segment.segment_id;
  $("d-id").textContent = segment.segment_id;
  $("d-kind").textContent = segment.kind;

  const fresh = freshnessOf(segment);
  const run = lastRunOf(segment);
  const liveKept = ((versions && versions.versions) || []).find((v) => v.version === segment.version);
  const facts = [
    ["size", num(segment.size)],
    ["version", segment.version === null || segment.version === undefined ? "—" : versionName(liveKept || { version: segment.version })],
    ["refreshed", segment.refreshed_at ? `${when(segment.refreshed_at)} (${ago(segment.refreshed_at)})` : "never"],
    ["entered", num(segment.entered)],
    ["exited", num(segment.exited)],
    ["enabled", segment.enabled === false ? "no (members kept)" : "yes"],
    ["freshness", fresh.state ? `${fresh.state}${fresh.reason ? `: ${fresh.reason}` : ""}` : "—"],
    ["last run", run.status ? `${run.status}${run.at ? `, ${when(run.at)}` : ""}` : "—"],
  ];
  if (segment.run_at) facts.push(["runs at", when(segment.run_at)]);
  if (segment.owner) facts.push(["owner", segment.owner]);
  if (segment.labels && segment.labels.length) facts.push(["labels", segment.labels.join(", ")]);
  if (run.error) facts.push(["last error", run.error]);
  const dl = $("d-facts");
  dl.replaceChildren();
  for (const [name, value] of facts) dl.append(el("dt", { text: name }), el("dd", { text: value }));

  const proxy = segment.kind === "proxy";
  const composite = segment.kind === "composite";
  $("d-def-title").textContent = proxy ? "Rule" : composite ? "Set expression" : "Query";
  $("d-definition").textContent = proxy
    ? JSON.stringify(segment.rule, null, 2)
    : composite
      ? `${segment.expression}\n\n${JSON.stringify(segment.rule, null, 2)}`
      : segment.query || "";

  $("d-chart-box").hidden = proxy;
  $("d-runs-box").hidden = proxy;
  if (!proxy) {
    $("d-chart").replaceChildren(chart(versions.versions || [], segment.version));
    renderRuns(runs.runs || []);
  }
  const answer = $("member-answer");
  answer.textContent = "";
  answer.className = "";
}

function renderRuns(runs) {
  const tbody = $("d-runs").tBodies[0];
  tbody.replaceChildren();
  for (const run of runs) {
    tbody.append(
      el(
        "tr",
        {},
        el("td", { title: run.logical_date ? `logical date ${when(run.logical_date)}` : "", text: when(run.started_at) }),
        el("td", { class: "num", text: took(run.started_at, run.finished_at) }),
        el("td", {}, badge(run.status)),
        el("td", { class: "mono", text: `${run.dag_id} / ${run.run_id}` }),
        el("td", { class: "num", text: String(run.try_number) }),
        el("td", { class: "num", text: run.version === null ? "—" : String(run.version) }),
        el("td", { class: "num", text: num(run.size) }),
        el("td", { class: "num", text: num(run.entered) }),
        el("td", { class: "num", text: num(run.exited) }),
        el("td", { class: "error", text: [run.error, inputsOf(run)].filter(Boolean).join(" · ") }),
      ),
    );
  }
  $("d-runs-empty").hidden = runs.length > 0;
}

// A composite's attempt: the version of each operand it used, and whether this run made it.
function inputsOf(run) {
  if (!run.inputs) return "";
  const used = run.inputs.map((i) => `${i.segment_id} v${i.version}${i.this_run ? "" : " (kept)"}`);
  return `from ${used.join(", ")}`;
}

// "v7 from r3": a version and the revision of the definition it was computed from (when recorded).
function versionName(v) {
  return v.revision === null || v.revision === undefined ? `v${v.version}` : `v${v.version} from r${v.revision}`;
}

// Size over the kept versions (a line), entered and exited of each (bars up and down).
function chart(versions, liveVersion) {
  const width = 660;
  const height = 270;
  const left = 56;
  const right = 20;
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img" });
  if (!versions.length) {
    root.setAttribute("aria-label", "no version kept yet");
    root.append(svg("text", { x: left, y: 40 }, "Not computed yet: no version kept."));
    return root;
  }
  root.setAttribute("aria-label", `size of versions ${versions.map((v) => v.version).join(", ")}`);
  const step = (width - left - right) / versions.length;
  const x = (i) => left + step * (i + 0.5);

  // Legend.
  const legend = [["size", "size-dot"], ["entered", "entered"], ["exited", "exited"]];
  legend.forEach(([label, cls], i) => {
    root.append(svg("rect", { x: left + i * 90, y: 6, width: 10, height: 10, class: cls }));
    root.append(svg("text", { x: left + i * 90 + 14, y: 15 }, label));
  });

  // Size: a line from 0 to the largest size.
  const sizeTop = 34;
  const sizeBottom = 140;
  const maxSize = Math.max(1, ...versions.map((v) => v.size || 0));
  const ySize = (value) => sizeBottom - ((sizeBottom - sizeTop) * (value || 0)) / maxSize;
  root.append(svg("line", { x1: left, x2: width - right, y1: sizeBottom, y2: sizeBottom, class: "axis" }));
  root.append(svg("text", { x: left - 6, y: sizeBottom + 4, "text-anchor": "end" }, "0"));
  root.append(svg("text", { x: left - 6, y: sizeTop + 4, "text-anchor": "end" }, compact(maxSize)));
  const points = versions.map((v, i) => `${x(i)},${ySize(v.size)}`).join(" ");
  root.append(svg("polyline", { points, class: "size-line" }));
  versions.forEach((v, i) => {
    root.append(svg("circle", { cx: x(i), cy: ySize(v.size), r: 4, class: "size-dot" }));
    root.append(svg("text", { x: x(i), y: ySize(v.size) - 8, "text-anchor": "middle", class: "size-label" }, num(v.size)));
  });

  // Entered (up) and exited (down) around a middle line.
  const changeMid = 196;
  const changeHalf = 30;
  const maxChange = Math.max(1, ...versions.flatMap((v) => [v.entered || 0, v.exited || 0]));
  const bar = Math.min(36, step * 0.4);
  root.append(svg("line", { x1: left, x2: width - right, y1: changeMid, y2: changeMid, class: "axis" }));
  root.append(svg("text", { x: left - 6, y: changeMid - changeHalf + 4, "text-anchor": "end" }, `+${compact(maxChange)}`));
  root.append(svg("text", { x: left - 6, y: changeMid + changeHalf + 4, "text-anchor": "end" }, `−${compact(maxChange)}`));
  versions.forEach((v, i) => {
    const up = (changeHalf * (v.entered || 0)) / maxChange;
    const down = (changeHalf * (v.exited || 0)) / maxChange;
    root.append(svg("rect", { x: x(i) - bar / 2, y: changeMid - up, width: bar, height: Math.max(up, 0.5), class: "entered" }));
    root.append(svg("rect", { x: x(i) - bar / 2, y: changeMid, width: bar, height: Math.max(down, 0.5), class: "exited" }));
    root.append(svg("text", { x: x(i) + bar / 2 + 4, y: changeMid - 4 }, `+${num(v.entered)}`));
    root.append(svg("text", { x: x(i) + bar / 2 + 4, y: changeMid + 12 }, `−${num(v.exited)}`));
    const live = v.version === liveVersion || v.state === "live";
    root.append(svg("text", { x: x(i), y: height - 20, "text-anchor": "middle", class: live ? "live" : "" }, `${versionName(v)}${live ? " (live)" : ""}`));
    root.append(svg("text", { x: x(i), y: height - 6, "text-anchor": "middle" }, when(v.logical_date).replace(" UTC", "")));
  });
  return root;
}

function compact(value) {
  if (value >= 1e9) return `${(value / 1e9).toFixed(1)}G`;
  if (value >= 1e6) return `${(value / 1e6).toFixed(1)}M`;
  if (value >= 1e4) return `${(value / 1e3).toFixed(value >= 1e5 ? 0 : 1)}k`;
  return String(value);
}

// ------------------------------------------------------------------ the member box

async function checkMember(event) {
  event.preventDefault();
  const segmentId = $("detail").dataset.segment;
  const userId = $("member-id").value;
  const answer = $("member-answer");
  answer.className = "";
  answer.textContent = "asking…";
  try {
    const body = await api(segmentPath(segmentId, `/members/${encodeURIComponent(userId)}`));
    answer.className = body.member ? "yes" : "no";
    answer.textContent = `${body.user_id} ${body.member ? "is a member" : "is not a member"} of ${body.segment_id} (version ${body.version}, read from ${body.source})`;
  } catch (err) {
    answer.className = "error";
    answer.textContent = err.message;
    if (err.status === 401 || err.status === 403) handle(err);
  }
}

// ------------------------------------------------------------------ start

function start() {
  $("reload").addEventListener("click", loadList);
  $("only-stale").addEventListener("change", loadList);
  $("filter-owner").addEventListener("change", loadList);
  $("filter-label").addEventListener("change", loadList);
  $("member-form").addEventListener("submit", checkMember);
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (token) window.sessionStorage.setItem(TOKEN_KEY, token);
    else window.sessionStorage.removeItem(TOKEN_KEY);
    $("token").value = "";
    loadList();
  });
  window.addEventListener("hashchange", showPicked);
  loadList();
}

start();
