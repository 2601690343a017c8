// worktrain console: live updates. The page's live part (#live, with data-live = the URL
// of its fragment and data-stream = an SSE URL) is re-fetched whenever the stream says
// something changed. The stream carries no content; the server renders (and sanitises)
// everything. No other script runs on the console.
(function () {
  'use strict';
  var live = document.getElementById('live');
  if (!live || !window.EventSource || !window.fetch) { return; }
  var fragment = live.getAttribute('data-live');
  var stream = live.getAttribute('data-stream');
  var timer = null;
  var inflight = false;
  var again = false;
  var refreshed = 0;

  function busy() {
    // Never replace a form the operator is filling in.
    return live.querySelector('details[open]') !== null ||
      (document.activeElement && live.contains(document.activeElement) &&
       /^(INPUT|TEXTAREA|SELECT)$/.test(document.activeElement.tagName));
  }

  function refresh() {
    if (busy()) { schedule(1000); return; }
    if (inflight) { again = true; return; }
    inflight = true;
    fetch(fragment, { credentials: 'same-origin', headers: { 'Accept': 'text/html' } })
      .then(function (r) {
        if (r.redirected || r.status === 401) { window.location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (typeof html === 'string' && !busy()) {
          live.innerHTML = html;
          refreshed += 1;
          live.setAttribute('data-refreshed', String(refreshed));
        }
      })
      .catch(function () { /* the next change retries */ })
      .then(function () {
        inflight = false;
        if (again) { again = false; schedule(50); }
      });
  }

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(refresh, ms);
  }

  var es = new EventSource(stream);
  es.addEventListener('open', function () { document.body.setAttribute('data-live', 'on'); });
  es.addEventListener('error', function () { document.body.setAttribute('data-live', 'off'); });
  es.addEventListener('changed', function (e) {
    // The first event repeats what the page already shows.
    if (e.data === live.getAttribute('data-mark')) { return; }
    live.setAttribute('data-mark', e.data);
    schedule(60);
  });
})();
