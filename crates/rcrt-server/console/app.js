// RCRT Secrets web console: a same-origin single page app over the JSON API.
//
// Safe by construction: every node is built with createElement + textContent (never innerHTML
// with data), no inline script or style (the server's CSP forbids both), no eval. The sign-in
// credential is sent once to POST /ui/session and never stored; the CSRF token lives in a
// variable only. Secret values are never put in a URL, the page title, a log or a list: a
// revealed value lives in one <code> element and one closure until it is hidden (after at most
// 30 s, on Hide, or when the screen is left).
"use strict";

(() => {
  const APP = "RCRT Secrets";
  const HIDE_AFTER_S = 30;
  const KEK_POLL_MS = 5000;
  /** The name the server gives the tokens behind console sessions. */
  const SESSION_TOKEN_NAME = "console:session";
  const ROLES = [
    "secrets.read",
    "secrets.decrypt",
    "secrets.write",
    "secrets.admin",
    "tokens.create",
    "rcrt.operator",
    "audit.read",
  ];
  const AUDIT_ACTIONS = [
    "create", "update", "delete", "decrypt", "token_create", "token_revoke", "kek_verify",
    "kek_rewrap", "reencrypt", "kek_status", "kek_rewrap_trigger", "rewrap_start",
    "rewrap_progress", "rewrap_end", "audit_read", "audit_key_create", "rollback",
    "soft_delete", "restore", "purge", "destroy_version", "update_metadata",
  ];
  const LIST_FILTERS = ["scope_type", "scope_id", "name_prefix", "label", "expiring_within", "deleted"];
  const AUDIT_FILTERS = ["secret_id", "user_id", "action", "outcome", "since", "until", "limit"];

  /** The signed-in session: {auth, csrf, principal, expiresAt, operator}; null when signed out. */
  let session = null;
  /** Bumped on every screen change: async work of an older screen checks it and stops. */
  let screenSeq = 0;
  /** Functions run when the current screen is left (timers, revealed values). */
  let leaving = [];
  let lastPath = null;
  let expiryTimer = null;

  const $ = (sel) => document.querySelector(sel);

  // ---------------------------------------------------------------------------------------
  // DOM helpers

  /**
   * Builds an element. attrs: `class`, `for`, `text`, `on` ({event: fn}), boolean and value
   * properties (`hidden`, `disabled`, `required`, `checked`, `value`), other attributes as
   * strings. Children: nodes or strings (as text); null/false/undefined are skipped.
   */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    // Forms check their own fields and say what is wrong in their error slot (role=alert).
    if (tag === "form") el.noValidate = true;
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === "class") el.className = v;
        else if (k === "for") el.htmlFor = v;
        else if (k === "text") el.textContent = v;
        else if (k === "on") {
          for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
        } else if (k === "hidden" || k === "disabled" || k === "required" || k === "checked" ||
                   k === "readOnly" || k === "multiple" || k === "selected" || k === "open") {
          el[k] = Boolean(v);
        } else if (k === "value") el.value = v;
        else if (k === "style" || k.startsWith("on")) throw new Error(`refused attribute ${k}`);
        else el.setAttribute(k, v === true ? "" : String(v));
      }
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  let idSeq = 0;
  const uid = (p) => `${p}-${++idSeq}`;

  /** A labelled form control: {wrap, input}. */
  function field(label, control, hint) {
    const id = control.id || uid("f");
    control.id = id;
    let hintEl = null;
    if (hint) {
      hintEl = h("p", { class: "hint", id: `${id}-hint` }, hint);
      control.setAttribute("aria-describedby", hintEl.id);
    }
    const wrap = h("div", { class: "field" }, h("label", { for: id }, label), control, hintEl);
    return wrap;
  }

  function input(attrs) {
    return h("input", { type: "text", autocomplete: "off", spellcheck: "false", ...attrs });
  }

  function select(options, value, attrs) {
    const el = h("select", attrs || {});
    for (const o of options) {
      const [v, label] = Array.isArray(o) ? o : [o, o];
      el.append(h("option", { value: v, selected: v === value }, label));
    }
    if (value !== undefined) el.value = value;
    return el;
  }

  /** A value textarea: never autocompleted, spell-checked or kept by the browser's form restore. */
  function valueArea(attrs) {
    return h("textarea", {
      autocomplete: "off",
      spellcheck: "false",
      autocapitalize: "off",
      rows: "3",
      ...attrs,
    });
  }

  function button(label, onClick, cls, attrs) {
    return h("button", { type: "button", class: cls || "btn", on: { click: onClick }, ...attrs }, label);
  }

  function timeEl(iso) {
    if (!iso) return h("span", { class: "muted" }, "—");
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return h("span", null, iso);
    return h("time", { datetime: iso, title: iso }, d.toLocaleString(undefined, {
      dateStyle: "medium",
      timeStyle: "short",
    }));
  }

  const rtf = typeof Intl.RelativeTimeFormat === "function"
    ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" })
    : null;

  function relative(iso) {
    const ms = new Date(iso).getTime() - Date.now();
    if (!rtf || Number.isNaN(ms)) return "";
    const abs = Math.abs(ms);
    const units = [["day", 86400e3], ["hour", 3600e3], ["minute", 60e3]];
    for (const [unit, size] of units) {
      if (abs >= size) return rtf.format(Math.round(ms / size), unit);
    }
    return rtf.format(Math.round(ms / 1000), "second");
  }

  /** Expiry: the time and a badge (expired / soon). */
  function expiryEl(iso) {
    if (!iso) return h("span", { class: "muted" }, "never");
    const ms = new Date(iso).getTime() - Date.now();
    let badge = null;
    if (ms <= 0) badge = h("span", { class: "badge badge-danger" }, "expired");
    else if (ms < 7 * 86400e3) badge = h("span", { class: "badge badge-warn" }, "soon");
    return h("span", null, badge, timeEl(iso), h("span", { class: "muted" }, ` (${relative(iso)})`));
  }

  function labelsEl(labels) {
    const entries = Object.entries(labels || {});
    if (!entries.length) return h("span", { class: "muted" }, "—");
    return h("span", null, entries.map(([k, v]) => h("span", { class: "badge" }, `${k}=${v}`)));
  }

  function scopeText(s) {
    return s.scope_type === "global" ? "global" : `${s.scope_type}: ${s.scope_id}`;
  }

  function table(headers, rows, caption) {
    return h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": `${caption} (table)` },
      h("table", null,
        h("thead", null, h("tr", null, headers.map((x) => h("th", { scope: "col" }, x)))),
        h("tbody", null, rows)));
  }

  /** Puts a "Load more" button in `slot` while there is a next page (`cursor`); it calls
   * `load(cursor)`, which appends that page, and shows its error in the slot. */
  function moreButton(ctx, slot, cursor, load) {
    slot.replaceChildren();
    if (!cursor) return;
    const btn = button("Load more", async () => {
      await busy(btn, () => load(cursor).catch((e) => {
        if (ctx.alive()) slot.append(errorBox(e));
      }));
    }, "btn btn-secondary");
    slot.append(btn);
  }

  function loading(text) {
    return h("p", { class: "loading", role: "status" }, text || "Loading…");
  }

  function errorBox(err, prefix) {
    const msg = err instanceof ApiError ? err.message : (err && err.message) || String(err);
    const code = err instanceof ApiError && err.code ? ` (${err.status} ${err.code})` : "";
    return h("div", { class: "error", role: "alert" },
      h("strong", null, prefix || "Error"), ": ", msg, code);
  }

  function emptyState(text, action) {
    return h("div", { class: "empty" }, h("p", null, text), action || null);
  }

  /** Shows a short message in the aria-live status region (outside <main>). */
  let statusTimer = null;
  function announce(text, kind) {
    const el = $("#status");
    clearTimeout(statusTimer);
    el.className = `status-region ${kind === "error" ? "is-error" : "is-ok"}`;
    el.textContent = text;
    statusTimer = setTimeout(() => {
      el.textContent = "";
      el.className = "status-region";
    }, 6000);
  }

  function setTitle(text) {
    document.title = text ? `${text} · ${APP}` : APP;
  }

  /** The error slot of a form: errors replace each other. */
  function formError(slot, err) {
    slot.replaceChildren(err ? errorBox(err) : "");
  }

  /** Runs fn with the button disabled (a second click does nothing while it runs). */
  async function busy(btn, fn) {
    if (btn) {
      btn.disabled = true;
      btn.setAttribute("aria-busy", "true");
    }
    try {
      return await fn();
    } finally {
      if (btn) {
        btn.disabled = false;
        btn.removeAttribute("aria-busy");
      }
    }
  }

  /** A modal confirmation (native <dialog>: focus kept inside, Esc cancels). */
  function confirmAction(title, text, okLabel) {
    const dlg = $("#confirm");
    $("#confirm-title").textContent = title;
    $("#confirm-text").textContent = text;
    $("#confirm-ok").textContent = okLabel || "Confirm";
    return new Promise((resolve) => {
      dlg.returnValue = "";
      dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok"), { once: true });
      dlg.showModal();
      $("#confirm-cancel").focus();
    });
  }

  // ---------------------------------------------------------------------------------------
  // The API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message || `request failed (${status})`);
      this.status = status;
      this.code = code || "";
    }
  }

  /**
   * One API call with the session cookie. State-changing calls carry X-CSRF-Token. A 401 ends
   * the session (back to sign-in) unless opts.quiet401.
   */
  async function api(method, path, opts) {
    const o = opts || {};
    const headers = { Accept: "application/json", ...(o.headers || {}) };
    let body;
    if (o.body !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(o.body);
    }
    if (method !== "GET" && method !== "HEAD" && session && session.csrf) {
      headers["X-CSRF-Token"] = session.csrf;
    }
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        body,
        credentials: "same-origin",
        cache: "no-store",
        redirect: "error",
        referrerPolicy: "no-referrer",
      });
    } catch (e) {
      throw new ApiError(0, "network", "the server could not be reached");
    }
    let data = null;
    const type = res.headers.get("content-type") || "";
    if (res.status !== 204 && type.includes("json")) {
      try {
        data = await res.json();
      } catch (e) {
        data = null;
      }
    }
    if (!res.ok) {
      const err = data && data.error ? data.error : {};
      const e = new ApiError(res.status, err.code, err.message || res.statusText);
      if (res.status === 401 && !o.quiet401) sessionEnded("Your session has ended: sign in again.");
      throw e;
    }
    return { status: res.status, data, headers: res.headers };
  }

  const enc = encodeURIComponent;

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
    }
    const s = q.toString();
    return s ? `?${s}` : "";
  }

  // ---------------------------------------------------------------------------------------
  // Session

  function setSession(data) {
    session = {
      auth: data.auth,
      csrf: data.csrf_token,
      principal: data.principal || { user_id: "?", tenant: "?", roles: [], workspaces: [] },
      expiresAt: data.expires_at || null,
      operator: Boolean(data.operator),
      id: data.session_id || null,
    };
    clearTimeout(expiryTimer);
    if (session.expiresAt) {
      const ms = new Date(session.expiresAt).getTime() - Date.now() + 1000;
      if (ms > 0 && ms < 2 ** 31 - 1) expiryTimer = setTimeout(checkSession, ms);
    }
    updateChrome();
  }

  function hasRole(role) {
    return Boolean(session && (session.principal.roles || []).includes(role));
  }

  async function checkSession() {
    try {
      const { data } = await api("GET", "/ui/session", { quiet401: true });
      setSession(data);
    } catch (e) {
      if (e.status === 401) sessionEnded("Your session has ended: sign in again.");
    }
  }

  function updateChrome() {
    const signedIn = Boolean(session);
    $("#who").hidden = !signedIn;
    $("#nav").hidden = !signedIn;
    if (!signedIn) {
      $("#who-user").textContent = "";
      $("#who-tenant").textContent = "";
      $("#who-detail").textContent = "";
      return;
    }
    const p = session.principal;
    $("#who-user").textContent = p.user_id;
    $("#who-tenant").textContent = p.tenant;
    const bits = [];
    if (session.operator) bits.push("operator");
    if (session.auth === "disabled") bits.push("authentication disabled");
    if (session.expiresAt) {
      bits.push(`session until ${new Date(session.expiresAt).toLocaleTimeString(undefined, { timeStyle: "short" })}`);
    }
    $("#who-detail").textContent = bits.join(" · ");
    $("#sign-out").hidden = session.auth === "disabled";
    $("#nav-kek").hidden = !session.operator;
    $("#nav-audit").hidden = !hasRole("audit.read");
  }

  function leaveScreen() {
    screenSeq++;
    const fns = leaving;
    leaving = [];
    for (const fn of fns) {
      try {
        fn();
      } catch (e) {
        // a screen's clean-up must not stop the others
      }
    }
  }

  function sessionEnded(message) {
    if (!session && $("#signin-form")) return;
    session = null;
    clearTimeout(expiryTimer);
    leaveScreen();
    updateChrome();
    renderSignIn(message);
  }

  async function signOut() {
    const btn = $("#sign-out");
    await busy(btn, async () => {
      try {
        await api("DELETE", "/ui/session", { quiet401: true });
      } catch (e) {
        if (e.status !== 401) {
          announce(`Sign out failed: ${e.message}`, "error");
          return;
        }
      }
      session = null;
      clearTimeout(expiryTimer);
        leaveScreen();
      updateChrome();
      renderSignIn(null, "You are signed out.");
    });
  }

  function renderSignIn(errorMessage, okMessage) {
    leaveScreen();
    lastPath = null;
    setTitle("Sign in");
    const main = $("#main");
    const cred = h("textarea", {
      id: "credential",
      name: "credential",
      rows: "4",
      required: true,
      autocomplete: "off",
      spellcheck: "false",
      autocapitalize: "off",
      "aria-describedby": "credential-hint",
    });
    const slot = h("div");
    if (errorMessage) slot.append(h("div", { class: "error", role: "alert" }, errorMessage));
    if (okMessage) slot.append(h("div", { class: "success", role: "status" }, okMessage));
    const submit = h("button", { type: "submit", class: "btn", id: "signin-submit" }, "Sign in");
    const form = h("form", { class: "stack", id: "signin-form" },
      h("div", { class: "field" },
        h("label", { for: "credential" }, "Service token or JWT"),
        cred,
        h("p", { class: "hint", id: "credential-hint" },
          "A service token (rcrt_…) or, where the server accepts them, a JWT. It is exchanged " +
          "for a session cookie once and not kept by the browser.")),
      slot,
      h("div", { class: "actions" }, submit));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const credential = cred.value.trim();
      if (!credential) {
        slot.replaceChildren(h("div", { class: "error", role: "alert" }, "Paste a token or a JWT first."));
        cred.focus();
        return;
      }
      await busy(submit, async () => {
        try {
          const { data } = await api("POST", "/ui/session", { body: { credential }, quiet401: true });
          cred.value = "";
          setSession(data);
          announce(`Signed in as ${session.principal.user_id}.`);
          route(true);
        } catch (e) {
          const msg = e.status === 401
            ? "That token or JWT was not accepted (unknown, expired or revoked)."
            : `Sign-in failed: ${e.message}`;
          slot.replaceChildren(h("div", { class: "error", role: "alert" }, msg));
          cred.focus();
        }
      });
    });
    main.replaceChildren(h("section", { class: "signin panel", "aria-labelledby": "signin-title" },
      h("h1", { id: "signin-title" }, "Sign in"), form));
    cred.focus();
  }

  // ---------------------------------------------------------------------------------------
  // Routing

  function parseHash() {
    const raw = location.hash.replace(/^#/, "");
    const [p, q] = raw.split("?");
    const path = p && p.startsWith("/") ? p : "/secrets";
    let segs;
    try {
      segs = path.split("/").filter(Boolean).map(decodeURIComponent);
    } catch (e) {
      segs = ["secrets"];
    }
    return { path, segs, params: new URLSearchParams(q || "") };
  }

  /** Seconds a revealed value stays: 30, or less with `?hide=N` in the route (1..30). */
  function hideSeconds(params) {
    const n = Number.parseInt(params.get("hide") || "", 10);
    return Number.isFinite(n) && n >= 1 && n <= HIDE_AFTER_S ? n : HIDE_AFTER_S;
  }

  const SCREENS = {
    secrets: screenSecrets,
    vaults: screenVaults,
    tokens: screenTokens,
    audit: screenAudit,
    kek: screenKek,
  };

  function route(forceFocus) {
    if (!session) return;
    const r = parseHash();
    leaveScreen();
    const seq = screenSeq;
    const ctx = {
      params: r.params,
      segs: r.segs,
      alive: () => seq === screenSeq && session !== null,
      onLeave: (fn) => leaving.push(fn),
    };
    const name = r.segs[0] || "secrets";
    for (const a of document.querySelectorAll("[data-nav]")) {
      if (a.dataset.nav === name) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    const main = $("#main");
    const screen = SCREENS[name];
    const moved = forceFocus || r.path !== lastPath;
    lastPath = r.path;
    if (!screen) {
      setTitle("Not found");
      main.replaceChildren(h("h1", { tabindex: "-1" }, "Not found"),
        h("p", null, "No such screen. ", h("a", { href: "#/secrets" }, "Go to the secrets.")));
    } else {
      main.replaceChildren();
      screen(ctx, main);
    }
    if (moved) {
      const h1 = main.querySelector("h1");
      if (h1) {
        h1.tabIndex = -1;
        h1.focus({ preventScroll: false });
      }
    }
  }

  function go(hash) {
    if (location.hash === hash) route(true);
    else location.hash = hash;
  }

  function pageHead(title, ...actions) {
    return h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, title),
      actions.length ? h("div", { class: "actions" }, actions) : null);
  }

  // ---------------------------------------------------------------------------------------
  // Revealed values

  /**
   * Shows values in `container` for `seconds`, then removes them. entries: [[label|null, value]].
   * Returns hide(). The values exist only in this closure and the <code> nodes.
   */
  function showValues(ctx, container, title, entries, seconds, onHidden) {
    let left = seconds;
    let timer = null;
    let values = entries.slice();
    const countdown = h("p", { class: "countdown", id: uid("countdown") });
    const hideBtn = button("Hide", () => hide(true), "btn btn-secondary", { "data-action": "hide-value" });
    const rows = values.map(([label, value], i) => {
      const code = h("code", { class: "revealed-value", "data-key": label || "" }, value);
      const copy = button(label ? `Copy ${label}` : "Copy", () => copyText(code, values[i] && values[i][1]),
        "btn btn-small", { "data-action": "copy-value" });
      return h("div", { class: "stack" },
        label ? h("p", { class: "field-label" }, label) : null,
        h("pre", null, code),
        h("div", { class: "actions" }, copy, values.length === 1 ? hideBtn : null));
    });
    const box = h("div", { class: "secret-box stack", role: "region", "aria-label": title, id: "revealed" },
      h("h3", null, title), rows, values.length > 1 ? h("div", { class: "actions" }, hideBtn) : null, countdown);
    const tick = () => {
      countdown.textContent = `Hidden automatically in ${left} s.`;
    };
    tick();
    timer = setInterval(() => {
      left -= 1;
      if (left <= 0) hide(false);
      else tick();
    }, 1000);
    container.replaceChildren(box);
    hideBtn.focus();

    function hide(byUser) {
      if (!values) return;
      clearInterval(timer);
      for (const c of box.querySelectorAll("code")) c.textContent = "";
      values = null;
      box.remove();
      if (ctx.alive()) announce(byUser ? "Value hidden." : "Value hidden automatically.");
      if (onHidden) onHidden(byUser);
    }
    ctx.onLeave(() => hide(false));
    return hide;
  }

  async function copyText(codeEl, value) {
    if (value === undefined || value === null) return;
    try {
      await navigator.clipboard.writeText(value);
      announce("Copied to the clipboard.");
    } catch (e) {
      // No clipboard access (e.g. not a secure context): select it for Ctrl+C.
      const range = document.createRange();
      range.selectNodeContents(codeEl);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      announce("The browser refused clipboard access: the value is selected, press Ctrl+C.", "error");
    }
  }

  // ---------------------------------------------------------------------------------------
  // Secrets

  function screenSecrets(ctx, main) {
    const id = ctx.segs[1];
    if (id === "new") return screenNewSecret(ctx, main);
    if (id) return screenSecret(ctx, main, id);
    return screenSecretList(ctx, main);
  }

  function workspaceList(listId) {
    const ws = (session.principal.workspaces || []).filter((w) => w !== "*");
    return h("datalist", { id: listId }, ws.map((w) => h("option", { value: w })));
  }

  function screenSecretList(ctx, main) {
    const p = ctx.params;
    const deleted = p.get("deleted") === "true";
    setTitle(deleted ? "Deleted secrets" : "Secrets");
    const newHref = `#/secrets/new${query({ scope_type: p.get("scope_type"), scope_id: p.get("scope_id") })}`;
    main.append(pageHead(deleted ? "Deleted secrets" : "Secrets",
      hasRole("secrets.write") || hasRole("secrets.admin")
        ? h("a", { class: "btn", href: newHref, id: "new-secret" }, "New secret") : null));

    const scopeType = select([["", "Every scope I can see"], ["global", "Global"],
      ["workspace", "Workspace"], ["agent", "Agent"]], p.get("scope_type") || "", { id: "f-scope-type" });
    const scopeId = input({ id: "f-scope-id", value: p.get("scope_id") || "", list: "ws-list", placeholder: "e.g. team-a" });
    const prefix = input({ type: "search", id: "f-name-prefix", value: p.get("name_prefix") || "", placeholder: "e.g. db/" });
    const label = input({ id: "f-label", value: p.get("label") || "", placeholder: "env=prod,team=core" });
    const expiring = select([["", "Any expiry"], ["1d", "Expiring within 1 day"], ["7d", "Within 7 days"],
      ["30d", "Within 30 days"], ["90d", "Within 90 days"]], p.get("expiring_within") || "", { id: "f-expiring" });
    const del = h("input", { type: "checkbox", id: "f-deleted", checked: deleted });
    const form = h("form", { class: "panel stack", role: "search", "aria-label": "Filter secrets" },
      h("div", { class: "grid" },
        field("Scope type", scopeType),
        field("Workspace or agent id", scopeId),
        field("Name starts with", prefix),
        field("Labels", label, "key=value, several separated by commas (all must match)"),
        field("Expiry", expiring)),
      workspaceList("ws-list"),
      h("div", { class: "actions" },
        h("label", { class: "check", for: "f-deleted" }, del, "Show deleted secrets (restorable)"),
        h("button", { type: "submit", class: "btn" }, "Apply filters"),
        h("a", { href: "#/secrets", class: "btn btn-secondary" }, "Clear")));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      go(`#/secrets${query({
        scope_type: scopeType.value,
        scope_id: scopeId.value.trim(),
        name_prefix: prefix.value.trim(),
        label: label.value.trim(),
        expiring_within: expiring.value,
        deleted: del.checked ? "true" : "",
      })}`);
    });
    main.append(form);

    const results = h("section", { "aria-labelledby": "results-title" },
      h("h2", { id: "results-title" }, deleted ? "Soft-deleted secrets" : "Results"));
    const body = h("div", null, loading("Loading secrets…"));
    results.append(body);
    main.append(results);

    const apiParams = {};
    for (const k of LIST_FILTERS) if (p.get(k)) apiParams[k] = p.get(k);
    let rows = null;
    let more = null;

    const rowOf = (s) => {
      if (deleted) {
        const restore = button("Restore", async () => {
          await busy(restore, async () => {
            try {
              await api("POST", `/secrets/${enc(s.id)}/restore`);
              announce(`Restored ${s.name}.`);
              tr.remove();
              if (rows && !rows.children.length) route();
            } catch (e) {
              if (ctx.alive()) announce(`Restore failed: ${e.message}`, "error");
            }
          });
        }, "btn btn-small", { "aria-label": `Restore ${s.name}` });
        const tr = h("tr", { "data-secret-id": s.id },
          h("td", { class: "wrap" }, h("strong", null, s.name)),
          h("td", null, scopeText(s)),
          h("td", null, timeEl(s.deleted_at)),
          h("td", null, timeEl(s.purge_at)),
          h("td", null, restore));
        return tr;
      }
      return h("tr", { "data-secret-id": s.id },
        h("td", { class: "wrap" }, h("a", { href: `#/secrets/${enc(s.id)}` }, s.name)),
        h("td", null, scopeText(s)),
        h("td", null, `v${s.version}`),
        h("td", null, labelsEl(s.labels)),
        h("td", null, expiryEl(s.expires_at)),
        h("td", null, timeEl(s.updated_at)));
    };

    const load = async (cursor) => {
      const { data } = await api("GET", `/secrets${query({ ...apiParams, limit: 100, cursor })}`);
      if (!ctx.alive()) return;
      if (!rows) {
        if (!data.items.length) {
          body.replaceChildren(emptyState(deleted
            ? "No soft-deleted secrets here: nothing to restore."
            : "No secrets match these filters.",
          !deleted && (hasRole("secrets.write") || hasRole("secrets.admin"))
            ? h("a", { href: newHref, class: "btn" }, "Create a secret") : null));
          return;
        }
        rows = h("tbody");
        const headers = deleted
          ? ["Name", "Scope", "Deleted", "Purged after", "Action"]
          : ["Name", "Scope", "Version", "Labels", "Expires", "Updated"];
        body.replaceChildren(h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Secrets (table)" },
          h("table", { id: "secrets-table" },
            h("thead", null, h("tr", null, headers.map((x) => h("th", { scope: "col" }, x)))),
            rows)));
        more = h("div", { class: "actions" });
        body.append(more);
      }
      append(rows, data.items.map(rowOf));
      moreButton(ctx, more, data.next_cursor, load);
    };
    load().catch((e) => {
      if (ctx.alive()) body.replaceChildren(errorBox(e, "Could not list secrets"));
    });
  }

  function parseLabels(text) {
    const labels = {};
    for (const part of text.split(/[,\n]/)) {
      const t = part.trim();
      if (!t) continue;
      const i = t.indexOf("=");
      if (i <= 0) throw new Error(`label "${t}" is not key=value`);
      labels[t.slice(0, i).trim()] = t.slice(i + 1).trim();
    }
    return labels;
  }

  const labelsText = (labels) => Object.entries(labels || {}).map(([k, v]) => `${k}=${v}`).join(", ");

  /** datetime-local value (local time) → RFC 3339 UTC; "" → null. */
  function toRfc3339(local) {
    if (!local) return null;
    const d = new Date(local);
    if (Number.isNaN(d.getTime())) throw new Error("the expiry is not a valid date and time");
    return d.toISOString().replace(/\.\d{3}Z$/, "Z");
  }

  /** RFC 3339 → datetime-local value in local time. */
  function toLocalInput(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "";
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  function screenNewSecret(ctx, main) {
    setTitle("New secret");
    const p = ctx.params;
    const ws = (session.principal.workspaces || []).filter((w) => w !== "*");
    const defType = p.get("scope_type") || (ws.length && !hasRole("secrets.admin") ? "workspace" : "global");
    main.append(h("p", { class: "crumbs" }, h("a", { href: "#/secrets" }, "Secrets"), " / New"),
      pageHead("New secret"));
    const name = input({ id: "new-name", required: true, maxlength: "128", placeholder: "db/password" });
    const scopeType = select([["global", "Global"], ["workspace", "Workspace"], ["agent", "Agent"]], defType, { id: "new-scope-type" });
    const scopeId = input({ id: "new-scope-id", list: "ws-list-new", value: p.get("scope_id") || ws[0] || "" });
    const scopeIdField = field("Workspace or agent id", scopeId, "Required for workspace and agent scopes.");
    const value = valueArea({ id: "new-value", required: true });
    const desc = input({ id: "new-description", maxlength: "1024" });
    const labels = input({ id: "new-labels", placeholder: "env=prod, team=core" });
    const expires = h("input", { type: "datetime-local", id: "new-expires" });
    const maxv = h("input", { type: "number", id: "new-max-versions", min: "1", max: "100", inputmode: "numeric" });
    const slot = h("div");
    const submit = h("button", { type: "submit", class: "btn" }, "Create secret");
    const syncScope = () => {
      scopeIdField.hidden = scopeType.value === "global";
    };
    scopeType.addEventListener("change", syncScope);
    syncScope();
    const form = h("form", { class: "panel stack", id: "new-secret-form" },
      h("div", { class: "grid" },
        field("Name", name, "Letters, digits, - _ . /; at most 128 characters."),
        field("Scope type", scopeType),
        scopeIdField),
      workspaceList("ws-list-new"),
      field("Value", value, "Stored encrypted; never shown again unless revealed with a reason."),
      h("div", { class: "grid" },
        field("Description (optional)", desc),
        field("Labels (optional)", labels, "key=value, separated by commas."),
        field("Expires (optional)", expires, "Your local time; decrypts are refused after it."),
        field("Versions kept (optional)", maxv, "1 to 100; default: the server's.")),
      slot,
      h("div", { class: "actions" }, submit, h("a", { href: "#/secrets", class: "btn btn-secondary" }, "Cancel")));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      formError(slot, null);
      let payload;
      try {
        if (!name.value.trim()) throw new Error("a name is required");
        if (!value.value) throw new Error("a value is required");
        payload = {
          name: name.value.trim(),
          value: value.value,
          scope_type: scopeType.value,
        };
        if (scopeType.value !== "global") payload.scope_id = scopeId.value.trim();
        if (desc.value.trim()) payload.description = desc.value.trim();
        const l = parseLabels(labels.value);
        if (Object.keys(l).length) payload.labels = l;
        const exp = toRfc3339(expires.value);
        if (exp) payload.expires_at = exp;
        if (maxv.value) payload.max_versions = Number(maxv.value);
      } catch (e) {
        formError(slot, e);
        return;
      }
      await busy(submit, async () => {
        try {
          const { data } = await api("POST", "/secrets", { body: payload });
          payload = null;
          value.value = "";
          form.reset();
          announce(`Created ${data.name}.`);
          go(`#/secrets/${enc(data.id)}`);
        } catch (e) {
          payload = null;
          if (ctx.alive()) formError(slot, e);
        }
      });
    });
    ctx.onLeave(() => {
      value.value = "";
    });
    main.append(form);
  }

  function screenSecret(ctx, main, id) {
    setTitle("Secret");
    const crumbs = h("p", { class: "crumbs" }, h("a", { href: "#/secrets" }, "Secrets"), " / ");
    const crumbName = h("span", null, id);
    crumbs.append(crumbName);
    const title = h("h1", { tabindex: "-1", id: "secret-title" }, "Secret");
    main.append(crumbs, h("div", { class: "page-head" }, title,
      hasRole("audit.read") ? h("a", { href: `#/audit?secret_id=${enc(id)}`, class: "btn btn-secondary" }, "Audit log for this secret") : null));
    const body = h("div", null, loading("Loading the secret…"));
    main.append(body);

    let meta = null;
    let versions = [];
    const canWrite = hasRole("secrets.write") || hasRole("secrets.admin");

    // Sections, filled by refresh().
    const metaBox = h("dl", { class: "meta", id: "secret-meta" });
    const versionsBox = h("div", { id: "versions" });
    const revealVersion = select([["", "Current"]], "", { id: "reveal-version" });

    const fetchAll = async () => {
      const [m, v] = await Promise.all([
        api("GET", `/secrets/${enc(id)}`),
        api("GET", `/secrets/${enc(id)}/versions?limit=100`),
      ]);
      meta = m.data;
      versions = v.data.versions || [];
    };

    const fillMeta = () => {
      title.textContent = meta.name;
      crumbName.textContent = meta.name;
      setTitle(meta.name);
      const rows = [
        ["Name", meta.name],
        ["Id", h("code", null, meta.id)],
        ["Scope", scopeText(meta)],
        ["Current version", `v${meta.version}`],
        ["Description", meta.description ? meta.description : h("span", { class: "muted" }, "—")],
        ["Labels", labelsEl(meta.labels)],
        ["Expires", expiryEl(meta.expires_at)],
        ["Versions kept", meta.max_versions ? String(meta.max_versions) : h("span", { class: "muted" }, "server default")],
        ["Created", timeEl(meta.created_at)],
        ["Updated", timeEl(meta.updated_at)],
      ];
      metaBox.replaceChildren(...rows.flatMap(([k, v]) => [h("dt", null, k), h("dd", null, v)]));
    };

    const fillVersions = () => {
      const prev = revealVersion.value;
      revealVersion.replaceChildren(h("option", { value: "" }, `Current (v${meta.version})`),
        ...versions.filter((v) => v.state === "kept").map((v) => h("option", { value: String(v.version) }, `v${v.version}`)));
      revealVersion.value = [...revealVersion.options].some((o) => o.value === prev) ? prev : "";
      if (!versions.length) {
        versionsBox.replaceChildren(emptyState("No versions."));
        return;
      }
      const rows = versions.map((v) => {
        const actions = h("div", { class: "actions" });
        if (canWrite && v.state === "kept") {
          const rb = button(`Roll back to v${v.version}`, async () => {
            const ok = await confirmAction(`Roll back to v${v.version}?`,
              `This writes a new version (v${meta.version + 1}) holding the value of v${v.version}.`, "Roll back");
            if (!ok) return;
            await busy(rb, async () => {
              try {
                await api("POST", `/secrets/${enc(id)}/rollback`, {
                  body: { version: v.version },
                  headers: { "If-Match": `"${meta.version}"` },
                });
                announce(`Rolled back to v${v.version}.`);
                await refresh();
              } catch (e) {
                if (ctx.alive()) announce(`Rollback failed: ${e.message}`, "error");
              }
            });
          }, "btn btn-small btn-secondary", { "data-action": "rollback" });
          const ds = button(`Destroy v${v.version}`, async () => {
            const ok = await confirmAction(`Destroy v${v.version}?`,
              "Its value is crypto-shredded and can never be read or rolled back to again.", "Destroy");
            if (!ok) return;
            await busy(ds, async () => {
              try {
                await api("POST", `/secrets/${enc(id)}/versions/${v.version}/destroy`);
                announce(`Destroyed v${v.version}.`);
                await refresh();
              } catch (e) {
                if (ctx.alive()) announce(`Destroy failed: ${e.message}`, "error");
              }
            });
          }, "btn btn-small btn-danger", { "data-action": "destroy" });
          actions.append(rb, ds);
        }
        const badge = v.state === "current" ? "badge badge-ok" : v.state === "destroyed" ? "badge badge-danger" : "badge";
        return h("tr", { "data-version": String(v.version) },
          h("td", null, `v${v.version}`),
          h("td", null, h("span", { class: badge }, v.state)),
          h("td", null, timeEl(v.created_at)),
          h("td", { class: "wrap" }, v.created_by || "—"),
          h("td", null, v.destroyed_at ? timeEl(v.destroyed_at) : h("span", { class: "muted" }, "—")),
          h("td", null, actions));
      });
      versionsBox.replaceChildren(h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Versions (table)" },
        h("table", { id: "versions-table" },
          h("thead", null, h("tr", null, ["Version", "State", "Created", "By", "Destroyed", "Actions"].map((x) => h("th", { scope: "col" }, x)))),
          h("tbody", null, rows))));
    };

    // The metadata form's fields, filled from meta on every refresh.
    const eDesc = input({ id: "edit-description", maxlength: "1024" });
    const eLabels = input({ id: "edit-labels", placeholder: "env=prod, team=core" });
    const eExpires = h("input", { type: "datetime-local", id: "edit-expires" });
    const eMax = h("input", { type: "number", id: "edit-max-versions", min: "1", max: "100", inputmode: "numeric" });
    const fillEdit = () => {
      eDesc.value = meta.description || "";
      eLabels.value = labelsText(meta.labels);
      eExpires.value = toLocalInput(meta.expires_at);
      eMax.value = meta.max_versions ? String(meta.max_versions) : "";
    };

    let hideRevealed = null;
    const refresh = async () => {
      if (hideRevealed) hideRevealed();
      try {
        await fetchAll();
      } catch (e) {
        if (ctx.alive()) announce(`Could not reload: ${e.message}`, "error");
        return;
      }
      if (!ctx.alive()) return;
      fillMeta();
      fillVersions();
      fillEdit();
    };

    const build = () => {
      // Reveal
      const revealOut = h("div", { id: "reveal-output" });
      const reason = input({ id: "reveal-reason", required: true, maxlength: "512", placeholder: "e.g. rotating the DB password (INC-123)" });
      const revealSlot = h("div");
      const revealSubmit = h("button", { type: "submit", class: "btn" }, "Reveal");
      const revealForm = h("form", { class: "stack", id: "reveal-form", hidden: true },
        h("div", { class: "grid" },
          field("Reason (required, audited)", reason),
          field("Version", revealVersion)),
        revealSlot,
        h("div", { class: "actions" }, revealSubmit,
          button("Cancel", () => {
            revealForm.hidden = true;
            reason.value = "";
            openReveal.hidden = false;
            openReveal.focus();
          }, "btn btn-secondary")));
      const openReveal = button("Reveal value…", () => {
        openReveal.hidden = true;
        revealForm.hidden = false;
        reason.focus();
      }, "btn", { id: "reveal-open" });
      revealForm.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        formError(revealSlot, null);
        const why = reason.value.trim();
        if (!why) {
          formError(revealSlot, new Error("a reason is required: it is written to the audit log"));
          reason.focus();
          return;
        }
        const body = { reason: why };
        if (revealVersion.value) body.version = Number(revealVersion.value);
        await busy(revealSubmit, async () => {
          try {
            const { data } = await api("POST", `/secrets/${enc(id)}/decrypt`, { body });
            if (!ctx.alive()) return;
            reason.value = "";
            revealForm.hidden = true;
            hideRevealed = showValues(ctx, revealOut, `Value of ${meta.name} (v${data.version})`,
              [[null, data.value]], hideSeconds(ctx.params), () => {
                hideRevealed = null;
                if (ctx.alive()) {
                  openReveal.hidden = false;
                  openReveal.focus();
                }
              });
          } catch (e) {
            if (ctx.alive()) formError(revealSlot, e);
          }
        });
      });
      const revealSection = h("section", { class: "panel stack", "aria-labelledby": "reveal-title" },
        h("h2", { id: "reveal-title" }, "Value"),
        h("p", { class: "hint" }, "Values are shown only on request, with a reason (audited like any decrypt), and hidden again after a short time."),
        hasRole("secrets.decrypt") || hasRole("secrets.admin") ? [openReveal, revealForm] : h("p", { class: "muted" }, "You may not decrypt values (no secrets.decrypt role)."),
        revealOut);

      // Update value
      let updateSection = null;
      if (canWrite) {
        const nv = valueArea({ id: "update-value", required: true });
        const slot = h("div");
        const sub = h("button", { type: "submit", class: "btn" }, "Save as a new version");
        const form = h("form", { class: "stack", id: "update-form" },
          field("New value", nv, "Writes a new version under a fresh key; older versions are kept up to the cap."),
          slot, h("div", { class: "actions" }, sub));
        form.addEventListener("submit", async (ev) => {
          ev.preventDefault();
          formError(slot, null);
          if (!nv.value) {
            formError(slot, new Error("a value is required"));
            return;
          }
          await busy(sub, async () => {
            try {
              const { data } = await api("PUT", `/secrets/${enc(id)}`, {
                body: { value: nv.value },
                headers: { "If-Match": `"${meta.version}"` },
              });
              nv.value = "";
              announce(`Saved v${data.version}.`);
              await refresh();
            } catch (e) {
              if (!ctx.alive()) return;
              if (e.status === 412) {
                formError(slot, new Error("the secret changed since this page loaded it: reloaded, check and save again"));
                await refresh();
              } else formError(slot, e);
            }
          });
        });
        ctx.onLeave(() => {
          nv.value = "";
        });
        updateSection = h("section", { class: "panel stack", "aria-labelledby": "update-title" },
          h("h2", { id: "update-title" }, "Update value"), form);
      }

      // Metadata edit
      let editSection = null;
      if (canWrite) {
        const slot = h("div");
        const sub = h("button", { type: "submit", class: "btn" }, "Save details");
        const clearExp = button("No expiry", () => {
          eExpires.value = "";
        }, "btn btn-small btn-secondary");
        const form = h("form", { class: "stack", id: "edit-form" },
          h("div", { class: "grid" },
            field("Description", eDesc),
            field("Labels", eLabels, "key=value, separated by commas; replaces the set."),
            h("div", { class: "field" }, h("label", { for: "edit-expires" }, "Expires (your local time)"), eExpires, h("div", null, clearExp)),
            field("Versions kept", eMax, "1 to 100; empty: the server's default.")),
          slot, h("div", { class: "actions" }, sub));
        form.addEventListener("submit", async (ev) => {
          ev.preventDefault();
          formError(slot, null);
          let body;
          try {
            body = {
              description: eDesc.value.trim(),
              labels: parseLabels(eLabels.value),
              expires_at: toRfc3339(eExpires.value),
              max_versions: eMax.value ? Number(eMax.value) : null,
            };
          } catch (e) {
            formError(slot, e);
            return;
          }
          await busy(sub, async () => {
            try {
              await api("PATCH", `/secrets/${enc(id)}`, { body });
              announce("Details saved.");
              await refresh();
            } catch (e) {
              if (ctx.alive()) formError(slot, e);
            }
          });
        });
        editSection = h("section", { class: "panel" },
          h("details", { id: "edit-details" }, h("summary", null, "Edit description, labels, expiry"), form));
      }

      // Delete
      let deleteSection = null;
      if (canWrite) {
        const windowSel = select([["7d", "Restorable for 7 days"], ["1d", "Restorable for 1 day"],
          ["30d", "Restorable for 30 days"], ["90d", "Restorable for 90 days"],
          ["", "Shred now (not restorable)"]], "7d", { id: "delete-window" });
        const slot = h("div");
        const sub = h("button", { type: "submit", class: "btn btn-danger" }, "Delete secret");
        const form = h("form", { class: "stack", id: "delete-form" },
          field("Recovery window", windowSel), slot, h("div", { class: "actions" }, sub));
        form.addEventListener("submit", async (ev) => {
          ev.preventDefault();
          formError(slot, null);
          const w = windowSel.value;
          const ok = await confirmAction(`Delete ${meta.name}?`, w
            ? `It is hidden at once and can be restored for ${w.replace("d", " day(s)")}; then it is shredded.`
            : "Every version is crypto-shredded now. This cannot be undone.", "Delete");
          if (!ok) return;
          await busy(sub, async () => {
            try {
              const r = await api("DELETE", `/secrets/${enc(id)}${query({ recovery_window: w })}`);
              if (r.status === 200 && r.data && r.data.purge_at) {
                announce(`Deleted ${meta.name}: restorable until ${new Date(r.data.purge_at).toLocaleString()}.`);
                go(`#/secrets${query({ deleted: "true", scope_type: meta.scope_type, scope_id: meta.scope_id })}`);
              } else {
                announce(`Deleted and shredded ${meta.name}.`);
                go("#/secrets");
              }
            } catch (e) {
              if (ctx.alive()) formError(slot, e);
            }
          });
        });
        deleteSection = h("section", { class: "panel stack", "aria-labelledby": "delete-title" },
          h("h2", { id: "delete-title" }, "Delete"), form);
      }

      body.replaceChildren(
        h("section", { class: "panel", "aria-labelledby": "details-title" },
          h("h2", { id: "details-title" }, "Details"), metaBox),
        revealSection,
        updateSection,
        h("section", { "aria-labelledby": "versions-title" }, h("h2", { id: "versions-title" }, "Versions"), versionsBox),
        editSection,
        deleteSection);
    };

    fetchAll().then(() => {
      if (!ctx.alive()) return;
      build();
      fillMeta();
      fillVersions();
      fillEdit();
    }).catch((e) => {
      if (!ctx.alive()) return;
      title.textContent = "Secret not available";
      setTitle("Secret not available");
      body.replaceChildren(errorBox(e, e.status === 404 ? "Not found" : "Could not load the secret"),
        h("p", null, h("a", { href: "#/secrets" }, "Back to the secrets")));
    });
  }

  // ---------------------------------------------------------------------------------------
  // Vaults

  function screenVaults(ctx, main) {
    if (ctx.segs[1]) return screenVault(ctx, main, ctx.segs[1]);
    setTitle("Vaults");
    main.append(pageHead("Vaults"),
      h("p", { class: "hint" }, "A vault is a named set of keys in one workspace, read all at once with one audited reason. Its keys are ordinary secrets named vault/KEY."));

    // Open
    const vname = input({ id: "open-vault", required: true, placeholder: "name or id" });
    const vws = input({ id: "open-vault-ws", list: "ws-list-vault" });
    const openSlot = h("div");
    const openBtn = h("button", { type: "submit", class: "btn" }, "Open vault");
    const openForm = h("form", { class: "stack", id: "open-vault-form" },
      h("div", { class: "grid" }, field("Vault name or id", vname), field("Workspace", vws, "Needed when the name is used in several workspaces.")),
      workspaceList("ws-list-vault"), openSlot, h("div", { class: "actions" }, openBtn));
    openForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      formError(openSlot, null);
      if (!vname.value.trim()) {
        formError(openSlot, new Error("a vault name or id is required"));
        return;
      }
      await busy(openBtn, async () => {
        try {
          const { data } = await api("GET", `/secrets/vaults/${enc(vname.value.trim())}${query({ workspace: vws.value.trim() })}`);
          go(`#/vaults/${enc(data.id)}`);
        } catch (e) {
          if (ctx.alive()) formError(openSlot, e);
        }
      });
    });
    main.append(h("section", { class: "panel stack", "aria-labelledby": "open-vault-title" },
      h("h2", { id: "open-vault-title" }, "Open a vault"), openForm));

    // Every vault the caller may read (GET /secrets/vaults), a page at a time.
    const listBody = h("div", { id: "vault-list", "aria-busy": "true" }, loading("Loading vaults…"));
    main.append(h("section", { class: "stack", "aria-labelledby": "vaults-list-title" },
      h("h2", { id: "vaults-list-title" }, "Your vaults"), listBody));
    let vrows = null;
    let vmore = null;
    const loadVaults = async (cursor) => {
      const { data } = await api("GET", `/secrets/vaults${query({ limit: "100", cursor })}`);
      if (!ctx.alive()) return;
      listBody.removeAttribute("aria-busy");
      if (!vrows) {
        if (!data.items.length) {
          listBody.replaceChildren(emptyState("No vaults in your workspaces yet."));
          return;
        }
        vrows = h("tbody");
        vmore = h("div", { class: "actions" });
        listBody.replaceChildren(h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Vaults (table)" },
          h("table", { id: "vaults-table" },
            h("thead", null, h("tr", null, ["Name", "Workspace", "Created"].map((x) => h("th", { scope: "col" }, x)))),
            vrows)), vmore);
      }
      vrows.append(...data.items.map((v) => h("tr", { "data-vault-id": v.id },
        h("td", { class: "wrap" }, h("a", { href: `#/vaults/${enc(v.id)}` }, v.name)),
        h("td", null, v.workspace),
        h("td", null, timeEl(v.created_at)))));
      moreButton(ctx, vmore, data.next_cursor, loadVaults);
    };
    loadVaults().catch((e) => {
      if (ctx.alive()) listBody.replaceChildren(errorBox(e, "Could not list vaults"));
    });

    // Create
    if (hasRole("secrets.write") || hasRole("secrets.admin")) {
      const cws = input({ id: "new-vault-ws", required: true, list: "ws-list-vault", value: ((session.principal.workspaces || []).filter((w) => w !== "*")[0]) || "" });
      const cname = input({ id: "new-vault-name", required: true, maxlength: "64" });
      const keys = h("div", { class: "stack", id: "new-vault-keys" });
      let n = 0;
      const addRow = () => {
        n += 1;
        const k = input({ id: `nvk-${n}`, class: "vault-key", maxlength: "63", placeholder: "KEY" });
        const v = valueArea({ id: `nvv-${n}`, class: "vault-value", rows: "1" });
        const row = h("div", { class: "kv-row" }, field(`Key ${n}`, k), field(`Value ${n}`, v),
          button("Remove", () => {
            v.value = "";
            row.remove();
          }, "btn btn-small btn-secondary", { "aria-label": `Remove key ${n}` }));
        keys.append(row);
        return k;
      };
      addRow();
      const slot = h("div");
      const sub = h("button", { type: "submit", class: "btn" }, "Create vault");
      const form = h("form", { class: "stack", id: "new-vault-form" },
        h("div", { class: "grid" }, field("Workspace", cws), field("Vault name", cname, "Letters, digits, _ - .; at most 64.")),
        h("fieldset", { class: "stack" }, h("legend", null, "Keys"), keys,
          h("div", null, button("Add key", () => addRow().focus(), "btn btn-small btn-secondary"))),
        slot, h("div", { class: "actions" }, sub));
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        formError(slot, null);
        const secrets = {};
        for (const row of keys.querySelectorAll(".kv-row")) {
          const k = row.querySelector(".vault-key").value.trim();
          const v = row.querySelector(".vault-value").value;
          if (k) secrets[k] = v;
        }
        await busy(sub, async () => {
          try {
            const { data } = await api("POST", "/secrets/vaults", {
              body: { workspace: cws.value.trim(), name: cname.value.trim(), secrets },
            });
            for (const ta of keys.querySelectorAll("textarea")) ta.value = "";
            announce(`Created vault ${data.name}.`);
            go(`#/vaults/${enc(data.id)}`);
          } catch (e) {
            if (ctx.alive()) formError(slot, e);
          }
        });
      });
      ctx.onLeave(() => {
        for (const ta of keys.querySelectorAll("textarea")) ta.value = "";
      });
      main.append(h("section", { class: "panel stack", "aria-labelledby": "new-vault-title" },
        h("h2", { id: "new-vault-title" }, "Create a vault"), form));
    }
  }

  function screenVault(ctx, main, vid) {
    setTitle("Vault");
    const title = h("h1", { tabindex: "-1" }, "Vault");
    main.append(h("p", { class: "crumbs" }, h("a", { href: "#/vaults" }, "Vaults"), " / ", vid), h("div", { class: "page-head" }, title));
    const body = h("div", null, loading("Loading the vault…"));
    main.append(body);
    const canWrite = hasRole("secrets.write") || hasRole("secrets.admin");
    let vault = null;
    let hideValues = null;

    const keysBox = h("div", { id: "vault-keys" });
    const keyList = h("datalist", { id: "vault-key-list" });

    const load = async () => {
      const { data } = await api("GET", `/secrets/vaults/${enc(vid)}`);
      vault = data;
      // The keys' secrets, for links to their versions (best effort).
      let ids = {};
      try {
        const r = await api("GET", `/secrets${query({ scope_type: "workspace", scope_id: data.workspace, name_prefix: `${data.name}/`, limit: 1000 })}`);
        for (const s of r.data.items) ids[s.name] = s.id;
      } catch (e) {
        ids = {};
      }
      return ids;
    };

    const fill = (ids) => {
      title.textContent = `Vault ${vault.name}`;
      setTitle(`Vault ${vault.name}`);
      keyList.replaceChildren(...vault.keys.map((k) => h("option", { value: k })));
      if (!vault.keys.length) {
        keysBox.replaceChildren(emptyState("This vault has no keys yet."));
        return;
      }
      const rows = vault.keys.map((k) => {
        const sid = ids[`${vault.name}/${k}`];
        const actions = h("div", { class: "actions" });
        if (canWrite) {
          const del = button("Delete key", async () => {
            if (!(await confirmAction(`Delete key ${k}?`, "Its secret and every version are crypto-shredded.", "Delete"))) return;
            await busy(del, async () => {
              try {
                await api("DELETE", `/secrets/vaults/${enc(vault.id)}/keys/${enc(k)}`);
                announce(`Deleted key ${k}.`);
                await reload();
              } catch (e) {
                if (ctx.alive()) announce(`Delete failed: ${e.message}`, "error");
              }
            });
          }, "btn btn-small btn-danger", { "aria-label": `Delete key ${k}` });
          actions.append(del);
        }
        return h("tr", { "data-key": k },
          h("td", { class: "wrap" }, h("code", null, k)),
          h("td", null, sid ? h("a", { href: `#/secrets/${enc(sid)}`, "aria-label": `${k}: versions` }, "versions") : h("span", { class: "muted" }, "—")),
          h("td", null, actions));
      });
      keysBox.replaceChildren(table(["Key", "Secret", "Actions"], rows, "Vault keys"));
    };

    const reload = async () => {
      if (hideValues) hideValues();
      try {
        const ids = await load();
        if (ctx.alive()) fill(ids);
      } catch (e) {
        if (ctx.alive()) announce(`Could not reload: ${e.message}`, "error");
      }
    };

    const build = () => {
      const meta = h("dl", { class: "meta" },
        h("dt", null, "Name"), h("dd", null, vault.name),
        h("dt", null, "Workspace"), h("dd", null, vault.workspace),
        h("dt", null, "Id"), h("dd", null, h("code", null, vault.id)));

      // Read values
      const out = h("div", { id: "vault-values" });
      const reason = input({ id: "vault-reason", required: true, maxlength: "512" });
      const rslot = h("div");
      const rsub = h("button", { type: "submit", class: "btn" }, "Reveal every value");
      const rform = h("form", { class: "stack", id: "vault-reveal-form" },
        field("Reason (required, audited)", reason, "Plain ASCII: it travels in the X-Access-Reason header."),
        rslot, h("div", { class: "actions" }, rsub));
      rform.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        formError(rslot, null);
        const why = reason.value.trim();
        if (!/^[\x20-\x7e]*[\x21-\x7e][\x20-\x7e]*$/.test(why)) {
          formError(rslot, new Error("a reason in plain ASCII is required"));
          reason.focus();
          return;
        }
        await busy(rsub, async () => {
          try {
            const { data } = await api("GET", `/secrets/vault/${enc(vault.id)}`, { headers: { "X-Access-Reason": why } });
            if (!ctx.alive()) return;
            reason.value = "";
            rform.hidden = true;
            const entries = Object.entries(data || {});
            hideValues = showValues(ctx, out, `Values of ${vault.name}`, entries.length ? entries : [["(no keys)", ""]],
              hideSeconds(ctx.params), () => {
                hideValues = null;
                if (ctx.alive()) {
                  rform.hidden = false;
                  reason.focus();
                }
              });
          } catch (e) {
            if (ctx.alive()) formError(rslot, e);
          }
        });
      });

      // Set a key
      let setSection = null;
      let delSection = null;
      if (canWrite) {
        const k = input({ id: "vault-set-key", required: true, list: "vault-key-list", maxlength: "63" });
        const v = valueArea({ id: "vault-set-value", required: true, rows: "2" });
        const slot = h("div");
        const sub = h("button", { type: "submit", class: "btn" }, "Save key");
        const form = h("form", { class: "stack", id: "vault-set-form" },
          field("Key", k, "An existing key gets a new version; a new key is added."), keyList,
          field("Value", v), slot, h("div", { class: "actions" }, sub));
        form.addEventListener("submit", async (ev) => {
          ev.preventDefault();
          formError(slot, null);
          const key = k.value.trim();
          if (!key) {
            formError(slot, new Error("a key is required"));
            return;
          }
          await busy(sub, async () => {
            try {
              await api("PUT", `/secrets/vaults/${enc(vault.id)}/keys/${enc(key)}`, { body: { value: v.value } });
              v.value = "";
              k.value = "";
              announce(`Saved key ${key}.`);
              await reload();
            } catch (e) {
              if (ctx.alive()) formError(slot, e);
            }
          });
        });
        ctx.onLeave(() => {
          v.value = "";
        });
        setSection = h("section", { class: "panel stack", "aria-labelledby": "vault-set-title" },
          h("h2", { id: "vault-set-title" }, "Add or update a key"), form);

        const dsub = button("Delete vault", async () => {
          if (!(await confirmAction(`Delete vault ${vault.name}?`, "Every key is crypto-shredded. This cannot be undone.", "Delete vault"))) return;
          await busy(dsub, async () => {
            try {
              await api("DELETE", `/secrets/vaults/${enc(vault.id)}`);
              announce(`Deleted vault ${vault.name}.`);
              go("#/vaults");
            } catch (e) {
              if (ctx.alive()) announce(`Delete failed: ${e.message}`, "error");
            }
          });
        }, "btn btn-danger", { id: "vault-delete" });
        delSection = h("section", { class: "panel stack", "aria-labelledby": "vault-del-title" },
          h("h2", { id: "vault-del-title" }, "Delete"), h("div", { class: "actions" }, dsub));
      }

      body.replaceChildren(
        h("section", { class: "panel" }, meta),
        h("section", { "aria-labelledby": "vault-keys-title" }, h("h2", { id: "vault-keys-title" }, "Keys"), keysBox),
        hasRole("secrets.decrypt") || hasRole("secrets.admin")
          ? h("section", { class: "panel stack", "aria-labelledby": "vault-values-title" },
            h("h2", { id: "vault-values-title" }, "Values"), rform, out)
          : null,
        setSection, delSection);
    };

    load().then((ids) => {
      if (!ctx.alive()) return;
      build();
      fill(ids);
    }).catch((e) => {
      if (!ctx.alive()) return;
      title.textContent = "Vault not available";
      body.replaceChildren(errorBox(e, e.status === 404 ? "Not found" : "Could not load the vault"),
        h("p", null, h("a", { href: "#/vaults" }, "Back to the vaults")));
    });
  }

  // ---------------------------------------------------------------------------------------
  // Tokens

  function screenTokens(ctx, main) {
    setTitle("Tokens");
    main.append(pageHead("Service tokens"));
    const shown = h("div", { id: "token-once" });
    const mine = session.principal.roles || [];

    if (hasRole("tokens.create") || hasRole("secrets.admin")) {
      const name = input({ id: "token-name", required: true, maxlength: "128", placeholder: "ci-deploy" });
      const roleBoxes = ROLES.filter((r) => mine.includes(r)).map((r) => {
        const cb = h("input", { type: "checkbox", value: r, id: `role-${r.replace(".", "-")}`, class: "role-box" });
        return h("label", { class: "check", for: cb.id }, cb, r);
      });
      const ws = input({ id: "token-workspaces", placeholder: "team-a, team-b" });
      const ttl = input({ id: "token-ttl", placeholder: "30d" });
      const principal = input({ id: "token-principal", placeholder: session.principal.user_id });
      const slot = h("div");
      const sub = h("button", { type: "submit", class: "btn" }, "Create token");
      const form = h("form", { class: "stack", id: "token-form" },
        h("div", { class: "grid" },
          field("Name", name),
          field("Workspaces", ws, "Separated by commas; within your own."),
          field("Lifetime", ttl, "e.g. 12h, 30d; empty: the server's default (30 days). No token outlives the credential you signed in with.")),
        h("fieldset", null, h("legend", null, "Roles (no broader than yours)"), h("div", { class: "checks" }, roleBoxes)),
        hasRole("secrets.admin")
          ? h("details", null, h("summary", null, "Acting as another principal"),
            field("Principal (optional)", principal, "Tenant administrators only; default: you."))
          : null,
        slot, h("div", { class: "actions" }, sub));
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        formError(slot, null);
        const roles = [...form.querySelectorAll(".role-box")].filter((c) => c.checked).map((c) => c.value);
        if (!name.value.trim()) {
          formError(slot, new Error("a name is required"));
          return;
        }
        if (!roles.length) {
          formError(slot, new Error("choose at least one role"));
          return;
        }
        const body = {
          name: name.value.trim(),
          roles,
          workspaces: ws.value.split(",").map((s) => s.trim()).filter(Boolean),
        };
        const t = ttl.value.trim();
        if (t) body.ttl = /^\d+$/.test(t) ? Number(t) : t;
        if (principal.value.trim()) body.principal = principal.value.trim();
        await busy(sub, async () => {
          try {
            const { data } = await api("POST", "/auth/tokens", { body });
            if (!ctx.alive()) return;
            form.reset();
            showToken(data);
            loadList();
          } catch (e) {
            if (ctx.alive()) formError(slot, e);
          }
        });
      });
      main.append(h("section", { class: "panel stack", "aria-labelledby": "token-new-title" },
        h("h2", { id: "token-new-title" }, "Create a token"), form, shown));
    } else {
      main.append(h("p", { class: "notice" }, "You may not create tokens (no tokens.create role)."));
    }

    // The minted token: shown once, outside the list, removed on Done or when leaving.
    let tokenValue = null;
    function showToken(data) {
      tokenValue = data.token;
      const code = h("code", { id: "token-value" }, data.token);
      const done = button("Done: I have stored it", () => clear(true), "btn btn-secondary", { id: "token-done" });
      const clear = (byUser) => {
        code.textContent = "";
        tokenValue = null;
        shown.replaceChildren();
        if (byUser && ctx.alive()) announce("The token is no longer shown.");
      };
      ctx.onLeave(() => clear(false));
      shown.replaceChildren(h("div", { class: "secret-box stack", role: "region", "aria-labelledby": "token-once-title" },
        h("h3", { id: "token-once-title" }, `Token ${data.name} created`),
        h("p", null, h("strong", null, "Copy it now: it is shown only this once."),
          ` It acts as ${data.principal} with ${data.roles.join(", ")}${data.workspaces.length ? ` in ${data.workspaces.join(", ")}` : ""}` +
          `${data.expires_at ? `, until ${new Date(data.expires_at).toLocaleString()}` : ""}.`),
        h("pre", null, code),
        h("div", { class: "actions" },
          button("Copy token", () => copyText(code, tokenValue), "btn", { id: "token-copy" }), done)));
      done.focus();
    }

    const listBox = h("div", { id: "token-list" }, loading("Loading tokens…"));
    main.append(h("section", { "aria-labelledby": "token-list-title" },
      h("h2", { id: "token-list-title" }, "Tokens"), listBox));

    async function loadList() {
      const all = [];
      let cursor;
      try {
        for (let i = 0; i < 20; i++) {
          const { data } = await api("GET", `/auth/tokens${query({ limit: 100, cursor })}`);
          all.push(...data.items);
          cursor = data.next_cursor;
          if (!cursor) break;
        }
      } catch (e) {
        if (ctx.alive()) listBox.replaceChildren(errorBox(e, "Could not list tokens"));
        return;
      }
      if (!ctx.alive()) return;
      if (!all.length) {
        listBox.replaceChildren(emptyState("No tokens yet."));
        return;
      }
      const rows = all.map((t) => {
        const badge = t.status === "active" ? "badge badge-ok" : t.status === "revoked" ? "badge badge-danger" : "badge badge-warn";
        const act = h("div", { class: "actions" });
        if (t.status === "active") {
          const rv = button("Revoke", async () => {
            const text = t.id === session.id
              ? "This is your own console session: you are signed out."
              : t.name === SESSION_TOKEN_NAME
                ? "This is a web console session: the browser using it is signed out."
                : "Every request with it is refused from now on.";
            if (!(await confirmAction(`Revoke ${t.name}?`, text, "Revoke"))) return;
            await busy(rv, async () => {
              try {
                await api("DELETE", `/auth/tokens/${enc(t.id)}`);
                announce(`Revoked ${t.name}.`);
                loadList();
              } catch (e) {
                if (ctx.alive()) announce(`Revoke failed: ${e.message}`, "error");
              }
            });
          }, "btn btn-small btn-danger", { "aria-label": `Revoke ${t.name}`, "data-action": "revoke" });
          act.append(rv);
        }
        return h("tr", { "data-token-id": t.id, "data-token-name": t.name },
          h("td", { class: "wrap" }, t.name,
            t.id === session.id ? [" ", h("span", { class: "badge badge-ok", "data-current-session": "" }, "this session")]
              : t.name === SESSION_TOKEN_NAME ? [" ", h("span", { class: "badge" }, "web console")] : null),
          h("td", { class: "wrap" }, t.principal),
          h("td", { class: "roles" }, t.roles.map((r) => h("span", { class: "badge" }, r))),
          h("td", null, t.workspaces.length ? t.workspaces.join(", ") : h("span", { class: "muted" }, "—")),
          h("td", null, timeEl(t.created_at)),
          h("td", null, timeEl(t.expires_at)),
          h("td", null, h("span", { class: badge }, t.status)),
          h("td", null, act));
      });
      listBox.replaceChildren(table(["Name", "Principal", "Roles", "Workspaces", "Created", "Expires", "Status", "Actions"], rows, "Tokens"));
    }
    loadList();
  }

  // ---------------------------------------------------------------------------------------
  // Audit

  function screenAudit(ctx, main) {
    setTitle("Audit log");
    main.append(pageHead("Audit log"));
    const p = ctx.params;
    const secretId = input({ id: "a-secret-id", value: p.get("secret_id") || "" });
    const userId = input({ id: "a-user-id", value: p.get("user_id") || "" });
    const action = select([["", "Any action"], ...AUDIT_ACTIONS], p.get("action") || "", { id: "a-action" });
    const outcome = select([["", "Any outcome"], "success", "failure", "denied"], p.get("outcome") || "", { id: "a-outcome" });
    const since = h("input", { type: "datetime-local", id: "a-since", value: toLocalInput(p.get("since")) });
    const until = h("input", { type: "datetime-local", id: "a-until", value: toLocalInput(p.get("until")) });
    const slot = h("div");
    const form = h("form", { class: "panel stack", role: "search", "aria-label": "Filter the audit log" },
      h("div", { class: "grid" },
        field("Secret id", secretId),
        field("User", userId),
        field("Action", action),
        field("Outcome", outcome),
        field("Since (local time)", since),
        field("Until (local time)", until)),
      slot,
      h("div", { class: "actions" }, h("button", { type: "submit", class: "btn" }, "Apply filters"),
        h("a", { href: "#/audit", class: "btn btn-secondary" }, "Clear")));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      try {
        go(`#/audit${query({
          secret_id: secretId.value.trim(),
          user_id: userId.value.trim(),
          action: action.value,
          outcome: outcome.value,
          since: toRfc3339(since.value),
          until: toRfc3339(until.value),
        })}`);
      } catch (e) {
        formError(slot, e);
      }
    });
    main.append(form);
    const body = h("div", null, loading("Loading the audit log…"));
    main.append(h("section", { "aria-labelledby": "audit-results" }, h("h2", { id: "audit-results" }, "Events, newest first"), body));

    const params = {};
    for (const k of AUDIT_FILTERS) if (p.get(k)) params[k] = p.get(k);
    let rows = null;
    let more = null;
    const rowOf = (r) => {
      const ob = r.outcome === "success" ? "badge badge-ok" : r.outcome === "denied" ? "badge badge-danger" : "badge badge-warn";
      return h("tr", { "data-audit-id": String(r.id), "data-action": r.action },
        h("td", null, timeEl(r.timestamp)),
        h("td", null, r.action),
        h("td", null, h("span", { class: ob }, r.outcome)),
        h("td", { class: "wrap" }, r.user_id),
        h("td", { class: "id-cell" }, r.secret_id ? h("a", { href: `#/secrets/${enc(r.secret_id)}`, class: "mono" }, r.secret_id) : "—"),
        h("td", null, r.version ? `v${r.version}` : "—"),
        h("td", { class: "wrap audit-reason" }, r.reason || ""),
        h("td", null, h("code", null, r.request_id)));
    };
    const load = async (cursor) => {
      const { data } = await api("GET", `/audit${query({ ...params, limit: params.limit || 100, cursor })}`);
      if (!ctx.alive()) return;
      if (!rows) {
        if (!data.items.length) {
          body.replaceChildren(emptyState("No audit events match these filters."));
          return;
        }
        rows = h("tbody");
        body.replaceChildren(h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Audit events (table)" },
          h("table", { id: "audit-table" },
            h("thead", null, h("tr", null, ["Time", "Action", "Outcome", "User", "Secret", "Version", "Reason", "Request id"].map((x) => h("th", { scope: "col" }, x)))),
            rows)));
        more = h("div", { class: "actions" });
        body.append(more);
      }
      append(rows, data.items.map(rowOf));
      more.replaceChildren();
      if (data.next_cursor) {
        const btn = button("Load older events", async () => {
          await busy(btn, () => load(data.next_cursor).catch((e) => {
            if (ctx.alive()) more.append(errorBox(e));
          }));
        }, "btn btn-secondary");
        more.append(btn);
      }
    };
    load().catch((e) => {
      if (ctx.alive()) body.replaceChildren(errorBox(e, "Could not read the audit log"));
    });
  }

  // ---------------------------------------------------------------------------------------
  // KEK (operators)

  function screenKek(ctx, main) {
    setTitle("KEK");
    main.append(pageHead("Key encryption keys"));
    if (!session.operator) {
      main.append(h("p", { class: "notice" }, "This screen is for operators (the rcrt.operator role)."));
      return;
    }
    const box = h("div", { id: "kek-status", "aria-busy": "true" }, loading("Loading the KEK status…"));
    const updated = h("p", { class: "hint", id: "kek-updated" });
    const errSlot = h("div");
    const trigger = button("Start re-wrap", async () => {
      await busy(trigger, async () => {
        try {
          const { data } = await api("POST", "/admin/kek/rewrap");
          announce("Re-wrap requested.");
          if (ctx.alive()) fill(data);
        } catch (e) {
          if (ctx.alive()) announce(`Re-wrap failed: ${e.message}`, "error");
        }
      });
    }, "btn", { id: "kek-rewrap" });
    const refresh = button("Refresh", () => busy(refresh, readStatus), "btn btn-secondary", { id: "kek-refresh" });
    main.append(
      h("p", { class: "hint" },
        "Each full status read is audited (kek_status), so it is read when this screen opens and on Refresh; " +
        "the re-wrap progress below follows the server's metrics every 5 seconds while this screen is open."),
      errSlot, box);

    const fill = (s) => {
      const total = Object.values(s.versions_per_kek || {}).reduce((a, b) => a + b, 0);
      const done = Math.max(0, total - s.rewrap.remaining);
      const stateBadge = s.rewrap.failed ? "badge badge-danger" : s.rewrap.remaining ? "badge badge-warn" : "badge badge-ok";
      const perKek = Object.entries(s.versions_per_kek || {}).map(([k, n]) => h("tr", null,
        h("td", null, h("code", null, k)),
        h("td", null, String(n)),
        h("td", null, k === s.current_kek_id ? h("span", { class: "badge badge-ok" }, "current") : (s.configured_kek_ids || []).includes(k) ? "configured (old)" : h("span", { class: "badge badge-danger" }, "not configured"))));
      box.removeAttribute("aria-busy");
      box.replaceChildren(
        h("section", { class: "panel", "aria-labelledby": "kek-keys-title" },
          h("h2", { id: "kek-keys-title" }, "Keys"),
          h("dl", { class: "meta" },
            h("dt", null, "Current KEK"), h("dd", null, h("code", null, s.current_kek_id)),
            h("dt", null, "Configured"), h("dd", null, (s.configured_kek_ids || []).map((k) => h("code", { class: "badge" }, k))))),
        h("section", { "aria-labelledby": "kek-usage-title" },
          h("h2", { id: "kek-usage-title" }, "Secret versions per KEK"),
          perKek.length ? table(["KEK", "Versions", "Status"], perKek, "Versions per KEK") : emptyState("No stored versions yet.")),
        h("section", { class: "panel stack", "aria-labelledby": "kek-rewrap-title" },
          h("h2", { id: "kek-rewrap-title" }, "Re-wrap"),
          h("p", null, "State: ", h("span", { class: stateBadge, id: "rewrap-state" }, s.rewrap.state)),
          h("div", { class: "field" },
            h("label", { for: "rewrap-progress" }, `Under the current KEK: ${done} of ${total} versions`),
            h("progress", { id: "rewrap-progress", max: String(Math.max(total, 1)), value: String(total ? done : 1) })),
          h("dl", { class: "meta" },
            h("dt", null, "Remaining"), h("dd", { id: "rewrap-remaining" }, String(s.rewrap.remaining)),
            h("dt", null, "Re-wrapped since start"), h("dd", { id: "rewrapped-total" }, String(s.rewrap.rewrapped_total)),
            h("dt", null, "Failed in last pass"), h("dd", { id: "rewrap-failed" }, String(s.rewrap.failed))),
          h("div", { class: "actions" }, trigger, refresh), updated));
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}.`;
      last = s;
    };

    // Between audited reads, the progress comes from /metrics (public, not audited): the
    // remaining count and the re-wrapped total of this server's re-wrap job.
    const live = (m) => {
      if (!last || !("rcrt_kek_rewrap_remaining" in m)) return;
      const total = Object.values(last.versions_per_kek || {}).reduce((a, b) => a + b, 0);
      const remaining = m.rcrt_kek_rewrap_remaining;
      const done = Math.max(0, total - remaining);
      const rem = $("#rewrap-remaining");
      const bar = $("#rewrap-progress");
      const label = document.querySelector('label[for="rewrap-progress"]');
      if (rem) rem.textContent = String(remaining);
      if (bar) {
        bar.max = Math.max(total, 1);
        bar.value = total ? done : 1;
      }
      if (label) label.textContent = `Under the current KEK: ${done} of ${total} versions`;
      for (const [id, metric] of [["#rewrapped-total", "rcrt_kek_rewrapped_total"], ["#rewrap-failed", "rcrt_kek_rewrap_failed"]]) {
        const el = $(id);
        if (el && metric in m) el.textContent = String(m[metric]);
      }
      updated.textContent = `Progress updated ${new Date().toLocaleTimeString()} (from /metrics).`;
      // Finished since the last full read: read the status once more (state, versions per KEK).
      if (remaining === 0 && last.rewrap.remaining > 0) readStatus();
    };

    let last = null;
    let timer = null;
    let stopped = false;
    async function readStatus() {
      try {
        const { data } = await api("GET", "/admin/kek/status");
        if (stopped || !ctx.alive()) return;
        errSlot.replaceChildren();
        fill(data);
      } catch (e) {
        if (stopped || !ctx.alive()) return;
        errSlot.replaceChildren(errorBox(e, "Could not read the KEK status"));
      }
    }
    const poll = async () => {
      timer = null;
      try {
        live(await readMetrics());
      } catch (e) {
        // The metrics are an extra: the audited status stays on screen.
      }
      if (!stopped && ctx.alive()) timer = setTimeout(poll, KEK_POLL_MS);
    };
    ctx.onLeave(() => {
      stopped = true;
      if (timer) clearTimeout(timer);
    });
    readStatus().then(() => {
      if (!stopped && ctx.alive()) timer = setTimeout(poll, KEK_POLL_MS);
    });
  }

  /** The unlabelled samples of GET /metrics (Prometheus text), by metric name. */
  async function readMetrics() {
    const res = await fetch("/metrics", { credentials: "omit", cache: "no-store", redirect: "error" });
    if (!res.ok) throw new Error(`metrics: ${res.status}`);
    const out = {};
    for (const line of (await res.text()).split("\n")) {
      const m = /^(rcrt_[a-z_]+) ([0-9.eE+-]+)$/.exec(line);
      if (m) out[m[1]] = Number(m[2]);
    }
    return out;
  }

  // ---------------------------------------------------------------------------------------
  // Start

  async function boot() {
    $("#sign-out").addEventListener("click", signOut);
    $("#skip-link").addEventListener("click", (ev) => {
      ev.preventDefault();
      const h1 = $("#main h1");
      (h1 || $("#main")).focus();
    });
    window.addEventListener("hashchange", () => {
      if (session) route(false);
    });
    try {
      const { data } = await api("GET", "/ui/session", { quiet401: true });
      setSession(data);
      route(true);
    } catch (e) {
      if (e.status === 401) renderSignIn();
      else {
        const retry = button("Try again", () => location.reload(), "btn");
        $("#main").replaceChildren(h("h1", { tabindex: "-1" }, "The console could not start"), errorBox(e), retry);
      }
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
