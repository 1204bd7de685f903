// The web UI: plain JavaScript, no build step, no inline script (the CSP forbids it).
// Sessions live in HttpOnly JWT cookies set by the backend; this code only ever sees the
// CSRF cookies, whose value it echoes in X-CSRF-TOKEN on every state-changing call.
"use strict";

const $ = (id) => document.getElementById(id);

let currentUser = null;

// Messages a user can act on, by HTTP status.
const STATUS_TEXT = {
  400: "The request was not accepted: check the fields.",
  401: "Your session has ended: please sign in again.",
  403: "You are not allowed to do that.",
  404: "Not found.",
  409: "That already exists.",
  413: "That request is too large.",
  429: "Too many attempts: wait a minute and try again.",
  502: "The backend is not answering: try again shortly.",
  503: "The service is not ready yet (Vault or the database): try again shortly.",
};

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function readCookie(name) {
  const prefix = name + "=";
  for (const part of document.cookie.split(";")) {
    const item = part.trim();
    if (item.startsWith(prefix)) return decodeURIComponent(item.slice(prefix.length));
  }
  return "";
}

async function send(method, path, body, csrfCookie) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRF-TOKEN"] = readCookie(csrfCookie);
  return fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
}

async function parse(response) {
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("application/json") ? await response.json() : {};
  if (response.ok) return data;
  const detail = data.error || data.message || data.msg;
  const text = STATUS_TEXT[response.status] || `Request failed (${response.status}).`;
  throw new ApiError(response.status, detail && response.status !== 401 ? `${text} ${detail}` : text);
}

// One call with one silent retry: a 401 may only mean the 15-minute access token expired,
// so refresh it with the refresh cookie (and its own CSRF cookie) and try once more.
const NO_RETRY = ["/api/auth/login", "/api/auth/refresh", "/api/auth/logout"];

async function api(method, path, body) {
  let response = await send(method, path, body, "csrf_access_token");
  if (response.status === 401 && !NO_RETRY.includes(path)) {
    const refreshed = await send("POST", "/api/auth/refresh", undefined, "csrf_refresh_token");
    if (refreshed.ok) response = await send(method, path, body, "csrf_access_token");
  }
  return parse(response);
}

function showMessage(text, kind = "info") {
  const box = $("message");
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = !text;
}

function describeError(error) {
  return error instanceof ApiError ? error.message : "The server could not be reached.";
}

// "in 6 days 23 h", "in 14 min": how far away an expiry is, in the two largest units.
function untilText(milliseconds) {
  const minutes = Math.round(milliseconds / 60000);
  if (minutes < 1) return "in under a minute";
  const days = Math.floor(minutes / 1440);
  const hours = Math.floor((minutes % 1440) / 60);
  if (days > 0) return `in ${days} day${days === 1 ? "" : "s"}${hours ? ` ${hours} h` : ""}`;
  if (hours > 0) return `in ${hours} h ${minutes % 60} min`;
  return `in ${minutes} min`;
}

function formatTime(value) {
  // The JWT cookies are HttpOnly: only the server can say when the session ends.
  if (value === undefined || value === null || value === "") {
    return "renewed automatically while you use the app";
  }
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  const left = date.getTime() - Date.now();
  const when = date.toLocaleString();
  return left < 0 ? `${when} (expired)` : `${when} (${untilText(left)})`;
}

// The session answer may carry the user at the top level or under "user".
function userOf(body) {
  return body && body.user ? body.user : body;
}

function showLogin() {
  $("session").hidden = true;
  $("account-view").hidden = true;
  $("admin-view").hidden = true;
  $("login-view").hidden = false;
  $("login-username").focus();
}

async function showSession(body) {
  const user = userOf(body);
  currentUser = user;
  $("login-view").hidden = true;
  $("session").hidden = false;
  $("who").textContent = `${user.username} (${user.role})`;
  $("me-username").textContent = user.username;
  $("me-role").textContent = user.role;
  // ISO-8601 UTC from login, refresh and me: the refresh token's and the access token's exp.
  $("me-expiry").textContent = formatTime(body.session_expires_at);
  $("me-access-expiry").textContent = formatTime(body.access_expires_at);
  $("account-view").hidden = false;
  const admin = user.role === "admin";
  $("admin-view").hidden = !admin;
  if (admin) await Promise.all([loadVaultStatus(), loadUsers()]);
}

// --- Vault panel -----------------------------------------------------------------------

function badge(text, kind) {
  const span = document.createElement("span");
  span.className = `badge ${kind}`;
  span.textContent = text;
  return span;
}

function text(value) {
  return document.createTextNode(value === null || value === undefined || value === "" ? "—" : String(value));
}

function seconds(value) {
  if (typeof value !== "number") return text(value);
  if (value >= 3600) return text(`${Math.floor(value / 3600)} h ${Math.round((value % 3600) / 60)} min`);
  if (value >= 90) return text(`${Math.round(value / 60)} min`);
  return text(`${Math.round(value)} s`);
}

function sourceBadge(source) {
  const kind = source === "vault" ? "ok" : source === "cache" ? "warn" : "bad";
  return badge(source || "unknown", kind);
}

function cacheSummary(paths) {
  const list = document.createElement("ul");
  list.className = "plain";
  for (const [path, entry] of Object.entries(paths || {})) {
    const item = document.createElement("li");
    const version = entry.version !== undefined ? `, version ${entry.version}` : "";
    const age = typeof entry.age_seconds === "number" ? `${Math.round(entry.age_seconds)} s old` : "";
    item.append(`${path}: `, sourceBadge(entry.source), ` ${age}${version}${entry.stale ? " (stale)" : ""}`);
    list.append(item);
  }
  return list.children.length ? list : text("");
}

// The rows an operator looks for first; status() never carries a secret value.
function vaultRows(status) {
  const token = status.token || {};
  return [
    ["Secrets come from", sourceBadge(status.source)],
    ["Vault address", text(status.current_address || (status.addresses || []).join(", "))],
    ["Authenticated", badge(status.authenticated ? "yes" : "no", status.authenticated ? "ok" : "bad")],
    ["Token TTL left", seconds(token.ttl_left)],
    ["Token renewable", text(token.renewable === undefined ? "" : token.renewable ? "yes" : "no")],
    ["Last login", text(token.last_login)],
    ["Last renewal", text(token.last_renewal)],
    ["Cache TTL", seconds(status.cache_ttl)],
    ["Cached secrets", cacheSummary(status.paths)],
    ["Last error", status.last_error ? badge(String(status.last_error), "bad") : text("none")],
    ["Outage", text(status.outage ? JSON.stringify(status.outage) : "none")],
    ["Answered by worker", text(status.pid)],
  ];
}

async function loadVaultStatus() {
  const list = $("vault-status");
  try {
    const status = await api("GET", "/api/admin/vault/status");
    list.replaceChildren();
    for (const [label, node] of vaultRows(status)) {
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.append(node);
      list.append(dt, dd);
    }
  } catch (error) {
    list.replaceChildren(text(describeError(error)));
  }
}

async function refreshVaultCache() {
  const button = $("vault-refresh");
  button.disabled = true;
  try {
    await api("POST", "/api/admin/vault/refresh");
    showMessage("Secret cache dropped in every worker: secrets are read from Vault again.", "success");
    await loadVaultStatus();
  } catch (error) {
    showMessage(describeError(error), "error");
  } finally {
    button.disabled = false;
  }
}

// --- Users -----------------------------------------------------------------------------

function userRow(user) {
  const row = document.createElement("tr");
  row.dataset.username = user.username;
  const cells = [user.username, user.role];
  for (const text of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    row.append(td);
  }
  const state = document.createElement("td");
  state.append(user.enabled === false ? badge("disabled", "bad") : badge("active", "ok"));
  row.append(state);
  const actions = document.createElement("td");
  row.append(actions);
  // Admins cannot disable themselves (the API answers 409): offer no such button.
  if (currentUser && currentUser.id === user.id) return row;
  const toggle = document.createElement("button");
  toggle.type = "button";
  toggle.className = `small ${user.enabled === false ? "secondary" : "danger"}`;
  toggle.textContent = user.enabled === false ? "Enable" : "Disable";
  toggle.addEventListener("click", () => setEnabled(user, user.enabled === false));
  actions.append(toggle);
  return row;
}

async function loadUsers() {
  const body = $("users-body");
  try {
    const answer = await api("GET", "/api/users");
    const users = Array.isArray(answer) ? answer : answer.users || [];
    body.replaceChildren(...users.map(userRow));
  } catch (error) {
    showMessage(describeError(error), "error");
  }
}

async function setEnabled(user, enabled) {
  try {
    await api("PATCH", `/api/users/${encodeURIComponent(user.id)}`, { enabled });
    showMessage(`${user.username} is now ${enabled ? "enabled" : "disabled"}.`, "success");
    await loadUsers();
  } catch (error) {
    showMessage(describeError(error), "error");
  }
}

async function createUser(event) {
  event.preventDefault();
  const form = event.target;
  const payload = {
    username: $("new-username").value.trim(),
    password: $("new-password").value,
    role: $("new-role").value,
  };
  try {
    await api("POST", "/api/users", payload);
    form.reset();
    showMessage(`User ${payload.username} created.`, "success");
    await loadUsers();
  } catch (error) {
    showMessage(describeError(error), "error");
  }
}

// --- Session ---------------------------------------------------------------------------

async function login(event) {
  event.preventDefault();
  const username = $("login-username").value.trim();
  const password = $("login-password").value;
  try {
    const body = await api("POST", "/api/auth/login", { username, password });
    $("login-form").reset();
    showMessage("");
    await showSession(body.user && body.user.role ? body : await api("GET", "/api/auth/me"));
  } catch (error) {
    const text = error instanceof ApiError && error.status === 401
      ? "Wrong username or password, or the account is disabled."
      : describeError(error);
    showMessage(text, "error");
  }
}

async function logout() {
  try {
    // The refresh token names the session (the access token may have expired already).
    await parse(await send("POST", "/api/auth/logout", undefined, "csrf_refresh_token"));
    showMessage("You are signed out.", "info");
  } catch (error) {
    showMessage(describeError(error), "error");
  }
  showLogin();
}

async function start() {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("user-form").addEventListener("submit", createUser);
  $("vault-refresh").addEventListener("click", refreshVaultCache);
  try {
    await showSession(await api("GET", "/api/auth/me"));
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) showMessage(describeError(error), "error");
    showLogin();
  }
}

document.addEventListener("DOMContentLoaded", start);
