// The Timestep console: a page per hash route (#/runs, #/runs/<id>, #/approvals, #/queues,
// #/schedules). Reads the console's JSON API, which makes the contract's requests; live updates
// come from the events stream, relayed as server-sent events. Text from runs is only ever set
// as text (textContent), never parsed as HTML.
"use strict";

const TERMINAL = new Set(["completed", "failed", "cancelled", "rejected"]);
const CANCELLABLE = new Set(["queued", "running", "waiting"]);
const STATUS_OF = { accepted: "queued", queued: "queued", started: "running", interrupted: "waiting",
  tool_approved: "running", tool_rejected: "running", completed: "completed", failed: "failed",
  cancelled: "cancelled", rejected: "rejected" };

// A run's status as every page shows it: the one the database holds (runs.list, runs.get), unless
// the run's events say more. An event never takes back an end the database recorded: a run can end
// there without an event saying so (`timestep workflows cancel`, a run that failed before it began).
function runStatus(stored, fromEvents) {
  if (!fromEvents || (TERMINAL.has(stored) && !TERMINAL.has(fromEvents))) return stored;
  return fromEvents;
}

// An error said once: a message that begins with its type (`RateLimitError (HTTP 429) ...`) is not prefixed with it again.
function errorText(error, statusCode) {
  if (error.message.startsWith(error.type)) return error.message;
  return `${error.type}${statusCode ? ` (HTTP ${statusCode})` : ""}: ${error.message}`;
}

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== undefined && c !== null) el.append(c instanceof Node ? c : String(c));
  return el;
}

function showError(message) {
  const box = document.getElementById("error");
  box.textContent = message;
  box.hidden = false;
}
function clearError() { document.getElementById("error").hidden = true; }

async function api(method, path, body) {
  // Every request that acts carries this header: the server refuses one without it (another site's page cannot send it).
  const init = { method, headers: method === "GET" ? {} : { "X-Timestep-Console": "1" } };
  if (body !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = data.error || { type: String(response.status), message: response.statusText };
    const refusal = new Error(`${error.type}: ${error.message}`);
    refusal.status = response.status;
    throw refusal;
  }
  return data;
}

// An action from a button: its refusal is shown, never swallowed.
async function act(method, path, body) {
  clearError();
  try { return await api(method, path, body); } catch (e) { showError(`Refused: ${e.message}`); return null; }
}

function when(seconds) { return seconds ? new Date(seconds * 1000).toLocaleString() : ""; }
function duration(s) {
  if (s === null || s === undefined) return "";
  return s < 10 ? `${s.toFixed(2)} s` : s < 60 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`;
}
function seconds(from, to) { return (Date.parse(to) - Date.parse(from)) / 1000; }
function statusCell(status) { return h("td", { class: "status" }, h("span", { class: `s-${status}` }, status)); }

// --- live events ------------------------------------------------------------------------

let source = null;
function follow(path, onEvent) {
  if (source) source.close();
  const live = document.getElementById("live");
  source = new EventSource(path);
  source.onopen = () => { live.classList.add("on"); live.textContent = "● live"; };
  source.onerror = () => { live.classList.remove("on"); live.textContent = "○ reconnecting"; };
  source.onmessage = (m) => {
    const event = JSON.parse(m.data);
    if (event.type === "console_error") showError(`Live updates stopped: ${event.error.message}`);
    else onEvent(event);
  };
  source.addEventListener("end", () => { source.close(); live.classList.remove("on"); live.textContent = "○ ended"; });
}

function debounce(fn, ms) { let t; return () => { clearTimeout(t); t = setTimeout(fn, ms); }; }

// --- runs -------------------------------------------------------------------------------

const HINTS = { Queued: "from submitted to started: the time the run waited for its turn",
  Duration: "from started to its end, by the run's own events (the time queued is not counted)" };

async function runsPage(main, params) {
  const filters = h("form", { class: "filters", id: "filters" },
    h("label", {}, "status", h("select", { name: "status" }, ["", "queued", "running", "waiting", "completed", "failed", "cancelled"]
      .map((s) => h("option", { value: s, selected: params.get("status") === s }, s || "any")))),
    h("label", {}, "agent", h("input", { name: "agent", value: params.get("agent") || "" })),
    h("label", {}, "queue", h("input", { name: "queue", value: params.get("queue") || "" })),
    h("button", { type: "submit" }, "Filter"));
  filters.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams([...new FormData(filters)].filter(([, v]) => v));
    location.hash = `#/runs${q.toString() ? "?" + q : ""}`;
  });
  const body = h("tbody", { id: "runs" });
  main.append(h("h2", {}, "Runs"), filters, h("table", {},
    h("thead", {}, h("tr", {}, ["Run", "Status", "Agent", "Queue", "Submitted", "Queued", "Duration", "Tokens"]
      .map((t) => h("th", { title: HINTS[t] }, t)))), body));

  const seen = {}; // run id -> {status, usage} from events newer than the last list
  const render = (runs) => {
    body.replaceChildren(...runs.map((run) => {
      const live = seen[run.id] || {};
      const status = runStatus(run.status, live.status);
      const usage = run.usage || live.usage;
      return h("tr", { dataset: { runId: run.id } },
        h("td", {}, h("a", { href: `#/runs/${encodeURIComponent(run.id)}` }, run.id)),
        statusCell(status), h("td", {}, run.agent), h("td", {}, run.queue || ""),
        h("td", {}, when(run.accepted_at || run.created_at)), h("td", { class: "queued" }, duration(run.queued_seconds)),
        h("td", { class: "duration" }, duration(run.ran_seconds)),
        h("td", {}, usage ? String(usage.total_tokens) : ""));
    }));
  };
  const query = new URLSearchParams(params);
  const load = async () => {
    try { render((await api("GET", `/api/runs?${query}`)).runs); } catch (e) { showError(e.message); }
  };
  await load();
  const reload = debounce(load, 250);
  follow("/api/events", (event) => {
    if (event.type === "delta") return;
    const known = seen[event.run_id] || (seen[event.run_id] = {});
    if (STATUS_OF[event.type]) known.status = STATUS_OF[event.type];
    if (event.usage) known.usage = event.usage;
    reload();
  });
}

// --- one run ----------------------------------------------------------------------------

// The run's recorded steps as a waterfall: one row per step, its bar placed from the run's first step to its
// last, each row opening to what the step recorded (a long value is fetched whole when opened).
// Model calls that failed and were tried again (with the waits between them), grouped under the call:
// rows of single steps, and of such groups ({ group: [steps] }).
function retryGroups(recorded) {
  const rows = [];
  for (const s of recorded) {
    const last = rows.at(-1);
    const open = last && last.group && !last.closed;
    if (open && (s.kind === "sleep" || (s.kind === "model" && s.attempt > 1))) {
      last.group.push(s);
      if (s.kind === "model" && s.status === "completed") last.closed = true;
    } else if (s.kind === "model" && s.status === "failed") rows.push({ group: [s], closed: false });
    else rows.push({ step: s });
  }
  return rows.map((r) => (r.group && r.group.filter((s) => s.kind === "model").length < 2 ? r.group.map((s) => ({ step: s })) : [r])).flat();
}

function stepsView(runId, list) {
  const path = `/api/runs/${encodeURIComponent(runId)}/steps`;
  let timer = null;
  let shown = null; // the steps as last shown (JSON): the same steps are not drawn again
  const show = async () => {
    let recorded;
    try { recorded = (await api("GET", path)).steps; } catch (e) { showError(e.message); return; }
    const json = JSON.stringify(recorded);
    if (json === shown) return;
    shown = json;
    // What the reader opened stays open when new steps come.
    const key = (li) => `${li.dataset.number}${li.classList.contains("retried") ? "+" : ""}`;
    const open = new Set([...list.querySelectorAll("li")].filter((li) => li.firstElementChild?.open).map(key));
    const starts = recorded.filter((s) => s.started_at).map((s) => s.started_at);
    const ends = recorded.filter((s) => s.ended_at).map((s) => s.ended_at);
    const t0 = Math.min(...starts), span = Math.max(Math.max(...ends) - t0, 0.001);
    const bar = (from, to) => {
      const b = h("span", { class: "bar" });
      if (from && to) b.append(h("span", { style: `left:${(100 * (from - t0)) / span}%;width:${Math.max((100 * (to - from)) / span, 0.5)}%` }));
      return b;
    };
    const took = (from, to) => (from && to ? (to - from < 1 ? `${Math.round((to - from) * 1000)} ms` : duration(to - from)) : "");
    const stepRow = (s) => {
      const body = h("pre", {}, s.error ? errorText(s.error) : JSON.stringify(s.value, null, 1) ?? "");
      // A new run from this step: the steps before it come from the record, this one and those after run again.
      const fork = h("button", { class: "secondary fork", title: "a new run that takes the steps before this one from the record and runs from here with the agent as deployed now", onclick: async () => {
        const made = await act("POST", `/api/runs/${encodeURIComponent(runId)}/fork`, { from_step: s.number });
        if (made) location.hash = `#/runs/${encodeURIComponent(made.run.id)}`;
      } }, "Fork from here");
      const row = h("details", { ontoggle: async () => {
        if (!row.open || !s.cut) return;
        try { const [whole] = (await api("GET", `${path}?step=${s.number}`)).steps; body.textContent = JSON.stringify(whole.value, null, 1); } catch (e) { showError(e.message); }
      } }, h("summary", {}, h("span", { class: "num" }, `#${s.number}`), h("span", { class: "kind" }, s.kind),
        h("span", { class: "name" }, s.name, s.attempt > 1 ? ` (attempt ${s.attempt})` : ""),
        h("span", { class: `st-${s.status}` }, s.status), h("span", { class: "took" }, took(s.started_at, s.ended_at)), bar(s.started_at, s.ended_at)), body, fork);
      return h("li", { class: `step k-${s.kind}`, dataset: { number: s.number, kind: s.kind, status: s.status } }, row);
    };
    // A call tried several times: one row (its attempts, the failed ones, from the first start to the last end),
    // opening to each attempt and wait.
    const groupRow = (group) => {
      const attempts = group.filter((s) => s.kind === "model");
      const first = group[0], last = group.at(-1), final = attempts.at(-1);
      const failed = attempts.filter((s) => s.status === "failed").length;
      return h("li", { class: "step k-model retried", dataset: { number: first.number, kind: "model", status: final.status, attempts: attempts.length } },
        h("details", {}, h("summary", {}, h("span", { class: "num" }, `#${first.number}–${last.number}`), h("span", { class: "kind" }, "model"),
          h("span", { class: "name" }, `model (${attempts.length} attempts, ${failed} failed)`), h("span", { class: `st-${final.status}` }, final.status),
          h("span", { class: "took" }, took(first.started_at, last.ended_at)), bar(first.started_at, last.ended_at)),
        h("ol", { class: "steps attempts" }, ...group.map(stepRow))));
    };
    list.replaceChildren(...retryGroups(recorded).map((r) => (r.group ? groupRow(r.group) : stepRow(r.step))));
    for (const li of list.querySelectorAll("li")) if (open.has(key(li))) li.firstElementChild.open = true;
  };
  show.soon = () => { clearTimeout(timer); timer = setTimeout(show, 300); };
  return show;
}

async function runPage(main, runId) {
  const facts = h("dl", { class: "facts" });
  const status = h("span", { id: "run-status" });
  const cancel = h("button", { id: "cancel", class: "secondary", hidden: true, onclick: async () => {
    if (await act("POST", `/api/runs/${encodeURIComponent(runId)}/cancel`, {})) cancel.disabled = true;
  } }, "Cancel run");
  const outcome = h("div", { id: "outcome", hidden: true });
  const given = h("div", { id: "run-input", class: "run-input", hidden: true });
  const timeline = h("ol", { class: "timeline", id: "timeline" });
  const steps = h("ol", { class: "steps", id: "steps" });
  main.append(h("div", { class: "title" }, h("h2", {}, "Run ", h("code", {}, runId), " ", status), cancel), given, outcome, facts,
    h("h3", { title: "each recorded step: a model call, a tool call, a guardrail, a wait; its bar is when it ran, from the run's first step to its last" }, "Steps"), steps,
    h("h3", {}, "Timeline"), timeline);
  const showSteps = stepsView(runId, steps);
  showSteps();

  const decisions = {}; // call id -> the buttons' container
  const undecided = (box) => { delete box.dataset.open; box.replaceChildren(h("em", {}, "not decided: the run ended")); };
  let stored = null; // the status the database holds
  let fromEvents = null; // the status the run's events say, as they come
  const setStatus = () => {
    const s = runStatus(stored, fromEvents);
    if (!s) return;
    status.textContent = s; status.className = `s-${s}`; status.dataset.status = s;
    cancel.hidden = !CANCELLABLE.has(s);
    if (TERMINAL.has(s)) {
      if (!outcome.dataset.said) say(s, "");
      for (const box of Object.values(decisions)) if (box.dataset.open) undecided(box);
    }
  };
  // What became of the run, at the top: from its last event, else from the database.
  const say = (how, detail, from) => {
    outcome.replaceChildren(h("span", { class: `s-${how}` }, how), detail ? h("span", { class: "reason" }, ` ${detail}`) : "");
    outcome.className = `outcome o-${how}`;
    outcome.hidden = false;
    if (from) outcome.dataset.said = from;
  };
  const fact = {}; // name -> its <dd>
  for (const name of ["agent", "queue", "session", "forked", "submitted", "queued", "started", "duration", "tokens"]) {
    fact[name] = h("dd", { dataset: { fact: name } });
    facts.append(h("dt", { title: HINTS[name[0].toUpperCase() + name.slice(1)] }, name), fact[name]);
  }
  const times = {}; // event type -> its time, for the durations
  try {
    const { run } = await api("GET", `/api/runs/${encodeURIComponent(runId)}`);
    stored = run.status;
    fact.agent.textContent = run.agent; fact.queue.textContent = run.queue || "-"; fact.session.textContent = run.session_id || "-";
    // What the run was given, at the top: its text, or the text of its input items.
    if (run.input !== undefined && run.input !== null) {
      const text = typeof run.input === "string" ? run.input : run.input.map((i) => (typeof i.content === "string" ? i.content
        : Array.isArray(i.content) ? i.content.map((p) => p.text ?? "").join(" ") : JSON.stringify(i))).join("\n");
      given.replaceChildren(h("span", { class: "muted" }, "input "), h("span", { class: "text" }, text));
      given.hidden = false;
    }
    if (run.forked_from) fact.forked.replaceChildren(h("a", { href: `#/runs/${encodeURIComponent(run.forked_from)}` }, run.forked_from));
    else fact.forked.textContent = "-";
    fact.submitted.textContent = when(run.accepted_at || run.created_at); fact.started.textContent = when(run.started_at);
    fact.queued.textContent = duration(run.queued_seconds); fact.duration.textContent = duration(run.ran_seconds);
    fact.tokens.textContent = run.usage ? run.usage.total_tokens : "";
    if (run.error) say(run.status, errorText(run.error), "database");
    setStatus();
  } catch (e) { showError(e.message); }

  let streamed = null; // the current block of streamed text
  let text = null; // the timeline's card of the last block of streamed text
  let retries = null; // the card of the retries in a row that failed the same way
  let previous = null; // the type of the event before this one
  follow(`/api/runs/${encodeURIComponent(runId)}/events`, (event) => {
    const before = previous;
    previous = event.type;
    if (event.type !== "delta") showSteps.soon();
    if (STATUS_OF[event.type]) { fromEvents = STATUS_OF[event.type]; setStatus(); }
    if (event.type === "accepted" || event.type === "started" || TERMINAL.has(event.type)) {
      times[event.type] = event.time;
      if (times.accepted && times.started) fact.queued.textContent = duration(seconds(times.accepted, times.started));
      if (event.type === "accepted") fact.submitted.textContent = new Date(event.time).toLocaleString();
      if (event.type === "started") fact.started.textContent = new Date(event.time).toLocaleString();
      if (times.started && TERMINAL.has(event.type)) fact.duration.textContent = duration(seconds(times.started, event.time));
    }
    if (event.type === "delta") {
      retries = null;
      if (!streamed) { streamed = h("div", { class: "streamed" }); text = item(event, "text", streamed); timeline.append(text); }
      streamed.textContent += event.text;
      return;
    }
    streamed = null;
    if (event.type !== "retrying") retries = null;
    if (event.type === "tool_call") timeline.append(item(event, `tool call: ${event.tool}`, h("pre", {}, event.arguments), h("div", { class: "muted" }, `call ${event.call_id}`)));
    else if (event.type === "tool_output") timeline.append(item(event, "tool output", h("pre", {}, event.output), h("div", { class: "muted" }, `call ${event.call_id}`)));
    else if (event.type === "interrupted") {
      timeline.append(item(event, "waiting for approval", ...event.approvals.map((a) => {
        const buttons = decisionButtons(runId, a.call_id);
        buttons.dataset.open = "1";
        decisions[a.call_id] = buttons;
        if (TERMINAL.has(status.dataset.status)) undecided(buttons); // replayed after the database recorded the end
        return h("div", { class: "approval", dataset: { callId: a.call_id } }, h("strong", {}, a.tool), h("pre", {}, a.arguments), buttons);
      })));
    } else if (event.type === "tool_approved" || event.type === "tool_rejected") {
      const verdict = event.type === "tool_approved" ? `approved${event.always ? " (always)" : ""}` : `rejected${event.message ? ": " + event.message : ""}`;
      if (decisions[event.call_id]) { delete decisions[event.call_id].dataset.open; decisions[event.call_id].replaceChildren(h("em", {}, verdict)); }
      timeline.append(item(event, `${event.tool} ${verdict}`));
    } else if (event.type === "completed") {
      say("completed", typeof event.output === "string" ? event.output : JSON.stringify(event.output), "events");
      timeline.append(item(event, "completed", h("pre", {}, JSON.stringify(event.output, null, 1)),
        h("div", { class: "muted" }, `tokens: ${event.usage.total_tokens} (${event.usage.requests} model calls)`)));
      fact.tokens.textContent = event.usage.total_tokens;
    } else if (event.type === "failed" || event.type === "rejected") {
      say(event.type, errorText(event.error), "events");
      timeline.append(item(event, event.type, h("pre", { class: "failure" }, errorText(event.error))));
    } else if (event.type === "cancelled") { say("cancelled", "", "events"); timeline.append(item(event, "cancelled")); }
    else if (event.type === "queued") timeline.append(item(event, `queued in ${event.queue}`));
    else if (event.type === "forked") {
      fact.forked.replaceChildren(h("a", { href: `#/runs/${encodeURIComponent(event.from_run)}` }, event.from_run), ` from step ${event.from_step}`);
      timeline.append(item(event, "forked", h("div", {}, "from step ", String(event.from_step), " of run ",
        h("a", { href: `#/runs/${encodeURIComponent(event.from_run)}` }, event.from_run), "; the steps before it come from its record")));
    }
    else if (event.type === "retrying") {
      // `attempt` is the attempt that failed, numbered from 1 as `timestep events` prints it.
      const key = JSON.stringify([event.error.type, event.status_code, event.error.message]);
      if (!retries || retries.key !== key) { retries = retryCard(event, key); timeline.append(retries.card); }
      // Only an attempt that streamed text before it failed leaves text that no longer counts.
      if (before === "delta") text.append(h("div", { class: "muted void" }, `void: attempt ${event.attempt} failed after streaming this; the next attempt streams its own`));
      retries.add(event, before === "delta");
    } else timeline.append(item(event, event.type));
  });
}

// One card for retries in a row that failed the same way: "retried 9 times", each attempt behind a click.
function retryCard(first, key) {
  const title = h("span", { class: "kind" });
  const seq = h("span", { class: "seq" });
  const attempts = h("div", { class: "attempts" });
  const card = h("li", { dataset: { type: "retrying" } }, seq, title,
    h("pre", { class: "failure" }, errorText(first.error, first.status_code)),
    h("details", {}, h("summary", { class: "muted" }, "each attempt"), attempts));
  let count = 0;
  const add = (event, streamedText) => {
    count += 1;
    title.textContent = count === 1 ? `attempt ${event.attempt} failed, retried` : `retried ${count} times`;
    seq.textContent = `#${first.seq}${count > 1 ? `–${event.seq}` : ""} ${new Date(first.time).toLocaleTimeString()}`;
    attempts.append(h("div", { class: "attempt" }, `attempt ${event.attempt} failed at ${new Date(event.time).toLocaleTimeString()};`
      + ` waited ${event.delay_seconds} s until ${new Date(event.retry_at).toLocaleTimeString()}`
      + (streamedText ? "; the text it streamed is void (the next attempt streams its own)" : "")));
  };
  return { key, card, add };
}

function item(event, title, ...body) {
  return h("li", { dataset: { type: event.type } }, h("span", { class: "seq" }, `#${event.seq} ${new Date(event.time).toLocaleTimeString()}`),
    h("span", { class: "kind" }, title), ...body);
}

function decisionButtons(runId, callId, after, args) {
  const box = h("div", { class: "decide" });
  const path = (a) => `/api/runs/${encodeURIComponent(runId)}/${a}`;
  const message = h("input", { placeholder: "why (for a rejection)", name: "message" });
  const always = h("input", { type: "checkbox", name: "always" });
  // The arguments, editable: an approval with changed arguments runs the tool with them (checked by the agent).
  const edit = args === undefined ? null : h("textarea", { name: "arguments", rows: 2, cols: 40 }, args);
  const decided = (verdict) => { box.replaceChildren(h("em", {}, verdict)); if (after) after(); };
  box.append(
    ...(edit ? [edit, h("br")] : []),
    h("button", { class: "approve", dataset: { action: "approve", callId }, onclick: async () => {
      const body = { call_id: callId, always: always.checked };
      if (edit && edit.value.trim() !== args.trim()) body.arguments = edit.value;
      if (await act("POST", path("approve"), body)) decided(body.arguments ? "approved with edited arguments" : "approved");
    } }, "Approve"), " ",
    h("button", { class: "reject", dataset: { action: "reject", callId }, onclick: async () => {
      if (await act("POST", path("reject"), { call_id: callId, message: message.value || undefined, always: always.checked })) decided("rejected");
    } }, "Reject"), " ", message, " ", h("label", { class: "check" }, always, "always, for this tool in this run"));
  return box;
}

// --- approvals --------------------------------------------------------------------------

async function approvalsPage(main) {
  const body = h("tbody", { id: "approvals" });
  main.append(h("h2", {}, "Approvals"), h("table", {},
    h("thead", {}, h("tr", {}, ["Run", "Agent", "Tool", "Arguments", "Waiting since", "Deadline", "Decision"].map((t) => h("th", {}, t)))), body));
  const load = async () => {
    try {
      const { approvals } = await api("GET", "/api/approvals");
      body.replaceChildren(...approvals.map((a) => h("tr", { dataset: { runId: a.run_id, callId: a.call_id } },
        h("td", {}, h("a", { href: `#/runs/${encodeURIComponent(a.run_id)}` }, a.run_id)), h("td", {}, a.agent), h("td", {}, a.tool),
        h("td", {}, h("pre", {}, a.arguments)), h("td", {}, when(a.requested_at)), h("td", {}, a.deadline ? when(a.deadline) : "-"),
        h("td", {}, decisionButtons(a.run_id, a.call_id, undefined, a.arguments)))));
      if (!approvals.length) body.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "Nothing waits for a decision.")));
    } catch (e) { showError(e.message); }
  };
  await load();
  const reload = debounce(load, 300);
  follow("/api/events", (event) => { if (["interrupted", "tool_approved", "tool_rejected"].includes(event.type) || TERMINAL.has(event.type)) reload(); });
}

// --- queues -----------------------------------------------------------------------------

async function queuesPage(main) {
  const body = h("tbody", { id: "queues" });
  main.append(h("h2", {}, "Queues"), h("table", {}, h("thead", {}, h("tr", {},
    ["Queue", "Waiting", "Running", "Admitted in window", "Limit", "Period (s)", "Concurrency", "Tokens per period", "Tokens per run", ""].map((t) => h("th", {}, t)))), body));
  const field = (name, value) => h("input", { class: "num", name, value: value ?? "", inputmode: "decimal" });
  const load = async () => {
    try {
      const { queues } = await api("GET", "/api/queues");
      body.replaceChildren(...queues.map((q) => {
        const inputs = [field("limit", q.limit), field("period_seconds", q.period_seconds), field("concurrency", q.concurrency),
          field("tokens_per_period", q.tokens_per_period), field("max_tokens_per_run", q.max_tokens_per_run)];
        const save = h("button", { dataset: { action: "save" }, onclick: async () => {
          const policy = {};
          for (const i of inputs) if (i.value !== "") policy[i.name] = Number(i.value);
          if (await act("POST", `/api/queues/${encodeURIComponent(q.name)}`, policy)) load();
        } }, "Save");
        const paused = q.paused_until ? h("div", { class: "failure paused", title: q.paused_reason }, `paused until ${new Date(q.paused_until).toLocaleTimeString()}: ${q.paused_reason}`) : "";
        return h("tr", { dataset: { queue: q.name } }, h("td", {}, q.name, paused), h("td", { class: "depth" }, q.depth), h("td", {}, q.running),
          h("td", {}, q.admitted_in_window), ...inputs.map((i) => h("td", {}, i)), h("td", {}, save));
      }));
    } catch (e) { showError(e.message); }
  };
  await load();
  const reload = debounce(load, 500);
  follow("/api/events", (event) => { if (event.type !== "delta") reload(); });
}

// --- schedules --------------------------------------------------------------------------

async function schedulesPage(main) {
  const body = h("tbody", { id: "schedules" });
  const form = h("form", { class: "inline", id: "new-schedule" },
    h("label", {}, "name", h("input", { name: "name", required: true })),
    h("label", {}, "cron", h("input", { name: "cron", required: true, placeholder: "*/10 * * * * *" })),
    h("label", {}, "agent", h("input", { name: "agent", required: true })),
    h("label", {}, "input", h("input", { name: "input", required: true })),
    h("label", {}, "queue", h("input", { name: "queue" })),
    h("button", { type: "submit" }, "Create"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const values = Object.fromEntries([...new FormData(form)].filter(([, v]) => v));
    if (await act("POST", "/api/schedules", values)) { form.reset(); load(); }
  });
  main.append(h("h2", {}, "Schedules"), form, h("table", {}, h("thead", {}, h("tr", {},
    ["Name", "Cron", "Agent", "Input", "Queue", "Fired by", "Last fired", "Next tick", ""].map((t) => h("th", {}, t)))), body));
  const load = async () => {
    try {
      const { schedules } = await api("GET", "/api/schedules");
      body.replaceChildren(...schedules.map((s) => h("tr", { dataset: { schedule: s.name } },
        h("td", {}, s.name), h("td", {}, h("code", {}, s.cron)), h("td", {}, s.request.agent),
        h("td", {}, typeof s.request.input === "string" ? s.request.input : JSON.stringify(s.request.input)),
        h("td", {}, s.request.queue || ""), h("td", { class: "origin" }, s.origin === "library" ? "library" : "scheduler"),
        h("td", {}, s.last_fired_at ? when(s.last_fired_at) : ""), h("td", {}, when(s.next_tick)),
        h("td", {}, h("button", { class: "danger", dataset: { action: "delete" }, onclick: async () => {
          if (await act("DELETE", `/api/schedules/${encodeURIComponent(s.name)}`)) load();
        } }, "Delete")))));
    } catch (e) { showError(e.message); }
  };
  await load();
  if (source) { source.close(); source = null; }
}

// --- routing ----------------------------------------------------------------------------

async function route() {
  const [path, query] = (location.hash.slice(1) || "/runs").split("?");
  const parts = path.split("/").filter(Boolean);
  const params = new URLSearchParams(query || "");
  const main = document.getElementById("main");
  main.replaceChildren();
  clearError();
  if (source) { source.close(); source = null; }
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("current", a.dataset.page === parts[0]);
  if (parts[0] === "runs" && parts[1]) await runPage(main, decodeURIComponent(parts[1]));
  else if (parts[0] === "approvals") await approvalsPage(main);
  else if (parts[0] === "queues") await queuesPage(main);
  else if (parts[0] === "schedules") await schedulesPage(main);
  else await runsPage(main, params);
  document.body.dataset.page = parts[0] || "runs";
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", async () => {
  try {
    const me = await api("GET", "/api/whoami");
    document.getElementById("whoami").textContent = me.login ? `signed in as ${me.user}` : "open access (this machine)";
  } catch (e) { showError(e.message); }
  route();
});
