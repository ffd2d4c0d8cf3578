"""Sandbox URLs the browser can reach.

The app reaches a sandbox directly: by container name on the sandbox network
(``http://oh-agent-server-{id}:8000``) or through a published host port
(``http://localhost:32771``). Those addresses mean nothing to a browser, yet
upstream hands the same ``ExposedUrl``s to both: the app's server-side calls and
the JSON its API returns (``exposed_urls``, a conversation's ``url``, VS Code's
``?tkn=`` link).

So the two are split at the edge of the app: the sandbox service records, for
every URL it reports, the sandbox's conversation id and container port
(:func:`remember`); an ASGI middleware (:class:`PublicUrlsMiddleware`) rewrites
exactly those origins in the app's JSON responses to sandport runtime URLs
(``SANDPORT_RUNTIME_URL``). Server-side calls keep using the direct address.
Nothing is guessed from a host name's shape: an origin the service did not
report is left alone.

``SANDPORT_RUNTIME_URL`` is a template with ``{conversation_id}`` and
``{port}``, for example ``https://openhands.example.com/runtime/{conversation_id}/{port}``
(path form) or ``https://{port}-{conversation_id}.runtime.example.net`` (host
form). Without it, the path form under ``OH_WEB_URL`` is used; with neither,
responses are passed on unchanged.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from typing import Any, Awaitable, Callable, MutableMapping
from urllib.parse import urlsplit

from sandport_openhands.docker_hooks import is_sandbox_id

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

RUNTIME_URL_VARIABLE = 'SANDPORT_RUNTIME_URL'
# Bounds: one entry per (sandbox, port) reported; responses larger than this pass unchanged.
MAX_ORIGINS = 8192
MAX_BODY_BYTES = 16 * 1024 * 1024

_ORIGIN_RE = re.compile(rb'https?://[A-Za-z0-9.\-]+(?::[0-9]{1,5})?(?=[/"?#\\]|$)')


def runtime_url_template(env: MutableMapping[str, str] | None = None) -> str | None:
    """The configured template, checked; None when URLs are not to be rewritten."""
    env = os.environ if env is None else env
    template = env.get(RUNTIME_URL_VARIABLE, '').strip()
    if not template:
        web_url = env.get('OH_WEB_URL', '').strip().rstrip('/')
        if not web_url:
            return None
        template = web_url + '/runtime/{conversation_id}/{port}'
    check_template(template)
    return template.rstrip('/')


def check_template(template: str) -> None:
    """Refuses templates that could not name one sandbox port (ValueError)."""
    parts = urlsplit(template.replace('{conversation_id}', 'c').replace('{port}', '1'))
    if parts.scheme not in ('http', 'https') or not parts.netloc:
        raise ValueError(f'{RUNTIME_URL_VARIABLE} must be an http(s) URL: {template!r}')
    if '{conversation_id}' not in template or '{port}' not in template:
        raise ValueError(
            f'{RUNTIME_URL_VARIABLE} must contain {{conversation_id}} and {{port}}: {template!r}'
        )
    if parts.query or parts.fragment:
        raise ValueError(f'{RUNTIME_URL_VARIABLE} must have no query or fragment: {template!r}')


class OriginTable:
    """Direct sandbox origins -> public runtime URLs, bounded, safe across threads."""

    def __init__(self, limit: int = MAX_ORIGINS) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._public: OrderedDict[bytes, bytes] = OrderedDict()

    def remember(self, direct_url: str, conversation_id: str, port: int, template: str) -> None:
        if not is_sandbox_id(conversation_id) or not 0 < port < 65536:
            return
        parts = urlsplit(direct_url)
        if parts.scheme not in ('http', 'https') or not parts.netloc:
            return
        origin = f'{parts.scheme}://{parts.netloc}'.encode()
        public = template.format(conversation_id=conversation_id, port=port).encode()
        with self._lock:
            self._public[origin] = public
            self._public.move_to_end(origin)
            while len(self._public) > self._limit:
                self._public.popitem(last=False)

    def rewrite(self, body: bytes) -> bytes:
        with self._lock:
            if not self._public:
                return body
            table = dict(self._public)
        return _ORIGIN_RE.sub(lambda m: table.get(m.group(0), m.group(0)), body)


ORIGINS = OriginTable()


def remember(direct_url: str, conversation_id: str, port: int) -> None:
    """Called by the sandbox service for every URL it reports."""
    template = runtime_url_template()
    if template is not None:
        ORIGINS.remember(direct_url, conversation_id, port, template)


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name.lower() == b'content-type':
            return value.split(b';', 1)[0].strip().lower() == b'application/json'
    return False


class PublicUrlsMiddleware:
    """Rewrites reported sandbox origins in the app's JSON responses."""

    def __init__(self, app: App, table: OriginTable = ORIGINS) -> None:
        self.app = app
        self.table = table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope['type'] != 'http':
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []
        size = 0
        passing = False

        async def send_rewritten(message: Message) -> None:
            nonlocal start, size, passing
            if passing:
                await send(message)
            elif message['type'] == 'http.response.start':
                if _is_json(list(message.get('headers', []))):
                    start = message
                else:
                    passing = True
                    await send(message)
            elif message['type'] == 'http.response.body' and start is not None:
                chunks.append(message.get('body', b''))
                size += len(chunks[-1])
                if size > MAX_BODY_BYTES:
                    # too large to hold: send what we have, unchanged, and stream the rest
                    passing = True
                    await send(start)
                    await send({'type': 'http.response.body', 'body': b''.join(chunks),
                                'more_body': message.get('more_body', False)})
                    return
                if not message.get('more_body', False):
                    await self._send_whole(start, b''.join(chunks), send)
            else:
                await send(message)

        await self.app(scope, receive, send_rewritten)

    async def _send_whole(self, start: Message, body: bytes, send: Send) -> None:
        body = self.table.rewrite(body)
        headers = [(n, v) for n, v in start.get('headers', []) if n.lower() != b'content-length']
        headers.append((b'content-length', str(len(body)).encode()))
        await send({**start, 'headers': headers})
        await send({'type': 'http.response.body', 'body': body})
