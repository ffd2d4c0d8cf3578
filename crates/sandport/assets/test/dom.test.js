'use strict';
// Links shown as text, href/src/action of added elements, the batched
// observer, the setup modal and the logout button, on a tiny fake DOM.
const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const rl = require(path.join(__dirname, '..', 'runtime-links.js'));

const CID = '7c15e423fbd44f8f8bf483a481daa4d9';
const CONV = `https://openhands.example.com/conversations/${CID}`;
const RT = (port) => `https://${port}-${CID}.runtime.openhands.example.com`;
const ctx = rl.makeContext(new URL(CONV));

test('rewriteText table', () => {
  const cases = [
    ['see http://localhost:51745/todos', `see ${RT(51745)}/todos`],
    ['http://localhost:5000', `${RT(5000)}/`],
    ['Running on http://127.0.0.1:5000 and http://172.17.0.2:5000/', `Running on ${RT(5000)}/ and ${RT(5000)}/`],
    ['Uvicorn running on http://0.0.0.0:8000 (Press CTRL+C)', `Uvicorn running on ${RT(8000)}/ (Press CTRL+C)`],
    ['(http://localhost:5000/a)', `(${RT(5000)}/a)`],
    ['[link](http://localhost:5000/a) done.', `[link](${RT(5000)}/a) done.`],
    ['"http://localhost:5000/x"', `"${RT(5000)}/x"`],
    ['at http://localhost:5000.', `at ${RT(5000)}/.`],
    ['editor: http://openhands.example.com:49955/?tkn=x&folder=/workspace',
      `editor: ${RT(49955)}/?tkn=x&folder=/workspace`],
    ['api http://localhost:8000/api/x', `api https://openhands.example.com/runtime/${CID}/8000/api/x`],
    [`${RT(5000)}/ already`, `${RT(5000)}/ already`],
    ['https://5000-abc.runtime.openhands.example.com/ other', 'https://5000-abc.runtime.openhands.example.com/ other'],
    ['http://example.com:8080/ foreign', 'http://example.com:8080/ foreign'],
    ['http://localhost/ no port', 'http://localhost/ no port'],
    ['no url here', 'no url here'],
    ['', '']
  ];
  for (const [input, expected] of cases) {
    assert.strictEqual(rl.rewriteText(input, ctx), expected, input);
    assert.strictEqual(rl.rewriteText(expected, ctx), expected, `idempotent: ${expected}`);
  }
  const home = rl.makeContext(new URL('https://openhands.example.com/'));
  assert.strictEqual(rl.rewriteText('see http://localhost:5000/', home), 'see http://localhost:5000/');
});

// ---- a tiny DOM: enough for TreeWalker, MutationObserver and attributes

class Node {
  constructor(nodeType, nodeName) {
    this.nodeType = nodeType;
    this.nodeName = nodeName;
    this.childNodes = [];
    this.parentNode = null;
    this.isConnected = true;
  }
  get firstChild() { return this.childNodes[0] || null; }
  append(...kids) {
    for (const k of kids) { k.parentNode = this; this.childNodes.push(k); }
    return this;
  }
  closest(sel) {
    for (let n = this; n; n = n.parentNode) if (n.nodeType === 1 && n.matches(sel)) return n;
    return null;
  }
}
class Text extends Node {
  constructor(v) { super(3, '#text'); this.nodeValue = v; }
}
class Element extends Node {
  constructor(tag, attrs) {
    super(1, tag.toUpperCase());
    this.attrs = Object.assign({}, attrs);
    this.reads = 0;
    this.isContentEditable = false;
    this.style = {};
  }
  getAttribute(n) { this.reads += 1; return n in this.attrs ? this.attrs[n] : null; }
  setAttribute(n, v) { this.attrs[n] = String(v); }
  matches(sel) {
    return sel.split(',').some((s) => {
      const m = /^([a-z]*)(?:\[([a-z-]+)(?:="([^"]*)")?\])?$/.exec(s.trim());
      return m && (!m[1] || this.nodeName === m[1].toUpperCase()) &&
        (!m[2] || (m[3] === undefined ? m[2] in this.attrs : this.attrs[m[2]] === m[3]));
    });
  }
  querySelector(sel) {
    for (const k of this.childNodes) {
      if (k.nodeType !== 1) continue;
      if (k.matches(sel)) return k;
      const d = k.querySelector(sel);
      if (d) return d;
    }
    return null;
  }
  get textContent() {
    return this.childNodes.map((k) => (k.nodeType === 3 ? k.nodeValue : k.textContent)).join('');
  }
}
const el = (tag, attrs, ...kids) => new Element(tag, attrs).append(...kids);
const text = (v) => new Text(v);

function walker(root, show, filter) {
  const out = [];
  (function walk(n) {
    for (const k of n.childNodes) {
      if (!(show & (k.nodeType === 1 ? 1 : 4))) { if (k.nodeType === 1) walk(k); continue; }
      const r = filter.acceptNode(k);
      if (r === 2) continue; // reject subtree
      out.push(k);
      if (k.nodeType === 1) walk(k);
    }
  })(root);
  let i = 0;
  return { nextNode: () => (i < out.length ? out[i++] : null) };
}

function fakeDom(href) {
  const u = new URL(href);
  const idle = [];
  const intervals = [];
  const listeners = {};
  let observer = null;
  const html = el('html', {}, el('head', {}));
  const doc = {
    documentElement: html,
    body: null,
    readyState: 'loading',
    createTreeWalker: walker,
    addEventListener: (type, fn) => { (listeners[type] = listeners[type] || []).push(fn); },
    querySelector: (sel) => html.querySelector(sel)
  };
  const win = {
    location: { protocol: u.protocol, hostname: u.hostname, port: u.port, pathname: u.pathname, assign(p) { this.assigned = p; } },
    MutationObserver: class {
      constructor(cb) { this.cb = cb; observer = this; }
      observe(root, opts) { this.root = root; this.opts = opts; }
    },
    requestIdleCallback: (fn) => idle.push(fn),
    setTimeout: () => 0,
    clearTimeout: () => {},
    setInterval: (fn) => { intervals.push(fn); return intervals.length; },
    clearInterval: (id) => { intervals[id - 1] = null; },
    addEventListener: () => {}
  };
  return {
    win, doc, html, listeners, idle,
    mutate: (records) => observer.cb(records),
    observer: () => observer,
    runIdle: () => { while (idle.length) idle.shift()({ didTimeout: false, timeRemaining: () => 50 }); },
    tickIntervals: (n) => { for (let i = 0; i < n; i++) intervals.forEach((f) => f && f()); }
  };
}

test('rewriteElement and rewriteTextNode', () => {
  const a = el('a', { href: 'http://localhost:5000/x', title: 'http://localhost:5000/' });
  rl.rewriteElement(a, ctx);
  assert.strictEqual(a.attrs.href, `${RT(5000)}/x`);
  assert.strictEqual(a.attrs.title, 'http://localhost:5000/', 'other attributes untouched');
  const img = el('img', { src: ' http://localhost:8000/api/file?p=1 ' });
  rl.rewriteElement(img, ctx);
  assert.strictEqual(img.attrs.src, `https://openhands.example.com/runtime/${CID}/8000/api/file?p=1`);
  const form = el('form', { action: 'http://10.0.0.5:5000/add' });
  rl.rewriteElement(form, ctx);
  assert.strictEqual(form.attrs.action, `${RT(5000)}/add`);
  const iframe = el('iframe', { src: 'http://example.com:8080/' });
  rl.rewriteElement(iframe, ctx);
  assert.strictEqual(iframe.attrs.src, 'http://example.com:8080/');

  const t1 = text('open http://localhost:5000');
  el('p', {}, t1);
  rl.rewriteTextNode(t1, ctx);
  assert.strictEqual(t1.nodeValue, `open ${RT(5000)}/`);
  for (const tag of ['script', 'style', 'textarea']) {
    const t2 = text('http://localhost:5000/');
    el(tag, {}, t2);
    rl.rewriteTextNode(t2, ctx);
    assert.strictEqual(t2.nodeValue, 'http://localhost:5000/', tag);
  }
  const editable = el('div', {});
  editable.isContentEditable = true;
  const t3 = text('http://localhost:5000/');
  editable.append(t3);
  rl.rewriteTextNode(t3, ctx);
  assert.strictEqual(t3.nodeValue, 'http://localhost:5000/', 'user input is not rewritten');
});

test('observer: batched in idle time, only added or changed nodes are visited', () => {
  const d = fakeDom(CONV);
  const old = el('a', { href: 'http://localhost:5000/old' });
  d.html.append(el('body', {}, old));
  rl.install(d.win, d.doc, {});
  assert.deepStrictEqual(d.observer().opts, {
    childList: true, subtree: true, characterData: true, attributes: true, attributeFilter: ['href', 'src', 'action']
  });

  const link = el('a', { href: 'http://localhost:5000/' }, text('http://localhost:5000/'));
  const code = el('script', {}, text('fetch("http://localhost:5000/")'));
  const msg = el('div', {}, el('p', {}, text('see http://localhost:51745/todos')), link, code,
    el('iframe', { src: 'ws://localhost:5000/x' }));
  d.html.childNodes[1].append(msg);
  d.mutate([{ type: 'childList', addedNodes: [msg], target: d.html.childNodes[1] }]);
  assert.strictEqual(link.attrs.href, 'http://localhost:5000/', 'nothing done inside the observer callback');
  assert.strictEqual(d.idle.length, 1, 'one idle callback scheduled');
  d.mutate([{ type: 'childList', addedNodes: [text('x')], target: msg }]);
  assert.strictEqual(d.idle.length, 1, 'batched into the same callback');
  d.runIdle();

  assert.strictEqual(msg.childNodes[0].childNodes[0].nodeValue, `see ${RT(51745)}/todos`);
  assert.strictEqual(link.attrs.href, `${RT(5000)}/`);
  assert.strictEqual(link.childNodes[0].nodeValue, `${RT(5000)}/`);
  assert.strictEqual(code.childNodes[0].nodeValue, 'fetch("http://localhost:5000/")', 'script text untouched');
  assert.strictEqual(msg.childNodes[3].attrs.src, `wss://5000-${CID}.runtime.openhands.example.com/x`);
  assert.strictEqual(old.reads, 0, 'nodes that were not added are never visited');
  assert.strictEqual(old.attrs.href, 'http://localhost:5000/old');

  // attribute and text changes of existing nodes
  link.attrs.href = 'http://localhost:6000/';
  const t = link.childNodes[0];
  t.nodeValue = 'now http://localhost:6000/';
  d.mutate([{ type: 'attributes', target: link }, { type: 'characterData', target: t }]);
  d.runIdle();
  assert.strictEqual(link.attrs.href, `${RT(6000)}/`);
  assert.strictEqual(t.nodeValue, `now ${RT(6000)}/`);
});

test('observer: large additions are spread over idle slices', () => {
  const d = fakeDom(CONV);
  d.html.append(el('body', {}));
  rl.install(d.win, d.doc, {});
  const big = el('div', {});
  for (let i = 0; i < 1000; i++) big.append(el('a', { href: `http://localhost:5000/${i}` }));
  d.mutate([{ type: 'childList', addedNodes: [big] }]);
  let slices = 0;
  let budget = 3;
  while (d.idle.length) {
    slices += 1;
    d.idle.shift()({ didTimeout: false, timeRemaining: () => (budget-- > 0 ? 50 : 0) });
    budget = 3;
  }
  assert.ok(slices > 1, `work split over ${slices} slices`);
  assert.strictEqual(big.childNodes[999].attrs.href, `${RT(5000)}/999`);
});

test('observer: pages without a conversation id queue nothing', () => {
  const d = fakeDom('https://openhands.example.com/');
  d.html.append(el('body', {}));
  rl.install(d.win, d.doc, {});
  d.idle.length = 0;
  const a = el('a', { href: 'http://localhost:5000/' });
  d.mutate([{ type: 'childList', addedNodes: [a] }]);
  assert.strictEqual(d.idle.length, 0);
  assert.strictEqual(a.reads, 0);
});

test('a link clicked before the idle batch is rewritten at click time', () => {
  const d = fakeDom(CONV);
  rl.install(d.win, d.doc, {});
  const span = el('span', {}, text('open'));
  const a = el('a', { href: 'http://localhost:5000/' }, span);
  d.listeners.click.forEach((f) => f({ type: 'click', target: span }));
  assert.strictEqual(a.attrs.href, `${RT(5000)}/`);
});

test('setup modal: hidden only after the settings exist or were created', async (t) => {
  async function run(settingsStatus) {
    const d = fakeDom('https://openhands.example.com/');
    const overlay = el('div', { class: 'overlay' }, el('div', { 'data-testid': 'ai-config-modal' }));
    overlay.matches = (sel) => sel === '.fixed.inset-0.flex.items-center.justify-center.z-60';
    d.html.append(el('body', {}, overlay));
    d.doc.readyState = 'complete';
    const calls = [];
    d.win.fetch = (url, init) => {
      calls.push(`${(init && init.method) || 'GET'} ${url}`);
      if (url === '/api/options/models') return Promise.resolve(Response.json(['anthropic.claude-opus-4-v1:0']));
      if (url === '/api/settings' && !(init && init.method === 'POST')) {
        return Promise.resolve(new Response('', { status: settingsStatus }));
      }
      return Promise.resolve(Response.json({}));
    };
    d.win.setTimeout = setTimeout;
    d.win.clearTimeout = clearTimeout;
    d.win.Request = Request;
    rl.install(d.win, d.doc, { defaultSettings: true });
    d.tickIntervals(1);
    await new Promise((r) => setTimeout(r, 20));
    return { overlay, calls };
  }
  await t.test('missing -> created -> hidden', async () => {
    const { overlay, calls } = await run(404);
    assert.ok(calls.includes('POST /api/settings'));
    assert.strictEqual(overlay.style.display, 'none');
  });
  await t.test('server error -> nothing written, modal stays', async () => {
    const { overlay, calls } = await run(503);
    assert.ok(!calls.includes('POST /api/settings'));
    assert.strictEqual(overlay.style.display, undefined);
  });
});

test('logout button (data-logout-url)', () => {
  const d = fakeDom('https://openhands.example.com/');
  rl.install(d.win, d.doc, { logoutUrl: '/_logout' });
  const inner = text(' Logout ');
  const button = el('button', {}, inner);
  let prevented = 0;
  const ev = (target) => ({
    type: 'click', target,
    preventDefault: () => { prevented += 1; },
    stopImmediatePropagation: () => {}
  });
  d.listeners.click.forEach((f) => f(ev(button)));
  assert.strictEqual(d.win.location.assigned, '/_logout');
  assert.strictEqual(prevented, 1);
  d.win.location.assigned = undefined;
  d.listeners.click.forEach((f) => f(ev(el('button', {}, text('Log in')))));
  assert.strictEqual(d.win.location.assigned, undefined);
});
