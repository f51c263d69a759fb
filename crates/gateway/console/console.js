// The customer's console. Everything shown is verified here, in this browser, by
// palisade_console (Rust compiled to WebAssembly, the same checks as `palisade
// audit`): the log's checkpoint against the keys this browser trusts, every
// entry hashed into the tree against it, the log extending what this browser
// verified before. The gateway only relays the log's bytes.
import init, { plan, verify, approval_to_sign, key_id } from './palisade_console.js';

const ROW = 28;            // px per timeline row (the list is virtualised)
const MAX_AGE = 300;       // s: cosignatures older than this mean a frozen log
const FETCHES = 6;         // bundles fetched at once

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const e = Object.assign(document.createElement(tag), props);
  for (const c of children) e.append(c);
  return e;
};

const state = { session: null, trust: null, report: null, rows: [], shown: [], selected: -1 };

function key(what) {
  return `palisade.${what}.${state.session.tenant}/${state.session.cluster}`;
}

// ---- session: a login link carries a one-time code, tenant,
// cluster and the log's keys in the URL fragment, which the browser never sends to
// a server. The code is exchanged once for a session token of the tenant.
async function fromFragment(fragment) {
  if (!fragment.startsWith('#')) return;
  const p = new URLSearchParams(fragment.slice(1));
  let token = null;
  if (p.get('code')) {
    const r = await fetch('/v1/console/session', {
      method: 'POST', cache: 'no-store', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ code: p.get('code') }),
    });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.detail || `HTTP ${r.status}`);
    token = body.token;
  }
  if (!token) return;
  const session = { tenant: p.get('tenant') || '', cluster: p.get('cluster') || '', token };
  sessionStorage.setItem('palisade.session', JSON.stringify(session));
  const trust = p.get('trust');
  if (trust) sessionStorage.setItem('palisade.link-trust', trust);
}

function base() {
  const s = state.session;
  return `/v1/tenants/${encodeURIComponent(s.tenant)}/clusters/${encodeURIComponent(s.cluster)}`;
}

async function get(path, as) {
  const r = await fetch(path, { headers: { Authorization: `Bearer ${state.session.token}` }, cache: 'no-store' });
  if (r.status === 404 && as === 'bytes-or-null') return null;
  if (!r.ok) {
    let detail = '';
    try { detail = (await r.json()).detail || ''; } catch { /* not JSON */ }
    const e = new Error(`${path}: HTTP ${r.status} ${detail}`);
    e.status = r.status;
    throw e;
  }
  if (as === 'text') return r.text();
  if (as === 'json') return r.json();
  return new Uint8Array(await r.arrayBuffer());
}

function b64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

// ---- trust: the keys the log must be signed and cosigned with. Pinned in this
// browser; a link's keys replace nothing already pinned without saying so.
async function trust() {
  const pinned = localStorage.getItem(key('trust'));
  const linked = sessionStorage.getItem('palisade.link-trust');
  sessionStorage.removeItem('palisade.link-trust');
  if (linked) {
    const t = JSON.parse(atob(linked.replace(/-/g, '+').replace(/_/g, '/')));
    if (pinned && pinned !== JSON.stringify(t)) {
      return { trust: JSON.parse(pinned), warning: 'The login link names other keys for this log than the ones this browser pinned; the pinned keys are used. Forget them (below) only if your provider announced a key change.' };
    }
    localStorage.setItem(key('trust'), JSON.stringify(t));
    return { trust: t };
  }
  if (pinned) return { trust: JSON.parse(pinned) };
  const t = await get(`${base()}/log-keys`, 'json');
  localStorage.setItem(key('trust'), JSON.stringify(t));
  return { trust: t, warning: 'These keys came from the gateway and are now pinned in this browser (trust on first use). Compare them with the keys your provider published.' };
}

async function fetchBundles(bundles) {
  const out = new Array(bundles.length);
  let next = 0, done = 0;
  const worker = async () => {
    while (next < bundles.length) {
      const i = next++;
      const b = bundles[i];
      let bytes = await get(`${base()}/log/${b.path}`, 'bytes-or-null');
      if (bytes === null && b.fallback) bytes = await get(`${base()}/log/${b.fallback}`, 'bytes-or-null');
      if (bytes === null) throw new Error(`the log has no ${b.path}`);
      out[i] = b64(bytes);
      done++;
      if (done % 8 === 0) status(`Fetched ${done} of ${bundles.length} entry bundles…`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(FETCHES, bundles.length) }, worker));
  return out;
}

function status(text, ok) {
  const s = $('status');
  s.textContent = text;
  s.className = ok ? 'ok' : '';
}

function banner(title, failures) {
  document.body.dataset.verification = 'failed';
  const b = $('banner');
  b.replaceChildren(el('div', { textContent: title }), el('ul', {}, ...failures.map((f) => el('li', { textContent: f }))));
  b.hidden = false;
}

// Nothing of an earlier look stays on screen while the log is verified again: a
// failure, or an error reaching the log, leaves an empty page with the banner.
function clear() {
  delete document.body.dataset.verification;
  state.report = null;
  state.rows = [];
  state.shown = [];
  $('app').hidden = true;
  $('banner').hidden = true;
  $('approval-list').replaceChildren();
  $('list').replaceChildren($('spacer'));
  $('detail').replaceChildren();
}

async function load() {
  clear();
  status('Verifying the log…');
  const started = performance.now();
  const { trust: t, warning } = await trust();
  state.trust = t;
  $('trust').textContent = JSON.stringify(t, null, 2);
  const checkpoint = await get(`${base()}/log/checkpoint`, 'text');
  const p = JSON.parse(plan(JSON.stringify({ trust: t, checkpoint })));
  if (!p.ok) {
    banner('Verification failed: do not trust what this log shows.', p.failures);
    status('');
    return;
  }
  const bundles = await fetchBundles(p.bundles);
  const seen = localStorage.getItem(key('seen'));
  const input = { trust: t, checkpoint, bundles, previous: seen ? JSON.parse(seen) : null, now: Math.floor(Date.now() / 1000), max_age: MAX_AGE };
  const fetched = performance.now();
  const report = JSON.parse(verify(JSON.stringify(input)));
  const verified = performance.now();
  state.report = report;
  if (report.verified && (!input.previous || report.verified.size >= input.previous.size)) {
    localStorage.setItem(key('seen'), JSON.stringify(report.verified));
  }
  const ms = Math.round(performance.now() - started);
  if (!report.ok) banner('Verification failed: do not trust what this log shows.', report.failures);
  $('notice').textContent = warning || '';
  $('notice').hidden = !warning;
  status(report.ok
    ? `Verified in this browser: ${report.size} entries, each proven against the checkpoint signed by the log and cosigned by ${report.witnesses.length} witness(es) (${ms} ms).`
    : `${report.events.length} entries read; verification failed.`, report.ok);
  render(report);
  // How long each step took (ms), for the benchmark: fetching, verifying, drawing.
  Object.assign(document.body.dataset, {
    fetchMs: String(Math.round(fetched - started)),
    verifyMs: String(Math.round(verified - fetched)),
    renderMs: String(Math.round(performance.now() - verified)),
  });
  document.body.dataset.verification = report.ok ? 'ok' : 'failed';
  $('export-json').disabled = $('export-csv').disabled = !report.ok;
  if (report.ok) {
    approvals().catch((e) => { $('approval-list').textContent = `Cannot list approval requests: ${e.message}`; });
  } else {
    $('approval-list').textContent = 'The log did not verify: no request can be approved here.';
  }
}

function ago(secs) {
  if (secs < 120) return `${secs} s`;
  if (secs < 7200) return `${Math.round(secs / 60)} min`;
  return `${Math.round(secs / 3600)} h`;
}

function render(r) {
  $('app').hidden = false;
  const facts = $('facts');
  const fact = (k, v, cls) => { facts.append(el('dt', { textContent: k }), el('dd', { textContent: v, className: cls || '' })); };
  facts.replaceChildren();
  fact('Log', r.origin);
  fact('Size', `${r.size} entries`);
  fact('Root hash', r.root);
  fact('Checkpoint', r.failures.some((f) => f.startsWith('checkpoint')) ? 'does not verify' : 'signed by the log, cosigned by a quorum of the witnesses you trust', r.failures.some((f) => f.startsWith('checkpoint')) ? 'bad' : 'good');
  fact('Last visit', r.previous ? `size ${r.previous.size}: ${r.previous.consistent ? 'this log extends it' : 'NOT part of this log'}` : 'first visit from this browser', r.previous && !r.previous.consistent ? 'bad' : '');
  // What rests on the entries says nothing when the entries did not verify.
  const entriesRead = !r.failures.some((f) => /^(checkpoint|inclusion|entries|the keys)/.test(f));
  const unread = 'not checked: the log\u2019s entries did not verify';
  if (entriesRead) {
    fact('Pending intents', r.pending.length ? `${r.pending.length} without a result yet` : 'none');
    fact('Agent signatures', `${r.signatures_checked} result(s) and refusal(s) carry an agent\u2019s signature that verifies against the key the log records for its instance`);
    fact('Tenant statements', r.tenant_statements_checked === undefined
      ? 'decoded and ordered here; no tenant key is pinned, so their signatures are checked by `palisade audit events --tenant-key`'
      : `${r.tenant_statements_checked} signed by your tenant key (verified here)`);
  } else {
    for (const k of ['Pending intents', 'Agent signatures', 'Tenant statements']) fact(k, unread, 'bad');
  }
  const tb = $('witnesses').tBodies[0];
  tb.replaceChildren(...r.witnesses.map((w) => el('tr', {},
    el('td', { textContent: w.name }), el('td', { textContent: w.key_id }),
    el('td', { textContent: new Date(w.timestamp * 1000).toISOString() }),
    el('td', { textContent: ago(w.age_secs), className: w.age_secs > MAX_AGE ? 'bad' : 'good' }))));
  const bad = r.views.filter((v) => !v.consistent);
  $('views').textContent = !entriesRead ? unread : r.views.length === 0 ? 'No agent has reported a view yet.'
    : bad.length === 0 ? `${r.views.length} view(s), every one a tree of this log.`
      : `${bad.length} of ${r.views.length} view(s) are NOT in this log: ` + bad.map((v) => `entry ${v.index} (${v.instance || '?'}: size ${v.size})`).join(', ');
  $('views').className = bad.length || !entriesRead ? 'bad' : 'good';
  state.rows = r.events;
  const outcomes = [...new Set(r.events.map((e) => e.outcome).filter(Boolean))].sort();
  const sel = $('f-outcome');
  const current = sel.value;
  sel.replaceChildren(el('option', { value: '', textContent: 'all' }), ...outcomes.map((o) => el('option', { value: o, textContent: o })));
  sel.value = outcomes.includes(current) ? current : '';
  filter();
}

// ---- the timeline: filtered, newest first, virtualised.
function filter() {
  const text = $('f-text').value.trim().toLowerCase();
  const kind = $('f-kind').value, outcome = $('f-outcome').value, problems = $('f-problems').checked;
  const from = $('f-from').value ? Date.parse($('f-from').value) : null;
  const to = $('f-to').value ? Date.parse($('f-to').value) : null;
  state.shown = state.rows.filter((r) => {
    if (kind && r.kind !== kind) return false;
    if (outcome && r.outcome !== outcome) return false;
    if (problems && r.problems.length === 0) return false;
    const t = Date.parse(r.time);
    if (from !== null && !(t >= from)) return false;
    if (to !== null && !(t <= to)) return false;
    if (text && ![r.who, r.action, r.ticket, r.reason, r.instance, r.refers_to].some((v) => v.toLowerCase().includes(text))) return false;
    return true;
  }).reverse();
  state.selected = state.shown.length ? 0 : -1;
  $('count').textContent = `${state.shown.length} of ${state.rows.length} entries`;
  $('spacer').style.height = `${state.shown.length * ROW}px`;
  $('list').scrollTop = 0;
  draw();
  detail();
}

function draw() {
  const list = $('list');
  const first = Math.max(0, Math.floor(list.scrollTop / ROW) - 5);
  const last = Math.min(state.shown.length, Math.ceil((list.scrollTop + list.clientHeight) / ROW) + 5);
  const rows = [];
  for (let i = first; i < last; i++) {
    const r = state.shown[i];
    const row = el('div', { className: 'row' + (r.problems.length ? ' problem' : ''), id: `row-${i}` });
    row.setAttribute('role', 'option');
    row.setAttribute('aria-selected', String(i === state.selected));
    row.style.top = `${i * ROW}px`;
    row.dataset.index = String(r.index);
    for (const v of [(r.problems.length ? '! ' : '') + r.index, r.time, r.kind, r.who, r.action, r.instance, r.ticket, r.outcome, r.agent]) {
      row.append(el('span', { textContent: v, title: v }));
    }
    row.addEventListener('click', () => { select(i); });
    rows.push(row);
  }
  list.replaceChildren($('spacer'), ...rows);
  if (state.selected >= 0) list.setAttribute('aria-activedescendant', `row-${state.selected}`);
}

function select(i) {
  if (i < 0 || i >= state.shown.length) return;
  state.selected = i;
  const list = $('list');
  if (i * ROW < list.scrollTop) list.scrollTop = i * ROW;
  if ((i + 1) * ROW > list.scrollTop + list.clientHeight) list.scrollTop = (i + 1) * ROW - list.clientHeight;
  draw();
  detail();
}

function detail() {
  const d = $('detail');
  const r = state.shown[state.selected];
  if (!r) { d.replaceChildren(); return; }
  d.replaceChildren(
    el('h3', { textContent: `Entry ${r.index}: ${r.kind}` }),
    ...(r.problems.length ? [el('ul', { className: 'bad' }, ...r.problems.map((p) => el('li', { textContent: p })))] : [el('p', { className: 'good', textContent: 'Proven in the log; its checks pass.' })]),
    el('pre', { textContent: JSON.stringify(r.event, null, 2) }));
}

function download(name, type, body) {
  const a = el('a', { href: URL.createObjectURL(new Blob([body], { type })), download: name });
  document.body.append(a);
  a.click();
  a.remove();
}

const COLUMNS = ['index', 'time', 'kind', 'who', 'action', 'instance', 'ticket', 'reason', 'outcome', 'agent', 'refers_to', 'problems'];
function csv() {
  const cell = (v) => {
    let s = Array.isArray(v) ? v.join('; ') : String(v ?? '');
    if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;   // never a formula in a spreadsheet
    return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return [COLUMNS.join(','), ...state.shown.map((r) => COLUMNS.map((c) => cell(r[c])).join(','))].join('\r\n') + '\r\n';
}

// ---- approvals: the gateway's list of requests, each checked against the
// verified log (the request must be the entry at its index, byte for byte) before
// it is shown. An approver decides here, with a key imported into this browser's
// key store (WebCrypto Ed25519, not extractable), or with the command shown.
async function approvals() {
  const all = await get(`${base()}/approvals`, 'json');
  const r = state.report;
  if (!r || !r.ok) return;
  const pending = all.filter((a) => a.state === 'pending');
  const box = $('approval-list');
  if (pending.length === 0) { box.textContent = 'No request awaits your approval.'; return; }
  const s = state.session;
  const shellSafe = (v) => /^[a-z0-9][a-z0-9.-]{0,62}$/.test(v);
  box.replaceChildren(...pending.map((a) => {
    // Only what the verified log holds is shown: the request must be the entry at
    // its index, byte for byte, still pending; the gateway's words are not used.
    const row = r.events.find((e) => e.index === a.index && e.kind === 'approval_request' && e.digest === a.digest && e.outcome === 'pending' && e.event.event_id === a.id);
    if (!row) {
      return el('div', { className: 'approval bad', textContent: `A request the gateway lists (entry ${a.index}) is NOT in the verified log as it says: do not approve it.` });
    }
    const ev = row.event;
    const card = el('div', { className: 'approval' },
      el('strong', { textContent: `${ev.action} on ${ev.instance || 'the cluster'}` }),
      el('div', { textContent: `parameters ${JSON.stringify(ev.parameters || {})}` }),
      el('div', { textContent: `requested by ${ev.actor.id}, ticket ${ev.justification.ticket}: ${ev.justification.reason}` }),
      el('div', { textContent: `expires ${ev.expires_at}; ${a.approved_by.length} of ${a.threshold} approval(s) so far (the gateway's count)` }),
      el('div', { className: 'good', textContent: `logged at entry ${row.index} (verified)` }));
    if (/^[0-9a-f]{32}$/.test(ev.event_id) && shellSafe(s.tenant) && shellSafe(s.cluster)) {
      card.append(el('code', { textContent: `palisade customer approve ${ev.event_id} --key YOUR-APPROVER.key --gateway ${location.origin} --ca CA.crt --token @TOKEN-FILE --tenant ${s.tenant} --cluster ${s.cluster}` }));
    }
    card.append(decideHere({ id: ev.event_id, index: row.index, digest: row.digest }));
    return card;
  }));
}

function decideHere(a) {
  const id = (what) => `${what}-${a.id}`;
  const out = el('div', { className: 'decide', id: id('result'), role: 'status' });
  const file = el('input', { type: 'file', id: id('key'), accept: '.key,.pem' });
  const reason = el('input', { id: id('reason'), placeholder: 'reason (optional)' });
  const go = (decision) => async () => {
    out.textContent = 'Signing…';
    try {
      const done = await decide(a, decision, file.files[0], reason.value.trim());
      setTimeout(() => load().then(
        () => { const o = document.getElementById(id('result')); if (o) o.textContent = done; },
        (e) => banner('The console could not verify the log.', [e.message])), 300);
      out.textContent = done;
    } catch (e) {
      out.textContent = `Not sent: ${e.message}`;
      out.className = 'decide bad';
    }
  };
  const approve = el('button', { type: 'button', id: id('approve'), textContent: 'Approve in this browser' });
  const deny = el('button', { type: 'button', id: id('deny'), textContent: 'Deny' });
  approve.addEventListener('click', go('approve'));
  deny.addEventListener('click', go('deny'));
  return el('div', { className: 'decide-form' },
    el('label', {}, 'Your approver key (PKCS#8 PEM; it stays in this browser) ', file),
    el('label', {}, 'Reason ', reason), approve, deny, out);
}

const b64bytes = (t) => Uint8Array.from(atob(t), (c) => c.charCodeAt(0));

// An Ed25519 private key from a PKCS#8 PEM file, imported as not extractable. The
// file may carry the public key too (PKCS#8 v2), which WebCrypto need not accept:
// the 32-byte seed is re-wrapped as PKCS#8 v1 first.
async function importApproverKey(file) {
  if (!file) throw new Error('choose your approver key file first');
  const pem = await file.text();
  const body = pem.replace(/-----(BEGIN|END) PRIVATE KEY-----/g, '').replace(/\s+/g, '');
  const der = b64bytes(body);
  const oid = [0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
  if (der.length < 48 || !oid.every((b, i) => der[5 + i] === b)) throw new Error('not an Ed25519 private key (PKCS#8 PEM)');
  const v1 = new Uint8Array([0x30, 0x2e, 0x02, 0x01, 0x00, ...oid, ...der.slice(16, 48)]);
  try {
    return await crypto.subtle.importKey('pkcs8', v1, { name: 'Ed25519' }, false, ['sign']);
  } catch (e) {
    throw new Error(`this browser cannot use Ed25519 keys (${e.message}): approve with the command instead`);
  }
}

async function decide(a, decision, file, reason) {
  const r = state.report;
  if (!r || !r.ok) throw new Error('the log did not verify');
  if (!r.approval_ttl_secs || r.approvers.length === 0) throw new Error('the verified log holds no approval policy of yours');
  const key = await importApproverKey(file);
  // Which approver this key is: the one whose public key verifies its signature.
  const probe = new TextEncoder().encode(`palisade approver probe ${a.id}`);
  const probeSig = await crypto.subtle.sign('Ed25519', key, probe);
  let approver = null;
  for (const ap of r.approvers) {
    const pub = await crypto.subtle.importKey('raw', b64bytes(ap.key), { name: 'Ed25519' }, false, ['verify']);
    if (await crypto.subtle.verify('Ed25519', pub, probeSig, probe)) { approver = ap; break; }
  }
  if (!approver) throw new Error('this key is none of the approvers your statement names');
  const now = Math.floor(Date.now() / 1000);
  // Whole seconds, as Palisade writes times: 2026-01-31T12:00:00Z.
  const iso = (t) => new Date(t * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const toSign = JSON.parse(approval_to_sign(JSON.stringify({
    tenant: state.session.tenant, cluster: state.session.cluster, request: a.id,
    request_index: a.index, request_digest: a.digest, decision,
    issued_at: iso(now), expires_at: iso(now + r.approval_ttl_secs), reason: reason || null,
  })));
  if (toSign.error) throw new Error(toSign.error);
  const sig = new Uint8Array(await crypto.subtle.sign('Ed25519', key, b64bytes(toSign.pae)));
  const envelope = { payload: toSign.payload, payloadType: toSign.payload_type, signatures: [{ keyid: key_id(approver.key), sig: b64(sig) }] };
  const resp = await fetch(`${base()}/approvals`, {
    method: 'POST', cache: 'no-store',
    headers: { Authorization: `Bearer ${state.session.token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(envelope),
  });
  const body = await resp.json().catch(() => ({}));
  if (resp.status !== 201) throw new Error(`the gateway answered ${resp.status}: ${body.detail || ''}`);
  return `${decision === 'approve' ? 'Approved' : 'Denied'} as ${approver.name}: logged at entry ${body.index}; the request is ${body.state}.`;
}

function start() {
  const raw = sessionStorage.getItem('palisade.session');
  if (!raw) { $('login').hidden = false; return; }
  state.session = JSON.parse(raw);
  $('who').textContent = `tenant ${state.session.tenant}, cluster ${state.session.cluster}`;
  load().catch((e) => { banner('The console could not verify the log.', [e.message]); status(''); });
}

$('login-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  sessionStorage.setItem('palisade.session', JSON.stringify({ tenant: $('login-tenant').value.trim(), cluster: $('login-cluster').value.trim(), token: $('login-token').value.trim() }));
  $('login').hidden = true;
  start();
});
for (const id of ['f-text', 'f-kind', 'f-outcome', 'f-from', 'f-to', 'f-problems']) $(id).addEventListener('input', filter);
$('filters').addEventListener('submit', (ev) => ev.preventDefault());
$('list').addEventListener('scroll', () => requestAnimationFrame(draw));
$('list').addEventListener('keydown', (ev) => {
  const page = Math.max(1, Math.floor($('list').clientHeight / ROW) - 1);
  const moves = { ArrowDown: 1, ArrowUp: -1, PageDown: page, PageUp: -page, Home: -Infinity, End: Infinity };
  if (ev.key in moves) {
    ev.preventDefault();
    select(Math.max(0, Math.min(state.shown.length - 1, state.selected + moves[ev.key])));
  } else if (ev.key === 'Enter') {
    $('detail').scrollIntoView();
  }
});
$('export-json').addEventListener('click', () => download('palisade-events.json', 'application/json', JSON.stringify({
  verified: { origin: state.report.origin, size: state.report.size, root: state.report.root, ok: state.report.ok, witnesses: state.report.witnesses },
  events: state.shown.map((r) => ({ index: r.index, event: r.event, problems: r.problems })),
}, null, 2)));
$('export-csv').addEventListener('click', () => download('palisade-events.csv', 'text/csv', csv()));
// What this browser verified before stays: it does not depend on the keys, and a
// "key change" must not wipe the memory that detects a fork or a rollback.
$('forget').addEventListener('click', () => { localStorage.removeItem(key('trust')); location.reload(); });

// The fragment leaves the address bar first, whatever happens next.
const fragment = location.hash;
history.replaceState(null, '', location.pathname);
init().then(
  () => fromFragment(fragment).then(start, (e) => { banner('This login link does not work.', [e.message]); $('login').hidden = false; }),
  (e) => banner('The verifier did not load: nothing on this page can be trusted.', [String(e)]));
