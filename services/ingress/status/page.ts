// The status page: plain HTML, CSS and a script that polls `/status/data` and redraws the tables
// in place. The script writes every figure and name with `textContent`, never as HTML, and the
// Content-Security-Policy allows scripts and styles from this origin only.
//
// A credential for `/status/data` (an OAuth access token or an API key with the admin scope) is
// given in the address's fragment, `/status#token=...` (a fragment never reaches a server or its
// logs), or pasted into the form the page shows on 401/403; it is kept for the browser tab only
// (sessionStorage) and the fragment is removed from the address bar.

export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mcp-cluster status</title>
<link rel="stylesheet" href="/status/page.css">
<script src="/status/page.js" defer></script>
</head>
<body>
<header>
  <h1>mcp-cluster</h1>
  <div id="summary" class="summary"></div>
  <div id="updated" class="updated">connecting…</div>
</header>
<div id="problems" class="problems" hidden></div>
<form id="login" class="login" hidden>
  <p id="login-reason"></p>
  <label>Access token or API key with the admin scope
    <input id="token" type="password" autocomplete="off" spellcheck="false"></label>
  <button type="submit">Show figures</button>
</form>
<main>
  <section><h2>Queues</h2>
    <p class="hint">Calls waiting per pool and priority; oldest wait is how long the head of the line has waited now.
    Queue wait p50 / p95: calls of this replica taken by workers.</p>
    <table id="pools"><thead><tr><th>pool</th><th>priority</th><th class="n">waiting</th><th class="n">in flight</th>
    <th class="n">oldest wait</th><th class="n">queue wait p50</th><th class="n">p95</th></tr></thead><tbody></tbody></table>
  </section>
  <section><h2>Tools</h2>
    <p class="hint">Calls answered by this replica; calls/s and latency over the last minute.</p>
    <table id="tools"><thead><tr><th>tool</th><th class="n">calls</th><th class="n">errors</th><th class="n">calls/s</th>
    <th class="n">p50</th><th class="n">p95</th></tr></thead><tbody></tbody></table>
  </section>
  <section><h2>Workers and backends</h2>
    <p class="hint" id="workers-hint">Every worker of the cluster.</p>
    <table id="workers"><thead><tr><th>worker</th><th>pool</th><th>state</th><th class="n">calls held</th></tr></thead><tbody></tbody></table>
    <table id="backends"><thead><tr><th>pool</th><th>worker</th><th>backend</th><th>health</th><th>breaker</th>
    <th class="n">in flight</th></tr></thead><tbody></tbody></table>
  </section>
  <section><h2>Busiest tenants</h2>
    <p class="hint">Over every ingress replica (shares ledger); demand averaged over about 2 s.</p>
    <table id="tenants"><thead><tr><th>tenant</th><th>pool</th><th class="n">in flight</th><th class="n">waiting</th>
    <th class="n">calls/s asked</th></tr></thead><tbody></tbody></table>
  </section>
  <section><h2>Batch jobs</h2>
    <table id="jobs"><thead><tr><th>job</th><th>tenant</th><th>pool</th><th>status</th><th>progress</th>
    <th class="n">rows</th></tr></thead><tbody></tbody></table>
  </section>
  <section><h2>Autoscaler</h2>
    <p class="hint">The last decision per pool of every autoscaler running, whichever process it runs in.</p>
    <table id="autoscaler"><thead><tr><th>pool</th><th class="n">replicas</th><th class="n">desired</th><th>reason</th>
    <th class="n">changes</th><th>error</th><th>autoscaler</th></tr></thead><tbody></tbody></table>
  </section>
</main>
</body>
</html>
`;

export const PAGE_STYLE = `
:root { --fg: #1d2330; --muted: #6b7385; --line: #e3e6ee; --bg: #f6f7fa; --card: #fff;
  --ok: #1f8a4c; --warn: #b7791f; --bad: #c53030; --accent: #3b5bdb; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; align-items: baseline; gap: 24px; padding: 14px 24px; background: var(--card); border-bottom: 1px solid var(--line); }
h1 { font-size: 18px; margin: 0; }
h2 { font-size: 15px; margin: 0 0 4px; }
.summary { color: var(--muted); flex: 1; }
.summary b { color: var(--fg); font-weight: 600; }
.updated { color: var(--muted); font-variant-numeric: tabular-nums; }
.updated.stale { color: var(--bad); }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 16px; padding: 16px 24px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; overflow-x: auto; }
.hint { color: var(--muted); margin: 0 0 8px; font-size: 12px; }
table { width: 100%; border-collapse: collapse; margin-bottom: 8px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { font-weight: 600; color: var(--muted); font-size: 12px; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
td.empty { color: var(--muted); font-style: italic; }
td.pool { vertical-align: top; font-weight: 600; }
.ok { color: var(--ok); } .warn { color: var(--warn); } .bad { color: var(--bad); }
progress { width: 90px; height: 10px; vertical-align: middle; accent-color: var(--accent); }
.problems { margin: 12px 24px 0; padding: 8px 12px; border: 1px solid #f0c36d; background: #fff8e6; border-radius: 6px; }
.login { margin: 12px 24px 0; padding: 12px; background: var(--card); border: 1px solid var(--line); border-radius: 6px; }
.login input { display: block; width: 420px; max-width: 100%; margin: 6px 0; padding: 6px; font: inherit; }
`;

export const PAGE_SCRIPT = `'use strict';
(() => {
  const KEY = 'mcp-cluster-status-token';
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get('token')) {
    sessionStorage.setItem(KEY, fragment.get('token'));
    history.replaceState(null, '', location.pathname + location.search);
  }
  const $ = (id) => document.getElementById(id);
  let refreshMs = 2000;
  let lastOk = 0;

  function cell(text, className) {
    const td = document.createElement('td');
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }
  function ms(v) {
    if (v === null || v === undefined) return '–';
    if (v === 0) return '0';
    if (v >= 10000) return (v / 1000).toFixed(1) + ' s';
    if (v >= 100) return Math.round(v) + ' ms';
    return v.toFixed(1) + ' ms';
  }
  function num(v, digits) {
    if (v === null || v === undefined) return '–';
    return digits ? v.toFixed(digits) : String(Math.round(v));
  }
  /** Replaces the rows of table \`id\`: one per item, or one saying \`empty\`. */
  function fill(id, items, row, empty) {
    const body = $(id).tBodies[0];
    const rows = items.map((item) => {
      const tr = document.createElement('tr');
      row(tr, item);
      return tr;
    });
    if (rows.length === 0) {
      const tr = document.createElement('tr');
      const td = cell(empty, 'empty');
      td.colSpan = $(id).tHead.rows[0].cells.length;
      tr.append(td);
      rows.push(tr);
    }
    body.replaceChildren(...rows);
  }

  function render(d) {
    refreshMs = Math.max(250, d.refreshMs || 2000);
    const summary = $('summary');
    summary.replaceChildren();
    const add = (label, value) => {
      const b = document.createElement('b');
      b.textContent = value;
      summary.append(label + ' ', b, '   ');
    };
    add('broker', d.replica.broker);
    add('calls in flight here', String(d.replica.inFlight));
    add('worker streams', String(d.replica.workerStreams));
    const rowsOfPools = [];
    for (const p of d.pools) {
      if (!p.priorities) rowsOfPools.push({ pool: p.pool, missing: true, p });
      else for (const q of p.priorities) rowsOfPools.push({ pool: p.pool, q, p });
    }
    // The pool's name and its queue wait span the pool's priority rows.
    fill('pools', rowsOfPools, (tr, r) => {
      tr.dataset.pool = r.pool;
      const first = r.missing || r.q === r.p.priorities[0];
      const span = r.missing ? 1 : r.p.priorities.length;
      const spanning = (td) => {
        td.rowSpan = span;
        return td;
      };
      if (first) tr.append(spanning(cell(r.pool, 'pool')));
      if (r.missing) {
        tr.append(cell('broker did not answer', 'bad'), cell(''), cell(''), cell(''));
      } else {
        tr.dataset.priority = r.q.priority;
        tr.append(cell(r.q.priority), cell(num(r.q.depth), 'n depth'), cell(num(r.q.inFlight), 'n'),
          cell(ms(r.q.oldestWaitMs), 'n' + (r.q.oldestWaitMs > 5000 ? ' warn' : '')));
      }
      if (first) tr.append(spanning(cell(ms(r.p.waitP50Ms), 'n')), spanning(cell(ms(r.p.waitP95Ms), 'n')));
    }, 'no pools');
    fill('tools', d.tools, (tr, t) => {
      tr.dataset.tool = t.tool;
      tr.append(cell(t.tool), cell(num(t.calls), 'n calls'), cell(num(t.errors), 'n' + (t.errors ? ' warn' : '')),
        cell(num(t.callsPerS, 2), 'n rate'), cell(ms(t.p50Ms), 'n'), cell(ms(t.p95Ms), 'n'));
    }, 'no tools');
    // Workers, backends and autoscaler come from the roles ledger; null when it cannot be read.
    const unavailable = d.workers === null;
    $('workers-hint').textContent = unavailable
      ? 'Figures unavailable: the roles ledger on the broker cannot be read (see above).'
      : 'Every worker of the cluster, whichever process it runs in, and each backend endpoint as that worker sees it (#index host:port).';
    fill('workers', d.workers || [], (tr, w) => {
      tr.dataset.pool = w.pool;
      tr.dataset.worker = w.worker;
      tr.append(cell(w.worker), cell(w.pool), cell(w.state, w.state === 'running' ? 'ok' : 'warn'),
        cell(num(w.inFlight) + ' / ' + num(w.maxInFlight), 'n'));
    }, unavailable ? 'figures unavailable' : 'no worker runs');
    fill('backends', d.backends || [], (tr, b) => {
      tr.dataset.pool = b.pool;
      tr.dataset.worker = b.worker;
      tr.append(cell(b.pool), cell(b.worker), cell('#' + b.backend + ' ' + b.endpoint),
        cell(b.healthy ? 'healthy' : 'unhealthy', b.healthy ? 'ok' : 'bad'),
        cell(b.breaker, b.breaker === 'closed' ? 'ok' : b.breaker === 'open' ? 'bad' : 'warn'),
        cell(num(b.inFlight) + ' / ' + num(b.maxConcurrency), 'n'));
    }, unavailable ? 'figures unavailable' : 'no backend');
    fill('tenants', d.tenants, (tr, t) => {
      tr.dataset.tenant = t.tenant;
      tr.append(cell(t.tenant), cell(t.pool), cell(num(t.inFlight), 'n'), cell(num(t.waiting), 'n'), cell(num(t.demandPerS, 1), 'n'));
    }, 'no tenant active');
    fill('jobs', d.jobs || [], (tr, j) => {
      tr.dataset.job = j.id;
      const bar = document.createElement('progress');
      bar.max = Math.max(1, j.total);
      bar.value = j.completed + j.failed;
      const td = document.createElement('td');
      td.append(bar);
      const id = cell(j.id.length > 16 ? j.id.slice(0, 15) + '…' : j.id);
      id.title = j.id;
      tr.append(id, cell(j.tenant), cell(j.pool), cell(j.status.replace('_', ' ')), td,
        cell(j.completed + (j.failed ? ' + ' + j.failed + ' failed' : '') + ' / ' + j.total, 'n'));
    }, d.jobs ? 'no batch jobs' : 'this replica serves no batch jobs');
    fill('autoscaler', d.autoscaler || [], (tr, a) => {
      tr.dataset.pool = a.pool;
      tr.append(cell(a.pool), cell(num(a.current), 'n'), cell(num(a.desired), 'n'), cell(a.reason || '–'),
        cell(num(a.changes), 'n'), cell(a.error || '', a.error ? 'bad' : ''), cell(a.autoscaler + ' (' + a.provider + ')'));
    }, d.autoscaler ? 'no autoscaler runs' : 'figures unavailable');
    const problems = $('problems');
    problems.hidden = d.problems.length === 0;
    problems.textContent = d.problems.join('; ');
  }

  function showLogin(reason) {
    $('login').hidden = false;
    $('login-reason').textContent = reason;
  }
  $('login').addEventListener('submit', (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $('token').value.trim());
    $('login').hidden = true;
    poll();
  });

  let timer;
  async function poll() {
    clearTimeout(timer);
    const token = sessionStorage.getItem(KEY);
    try {
      const res = await fetch('/status/data', {
        headers: token ? { authorization: 'Bearer ' + token } : {},
        cache: 'no-store',
      });
      if (res.status === 401 || res.status === 403) {
        const body = await res.json().catch(() => ({}));
        showLogin((res.status === 401 ? 'A credential is needed' : 'This credential lacks the admin scope') +
          (body.error_description ? ': ' + body.error_description : '.'));
        $('updated').textContent = 'not signed in';
        return;
      }
      if (!res.ok) throw new Error('HTTP ' + res.status);
      render(await res.json());
      lastOk = Date.now();
      $('updated').className = 'updated';
      $('updated').textContent = 'updated ' + new Date(lastOk).toLocaleTimeString();
    } catch (err) {
      $('updated').className = 'updated stale';
      $('updated').textContent = 'cannot reach the ingress (' + err.message + ')' +
        (lastOk ? '; figures from ' + new Date(lastOk).toLocaleTimeString() : '');
    }
    timer = setTimeout(poll, refreshMs);
  }
  poll();
})();
`;
