// jobqd dashboard: a client of jobqd's JSON API (docs/api.md), served by jobqd itself.
// Plain JS, no framework and no build step. Every value from the API reaches the page as text
// (textContent, createElement, setAttribute), never as HTML: a payload holding markup shows as
// that markup's text. Routes live in the hash: #/ (overview), #/queue/Q/STATE (STATE one of TABS:
// a state a job is in now, or the status of kept job states), #/search/Q/TEXT (a queue's page
// searching its jobs for TEXT), #/job/Q/ID, #/find[/ID], #/schedules. Memory stays bounded in a
// page left open for days: the views keep the last answer only, the log of job ends keeps
// RECENT_MAX entries, a search shows SEARCH_MAX results at most, a status tab STATUS_MAX, and a
// search keeps BULK_MAX ids for a bulk action (tests/browser/dashboard.js measures the heap).
'use strict';

// ---- constants and state ---------------------------------------------------------------------

const RECENT_MAX = 100; // job ends kept for the overview's and the find page's lists
const RECENT_SHOWN = 15;
const PAGE_SIZE = 50;
const MAX_OFFSET = 10000; // the API's largest offset
const WORKERS_EVERY_MS = 5000; // the daemons table is polled: it has no event
const JOB_POLL_MS = 2000; // a job page polls while its job is not final (a start has no event)
const JOB_MISSING_POLL_MS = 5000; // and, slower, while there is no such job
const RECONNECT_MS = 5000; // after the event stream closed for good (an HTTP error)
const ID_RE = /^[A-Za-z0-9_.:-]{1,128}$/;
const STATES = ['pending', 'delayed', 'running', 'buffered', 'dead'];
// Tabs of the jobs whose retained state has a status, found by GET .../search?status=S (a scan
// with a cursor, not a count).
const STATUSES = ['retrying', 'succeeded', 'failed', 'cancelled'];
const TABS = STATES.concat(STATUSES);
const FINAL = new Set(['succeeded', 'failed', 'cancelled']);

const S = {
  session: null, // GET /api/session: {csrf, read_only, version, auth}
  queues: null, // the last queue list (event `queues`, else GET /api/queues)
  recent: [], // the last job ends, newest first, at most RECENT_MAX
  seq: 0, // the render generation: an answer for a view already left is dropped
  view: null, // the view in the page: {onQueues(list), onJob(event), refresh(), stop()}
  events: null, // the EventSource
  reconnect: 0, // its reconnect timer
  loginShown: false,
};

// ---- DOM helpers -----------------------------------------------------------------------------

const $ = (sel) => document.querySelector(sel);

// el('a', {href: '#/', class: 'x', onclick: f}, 'text', child): attributes through setAttribute,
// children as nodes or text nodes. Never HTML.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = String(value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function alive(seq) {
  return seq === S.seq && !S.loginShown;
}

// ---- formatting ------------------------------------------------------------------------------

const DATE_FMT = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

function num(v) {
  const n = typeof v === 'number' ? v : Number(v);
  return Number.isFinite(n) ? n : null;
}

// A count as the table shows it: -1 (a shard cannot tell) as '?'.
function count(v) {
  const n = num(v);
  if (n === null) return '–';
  return n < 0 ? '?' : n.toLocaleString();
}

// Held-back groups the Limits column names; the rest are counted (the cell does not wrap).
const HELD_SHOWN = 3;

// The groups of a group_by queue held back by their limit, as its row gives them (the most
// waiting first): `held back: acme 4, globex 2` (and `+N more`), '' for none.
function heldBack(q, all) {
  const held = Array.isArray(q.groups_held_back)
    ? q.groups_held_back.filter((g) => g && typeof g.group === 'string')
    : [];
  if (!held.length) return '';
  const shown = all ? held : held.slice(0, HELD_SHOWN);
  const text = shown.map((g) => `${g.group} ${count(g.waiting)}`).join(', ');
  const more = held.length - shown.length;
  return `held back: ${text}${more > 0 ? ` +${more} more` : ''}`;
}

// A queue's limits and order across every daemon, as its row gives them: its rate with the tokens
// its bucket holds now (`100/s (37 left)`), its global concurrency (`20 at once`), its priorities
// (`strict priorities`), its groups (`per payload.tenant`), a weight other than 1 (`weight 3`)
// and the groups held back now (heldBack); '–' for none.
function limits(q) {
  const parts = [];
  if (typeof q.rate === 'string' && q.rate)
    parts.push(
      Number.isInteger(q.rate_tokens) ? `${q.rate} (${count(q.rate_tokens)} left)` : q.rate,
    );
  if (Number.isInteger(q.global_concurrency) && q.global_concurrency > 0)
    parts.push(`${q.global_concurrency} at once`);
  if (typeof q.priorities === 'string' && q.priorities) parts.push(`${q.priorities} priorities`);
  if (typeof q.group_by === 'string' && q.group_by) parts.push(`per ${q.group_by}`);
  if (Number.isInteger(q.weight) && q.weight !== 1) parts.push(`weight ${q.weight}`);
  const held = heldBack(q);
  if (held) parts.push(held);
  return parts.length ? parts.join(' · ') : '–';
}

function rate(v) {
  const n = num(v);
  if (n === null) return '–';
  return Number.isInteger(n) ? n.toLocaleString() : n.toFixed(1);
}

function duration(seconds) {
  let s = Math.max(0, Math.floor(num(seconds) || 0));
  const d = Math.floor(s / 86400),
    h = Math.floor((s % 86400) / 3600),
    m = Math.floor((s % 3600) / 60);
  s %= 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

// Unix ms as a local date and time, with how long ago (or in how long).
function localTime(ms) {
  const n = num(ms);
  if (n === null || n <= 0) return ms === undefined || ms === null ? '–' : String(ms);
  const delta = (Date.now() - n) / 1000;
  const span = duration(Math.abs(delta));
  return `${DATE_FMT.format(new Date(n))} (${delta >= 0 ? span + ' ago' : 'in ' + span})`;
}

// A JSON value on one line, cut to `max` characters.
function brief(value, max = 160) {
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  if (text === undefined) return '';
  return text.length > max ? text.slice(0, max - 1) + '…' : text;
}

// A JSON value for a <pre>: a string as it is, anything else indented.
function pretty(value) {
  return typeof value === 'string' ? value : JSON.stringify(value, null, 2);
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

// ---- links -----------------------------------------------------------------------------------

const enc = encodeURIComponent;
const queueHref = (q, state = 'pending', offset = 0) =>
  `#/queue/${enc(q)}/${enc(state)}${offset ? '?offset=' + offset : ''}`;
const jobHref = (q, id) => `#/job/${enc(q)}/${enc(id)}`;

// ---- the error bar and the status line --------------------------------------------------------

function showError(message) {
  $('#error-text').textContent = message;
  $('#error').hidden = false;
}

function clearError() {
  $('#error').hidden = true;
  $('#error-text').textContent = '';
}

// An API error in the bar; a 401 has shown the login form already.
function reportError(e) {
  if (e && e.status === 401) return;
  showError(e && e.message ? e.message : String(e));
}

function setStatus(message) {
  const line = $('#status');
  line.textContent = '';
  if (!message) return;
  line.append(
    el('span', { class: 'status-time', text: new Date().toLocaleTimeString() }),
    ' ',
    message,
  );
}

// ---- the API ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// One request; resolves to the parsed JSON answer. A 401 shows the login form (but for the login
// itself); a POST refused for its CSRF token fetches the session anew and is sent once more.
// `signal` (an AbortController's) stops the request: it then rejects with status -1.
async function api(method, path, body, { again = false, signal } = {}) {
  const headers = { Accept: 'application/json' };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store', signal };
  if (method !== 'GET') {
    headers['Content-Type'] = 'application/json';
    if (S.session && S.session.csrf) headers['X-CSRF-Token'] = S.session.csrf;
    init.body = JSON.stringify(body || {});
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (signal && signal.aborted) throw new ApiError(-1, 'stopped');
    throw new ApiError(0, `cannot reach jobqd: ${e.message}`);
  }
  const data = await res.text().then(parseJson, () => null);
  if (signal && signal.aborted) throw new ApiError(-1, 'stopped');
  if (res.ok) return data;
  const message =
    (data && typeof data.error === 'string' && data.error) ||
    `${method} ${path}: HTTP ${res.status}`;
  if (res.status === 401 && path !== '/api/login') showLogin();
  if (res.status === 403 && method !== 'GET' && !again && /csrf/i.test(message)) {
    await loadSession();
    return api(method, path, body, { again: true, signal });
  }
  throw new ApiError(res.status, message);
}

function parseJson(text) {
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

async function loadSession() {
  S.session = await api('GET', '/api/session');
  const ro = !!(S.session && S.session.read_only);
  document.body.classList.toggle('read-only', ro);
  $('#read-only').hidden = !ro;
  $('#version').textContent = S.session && S.session.version ? `jobqd ${S.session.version}` : '';
  renderSignOut();
}

const readOnly = () => !!(S.session && S.session.read_only);

// ---- live updates: server-sent events --------------------------------------------------------

function setLive(state, text) {
  const live = $('#live');
  live.className = `live live-${state}`;
  live.textContent = text;
}

function openEvents() {
  closeEvents();
  const es = new EventSource('/api/events');
  S.events = es;
  es.addEventListener('open', () => setLive('on', 'live'));
  es.addEventListener('queues', (ev) => {
    const list = parseJson(ev.data);
    if (Array.isArray(list)) setQueues(list);
  });
  es.addEventListener('job', (ev) => {
    const job = parseJson(ev.data);
    if (job && typeof job.id === 'string') onJobEnd(job);
  });
  // Job ends this page missed (it fell behind): the view reads its data again.
  es.addEventListener('resync', () => {
    if (S.view && S.view.refresh) S.view.refresh();
  });
  es.addEventListener('error', () => {
    if (es.readyState !== EventSource.CLOSED) return setLive('wait', 'reconnecting…');
    // Closed for good (an HTTP error, a 401): ask the API why, then try again.
    setLive('off', 'offline');
    S.events = null;
    scheduleReconnect();
  });
}

function closeEvents() {
  clearTimeout(S.reconnect);
  if (S.events) S.events.close();
  S.events = null;
}

function scheduleReconnect() {
  clearTimeout(S.reconnect);
  S.reconnect = setTimeout(async () => {
    try {
      await api('GET', '/api/session');
      openEvents();
    } catch (e) {
      if (e.status !== 401) scheduleReconnect();
    }
  }, RECONNECT_MS);
}

function setQueues(list) {
  S.queues = list;
  if (S.view && S.view.onQueues) S.view.onQueues(list);
}

// A job ended: into the bounded log, and to the view in the page.
function onJobEnd(job) {
  S.recent.unshift({
    id: job.id,
    queue: String(job.queue || ''),
    status: String(job.status || ''),
    at: Date.now(),
  });
  if (S.recent.length > RECENT_MAX) S.recent.length = RECENT_MAX;
  if (S.view && S.view.onJob) S.view.onJob(job);
}

// ---- the confirm dialog ----------------------------------------------------------------------

// Resolves true when the operator confirms. A <dialog>: Escape and the Keep button say no.
function confirmDialog(title, text, okLabel) {
  const dialog = $('#confirm');
  $('#confirm-title').textContent = title;
  $('#confirm-text').textContent = text;
  $('#confirm-ok').textContent = okLabel;
  dialog.returnValue = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'yes'), { once: true });
    dialog.showModal();
    $('#confirm-no').focus();
  });
}

// An action button: hidden in read-only mode (CSS), confirmed, then run with the button off;
// `done` turns the answer into the status line's words. The dialog's words may be functions,
// read at the click.
function actionButton(label, { title, text, ok, klass, run, done, after }) {
  const button = el(
    'button',
    { type: 'button', class: `action ${klass || ''}`, disabled: readOnly() },
    label,
  );
  const words = (v) => (typeof v === 'function' ? v() : v);
  button.addEventListener('click', async () => {
    if (readOnly()) return;
    if (!(await confirmDialog(words(title), words(text), words(ok) || button.textContent))) return;
    button.disabled = true;
    clearError();
    try {
      const answer = await run();
      setStatus(done(answer));
      if (after) after(answer);
    } catch (e) {
      reportError(e);
    } finally {
      button.disabled = readOnly();
    }
  });
  return button;
}

// ---- the actions -----------------------------------------------------------------------------

function cancelButton(queue, id, after) {
  return actionButton('Cancel job', {
    klass: 'danger',
    title: 'Cancel this job?',
    text: `Job ${id} of queue ${queue} is cancelled: taken out if it waits, stopped if it runs.`,
    run: () => api('POST', `/api/jobs/${enc(id)}/cancel?queue=${enc(queue)}`),
    done: (r) => {
      if (r.result === 'cancelled') return `cancelled: job ${id}`;
      if (r.result === 'requested') return 'requested: the daemon stops it within a second';
      if (r.result === 'final') return `job ${id} had ended already: ${r.status}`;
      return `cancel of ${id}: ${r.result}`;
    },
    after,
  });
}

function retryDeadButton(queue, ids, after) {
  const all = ids === null;
  return actionButton(all ? 'Retry all' : 'Retry', {
    klass: all ? '' : 'small',
    title: all ? `Retry every dead job of ${queue}?` : 'Retry this dead job?',
    text: all
      ? `Every dead job of queue ${queue} goes back to pending, with fresh attempts.`
      : `Job ${ids[0]} goes back to pending in queue ${queue}, with fresh attempts.`,
    ok: all ? 'Retry all' : 'Retry',
    run: () => api('POST', `/api/queues/${enc(queue)}/dead/retry`, all ? { all: true } : { ids }),
    done: (r) => `retried ${plural(num(r.retried) || 0, 'job')}`,
    after,
  });
}

// Items of a list of up to 1,000 (QUEUE/ID, or 'QUEUE/ID: why'): the first `most` named, then
// how many more, so that the status line stays a line.
function namedRefs(list, most = 10, sep = ', ') {
  const more = list.length - most;
  return list.slice(0, most).join(sep) + (more > 0 ? ` +${more.toLocaleString()} more` : '');
}

// A failed step back from its queue's dead jobs with what failed because of it, down the graph
// (POST /api/jobs/ID/retry; docs/workflows.md, "Retrying a failed step"): each waits again for
// what it names. The status line names what went back, and what did not with why.
function retryFlowButton(queue, id, after) {
  return actionButton('Retry with what failed because of it', {
    klass: 'small retry-flow',
    title: 'Retry this job and what failed because of it?',
    text:
      `Job ${id} goes back to pending in queue ${queue}, with fresh attempts; each job that ` +
      'failed because of it (and so on down its flow) leaves its dead jobs and waits again for ' +
      'what it names: it runs once that has ended again.',
    ok: 'Retry them',
    run: () => api('POST', `/api/jobs/${enc(id)}/retry?queue=${enc(queue)}`),
    done: (r) => {
      const retried = Array.isArray(r.retried) ? r.retried.map(String) : [];
      const left = Array.isArray(r.left) ? r.left.map(String) : [];
      let said = `retried ${plural(retried.length, 'job')}: ${namedRefs(retried)}`;
      if (left.length)
        said += ` · not retried: ${plural(left.length, 'job')} (${namedRefs(left, 5, '; ')})`;
      return said;
    },
    after,
  });
}

function purgeDeadButton(queue, after) {
  return actionButton('Purge all', {
    klass: 'danger',
    title: `Purge every dead job of ${queue}?`,
    text: `Every dead job of queue ${queue} is dropped, its state with it. This cannot be undone.`,
    run: () => api('POST', `/api/queues/${enc(queue)}/dead/purge`, { all: true }),
    done: (r) => `purged ${plural(num(r.purged) || 0, 'job')}`,
    after,
  });
}

// Pause or resume, by the queue's state at the click (the button's label follows it).
function pauseButton(queue, isPaused, after) {
  const button = actionButton('', {
    klass: 'small',
    title: () => `${isPaused() ? 'Resume' : 'Pause'} queue ${queue}?`,
    text: () =>
      isPaused()
        ? `Every daemon fetches jobs of ${queue} again.`
        : `Every daemon stops fetching jobs of ${queue}; jobs running now finish. ` +
          'Jobs can still be submitted.',
    run: () => api('POST', `/api/queues/${enc(queue)}/${isPaused() ? 'resume' : 'pause'}`),
    done: (r) =>
      r.changed === false
        ? `${queue} was ${r.paused ? 'paused' : 'running'} already`
        : `${r.paused ? 'paused' : 'resumed'}: ${queue}`,
    after,
  });
  const label = () => {
    button.textContent = isPaused() ? 'Resume' : 'Pause';
    button.setAttribute('aria-label', `${isPaused() ? 'Resume' : 'Pause'} queue ${queue}`);
  };
  label();
  button.refresh = label;
  return button;
}

// ---- a search step after step, and bulk actions on what it matches -----------------------------

const BULK_MAX = 10000; // ids a bulk action collects at most
const BULK_BODY_BYTES = 60000; // a call's JSON body, under the API's 64 KiB
const CANCEL_CHUNK = 250; // ids per cancel call (the API takes 1000, and begins none past 3 s)
const DEAD_CHUNK = 2000; // ids per dead retry or purge call (the API takes 10000)
// Where a search finds a job (docs/api.md) that cancel or the dead actions apply to.
const CANCELLABLE = new Set(['pending', 'delayed', 'queued', 'active', 'retrying', 'waiting']);
const DEAD = new Set(['dead', 'failed']);

// A search of a queue (`query`: q=TEXT or status=S, escaped) going on from where its last step
// stopped. It keeps where each job it found is (BULK_MAX at most): what a bulk action acts on.
class Scan {
  constructor(queue, query) {
    this.queue = queue;
    this.query = query;
    this.next = null; // the last answer's `next`
    this.started = false;
    this.examined = 0;
    this.found = new Map(); // id -> where
  }
  get through() {
    return this.started && this.next === null;
  }
  // One step; the state moves only when its answer came (an aborted step changes nothing).
  async step(signal) {
    const from = this.next ? `&from=${enc(this.next)}` : '';
    const path = `/api/queues/${enc(this.queue)}/search?${this.query}${from}`;
    const answer = await api('GET', path, null, { signal });
    const found = Array.isArray(answer.found) ? answer.found : [];
    this.started = true;
    this.examined += num(answer.examined) || 0;
    this.next = typeof answer.next === 'string' && answer.next ? answer.next : null;
    for (const f of found) {
      const id = String(f.id ?? '');
      if (id && !this.found.has(id) && this.found.size < BULK_MAX)
        this.found.set(id, String(f.where ?? ''));
    }
    return found;
  }
  has(kinds) {
    for (const where of this.found.values()) if (kinds.has(where)) return true;
    return false;
  }
  ids(kinds) {
    return [...this.found].filter(([, where]) => kinds.has(where)).map(([id]) => id);
  }
}

// `ids` cut into the calls' bodies: `most` at most each, each body under BULK_BODY_BYTES.
function chunks(ids, most) {
  const out = [];
  let part = [],
    size = 10;
  for (const id of ids) {
    const more = id.length + 3;
    if (part.length && (part.length >= most || size + more > BULK_BODY_BYTES)) {
      out.push(part);
      part = [];
      size = 10;
    }
    part.push(id);
    size += more;
  }
  if (part.length) out.push(part);
  return out;
}

// "2 ended already (succeeded), 1 no such job in queue q"
function reasons(counts) {
  return [...counts].map(([why, n]) => `${n} ${why}`).join(', ');
}

const BULK = {
  cancel: {
    label: 'Cancel matching',
    kinds: CANCELLABLE,
    title: (n, q) => `Cancel ${plural(n, 'job')} of ${q}?`,
    text: (n, what) =>
      `${plural(n, 'job')} ${what}, waiting or running, are cancelled: taken out if they ` +
      'wait, stopped if they run.',
    ok: 'Cancel them',
    none: 'no matching job waits or runs',
    klass: 'danger',
  },
  retry: {
    label: 'Retry matching dead',
    kinds: DEAD,
    title: (n, q) => `Retry ${plural(n, 'dead job')} of ${q}?`,
    text: (n, what) =>
      `${plural(n, 'job')} ${what} go back to pending, with fresh attempts (those still dead).`,
    ok: 'Retry them',
    none: 'no matching dead job',
    klass: '',
  },
  purge: {
    label: 'Purge matching dead',
    kinds: DEAD,
    title: (n, q) => `Purge ${plural(n, 'dead job')} of ${q}?`,
    text: (n, what) =>
      `${plural(n, 'job')} ${what} are dropped with their state (those still dead). ` +
      'This cannot be undone.',
    ok: 'Purge them',
    none: 'no matching dead job',
    klass: 'danger',
  },
};

// Sends the ids in chunks; the status line's words: how many were done, how many not and why.
async function bulkSend(queue, kind, ids) {
  const base = `/api/queues/${enc(queue)}`;
  const why = new Map();
  const add = (reason, n) => why.set(reason, (why.get(reason) || 0) + n);
  let done = 0,
    cancelled = 0,
    requested = 0;
  const parts = chunks(ids, kind === 'cancel' ? CANCEL_CHUNK : DEAD_CHUNK);
  for (const part of parts) {
    if (kind === 'cancel') {
      const r = await api('POST', `${base}/cancel`, { ids: part });
      cancelled += num(r.cancelled) || 0;
      requested += num(r.requested) || 0;
      done += num(r.done) || 0;
      for (const n of Array.isArray(r.not) ? r.not : []) add(String(n.why), 1);
      continue;
    }
    try {
      const r = await api('POST', `${base}/dead/${kind}`, { ids: part });
      done += num(kind === 'retry' ? r.retried : r.purged) || 0;
      if (num(r.not_done)) add(String(r.why || 'not done'), num(r.not_done));
    } catch (e) {
      // None of this part was dead: a 404.
      if (e.status !== 404) throw e;
      add(`not dead in queue ${queue} (retried or purged already, or never dead)`, part.length);
    }
  }
  const verb = { cancel: 'cancelled', retry: 'retried', purge: 'purged' }[kind];
  const not = [...why.values()].reduce((a, b) => a + b, 0);
  let said = `${verb} ${done} of ${plural(ids.length, 'job')}`;
  if (kind === 'cancel' && done)
    said += ` (${cancelled} taken out while waiting, ${requested} stopped while running)`;
  if (not) said += `; ${not} not: ${reasons(why)}`;
  return said;
}

// The bulk action buttons of a search (`scan()`: its Scan now; `what`: how the dialog names the
// matching jobs). A click stops the search's own loop (`pause`), goes on with the search to its
// end (BULK_MAX ids at most, the button then stops it), confirms with the count, and acts in
// chunks; `after` then shows the queue anew. Hidden in read-only mode (.action).
function bulkBar(queue, kinds, { scan, what, pause, after, live }) {
  const bar = el('div', { class: 'toolbar bulk', role: 'group', 'aria-label': 'Act on matches' });
  const buttons = {};
  let busy = null; // the AbortController of a collection under way
  for (const kind of kinds) {
    const b = BULK[kind];
    const button = el(
      'button',
      { type: 'button', class: `action small ${b.klass}`, 'data-bulk': kind },
      `${b.label}…`,
    );
    buttons[kind] = button;
    button.addEventListener('click', async () => {
      if (readOnly()) return;
      if (busy) return busy.abort(); // the button says Stop while it collects
      const s = scan();
      if (!s) return;
      if (pause) pause();
      clearError();
      busy = new AbortController();
      const signal = busy.signal;
      Object.values(buttons).forEach((x) => (x.disabled = x !== button));
      button.textContent = 'Stop';
      try {
        while (!s.through && s.found.size < BULK_MAX) {
          setStatus(
            `finding every matching job: ${s.examined.toLocaleString()} examined, ` +
              `${s.ids(b.kinds).length.toLocaleString()} to act on…`,
          );
          await s.step(signal);
        }
      } catch (e) {
        if (!live()) return;
        if (e.status === -1) setStatus('stopped: nothing was done');
        else reportError(e);
        return;
      } finally {
        busy = null;
        button.textContent = `${b.label}…`;
        Object.values(buttons).forEach((x) => (x.disabled = readOnly()));
      }
      const ids = s.ids(b.kinds);
      if (!ids.length) return setStatus(b.none);
      const capped = !s.through ? ` (the first ${BULK_MAX.toLocaleString()} found)` : '';
      const text = b.text(ids.length, what() + capped);
      if (!live() || !(await confirmDialog(b.title(ids.length, queue), text, b.ok))) {
        if (live()) setStatus('');
        return;
      }
      Object.values(buttons).forEach((x) => (x.disabled = true));
      try {
        const said = await bulkSend(queue, kind, ids);
        setStatus(said);
        if (after && live()) after();
      } catch (e) {
        reportError(e);
      } finally {
        Object.values(buttons).forEach((x) => (x.disabled = readOnly()));
      }
    });
    bar.append(button);
  }
  // Offered when what it acts on was found, or may be found further on.
  const update = () => {
    const s = scan();
    for (const kind of kinds)
      buttons[kind].hidden = !s || !s.started || (s.through && !s.has(BULK[kind].kinds));
    bar.hidden = Object.values(buttons).every((x) => x.hidden);
  };
  update();
  return { bar, update, stop: () => busy && busy.abort() };
}

// ---- shared pieces of the views --------------------------------------------------------------

function section(title, ...content) {
  return el('section', { class: 'card' }, el('h2', { text: title }), ...content);
}

function tableBox(table) {
  return el(
    'div',
    {
      class: 'table-wrap',
      tabindex: 0,
      role: 'region',
      'aria-label': table.getAttribute('aria-label'),
    },
    table,
  );
}

function headRow(names) {
  return el(
    'thead',
    {},
    el(
      'tr',
      {},
      names.map((n) => el('th', { scope: 'col', class: n.cls || '' }, n.label || n)),
    ),
  );
}

function emptyRow(tbody, columns, text) {
  tbody.replaceChildren(el('tr', { class: 'empty' }, el('td', { colspan: columns, text })));
}

function statusBadge(status) {
  return el(
    'span',
    { class: `badge status-${String(status).replace(/[^a-z]/g, '')}` },
    status || '–',
  );
}

// The log of job ends, newest first (overview and find pages); drawn at most 4 times a second
// however many jobs end.
function recentList() {
  const list = el('ol', { class: 'recent' });
  let pending = 0;
  const later = () => {
    if (!pending) pending = setTimeout(update, 250);
  };
  const update = () => {
    pending = 0;
    if (!S.recent.length) {
      list.replaceChildren(
        el('li', { class: 'muted', text: 'No job has ended since this page opened.' }),
      );
      return;
    }
    list.replaceChildren(
      ...S.recent
        .slice(0, RECENT_SHOWN)
        .map((j) =>
          el(
            'li',
            {},
            el('time', { class: 'muted', text: new Date(j.at).toLocaleTimeString() }),
            statusBadge(j.status),
            el('a', { href: jobHref(j.queue, j.id), class: 'mono' }, j.id),
            el('span', { class: 'muted', text: j.queue }),
          ),
        ),
    );
  };
  update();
  return { list, update: later, stop: () => clearTimeout(pending) };
}

// ---- view: overview --------------------------------------------------------------------------

const QUEUE_COLUMNS = [
  { key: 'name', label: 'Queue' },
  { key: 'pending', label: 'Pending', cls: 'num', state: 'pending' },
  { key: 'delayed', label: 'Delayed', cls: 'num', state: 'delayed' },
  { key: 'running', label: 'Running', cls: 'num', state: 'running' },
  { key: 'buffered', label: 'Buffered', cls: 'num', state: 'buffered' },
  { key: 'dead', label: 'Dead', cls: 'num', state: 'dead' },
  { key: 'paused', label: 'State' },
  { key: 'rate', label: 'Limits', cls: 'num' },
  { key: 'succeeded_per_min', label: 'OK/min', cls: 'num' },
  { key: 'failed_per_min', label: 'Failed/min', cls: 'num' },
  { key: 'p50', label: 'p50', cls: 'num' },
  { key: 'p99', label: 'p99', cls: 'num' },
  { key: 'action', label: 'Action', cls: 'action' },
];

// The queues table: one row per queue, kept across updates (a focused button stays focused).
function queueTable() {
  const tbody = el('tbody');
  const table = el(
    'table',
    { class: 'data', id: 'queues', 'aria-label': 'Queues' },
    headRow(QUEUE_COLUMNS),
    tbody,
  );
  const rows = new Map();
  const update = (list) => {
    if (!list) return emptyRow(tbody, QUEUE_COLUMNS.length, 'Loading…');
    tbody.querySelectorAll('tr.empty').forEach((tr) => tr.remove());
    const seen = new Set();
    list.forEach((q, i) => {
      const name = String(q.name);
      seen.add(name);
      if (!rows.has(name)) rows.set(name, queueRow(name));
      const row = rows.get(name);
      row.fill(q);
      if (tbody.children[i] !== row.tr) tbody.insertBefore(row.tr, tbody.children[i] || null);
    });
    for (const [name, row] of rows) {
      if (!seen.has(name)) {
        row.tr.remove();
        rows.delete(name);
      }
    }
    if (!list.length) emptyRow(tbody, QUEUE_COLUMNS.length, 'No queues yet.');
  };
  update(S.queues);
  return { box: tableBox(table), update };
}

function queueRow(name) {
  let current = {};
  const cells = {};
  const tr = el('tr', { 'data-queue': name });
  const pause = pauseButton(
    name,
    () => !!current.paused,
    (r) => fill({ ...current, paused: !!r.paused }),
  );
  for (const col of QUEUE_COLUMNS) {
    const td = el('td', { 'data-col': col.key, class: col.cls || '' });
    if (col.key === 'name') td.append(el('a', { href: queueHref(name), class: 'mono' }, name));
    else if (col.state)
      td.append((cells[col.key] = el('a', { href: queueHref(name, col.state), class: 'count' })));
    else if (col.key === 'action') td.append(pause);
    if (!cells[col.key]) cells[col.key] = td;
    tr.append(td);
  }
  function fill(q) {
    current = q;
    for (const col of QUEUE_COLUMNS) {
      const c = cells[col.key];
      if (col.state) c.textContent = count(q[col.key]);
      else if (col.key === 'paused')
        c.replaceChildren(
          q.paused ? statusBadge('paused') : el('span', { class: 'muted', text: 'active' }),
        );
      else if (col.key.endsWith('_per_min')) c.textContent = rate(q[col.key]);
      else if (col.key === 'rate') {
        c.textContent = limits(q);
        // Every held-back group on hover, when the cell names only the first.
        const all = heldBack(q, true);
        if (all !== heldBack(q)) c.title = all;
        else c.removeAttribute('title');
      }
      else if (col.key === 'p50' || col.key === 'p99')
        c.textContent = typeof q[col.key] === 'string' && q[col.key] ? q[col.key] : '–';
    }
    for (const col of QUEUE_COLUMNS)
      if (col.state) cells[col.key].classList.toggle('zero', num(q[col.key]) === 0);
    cells.dead.classList.toggle('alert', num(q.dead) > 0);
    pause.refresh();
  }
  return { tr, fill };
}

const WORKER_COLUMNS = [
  'Host',
  'Worker',
  'Version',
  { label: 'Uptime', cls: 'num' },
  { label: 'Running', cls: 'num' },
  { label: 'Buffered', cls: 'num' },
  'Queues',
  { label: 'Heartbeat', cls: 'num' },
];

function workersTable() {
  const tbody = el('tbody');
  const table = el(
    'table',
    { class: 'data', id: 'workers', 'aria-label': 'Daemons' },
    headRow(WORKER_COLUMNS),
    tbody,
  );
  emptyRow(tbody, WORKER_COLUMNS.length, 'Loading…');
  const update = (list) => {
    if (!Array.isArray(list) || !list.length)
      return emptyRow(tbody, WORKER_COLUMNS.length, 'No live daemon.');
    tbody.replaceChildren(
      ...list.map((w) =>
        el(
          'tr',
          {},
          el('td', { text: w.host ?? '–' }),
          el('td', { class: 'mono', text: w.worker ?? '–' }),
          el('td', { class: 'mono', text: w.version ?? '–' }),
          el('td', { class: 'num', text: duration(w.uptime_s) }),
          el('td', { class: 'num', text: count(w.running) }),
          el('td', { class: 'num', text: count(w.buffered) }),
          el('td', { text: Array.isArray(w.queues) ? w.queues.join(', ') : '–' }),
          el('td', {
            class: 'num',
            text: w.last_heartbeat_s === undefined ? '–' : `${rate(w.last_heartbeat_s)} s ago`,
          }),
        ),
      ),
    );
  };
  return { box: tableBox(table), update };
}

// ---- Redis: its memory, and what each queue's keys take ----------------------------------------

function bytes(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

const REDIS_COLUMNS = [
  'Queue',
  { label: 'Pending', cls: 'num' },
  { label: 'Delayed', cls: 'num' },
  { label: 'Dead', cls: 'num' },
  { label: 'History', cls: 'num' },
];

function redisCard() {
  const summary = el('p', { class: 'muted', id: 'redis-summary', text: 'Loading…' });
  const tbody = el('tbody');
  const table = el(
    'table',
    { class: 'data', id: 'redis', 'aria-label': 'What the queues take in Redis' },
    headRow(REDIS_COLUMNS),
    tbody,
  );
  const update = (r) => {
    const limit = r.maxmemory ? ` of ${bytes(r.maxmemory)}` : ' (no maxmemory)';
    summary.textContent =
      `Redis ${r.version ?? '?'} (${r.mode ?? '?'}): ${bytes(r.used_memory)} used${limit}, ` +
      `peak ${bytes(r.used_memory_peak)}, eviction ${r.maxmemory_policy ?? '?'}`;
    const rows = Array.isArray(r.queues) ? r.queues : [];
    if (!rows.length) return emptyRow(tbody, REDIS_COLUMNS.length, 'No queue.');
    tbody.replaceChildren(
      ...rows.map((q) =>
        el(
          'tr',
          {},
          el(
            'td',
            {},
            el('a', {
              href: `#/queue/${encodeURIComponent(q.name)}/pending`,
              class: 'mono',
              text: q.name,
            }),
          ),
          ...['pending', 'delayed', 'dead', 'history'].map((k) =>
            el('td', { class: 'num', text: bytes(q.bytes?.[k]) }),
          ),
        ),
      ),
    );
  };
  return { box: el('div', {}, summary, tableBox(table)), update };
}

function viewOverview(main, route, seq) {
  const queues = queueTable();
  const workers = workersTable();
  const redis = redisCard();
  const recent = recentList();
  main.append(
    el('div', { class: 'page-head' }, el('h1', { text: 'Overview' })),
    section('Queues', queues.box),
    section('Daemons', workers.box),
    section('Redis', redis.box),
    section('Recent job ends', recent.list),
  );
  const loadWorkers = async () => {
    try {
      const [list, r] = await Promise.all([api('GET', '/api/workers'), api('GET', '/api/redis')]);
      if (alive(seq)) {
        workers.update(list);
        redis.update(r);
      }
    } catch (e) {
      if (alive(seq)) reportError(e);
    }
  };
  loadWorkers();
  const timer = setInterval(loadWorkers, WORKERS_EVERY_MS);
  const stop = () => {
    clearInterval(timer);
    recent.stop();
  };
  return { onQueues: queues.update, onJob: recent.update, stop };
}

// ---- view: schedules -------------------------------------------------------------------------

// GET /api/schedules is read this often while the view is open (schedules have no event); the end
// of a tick's job (its id NAME:TIME, docs/schedules.md) reads it sooner, at most once per
// SCHEDULES_SOON_MS: by its id's form, not by the names shown, so that a schedule added since the
// last read shows at its first tick.
const SCHEDULES_EVERY_MS = 5000;
const SCHEDULES_SOON_MS = 1000;
const TICK_ID_RE = /^[A-Za-z0-9_.-]{1,64}:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/;

const SCHEDULE_COLUMNS = [
  { key: 'name', label: 'Schedule' },
  { key: 'queue', label: 'Queue' },
  { key: 'cron', label: 'Cron' },
  { key: 'timezone', label: 'Zone' },
  { key: 'origin', label: 'From' },
  { key: 'job', label: 'Job' },
  { key: 'last', label: 'Last run', cls: 'when' },
  { key: 'outcome', label: 'Outcome' },
  { key: 'next', label: 'Next run', cls: 'when' },
  { key: 'paused', label: 'State' },
  { key: 'action', label: 'Action', cls: 'action' },
];

// A tick's time in a schedules cell: the local date and time, short (the whole in its title),
// and below it how long ago or in how long; "never" for none.
const TICK_FMT = new Intl.DateTimeFormat(undefined, {
  month: 'short',
  day: 'numeric',
  hour: '2-digit',
  minute: '2-digit',
  second: '2-digit',
});
function tickTime(ms, none) {
  const n = num(ms);
  if (n === null || n <= 0) return [el('span', { class: 'muted', text: none })];
  const delta = (Date.now() - n) / 1000;
  const span = duration(Math.abs(delta));
  const at = new Date(n);
  return [
    el('time', { datetime: at.toISOString(), title: DATE_FMT.format(at) }, TICK_FMT.format(at)),
    el('span', { class: 'muted rel', text: delta >= 0 ? `${span} ago` : `in ${span}` }),
  ];
}

// A schedule's row, kept across reads (a focused button stays focused); `reload` reads the list
// again after an action.
function scheduleRow(queue, name, reload) {
  let current = {};
  const cells = {};
  const tr = el('tr', { 'data-schedule': name, 'data-queue': queue });
  const isPaused = () => !!current.paused;
  const pause = actionButton('', {
    klass: 'small',
    title: () => `${isPaused() ? 'Resume' : 'Pause'} schedule ${name}?`,
    text: () =>
      isPaused()
        ? `Schedule ${name} of queue ${queue} enqueues a job at its next tick again.`
        : `The ticks of schedule ${name} of queue ${queue} pass, enqueueing nothing, until it ` +
          'is resumed. Jobs it enqueued already still run.',
    run: () => {
      const op = isPaused() ? 'resume' : 'pause';
      return api('POST', `/api/schedules/${enc(name)}/${op}?queue=${enc(queue)}`);
    },
    done: (r) => `${r.paused ? 'paused' : 'resumed'}: schedule ${name} of ${r.queue}`,
    after: (r) => {
      fill({ ...current, paused: !!r.paused }); // until the next read says it
      reload();
    },
  });
  const label = () => {
    pause.textContent = isPaused() ? 'Resume' : 'Pause';
    pause.setAttribute('aria-label', `${isPaused() ? 'Resume' : 'Pause'} schedule ${name}`);
  };
  for (const col of SCHEDULE_COLUMNS) {
    const td = el('td', { 'data-col': col.key, class: col.cls || '' });
    if (col.key === 'name') td.append(el('span', { class: 'mono', text: name }));
    else if (col.key === 'queue')
      td.append(el('a', { href: queueHref(queue), class: 'mono' }, queue));
    else if (col.key === 'action') td.append(pause);
    cells[col.key] = td;
    tr.append(td);
  }
  function fill(s) {
    current = s;
    const problem = typeof s.problem === 'string' && s.problem;
    cells.cron.replaceChildren(
      el('span', { class: 'mono', text: problem ? '–' : (s.cron ?? '–') }),
    );
    cells.timezone.textContent = problem ? '–' : s.timezone ?? '–';
    cells.origin.textContent = s.origin ?? '–';
    // The job each tick enqueues, on one line, as text (a payload holding markup shows as such).
    cells.job.replaceChildren(
      s.job === undefined || s.job === null
        ? '–'
        : el('span', { class: 'mono payload', title: brief(s.job, 2000), text: brief(s.job, 80) }),
    );
    cells.last.replaceChildren(...tickTime(s.last, 'never'));
    // The last tick's job: its status, linked to its page; "gone" when its state has expired.
    const lastId = typeof s.last_id === 'string' ? s.last_id : '';
    cells.outcome.replaceChildren(
      lastId
        ? el(
            'a',
            {
              href: jobHref(queue, lastId),
              class: 'outcome',
              title: lastId,
              'aria-label': `job ${lastId}: ${s.last_status || 'gone'}`,
            },
            statusBadge(s.last_status || 'gone'),
          )
        : el('span', { class: 'muted', text: '–' }),
    );
    if (problem) cells.next.textContent = `unreadable: ${problem}`;
    else cells.next.replaceChildren(...tickTime(s.next, '–'));
    cells.paused.replaceChildren(
      s.paused ? statusBadge('paused') : el('span', { class: 'muted', text: 'active' }),
    );
    label();
  }
  return { tr, fill };
}

function scheduleTable(reload) {
  const tbody = el('tbody');
  const table = el(
    'table',
    { class: 'data', id: 'schedules', 'aria-label': 'Schedules' },
    headRow(SCHEDULE_COLUMNS),
    tbody,
  );
  emptyRow(tbody, SCHEDULE_COLUMNS.length, 'Loading…');
  const rows = new Map();
  const update = (list) => {
    tbody.querySelectorAll('tr.empty').forEach((tr) => tr.remove());
    const seen = new Set();
    list.forEach((s, i) => {
      const queue = String(s.queue ?? ''),
        name = String(s.name ?? '');
      const key = `${queue}\n${name}`;
      seen.add(key);
      if (!rows.has(key)) rows.set(key, scheduleRow(queue, name, reload));
      const row = rows.get(key);
      row.fill(s);
      if (tbody.children[i] !== row.tr) tbody.insertBefore(row.tr, tbody.children[i] || null);
    });
    for (const [key, row] of rows) {
      if (!seen.has(key)) {
        row.tr.remove();
        rows.delete(key);
      }
    }
    if (!list.length)
      emptyRow(
        tbody,
        SCHEDULE_COLUMNS.length,
        'No schedules: add one under schedules: in the config, or with jobqctl schedule add.',
      );
  };
  return { box: tableBox(table), update };
}

function viewSchedules(main, route, seq) {
  let soon = 0;
  const load = async () => {
    clearTimeout(soon);
    soon = 0;
    try {
      const list = await api('GET', '/api/schedules');
      if (!alive(seq) || !Array.isArray(list)) return;
      table.update(list);
      updated.textContent = `Read at ${new Date().toLocaleTimeString()}; times are local.`;
    } catch (e) {
      if (alive(seq)) reportError(e);
    }
  };
  const table = scheduleTable(load);
  const updated = el('p', { class: 'muted', id: 'schedules-read' });
  main.append(
    el('div', { class: 'page-head' }, el('h1', { text: 'Schedules' })),
    section('Schedules', updated, table.box),
  );
  load();
  const timer = setInterval(load, SCHEDULES_EVERY_MS);
  const onJob = (j) => {
    if (!soon && TICK_ID_RE.test(String(j.id || ''))) soon = setTimeout(load, SCHEDULES_SOON_MS);
  };
  return {
    onJob,
    refresh: load,
    stop: () => {
      clearInterval(timer);
      clearTimeout(soon);
    },
  };
}

// ---- view: a queue's jobs in one state -------------------------------------------------------

function queueOf(name) {
  return (S.queues || []).find((q) => String(q.name) === name) || null;
}

// The states a queue's jobs are in now (with their counts), then the statuses of the retained
// job states (no count: they are found by a scan).
function stateTabs(queue, active) {
  const links = {};
  const nav = el(
    'nav',
    { class: 'tabs', 'aria-label': 'Job states' },
    TABS.map((s) => {
      const now = STATES.includes(s);
      if (now) links[s] = el('span', { class: 'tab-count' });
      return el(
        'a',
        {
          href: queueHref(queue, s),
          'aria-current': s === active ? 'page' : null,
          'data-state': s,
          class: s === STATUSES[0] ? 'tab-retained tab-first' : now ? null : 'tab-retained',
          title: now ? null : `Jobs whose state says ${s}, as long as it is kept`,
        },
        s,
        now ? ' ' : null,
        now ? links[s] : null,
      );
    }),
  );
  const update = (q) => {
    for (const s of STATES) links[s].textContent = q ? count(q[s]) : '';
  };
  update(queueOf(queue));
  return { nav, update };
}

function jobColumns(state) {
  const cols = [{ label: 'Job' }, { label: state === 'dead' ? 'Error' : 'Payload' }];
  if (state === 'running' || state === 'buffered') cols.push({ label: 'Worker' });
  if (state === 'delayed') cols.push({ label: 'Runs at' });
  if (state === 'dead') cols.push({ label: 'Died at' }, { label: 'Action', cls: 'action' });
  return cols;
}

function jobRow(queue, state, job, reload) {
  const id = typeof job.id === 'string' ? job.id : null;
  const tr = el('tr', { 'data-id': id || '' });
  tr.append(
    el(
      'td',
      { class: 'mono' },
      id
        ? el('a', { href: jobHref(queue, id) }, id)
        : el('span', { class: 'muted', text: '(no id yet)' }),
    ),
  );
  const body = state === 'dead' ? (job.error ?? job.payload) : job.payload;
  tr.append(el('td', {}, el('code', { class: 'payload', title: brief(body, 2000) }, brief(body))));
  if (state === 'running' || state === 'buffered')
    tr.append(el('td', { class: 'mono', text: job.worker || '–' }));
  if (state === 'delayed') tr.append(el('td', { text: localTime(job.run_at) }));
  if (state === 'dead') {
    tr.append(el('td', { text: localTime(job.died_at) }));
    tr.append(el('td', { class: 'action' }, id ? retryDeadButton(queue, [id], reload) : ''));
  }
  return tr;
}

// ---- a queue's search by content -------------------------------------------------------------

const SEARCH_MAX = 50; // results shown; the loop stops there
const SEARCH_MAX_BYTES = 200;

// ASCII letters to lower case, nothing else (the length stays): the API's way of matching.
const asciiLower = (s) => s.replace(/[A-Z]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 32));

// The excerpt as text nodes, each match of `needle` (ASCII letters in any case) in a <mark>.
function marked(excerpt, needle) {
  const text = String(excerpt ?? '');
  const hay = asciiLower(text);
  const low = asciiLower(needle);
  const out = [];
  let at = 0;
  for (let hit = hay.indexOf(low); low && hit >= 0; hit = hay.indexOf(low, at)) {
    if (hit > at) out.push(document.createTextNode(text.slice(at, hit)));
    out.push(el('mark', {}, text.slice(hit, hit + low.length)));
    at = hit + low.length;
  }
  if (at < text.length) out.push(document.createTextNode(text.slice(at)));
  return out;
}

const searchHref = (q, text) => `#/search/${enc(q)}/${enc(text)}`;

// The search box of a queue's page: GET .../search step after step (each `from` the last
// answer's `next`) until the queue is searched through or SEARCH_MAX are shown. A new search,
// Stop or leaving the view ends the loop: its requests are aborted and its answers dropped.
function searchCard(queue, initial, seq) {
  const input = el('input', {
    id: 'content-q',
    type: 'search',
    name: 'q',
    value: initial || '',
    spellcheck: 'false',
    maxlength: SEARCH_MAX_BYTES,
    placeholder: 'Find jobs containing…',
    autocomplete: 'off',
  });
  const stopButton = el('button', { type: 'button', id: 'content-stop', hidden: true }, 'Stop');
  const progress = el('p', { class: 'muted search-progress', id: 'content-progress' });
  const tbody = el('tbody');
  const table = el(
    'table',
    { class: 'data', id: 'content-results', 'aria-label': `Jobs of ${queue} found by content` },
    headRow(['Job', 'Where', 'Field', 'Excerpt']),
    tbody,
  );
  const box = tableBox(table);
  box.hidden = true;
  const form = el(
    'form',
    { class: 'find-form', role: 'search' },
    el('label', { for: 'content-q', text: 'Text in a job (letters in any case)' }),
    el(
      'div',
      { class: 'inline' },
      input,
      el('button', { type: 'submit', class: 'primary' }, 'Search'),
      stopButton,
    ),
  );
  let gen = 0,
    ctl = null,
    scan = null, // the search shown, and what it found
    text = '';
  const stop = () => {
    gen++;
    if (ctl) ctl.abort();
    ctl = null;
    stopButton.hidden = true;
  };
  const bulk = bulkBar(queue, ['cancel', 'retry', 'purge'], {
    scan: () => scan,
    what: () => `of queue ${queue} matching "${text}"`,
    pause: () => {
      if (!stopButton.hidden) stopButton.onclick();
    },
    after: () => run(text),
    live: () => alive(seq),
  });
  const run = async (wanted) => {
    stop();
    bulk.stop(); // a bulk action collecting for the search before
    const mine = gen;
    ctl = new AbortController();
    const signal = ctl.signal;
    const live = () => mine === gen && alive(seq);
    text = wanted;
    scan = new Scan(queue, `q=${enc(wanted)}`);
    const mineScan = scan;
    let shown = 0,
      ended = 'through';
    tbody.replaceChildren();
    box.hidden = true;
    stopButton.hidden = false;
    bulk.update();
    const say = (more) =>
      `searched ${mineScan.examined.toLocaleString()} jobs, ${shown.toLocaleString()} found${more}`;
    progress.textContent = say('…');
    stopButton.onclick = () => {
      stop();
      progress.textContent = `Stopped: ${say('.')}`;
    };
    try {
      do {
        const found = await mineScan.step(signal);
        if (!live()) return;
        for (const f of found) {
          if (shown >= SEARCH_MAX) break;
          shown++;
          const id = String(f.id ?? '');
          tbody.append(
            el(
              'tr',
              { 'data-id': id },
              el('td', {}, el('a', { href: jobHref(queue, id), class: 'mono' }, id)),
              el('td', {}, statusBadge(String(f.where ?? ''))),
              el('td', { text: f.field ?? '–' }),
              el('td', { class: 'excerpt' }, marked(f.excerpt, wanted)),
            ),
          );
          box.hidden = false;
        }
        bulk.update();
        if (!mineScan.through && shown >= SEARCH_MAX) ended = 'full';
        progress.textContent = say('…');
      } while (!mineScan.through && shown < SEARCH_MAX);
      const all = `Searched all ${mineScan.examined.toLocaleString()} jobs: `;
      progress.textContent =
        ended === 'full'
          ? `The first ${SEARCH_MAX} found (${mineScan.examined.toLocaleString()} jobs ` +
            'searched); a longer text finds fewer.'
          : all + (shown ? `${plural(shown, 'match')}.` : 'nothing found.');
    } catch (e) {
      if (!live() || e.status === -1) return;
      progress.textContent = `The search stopped: ${say('.')}`;
      reportError(e);
    } finally {
      if (mine === gen) stopButton.hidden = true;
      bulk.update();
    }
  };
  const start = (raw) => {
    const text = raw.trim();
    const bytes = new TextEncoder().encode(text).length;
    if (!bytes || bytes > SEARCH_MAX_BYTES) {
      showError(`search for 1-${SEARCH_MAX_BYTES} bytes of text, not ${bytes}`);
      return;
    }
    clearError();
    // The address names the search (a link to it, Back); no new view for it.
    if (decode(location.hash) !== decode(searchHref(queue, text)))
      history.replaceState(null, '', searchHref(queue, text));
    run(text);
  };
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    start(input.value);
  });
  const card = section('Find jobs by content', form, progress, bulk.bar, box);
  card.id = 'content-search';
  if (initial) start(initial);
  return {
    card,
    stop: () => {
      stop();
      bulk.stop();
    },
  };
}

// ---- a queue's chart of attempts over time ---------------------------------------------------

const CHART_EVERY_MS = 60000;
const RANGES = { hour: 'Hour', day: 'Day', week: 'Week' };
const SVG_NS = 'http://www.w3.org/2000/svg';
const CHART = { h: 180, left: 44, right: 8, top: 10, bottom: 24 }; // px; the width is the box's

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  for (const child of children) node.append(child);
  return node;
}

// A scale's top: 1, 2 or 5 times a power of ten, at least `max`.
function niceTop(max) {
  if (max <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  return [1, 2, 5, 10].map((f) => f * p).find((v) => v >= max);
}

function msText(ms) {
  if (ms === null) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return ms < 60000 ? `${(ms / 1000).toFixed(1)} s` : duration(ms / 1000);
}

// Succeeded and failed per point as stacked bars, `w` px wide, a y axis (0, its middle when a
// whole number, its top) and times below.
function drawChart(answer, range, w) {
  const points = Array.isArray(answer.points) ? answer.points : [];
  const { h, left, right, top, bottom } = CHART;
  const plotW = w - left - right,
    plotH = h - top - bottom;
  const stepMs = (num(answer.step_s) || 60) * 1000;
  const total = (p) => (num(p.succeeded) || 0) + (num(p.failed) || 0);
  const max = niceTop(Math.max(0, ...points.map(total)));
  const y = (v) => top + plotH - (v / max) * plotH;
  const slot = plotW / Math.max(1, points.length);
  const bar = Math.max(1, slot * 0.7);
  const chart = svg('svg', {
    class: 'chart',
    viewBox: `0 0 ${w} ${h}`,
    role: 'img',
    'aria-label': `Succeeded and failed attempts per ${duration(stepMs / 1000)}, the last ${range}`,
  });
  const axis = svg('g', { class: 'chart-axis' });
  for (const v of Number.isInteger(max / 2) ? [0, max / 2, max] : [0, max]) {
    axis.append(
      svg('line', { class: 'chart-grid', x1: left, x2: w - right, y1: y(v), y2: y(v) }),
      svg('text', { x: left - 6, y: y(v) + 4, 'text-anchor': 'end' }, rate(v)),
    );
  }
  const fmt =
    range === 'week'
      ? new Intl.DateTimeFormat(undefined, { weekday: 'short', hour: '2-digit', minute: '2-digit' })
      : new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
  const last = points.length - 1;
  const at = w < 600 ? [0, 0.5, 1] : [0, 0.25, 0.5, 0.75, 1]; // labels some 120 px apart at least
  const ticks = last < 0 ? [] : at.map((f) => Math.round(f * last));
  for (const i of new Set(ticks)) {
    const x = left + slot * (i + 0.5);
    // The first and last labels stay inside the chart.
    const anchor = i === 0 ? 'start' : i === last ? 'end' : 'middle';
    const tx = anchor === 'start' ? left : anchor === 'end' ? w - right : x;
    axis.append(
      svg('line', { class: 'chart-tick', x1: x, x2: x, y1: top + plotH, y2: top + plotH + 4 }),
      svg(
        'text',
        { x: tx, y: h - 6, 'text-anchor': anchor },
        fmt.format(new Date(num(points[i].t) || 0)),
      ),
    );
  }
  const bars = svg('g', { class: 'chart-bars' });
  points.forEach((p, i) => {
    const ok = num(p.succeeded) || 0,
      bad = num(p.failed) || 0;
    const x = left + slot * i + (slot - bar) / 2;
    const avg = num(p.avg_ms);
    const g = svg(
      'g',
      { class: 'chart-point', 'data-succeeded': ok, 'data-failed': bad, 'data-t': num(p.t) || 0 },
      svg(
        'title',
        {},
        `${DATE_FMT.format(new Date(num(p.t) || 0))}: ${ok} succeeded, ${bad} failed` +
          (num(p.retried) ? `, ${p.retried} retried` : '') +
          (avg === null ? '' : `, run time ${msText(avg)} on average`),
      ),
      svg('rect', { class: 'chart-hit', x: left + slot * i, y: top, width: slot, height: plotH }),
    );
    if (ok)
      g.append(svg('rect', { class: 'chart-ok', x, y: y(ok), width: bar, height: y(0) - y(ok) }));
    if (bad) {
      const height = y(ok) - y(ok + bad);
      g.append(svg('rect', { class: 'chart-fail', x, y: y(ok + bad), width: bar, height }));
    }
    bars.append(g);
  });
  axis.append(svg('line', { class: 'chart-base', x1: left, x2: w - right, y1: y(0), y2: y(0) }));
  chart.append(axis, bars);
  return chart;
}

// The totals of the range and the run time averaged over every attempt that had one.
function chartSummary(points) {
  let ok = 0,
    bad = 0,
    runs = 0,
    sum = 0;
  for (const p of points) {
    ok += num(p.succeeded) || 0;
    bad += num(p.failed) || 0;
    const avg = num(p.avg_ms);
    const n = (num(p.succeeded) || 0) + (num(p.failed) || 0) + (num(p.retried) || 0);
    if (avg !== null && n) {
      runs += n;
      sum += avg * n;
    }
  }
  return el(
    'p',
    { class: 'chart-legend', id: 'chart-summary' },
    el('span', { class: 'key key-ok' }),
    `${ok.toLocaleString()} succeeded`,
    el('span', { class: 'key key-fail' }),
    `${bad.toLocaleString()} failed`,
    el('span', { class: 'chart-avg' }, `average run time ${runs ? msText(sum / runs) : '–'}`),
  );
}

function chartCard(queue, seq) {
  let range = 'hour',
    timer = 0,
    gen = 0;
  const body = el(
    'div',
    { class: 'chart-box', id: 'chart' },
    el('p', { class: 'muted', text: 'Loading…' }),
  );
  const buttons = Object.entries(RANGES).map(([r, label]) =>
    el(
      'button',
      {
        type: 'button',
        class: 'small',
        'data-range': r,
        'aria-pressed': String(r === range),
        onclick: () => pick(r),
      },
      label,
    ),
  );
  const load = async () => {
    clearTimeout(timer);
    const mine = ++gen;
    try {
      const answer = await api('GET', `/api/queues/${enc(queue)}/history?range=${range}`);
      if (mine !== gen || !alive(seq)) return;
      shown = answer;
      draw();
    } catch (e) {
      if (mine !== gen || !alive(seq)) return;
      body.replaceChildren(el('p', { class: 'muted', text: 'Could not load the history.' }));
      reportError(e);
    }
    if (mine === gen && alive(seq)) timer = setTimeout(load, CHART_EVERY_MS);
  };
  let shown = null;
  const draw = () => {
    if (!shown) return;
    const points = Array.isArray(shown.points) ? shown.points : [];
    const w = Math.max(300, Math.round(body.clientWidth) || 720);
    body.replaceChildren(drawChart(shown, range, w), chartSummary(points));
    body.dataset.range = range;
  };
  // Drawn again to the box's new width (its text stays the same size).
  let resizing = 0;
  const onResize = () => {
    clearTimeout(resizing);
    resizing = setTimeout(draw, 150);
  };
  window.addEventListener('resize', onResize);
  const pick = (r) => {
    range = r;
    buttons.forEach((b) => b.setAttribute('aria-pressed', String(b.dataset.range === r)));
    load();
  };
  const card = el(
    'section',
    { class: 'card', id: 'activity' },
    el(
      'div',
      { class: 'card-head' },
      el('h2', { text: 'Attempts' }),
      el('div', { class: 'segmented', role: 'group', 'aria-label': 'Time range' }, buttons),
    ),
    body,
  );
  load();
  return {
    card,
    stop: () => {
      gen++;
      clearTimeout(timer);
      clearTimeout(resizing);
      window.removeEventListener('resize', onResize);
    },
  };
}

// A queue's jobs in one of STATES, a page of them, read again when the count of that state
// changes or one of its jobs ends.
function stateList(queue, state, offset, seq) {
  const cols = jobColumns(state);
  const tbody = el('tbody');
  const table = el(
    'table',
    { class: 'data', id: 'jobs', 'aria-label': `${state} jobs of ${queue}` },
    headRow(cols),
    tbody,
  );
  const summary = el('p', { class: 'muted', id: 'jobs-summary' });
  const pager = el('nav', { class: 'pager', 'aria-label': 'Pages' });
  const tools = el('div', { class: 'toolbar' });
  emptyRow(tbody, cols.length, 'Loading…');

  let lastCount = null,
    loading = false,
    dirty = false,
    timer = 0;
  const load = async () => {
    loading = true;
    dirty = false;
    const order = state === 'dead' ? 'newest' : 'oldest';
    const query = `state=${enc(state)}&offset=${offset}&limit=${PAGE_SIZE}&order=${order}`;
    const path = `/api/queues/${enc(queue)}/jobs?${query}`;
    try {
      const page = await api('GET', path);
      if (alive(seq)) showPage(page);
    } catch (e) {
      if (alive(seq)) {
        emptyRow(tbody, cols.length, 'Could not load the jobs.');
        reportError(e);
      }
    } finally {
      loading = false;
      if (dirty && alive(seq)) reloadSoon();
    }
  };
  // Live: at most one reload in flight and one waiting.
  const reloadSoon = () => {
    if (loading) return void (dirty = true);
    clearTimeout(timer);
    timer = setTimeout(load, 300);
  };
  const showPage = (page) => {
    const jobs = Array.isArray(page.jobs) ? page.jobs : [];
    const total = num(page.total) || 0;
    if (!jobs.length)
      emptyRow(tbody, cols.length, offset ? 'No jobs on this page.' : `No ${state} jobs.`);
    else tbody.replaceChildren(...jobs.map((j) => jobRow(queue, state, j, reloadSoon)));
    summary.textContent = jobs.length
      ? `${offset + 1}–${offset + jobs.length} of ${total.toLocaleString()}`
      : `${total.toLocaleString()} ${state}`;
    pager.replaceChildren(
      offset > 0
        ? el(
            'a',
            { href: queueHref(queue, state, Math.max(0, offset - PAGE_SIZE)), class: 'button' },
            '← Previous',
          )
        : '',
      offset + jobs.length < total && offset + PAGE_SIZE <= MAX_OFFSET
        ? el('a', { href: queueHref(queue, state, offset + PAGE_SIZE), class: 'button' }, 'Next →')
        : '',
    );
  };
  if (state === 'dead')
    tools.append(retryDeadButton(queue, null, reloadSoon), purgeDeadButton(queue, reloadSoon));
  load();
  return {
    card: el(
      'section',
      { class: 'card' },
      el('div', { class: 'card-head' }, summary, tools),
      tableBox(table),
      pager,
    ),
    onQueues: (q) => {
      const n = q ? q[state] : null;
      if (lastCount !== null && n !== lastCount) reloadSoon();
      lastCount = n;
    },
    onJob: reloadSoon,
    refresh: reloadSoon,
    stop: () => clearTimeout(timer),
  };
}

const STATUS_BATCH = 50; // rows one load (and each More) adds
const STATUS_MAX = 500; // rows a status tab shows at most

// A queue's jobs whose retained state has `status` (STATUSES): GET .../search?status=S step after
// step until STATUS_BATCH more are found or the scan is through; More goes on from there. The
// scan has no order in time (Redis' SCAN): the rows shown are sorted newest first by when each
// ended. Not read again on each job end (a scan is not cheap): Reload starts it anew.
function statusList(queue, status, seq) {
  const isError = status !== 'succeeded';
  const cols = [
    { label: 'Job' },
    { label: isError ? 'Error' : 'Result' },
    { label: status === 'retrying' ? 'Last attempt ended' : 'Ended at' },
  ];
  const tbody = el('tbody');
  const table = el(
    'table',
    { class: 'data', id: 'jobs', 'aria-label': `${status} jobs of ${queue}` },
    headRow(cols),
    tbody,
  );
  const summary = el('p', { class: 'muted', id: 'jobs-summary', 'aria-live': 'polite' });
  const more = el('button', { type: 'button', id: 'jobs-more', hidden: true }, 'More');
  const halt = el('button', { type: 'button', id: 'jobs-stop', hidden: true }, 'Stop');
  const reload = el('button', { type: 'button', id: 'jobs-reload', class: 'small' }, 'Reload');
  const pager = el('div', { class: 'pager' }, more, halt);
  let scan = null,
    rows = [], // {id, field, excerpt, at}, newest first
    gen = 0,
    ctl = null;
  const stop = () => {
    gen++;
    if (ctl) ctl.abort();
    ctl = null;
    halt.hidden = true;
  };
  const kinds = status === 'failed' ? ['retry', 'purge'] : status === 'retrying' ? ['cancel'] : [];
  const bulk = bulkBar(queue, kinds, {
    scan: () => scan,
    what: () => `of queue ${queue} whose state says ${status}`,
    pause: () => {
      stop();
      draw(false);
    },
    after: () => start(),
    live: () => alive(seq),
  });
  const draw = (going) => {
    rows.sort((a, b) => (num(b.at) ?? -1) - (num(a.at) ?? -1));
    if (!rows.length)
      emptyRow(tbody, cols.length, going ? 'Looking…' : `No ${status} job states kept.`);
    else
      tbody.replaceChildren(
        ...rows.map((f) =>
          el(
            'tr',
            { 'data-id': f.id, 'data-at': f.at ?? '' },
            el('td', { class: 'mono' }, el('a', { href: jobHref(queue, f.id) }, f.id)),
            el('td', {}, el('code', { class: 'payload', title: f.excerpt }, brief(f.excerpt))),
            el('td', { text: f.at === null ? '–' : localTime(f.at) }),
          ),
        ),
      );
    const through = scan && scan.through;
    const n = rows.length.toLocaleString();
    summary.textContent =
      `${n} found, ${scan ? scan.examined.toLocaleString() : 0} job states examined` +
      (going ? '…' : through ? ' (all kept)' : '') +
      (rows.length >= STATUS_MAX && !through ? `; the first ${STATUS_MAX} shown` : '');
    more.hidden = going || through || !scan || rows.length >= STATUS_MAX;
    halt.hidden = !going;
    bulk.update();
  };
  // Steps until `want` more rows are shown or the scan is through.
  const go = async (want) => {
    stop();
    const mine = gen;
    ctl = new AbortController();
    const signal = ctl.signal;
    const live = () => mine === gen && alive(seq);
    const target = Math.min(STATUS_MAX, rows.length + want);
    draw(true);
    try {
      while (!scan.through && rows.length < target) {
        const found = await scan.step(signal);
        if (!live()) return;
        for (const f of found) {
          // A scan may give a key twice (one that moved while it ran): shown once.
          if (rows.length >= STATUS_MAX || rows.some((r) => r.id === String(f.id))) continue;
          rows.push({
            id: String(f.id ?? ''),
            excerpt: String(f.excerpt ?? ''),
            at: num(f.at),
          });
        }
        draw(true);
      }
    } catch (e) {
      if (!live() || e.status === -1) return;
      reportError(e);
    } finally {
      if (mine === gen) {
        ctl = null;
        draw(false);
      }
    }
  };
  const start = () => {
    stop();
    bulk.stop();
    scan = new Scan(queue, `status=${enc(status)}`);
    rows = [];
    go(STATUS_BATCH);
  };
  more.addEventListener('click', () => go(STATUS_BATCH));
  halt.addEventListener('click', () => {
    stop();
    draw(false);
  });
  reload.addEventListener('click', start);
  start();
  return {
    card: el(
      'section',
      { class: 'card', id: 'status-list' },
      el('div', { class: 'card-head' }, summary, el('div', { class: 'toolbar' }, reload)),
      el(
        'p',
        { class: 'muted hint' },
        `Jobs whose state says ${status}, as long as their state is kept (the queue's retain ` +
          'settings), found by a scan: newest first among those found so far.',
      ),
      bulk.bar,
      tableBox(table),
      pager,
    ),
    onQueues: () => {},
    onJob: () => {},
    refresh: () => {},
    stop: () => {
      stop();
      bulk.stop();
    },
  };
}

function viewQueue(main, route, seq) {
  const { queue, state, offset } = route;
  const tabs = stateTabs(queue, state);
  const pausedBadge = el('span', { class: 'badge status-paused', hidden: true }, 'paused');
  const isPaused = () => !!(queueOf(queue) || {}).paused;
  const pause = pauseButton(queue, isPaused, (r) => {
    const q = queueOf(queue);
    if (q) q.paused = !!r.paused; // until the next event says it
    onQueues();
  });
  const list = STATUSES.includes(state)
    ? statusList(queue, state, seq)
    : stateList(queue, state, offset, seq);
  const onQueues = () => {
    const q = queueOf(queue);
    tabs.update(q);
    pausedBadge.hidden = !isPaused();
    pause.refresh();
    list.onQueues(q);
  };
  const chart = chartCard(queue, seq);
  const search = searchCard(queue, route.search, seq);
  main.append(
    el(
      'div',
      { class: 'page-head' },
      el('h1', {}, 'Queue ', el('span', { class: 'mono' }, queue)),
      pausedBadge,
      el('div', { class: 'head-actions' }, pause),
    ),
    tabs.nav,
    list.card,
    search.card,
    chart.card,
  );
  if (route.search) search.card.scrollIntoView();
  onQueues();
  return {
    onQueues,
    onJob: (j) => j.queue === queue && list.onJob(j),
    refresh: list.refresh,
    stop: () => {
      list.stop();
      search.stop();
      chart.stop();
    },
  };
}

// ---- a job's flow: what it waits for, what waits on it ---------------------------------------

const FLOW_SHOWN = 20; // a job's first dependencies (or dependents) shown; the rest behind "+N more"
const FLOW_MORE = 200; // how many more each "+N more" shows (a fan-in may hold 10,000)
const FLOW_POLL_MS = 10000; // the flow of a job not final is read again at most this often
const FLOW_SOON_MS = 1000; // and this long after a job of it ended (one read for many ends)

// How long ago unix ms `ms` was, short ('5s ago', 'in 2m 3s'); '' when it is no time.
function ago(ms) {
  const n = num(ms);
  if (n === null || n <= 0) return '';
  const delta = (Date.now() - n) / 1000;
  return delta >= 0 ? `${duration(delta)} ago` : `in ${duration(-delta)}`;
}

// A job of the graph (GET /api/jobs/ID/flow): `status` null when it was never seen (no state), a
// job shown before has `above`, one past the walk's bounds `cut` (and no status).
const flowRef = (n) => `${n.queue}/${n.job}`;
const flowStatus = (n) => (n.cut ? 'not read' : n.status === null ? 'not seen yet' : n.status);

// Its line: state, QUEUE/ID as a link to its page, its times; under it its error (failed,
// cancelled) or what it still waits for (waiting).
function flowLine(n) {
  const status = flowStatus(n);
  const badge =
    n.cut || n.status === null
      ? el('span', { class: 'badge status-unseen' }, status)
      : statusBadge(status);
  const name = flowRef(n);
  const link = n.queue
    ? el('a', { href: jobHref(n.queue, n.job), class: 'mono flow-link' }, name)
    : el('span', { class: 'mono' }, name);
  const line = el('div', { class: 'flow-line' }, badge, link);
  if (n.cut) line.append(el('span', { class: 'muted', text: "past the walk's bounds" }));
  else if (n.above) line.append(el('span', { class: 'muted', text: '(shown above)' }));
  const times = [
    ['submitted', n.submitted_at],
    ['started', n.started_at],
    ['finished', n.finished_at],
  ].filter(([, ms]) => ago(ms));
  if (times.length)
    line.append(
      el(
        'span',
        {
          class: 'muted flow-times',
          title: times.map(([what, ms]) => `${what} ${localTime(ms)}`).join('\n'),
        },
        times.map(([what, ms]) => `${what} ${ago(ms)}`).join(', '),
      ),
    );
  const out = [line];
  if (n.status === 'failed' || n.status === 'cancelled') {
    const error = typeof n.error === 'string' ? n.error : '';
    const kind = n.error_kind ? `${n.error_kind}: ` : '';
    out.push(el('div', { class: 'flow-error', title: error }, kind + brief(error, 200)));
  }
  if (n.status === 'waiting')
    out.push(
      el('div', {
        class: 'muted flow-waits',
        text: `waits for ${count(n.waiting_for)} of ${count(n.waits_for_total)}`,
      }),
    );
  return out;
}

// The tree of `list` along `key` ('after' or 'dependents'): each job, then its own list below it.
// A list shows its first FLOW_SHOWN, then "+N more" shows FLOW_MORE more at a time; `shown` keeps
// how many each list (by its path in the tree) shows, so that a redraw keeps what was opened.
function flowTree(list, key, path, shown) {
  const limit = shown.get(path) || FLOW_SHOWN;
  const ul = el('ul', { class: 'flow-tree' });
  list.slice(0, limit).forEach((n, i) => {
    const li = el(
      'li',
      { class: 'flow-node', 'data-ref': flowRef(n), 'data-status': flowStatus(n) },
      flowLine(n),
    );
    const next = Array.isArray(n[key]) ? n[key] : [];
    if (next.length) li.append(flowTree(next, key, `${path}.${i}`, shown));
    ul.append(li);
  });
  const rest = list.length - limit;
  if (rest > 0) {
    const more = Math.min(rest, FLOW_MORE);
    const button = el(
      'button',
      {
        type: 'button',
        class: 'link-button flow-more',
        title: `Show ${more.toLocaleString()} more of the ${rest.toLocaleString()} not shown`,
        onclick: () => {
          shown.set(path, limit + more);
          const again = flowTree(list, key, path, shown);
          ul.replaceWith(again);
          // The keyboard goes on at the first job it added.
          const first = again.children[limit]?.querySelector('a');
          if (first) first.focus();
        },
      },
      `+${rest.toLocaleString()} more`,
    );
    ul.append(el('li', { class: 'flow-rest' }, button));
  }
  return ul;
}

// How the jobs of a list stand: '3 succeeded · 1 failed · 2 not seen yet'.
function flowSummary(list) {
  const by = new Map();
  for (const n of list) by.set(flowStatus(n), (by.get(flowStatus(n)) || 0) + 1);
  return [...by].map(([status, n]) => `${n.toLocaleString()} ${status}`).join(' · ');
}

// The Flow card of a job's page: its two trees, and the walk's bounds when they cut it.
function flowCard(graph, shown) {
  const side = (title, list, key, none) => {
    const box = el(
      'div',
      { class: 'flow-side', id: `flow-${key}` },
      el(
        'h3',
        {},
        title,
        list.length ? el('span', { class: 'muted' }, ` (${count(list.length)})`) : '',
      ),
    );
    if (!list.length) box.append(el('p', { class: 'muted', text: none }));
    else
      box.append(
        el('p', { class: 'muted flow-summary', text: flowSummary(list) }),
        el(
          'div',
          { class: 'flow-wrap', tabindex: 0, role: 'region', 'aria-label': title },
          flowTree(list, key, key, shown),
        ),
      );
    return box;
  };
  const limits = graph.limits || {};
  const card = section(
    'Flow',
    graph.cut
      ? el('p', {
          class: 'flow-cut',
          text:
            `Cut: the walk stops at ${count(limits.jobs)} jobs and ${count(limits.depth)} ` +
            'levels each way; the jobs past it show as "not read".',
        })
      : null,
    side('What it waits for', graph.after || [], 'after', 'Nothing: it waits for no job.'),
    side(
      'What waits on it',
      graph.dependents || [],
      'dependents',
      graph.dependents_known === false
        ? 'Not known once it is final (the note is gone).'
        : 'Nothing waits on it.',
    ),
  );
  card.id = 'job-flow';
  return card;
}

// Every QUEUE/ID of the graph: a job end among them reads the flow again.
function flowRefs(graph, into = new Set()) {
  for (const key of ['after', 'dependents'])
    for (const n of Array.isArray(graph[key]) ? graph[key] : []) {
      into.add(flowRef(n));
      flowRefs(n, into);
    }
  return into;
}

// ---- view: one job ---------------------------------------------------------------------------

// The fields in this order, then any other; status goes in the page's head, the blocks below.
const JOB_FIELDS = [
  'queue',
  'attempts',
  'handler',
  'worker',
  'submitted_at',
  'started_at',
  'finished_at',
  'error_kind',
  'file',
];
// A finished job's payload is there when its queue retains it (retain.payload), as text.
const JOB_BLOCKS = { error: 'Error', result: 'Result', payload: 'Payload' };
const fieldLabel = (key) => key.charAt(0).toUpperCase() + key.slice(1).replace(/_/g, ' ');
// The jobs a job waits for its Details name; the Flow card has every one, with its state.
const AFTER_NAMED = 10;

function fieldValue(key, value) {
  if (key === 'after') {
    // As its state keeps them, QUEUE/ID space-separated: a fan-in's 1,000 would fill the page.
    const refs = String(value).split(' ').filter(Boolean);
    const more = refs.length - AFTER_NAMED;
    return el(
      'span',
      { class: 'mono' },
      refs.slice(0, AFTER_NAMED).join(' ') +
        (more > 0 ? ` +${more.toLocaleString()} more (in Flow, below)` : ''),
    );
  }
  if (key === 'queue')
    return el('a', { href: queueHref(String(value)), class: 'mono' }, String(value));
  if (key.endsWith('_at')) return localTime(value);
  if (key === 'file') {
    // A spool job's file as it was dropped: its name, and its path (never its content).
    const path = String(value);
    return el(
      'span',
      { class: 'file' },
      el('span', { class: 'mono file-name' }, path.slice(path.lastIndexOf('/') + 1)),
      el('span', { class: 'mono muted file-path' }, path),
    );
  }
  if (key === 'worker') return el('span', { class: 'mono' }, pretty(value));
  return typeof value === 'string' ? value : JSON.stringify(value);
}

// The job's fields as a definition list: the known ones in their order, then any other.
function jobFields(job) {
  const dl = el('dl', { class: 'fields', id: 'job-fields' });
  const skip = (k) =>
    k === 'id' ||
    k === 'status' ||
    k === 'payload_truncated' ||
    JOB_FIELDS.includes(k) ||
    k in JOB_BLOCKS;
  const keys = JOB_FIELDS.filter((k) => k in job).concat(Object.keys(job).filter((k) => !skip(k)));
  for (const k of keys) {
    if (job[k] === '' || job[k] === null) continue;
    dl.append(
      el('dt', { text: fieldLabel(k) }),
      el('dd', { 'data-field': k }, fieldValue(k, job[k])),
    );
  }
  return dl;
}

function jobBlocks(job) {
  // A payload kept cut (over 4 KiB) says so in its title; its text ends with "...".
  const titled = (k, title) =>
    k === 'payload' && job.payload_truncated ? `${title} (its first 4 KiB)` : title;
  return Object.entries(JOB_BLOCKS)
    .filter(([k]) => k in job && job[k] !== '' && job[k] !== null)
    .map(([k, title]) =>
      section(
        titled(k, title),
        el('pre', { class: `block block-${k}`, id: `job-${k}` }, pretty(job[k])),
      ),
    );
}

function viewJob(main, route, seq) {
  const { queue, id } = route;
  const status = el('span', { id: 'job-status', class: 'badge' }, '…');
  const actions = el('div', { class: 'toolbar head-actions' });
  const head = el(
    'div',
    { class: 'page-head' },
    el('h1', {}, 'Job ', el('span', { class: 'mono', id: 'job-id' }, id)),
    status,
    actions,
  );
  const body = el('div', { id: 'job' }, el('p', { class: 'muted', text: 'Loading…' }));
  main.append(head, body);
  // The Flow card's place: kept across the job's redraws, drawn anew only when the graph changed
  // (what was opened in it stays open).
  const flow = el('div', { id: 'job-flow-box' });
  const flowShown = new Map();
  let flowText = '';
  let flowAt = 0; // when the flow was last read
  let flowSeen = '';
  let refs = new Set();
  let timer = 0;
  let flowTimer = 0;
  const loadFlow = async () => {
    clearTimeout(flowTimer);
    flowTimer = 0;
    flowAt = Date.now();
    let graph;
    try {
      graph = await api('GET', `/api/jobs/${enc(id)}/flow?queue=${enc(queue)}`);
    } catch (e) {
      if (!alive(seq) || e.status === 401) return;
      flowText = '';
      if (e.status === 404) return flow.replaceChildren();
      flow.replaceChildren(
        section('Flow', el('p', { class: 'muted', text: `Not read: ${e.message}` })),
      );
      return;
    }
    if (!alive(seq)) return;
    const text = JSON.stringify(graph);
    if (text === flowText) return;
    flowText = text;
    refs = flowRefs(graph);
    // Only a job with something on either side has a flow to show.
    flow.replaceChildren(...(refs.size ? [flowCard(graph, flowShown)] : []));
  };
  const load = async () => {
    clearTimeout(timer);
    try {
      const job = await api('GET', `/api/jobs/${enc(id)}?queue=${enc(queue)}`);
      if (!alive(seq)) return;
      showJob(job);
      // Read at once when the job's status moved, else now and then (the jobs of a flow have no
      // start event; their ends come as events, below).
      if (job.status !== flowSeen || Date.now() - flowAt >= FLOW_POLL_MS) {
        flowSeen = job.status;
        await loadFlow();
        if (!alive(seq)) return;
      }
      if (!FINAL.has(job.status)) timer = setTimeout(load, JOB_POLL_MS);
    } catch (e) {
      if (!alive(seq)) return;
      if (e.status !== 404) return reportError(e);
      // Not there (yet: a job pushed without a state has none until a daemon takes it).
      body.replaceChildren(
        section(
          'Not found',
          el('p', { text: `${e.message}. This page looks again every few seconds.` }),
        ),
      );
      timer = setTimeout(load, JOB_MISSING_POLL_MS);
    }
  };
  const showJob = (job) => {
    const q = String(job.queue || queue);
    status.className = `badge status-${String(job.status).replace(/[^a-z]/g, '')}`;
    status.textContent = job.status || '–';
    actions.replaceChildren();
    if (!FINAL.has(job.status)) actions.append(cancelButton(q, id, load));
    if (job.status === 'failed') {
      actions.append(retryDeadButton(q, [id], load));
      // After it, the flow is read again even when the job's status reads as before (retried,
      // it may have failed again already): what went back waits again, and the card shows it.
      actions.append(
        retryFlowButton(q, id, () => {
          flowSeen = '';
          load();
        }),
      );
    }
    body.replaceChildren(
      section('Details', jobFields(job)),
      ...jobBlocks(job),
      flow,
      el(
        'details',
        { class: 'card raw' },
        el('summary', { text: 'Raw JSON' }),
        el('pre', { class: 'block' }, JSON.stringify(job, null, 2)),
      ),
    );
  };
  load();
  const onJob = (j) => {
    if (j.id === id) return load();
    if (refs.has(`${j.queue}/${j.id}`) && !flowTimer)
      flowTimer = setTimeout(loadFlow, FLOW_SOON_MS);
  };
  const stop = () => {
    clearTimeout(timer);
    clearTimeout(flowTimer);
  };
  return { onJob, refresh: load, stop };
}

// ---- view: find a job by id ------------------------------------------------------------------

function findForm(value) {
  const input = el('input', {
    id: 'find-id',
    type: 'search',
    name: 'id',
    value,
    spellcheck: 'false',
    maxlength: 128,
    placeholder: 'job id',
    autocomplete: 'off',
  });
  const form = el(
    'form',
    { class: 'find-form', role: 'search' },
    el('label', { for: 'find-id', text: 'Job id' }),
    el(
      'div',
      { class: 'inline' },
      input,
      el('button', { type: 'submit', class: 'primary' }, 'Find'),
    ),
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    goFind(input.value);
  });
  return { form, input };
}

function goFind(text) {
  const id = text.trim();
  if (!ID_RE.test(id)) {
    showError(`not a job id: ${id ? brief(id, 80) : '(empty)'} (1-128 of A-Z a-z 0-9 _ . : -)`);
    return;
  }
  const target = `#/find/${enc(id)}`;
  if (location.hash === target) route();
  else location.hash = target;
}

function viewFind(main, route, seq) {
  const { form, input } = findForm(route.id);
  const result = el('div', { id: 'find-result' });
  const recent = recentList();
  main.append(
    el('div', { class: 'page-head' }, el('h1', { text: 'Jobs' })),
    section(
      'Find a job',
      el('p', {
        class: 'muted',
        text: 'Its id, as the submitter gave it or jobqd made it. Every queue is searched.',
      }),
      form,
      result,
    ),
    section('Recent job ends', recent.list),
  );
  if (!route.id) {
    input.focus();
  } else if (ID_RE.test(route.id)) {
    result.append(el('p', { class: 'muted', text: 'Looking…' }));
    api('GET', `/api/jobs/${enc(route.id)}`)
      .then((job) => {
        if (alive(seq)) location.replace(jobHref(String(job.queue), String(job.id || route.id)));
      })
      .catch((e) => {
        if (!alive(seq)) return;
        if (e.status === 404)
          result.replaceChildren(
            el(
              'p',
              { class: 'notice', id: 'find-none' },
              'No job ',
              el('span', { class: 'mono' }, route.id),
              ' in any queue.',
            ),
          );
        else {
          result.replaceChildren();
          reportError(e);
        }
      });
  }
  return { onJob: recent.update, stop: recent.stop };
}

function viewNotFound(main, route) {
  main.append(
    section(
      'No such page',
      el('p', {}, 'Nothing here: ', el('span', { class: 'mono' }, route.path), '. '),
      el('a', { href: '#/' }, 'Back to the overview'),
    ),
  );
  return null;
}

// ---- login -----------------------------------------------------------------------------------

// A 401 from any call: the page asks for the token, signs in, then starts again where it was.
function showLogin() {
  if (S.loginShown) return;
  S.loginShown = true;
  stopView();
  closeEvents();
  setLive('off', 'signed out');
  const input = el('input', {
    id: 'token',
    name: 'token',
    type: 'password',
    autocomplete: 'current-password',
    required: true,
  });
  const form = el(
    'form',
    { class: 'card login', id: 'login' },
    el('h1', { text: 'Sign in' }),
    el('p', { class: 'muted', text: 'This jobqd asks for its API token (http.token_file).' }),
    el('label', { for: 'token', text: 'Token' }),
    input,
    el('div', { class: 'toolbar' }, el('button', { type: 'submit', class: 'primary' }, 'Sign in')),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      await api('POST', '/api/login', { token: input.value });
      S.loginShown = false;
      clearError();
      await start();
    } catch (e) {
      showError(e.status === 401 ? 'wrong token' : e.message);
      input.select();
    }
  });
  $('#main').replaceChildren(form);
  input.focus();
}

function renderSignOut() {
  const box = $('.indicators');
  box.querySelector('.sign-out')?.remove();
  // Only a session signed in with the cookie has something to sign out of.
  if (!S.session || S.session.auth !== 'token' || S.session.login === false) return;
  box.append(
    el('button', { type: 'button', class: 'sign-out link-button', onclick: signOut }, 'Sign out'),
  );
}

async function signOut() {
  try {
    await api('POST', '/api/logout');
  } catch (e) {
    reportError(e);
  }
  S.session = null;
  showLogin();
}

// ---- routing ---------------------------------------------------------------------------------

function decode(part) {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

function parseRoute() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, query = ''] = raw.split('?');
  const parts = path.split('/').map(decode);
  const params = new URLSearchParams(query);
  switch (parts[0]) {
    case '':
      return { name: 'overview' };
    case 'queue':
      if (!parts[1]) break;
      return {
        name: 'queue',
        queue: parts[1],
        state: TABS.includes(parts[2]) ? parts[2] : 'pending',
        offset: Math.max(0, parseInt(params.get('offset'), 10) || 0),
      };
    case 'search':
      if (!parts[1]) break;
      return {
        name: 'queue',
        queue: parts[1],
        state: 'pending',
        offset: 0,
        search: parts[2] || '',
      };
    case 'job':
      if (!parts[2]) break;
      return { name: 'job', queue: parts[1], id: parts[2] };
    case 'find':
      return { name: 'find', id: parts[1] || '' };
    case 'schedules':
      return { name: 'schedules' };
  }
  return { name: 'notfound', path: raw };
}

const VIEWS = {
  overview: viewOverview,
  queue: viewQueue,
  job: viewJob,
  find: viewFind,
  schedules: viewSchedules,
  notfound: viewNotFound,
};

function stopView() {
  if (S.view && S.view.stop) S.view.stop();
  S.view = null;
  S.seq++;
}

function routeTitle(r) {
  if (r.name === 'job') return r.id;
  if (r.name === 'queue') return r.search ? `${r.search} in ${r.queue}` : `${r.queue} (${r.state})`;
  if (r.name === 'schedules') return 'Schedules';
  return r.name === 'find' ? 'Jobs' : 'Overview';
}

function route() {
  if (S.loginShown) return;
  stopView();
  const r = parseRoute();
  const nav =
    r.name === 'overview' || r.name === 'queue'
      ? 'overview'
      : r.name === 'schedules'
        ? 'schedules'
        : 'find';
  document
    .querySelectorAll('.nav a')
    .forEach((a) =>
      a.dataset.nav === nav
        ? a.setAttribute('aria-current', 'page')
        : a.removeAttribute('aria-current'),
    );
  const main = $('#main');
  main.replaceChildren();
  S.view = VIEWS[r.name](main, r, S.seq) || null;
  document.title = `${routeTitle(r)} · jobqd`;
}

// ---- start -----------------------------------------------------------------------------------

// The session (CSRF token, read-only), the queues once (the event stream then keeps them), the
// event stream, and the view the hash names.
async function start() {
  try {
    await loadSession();
  } catch (e) {
    if (e.status === 401) return;
    reportError(e);
  }
  route();
  api('GET', '/api/queues')
    .then((list) => {
      if (Array.isArray(list) && S.queues === null) setQueues(list);
    })
    .catch(reportError);
  openEvents();
}

function wireHeader() {
  $('#search').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $('#search-id');
    goFind(input.value);
    if (ID_RE.test(input.value.trim())) input.value = '';
  });
  $('#error-close').addEventListener('click', clearError);
  window.addEventListener('hashchange', () => {
    clearError();
    setStatus('');
    route();
    $('#main').focus({ preventScroll: true });
  });
}

wireHeader();
start();
