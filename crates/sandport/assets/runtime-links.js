/*
 * sandport runtime links: browser script for the app's HTML pages.
 *
 * The gateway serves this file at /_sandport/runtime-links.{hash}.js and
 * injects it at the start of <head>:
 *
 *   <script src="/_sandport/runtime-links.{hash}.js"
 *           data-runtime-domain="runtime.example.com"></script>
 *
 * It turns the sandbox-local URLs an agent app hands to the browser
 * (http://localhost:5000/, ws://localhost:8000/sockets/...) into URLs the
 * browser can reach through the gateway. The server side stays the source of
 * truth for runtime URLs; this script is the safety net for URLs it cannot see.
 *
 * Data attributes (read once from document.currentScript at load):
 *
 *   data-runtime-domain    Domain under which runtime hosts live. The runtime
 *                          host of a port is {port}-{convId}.{runtime-domain},
 *                          reached with the page's scheme and the page's port
 *                          (if the page URL has one). Default:
 *                          "runtime." + the page's hostname.
 *   data-default-settings  "on" enables the settings helpers below. Default:
 *                          off (they are specific to the agent app's API).
 *   data-default-model     Model used by the settings helpers when the model
 *                          list offers no preferred one. Default:
 *                          global.anthropic.claude-opus-4-5-20251101-v1:0
 *   data-logout-url        Same-origin path (e.g. "/_logout"). When set, an
 *                          app button whose text is "Logout" navigates there.
 *                          Default: unset (the app's button is left alone).
 *
 * Rewrite rules (rewriteUrl): a URL is rewritten only on a conversation page
 * (path contains /conversations/{uuid or 32 hex}); convId = that id without
 * hyphens, lower case. Its host must carry an explicit port 1-65535 and be
 *   - sandbox-local: localhost, 127.0.0.0/8, 0.0.0.0, [::1],
 *     host.docker.internal, 10/8, 172.16/12, 192.168/16; or
 *   - the page's own hostname with a port other than the page's (the editor
 *     link form http://{app host}:{port}/?tkn=...).
 * The page's own origin is never rewritten, nor is any other host.
 *   path starts /api/ or /sockets/ -> {page scheme}//{page host}/runtime/{convId}/{port}{path}
 *                                     (same origin, so the app's cookies flow)
 *   anything else                  -> {page scheme}//{port}-{convId}.{runtime domain}[:{page port}]{rest or /}
 * ws:/wss: become wss: on https pages and ws: on http pages. Path, query and
 * fragment are kept byte for byte; the git paths of /api/git/changes|diff are
 * normalised (normalizeGitPath). Applied to fetch (string, URL and Request),
 * XMLHttpRequest.prototype.open, WebSocket, EventSource, window.open, the
 * href/src/action attributes of elements added to the page and URLs shown as
 * text (one MutationObserver, batched in idle time, O(added nodes)).
 *
 * What is kept from the previous shim (patch-fix.js) and why:
 *   kept     URL rewriting and git path normalisation: the browser is the only
 *            place that sees URLs built at run time from localhost values.
 *   kept     text/link rewriting: agent output shows localhost links; now one
 *            idle-batched observer over added/changed nodes only.
 *   kept     settings helpers (default settings, create-conversation retry,
 *            closing the setup modal) behind data-default-settings="on", fixed:
 *            defaults are created only when the server says the settings do not
 *            exist (404 or CONFIGURATION$SETTINGS_NOT_FOUND / "Settings not
 *            found"), never after an error or a timeout; the modal is closed
 *            only after success; a failure is retried later, not cached.
 *   kept     the Logout button, only when data-logout-url is given: with the
 *            gateway owning login, the app's own logout cannot end the session.
 *   dropped  "API answered HTML, so log out": content-type is no evidence of an
 *            expired session and this caused a logout loop.
 *   dropped  settings body rewriting (Bedrock prefix, MCP server filtering) and
 *            the MCP button lock: deployment configuration of the agent app,
 *            which belongs in the app's server, not in a gateway script.
 *   dropped  sandbox auto-resume polling: starting a sandbox is triggered on the
 *            server side (conversation open / socket connect), once, not by a
 *            page polling every few seconds.
 *
 * Every hook falls back to the original arguments on any error; nothing here
 * throws into the page. Under Node the pure functions are exported for tests
 * and no hook is installed.
 */
(function () {
  'use strict';

  var VERSION = '1';
  var MARKER = '__sandportRuntimeLinks';

  // ---------------------------------------------------------------- pure URL

  var CONV_RE = /(?:^|\/)conversations\/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32})(?=[/?#]|$)/i;
  var ABS_URL_RE = /^(https?|wss?):\/\/([^/?#]*)([/?#][\s\S]*)?$/i;
  var AUTHORITY_RE = /^(\[[0-9a-f:.]+\]|[^:@[\]]+):(\d{1,5})$/i;
  var IPV4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;
  var DOMAIN_RE = /^[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?$/;
  var AGENT_PATH_RE = /^\/(?:api|sockets)\//;
  // Candidate URLs inside text: any host with an explicit port.
  var TEXT_URL_RE = /\b(?:https?|wss?):\/\/(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}(?:[/?#][^\s<>"'`)\]]*)?/g;

  /** Conversation id (32 lower-case hex) from a page path, or null. */
  function parseConversationId(pathname) {
    var m = CONV_RE.exec(typeof pathname === 'string' ? pathname : '');
    return m ? m[1].replace(/-/g, '').toLowerCase() : null;
  }

  /** True for hosts that only make sense inside the sandbox. */
  function isLocalHost(hostname) {
    var h = String(hostname || '').toLowerCase();
    if (h === 'localhost' || h === 'host.docker.internal' || h === '[::1]' || h === '0.0.0.0') return true;
    var m = IPV4_RE.exec(h);
    if (!m) return false;
    var a = +m[1], b = +m[2];
    if (a > 255 || b > 255 || +m[3] > 255 || +m[4] > 255) return false;
    return a === 127 || a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168);
  }

  function defaultPort(protocol) {
    return protocol === 'https:' ? '443' : '80';
  }

  /**
   * Rewrite context from a location-like object
   * ({protocol, hostname, port, pathname}) and the data-runtime-domain value.
   * Returns null for pages that are not http(s).
   */
  function makeContext(loc, runtimeDomain) {
    if (!loc || (loc.protocol !== 'http:' && loc.protocol !== 'https:')) return null;
    var hostname = String(loc.hostname || '').toLowerCase();
    if (!hostname) return null;
    var port = loc.port ? String(loc.port) : '';
    var domain = String(runtimeDomain || '').trim().toLowerCase().replace(/^\.+|\.+$/g, '');
    if (!DOMAIN_RE.test(domain)) domain = 'runtime.' + hostname;
    return {
      protocol: loc.protocol,
      hostname: hostname,
      port: port,
      host: hostname + (port ? ':' + port : ''),
      convId: parseConversationId(loc.pathname),
      runtimeDomain: domain
    };
  }

  /**
   * Git path normalisation for the agent's /api/git/changes|diff/{path}
   * (path only, no query). The agent resolves paths relative to /workspace and
   * a connected repository is cloned at /workspace/project/{repo}; repository
   * names never start with ".".
   */
  function normalizeGitPath(path) {
    var m = /^(\/api\/git\/(?:changes|diff))\/([\s\S]*)$/.exec(path);
    if (!m) return path;
    var prefix = m[1], s = m[2], t;
    var enc = /^%2F(?:workspace|openhands)%2Fproject(?=%2F|$)/i.exec(s);
    if (enc) {
      t = s.slice(enc[0].length).slice(3); // drop the %2F after "project"
      return prefix + '/' + underProject(t, /%2F|\//i);
    }
    var plain = /^\/(?:workspace|openhands)\/project(?=\/|$)/.exec(s);
    if (plain) {
      t = s.slice(plain[0].length + 1);
      return prefix + '/' + underProject(t, /\//);
    }
    // Bare "{repo}" or "{repo}%2F{file}": one segment, not hidden, not absolute.
    if (s && s.charAt(0) !== '.' && s.indexOf('/') === -1 && !/^%2F/i.test(s)) {
      var i = s.search(/%2F/i);
      return prefix + '/project/' + (i === -1 ? s : s.slice(0, i) + '/' + s.slice(i + 3));
    }
    return path;
  }

  // {rest} below /workspace/project: "" -> ".", ".x" -> "./.x",
  // "{repo}[sep{file}]" -> "project/{repo}[/{file}]" ({file} kept as sent).
  function underProject(t, sep) {
    if (!t) return '.';
    var i = t.search(sep);
    if (t.charAt(0) === '.' || i === 0) return './' + t;
    if (i === -1) return 'project/' + t;
    var file = t.slice(i + (t.charAt(i) === '/' ? 1 : 3));
    return 'project/' + t.slice(0, i) + (file ? '/' + file : '');
  }

  /**
   * The URL the browser should use instead of `url`, or `url` itself when no
   * rule applies. Pure: depends only on its arguments. Idempotent.
   */
  function rewriteUrl(url, ctx) {
    if (typeof url !== 'string' || !ctx || !ctx.convId) return url;
    var m = ABS_URL_RE.exec(url);
    if (!m) return url;
    var a = AUTHORITY_RE.exec(m[2]);
    if (!a) return url;
    var port = +a[2];
    if (port < 1 || port > 65535) return url;
    port = String(port);
    var hostname = a[1].toLowerCase();
    var local = isLocalHost(hostname);
    var ownHost = hostname === ctx.hostname;
    var pagePort = ctx.port || defaultPort(ctx.protocol);
    if (port === pagePort && (ownHost || (local && isLocalHost(ctx.hostname)))) return url; // the app itself
    if (!local && !ownHost) return url;

    var scheme = m[1].toLowerCase();
    var ws = scheme === 'ws' || scheme === 'wss';
    var outScheme = ws ? (ctx.protocol === 'https:' ? 'wss:' : 'ws:') : ctx.protocol;
    var rest = m[3] || '';
    if (AGENT_PATH_RE.test(rest)) {
      var q = rest.search(/[?#]/);
      var path = q === -1 ? rest : rest.slice(0, q);
      var tail = q === -1 ? '' : rest.slice(q);
      return outScheme + '//' + ctx.host + '/runtime/' + ctx.convId + '/' + port + normalizeGitPath(path) + tail;
    }
    return outScheme + '//' + port + '-' + ctx.convId + '.' + ctx.runtimeDomain +
      (ctx.port ? ':' + ctx.port : '') + (rest || '/');
  }

  /** Rewrite every URL with an explicit port found in a piece of text. */
  function rewriteText(text, ctx) {
    if (typeof text !== 'string' || !ctx || !ctx.convId || text.indexOf('://') === -1) return text;
    return text.replace(TEXT_URL_RE, function (u) { return rewriteUrl(u, ctx); });
  }

  // ------------------------------------------------------ pure settings logic

  var NOT_FOUND_MSG_ID = 'CONFIGURATION$SETTINGS_NOT_FOUND';
  var FALLBACK_MODEL = 'global.anthropic.claude-opus-4-5-20251101-v1:0';
  var MODEL_PREFERENCE = [
    /^global\.anthropic\.claude-opus/i,
    /^global\.anthropic\.claude-sonnet/i,
    /^anthropic\.claude-opus/i,
    /^anthropic\.claude-sonnet-4/i,
    /^anthropic\.claude-sonnet/i,
    /^anthropic\.claude.*v\d+:\d+$/
  ];

  /** 'exists', 'missing' or 'error' for a GET /api/settings answer. */
  function classifySettingsResponse(status, body) {
    if (status >= 200 && status < 300) return 'exists';
    if (status === 404) return 'missing';
    if (status === 400 && body && typeof body === 'object' &&
        (body.msg_id === NOT_FOUND_MSG_ID || body.message === 'Settings not found')) return 'missing';
    return 'error';
  }

  /** Model for default settings, chosen from the server's model list. */
  function pickDefaultModel(models, fallback) {
    var list = Array.isArray(models) ? models.filter(function (x) { return typeof x === 'string'; }) : [];
    for (var p = 0; p < MODEL_PREFERENCE.length; p++) {
      for (var i = 0; i < list.length; i++) {
        if (list[i].indexOf('embed') !== -1 || list[i].indexOf('haiku') !== -1) continue;
        if (MODEL_PREFERENCE[p].test(list[i])) return list[i];
      }
    }
    for (var j = 0; j < list.length; j++) {
      if (MODEL_PREFERENCE[5].test(list[j])) return list[j];
    }
    return fallback || FALLBACK_MODEL;
  }

  /** True for a POST that creates a conversation on the app itself. */
  function isCreateConversationRequest(method, url, ctx) {
    if (String(method || 'GET').toUpperCase() !== 'POST' || !ctx || typeof url !== 'string') return false;
    var path = url;
    var m = /^https?:\/\/([^/?#]*)([^?#]*)/i.exec(url);
    if (m) {
      if (m[1].toLowerCase() !== ctx.host) return false;
      path = m[2];
    } else if (url.charAt(0) !== '/' || url.charAt(1) === '/') {
      return false;
    }
    return /^\/api\/conversations\/?(?:[?#]|$)/.test(path.replace(/[?#][\s\S]*$/, ''));
  }

  /**
   * Settings helper. deps: {fetch, setTimeout, clearTimeout, AbortController,
   * timeoutMs, defaultModel}. ensure(force) resolves true when the settings
   * exist or were created, false otherwise; it never rejects. Concurrent calls
   * share one attempt; a success is remembered (unless force), a failure is not.
   */
  function createSettingsHelper(deps) {
    var timeoutMs = deps.timeoutMs || 10000;
    var done = false;
    var inflight = null;

    function request(url, init) {
      return new Promise(function (resolve, reject) {
        var ctl = deps.AbortController ? new deps.AbortController() : null;
        var opts = Object.assign({ credentials: 'same-origin' }, init || {});
        if (ctl) opts.signal = ctl.signal;
        var timer = deps.setTimeout(function () {
          if (ctl) { try { ctl.abort(); } catch (e) { /* ignore */ } }
          reject(new Error('timeout'));
        }, timeoutMs);
        Promise.resolve().then(function () { return deps.fetch(url, opts); }).then(function (r) {
          deps.clearTimeout(timer);
          resolve(r);
        }, function (e) {
          deps.clearTimeout(timer);
          reject(e);
        });
      });
    }

    function json(resp) {
      return Promise.resolve().then(function () { return resp.json(); }).catch(function () { return null; });
    }

    function attempt() {
      return request('/api/options/models').then(function (r) {
        if (!r.ok) return false;
        return json(r).then(function (models) {
          if (!Array.isArray(models) || models.length === 0) return false;
          return request('/api/settings').then(function (s) {
            var st = s.status;
            return (st === 400 ? json(s) : Promise.resolve(null)).then(function (body) {
              var kind = classifySettingsResponse(st, body);
              if (kind === 'exists') return true;
              if (kind !== 'missing') return false;
              var model = pickDefaultModel(models, deps.defaultModel);
              if (model.indexOf('bedrock/') !== 0) model = 'bedrock/' + model;
              return request('/api/settings', {
                method: 'POST',
                headers: { 'Content-Type': 'application/json' },
                body: JSON.stringify({ llm_provider: 'bedrock', llm_model: model, llm_api_key: null, aws_region: null })
              }).then(function (c) { return !!c.ok; });
            });
          });
        });
      }).catch(function () { return false; });
    }

    return {
      ensure: function (force) {
        if (inflight) return inflight;
        if (done && !force) return Promise.resolve(true);
        inflight = attempt().then(function (ok) {
          inflight = null;
          if (ok) done = true;
          return ok;
        });
        return inflight;
      }
    };
  }

  // ------------------------------------------------------------------- hooks

  function readConfig(script) {
    function attr(name) {
      try { return script && script.getAttribute ? script.getAttribute('data-' + name) : null; } catch (e) { return null; }
    }
    var logout = attr('logout-url');
    return {
      runtimeDomain: attr('runtime-domain') || '',
      defaultSettings: String(attr('default-settings') || '').toLowerCase() === 'on',
      defaultModel: attr('default-model') || '',
      logoutUrl: logout && /^\/(?!\/)/.test(logout) ? logout : ''
    };
  }

  function isRequest(win, x) {
    return !!(x && win.Request && x instanceof win.Request);
  }

  // A string, or a URL-like object (URL, Location, <a>): its href; else null.
  function urlString(x) {
    if (typeof x === 'string') return x;
    if (x && typeof x === 'object' && typeof x.href === 'string') return x.href;
    return null;
  }

  // New Request for `url` carrying method, headers, body, credentials, mode,
  // cache, redirect, referrer, integrity, keepalive and signal of `req`.
  function recreateRequest(win, req, url) {
    var init = {
      method: req.method,
      headers: req.headers,
      credentials: req.credentials,
      cache: req.cache,
      redirect: req.redirect,
      referrer: req.referrer,
      referrerPolicy: req.referrerPolicy,
      integrity: req.integrity,
      keepalive: req.keepalive,
      signal: req.signal
    };
    if (req.mode && req.mode !== 'navigate') init.mode = req.mode;
    Object.keys(init).forEach(function (k) { if (init[k] === undefined) delete init[k]; });
    var method = String(req.method || 'GET').toUpperCase();
    if (method === 'GET' || method === 'HEAD' || req.body === null) {
      return Promise.resolve(new win.Request(url, init));
    }
    return req.clone().arrayBuffer().then(function (buf) {
      init.body = buf;
      return new win.Request(url, init);
    });
  }

  function install(win, doc, config) {
    if (!win || win[MARKER] || typeof Proxy !== 'function') return null;
    try {
      Object.defineProperty(win, MARKER, { value: VERSION, configurable: true });
    } catch (e) {
      return null;
    }
    config = config || {};
    function ctx() {
      try { return makeContext(win.location, config.runtimeDomain); } catch (e) { return null; }
    }
    function rw(u) {
      try { return rewriteUrl(u, ctx()); } catch (e) { return u; }
    }
    // Rewritten copy of args with args[i] replaced, or null if unchanged.
    function rewriteArg(args, i) {
      var s = urlString(args[i]);
      if (s === null) return null;
      var out = rw(s);
      if (out === s) return null;
      var copy = Array.prototype.slice.call(args);
      copy[i] = out;
      return copy;
    }

    var settings = null;
    var origFetch = typeof win.fetch === 'function' ? win.fetch : null;
    if (config.defaultSettings && origFetch) {
      settings = createSettingsHelper({
        fetch: function (u, o) { return origFetch.call(win, u, o); },
        setTimeout: function (f, ms) { return win.setTimeout(f, ms); },
        clearTimeout: function (t) { return win.clearTimeout(t); },
        AbortController: win.AbortController,
        defaultModel: config.defaultModel
      });
    }

    if (origFetch) {
      win.fetch = new Proxy(origFetch, {
        apply: function (target, self, args) {
          var callArgs = args;
          var pending = null;
          var retry = null;
          try {
            var input = args[0];
            if (isRequest(win, input)) {
              var u = rw(input.url);
              if (u !== input.url) {
                pending = recreateRequest(win, input, u).then(function (r) {
                  var copy = Array.prototype.slice.call(args);
                  copy[0] = r;
                  return copy;
                });
              }
            } else {
              callArgs = rewriteArg(args, 0) || args;
            }
          } catch (e) {
            callArgs = args;
            pending = null;
          }
          try {
            if (settings) retry = createConversationRetry(win, args, settings, ctx());
          } catch (e) {
            retry = null;
          }
          var call = function (a) { return Reflect.apply(target, self, a); };
          var p = pending
            ? pending.then(call, function () { return call(args); })
            : call(callArgs);
          return retry ? retry(p, call) : p;
        }
      });
    }

    var XHR = win.XMLHttpRequest;
    if (XHR && XHR.prototype && typeof XHR.prototype.open === 'function') {
      XHR.prototype.open = new Proxy(XHR.prototype.open, {
        apply: function (target, self, args) {
          var a = rewriteArg(args, 1) || args; // keep the argument count: open(m, u) is async
          return Reflect.apply(target, self, a);
        }
      });
    }

    ['WebSocket', 'EventSource'].forEach(function (name) {
      var C = win[name];
      if (typeof C !== 'function') return;
      var P = new Proxy(C, {
        construct: function (target, args, newTarget) {
          var a = rewriteArg(args, 0) || args;
          return Reflect.construct(target, a, newTarget === P ? target : newTarget);
        }
      });
      win[name] = P;
    });

    if (typeof win.open === 'function') {
      win.open = new Proxy(win.open, {
        apply: function (target, self, args) {
          return Reflect.apply(target, self, rewriteArg(args, 0) || args);
        }
      });
    }

    if (doc) {
      try { installDom(win, doc, ctx); } catch (e) { /* page keeps working */ }
      if (config.logoutUrl) {
        try { installLogout(win, doc, config.logoutUrl); } catch (e) { /* ignore */ }
      }
      if (settings) {
        try { installSettingsTriggers(win, doc, settings); } catch (e) { /* ignore */ }
      }
    }
    return { settings: settings };
  }

  // As in the previous shim: a create-conversation POST answered 400 "settings not found"
  // creates default settings and is repeated once.
  function createConversationRetry(win, args, settings, c) {
    var input = args[0];
    var init = args[1] || {};
    var req = isRequest(win, input);
    var method = init.method || (req ? input.method : 'GET');
    var url = req ? input.url : urlString(input);
    if (!isCreateConversationRequest(method, url, c)) return null;
    if (init.body && typeof init.body.getReader === 'function') return null; // a stream cannot be replayed
    var spare = req ? input.clone() : null;
    return function (p, call) {
      return p.then(function (resp) {
        if (!resp || resp.status !== 400 || typeof resp.clone !== 'function') return resp;
        return resp.clone().json().then(function (body) {
          if (!body || body.msg_id !== NOT_FOUND_MSG_ID) return resp;
          return settings.ensure(true).then(function (ok) {
            if (!ok) return resp;
            var again = Array.prototype.slice.call(args);
            if (spare) again[0] = spare;
            return call(again);
          });
        }).catch(function () { return resp; });
      });
    };
  }

  // Triggers of the previous shim: ensure defaults after load (pages not under /_); a
  // failed attempt is retried later. The setup modal that shows up within 5 s
  // of load is hidden once the settings exist.
  function installSettingsTriggers(win, doc, settings) {
    var RETRY_MS = [5000, 20000, 60000];
    function run(n) {
      settings.ensure().then(function (ok) {
        if (!ok && n < RETRY_MS.length) win.setTimeout(function () { run(n + 1); }, RETRY_MS[n]);
      });
    }
    function watchModal() {
      var checks = 0;
      var timer = win.setInterval(function () {
        var modal = null;
        try { modal = doc.querySelector('[data-testid="ai-config-modal"]'); } catch (e) { /* ignore */ }
        if (!modal && ++checks < 50) return;
        win.clearInterval(timer);
        if (!modal) return;
        settings.ensure().then(function (ok) {
          if (!ok) return;
          var overlay = (modal.closest && modal.closest('.fixed.inset-0.flex.items-center.justify-center.z-60')) ||
            doc.querySelector('.fixed.inset-0.flex.items-center.justify-center.z-60');
          // Hidden rather than removed: the app's framework still owns the node.
          if (overlay && overlay.style) overlay.style.display = 'none';
        });
      }, 100);
    }
    function start() {
      var path = (win.location && win.location.pathname) || '';
      if (path.indexOf('/_') === 0) return;
      run(0);
      watchModal();
    }
    if (doc.readyState === 'complete') start();
    else win.addEventListener('load', start);
  }

  function installLogout(win, doc, logoutUrl) {
    doc.addEventListener('click', function (e) {
      try {
        var b = e.target && e.target.closest ? e.target.closest('button') : null;
        if (!b || String(b.textContent || '').replace(/\s+/g, ' ').trim().toLowerCase() !== 'logout') return;
        e.preventDefault();
        e.stopImmediatePropagation();
        win.location.assign(logoutUrl);
      } catch (err) { /* ignore */ }
    }, true);
  }

  // ----------------------------------------------------------------- the DOM

  var URL_ATTRS = ['href', 'src', 'action'];
  var SKIP_TAGS = { SCRIPT: 1, STYLE: 1, TEXTAREA: 1, NOSCRIPT: 1, TEMPLATE: 1 };

  function skipElement(el) {
    return !!(SKIP_TAGS[el.nodeName] || el.isContentEditable);
  }

  /** Rewrite the href/src/action attributes of one element. */
  function rewriteElement(el, c) {
    if (!el.getAttribute) return;
    for (var i = 0; i < URL_ATTRS.length; i++) {
      var v = el.getAttribute(URL_ATTRS[i]);
      if (!v || v.indexOf('://') === -1) continue;
      var t = v.trim();
      var out = rewriteUrl(t, c);
      if (out !== t) el.setAttribute(URL_ATTRS[i], out);
    }
  }

  /** Rewrite the URLs of one text node (not inside script/style/editors). */
  function rewriteTextNode(node, c) {
    var v = node.nodeValue;
    if (!v || v.indexOf('://') === -1) return;
    var parent = node.parentNode;
    if (parent && parent.nodeType === 1 && skipElement(parent)) return;
    var out = rewriteText(v, c);
    if (out !== v) node.nodeValue = out;
  }

  // One MutationObserver; work is queued per added/changed node and done in
  // idle time with a resumable TreeWalker, so a mutation never causes a walk
  // of anything but the nodes it added.
  function installDom(win, doc, ctx) {
    var MO = win.MutationObserver;
    var root = doc.documentElement;
    if (!MO || !root || !doc.createTreeWalker) return;
    var NF = win.NodeFilter || { SHOW_ELEMENT: 1, SHOW_TEXT: 4, FILTER_ACCEPT: 1, FILTER_REJECT: 2 };
    var queue = [];
    var head = 0;
    var walker = null;
    var scheduled = false;

    function visit(node, c) {
      if (node.nodeType === 3) rewriteTextNode(node, c);
      else if (node.nodeType === 1) rewriteElement(node, c);
    }
    function filter(node) {
      return node.nodeType === 1 && skipElement(node) ? NF.FILTER_REJECT : NF.FILTER_ACCEPT;
    }
    function step(c) {
      if (walker) {
        var n = walker.nextNode();
        if (n) { visit(n, c); return true; }
        walker = null;
      }
      if (head >= queue.length) { queue = []; head = 0; return false; }
      var item = queue[head++];
      var node = item.node;
      if (node.isConnected === false) return true;
      if (node.nodeType === 1 && skipElement(node)) return true;
      visit(node, c);
      if (item.deep && node.nodeType === 1 && node.firstChild) {
        walker = doc.createTreeWalker(node, NF.SHOW_ELEMENT | NF.SHOW_TEXT, { acceptNode: filter });
      }
      return true;
    }
    function flush(deadline) {
      scheduled = false;
      var c = ctx();
      if (!c || !c.convId) { queue = []; head = 0; walker = null; return; }
      var end = Date.now() + 8; // budget when there is no idle deadline
      try {
        for (var n = 1; step(c); n++) {
          if (n % 64 === 0 && (deadline ? !deadline.didTimeout && deadline.timeRemaining() < 2 : Date.now() > end)) {
            schedule();
            return;
          }
        }
      } catch (e) {
        queue = []; head = 0; walker = null;
      }
    }
    function schedule() {
      if (scheduled) return;
      scheduled = true;
      if (typeof win.requestIdleCallback === 'function') win.requestIdleCallback(flush, { timeout: 300 });
      else win.setTimeout(function () { flush(null); }, 16);
    }
    function enqueue(node, deep) {
      queue.push({ node: node, deep: deep });
      schedule();
    }

    new MO(function (records) {
      var c = ctx();
      if (!c || !c.convId) return;
      for (var i = 0; i < records.length; i++) {
        var r = records[i];
        if (r.type === 'childList') {
          for (var j = 0; j < r.addedNodes.length; j++) enqueue(r.addedNodes[j], true);
        } else {
          enqueue(r.target, false);
        }
      }
    }).observe(root, {
      childList: true,
      subtree: true,
      characterData: true,
      attributes: true,
      attributeFilter: URL_ATTRS
    });
    if (doc.body) enqueue(doc.body, true);

    // A link clicked or a form submitted before the idle batch ran.
    function now(e) {
      try {
        var t = e.target;
        var el = t && t.closest ? t.closest(e.type === 'submit' ? 'form' : 'a[href],area[href]') : null;
        var c = el && ctx();
        if (c && c.convId) rewriteElement(el, c);
      } catch (err) { /* ignore */ }
    }
    doc.addEventListener('click', now, true);
    doc.addEventListener('auxclick', now, true);
    doc.addEventListener('submit', now, true);
  }

  // ----------------------------------------------------------------- exports

  var api = {
    VERSION: VERSION,
    parseConversationId: parseConversationId,
    isLocalHost: isLocalHost,
    makeContext: makeContext,
    normalizeGitPath: normalizeGitPath,
    rewriteUrl: rewriteUrl,
    rewriteText: rewriteText,
    classifySettingsResponse: classifySettingsResponse,
    pickDefaultModel: pickDefaultModel,
    isCreateConversationRequest: isCreateConversationRequest,
    createSettingsHelper: createSettingsHelper,
    readConfig: readConfig,
    rewriteElement: rewriteElement,
    rewriteTextNode: rewriteTextNode,
    install: install
  };

  if (typeof module === 'object' && module && module.exports) module.exports = api;

  if (typeof window !== 'undefined' && typeof document !== 'undefined') {
    try { install(window, document, readConfig(document.currentScript)); } catch (e) { /* never break the page */ }
  }
})();
