'use strict';
// URL rules of runtime-links.js, table first. Pages and expectations follow the
// reference examples (page https://openhands.example.com/conversations/7c15e423-...).
const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const rl = require(path.join(__dirname, '..', 'runtime-links.js'));

const CID = '7c15e423fbd44f8f8bf483a481daa4d9';
const UUID = '7c15e423-fbd4-4f8f-8bf4-83a481daa4d9';

function page(href, runtimeDomain) {
  const u = new URL(href);
  return rl.makeContext(u, runtimeDomain);
}

const PAGES = {
  conv: page(`https://openhands.example.com/conversations/${UUID}`),
  home: page('https://openhands.example.com/'),
  settings: page('https://openhands.example.com/settings'),
  httpConv: page(`http://openhands.example.com/conversations/${CID}`),
  dev: page(`http://localhost:8080/conversations/${UUID}`),
  configured: page(`https://app.example.com/conversations/${CID}`, 'runtime.example.com'),
  configuredPort: page(`https://app.example.com:8443/conversations/${CID}/chat`, 'runtime.example.com')
};

const RT = `5000-${CID}.runtime.openhands.example.com`;

// [page, input, expected, what]
const TABLE = [
  // reference §3.1, fetch / XHR (string URLs)
  ['conv', 'http://localhost:5000/', `https://${RT}/`, 'user app root'],
  ['conv', 'http://localhost:5000', `https://${RT}/`, 'no path: slash added'],
  ['conv', 'http://localhost:5000?x=1', `https://${RT}?x=1`, 'query without path: no slash inserted'],
  ['conv', 'http://localhost:38013/api/data', `https://openhands.example.com/runtime/${CID}/38013/api/data`, 'agent API: path form'],
  ['conv', 'http://host.docker.internal:32768/api/conversations/x', `https://openhands.example.com/runtime/${CID}/32768/api/conversations/x`, 'host.docker.internal agent API'],
  ['home', 'http://localhost:5000/', 'http://localhost:5000/', 'no conversation id: unchanged (fixed: no unroutable /runtime/5000/)'],
  ['home', 'http://localhost:38013/api/data', 'http://localhost:38013/api/data', 'no conversation id, agent path: unchanged'],
  ['settings', 'http://localhost:5000/', 'http://localhost:5000/', 'settings page: unchanged'],
  // WebSocket
  ['conv', 'ws://localhost:32768/sockets/events/abc?session_api_key=K', `wss://openhands.example.com/runtime/${CID}/32768/sockets/events/abc?session_api_key=K`, 'agent socket: path form, https page -> wss'],
  ['conv', 'ws://localhost:5000/ws', `wss://${RT}/ws`, 'user app socket: runtime host, wss'],
  ['conv', 'wss://localhost:5000/ws', `wss://${RT}/ws`, 'wss input on https page'],
  ['httpConv', 'ws://localhost:5000/ws', `ws://5000-${CID}.runtime.openhands.example.com/ws`, 'http page -> ws'],
  ['httpConv', 'wss://localhost:5000/ws', `ws://5000-${CID}.runtime.openhands.example.com/ws`, 'wss follows the page scheme (http page -> ws)'],
  ['httpConv', 'ws://localhost:32768/sockets/events/abc', `ws://openhands.example.com/runtime/${CID}/32768/sockets/events/abc`, 'http page agent socket'],
  ['home', 'ws://localhost:32768/sockets/events/abc', 'ws://localhost:32768/sockets/events/abc', '/sockets/ without conversation id: unchanged (fixed)'],
  // window.open / editor links (TC-010)
  ['conv', 'http://openhands.example.com:49955/?tkn=abc&folder=/workspace', `https://49955-${CID}.runtime.openhands.example.com/?tkn=abc&folder=/workspace`, 'editor link: query kept'],
  ['conv', 'http://openhands.example.com:49955/?tkn=x&folder=/workspace', `https://49955-${CID}.runtime.openhands.example.com/?tkn=x&folder=/workspace`, 'TC-010 editor link'],
  ['conv', 'http://example.com:8080/', 'http://example.com:8080/', 'foreign host: unchanged'],
  ['conv', `https://5000-${CID}.runtime.openhands.example.com/`, `https://5000-${CID}.runtime.openhands.example.com/`, 'runtime URL: unchanged'],
  ['conv', 'https://5000-abc.runtime.openhands.example.com/x', 'https://5000-abc.runtime.openhands.example.com/x', 'other runtime URL: unchanged'],
  // hosts
  ['conv', 'http://127.0.0.1:5000/', `https://${RT}/`, '127.0.0.1'],
  ['conv', 'http://127.0.1.1:5000/', `https://${RT}/`, 'loopback 127/8'],
  ['conv', 'http://[::1]:5000/', `https://${RT}/`, 'IPv6 loopback'],
  ['conv', 'http://0.0.0.0:8000/docs', `https://8000-${CID}.runtime.openhands.example.com/docs`, 'unspecified address as printed by dev servers'],
  ['conv', 'http://LOCALHOST:5000/A?B=C#D', `https://${RT}/A?B=C#D`, 'host case-insensitive, rest kept byte for byte'],
  ['conv', 'HTTP://localhost:5000/', `https://${RT}/`, 'scheme case-insensitive'],
  ['conv', 'http://10.0.3.7:5000/', `https://${RT}/`, 'RFC 1918 10/8'],
  ['conv', 'http://172.16.0.2:5000/', `https://${RT}/`, 'RFC 1918 172.16/12 low'],
  ['conv', 'http://172.31.255.254:5000/', `https://${RT}/`, 'RFC 1918 172.16/12 high'],
  ['conv', 'http://192.168.1.20:5000/', `https://${RT}/`, 'RFC 1918 192.168/16'],
  ['conv', 'http://10.1.2.3:8000/api/conversations', `https://openhands.example.com/runtime/${CID}/8000/api/conversations`, 'private IP agent API'],
  ['conv', 'http://172.15.0.2:5000/', 'http://172.15.0.2:5000/', 'public 172.15: unchanged'],
  ['conv', 'http://172.32.0.2:5000/', 'http://172.32.0.2:5000/', 'public 172.32: unchanged'],
  ['conv', 'http://192.169.1.1:5000/', 'http://192.169.1.1:5000/', 'public 192.169: unchanged'],
  ['conv', 'http://11.0.0.1:5000/', 'http://11.0.0.1:5000/', 'public 11/8: unchanged'],
  ['conv', 'http://10.0.0.256:5000/', 'http://10.0.0.256:5000/', 'invalid octet: unchanged'],
  ['conv', 'http://[::2]:5000/', 'http://[::2]:5000/', 'other IPv6: unchanged'],
  ['conv', 'http://localhost.example.com:5000/', 'http://localhost.example.com:5000/', 'lookalike host: unchanged'],
  ['conv', 'http://mylocalhost:5000/', 'http://mylocalhost:5000/', 'lookalike host 2: unchanged'],
  ['conv', 'http://user@localhost:5000/', 'http://user@localhost:5000/', 'user info: unchanged'],
  // explicit port required and valid
  ['conv', 'http://localhost/', 'http://localhost/', 'no port: unchanged'],
  ['conv', 'http://localhost:/x', 'http://localhost:/x', 'empty port: unchanged'],
  ['conv', 'http://localhost:0/', 'http://localhost:0/', 'port 0: unchanged'],
  ['conv', 'http://localhost:65536/', 'http://localhost:65536/', 'port > 65535: unchanged'],
  ['conv', 'http://localhost:65535/', `https://65535-${CID}.runtime.openhands.example.com/`, 'port 65535'],
  ['conv', 'http://localhost:05000/', `https://${RT}/`, 'leading zero normalised'],
  ['conv', 'http://localhost:5000x/', 'http://localhost:5000x/', 'junk after port: unchanged'],
  // not absolute http(s)/ws(s)
  ['conv', '/api/conversations', '/api/conversations', 'relative URL: unchanged'],
  ['conv', '//localhost:5000/', '//localhost:5000/', 'scheme-relative: unchanged'],
  ['conv', 'ftp://localhost:5000/', 'ftp://localhost:5000/', 'other scheme: unchanged'],
  ['conv', 'data:text/plain,http://localhost:5000/', 'data:text/plain,http://localhost:5000/', 'data URL: unchanged'],
  ['conv', '', '', 'empty string'],
  // agent path detection is exact
  ['conv', 'http://localhost:5000/api', `https://${RT}/api`, '/api without slash: runtime host'],
  ['conv', 'http://localhost:5000/apix/y', `https://${RT}/apix/y`, '/apix: runtime host'],
  ['conv', 'http://localhost:5000/static/api/x', `https://${RT}/static/api/x`, 'api not first segment: runtime host'],
  ['conv', 'http://localhost:8000/api/x?a=%2F#frag', `https://openhands.example.com/runtime/${CID}/8000/api/x?a=%2F#frag`, 'agent API: query and fragment kept'],
  // the page's own origin is never rewritten
  ['dev', 'http://localhost:8080/api/settings', 'http://localhost:8080/api/settings', 'dev: the app itself'],
  ['dev', 'http://127.0.0.1:8080/x', 'http://127.0.0.1:8080/x', 'dev: the app itself via another loopback name'],
  ['dev', `http://localhost:8080/runtime/${CID}/38013/api/data`, `http://localhost:8080/runtime/${CID}/38013/api/data`, 'dev: path form unchanged'],
  ['conv', 'https://openhands.example.com:443/x', 'https://openhands.example.com:443/x', 'own host with its own port'],
  ['conv', 'https://openhands.example.com/api/x', 'https://openhands.example.com/api/x', 'own host without port'],
  // dev page: page port carried to runtime hosts
  ['dev', 'http://localhost:5000/', `http://5000-${CID}.runtime.localhost:8080/`, 'dev runtime host keeps the page port'],
  ['dev', 'http://localhost:38013/api/data', `http://localhost:8080/runtime/${CID}/38013/api/data`, 'dev agent API'],
  ['dev', 'ws://localhost:5000/ws', `ws://5000-${CID}.runtime.localhost:8080/ws`, 'dev socket'],
  ['dev', `http://5000-${CID}.runtime.localhost:8080/`, `http://5000-${CID}.runtime.localhost:8080/`, 'dev runtime URL unchanged'],
  // configured runtime domain
  ['configured', 'http://localhost:5000/x', `https://5000-${CID}.runtime.example.com/x`, 'data-runtime-domain'],
  ['configured', 'http://app.example.com:8001/?tkn=t', `https://8001-${CID}.runtime.example.com/?tkn=t`, 'editor link with data-runtime-domain'],
  ['configured', 'http://localhost:8000/api/x', `https://app.example.com/runtime/${CID}/8000/api/x`, 'agent API stays on the app origin'],
  ['configuredPort', 'http://localhost:5000/', `https://5000-${CID}.runtime.example.com:8443/`, 'page port carried'],
  ['configuredPort', 'ws://localhost:8000/sockets/e', `wss://app.example.com:8443/runtime/${CID}/8000/sockets/e`, 'page port in path form']
];

test('rewriteUrl table', async (t) => {
  for (const [p, input, expected, what] of TABLE) {
    await t.test(`${what}: ${input}`, () => {
      assert.strictEqual(rl.rewriteUrl(input, PAGES[p]), expected);
    });
  }
});

test('rewriteUrl is idempotent: rewriting a rewritten URL changes nothing', () => {
  for (const [p, input] of TABLE) {
    const once = rl.rewriteUrl(input, PAGES[p]);
    assert.strictEqual(rl.rewriteUrl(once, PAGES[p]), once, input);
  }
});

test('rewriteUrl leaves non-strings and missing contexts alone', () => {
  const u = new URL('http://localhost:5000/');
  assert.strictEqual(rl.rewriteUrl(u, PAGES.conv), u);
  assert.strictEqual(rl.rewriteUrl(undefined, PAGES.conv), undefined);
  assert.strictEqual(rl.rewriteUrl(null, PAGES.conv), null);
  assert.strictEqual(rl.rewriteUrl('http://localhost:5000/', null), 'http://localhost:5000/');
  assert.strictEqual(rl.rewriteUrl('http://localhost:5000/', {}), 'http://localhost:5000/');
});

test('parseConversationId', async (t) => {
  const cases = [
    [`/conversations/${UUID}`, CID],
    [`/conversations/${CID}`, CID],
    [`/conversations/${UUID.toUpperCase()}`, CID],
    [`/conversations/${UUID}/`, CID],
    [`/conversations/${UUID}/workspace`, CID],
    [`/app/conversations/${CID}`, CID],
    ['/', null],
    ['', null],
    [undefined, null],
    ['/conversations', null],
    ['/conversations/', null],
    ['/conversations/abc', null],
    ['/conversations/7c15e423fbd44f8f8bf483a481daa4d', null],
    [`/conversations/${CID}0`, null],
    [`/conversations/${CID}x`, null],
    ['/conversations/7c15e423-fbd44f8f-8bf4-83a481daa4d9', null],
    [`/myconversations/${CID}`, null]
  ];
  for (const [input, expected] of cases) {
    await t.test(String(input), () => assert.strictEqual(rl.parseConversationId(input), expected));
  }
});

test('makeContext', () => {
  assert.deepStrictEqual(PAGES.conv, {
    protocol: 'https:',
    hostname: 'openhands.example.com',
    port: '',
    host: 'openhands.example.com',
    convId: CID,
    runtimeDomain: 'runtime.openhands.example.com'
  });
  assert.strictEqual(PAGES.dev.runtimeDomain, 'runtime.localhost');
  assert.strictEqual(PAGES.dev.host, 'localhost:8080');
  assert.strictEqual(PAGES.home.convId, null);
  const conv = `https://a.example.com/conversations/${CID}`;
  assert.strictEqual(page(conv, ' Runtime.Example.COM. ').runtimeDomain, 'runtime.example.com');
  assert.strictEqual(page(conv, 'evil.com/x').runtimeDomain, 'runtime.a.example.com', 'invalid attribute ignored');
  assert.strictEqual(page(conv, 'rt.example.com:8443').runtimeDomain, 'runtime.a.example.com', 'port not allowed in the attribute');
  assert.strictEqual(page(conv, '').runtimeDomain, 'runtime.a.example.com');
  assert.strictEqual(rl.makeContext({ protocol: 'file:', hostname: '', pathname: '/x' }), null);
  assert.strictEqual(rl.makeContext(null), null);
});

test('isLocalHost', () => {
  for (const h of ['localhost', 'LocalHost', '127.0.0.1', '127.255.255.255', '0.0.0.0', '[::1]',
    'host.docker.internal', '10.0.0.1', '10.255.255.255', '172.16.0.0', '172.31.255.255', '192.168.0.1']) {
    assert.strictEqual(rl.isLocalHost(h), true, h);
  }
  for (const h of ['example.com', '8.8.8.8', '172.15.0.1', '172.32.0.1', '192.167.0.1', '169.254.1.1',
    '100.64.0.1', '1.2.3.4.5', '10.0.0', '[::2]', '::1', 'localhost.', 'host.docker.internal.evil', '', undefined]) {
    assert.strictEqual(rl.isLocalHost(h), false, String(h));
  }
});
