"""The patched app behind the real sandport binary: the signed identity assertion works end to end.

Runs when SANDPORT_BIN names a gateway binary with a `serve` command (ci.sh
exports it); skipped otherwise.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

TOKEN = 'interop-token-0123456789abcdef'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return int(s.getsockname()[1])


def _gateway_binary() -> str:
    binary = os.environ.get('SANDPORT_BIN', '')
    if not binary or not os.access(binary, os.X_OK):
        pytest.skip('SANDPORT_BIN is not set')
    probe = subprocess.run([binary, 'serve', '--help'], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f'{binary} has no serve command')
    return binary


def _wait_for(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f'{url} did not come up')


def identity_section(mode: str, key_file: Path) -> str:
    if mode == 'trusted_header':
        # the layout with an edge on the same host: sandport believes it, and keeps its
        # X-Forwarded-For chain
        return f'''[identity]
mode = "trusted_header"
trusted_proxies = ["127.0.0.1/32"]
assertion_key_file = "{key_file}"'''
    return f'''[identity]
mode = "token"
user_id = "local-user"
token = "{TOKEN}"
assertion_key_file = "{key_file}"'''


@pytest.fixture
def app_behind_sandport(request, patched_tree, user_data, tmp_path: Path, monkeypatch):
    import uvicorn

    from openhands.app_server.app import app
    from sandport_openhands import auth, identity

    params = getattr(request, 'param', {})
    binary = _gateway_binary()
    key_file = tmp_path / 'assertion-key'
    key_file.write_text('interop-assertion-key-0123456789abcdef\n')
    monkeypatch.setenv('SANDPORT_ASSERTION_KEY_FILE', str(key_file))
    monkeypatch.setenv('SANDPORT_TRUSTED_PROXIES', '127.0.0.1/32')
    for cached in (auth.configured_verifier, identity._assertion_key_from_env, identity._policy_from_env):
        cached.cache_clear()

    app_port, public_port, admin_port = _free_port(), _free_port(), _free_port()
    server = uvicorn.Server(
        # as deploy/openhands-entrypoint.sh starts it: --no-proxy-headers, unless a test asks
        uvicorn.Config(app, host='127.0.0.1', port=app_port, lifespan='off', log_level='warning',
                       proxy_headers=params.get('proxy_headers', False))
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    config = tmp_path / 'sandport.toml'
    config.write_text(
        f'''
[server]
listen = "127.0.0.1:{public_port}"
[admin]
listen = "127.0.0.1:{admin_port}"
[app]
upstream = "http://127.0.0.1:{app_port}"
{identity_section(params.get('identity', 'token'), key_file)}
[discovery]
backend = "static"
'''
    )
    # sandport reads every SANDPORT_* variable as configuration and refuses unknown
    # ones: give it none of the app's
    gateway_env = {k: v for k, v in os.environ.items() if not k.startswith('SANDPORT_')}
    gateway = subprocess.Popen(
        [binary, 'serve', '--config', str(config)],
        env=gateway_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        try:
            _wait_for(f'http://127.0.0.1:{admin_port}/health')
            _wait_for(f'http://127.0.0.1:{app_port}/health')
        except AssertionError:
            gateway.terminate()
            _, err = gateway.communicate(timeout=30)
            raise AssertionError(f'start-up failed; sandport said:\n{err.decode()[-3000:]}') from None
        yield f'http://127.0.0.1:{public_port}', f'http://127.0.0.1:{app_port}'
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
        server.should_exit = True
        thread.join(timeout=30)
        for cached in (auth.configured_verifier, identity._assertion_key_from_env, identity._policy_from_env):
            cached.cache_clear()


def test_identity_reaches_the_app_only_through_sandport(app_behind_sandport, user_data) -> None:
    public, direct = app_behind_sandport
    bearer = {'Authorization': f'Bearer {TOKEN}'}

    # through sandport: the app knows the user from the signed assertion
    assert httpx.get(f'{public}/api/v1/settings', headers=bearer).status_code == 404
    stored = httpx.post(f'{public}/api/v1/settings', headers=bearer, json={'language': 'de'})
    assert stored.status_code == 200, stored.text
    assert (user_data.root / 'users/local-user/settings.json').is_file()
    loaded = httpx.get(f'{public}/api/v1/settings', headers=bearer)
    assert loaded.status_code == 200 and loaded.json()['language'] == 'de'

    # without sandport's login: sandport refuses
    assert httpx.get(f'{public}/api/v1/settings').status_code == 401
    # straight to the app with a forged identity header: the app refuses
    forged = httpx.get(f'{direct}/api/v1/settings', headers={'X-Cognito-User-Id': 'local-user'})
    assert forged.status_code == 401


# what an edge in front of sandport adds: the client's address and the scheme it used
EDGE = {'X-Cognito-User-Id': 'local-user', 'X-Forwarded-For': '203.0.113.7', 'X-Forwarded-Proto': 'https'}


@pytest.mark.parametrize('app_behind_sandport', [{'identity': 'trusted_header'}], indirect=True)
def test_an_edge_adding_x_forwarded_for_changes_nothing(app_behind_sandport, user_data, monkeypatch) -> None:
    """sandport and the app on one host, an edge in front adding X-Forwarded-For and
    X-Forwarded-Proto: every API call of the app's own API works (the issue: every one got
    401 "request did not come from a trusted proxy")."""
    import openhands.app_server.sandbox.docker_sandbox_spec_service as spec_module
    from test_sandbox import RecordingDockerClient

    # the sandbox listing asks Docker: a recorder, so no engine is needed
    monkeypatch.setattr(spec_module, '_global_docker_client', RecordingDockerClient())
    public, _ = app_behind_sandport
    calls = [
        ('POST', '/api/v1/settings', {'language': 'fr'}, 200),
        ('GET', '/api/v1/settings', None, 200),
        ('POST', '/api/v1/secrets', {'name': 'EDGE_TOKEN', 'value': 'v', 'description': 'd'}, 201),
        ('GET', '/api/v1/secrets/search', None, 200),
        ('GET', '/api/v1/app-conversations/search', None, 200),
        ('GET', '/api/v1/app-conversations/count', None, 200),
        ('GET', '/api/v1/sandboxes/search', None, 200),
        ('GET', '/api/v1/users/me', None, 200),
    ]
    for method, path, body, status in calls:
        response = httpx.request(method, f'{public}{path}', headers=EDGE, json=body)
        assert response.status_code == status, f'{method} {path}: {response.status_code} {response.text}'
    assert httpx.get(f'{public}/api/v1/settings', headers=EDGE).json()['language'] == 'fr'
    names = [s['name'] for s in httpx.get(f'{public}/api/v1/secrets/search', headers=EDGE).json()['items']]
    assert names == ['EDGE_TOKEN']


@pytest.mark.parametrize(
    'app_behind_sandport', [{'identity': 'trusted_header', 'proxy_headers': True}], indirect=True
)
def test_uvicorns_proxy_headers_would_lock_everyone_out(app_behind_sandport, user_data, caplog) -> None:
    """Why the entrypoint adds --no-proxy-headers: with uvicorn's default, sandport on
    127.0.0.1 is trusted to name the client, the peer check sees the edge's client, and every
    user is refused."""
    public, _ = app_behind_sandport
    refused = httpx.get(f'{public}/api/v1/settings', headers=EDGE)
    assert refused.status_code == 401
    assert 'request did not come from a trusted proxy' in caplog.text
