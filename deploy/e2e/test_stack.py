"""The kit end to end: deploy/compose.yaml as shipped, two users, a real browser.

Started by deploy/e2e/run.sh (``make e2e``) once the images exist. Only environment is added
to the compose file, plus the edge the kit's layout expects (edge.py). Everything the test
creates is named after one run id and removed at the end, whatever happened.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from edge import Edge

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / 'deploy' / 'compose.yaml'
DOMAIN = 'openhands.localtest'
RUN = 'spe2e' + uuid.uuid4().hex[:8]


def eventually(what: str, probe: Callable[[], Any], timeout: float = 180, every: float = 0.5) -> Any:
    """Polls `probe` until it returns something truthy; fails naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except Exception as e:  # a probe that raises has not succeeded yet
            last = e
        time.sleep(every)
    raise AssertionError(f'{what}: not within {timeout} s (last: {last!r})')


def compose_command() -> list[str]:
    if subprocess.run(['docker', 'compose', 'version'], capture_output=True).returncode == 0:
        return ['docker', 'compose']
    return ['docker-compose']


class Stack:
    """The compose project, the edge in front of it, and cleanup of what the app created."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.secret = uuid.uuid4().hex + uuid.uuid4().hex
        secrets = workdir / 'secrets'
        secrets.mkdir()
        (secrets / 'origin-verify').write_text(self.secret + '\n')
        (secrets / 'app-assertion-key').write_text(uuid.uuid4().hex + uuid.uuid4().hex + '\n')
        (secrets / 'sandbox-secret-key').write_text(uuid.uuid4().hex + uuid.uuid4().hex + '\n')
        for f in secrets.iterdir():
            f.chmod(0o644)
        self.edge_socket = socket.create_server(('127.0.0.1', 0))
        self.edge_port = self.edge_socket.getsockname()[1]
        self.origin = f'http://{DOMAIN}:{self.edge_port}'
        self.env = {
            **os.environ,
            'COMPOSE_PROJECT_NAME': RUN,
            'SANDPORT_SECRETS': str(secrets),
            'SANDPORT_SANDBOX_NETWORK': f'{RUN}_sandboxes',
            'SANDPORT_WORKSPACE_VOLUME': f'{RUN}-workspace',
            'SANDPORT_DOMAIN': DOMAIN,
            'SANDPORT_RUNTIME_DOMAIN': f'runtime.{DOMAIN}',
            'SANDPORT_EXTERNAL_SCHEME': 'http',
            'SANDPORT_WEB_URL': self.origin,
            # a port Docker picks: read back with `compose port`
            'SANDPORT_PUBLISH': '127.0.0.1::8080',
            'DOCKER_GID': str(os.stat('/var/run/docker.sock').st_gid),
        }
        self.compose = compose_command() + ['-f', str(COMPOSE_FILE)]
        self.loop = asyncio.new_event_loop()
        self.edge: Edge | None = None

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, check=check)

    def up(self) -> None:
        self.run(*self.compose, 'up', '-d')
        port = self.run(*self.compose, 'port', 'sandport', '8080').stdout.strip().rsplit(':', 1)[1]
        self.sandport = ('127.0.0.1', int(port))
        self.edge = Edge(self.sandport, self.secret, DOMAIN)
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self.edge.start(self.edge_socket), self.loop).result(10)

    def logs(self) -> str:
        return self.run(*self.compose, 'logs', '--no-color', '--tail', '200', check=False).stdout

    def sandboxes(self) -> list[dict[str, Any]]:
        """The sandbox containers the app created for this run (on its network)."""
        ids = self.run('docker', 'ps', '-aq', '--filter', f'network={RUN}_sandboxes',
                       '--filter', 'name=oh-agent-server-').stdout.split()
        if not ids:
            return []
        return json.loads(self.run('docker', 'inspect', *ids).stdout)

    def down(self) -> None:
        for container in self.sandboxes():
            self.run('docker', 'rm', '-f', container['Id'], check=False)
        self.run(*self.compose, 'down', '-v', '--remove-orphans', check=False)
        volumes = self.run('docker', 'volume', 'ls', '-q', '--filter', f'name={RUN}', check=False).stdout.split()
        if volumes:
            self.run('docker', 'volume', 'rm', '-f', *volumes, check=False)
        if self.edge is not None:
            asyncio.run_coroutine_threadsafe(self.edge.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)

    def leftovers(self) -> list[str]:
        found = []
        for kind in ('container', 'network', 'volume'):
            names = self.run('docker', kind, 'ls', *(['-a'] if kind == 'container' else []),
                             '-q', '--filter', f'name={RUN}', check=False).stdout.split()
            found += [f'{kind} {n}' for n in names]
        return found


def call(stack: Stack, user: str | None, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None, host: str | None = None) -> tuple[int, bytes]:
    """A raw client straight to sandport, as the edge would send it."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f'http://{stack.sandport[0]}:{stack.sandport[1]}{path}', data=data, method=method)
    request.add_header('Host', host or DOMAIN)
    if data is not None:
        request.add_header('Content-Type', 'application/json')
    if user is not None:
        request.add_header('X-Cognito-User-Id', user)
    request.add_header('X-Origin-Verify', stack.secret)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Browser:
    """Headless Chromium through chromedriver's WebDriver API; every *.localtest is loopback."""

    def __init__(self, workdir: Path) -> None:
        self.driver = subprocess.Popen(
            [shutil.which('chromedriver') or 'chromedriver', '--port=0'],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.driver.stdout is not None
        line = ''
        for line in self.driver.stdout:
            found = re.search(r'started successfully on port (\d+)', line)
            if found:
                self.base = f'http://127.0.0.1:{found.group(1)}'
                break
        else:
            raise AssertionError(f'chromedriver did not start: {line}')
        threading.Thread(target=self.driver.stdout.read, daemon=True).start()
        self.profile = workdir / 'chromium'

    def session(self) -> 'Session':
        args = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                '--host-resolver-rules=MAP *.localtest 127.0.0.1',
                f'--user-data-dir={self.profile}-{uuid.uuid4().hex[:6]}']
        caps = {'capabilities': {'alwaysMatch': {
            'browserName': 'chrome',
            'goog:chromeOptions': {'args': args, 'binary': shutil.which('chromium') or 'chromium'}}}}
        value = webdriver(f'{self.base}/session', caps)
        return Session(self.base + '/session/' + value['sessionId'])

    def close(self) -> None:
        self.driver.kill()
        self.driver.wait()


def webdriver(url: str, body: Any = None, method: str | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method or ('POST' if data else 'GET'),
                                     headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())['value']


class Session:
    def __init__(self, url: str) -> None:
        self.url = url
        webdriver(f'{url}/timeouts', {'script': 60000, 'pageLoad': 60000})

    def go(self, url: str) -> None:
        webdriver(f'{self.url}/url', {'url': url})

    def run(self, script: str, *args: Any) -> Any:
        """Runs an async script: the last argument is the callback it must call."""
        return webdriver(f'{self.url}/execute/async', {'script': script, 'args': list(args)})

    def page_text(self) -> str:
        return self.run('arguments[arguments.length - 1](document.body ? document.body.innerText : "")')

    def current_url(self) -> str:
        return webdriver(f'{self.url}/url')

    def quit(self) -> None:
        webdriver(self.url, method='DELETE')


FETCH = """
const [method, url, body, headers, done] = arguments;
fetch(url, {method, credentials: 'include', headers: Object.assign(
    body ? {'Content-Type': 'application/json'} : {}, headers || {}),
    body: body ? JSON.stringify(body) : undefined})
  .then(async r => done({status: r.status, text: await r.text()}))
  .catch(e => done({status: 0, text: String(e)}));
"""

WEBSOCKET = """
const [url, done] = arguments;
const ws = new WebSocket(url);
const timer = setTimeout(() => done({opened: false, error: 'timeout'}), 30000);
ws.onopen = () => { ws.send(JSON.stringify({type: 'ping'})); };
ws.onmessage = m => { clearTimeout(timer); done({opened: true, message: String(m.data).slice(0, 200)}); ws.close(); };
ws.onerror = () => { clearTimeout(timer); done({opened: false, error: 'error'}); };
ws.onclose = e => { clearTimeout(timer); done({opened: e.code === 1000, code: e.code}); };
"""


def fetch(session: Session, method: str, url: str, body: Any = None,
          headers: dict[str, str] | None = None) -> tuple[int, str]:
    result = session.run(FETCH, method, url, body, headers)
    return result['status'], result['text']


@pytest.fixture(scope='module')
def stack() -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix=f'{RUN}-'))
    s = Stack(workdir)
    try:
        s.up()
        eventually('the app answers through sandport',
                   lambda: call(s, 'probe', 'GET', '/api/v1/app-conversations/search')[0] == 200,
                   timeout=240)
        yield s
    finally:
        logs = s.logs()
        s.down()
        shutil.rmtree(workdir, ignore_errors=True)
        left = s.leftovers()
        if left:
            print(logs)
        assert not left, f'left behind: {left}'


@pytest.fixture(scope='module')
def browser(stack: Stack) -> Iterator[Browser]:
    b = Browser(stack.workdir)
    try:
        yield b
    finally:
        b.close()


def start_conversation(stack: Stack, session: Session) -> tuple[dict[str, Any], dict[str, Any]]:
    """Starts a conversation through the app's API; its start task and the conversation."""
    status, text = fetch(session, 'POST', f'{stack.origin}/api/v1/app-conversations', {})
    assert status == 200, text
    task = json.loads(text)

    def ready() -> dict[str, Any] | None:
        status, text = fetch(session, 'GET',
                             f'{stack.origin}/api/v1/app-conversations/start-tasks?ids={task["id"]}')
        assert status == 200, text
        (current,) = json.loads(text)
        assert current['status'] != 'ERROR', current
        return current if current['status'] == 'READY' else None

    done = eventually('the conversation is ready', ready, timeout=300, every=1)
    status, text = fetch(session, 'GET',
                         f'{stack.origin}/api/v1/app-conversations?ids={done["app_conversation_id"]}')
    assert status == 200, text
    (conversation,) = json.loads(text)
    return done, conversation


@pytest.fixture(scope='module')
def alice(stack: Stack, browser: Browser) -> Iterator[dict[str, Any]]:
    """Alice logs in at the edge and starts a conversation through the app's API."""
    session = browser.session()
    session.go(f'{stack.origin}/e2e-login?user=alice')
    done, conversation = start_conversation(stack, session)
    try:
        yield {'session': session, 'task': done, 'conversation': conversation}
    finally:
        session.quit()


def as_bob(stack: Stack, browser: Browser, method: str, url: str, body: Any = None) -> tuple[int, str]:
    """One request from bob's own browser session, logged in at the edge."""
    bob = browser.session()
    try:
        bob.go(f'{stack.origin}/e2e-login?user=bob')
        return fetch(bob, method, url, body)
    finally:
        bob.quit()


def conversation_hex(alice: dict[str, Any]) -> str:
    return alice['conversation']['id'].replace('-', '')


def test_the_sandbox_is_labelled_for_alice(stack: Stack, alice: dict[str, Any]) -> None:
    (container,) = [c for c in stack.sandboxes() if c['Config']['Labels'].get('conversation_id') == conversation_hex(alice)]
    labels = container['Config']['Labels']
    assert labels['user_id'] == 'alice'
    assert container['Config']['Image'].startswith('sandport-agent-server:')
    mounts = [m for m in container['Mounts'] if m['Destination'] == '/workspace']
    assert mounts and mounts[0]['Type'] == 'volume' and mounts[0]['Name'] == f'{RUN}-workspace-{conversation_hex(alice)}'
    assert not container['HostConfig'].get('PortBindings'), 'a sandbox publishes a host port'


def test_the_app_hands_the_browser_runtime_urls(stack: Stack, alice: dict[str, Any]) -> None:
    url = alice['conversation']['conversation_url']
    assert url.startswith(f'{stack.origin}/runtime/{conversation_hex(alice)}/8000/'), url


def test_alice_reaches_her_agent_server_and_its_events_websocket_in_the_browser(
        stack: Stack, alice: dict[str, Any]) -> None:
    session, conversation = alice['session'], alice['conversation']
    agent = conversation['conversation_url'].split('/api/conversations/')[0]
    status, text = fetch(session, 'GET', f'{agent}/health')
    assert (status, json.loads(text)) == (200, {'status': 'ok'})
    ws = agent.replace('http://', 'ws://', 1) + (
        f'/sockets/events/{conversation["id"]}?session_api_key={conversation["session_api_key"]}'
        '&resend_all=true')
    result = session.run(WEBSOCKET, ws)
    assert result.get('opened') and result.get('message'), result


def test_alice_reaches_her_own_app_on_port_5000_on_both_route_forms(
        stack: Stack, alice: dict[str, Any]) -> None:
    session, conversation = alice['session'], alice['conversation']
    agent = conversation['conversation_url'].split('/api/conversations/')[0]
    status, text = fetch(session, 'POST', f'{agent}/api/bash/start_bash_command',
                         {'command': 'mkdir -p /tmp/site && echo alice-app > /tmp/site/index.html && '
                                     'cd /tmp/site && exec python3 -m http.server 5000 --bind 0.0.0.0'},
                         {'X-Session-API-Key': conversation['session_api_key']})
    assert status == 200, text
    cid = conversation_hex(alice)
    for url in (f'{stack.origin}/runtime/{cid}/5000/', f'http://5000-{cid}.runtime.{DOMAIN}:{stack.edge_port}/'):
        def served() -> bool:
            session.go(url)
            return 'alice-app' in session.page_text()
        eventually(f'alice\'s app at {url}', served, timeout=60, every=1)


def test_bob_is_refused_everywhere_alice_goes(stack: Stack, browser: Browser, alice: dict[str, Any]) -> None:
    conversation = alice['conversation']
    cid = conversation_hex(alice)
    bob = browser.session()
    try:
        bob.go(f'{stack.origin}/e2e-login?user=bob')
        agent = conversation['conversation_url'].split('/api/conversations/')[0]
        for url in (f'{agent}/health', f'{stack.origin}/runtime/{cid}/5000/',
                    f'http://5000-{cid}.runtime.{DOMAIN}:{stack.edge_port}/'):
            status, _ = fetch(bob, 'GET', url)
            # the host form is another origin: read its status through a navigation instead
            if status == 0:
                bob.go(url)
                assert 'alice-app' not in bob.page_text()
                assert call(stack, 'bob', 'GET', '/', host=f'5000-{cid}.runtime.{DOMAIN}')[0] == 403
            else:
                assert status == 403, url
        status, text = fetch(bob, 'GET', f'{stack.origin}/api/v1/app-conversations/search')
        assert status == 200, text
        assert conversation['id'] not in text
    finally:
        bob.quit()


def test_the_app_keeps_the_peer_address_behind_an_edge_adding_forwarding_headers(
        stack: Stack, alice: dict[str, Any]) -> None:
    """Every call of this file's browsers goes through the edge, which adds X-Forwarded-For
    and X-Forwarded-Proto; the app's uvicorn must not take the client address from them
    (the entrypoint adds --no-proxy-headers), or the identity check refuses everybody."""
    app = stack.run(*stack.compose, 'ps', '-q', 'openhands').stdout.strip()
    command = stack.run('docker', 'exec', app, 'cat', '/proc/1/cmdline').stdout.split('\0')
    assert 'uvicorn' in command[0] or 'uvicorn' in command[1], command
    assert '--no-proxy-headers' in command and '--proxy-headers' not in command, command
    status, text = fetch(alice['session'], 'GET', f'{stack.origin}/api/v1/settings')
    assert status in (200, 404), text  # 404: alice saved no settings; never 401


def test_anonymous_browsers_get_the_login_and_sandport_refuses_requests_without_a_user(
        stack: Stack, browser: Browser, alice: dict[str, Any]) -> None:
    anonymous = browser.session()
    try:
        anonymous.go(f'{stack.origin}/runtime/{conversation_hex(alice)}/5000/')
        assert anonymous.current_url().endswith('/e2e-login')
    finally:
        anonymous.quit()
    assert call(stack, None, 'GET', f'/runtime/{conversation_hex(alice)}/5000/')[0] == 401
    assert call(stack, None, 'GET', '/api/v1/app-conversations/search')[0] == 401


def alices_runtime_statuses(stack: Stack, alice: dict[str, Any]) -> dict[str, int]:
    """The status of each of alice's runtime URLs, asked as the edge asks for her."""
    cid = conversation_hex(alice)
    return {
        'agent server, path form': call(stack, 'alice', 'GET', f'/runtime/{cid}/8000/health')[0],
        'port 5000, path form': call(stack, 'alice', 'GET', f'/runtime/{cid}/5000/')[0],
        'port 5000, host form': call(stack, 'alice', 'GET', '/', host=f'5000-{cid}.runtime.{DOMAIN}')[0],
    }


ALL_200 = {'agent server, path form': 200, 'port 5000, path form': 200, 'port 5000, host form': 200}
CLAIMED = 'conversation id belongs to another user'


def bobs_squats(stack: Stack, bob: Session, conversation_id: str) -> None:
    """bob tries every way to start a conversation with alice's id: each is refused with 409
    and says why, and no container is labelled for bob (the refusal comes before any is
    created: the app creates sandboxes only after it answered the start)."""
    for path in ('/api/v1/app-conversations', '/api/v1/app-conversations/stream-start'):
        status, text = fetch(bob, 'POST', f'{stack.origin}{path}', {'conversation_id': conversation_id})
        assert status == 409 and CLAIMED in text, (path, status, text)
    bobs = stack.run('docker', 'ps', '-aq', '--filter', 'label=user_id=bob',
                     '--filter', f'network={RUN}_sandboxes').stdout.split()
    assert bobs == [], f'containers labelled for bob: {bobs}'


def test_bob_cannot_squat_alices_conversation_id(stack: Stack, browser: Browser, alice: dict[str, Any]) -> None:
    conversation = alice['conversation']
    cid = conversation_hex(alice)
    assert alices_runtime_statuses(stack, alice) == ALL_200
    bob = browser.session()
    try:
        bob.go(f'{stack.origin}/e2e-login?user=bob')
        bobs_squats(stack, bob, conversation['id'])
        status, _ = fetch(bob, 'POST', f'{stack.origin}/api/v1/sandboxes/oh-agent-server-{cid}/resume')
        assert status == 404
    finally:
        bob.quit()
    owners = {c['Config']['Labels'].get('user_id') for c in stack.sandboxes()
              if c['Config']['Labels'].get('conversation_id') == cid}
    assert owners == {'alice'}
    assert alices_runtime_statuses(stack, alice) == ALL_200


def metric(text: str, name: str, labels: str = '') -> float:
    """The sum of the samples of `name` whose labels contain `labels`, in the text format."""
    return sum(float(line.rsplit(' ', 1)[1]) for line in text.splitlines()
               if re.match(rf'{name}[{{ ]', line) and labels in line)


def test_containers_of_two_owners_with_one_id_are_refused_to_both_until_one_goes(
        stack: Stack, alice: dict[str, Any]) -> None:
    """Started directly against Docker, as a squat before the app refused them would have
    left them: sandport routes the id to nobody (409, naming the conflict, not the owners),
    logs it at error level, counts it, lists it in `sandport routes`; removing one container
    brings the other owner's routes back within 1 s."""
    cid = uuid.uuid4().hex
    # the sandbox image, with python3 and curl; what runs in it here is a plain web server
    image = stack.sandboxes()[0]['Config']['Image']
    assert image.startswith('sandport-agent-server:')
    names = {owner: f'{RUN}-contested-{owner}' for owner in ('alice', 'bob')}

    def start(owner: str) -> None:
        stack.run('docker', 'run', '-d', '--name', names[owner], '--network', f'{RUN}_sandboxes',
                  '--label', f'conversation_id={cid}', '--label', f'user_id={owner}',
                  '--entrypoint', 'sh', image, '-c',
                  f'mkdir -p /tmp/s && echo {owner}-served > /tmp/s/index.html && '
                  'exec python3 -m http.server 5000 --bind 0.0.0.0 --directory /tmp/s')

    def as_(user: str, form: str) -> tuple[int, bytes]:
        if form == 'path':
            return call(stack, user, 'GET', f'/runtime/{cid}/5000/')
        return call(stack, user, 'GET', '/', host=f'5000-{cid}.runtime.{DOMAIN}')

    try:
        start('alice')
        eventually("alice's container serves her", lambda: as_('alice', 'path') == (200, b'alice-served\n'),
                   timeout=60, every=0.2)
        start('bob')
        eventually("the conversation is refused once bob's container is seen",
                   lambda: as_('alice', 'path')[0] == 409, timeout=30, every=0.1)
        for user, other in (('alice', 'bob'), ('bob', 'alice')):
            for form in ('path', 'host'):
                status, body = as_(user, form)
                assert status == 409, (user, form, status, body)
                assert b'claimed by containers of different owners' in body, body
                assert other.encode() not in body, f'the body names the other owner: {body!r}'
        # the admin listener is on the edge network only (deploy/sandport.toml)
        metrics = stack.run('docker', 'run', '--rm', '--name', f'{RUN}-metrics', '--network', f'{RUN}_edge',
                            '--entrypoint', 'curl', image, '-sf', 'http://172.27.0.2:9090/metrics').stdout
        assert metric(metrics, 'sandport_discovery_contested_conversations') == 1, metrics
        assert metric(metrics, 'sandport_errors_total', 'reason="contested_owner"') >= 4, metrics
        logged = [line for line in stack.run(*stack.compose, 'logs', '--no-color', 'sandport').stdout.splitlines()
                  if 'containers of different owners carry one conversation id' in line and cid in line]
        assert logged and all('"ERROR"' in line for line in logged), logged
        routes = stack.run(*stack.compose, 'exec', '-T', 'sandport', '/sandport', 'routes',
                           '--config', '/etc/sandport/sandport.toml').stdout
        assert f'routed to nobody): {cid}' in routes and routes.count('CONTESTED') == 2, routes

        stack.run('docker', 'rm', '-f', names['bob'])
        removed = time.monotonic()
        eventually('alice is served again after bob\'s container is removed',
                   lambda: as_('alice', 'path') == (200, b'alice-served\n'), timeout=1, every=0.05)
        print(f'contested: alice served again {time.monotonic() - removed:.3f} s after the removal')
        assert as_('bob', 'path')[0] == 403
    finally:
        for name in names.values():
            stack.run('docker', 'rm', '-f', name, check=False)


def test_alice_deletes_a_conversation_and_bob_cannot(stack: Stack, browser: Browser, alice: dict[str, Any]) -> None:
    session = alice['session']
    session.go(f'{stack.origin}/e2e-login?user=alice')
    _, doomed = start_conversation(stack, session)
    cid = doomed['id'].replace('-', '')
    assert any(c['Config']['Labels'].get('conversation_id') == cid for c in stack.sandboxes())
    status, _ = as_bob(stack, browser, 'DELETE', f'{stack.origin}/api/v1/app-conversations/{doomed["id"]}')
    assert status == 404
    # and it deleted nothing: alice still has the conversation and its sandbox
    status, text = fetch(session, 'GET', f'{stack.origin}/api/v1/app-conversations/search')
    assert status == 200 and doomed['id'] in text
    assert any(c['Config']['Labels'].get('conversation_id') == cid for c in stack.sandboxes())
    status, text = fetch(session, 'DELETE', f'{stack.origin}/api/v1/app-conversations/{doomed["id"]}')
    assert status == 200, text
    status, text = fetch(session, 'GET', f'{stack.origin}/api/v1/app-conversations/search')
    assert status == 200 and doomed['id'] not in text and alice['conversation']['id'] in text
    eventually('the deleted conversation\'s sandbox is removed',
               lambda: not any(c['Config']['Labels'].get('conversation_id') == cid for c in stack.sandboxes()),
               timeout=60)
    eventually('its workspace volume is removed',
               lambda: not stack.run('docker', 'volume', 'ls', '-q', '--filter',
                                     f'name={RUN}-workspace-{cid}').stdout.strip(), timeout=60)


def test_a_lost_sandbox_resumes_with_its_workspace_and_secret_key(
        stack: Stack, browser: Browser, alice: dict[str, Any]) -> None:
    session, conversation = alice['session'], alice['conversation']
    cid = conversation_hex(alice)
    session.go(f'{stack.origin}/e2e-login?user=alice')
    agent = conversation['conversation_url'].split('/api/conversations/')[0]
    status, text = fetch(session, 'POST', f'{agent}/api/bash/start_bash_command',
                         {'command': 'echo kept > /workspace/project/kept.txt'},
                         {'X-Session-API-Key': conversation['session_api_key']})
    assert status == 200, text
    # A secret the agent server keeps in the workspace, encrypted with OH_SECRET_KEY.
    secret_value = f'kept-{uuid.uuid4().hex}'
    status, text = fetch(session, 'PUT', f'{agent}/api/settings/secrets',
                         {'name': 'E2E_TOKEN', 'value': secret_value},
                         {'X-Session-API-Key': conversation['session_api_key']})
    assert status == 200, text

    def env_of(container: dict[str, Any]) -> dict[str, str]:
        return dict(e.split('=', 1) for e in container['Config']['Env'] if '=' in e)

    def container() -> dict[str, Any] | None:
        found = [c for c in stack.sandboxes() if c['Config']['Labels'].get('conversation_id') == cid]
        return found[0] if found else None

    old = container()
    assert old is not None
    eventually('the file is written', lambda: stack.run(
        'docker', 'exec', old['Id'], 'cat', '/workspace/project/kept.txt', check=False).stdout == 'kept\n',
        timeout=30)
    plain = stack.run('docker', 'exec', old['Id'], 'grep', '-rl', secret_value, '/workspace', check=False)
    assert plain.stdout == '', f'the secret is stored in plain text: {plain.stdout}'
    key = env_of(old).get('OH_SECRET_KEY')
    assert key and key != env_of(old).get('OH_SESSION_API_KEYS_0')
    stack.run('docker', 'rm', '-f', old['Id'])
    # the app restarts too (a host reboot): the id's owner is kept in the user data store
    stack.run(*stack.compose, 'restart', 'openhands')
    eventually('the app answers again after its restart',
               lambda: call(stack, 'probe', 'GET', '/api/v1/app-conversations/search')[0] == 200,
               timeout=240)
    bob = browser.session()
    try:
        bob.go(f'{stack.origin}/e2e-login?user=bob')
        status, _ = fetch(bob, 'POST', f'{stack.origin}/api/v1/sandboxes/oh-agent-server-{cid}/resume')
        assert status == 404
        # with no container carrying the id, bob's squat is still refused: the id is alice's
        bobs_squats(stack, bob, conversation['id'])
    finally:
        bob.quit()
    assert container() is None, 'bob re-created alice\'s sandbox'
    status, text = fetch(session, 'POST', f'{stack.origin}/api/v1/sandboxes/oh-agent-server-{cid}/resume')
    assert status == 200, text
    new = eventually('a new container for the conversation', container, timeout=60)
    assert new['Id'] != old['Id']
    assert new['Config']['Labels']['user_id'] == 'alice'
    assert env_of(new)['OH_SECRET_KEY'] == key
    assert stack.run('docker', 'exec', new['Id'], 'cat', '/workspace/project/kept.txt').stdout == 'kept\n'

    def served() -> bool:
        session.go(f'{stack.origin}/runtime/{cid}/8000/health')
        return '"ok"' in session.page_text()
    eventually('alice\'s runtime URL works again', served, timeout=120, every=1)
    # The new agent server reads the secret the lost one stored: same key, same volume.
    status, text = fetch(session, 'GET',
                         f'{stack.origin}/api/v1/app-conversations?ids={conversation["id"]}')
    assert status == 200, text
    (resumed,) = json.loads(text)
    status, text = fetch(session, 'GET', f'{agent}/api/settings/secrets/E2E_TOKEN',
                         headers={'X-Session-API-Key': resumed['session_api_key']})
    assert (status, text) == (200, secret_value)
    assert alices_runtime_statuses(stack, alice)['agent server, path form'] == 200
