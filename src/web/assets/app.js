// The control room's live updates. Every page works without this script (forms post and
// redirect); with it, a page follows the board: the server says "changed" on /events
// (Server-Sent Events), the page fetches itself again and swaps its <main>, keeping what a
// person is typing (field values, focus, the cursor) and which <details> are open. When the
// event stream fails, the page polls every few seconds instead.
//
// No inline script, no eval, no innerHTML of board text: the fetched page is parsed by
// DOMParser (scripts in it never run) and its <main> node adopted as is.
(function () {
  'use strict';

  var POLL_MS = 4000;
  var main = document.getElementById('main');
  if (!main || main.getAttribute('data-live') === 'off' || !window.fetch) {
    return;
  }
  var root = document.documentElement;
  var indicator = document.getElementById('live');
  var fetching = false;
  var again = false;
  var pollTimer = null;
  var source = null;

  function setState(state, title) {
    root.setAttribute('data-live', state);
    if (indicator) {
      indicator.setAttribute('title', title);
      indicator.textContent = state === 'sse' ? 'live' : state === 'polling' ? 'polling'
        : state === 'paused' ? 'paused' : 'connecting';
    }
  }

  // A key for a form field that survives the swap: its id, else its form's action and name.
  function fieldKey(el) {
    if (el.id) {
      return '#' + el.id;
    }
    var form = el.form ? el.form.getAttribute('action') || '' : '';
    return form + '|' + (el.name || '');
  }

  // A key for a <details>: its id, else its parent's.
  function detailsKey(d) {
    if (d.id) {
      return '#' + d.id;
    }
    return d.parentElement && d.parentElement.id ? '^' + d.parentElement.id : null;
  }

  function isEditable(el) {
    if (el.tagName === 'TEXTAREA' || el.tagName === 'SELECT') {
      return true;
    }
    return el.tagName === 'INPUT' && ['hidden', 'submit', 'button'].indexOf(el.type) < 0;
  }

  // What the person has done to the page: values changed from what the server sent, the
  // focused field with its selection, open <details>.
  function remember() {
    var kept = { values: {}, focus: null, open: {} };
    var fields = main.querySelectorAll('input, textarea, select');
    for (var i = 0; i < fields.length; i++) {
      var el = fields[i];
      if (!isEditable(el)) {
        continue;
      }
      var changed = el.type === 'checkbox' || el.type === 'radio'
        ? el.checked !== el.defaultChecked
        : el.tagName === 'SELECT' ? !el.options[el.selectedIndex] || !el.options[el.selectedIndex].defaultSelected
        : el.value !== el.defaultValue;
      if (changed) {
        kept.values[fieldKey(el)] = el.type === 'checkbox' || el.type === 'radio' ? el.checked : el.value;
      }
    }
    var active = document.activeElement;
    if (active && main.contains(active) && isEditable(active)) {
      kept.focus = { key: fieldKey(active), start: active.selectionStart, end: active.selectionEnd };
    }
    var details = main.querySelectorAll('details[open]');
    for (var j = 0; j < details.length; j++) {
      var open = detailsKey(details[j]);
      if (open) {
        kept.open[open] = true;
      }
    }
    return kept;
  }

  function restore(fresh, kept) {
    var fields = fresh.querySelectorAll('input, textarea, select');
    for (var i = 0; i < fields.length; i++) {
      var el = fields[i];
      var key = fieldKey(el);
      if (!isEditable(el)) {
        continue;
      }
      if (Object.prototype.hasOwnProperty.call(kept.values, key)) {
        if (el.type === 'checkbox' || el.type === 'radio') {
          el.checked = kept.values[key];
        } else {
          el.value = kept.values[key];
        }
      }
      if (kept.focus && kept.focus.key === key) {
        el.focus();
        try {
          if (kept.focus.start !== null && kept.focus.start !== undefined) {
            el.setSelectionRange(kept.focus.start, kept.focus.end);
          }
        } catch (e) {
          // Fields without a selection (number, email) keep the cursor where it lands.
        }
      }
    }
    var details = fresh.querySelectorAll('details');
    for (var j = 0; j < details.length; j++) {
      var key = detailsKey(details[j]);
      if (key && kept.open[key]) {
        details[j].open = true;
      }
    }
  }

  function swap(html) {
    var doc = new DOMParser().parseFromString(html, 'text/html');
    var fresh = doc.getElementById('main');
    if (!fresh) {
      return;
    }
    var kept = remember();
    var scrollY = window.scrollY;
    fresh = document.adoptNode(fresh);
    main.parentNode.replaceChild(fresh, main);
    main = fresh;
    restore(main, kept);
    if (doc.title) {
      document.title = doc.title;
    }
    window.scrollTo(window.scrollX, scrollY);
    root.setAttribute('data-refreshed', String(Date.now()));
  }

  function refresh() {
    if (fetching) {
      again = true;
      return;
    }
    fetching = true;
    fetch(window.location.pathname + window.location.search, {
      credentials: 'same-origin',
      headers: { 'X-Vine-Live': '1' },
      cache: 'no-store'
    }).then(function (resp) {
      if (resp.redirected && resp.url.indexOf('/login') >= 0) {
        // Signed out meanwhile: show the login form.
        window.location.assign(resp.url);
        return null;
      }
      return resp.ok ? resp.text() : null;
    }).then(function (html) {
      if (html) {
        swap(html);
      }
    }).catch(function () {
      // The server is away; the next event or poll tries again.
    }).then(function () {
      fetching = false;
      if (again) {
        again = false;
        refresh();
      }
    });
  }

  function startPolling() {
    if (pollTimer === null) {
      pollTimer = window.setInterval(refresh, POLL_MS);
    }
    setState('polling', 'Live updates every few seconds (the event stream is not available)');
  }

  function stopPolling() {
    if (pollTimer !== null) {
      window.clearInterval(pollTimer);
      pollTimer = null;
    }
  }

  function listen() {
    if (document.hidden) {
      // A tab opened in the background listens once it is shown.
      setState('paused', 'Live updates paused while the tab is hidden');
      return;
    }
    if (!window.EventSource) {
      startPolling();
      return;
    }
    var since = main.getAttribute('data-version') || '';
    source = new EventSource('/events?since=' + encodeURIComponent(since));
    source.addEventListener('open', function () {
      stopPolling();
      setState('sse', 'Live: the page follows the board');
    });
    source.addEventListener('change', refresh);
    source.addEventListener('error', function () {
      // The browser reconnects by itself unless the stream was refused; poll meanwhile.
      startPolling();
      if (source.readyState === EventSource.CLOSED) {
        source = null;
      }
    });
  }

  function stopListening() {
    if (source) {
      source.close();
      source = null;
    }
    stopPolling();
  }

  // A browser keeps about six connections per server: a hidden tab gives its stream back
  // (and catches up when shown again, its stream opened with the version it shows), and a
  // page restored from the back-forward cache listens again.
  document.addEventListener('visibilitychange', function () {
    if (document.hidden) {
      stopListening();
      setState('paused', 'Live updates paused while the tab is hidden');
    } else if (!source) {
      listen();
    }
  });
  window.addEventListener('pageshow', function (e) {
    if (e.persisted && !source) {
      listen();
    }
  });

  setState('connecting', 'Connecting for live updates');
  listen();
  window.addEventListener('pagehide', function () { if (source) { source.close(); source = null; } });
})();
