'use strict';
// Hooks installed on a minimal fake window: what reaches the original
// fetch / XHR / WebSocket / EventSource / window.open.
const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const rl = require(path.join(__dirname, '..', 'runtime-links.js'));

const CID = '7c15e423fbd44f8f8bf483a481daa4d9';
const CONV = `https://openhands.example.com/conversations/7c15e423-fbd4-4f8f-8bf4-83a481daa4d9`;
const RT = `https://5000-${CID}.runtime.openhands.example.com`;
const AGENT = `https://openhands.example.com/runtime/${CID}`;

function fakeWindow(href, respond) {
  const calls = { fetch: [], xhr: [], ws: [], es: [], open: [] };
  const loc = {};
  const setHref = (h) => {
    const u = new URL(h);
    Object.assign(loc, { protocol: u.protocol, hostname: u.hostname, port: u.port, pathname: u.pathname });
  };
  setHref(href);
  class FakeWebSocket {
    constructor(...args) { this.args = args; calls.ws.push(args); }
  }
  FakeWebSocket.CONNECTING = 0;
  FakeWebSocket.OPEN = 1;
  class FakeEventSource {
    constructor(...args) { this.args = args; calls.es.push(args); }
  }
  class FakeXHR {}
  FakeXHR.prototype.open = function (...args) { calls.xhr.push({ self: this, args }); };
  const win = {
    location: loc,
    fetch(...args) {
      calls.fetch.push({ self: this, args });
      return Promise.resolve(respond ? respond(args) : new Response('ok'));
    },
    XMLHttpRequest: FakeXHR,
    WebSocket: FakeWebSocket,
    EventSource: FakeEventSource,
    open(...args) { calls.open.push(args); return 'window-handle'; },
    Request,
    setTimeout,
    clearTimeout,
    AbortController
  };
  return { win, calls, setHref, FakeWebSocket, FakeEventSource };
}

test('fetch: strings, URL objects and Request objects', async (t) => {
  await t.test('string', async () => {
    const { win, calls } = fakeWindow(CONV);
    rl.install(win, null, {});
    await win.fetch('http://localhost:5000/x', { method: 'GET' });
    assert.deepStrictEqual(calls.fetch[0].args, [`${RT}/x`, { method: 'GET' }]);
    assert.strictEqual(calls.fetch[0].self, win, 'called with the same this');
  });
  await t.test('URL object (fixed)', async () => {
    const { win, calls } = fakeWindow(CONV);
    rl.install(win, null, {});
    await win.fetch(new URL('http://localhost:38013/api/data?x=1'));
    assert.strictEqual(calls.fetch[0].args[0], `${AGENT}/38013/api/data?x=1`);
  });
  await t.test('URL object of another host is passed as is', async () => {
    const { win, calls } = fakeWindow(CONV);
    rl.install(win, null, {});
    const u = new URL('https://example.com:8080/');
    await win.fetch(u);
    assert.strictEqual(calls.fetch[0].args[0], u);
  });
  await t.test('Request with body is re-created with everything kept (fixed)', async () => {
    const { win, calls } = fakeWindow(CONV);
    rl.install(win, null, {});
    const ctl = new AbortController();
    const req = new Request('http://localhost:8000/api/git/changes/openhands-infra', {
      method: 'POST',
      headers: { 'X-Session-API-Key': 'K', 'Content-Type': 'application/json' },
      body: '{"a":1}',
      credentials: 'include',
      mode: 'cors',
      cache: 'no-store',
      redirect: 'manual',
      referrerPolicy: 'no-referrer',
      keepalive: false,
      signal: ctl.signal
    });
    await win.fetch(req, { priority: 'high' });
    const [sent, init] = calls.fetch[0].args;
    assert.ok(sent instanceof Request);
    assert.strictEqual(sent.url, `${AGENT}/8000/api/git/changes/project/openhands-infra`);
    assert.strictEqual(sent.method, 'POST');
    assert.strictEqual(sent.headers.get('x-session-api-key'), 'K');
    assert.strictEqual(sent.headers.get('content-type'), 'application/json');
    assert.strictEqual(await sent.text(), '{"a":1}');
    assert.strictEqual(sent.credentials, 'include');
    assert.strictEqual(sent.mode, 'cors');
    assert.strictEqual(sent.cache, 'no-store');
    assert.strictEqual(sent.redirect, 'manual');
    assert.strictEqual(sent.referrerPolicy, 'no-referrer');
    assert.deepStrictEqual(init, { priority: 'high' }, 'second argument passed on');
    assert.strictEqual(req.bodyUsed, false, 'the original request stays usable');
    ctl.abort();
    assert.strictEqual(sent.signal.aborted, true, 'abort signal follows');
  });
  await t.test('GET Request', async () => {
    const { win, calls } = fakeWindow(CONV);
    rl.install(win, null, {});
    await win.fetch(new Request('http://localhost:5000/a?b=c', { headers: { Accept: 'text/html' } }));
    const sent = calls.fetch[0].args[0];
    assert.strictEqual(sent.url, `${RT}/a?b=c`);
    assert.strictEqual(sent.method, 'GET');
    assert.strictEqual(sent.headers.get('accept'), 'text/html');
  });
  await t.test('Request of another host is passed as is', async () => {
    const { win, calls } = fakeWindow(CONV);
    rl.install(win, null, {});
    const req = new Request('https://example.com/x');
    await win.fetch(req);
    assert.strictEqual(calls.fetch[0].args[0], req);
  });
});

test('fetch falls back to the original arguments on any error', async () => {
  const { win, calls } = fakeWindow(CONV);
  rl.install(win, null, {});
  const used = new Request('http://localhost:5000/x', { method: 'POST', body: 'abc' });
  await used.text(); // body already consumed: re-creating it fails
  await win.fetch(used);
  assert.strictEqual(calls.fetch[0].args[0], used);

  Object.defineProperty(win, 'location', { get() { throw new Error('no location'); } });
  await win.fetch('http://localhost:5000/y');
  assert.strictEqual(calls.fetch[1].args[0], 'http://localhost:5000/y');
});

test('pages without a conversation id: nothing is rewritten; SPA navigation is followed', async () => {
  const { win, calls, setHref } = fakeWindow('https://openhands.example.com/');
  rl.install(win, null, {});
  await win.fetch('http://localhost:5000/');
  new win.WebSocket('ws://localhost:32768/sockets/events/a');
  win.open('http://localhost:5000/');
  assert.strictEqual(calls.fetch[0].args[0], 'http://localhost:5000/');
  assert.strictEqual(calls.ws[0][0], 'ws://localhost:32768/sockets/events/a');
  assert.strictEqual(calls.open[0][0], 'http://localhost:5000/');
  setHref(CONV); // pushState to a conversation
  await win.fetch('http://localhost:5000/');
  assert.strictEqual(calls.fetch[1].args[0], `${RT}/`);
});

test('XMLHttpRequest.open keeps the argument count', () => {
  const { win, calls } = fakeWindow(CONV);
  rl.install(win, null, {});
  const xhr = new win.XMLHttpRequest();
  xhr.open('GET', 'http://localhost:38013/api/data');
  xhr.open('POST', 'http://localhost:5000/x', false, 'u', 'p');
  xhr.open('GET', new URL('http://localhost:5000/u'));
  xhr.open('GET', '/api/settings');
  assert.deepStrictEqual(calls.xhr[0].args, ['GET', `${AGENT}/38013/api/data`], 'open(m, u) stays asynchronous');
  assert.deepStrictEqual(calls.xhr[1].args, ['POST', `${RT}/x`, false, 'u', 'p']);
  assert.deepStrictEqual(calls.xhr[2].args, ['GET', `${RT}/u`]);
  assert.deepStrictEqual(calls.xhr[3].args, ['GET', '/api/settings']);
  assert.strictEqual(calls.xhr[0].self, xhr);
});

test('WebSocket and EventSource', () => {
  const { win, calls, FakeWebSocket, FakeEventSource } = fakeWindow(CONV);
  rl.install(win, null, {});
  const a = new win.WebSocket('ws://localhost:32768/sockets/events/abc?session_api_key=K');
  const b = new win.WebSocket('ws://localhost:5000/ws', ['proto1']);
  const c = new win.WebSocket(new URL('ws://127.0.0.1:5000/u'));
  const d = new win.WebSocket('wss://example.com:8443/x');
  assert.deepStrictEqual(calls.ws[0], [`wss://openhands.example.com/runtime/${CID}/32768/sockets/events/abc?session_api_key=K`]);
  assert.deepStrictEqual(calls.ws[1], [`wss://5000-${CID}.runtime.openhands.example.com/ws`, ['proto1']]);
  assert.deepStrictEqual(calls.ws[2], [`wss://5000-${CID}.runtime.openhands.example.com/u`]);
  assert.deepStrictEqual(calls.ws[3], ['wss://example.com:8443/x']);
  for (const s of [a, b, c, d]) {
    assert.ok(s instanceof FakeWebSocket);
    assert.ok(s instanceof win.WebSocket);
  }
  assert.strictEqual(win.WebSocket.OPEN, 1);
  assert.strictEqual(win.WebSocket.prototype, FakeWebSocket.prototype);
  class Sub extends win.WebSocket {}
  const s = new Sub('ws://localhost:5000/sub');
  assert.ok(s instanceof Sub);
  assert.strictEqual(calls.ws[4][0], `wss://5000-${CID}.runtime.openhands.example.com/sub`);

  const e = new win.EventSource('http://localhost:8000/api/events', { withCredentials: true });
  assert.ok(e instanceof FakeEventSource);
  assert.deepStrictEqual(calls.es[0], [`${AGENT}/8000/api/events`, { withCredentials: true }]);
});

test('window.open (TC-010)', () => {
  const { win, calls } = fakeWindow(CONV);
  rl.install(win, null, {});
  const ret = win.open('http://openhands.example.com:49955/?tkn=x&folder=/workspace', '_blank', 'noopener');
  win.open('http://localhost:5000/');
  win.open('http://example.com:8080/');
  win.open(`${RT}/`);
  win.open();
  assert.strictEqual(ret, 'window-handle');
  assert.deepStrictEqual(calls.open, [
    [`https://49955-${CID}.runtime.openhands.example.com/?tkn=x&folder=/workspace`, '_blank', 'noopener'],
    [`${RT}/`],
    ['http://example.com:8080/'],
    [`${RT}/`],
    []
  ]);
});

test('installed once: a second copy of the script changes nothing', async () => {
  const { win, calls } = fakeWindow(CONV);
  assert.ok(rl.install(win, null, {}));
  const fetch1 = win.fetch;
  assert.strictEqual(rl.install(win, null, {}), null);
  assert.strictEqual(win.fetch, fetch1);
  assert.strictEqual(win.__sandportRuntimeLinks, rl.VERSION);
  await win.fetch('http://localhost:5000/');
  assert.strictEqual(calls.fetch.length, 1);
});

test('create-conversation retry after "settings not found" (helpers on)', async (t) => {
  function app(settingsGet) {
    let conversations = 0;
    return (args) => {
      const [input, init] = args;
      const url = typeof input === 'string' ? input : input.url;
      const method = (init && init.method) || (typeof input === 'string' ? 'GET' : input.method);
      const key = `${method} ${url.replace('https://openhands.example.com', '')}`;
      if (key === 'GET /api/options/models') return Response.json(['anthropic.claude-opus-4-v1:0']);
      if (key === 'GET /api/settings') return settingsGet();
      if (key === 'POST /api/settings') return Response.json({});
      if (key === 'POST /api/conversations') {
        conversations += 1;
        return conversations === 1
          ? Response.json({ msg_id: 'CONFIGURATION$SETTINGS_NOT_FOUND' }, { status: 400 })
          : Response.json({ conversation_id: 'c' });
      }
      return new Response('?', { status: 500 });
    };
  }
  const keys = (calls) => calls.fetch.map((c) => {
    const [input, init] = c.args;
    return `${(init && init.method) || (typeof input === 'string' ? 'GET' : input.method)} ${typeof input === 'string' ? input : input.url}`;
  });

  await t.test('settings missing: defaults created, request repeated once', async () => {
    const { win, calls } = fakeWindow('https://openhands.example.com/', app(() => new Response('', { status: 404 })));
    rl.install(win, null, { defaultSettings: true });
    const resp = await win.fetch('/api/conversations', { method: 'POST', body: '{"q":1}' });
    assert.strictEqual(resp.status, 200);
    assert.deepStrictEqual(keys(calls), [
      'POST /api/conversations', 'GET /api/options/models', 'GET /api/settings',
      'POST /api/settings', 'POST /api/conversations'
    ]);
    assert.strictEqual(calls.fetch[4].args[1].body, '{"q":1}');
  });
  await t.test('Request input is replayed from a copy', async () => {
    const { win, calls } = fakeWindow('https://openhands.example.com/', app(() => new Response('', { status: 404 })));
    rl.install(win, null, { defaultSettings: true });
    const resp = await win.fetch(new Request('https://openhands.example.com/api/conversations', { method: 'POST', body: 'B' }));
    assert.strictEqual(resp.status, 200);
    assert.strictEqual(await calls.fetch[4].args[0].text(), 'B');
  });
  await t.test('settings unreadable (500): nothing written, original 400 returned', async () => {
    const { win, calls } = fakeWindow('https://openhands.example.com/', app(() => new Response('', { status: 500 })));
    rl.install(win, null, { defaultSettings: true });
    const resp = await win.fetch('/api/conversations', { method: 'POST' });
    assert.strictEqual(resp.status, 400);
    assert.deepStrictEqual(await resp.json(), { msg_id: 'CONFIGURATION$SETTINGS_NOT_FOUND' });
    assert.ok(!keys(calls).includes('POST /api/settings'));
    assert.strictEqual(keys(calls).filter((k) => k === 'POST /api/conversations').length, 1);
  });
  await t.test('helpers off: no retry', async () => {
    const { win, calls } = fakeWindow('https://openhands.example.com/', app(() => new Response('', { status: 404 })));
    rl.install(win, null, {});
    const resp = await win.fetch('/api/conversations', { method: 'POST' });
    assert.strictEqual(resp.status, 400);
    assert.deepStrictEqual(keys(calls), ['POST /api/conversations']);
  });
});

test('readConfig', () => {
  const script = (attrs) => ({ getAttribute: (n) => (n in attrs ? attrs[n] : null) });
  assert.deepStrictEqual(rl.readConfig(null), { runtimeDomain: '', defaultSettings: false, defaultModel: '', logoutUrl: '' });
  assert.deepStrictEqual(rl.readConfig(script({
    'data-runtime-domain': 'runtime.example.com',
    'data-default-settings': 'ON',
    'data-default-model': 'm',
    'data-logout-url': '/_logout'
  })), { runtimeDomain: 'runtime.example.com', defaultSettings: true, defaultModel: 'm', logoutUrl: '/_logout' });
  for (const bad of ['//evil.example/x', 'https://evil.example/', 'javascript:alert(1)', '_logout']) {
    assert.strictEqual(rl.readConfig(script({ 'data-logout-url': bad })).logoutUrl, '', bad);
  }
  assert.strictEqual(rl.readConfig(script({ 'data-default-settings': 'yes' })).defaultSettings, false);
});
