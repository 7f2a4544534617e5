// The qcache inspector's page. It holds no state of the cache: the server
// pushes the rows this page shows (Server-Sent Events, GET events), and the
// page renders them. No framework, nothing loaded from elsewhere.
(function () {
  'use strict';
  var $ = function (s) { return document.querySelector(s); };
  var meta = function (n) { return document.querySelector('meta[name="' + n + '"]').content; };
  var token = meta('qcache-token');
  var hideData = meta('qcache-hide-data') === 'true';
  var limit = 100;

  var prefix = '';
  var cursors = ['']; // cursors of the pages before this one, and this one's
  var nextCursor = '';
  var source = null;
  var skew = 0; // server clock minus ours, ms
  var rowsByKey = new Map(); // query + "\0" + id → tr
  var selected = null; // {id, query}
  var detailTimer = 0;

  function rowKey(r) { return r.query + '\u0000' + r.id; }

  function connect() {
    if (source) { source.close(); }
    var q = new URLSearchParams({ prefix: prefix, cursor: cursors[cursors.length - 1], limit: String(limit) });
    source = new EventSource('events?' + q.toString());
    setConn('connecting…', '');
    source.onopen = function () { setConn('live', 'live'); };
    source.onerror = function () { setConn('disconnected, retrying', 'down'); };
    source.addEventListener('page', function (e) { renderPage(JSON.parse(e.data)); });
    source.addEventListener('rows', function (e) {
      var m = JSON.parse(e.data);
      setSkew(m.now);
      m.rows.forEach(function (r) { updateRow(r, true); });
    });
    source.addEventListener('stats', function (e) { renderStats(JSON.parse(e.data)); });
  }

  function setConn(text, cls) { var c = $('#conn'); c.textContent = text; c.className = 'conn ' + cls; }
  function setSkew(now) { if (now) { skew = now - Date.now(); } }

  function renderPage(p) {
    setSkew(p.now);
    var tbody = $('#entries tbody');
    tbody.textContent = '';
    rowsByKey.clear();
    p.rows.forEach(function (r) { tbody.appendChild(makeRow(r)); });
    nextCursor = p.next_cursor || '';
    $('#next').disabled = !nextCursor;
    $('#prev').disabled = cursors.length <= 1;
    var from = p.rows.length ? p.offset + 1 : 0;
    $('#range').textContent = from + '–' + (p.offset + p.rows.length) + ' of ' + p.total;
    $('#empty').hidden = p.rows.length > 0;
    markSelected();
  }

  var columns = ['key', 'query', 'status', 'fetch', 'fresh', 'invalidated', 'observers', 'age', 'size', 'failures', 'error'];

  function makeRow(r) {
    var tr = document.createElement('tr');
    columns.forEach(function (c) {
      var td = document.createElement('td');
      td.className = c;
      if (['observers', 'age', 'size', 'failures'].indexOf(c) >= 0) { td.classList.add('num'); }
      tr.appendChild(td);
    });
    tr.addEventListener('click', function () { select(tr.dataset.id, tr.dataset.query); });
    fillRow(tr, r);
    return tr;
  }

  function fillRow(tr, r) {
    tr.dataset.id = r.id;
    tr.dataset.query = r.query;
    tr.dataset.updated = r.data_updated_at || '';
    rowsByKey.set(rowKey(r), tr);
    var cell = function (c) { return tr.querySelector('td.' + c); };
    cell('key').textContent = r.key_text;
    cell('key').title = r.key_text;
    cell('query').textContent = r.query;
    setText(cell('status'), r.status, 's-' + r.status);
    setText(cell('fetch'), r.fetch_status, 'f-' + r.fetch_status);
    setText(cell('fresh'), r.stale ? 'stale' : 'fresh', r.stale ? 'stale' : 'fresh');
    cell('invalidated').textContent = r.invalidated ? 'yes' : '';
    cell('observers').textContent = r.observers;
    cell('age').textContent = age(r.data_updated_at);
    cell('size').textContent = r.has_data ? bytes(r.data_size) : '';
    cell('failures').textContent = r.failure_count || '';
    cell('error').textContent = r.error || '';
    cell('error').title = r.error || '';
  }

  function setText(td, text, cls) {
    td.textContent = text;
    td.className = td.className.split(' ')[0] + ' ' + cls;
  }

  function updateRow(r, flash) {
    var tr = rowsByKey.get(rowKey(r));
    if (!tr) { return; }
    fillRow(tr, r);
    if (flash) {
      tr.classList.remove('changed');
      void tr.offsetWidth; // restart the highlight
      tr.classList.add('changed');
    }
    if (selected && selected.id === r.id && selected.query === r.query) { scheduleDetail(); }
  }

  function age(ms) {
    if (!ms) { return ''; }
    var s = Math.max(0, (Date.now() + skew - ms) / 1000);
    if (s < 60) { return s.toFixed(s < 10 ? 1 : 0) + ' s'; }
    if (s < 3600) { return Math.floor(s / 60) + ' min'; }
    return (s / 3600).toFixed(1) + ' h';
  }

  function bytes(n) {
    if (n < 0) { return '?'; }
    if (n < 1024) { return n + ' B'; }
    if (n < 1 << 20) { return (n / 1024).toFixed(1) + ' KiB'; }
    return (n / (1 << 20)).toFixed(1) + ' MiB';
  }

  function num(n) { return Number(n).toLocaleString('en-US'); }

  function renderStats(s) {
    setSkew(s.now);
    var c = s.client;
    var parts = [['entries', c.entries], ['observers', c.observers], ['hits', c.hits], ['misses', c.misses],
      ['fetches', c.fetches], ['errors', c.fetch_errors], ['evictions', c.evictions],
      ['changes/s', Math.round(s.changes_per_sec || 0)]];
    var t = $('#totals');
    t.textContent = '';
    parts.forEach(function (p) {
      var span = document.createElement('span');
      span.textContent = p[0] + ' ';
      var b = document.createElement('b');
      b.textContent = num(p[1]);
      span.appendChild(b);
      t.appendChild(span);
      t.appendChild(document.createTextNode('  '));
    });
    fillTable('#queries', s.queries, function (q) {
      return [q.name, num(q.entries), num(q.observers), num(q.in_flight), num(q.hits), num(q.misses),
        num(q.fetches), num(q.fetch_errors), num(q.retries), num(q.deduplicated)];
    });
    fillTable('#streams', s.streams, function (w) {
      return [w.url, w.connected ? 'up' : 'down', num(w.connects), num(w.messages), num(w.errors)];
    });
    var bus = $('#bus');
    if (s.bus) {
      bus.textContent = 'published ' + num(s.bus.published) + ', received ' + num(s.bus.received) +
        ', dropped ' + num(s.bus.dropped) + ', rejected ' + num(s.bus.rejected) + ', resyncs ' + num(s.bus.resyncs);
    }
  }

  function fillTable(sel, items, cells) {
    var tbody = $(sel + ' tbody');
    tbody.textContent = '';
    items.forEach(function (it) {
      var tr = document.createElement('tr');
      cells(it).forEach(function (v, i) {
        var td = document.createElement('td');
        td.textContent = v;
        if (i > 0 && /^[\d,]+$/.test(String(v))) { td.className = 'num'; }
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
  }

  // ---- the detail view ----

  function select(id, query) {
    selected = { id: id, query: query };
    markSelected();
    $('#detail').hidden = false;
    loadDetail();
  }

  function markSelected() {
    rowsByKey.forEach(function (tr) {
      tr.classList.toggle('selected', !!selected && tr.dataset.id === selected.id && tr.dataset.query === selected.query);
    });
  }

  function scheduleDetail() {
    if (detailTimer) { return; }
    detailTimer = setTimeout(function () { detailTimer = 0; loadDetail(); }, 300);
  }

  function loadDetail() {
    if (!selected) { return; }
    var want = selected;
    fetch('entries/' + want.id + '?query=' + encodeURIComponent(want.query), { headers: { Accept: 'application/json' } })
      .then(function (r) { return r.json().then(function (b) { return { ok: r.ok, body: b }; }); })
      .then(function (res) {
        if (selected !== want) { return; }
        if (!res.ok) { showDetailError(res.body.error || 'gone'); return; }
        renderDetail(res.body);
      })
      .catch(function (err) { showDetailError(String(err)); });
  }

  function showDetailError(msg) {
    var e = $('#d-error');
    e.textContent = msg;
    e.hidden = false;
  }

  function renderDetail(d) {
    $('#d-key').textContent = d.key_text;
    $('#d-error').hidden = !d.error;
    $('#d-error').textContent = d.error || '';
    $('#d-summary').textContent = d.query + ' · ' + d.status + ' · ' + d.fetch_status + ' · ' +
      (d.stale ? 'stale' : 'fresh') + (d.invalidated ? ' · invalidated' : '') + ' · ' + d.observers + ' observer(s)' +
      (d.has_data ? ' · data ' + age(d.data_updated_at) + ' old, ' + bytes(d.data_size) : ' · no data');
    if (!hideData) {
      $('#d-data').textContent = d.data_error ? 'cannot show: ' + d.data_error : (d.has_data ? d.data : '(no data)');
      var note = $('#d-data-note');
      note.hidden = !d.data_truncated;
      note.textContent = d.data_truncated ? 'Cut at the inspector\'s DataLimit: the data is larger.' : '';
    }
    var tbody = $('#d-history tbody');
    tbody.textContent = '';
    d.history.slice().reverse().forEach(function (h) {
      var tr = document.createElement('tr');
      [clock(h.at), h.event, h.status, h.fetch_status, h.error || ''].forEach(function (v, i) {
        var td = document.createElement('td');
        td.textContent = v;
        if (i === 4) { td.className = 'error'; td.title = v; }
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
    var hn = $('#d-history-note');
    hn.hidden = d.history.length > 0;
    hn.textContent = d.history_kept ? 'No change since this page opened.' : 'No history kept.';
  }

  function clock(ms) {
    var d = new Date(ms);
    var p = function (n, w) { return String(n).padStart(w || 2, '0'); };
    return p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds()) + '.' + p(d.getMilliseconds(), 3);
  }

  // ---- actions ----

  function act(action, scope) {
    var body = scope === 'prefix' ? { prefix: prefix } : { key: selected && selected.id };
    if (scope === 'key' && !selected) { return; }
    if (action === 'remove' && scope === 'prefix' && !window.confirm('Remove every entry under "' + prefix + '"?')) { return; }
    fetch('actions/' + action, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-Qcache-Token': token },
      body: JSON.stringify(body)
    })
      .then(function (r) { return r.json(); })
      .then(function (res) {
        flash(res.error ? action + ': ' + res.error : action + ': ' + res.entries + ' entr' + (res.entries === 1 ? 'y' : 'ies'));
        if (scope === 'key') { loadDetail(); }
      })
      .catch(function (err) { flash(action + ': ' + err); });
  }

  function flash(msg) {
    var f = $('#flash');
    f.textContent = msg;
    f.hidden = false;
    clearTimeout(flash.t);
    flash.t = setTimeout(function () { f.hidden = true; }, 3000);
  }

  // ---- wiring ----

  document.querySelectorAll('button[data-action]').forEach(function (b) {
    b.addEventListener('click', function () { act(b.dataset.action, b.dataset.scope); });
  });
  $('#d-close').addEventListener('click', function () { selected = null; $('#detail').hidden = true; markSelected(); });
  $('#next').addEventListener('click', function () { if (nextCursor) { cursors.push(nextCursor); connect(); } });
  $('#prev').addEventListener('click', function () { if (cursors.length > 1) { cursors.pop(); connect(); } });
  var typing = 0;
  $('#prefix').addEventListener('input', function (e) {
    clearTimeout(typing);
    typing = setTimeout(function () { prefix = e.target.value; cursors = ['']; connect(); }, 200);
  });
  setInterval(function () {
    rowsByKey.forEach(function (tr) { tr.querySelector('td.age').textContent = age(Number(tr.dataset.updated)); });
  }, 1000);
  connect();
})();
