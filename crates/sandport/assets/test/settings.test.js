'use strict';
// Settings helpers: defaults are created only when the server says the settings
// do not exist; errors and timeouts never lead to a write and are not cached.
const test = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const rl = require(path.join(__dirname, '..', 'runtime-links.js'));

const MODELS = ['amazon.titan-embed-text-v1', 'anthropic.claude-3-haiku-20240307-v1:0', 'anthropic.claude-sonnet-4-20250514-v1:0'];

function json(status, body) {
  return new Response(body === undefined ? '' : JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json' }
  });
}

// Fake server: routes['GET /api/settings'] = () => Response | Promise | throws.
function server(routes) {
  const log = [];
  const fetch = (url, init) => {
    const key = `${(init && init.method) || 'GET'} ${url}`;
    log.push({ key, init });
    const h = routes[key];
    if (!h) return Promise.resolve(json(404, { detail: 'no route' }));
    return Promise.resolve().then(h);
  };
  return { fetch, log, posts: () => log.filter((e) => e.key === 'POST /api/settings') };
}

function helper(srv, extra) {
  return rl.createSettingsHelper(Object.assign({
    fetch: srv.fetch,
    setTimeout,
    clearTimeout,
    AbortController,
    timeoutMs: 50
  }, extra || {}));
}

const models = () => json(200, MODELS);

test('classifySettingsResponse', () => {
  const cases = [
    [200, null, 'exists'],
    [204, null, 'exists'],
    [404, null, 'missing'],
    [400, { msg_id: 'CONFIGURATION$SETTINGS_NOT_FOUND' }, 'missing'],
    [400, { message: 'Settings not found' }, 'missing'],
    [400, { msg_id: 'OTHER' }, 'error'],
    [400, null, 'error'],
    [400, 'Settings not found', 'error'],
    [401, null, 'error'],
    [403, null, 'error'],
    [500, { msg_id: 'CONFIGURATION$SETTINGS_NOT_FOUND' }, 'error'],
    [502, null, 'error'],
    [0, null, 'error']
  ];
  for (const [status, body, expected] of cases) {
    assert.strictEqual(rl.classifySettingsResponse(status, body), expected, `${status} ${JSON.stringify(body)}`);
  }
});

test('pickDefaultModel', () => {
  const cases = [
    [['global.anthropic.claude-sonnet-4-5-v1:0', 'global.anthropic.claude-opus-4-1-v1:0'], 'global.anthropic.claude-opus-4-1-v1:0'],
    [['anthropic.claude-opus-4-v1:0', 'global.anthropic.claude-sonnet-4-5-v1:0'], 'global.anthropic.claude-sonnet-4-5-v1:0'],
    [['anthropic.claude-sonnet-3-v1:0', 'anthropic.claude-sonnet-4-v1:0'], 'anthropic.claude-sonnet-4-v1:0'],
    [['anthropic.claude-sonnet-3-v1:0'], 'anthropic.claude-sonnet-3-v1:0'],
    [['anthropic.claude-instant-v1:2'], 'anthropic.claude-instant-v1:2'],
    [['anthropic.claude-3-haiku-v1:0', 'amazon.nova-pro-v1:0'], 'anthropic.claude-3-haiku-v1:0'],
    [['global.anthropic.claude-opus-embed'], 'global.anthropic.claude-opus-4-5-20251101-v1:0'],
    [['amazon.nova-pro-v1:0'], 'global.anthropic.claude-opus-4-5-20251101-v1:0'],
    [[], 'global.anthropic.claude-opus-4-5-20251101-v1:0'],
    [null, 'global.anthropic.claude-opus-4-5-20251101-v1:0'],
    [[1, null, 'anthropic.claude-opus-4-v1:0'], 'anthropic.claude-opus-4-v1:0']
  ];
  for (const [list, expected] of cases) {
    assert.strictEqual(rl.pickDefaultModel(list), expected, JSON.stringify(list));
  }
  assert.strictEqual(rl.pickDefaultModel(['amazon.nova-pro-v1:0'], 'my.model'), 'my.model');
});

test('isCreateConversationRequest', () => {
  const ctx = rl.makeContext(new URL('https://openhands.example.com/'));
  const cases = [
    ['POST', '/api/conversations', true],
    ['post', '/api/conversations/', true],
    ['POST', '/api/conversations?x=1', true],
    ['POST', 'https://openhands.example.com/api/conversations', true],
    ['POST', 'https://OPENHANDS.example.com/api/conversations', true],
    ['GET', '/api/conversations', false],
    [undefined, '/api/conversations', false],
    ['POST', '/api/conversations/abc/start', false],
    ['POST', '/api/v1/app-conversations', false],
    ['POST', 'https://other.example.com/api/conversations', false],
    ['POST', 'https://openhands.example.com/runtime/aa/8000/api/conversations', false],
    ['POST', '//evil.example/api/conversations', false],
    ['POST', 'api/conversations', false],
    ['POST', null, false]
  ];
  for (const [method, url, expected] of cases) {
    assert.strictEqual(rl.isCreateConversationRequest(method, url, ctx), expected, `${method} ${url}`);
  }
});

test('404: default settings are created', async () => {
  const srv = server({
    'GET /api/options/models': models,
    'GET /api/settings': () => json(404),
    'POST /api/settings': () => json(200, {})
  });
  assert.strictEqual(await helper(srv).ensure(), true);
  const posts = srv.posts();
  assert.strictEqual(posts.length, 1);
  assert.deepStrictEqual(JSON.parse(posts[0].init.body), {
    llm_provider: 'bedrock',
    llm_model: 'bedrock/anthropic.claude-sonnet-4-20250514-v1:0',
    llm_api_key: null,
    aws_region: null
  });
  assert.strictEqual(posts[0].init.headers['Content-Type'], 'application/json');
});

test('400 with the not-found codes: default settings are created', async () => {
  for (const body of [{ msg_id: 'CONFIGURATION$SETTINGS_NOT_FOUND' }, { message: 'Settings not found' }]) {
    const srv = server({
      'GET /api/options/models': models,
      'GET /api/settings': () => json(400, body),
      'POST /api/settings': () => json(200, {})
    });
    assert.strictEqual(await helper(srv).ensure(), true);
    assert.strictEqual(srv.posts().length, 1);
  }
});

test('existing settings: nothing written, success remembered', async () => {
  const srv = server({ 'GET /api/options/models': models, 'GET /api/settings': () => json(200, {}) });
  const h = helper(srv);
  assert.strictEqual(await h.ensure(), true);
  const n = srv.log.length;
  assert.strictEqual(await h.ensure(), true);
  assert.strictEqual(srv.log.length, n, 'no new requests after success');
  assert.strictEqual(srv.posts().length, 0);
  assert.strictEqual(await h.ensure(true), true);
  assert.ok(srv.log.length > n, 'force re-checks');
});

test('transient errors never overwrite settings and are retried later', async (t) => {
  const failures = {
    '500': () => json(500, { error: 'boom' }),
    '502': () => json(502),
    '401': () => json(401, { error: 'unauthorized' }),
    '400 other': () => json(400, { msg_id: 'SOMETHING_ELSE' }),
    '400 not json': () => new Response('<html>', { status: 400 }),
    'network error': () => { throw new TypeError('Failed to fetch'); }
  };
  for (const [name, fail] of Object.entries(failures)) {
    await t.test(name, async () => {
      let mode = 'fail';
      const srv = server({
        'GET /api/options/models': models,
        'GET /api/settings': () => (mode === 'fail' ? fail() : json(404)),
        'POST /api/settings': () => json(200, {})
      });
      const h = helper(srv);
      assert.strictEqual(await h.ensure(), false);
      assert.strictEqual(srv.posts().length, 0, 'no write after an error');
      mode = 'missing';
      assert.strictEqual(await h.ensure(), true, 'a later call tries again');
      assert.strictEqual(srv.posts().length, 1);
    });
  }
});

test('timeout of GET /api/settings: no write, later retry', async () => {
  let hang = true;
  const srv = server({
    'GET /api/options/models': models,
    'GET /api/settings': () => (hang ? new Promise(() => {}) : json(404)),
    'POST /api/settings': () => json(200, {})
  });
  const h = helper(srv);
  assert.strictEqual(await h.ensure(), false);
  assert.strictEqual(srv.posts().length, 0);
  const getInit = srv.log.find((e) => e.key === 'GET /api/settings').init;
  assert.strictEqual(getInit.signal.aborted, true, 'the hanging request is aborted');
  hang = false;
  assert.strictEqual(await h.ensure(), true);
  assert.strictEqual(srv.posts().length, 1);
});

test('model list missing, empty or not JSON: nothing else is asked', async (t) => {
  const answers = {
    empty: () => json(200, []),
    object: () => json(200, { models: MODELS }),
    html: () => new Response('<html></html>', { status: 200 }),
    'status 500': () => json(500, MODELS),
    timeout: () => new Promise(() => {})
  };
  for (const [name, answer] of Object.entries(answers)) {
    await t.test(name, async () => {
      const srv = server({ 'GET /api/options/models': answer, 'GET /api/settings': () => json(404) });
      assert.strictEqual(await helper(srv).ensure(), false);
      assert.deepStrictEqual(srv.log.map((e) => e.key), ['GET /api/options/models']);
    });
  }
});

test('failed create is not cached', async () => {
  let createStatus = 500;
  const srv = server({
    'GET /api/options/models': models,
    'GET /api/settings': () => json(404),
    'POST /api/settings': () => json(createStatus, {})
  });
  const h = helper(srv);
  assert.strictEqual(await h.ensure(), false);
  createStatus = 200;
  assert.strictEqual(await h.ensure(), true);
  assert.strictEqual(srv.posts().length, 2);
});

test('concurrent calls share one attempt', async () => {
  const srv = server({
    'GET /api/options/models': models,
    'GET /api/settings': () => json(404),
    'POST /api/settings': () => json(200, {})
  });
  const h = helper(srv);
  const results = await Promise.all([h.ensure(), h.ensure(), h.ensure(true)]);
  assert.deepStrictEqual(results, [true, true, true]);
  assert.strictEqual(srv.posts().length, 1);
});

test('data-default-model is used as fallback and not prefixed twice', async () => {
  for (const [fallback, expected] of [['my.model-v1', 'bedrock/my.model-v1'], ['bedrock/my.model-v1', 'bedrock/my.model-v1']]) {
    const srv = server({
      'GET /api/options/models': () => json(200, ['amazon.nova-pro-v1:0']),
      'GET /api/settings': () => json(404),
      'POST /api/settings': () => json(200, {})
    });
    assert.strictEqual(await helper(srv, { defaultModel: fallback }).ensure(), true);
    assert.strictEqual(JSON.parse(srv.posts()[0].init.body).llm_model, expected);
  }
});
