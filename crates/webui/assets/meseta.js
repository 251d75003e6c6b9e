// meseta web UIs: live updates, actions, forms. Plain JavaScript, no
// dependencies. It never builds HTML from data: text goes in through
// textContent, and live updates swap in regions of the page as the server
// renders it again (escaped there; DOMParser runs no script).
(function () {
  'use strict';

  var $ = function (sel, root) { return (root || document).querySelector(sel); };
  var $$ = function (sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); };
  // Sent with every write: the server also checks Origin / Sec-Fetch-Site.
  var WRITE_HEADERS = { 'Content-Type': 'application/json', 'X-Requested-With': 'meseta-ui' };

  // -- the flash area ------------------------------------------------------

  function flash(kind, text, details) {
    var box = $('#flash');
    if (!box) return;
    box.replaceChildren();
    box.className = 'flash ' + kind;
    var line = document.createElement('div');
    line.textContent = text;
    box.appendChild(line);
    if (details && details.length) {
      var ul = document.createElement('ul');
      details.forEach(function (d) {
        var li = document.createElement('li');
        li.textContent = (d.path || '/') + ': ' + (d.errors || []).join('; ');
        ul.appendChild(li);
      });
      box.appendChild(ul);
    }
    box.hidden = false;
  }

  function clearFlash() {
    var box = $('#flash');
    if (box) { box.hidden = true; box.replaceChildren(); }
  }

  // -- live updates --------------------------------------------------------

  var live = { busy: false, queued: false, last: 0, timer: null };
  var MIN_GAP_MS = 600;

  function setLiveStatus(ok) {
    var s = $('#live-status');
    if (!s) return;
    s.textContent = ok ? 'live' : 'reconnecting…';
    s.classList.toggle('offline', !ok);
  }

  function scheduleRefresh() {
    if (live.timer) return;
    var wait = Math.max(0, MIN_GAP_MS - (Date.now() - live.last));
    live.timer = setTimeout(function () { live.timer = null; refresh(); }, wait);
  }

  function editing(region) {
    var a = document.activeElement;
    return a && region.contains(a) && a.matches('input, textarea, select');
  }

  function swapRegions(doc) {
    $$('[data-region]', doc).forEach(function (fresh) {
      var old = fresh.id && document.getElementById(fresh.id);
      if (!old || editing(old)) return;
      var checked = $$('input[type=checkbox]:checked', old).map(function (i) { return i.name + '\u0000' + i.value; });
      var open = $$('details[open]', old).map(function (d) { return d.id; }).filter(Boolean);
      var node = document.importNode(fresh, true);
      $$('input[type=checkbox]', node).forEach(function (i) {
        if (checked.indexOf(i.name + '\u0000' + i.value) >= 0) i.checked = true;
      });
      open.forEach(function (id) {
        var d = node.querySelector('#' + CSS.escape(id));
        if (d) d.open = true;
      });
      old.replaceWith(node);
    });
    if (doc.title) document.title = doc.title;
    document.dispatchEvent(new CustomEvent('meseta:refreshed'));
  }

  function refresh() {
    if (live.busy) { live.queued = true; return; }
    live.busy = true;
    live.last = Date.now();
    fetch(location.href, { headers: { 'X-Meseta-Live': '1' }, cache: 'no-store', credentials: 'same-origin' })
      .then(function (r) {
        if (!r.ok && r.status >= 500) throw new Error('HTTP ' + r.status);
        return r.text();
      })
      .then(function (html) {
        swapRegions(new DOMParser().parseFromString(html, 'text/html'));
        setLiveStatus(true);
      })
      .catch(function () { setLiveStatus(false); })
      .then(function () {
        live.busy = false;
        if (live.queued) { live.queued = false; scheduleRefresh(); }
      });
  }

  // Marathon's events that change what a page shows.
  var EVENT_TYPES = [
    'status_update_event', 'instance_changed_event', 'health_status_changed_event',
    'failed_health_check_event', 'unhealthy_instance_kill_event', 'api_post_event',
    'app_terminated_event', 'deployment_info', 'deployment_success', 'deployment_failed',
    'deployment_step_success', 'deployment_step_failure', 'group_change_success',
    'group_change_failed'
  ];

  function startLive() {
    var body = document.body;
    var mode = body.dataset.live;
    var interval = parseInt(body.dataset.interval, 10) || 0;
    if (mode === 'events' && window.EventSource) {
      var es = new EventSource(body.dataset.events);
      EVENT_TYPES.forEach(function (t) { es.addEventListener(t, scheduleRefresh); });
      es.addEventListener('open', function () { setLiveStatus(true); scheduleRefresh(); });
      es.addEventListener('error', function () { setLiveStatus(false); });
      if (interval > 0) setInterval(scheduleRefresh, interval);
    } else if (mode === 'poll' || mode === 'events') {
      setInterval(scheduleRefresh, interval || 2000);
    }
  }

  // -- writes --------------------------------------------------------------

  function parseJSON(text) {
    try { return JSON.parse(text); } catch (e) { return null; }
  }

  // Sends a write; resolves to {ok, status, json}. Messages go to the flash.
  function send(method, url, body, done) {
    return fetch(url, { method: method, headers: WRITE_HEADERS, body: body, credentials: 'same-origin' })
      .then(function (r) {
        return r.text().then(function (text) {
          var json = parseJSON(text);
          if (r.ok) {
            var what = done || 'Done';
            if (json && json.deploymentId) what += ' (deployment ' + json.deploymentId + ')';
            flash('ok', what);
          } else {
            flash('error', (json && json.message) || ('HTTP ' + r.status + ' ' + text), json && json.details);
          }
          return { ok: r.ok, status: r.status, json: json };
        });
      })
      .catch(function (e) {
        flash('error', 'The request failed: ' + e);
        return { ok: false, status: 0, json: null };
      });
  }

  function afterSuccess(el) {
    if (el.dataset.go) location.assign(el.dataset.go);
    else scheduleRefresh();
  }

  // Buttons: <button data-method data-url [data-body] [data-collect=name] [data-confirm] [data-done] [data-go]>
  document.addEventListener('click', function (ev) {
    var b = ev.target.closest('button[data-method]');
    if (!b) return;
    ev.preventDefault();
    var body = b.dataset.body;
    if (b.dataset.collect) {
      var ids = $$('input[name="' + b.dataset.collect + '"]:checked').map(function (i) { return i.value; });
      if (!ids.length) { flash('error', 'Select at least one task first.'); return; }
      body = JSON.stringify({ ids: ids });
    }
    if (b.dataset.confirm && !window.confirm(b.dataset.confirm)) return;
    b.disabled = true;
    send(b.dataset.method, b.dataset.url, body, b.dataset.done).then(function (r) {
      b.disabled = false;
      if (r.ok) afterSuccess(b);
    });
  });

  // "Select all" checkboxes: <input type=checkbox data-select-all=name>
  document.addEventListener('change', function (ev) {
    var all = ev.target.closest('input[data-select-all]');
    if (!all) return;
    $$('input[name="' + all.dataset.selectAll + '"]').forEach(function (i) { i.checked = all.checked; });
  });

  // Small forms: <form data-method data-url> whose named inputs become one JSON object.
  document.addEventListener('submit', function (ev) {
    var f = ev.target;
    if (!f.matches('form[data-method]')) return;
    ev.preventDefault();
    if (f.id === 'app-editor') { submitEditor(f); return; }
    var obj = {};
    $$('input[name], select[name]', f).forEach(function (i) {
      if (i.type === 'number') obj[i.name] = Number(i.value);
      else obj[i.name] = i.value;
    });
    if (f.dataset.confirm && !window.confirm(f.dataset.confirm)) return;
    send(f.dataset.method, f.dataset.url, JSON.stringify(obj), f.dataset.done).then(function (r) {
      if (r.ok) afterSuccess(f);
    });
  });

  // Filters that apply while typing: <form data-autosubmit> (GET).
  var filterTimer = null;
  document.addEventListener('input', function (ev) {
    var f = ev.target.closest('form[data-autosubmit]');
    if (!f) return;
    clearTimeout(filterTimer);
    filterTimer = setTimeout(function () {
      var params = new URLSearchParams();
      new FormData(f).forEach(function (v, k) { if (v !== '') params.append(k, v); });
      var q = params.toString();
      history.replaceState(null, '', location.pathname + (q ? '?' + q : ''));
      refresh();
    }, 250);
  });

  // -- the app editor: form fields and the JSON document kept in step -----

  function getPath(obj, path) {
    return path.split('.').reduce(function (o, k) { return o == null ? undefined : o[k]; }, obj);
  }

  function setPath(obj, path, value) {
    var keys = path.split('.');
    var o = obj;
    for (var i = 0; i < keys.length - 1; i++) {
      if (o[keys[i]] == null || typeof o[keys[i]] !== 'object') o[keys[i]] = {};
      o = o[keys[i]];
    }
    if (value === undefined) delete o[keys[keys.length - 1]];
    else o[keys[keys.length - 1]] = value;
  }

  // Field kinds: text, number, lines (KEY=value lines -> object),
  // ports (comma list -> portDefinitions), constraints (field:OP[:value] lines), docker.
  function fieldValue(el) {
    var v = el.value.trim();
    switch (el.dataset.kind) {
      case 'number':
        return v === '' ? undefined : Number(v);
      case 'lines': {
        if (v === '') return undefined;
        var o = {};
        v.split('\n').forEach(function (line) {
          line = line.trim();
          if (!line) return;
          var i = line.indexOf('=');
          if (i < 0) o[line] = '';
          else o[line.slice(0, i).trim()] = line.slice(i + 1);
        });
        return o;
      }
      case 'ports':
        if (v === '') return undefined;
        return v.split(',').map(function (p) { return p.trim(); }).filter(Boolean).map(function (p) {
          var n = Number(p);
          return { port: isNaN(n) ? p : n, protocol: 'tcp' };
        });
      case 'constraints':
        if (v === '') return undefined;
        return v.split('\n').map(function (l) { return l.trim(); }).filter(Boolean).map(function (l) {
          return l.split(':');
        });
      default:
        return v === '' ? undefined : v;
    }
  }

  function showValue(el, value) {
    switch (el.dataset.kind) {
      case 'lines':
        el.value = value && typeof value === 'object'
          ? Object.keys(value).map(function (k) {
            var x = value[k];
            return k + '=' + (typeof x === 'string' ? x : JSON.stringify(x));
          }).join('\n')
          : '';
        break;
      case 'ports':
        el.value = Array.isArray(value) ? value.map(function (p) { return p && p.port; }).join(', ') : '';
        break;
      case 'constraints':
        el.value = Array.isArray(value) ? value.map(function (c) { return Array.isArray(c) ? c.join(':') : ''; }).join('\n') : '';
        break;
      default:
        el.value = value === undefined || value === null ? '' : String(value);
    }
  }

  function editorParts(form) {
    return { json: $('textarea[name=json]', form), fields: $$('[data-field]', form), status: $('#json-status', form) };
  }

  function fieldsToJson(form) {
    var p = editorParts(form);
    var doc = parseJSON(p.json.value || '{}');
    if (!doc || typeof doc !== 'object') { p.status.textContent = 'The JSON is not valid: fix it or clear it.'; return; }
    p.fields.forEach(function (el) {
      var path = el.dataset.field;
      var value = fieldValue(el);
      if (el.dataset.kind === 'docker') {
        if (value === undefined) {
          if (getPath(doc, 'container.docker')) delete doc.container;
        } else {
          setPath(doc, 'container.type', 'DOCKER');
          setPath(doc, 'container.docker.image', value);
        }
        return;
      }
      setPath(doc, path, value);
    });
    p.json.value = JSON.stringify(doc, null, 2);
    p.status.textContent = '';
  }

  function jsonToFields(form) {
    var p = editorParts(form);
    var doc = parseJSON(p.json.value || '{}');
    if (!doc || typeof doc !== 'object') { p.status.textContent = 'The JSON is not valid yet.'; return; }
    p.status.textContent = '';
    p.fields.forEach(function (el) {
      var path = el.dataset.kind === 'docker' ? 'container.docker.image' : el.dataset.field;
      showValue(el, getPath(doc, path));
    });
  }

  function clearFieldErrors(form) {
    $$('.field-error', form).forEach(function (e) { e.textContent = ''; });
    $$('.field.invalid', form).forEach(function (e) { e.classList.remove('invalid'); });
  }

  // Puts each 422 detail next to the field it is about, the rest under the JSON.
  function showFieldErrors(form, details) {
    var rest = [];
    (details || []).forEach(function (d) {
      var path = d.path || '/';
      var target = null;
      $$('[data-field]', form).forEach(function (el) {
        var p = '/' + el.dataset.field.split('.')[0];
        if (path === p || path.indexOf(p + '/') === 0 || path.indexOf(p + '(') === 0 || path.indexOf(p + '[') === 0) target = el;
      });
      var msg = (d.errors || []).join('; ');
      if (target) {
        var box = target.closest('.field');
        box.classList.add('invalid');
        var err = $('.field-error', box);
        err.textContent = (err.textContent ? err.textContent + ' ' : '') + (path === '/' + target.dataset.field.split('.')[0] ? '' : path + ': ') + msg;
      } else {
        rest.push(path + ': ' + msg);
      }
    });
    var general = $('#json-errors', form);
    if (general) general.textContent = rest.join('\n');
  }

  function submitEditor(form) {
    var p = editorParts(form);
    var doc = parseJSON(p.json.value);
    clearFieldErrors(form);
    if (!doc || typeof doc !== 'object') {
      p.status.textContent = 'The JSON is not valid: nothing was sent.';
      return;
    }
    var body = doc;
    // An edit sends only what changed (a partial update keeps the rest,
    // hidden secret values included).
    if (form.dataset.original) {
      var original = parseJSON(form.dataset.original) || {};
      body = {};
      Object.keys(doc).forEach(function (k) {
        if (JSON.stringify(doc[k]) !== JSON.stringify(original[k])) body[k] = doc[k];
      });
      // A removed list or object is sent empty (null would not parse).
      Object.keys(original).forEach(function (k) {
        if (k in doc) return;
        if (Array.isArray(original[k])) body[k] = [];
        else if (original[k] && typeof original[k] === 'object') body[k] = {};
      });
      if (!Object.keys(body).length) { flash('ok', 'Nothing changed.'); return; }
    }
    var button = $('button[type=submit]', form);
    if (button) button.disabled = true;
    send(form.dataset.method, form.dataset.url, JSON.stringify(body), form.dataset.done).then(function (r) {
      if (button) button.disabled = false;
      if (r.ok) {
        location.assign(form.dataset.go || ('/ui/app' + (doc.id && doc.id.charAt(0) === '/' ? doc.id : '/' + (doc.id || ''))));
      } else if (r.json && r.json.details) {
        showFieldErrors(form, r.json.details);
      }
    });
  }

  function startEditor() {
    var form = $('#app-editor');
    if (!form) return;
    jsonToFields(form);
    $$('[data-field]', form).forEach(function (el) {
      el.addEventListener('input', function () { fieldsToJson(form); });
    });
    editorParts(form).json.addEventListener('input', function () { jsonToFields(form); });
  }

  document.addEventListener('DOMContentLoaded', function () {
    startLive();
    startEditor();
    var close = $('#flash');
    if (close) close.addEventListener('click', clearFlash);
  });
})();
