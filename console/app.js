// The messaging console: one page over the API beside it (no framework, no third-party
// host). The token lives in this tab's session storage and travels only as the API's
// bearer token; a local run's link carries one in the URL fragment, which no browser
// sends to a server, and the page takes it out of the address at once.

const API = new URL("../", location.href).pathname; // the console is served at <API>/console/
const TOKEN_KEY = "console.token";
const REFRESH_MS = 3000;
const $ = (id) => document.getElementById(id);

let token = null;
let failedCursor = null; // the failed list's page: null is the first
let failedNext = null;
let refreshing = false;
// A refresh an action asked for while one runs runs once that one ends (the timer's
// own ticks are dropped meanwhile: a slow API is not asked again without a pause).
let refreshAgain = false;
// Retries under way (Retry all is held meanwhile).
let retrying = 0;
// One key per message composed: a second click, or a send again after the API did not
// answer, is the same request to the API (`Idempotency-Key`), not a second campaign.
let composing = null;

// --- the API

class Refused extends Error {}

async function api(method, path, body, headers = {}) {
  let r;
  try {
    r = await fetch(API + path, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}), ...headers },
      body: body ? JSON.stringify(body) : undefined,
      cache: "no-store",
      // A request that hangs says so as one that fails, and the refresh goes on.
      signal: AbortSignal.timeout(15_000),
    });
  } catch {
    banner("The API is unreachable: trying again every few seconds.");
    throw new Error("unreachable");
  }
  banner(null);
  if (r.status === 401) {
    signOut("That token was refused: it has expired or is not valid. Paste a new one.");
    throw new Refused("401");
  }
  const data = r.status === 204 ? {} : await r.json().catch(() => ({}));
  return { ok: r.ok, status: r.status, data };
}

function banner(text) {
  $("banner").hidden = !text;
  $("banner").textContent = text || "";
}

// --- sign-in

function accountOf(jwt) {
  try {
    const payload = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload)).sub || "";
  } catch {
    return "";
  }
}

function signOut(why) {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  // Nothing of the last account stays for the next (its failed list's cursor is its own).
  failedCursor = failedNext = composing = null;
  for (const id of ["campaign-list", "failed-rows", "compose-answer", "lookup-answer"]) $(id).replaceChildren();
  for (const id of ["account-note", "failed-note", "failed-total", "recipients-note"]) $(id).textContent = "";
  $("app").hidden = true;
  $("who").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").hidden = !why;
  $("sign-in-error").textContent = why || "";
  $("token").focus();
}

async function signIn(candidate) {
  token = candidate.trim();
  if (token.split(".").length !== 3) {
    signOut("That is not a JWT (three parts separated by dots). Paste the token you were given.");
    return;
  }
  try {
    const { ok, data } = await api("GET", "status");
    if (!ok) {
      signOut(data.error || "The API refused that token.");
      return;
    }
  } catch (e) {
    if (!(e instanceof Refused)) signOut("The API is unreachable: try again in a moment.");
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("sign-in").hidden = true;
  $("app").hidden = false;
  $("who").hidden = false;
  $("who-account").textContent = `Account ${accountOf(token) || "(unnamed)"}`;
  refresh();
}

// --- what the page shows, refreshed in place

const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");

function duration(seconds) {
  if (!seconds) return "now";
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  return [h && `${h} h`, m && `${m} min`, !h && s && `${s} s`].filter(Boolean).join(" ");
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    // Through the CSSOM: the page's Content-Security-Policy refuses style attributes.
    else if (k === "width") e.style.width = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  e.append(...children);
  return e;
}

async function refreshAccount() {
  const { ok, data } = await api("GET", "status");
  if (!ok) return;
  const a = data.account;
  const reason = a.pausedReason ? ` (${a.pausedReason})` : " (by you)";
  const waiting = a.rateLimitedUntil ? ` (the gateway asked to wait until ${when(a.rateLimitedUntil)})` : "";
  $("acct-state").textContent = a.paused ? `Paused${reason}` : `Sending${waiting}`;
  $("acct-state").className = a.paused || waiting ? "paused" : "running";
  $("acct-backlog").textContent = a.backlog;
  $("acct-eta").textContent = a.backlog ? duration(data.processing.estimatedTimeSeconds) : "empty";
  $("acct-sent").textContent = a.sent;
  $("acct-failed").textContent = a.failed;
  $("acct-limit").textContent = data.processing.rateLimit;
  $("acct-last").textContent = when(data.processing.lastProcessedAt);
  $("pause").disabled = a.paused;
  $("resume").disabled = !a.paused;
  showWindow(a.window, Date.parse(data.timestamp));
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

// The window meter and the timeline of the last sends, on the API's clock (its
// `timestamp`), not this computer's.
function showWindow(w, now) {
  const meter = $("acct-window");
  meter.textContent = `${w.sentInWindow} / ${w.limit} in the last ${duration(Math.round(w.windowMs / 1000))}`;
  meter.dataset.count = w.sentInWindow;
  meter.dataset.limit = w.limit;
  meter.className = w.sentInWindow >= w.limit ? "paused" : "";
  const next = w.nextSendAt && Date.parse(w.nextSendAt);
  $("acct-next").textContent = !w.nextSendAt ? "when resumed" : next <= now ? "now" : `in ${duration(Math.ceil((next - now) / 1000))}`;
  const span = 2 * w.windowMs, x = (t) => (600 * (t - (now - span))) / span;
  // A send stamped a little after the API's now (the schedule's clock) is drawn at now.
  const ticks = w.recentSends.map(Date.parse).filter((t) => t > now - span).map((t) => Math.min(t, now));
  $("timeline").replaceChildren(
    svg("rect", { class: "window", x: x(now - w.windowMs), y: 0, width: 600 - x(now - w.windowMs), height: 44 }),
    svg("line", { class: "axis", x1: 0, y1: 40, x2: 600, y2: 40 }),
    ...ticks.map((t) => svg("line", { class: "tick", x1: x(t), y1: 6, x2: x(t), y2: 40, "data-at": new Date(t).toISOString() })));
  $("timeline-caption").textContent =
    `Last sends: ${ticks.length} in the last two windows, ${w.sentInWindow} in the shaded one, the rolling window ending now (at most ${w.limit}).`;
}

function campaignCard(c) {
  const part = (n) => `${c.total ? (100 * n) / c.total : 0}%`;
  const done = c.sent + c.failed + c.canceled;
  const bar = el("div", { class: "bar", role: "progressbar", "aria-label": `Campaign ${c.campaignId} progress`, "aria-valuemin": "0", "aria-valuemax": String(c.total), "aria-valuenow": String(done) },
    el("span", { class: "sent", width: part(c.sent) }), el("span", { class: "failed", width: part(c.failed) }), el("span", { class: "canceled", width: part(c.canceled) }));
  const card = el("li", { "data-campaign": c.campaignId, "data-status": c.status },
    el("strong", {}, `${c.status[0].toUpperCase()}${c.status.slice(1)}`), " ", el("code", {}, c.campaignId),
    bar,
    el("p", { class: "counts" }, `sent ${c.sent} · failed ${c.failed} · canceled ${c.canceled} · waiting ${c.queued} · of ${c.total}`),
    el("p", { class: "counts" }, `created ${when(c.createdAt)}` + (c.sendAt ? ` · send at ${when(c.sendAt)}` : "") + (c.estimatedCompletionTime && c.queued ? ` · done about ${when(c.estimatedCompletionTime)}` : "")));
  if (c.status === "scheduled" || c.status === "sending") {
    card.append(el("button", { type: "button", class: "secondary", onclick: () => cancelCampaign(c.campaignId) }, "Cancel"));
  }
  return card;
}

// A list rebuilt by the refresh keeps the keyboard's place: the button that had the
// focus has it again in its row's new copy.
function replaceKeepingFocus(list, rows, key) {
  const focused = document.activeElement;
  const row = list.contains(focused) ? focused.closest(`[${key}]`) : null;
  const was = row && [row.getAttribute(key), focused.textContent];
  list.replaceChildren(...rows);
  if (was) {
    const again = [...list.querySelectorAll(`[${key}] button`)].find((b) => b.closest(`[${key}]`).getAttribute(key) === was[0] && b.textContent === was[1]);
    again?.focus();
  }
}

async function refreshCampaigns() {
  const { ok, data } = await api("GET", "campaigns?limit=20");
  if (!ok) return;
  $("campaigns-empty").hidden = data.campaigns.length > 0;
  replaceKeepingFocus($("campaign-list"), data.campaigns.map(campaignCard), "data-campaign");
}

async function refreshFailed() {
  const { ok, data } = await api("GET", `failed?limit=20${failedCursor ? `&cursor=${encodeURIComponent(failedCursor)}` : ""}`);
  if (!ok) return;
  failedNext = data.nextCursor;
  $("failed-total").textContent = `${data.total} failed for good.`;
  $("retry-all").disabled = retrying > 0 || data.failedMessages.length === 0;
  $("failed-next").hidden = !failedNext;
  $("failed-first").hidden = !failedCursor;
  replaceKeepingFocus($("failed-rows"), data.failedMessages.map((m) =>
    el("tr", { "data-message": m.id },
      // Each cell names its column (`data-label`): narrow screens show it, the table's head hidden.
      el("td", { "data-label": "Recipient" }, m.recipientId), el("td", { "data-label": "Failed at" }, when(m.failedAt)),
      el("td", { "data-label": "Reason" }, m.error || "—"), el("td", { "data-label": "Attempts" }, String(m.attempts)),
      el("td", {}, el("button", { type: "button", class: "secondary", "aria-label": `Retry the message to ${m.recipientId}`, onclick: () => retry([m.id]) }, "Retry")))), "data-message");
}

async function refresh({ queued = true } = {}) {
  if (!token) return;
  if (refreshing) {
    refreshAgain ||= queued;
    return;
  }
  refreshing = true;
  try {
    await Promise.all([refreshAccount(), refreshCampaigns(), refreshFailed()]);
  } catch {
    // Said by the banner or the sign-in form.
  } finally {
    refreshing = false;
    if (refreshAgain) {
      refreshAgain = false;
      refresh();
    }
  }
}

// --- what an operator does

async function hold(action) {
  const { ok, data } = await api("POST", `account/${action}`).catch(() => ({ ok: false, data: {} }));
  $("account-note").textContent = ok ? (data.paused ? "Paused: nothing is sent until you resume." : "Resumed: sending at the account's rate.") : data.error || "Not changed: try again.";
  refresh();
}

async function cancelCampaign(id) {
  const { ok, data } = await api("DELETE", `campaigns/${encodeURIComponent(id)}`).catch(() => ({ ok: false, data: {} }));
  $("account-note").textContent = ok ? `Campaign ${id} canceled: what had not gone will not.` : data.error || "Not canceled: try again.";
  refresh();
}

async function retry(ids) {
  // Held while it goes: a second click would retry the same messages again (answered
  // 409, but a long list would go twice through the API's limit).
  retrying += 1;
  $("retry-all").disabled = true;
  let done = 0;
  if (ids.length > 1) $("failed-note").textContent = `Retrying ${ids.length} messages…`;
  for (const id of ids) {
    const { ok } = await api("POST", `${encodeURIComponent(id)}/retry`).catch(() => ({ ok: false }));
    if (ok) done += 1;
  }
  $("failed-note").textContent = `${done} of ${ids.length} sent again.`;
  retrying -= 1;
  refresh();
}

// The API names a bad field (`recipientIds[3]`, `sendAt`): its input says so.
const FIELDS = { recipientId: "recipients", recipientIds: "recipients", content: "content", sendAt: "send-at", priority: "priority", mediaUrls: "media" };

function clearFieldErrors() {
  for (const input of Object.values(FIELDS)) {
    $(input).removeAttribute("aria-invalid");
    $(input).removeAttribute("aria-describedby");
    $(`${input}-problem`)?.remove();
  }
  $("compose-error").hidden = true;
}

function showFieldErrors(details, summary) {
  for (const d of details || []) {
    const input = FIELDS[d.field.replace(/\[.*$/, "")];
    if (!input) continue;
    $(input).setAttribute("aria-invalid", "true");
    $(input).setAttribute("aria-describedby", `${input}-problem`);
    const existing = $(`${input}-problem`);
    const text = `${d.field}: ${d.message}`;
    if (existing) existing.textContent += `; ${text}`;
    else $(input).after(el("p", { id: `${input}-problem`, class: "error" }, text));
  }
  $("compose-error").hidden = false;
  $("compose-error").textContent = summary;
}

async function compose(event) {
  event.preventDefault();
  clearFieldErrors();
  const recipients = $("recipients").value.split(/[\s,;]+/).filter(Boolean);
  const body = { content: $("content").value };
  if (recipients.length === 1) body.recipientId = recipients[0];
  else if (recipients.length > 1) body.recipientIds = recipients;
  else body.recipientId = "";
  const media = $("media").value.split(/\s+/).filter(Boolean);
  if (media.length) body.mediaUrls = media;
  if ($("send-at").value) body.sendAt = new Date($("send-at").value).toISOString();
  if ($("priority").value) body.priority = Number($("priority").value);
  composing ??= crypto.randomUUID();
  const submit = $("compose-form").querySelector("button[type=submit]");
  submit.disabled = true;
  let answer;
  try {
    answer = await api("POST", "send", body, { "idempotency-key": composing });
  } catch {
    return;
  } finally {
    submit.disabled = false;
  }
  const { ok, data } = answer;
  if (!ok) {
    showFieldErrors(data.details, data.error || "Not sent.");
    return;
  }
  const out = $("compose-answer");
  if (data.campaignId) {
    const last = data.messages[data.messages.length - 1];
    out.replaceChildren(el("p", {}, `Campaign `, el("code", {}, data.campaignId), ` accepted: ${data.count} messages, ${data.status}; the last about ${when(last?.estimatedSendTime)}.`),
      el("details", {}, el("summary", {}, "Message ids"), el("ul", {}, ...data.messages.map((m) => el("li", {}, `${m.recipientId}: `, el("code", {}, m.messageId))))));
  } else {
    out.replaceChildren(el("p", {}, `Message `, el("code", {}, data.messageId), ` accepted (${data.status}): position ${data.queuePosition}, about ${when(data.estimatedSendTime)}.`));
  }
  composing = null;
  $("compose-form").reset();
  refresh();
}

async function lookup(event) {
  event.preventDefault();
  const id = $("lookup-id").value.trim();
  let answer;
  try {
    answer = await api("GET", encodeURIComponent(id));
  } catch {
    return;
  }
  const { ok, status, data } = answer;
  const fact = (name, value) => el("div", {}, el("dt", {}, name), el("dd", {}, value ?? "—"));
  $("lookup-answer").replaceChildren(...(ok
    ? [fact("Status", data.status), fact("Recipient", data.recipientId), fact("Attempts", String(data.attempts)), fact("Accepted", when(data.acceptedAt)),
       fact("Sent", when(data.sentAt)), fact("Failed", when(data.failedAt)), fact("Last error", data.lastError), fact("Campaign", data.campaignId)]
    : [fact("Not found", status === 404 ? "No message of this account has that id." : data.error)]));
}

// --- start

$("sign-in-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("token").value); });
$("sign-out").addEventListener("click", () => signOut(null));
$("pause").addEventListener("click", () => hold("pause"));
$("resume").addEventListener("click", () => hold("resume"));
$("retry-all").addEventListener("click", () => retry([...document.querySelectorAll("#failed-rows tr")].map((r) => r.dataset.message)));
$("failed-next").addEventListener("click", () => { failedCursor = failedNext; refresh(); });
$("failed-first").addEventListener("click", () => { failedCursor = null; refresh(); });
$("compose-form").addEventListener("submit", compose);
$("compose-form").addEventListener("input", () => { composing = null; });
$("lookup-form").addEventListener("submit", lookup);
$("recipients-file").addEventListener("change", async (e) => {
  const file = e.target.files[0];
  if (!file) return;
  // A spreadsheet's export starts with its column's name: not a recipient (and said).
  const lines = (await file.text()).trim().split(/\r?\n/);
  const header = lines.length > 1 && /^\s*"?(recipient|fan|user|chat)[ _-]?(ids?|names?)?"?\s*$/i.test(lines[0]) ? lines.shift() : null;
  $("recipients-note").textContent = header ? `The file's first line, "${header.trim()}", was read as its column's name, not a recipient.` : "";
  $("recipients").value = [$("recipients").value.trim(), lines.join("\n").trim()].filter(Boolean).join("\n");
});
// Every few seconds while the tab is seen; at once when it is seen again.
setInterval(() => { if (document.visibilityState === "visible") refresh({ queued: false }); }, REFRESH_MS);
document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") refresh(); });

// A link's token (`#token=…`), taken out of the address at once; also when the link is
// followed in a tab already open on the console (only its fragment changes).
function fromLink() {
  const linked = new URLSearchParams(location.hash.slice(1)).get("token");
  if (linked) history.replaceState(null, "", location.pathname + location.search);
  return linked;
}
window.addEventListener("hashchange", () => { const linked = fromLink(); if (linked) signIn(linked); });
const kept = fromLink() || sessionStorage.getItem(TOKEN_KEY);
if (kept) signIn(kept);
else signOut(null);
