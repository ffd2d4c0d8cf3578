"""The edge in front of sandport, as the seed's layout has one: it logs users in and tells
sandport who they are.

A user "logs in" at ``/e2e-login?user=NAME`` and gets a session cookie for the app's domain
and every runtime host under it. On every request the edge drops whatever identity headers
the client sent, and, for a logged-in user, adds ``X-Cognito-User-Id``, the shared secret
in ``X-Origin-Verify``, the client's address in ``X-Forwarded-For`` and the scheme it used in
``X-Forwarded-Proto``, as a load balancer does (such an edge once locked every user out of the app).
Anonymous requests are sent to the login page, as a real edge does.

Each request travels on its own upstream connection (``Connection: close``), so request and
response bodies, chunked or not, and WebSocket upgrades are relayed as bytes.
"""

from __future__ import annotations

import asyncio
import re
import socket
from urllib.parse import parse_qs, urlsplit

COOKIE = 'e2e_session'
USER_RE = re.compile(r'[A-Za-z0-9_-]{1,64}')
IDENTITY_PREFIXES = ('x-cognito-', 'x-origin-verify', 'x-sandport-')
# what the edge sets itself; a client's own values are dropped
FORWARDING_HEADERS = ('x-forwarded-for', 'x-forwarded-proto')
HEAD_LIMIT = 64 * 1024


class Edge:
    def __init__(self, upstream: tuple[str, int], secret: str, domain: str) -> None:
        self.upstream = upstream
        self.secret = secret
        self.domain = domain
        self.server: asyncio.base_events.Server | None = None

    async def start(self, sock: socket.socket) -> None:
        self.server = await asyncio.start_server(self._serve, sock=sock)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b'\r\n\r\n')
            if len(head) > HEAD_LIMIT:
                return
            await self._handle(head, reader, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _handle(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line, *lines = head.decode('latin-1').split('\r\n')[:-2]
        method, target, version = request_line.split(' ', 2)
        headers = [tuple(line.split(':', 1)) for line in lines if ':' in line]
        user = session_user(headers)
        path = urlsplit(target)
        if path.path == '/e2e-login':
            name = parse_qs(path.query).get('user', [''])[0]
            if not USER_RE.fullmatch(name):
                writer.write(b'HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
                return
            cookie = f'{COOKIE}={name}; Path=/; Domain={self.domain}; HttpOnly; SameSite=Lax'
            writer.write(
                f'HTTP/1.1 302 Found\r\nLocation: /\r\nSet-Cookie: {cookie}\r\n'
                'Content-Length: 0\r\nConnection: close\r\n\r\n'.encode()
            )
            return
        if user is None:
            body = b'<!doctype html><title>Log in</title><h1>Log in</h1>'
            writer.write(
                b'HTTP/1.1 302 Found\r\nLocation: /e2e-login\r\nContent-Type: text/html\r\n'
                + f'Content-Length: {len(body)}\r\nConnection: close\r\n\r\n'.encode()
                + body
            )
            return
        upgrade = any(n.strip().lower() == 'upgrade' for n, _ in headers)
        kept = [
            (n, v)
            for n, v in headers
            if not n.strip().lower().startswith(IDENTITY_PREFIXES)
            and n.strip().lower() not in FORWARDING_HEADERS
            and (upgrade or n.strip().lower() not in ('connection', 'keep-alive'))
        ]
        # what a real edge adds besides identity: the client's address and scheme
        peer = writer.get_extra_info('peername')[0]
        kept += [('X-Cognito-User-Id', user), ('X-Origin-Verify', self.secret),
                 ('X-Forwarded-For', peer), ('X-Forwarded-Proto', 'http')]
        if not upgrade:
            kept.append(('Connection', 'close'))
        out = f'{method} {target} {version}\r\n' + ''.join(f'{n}:{v if v.startswith(" ") else " " + v}\r\n' for n, v in kept)
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        try:
            up_writer.write(out.encode('latin-1') + b'\r\n')
            # the exchange ends when sandport closes its side (after the response, or the tunnel)
            upload = asyncio.ensure_future(pipe(reader, up_writer))
            await pipe(up_reader, writer)
            upload.cancel()
        finally:
            up_writer.close()


def session_user(headers: list[tuple[str, ...]]) -> str | None:
    users = set()
    for name, value in headers:
        if name.strip().lower() != 'cookie':
            continue
        for part in value.split(';'):
            key, _, val = part.strip().partition('=')
            if key == COOKIE:
                users.add(val)
    if len(users) != 1:
        return None
    (user,) = users
    return user if USER_RE.fullmatch(user) else None


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass
