"""The browser gets sandport runtime URLs; the app keeps the direct ones.

The middleware runs in a real Starlette app (upstream's framework) and in the
patched OpenHands app itself.
"""

from __future__ import annotations

import json

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from sandport_openhands import public_urls
from sandport_openhands.public_urls import OriginTable, PublicUrlsMiddleware

ALICE = 'a' * 32
BOB = 'b' * 32
PATH_FORM = 'https://openhands.test/runtime/{conversation_id}/{port}'
HOST_FORM = 'https://{port}-{conversation_id}.runtime.openhands.test'


def table(template: str = PATH_FORM) -> OriginTable:
    t = OriginTable()
    t.remember(f'http://oh-agent-server-{ALICE}:8000', ALICE, 8000, template)
    t.remember(f'http://oh-agent-server-{ALICE}:8001/?tkn=k&folder=/w', ALICE, 8001, template)
    # host-port mode: the app reaches Bob's agent server through a published port
    t.remember('http://localhost:32771', BOB, 8000, template)
    return t


def test_reported_origins_become_runtime_urls_keeping_path_and_query() -> None:
    body = json.dumps(
        {
            'url': f'http://oh-agent-server-{ALICE}:8000/api/conversations/{ALICE}',
            'vscode': f'http://oh-agent-server-{ALICE}:8001/?tkn=k&folder=/workspace/project',
            'bob': 'http://localhost:32771',
        }
    ).encode()
    out = json.loads(table().rewrite(body))
    assert out['url'] == f'https://openhands.test/runtime/{ALICE}/8000/api/conversations/{ALICE}'
    assert out['vscode'] == f'https://openhands.test/runtime/{ALICE}/8001/?tkn=k&folder=/workspace/project'
    assert out['bob'] == f'https://openhands.test/runtime/{BOB}/8000'


def test_host_form_template() -> None:
    out = table(HOST_FORM).rewrite(f'"http://oh-agent-server-{ALICE}:8000/health"'.encode())
    assert out == f'"https://8000-{ALICE}.runtime.openhands.test/health"'.encode()


@pytest.mark.parametrize(
    'untouched',
    [
        'http://localhost:327710/x',  # a longer port is another origin
        'http://localhost:3277/x',  # a shorter one too
        'http://localhost/x',
        f'http://oh-agent-server-{ALICE}.evil:8000/',
        f'https://oh-agent-server-{ALICE}:8000/',  # another scheme
        'http://example.com:8000/',
    ],
)
def test_origins_nobody_reported_are_left_alone(untouched: str) -> None:
    body = json.dumps({'u': untouched}).encode()
    assert table().rewrite(body) == body


def test_bad_reports_are_ignored() -> None:
    t = OriginTable()
    t.remember('http://x:1', 'not-a-conversation-id', 8000, PATH_FORM)
    t.remember('http://x:2', ALICE, 0, PATH_FORM)
    t.remember('not a url', ALICE, 8000, PATH_FORM)
    assert t.rewrite(b'"http://x:1" "http://x:2"') == b'"http://x:1" "http://x:2"'


def test_the_table_is_bounded() -> None:
    t = OriginTable(limit=2)
    for port in (1, 2, 3):
        t.remember(f'http://h:{port}', ALICE, port, PATH_FORM)
    assert t.rewrite(b'"http://h:1"') == b'"http://h:1"'
    assert t.rewrite(b'"http://h:3"') == f'"https://openhands.test/runtime/{ALICE}/3"'.encode()


@pytest.mark.parametrize(
    ('env', 'expected'),
    [
        ({}, None),
        ({'OH_WEB_URL': 'https://openhands.test/'}, 'https://openhands.test/runtime/{conversation_id}/{port}'),
        ({'SANDPORT_RUNTIME_URL': HOST_FORM, 'OH_WEB_URL': 'https://x'}, HOST_FORM),
    ],
)
def test_template_from_the_environment(env: dict[str, str], expected: str | None) -> None:
    assert public_urls.runtime_url_template(env) == expected


@pytest.mark.parametrize(
    'bad',
    [
        'openhands.test/runtime/{conversation_id}/{port}',
        'ftp://openhands.test/{conversation_id}/{port}',
        'https://openhands.test/runtime/{port}',
        'https://openhands.test/runtime/{conversation_id}',
        'https://openhands.test/r/{conversation_id}/{port}?x=1',
    ],
)
def test_bad_templates_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        public_urls.runtime_url_template({'SANDPORT_RUNTIME_URL': bad})


def starlette_app(t: OriginTable) -> TestClient:
    direct = f'http://oh-agent-server-{ALICE}:8000'

    async def as_json(request):  # type: ignore[no-untyped-def]
        return JSONResponse({'url': direct + '/api'})

    async def as_text(request):  # type: ignore[no-untyped-def]
        return PlainTextResponse(direct)

    async def streamed(request):  # type: ignore[no-untyped-def]
        async def chunks():  # type: ignore[no-untyped-def]
            yield b'{"url": "' + direct.encode()
            yield b'"}'

        return StreamingResponse(chunks(), media_type='application/json')

    app = Starlette(
        routes=[Route('/json', as_json), Route('/text', as_text), Route('/stream', streamed)]
    )
    return TestClient(PublicUrlsMiddleware(app, t))


def test_middleware_rewrites_json_and_fixes_its_length() -> None:
    client = starlette_app(table())
    response = client.get('/json')
    assert response.json() == {'url': f'https://openhands.test/runtime/{ALICE}/8000/api'}
    assert int(response.headers['content-length']) == len(response.content)
    streamed = client.get('/stream')
    assert streamed.json() == {'url': f'https://openhands.test/runtime/{ALICE}/8000'}


def test_middleware_leaves_other_content_alone() -> None:
    response = starlette_app(table()).get('/text')
    assert response.text == f'http://oh-agent-server-{ALICE}:8000'


def test_middleware_passes_oversized_bodies_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(public_urls, 'MAX_BODY_BYTES', 8)
    response = starlette_app(table()).get('/stream')
    assert response.json() == {'url': f'http://oh-agent-server-{ALICE}:8000'}


def test_the_patched_app_installs_the_middleware(patched_tree) -> None:
    from openhands.app_server.app import app

    assert any(m.cls is PublicUrlsMiddleware for m in app.user_middleware)
