// Switchyard's dashboard. Every two seconds it reads GET /admin/stats,
// /admin/services and /admin/nodes and draws them; the buttons make the
// admin calls an operator would make with curl, after a confirmation.
//
// Everything the host says goes into the page as text, never as HTML: a
// version's last error or a history reason is whatever a guest or a file
// made it. The admin token is kept in this tab's sessionStorage only.
"use strict";

const REFRESH_MS = 2000;
const TOKEN_KEY = "switchyard-admin-token";

/** Services whose details are open. */
const expanded = new Set();
/** Per service, its action panel (split sliders, upload form), kept across
 *  redraws so that a slider being moved is not reset under the hand. */
const panels = new Map();
/** The last answers, and the errors to show. */
let last = null;
let refreshError = null;
let actionError = null;
let updatedAt = null;

class HostError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** A DOM element: `h("td", {class: "num"}, "12")`. Strings become text. */
function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    // Through the CSSOM: the page's content security policy refuses style
    // attributes.
    else if (name === "style") Object.assign(node.style, value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const $ = (selector) => document.querySelector(selector);

// === talking to the host ===

async function call(method, path, body, contentType) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  if (contentType) headers["Content-Type"] = contentType;
  let response;
  try {
    response = await fetch(path, { method, headers, body, cache: "no-store" });
  } catch (e) {
    throw new HostError(0, "the host does not answer (" + e.message + ")");
  }
  let answer = null;
  try {
    answer = await response.json();
  } catch (_) {
    // Not JSON: the status says enough.
  }
  const reason = (answer && answer.error) || response.status + " " + response.statusText;
  if (response.status === 401) {
    askForToken();
    throw new HostError(401, token
      ? "The host refused this admin token (" + reason + ")."
      : "This host needs its admin token (" + reason + ").");
  }
  if (!response.ok) throw new HostError(response.status, reason);
  return answer;
}

function askForToken() {
  $("#token-form").hidden = false;
  $("#token-input").focus();
}

async function refresh() {
  try {
    const [stats, services, nodes] = await Promise.all([
      call("GET", "/admin/stats"),
      call("GET", "/admin/services"),
      call("GET", "/admin/nodes").catch((e) => ({ nodes: [], error: e.message })),
    ]);
    last = { stats, services, nodes };
    refreshError = null;
    draw();
    updatedAt = new Date().toLocaleTimeString();
    $("#updated").textContent = "updated " + updatedAt;
  } catch (e) {
    refreshError = e.message;
    $("#updated").textContent = updatedAt ? "not updated since " + updatedAt : "not connected";
  }
  drawError();
}

function drawError() {
  const message = actionError || refreshError;
  const banner = $("#error");
  banner.hidden = !message;
  banner.textContent = message || "";
}

/** Ask before acting; true when the operator confirmed. */
function confirmed(text) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

/** Confirm, make one admin call, redraw; the host's refusal goes in the banner. */
async function act(question, method, path, body, contentType) {
  if (!(await confirmed(question))) return false;
  try {
    await call(method, path, body, contentType);
    actionError = null;
    await refresh();
    return true;
  } catch (e) {
    actionError = e.message;
    drawError();
    return false;
  }
}

// === drawing ===

const dash = "–";
const rate = (x) => (x === undefined ? dash : x.toFixed(1));
const percent = (x) => (x === null || x === undefined ? dash : (x * 100).toFixed(1) + "%");
const millis = (x) => (x === null || x === undefined ? dash
  : (x < 10 ? x.toFixed(2) : x.toFixed(0)) + " ms");
const time = (ms) => new Date(ms).toLocaleTimeString();
const path = (name, rest) => "/admin/services/" + encodeURIComponent(name) + (rest || "");

function successClass(x) {
  if (x === null || x === undefined) return undefined;
  return x >= 0.99 ? "good" : x < 0.95 ? "poor" : undefined;
}

function bar(traffic) {
  const entries = Object.entries(traffic || {});
  const total = entries.reduce((sum, [, w]) => sum + w, 0) || 1;
  return h("div", { class: "bar", title: entries.map(([v, w]) => v + ": " + w).join(", ") },
    entries.map(([version, weight]) =>
      h("span", { style: { width: (100 * weight / total) + "%" }, "data-version": version },
        version + " " + Math.round(100 * weight / total) + "%")));
}

function badges(view, stats) {
  return [
    stats && stats.failed_over && h("span", { class: "badge bad", title: "a version was taken out of traffic by failover" }, "failed over"),
    stats && stats.failing && h("span", { class: "badge bad", title: "failing with no healthy version to take over" }, "failing"),
    view.removed && h("span", { class: "badge warn" }, "removed"),
    view.disagreement && h("span", { class: "badge warn", title: view.disagreement }, "disagrees"),
    Object.keys(view.traffic || {}).length > 1 && h("span", { class: "badge ok" }, "split"),
  ];
}

function draw() {
  const { stats, services } = last;
  $("#window").textContent = "· last " + stats.window_seconds + " s";
  const statsOf = new Map(stats.services.map((s) => [s.name, s]));
  const views = services.services;
  const body = $("#services tbody");
  const rows = [];
  for (const view of views) {
    const s = statsOf.get(view.name);
    const open = expanded.has(view.name);
    rows.push(h("tr", {
      class: "service", "data-service": view.name, "aria-expanded": String(open),
      onclick: () => { open ? expanded.delete(view.name) : expanded.add(view.name); draw(); },
    },
      h("td", {}, view.name, " ", badges(view, s)),
      h("td", { class: "active-version" }, view.active_version || dash),
      h("td", { class: "split" }, bar(view.traffic)),
      h("td", { class: "num rps" }, s ? rate(s.requests_per_second) : dash),
      h("td", { class: "num success " + (s ? successClass(s.success_rate) || "" : "") },
        s ? percent(s.success_rate) : dash),
      h("td", { class: "num p50" }, s ? millis(s.latency_ms && s.latency_ms.p50) : dash),
      h("td", { class: "num p99" }, s ? millis(s.latency_ms && s.latency_ms.p99) : dash),
      h("td", { class: "num instances" },
        s ? s.instances.busy + " / " + s.instances.idle + " / " + s.instances.max : dash),
      h("td", { class: "num queued" }, s ? s.queued : dash),
      h("td", {}, open ? "▾" : "▸")));
    if (open) {
      rows.push(h("tr", { class: "detail", "data-detail": view.name },
        h("td", { colspan: 10 }, detail(view, s, views))));
    }
  }
  body.replaceChildren(...rows);
  $("#no-services").hidden = views.length > 0;
  drawNodes(last.nodes);
}

function detail(view, stats, views) {
  const statsOf = new Map(((stats && stats.versions) || []).map((v) => [v.version, v]));
  const versions = h("table", { class: "versions" },
    h("thead", {}, h("tr", {},
      ["version", "state", "weight", "req/s", "success", "requests", "errors", "compile", "why", ""]
        .map((t) => h("th", {}, t)))),
    h("tbody", {}, view.versions.map((v) => {
      const s = statsOf.get(v.version);
      const why = v.reason || (v.last_error && v.last_error.failure);
      return h("tr", { "data-version": v.version },
        h("td", {}, v.version),
        h("td", { class: "state state-" + v.state }, v.state),
        h("td", { class: "num" }, v.weight === null || v.weight === undefined ? dash : v.weight),
        h("td", { class: "num" }, s ? rate(s.requests_per_second) : dash),
        h("td", { class: "num" }, s ? percent(s.success_rate) : dash),
        h("td", { class: "num" }, v.requests),
        h("td", { class: "num" }, v.errors),
        h("td", { class: "num" }, v.compile_ms === null || v.compile_ms === undefined ? dash
          : v.compile_ms.toFixed(0) + " ms" + (v.from_cache ? " (cache)" : "")),
        h("td", {}, why || "",
          v.last_error && v.last_error.stderr && h("pre", {}, v.last_error.stderr)),
        h("td", {}, v.state !== "rejected" && v.state !== "active" && h("button", {
          type: "button", "data-action": "activate", "data-service": view.name, "data-version": v.version,
          onclick: (e) => {
            e.stopPropagation();
            act("Send all of " + view.name + "'s traffic to " + v.version + "?", "POST",
              path(view.name, "/activate"), JSON.stringify({ version: v.version }), "application/json");
          },
        }, "Activate")));
    })));

  const mine = new Set(view.exports);
  const dependents = views
    .filter((other) => other.name !== view.name && other.imports.some((i) => mine.has(i)))
    .map((other) => other.name);
  const list = (items, empty) => items.length
    ? h("ul", { class: "plain" }, items.map((i) => h("li", {}, i)))
    : h("p", { class: "muted" }, empty);

  return [
    versions,
    h("div", { class: "columns" },
      h("div", {},
        h("h3", {}, "History"),
        view.history.length
          ? h("ul", { class: "timeline" }, view.history.map((e) => h("li", {},
            h("time", {}, time(e.at_ms)), h("strong", {}, e.action),
            e.version ? " " + e.version : "", " · ", e.reason)))
          : h("p", { class: "muted" }, "nothing yet")),
      h("div", {},
        h("h3", {}, "Imports"), list(view.imports, "none"),
        h("h3", {}, "Exports"), list(view.exports, "none"),
        h("h3", {}, "Used by"), list(dependents, "no service imports it")),
      h("div", {},
        h("h3", {}, "Refused files"),
        list(view.refused_files.map((f) => f.file + ": " + f.reason), "none"))),
    actions(view),
  ];
}

/** The rollback button, the split sliders and the upload form of a service:
 *  built again only when its versions or split change, and not while a
 *  slider has been moved and not applied. */
function actions(view) {
  const loaded = view.versions.filter((v) => v.state !== "rejected").map((v) => v.version);
  const key = JSON.stringify([loaded, view.traffic]);
  const kept = panels.get(view.name);
  if (kept && (kept.key === key || kept.editing)) return kept.node;

  const sliders = loaded.map((version) => {
    const value = h("span", { class: "num" }, String(view.traffic[version] || 0));
    const input = h("input", {
      type: "range", min: 0, max: 100, value: view.traffic[version] || 0,
      "data-version": version,
      oninput: () => { value.textContent = input.value; panel.editing = true; },
    });
    return { version, input, row: h("label", { class: "slider" }, version, input, value) };
  });
  const applySplit = h("button", {
    type: "button", "data-action": "split", "data-service": view.name,
    onclick: async () => {
      const split = {};
      for (const s of sliders) if (Number(s.input.value) > 0) split[s.version] = Number(s.input.value);
      const words = Object.entries(split).map(([v, w]) => v + " " + w).join(", ") || "nothing";
      if (await act("Split " + view.name + "'s traffic: " + words + "?", "PUT",
        path(view.name, "/traffic"), JSON.stringify(split), "application/json")) {
        panel.editing = false;
        draw();
      }
    },
  }, "Apply split");

  const versionInput = h("input", { type: "text", placeholder: "X.Y.Z", size: 8, "data-field": "version" });
  const fileInput = h("input", { type: "file", accept: ".wasm", "data-field": "file" });
  const upload = h("button", {
    type: "button", "data-action": "upload", "data-service": view.name,
    onclick: async () => {
      const file = fileInput.files[0];
      const version = versionInput.value.trim();
      if (!file || !version) {
        actionError = "Choose a component file and give its version (X.Y.Z) to upload.";
        drawError();
        return;
      }
      await act("Upload " + file.name + " as " + view.name + " " + version + "?", "POST",
        path(view.name, "/versions?version=" + encodeURIComponent(version)), file,
        "application/wasm");
    },
  }, "Upload");

  const node = h("div", { class: "actions", onclick: (e) => e.stopPropagation() },
    h("fieldset", {}, h("legend", {}, "Roll back"),
      h("button", {
        type: "button", "data-action": "rollback", "data-service": view.name,
        onclick: () => act("Roll " + view.name + " back to the version that served before?",
          "POST", path(view.name, "/rollback")),
      }, "Roll back")),
    loaded.length > 0 && h("fieldset", {}, h("legend", {}, "Traffic split"),
      sliders.map((s) => s.row), applySplit),
    h("fieldset", {}, h("legend", {}, "Upload a version"), versionInput, " ", fileInput, " ", upload));
  const panel = { key, node, editing: false };
  panels.set(view.name, panel);
  return node;
}

function drawNodes(answer) {
  const nodes = (answer && answer.nodes) || [];
  $("#nodes-section").hidden = nodes.length < 2;
  // What each live host serves, per service: hosts that differ disagree.
  const serving = new Map();
  for (const node of nodes.filter((n) => n.alive)) {
    for (const [service, report] of Object.entries(node.services)) {
      const seen = serving.get(service) || new Set();
      seen.add(JSON.stringify(report.serving));
      serving.set(service, seen);
    }
  }
  $("#nodes tbody").replaceChildren(...nodes.map((node) => {
    const reports = Object.entries(node.services);
    const differs = reports
      .filter(([service, r]) => r.disagreement || (serving.get(service) || new Set()).size > 1)
      .map(([service, r]) => service + ": " + (r.disagreement || "serves differently from another host"));
    return h("tr", { "data-node": node.id },
      h("td", {}, node.id, node.this_node ? " (this host)" : ""),
      h("td", {}, node.address),
      h("td", { class: node.alive ? "good" : "poor" },
        node.alive ? "alive" : "gone " + Math.round(node.age_ms / 1000) + " s"),
      h("td", {}, reports.map(([service, r]) =>
        service + " " + Object.entries(r.serving).map(([v, w]) => v + "=" + w).join(" ")).join(", ")),
      h("td", { class: differs.length ? "poor" : undefined }, differs.join("; ") || dash));
  }));
}

// === start ===

document.addEventListener("DOMContentLoaded", () => {
  $("#token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token-input").value);
    $("#token-input").value = "";
    $("#token-form").hidden = true;
    actionError = null;
    refresh();
  });
  $("#token-change").addEventListener("click", askForToken);
  refresh();
  setInterval(refresh, REFRESH_MS);
});
