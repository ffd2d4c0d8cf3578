"""Who is calling: user id validation and the identity verifier.

The app believes an identity only when a verifier vouches for it. A verifier
is one async function ``(request) -> VerifiedIdentity`` that raises
``IdentityRejected`` when the request carries no identity or one it cannot
trust. Two are provided:

``signed_assertion_verifier`` (used when ``SANDPORT_ASSERTION_KEY_FILE`` is set)
    sandport's identity assertion in ``X-Sandport-Identity``: an HS256 JWT
    (``iss`` = ``sandport``, ``aud`` = ``app``, ``sub``, ``email``, ``iat``,
    ``exp`` a minute later) signed with the key in that file, which sandport
    reads from ``[identity] assertion_key_file``. Sandboxes never see the key.
``trusted_header_verifier`` (otherwise)
    the ``X-Cognito-User-Id`` header sandport sets, believed only from
    sandport's peer address (``SANDPORT_TRUSTED_PROXIES``). Without it every
    request is refused: a header anybody able to reach the app can set proves
    nothing.

``SANDPORT_IDENTITY_VERIFIER`` (a dotted path) selects another verifier.
``SANDPORT_TRUSTED_PROXIES`` also restricts the signed assertion when set.

The peer address checked is the transport's: uvicorn must run with
``--no-proxy-headers`` (the image's entrypoint adds it and refuses
``--proxy-headers``). With uvicorn's default, a peer of 127.0.0.1 (sandport on
the app's host) has ``X-Forwarded-For`` replace it by the edge's client, and
both verifiers refuse everybody.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Awaitable, Callable

from starlette.requests import HTTPConnection

USER_ID_HEADER = 'x-cognito-user-id'
ASSERTION_HEADER = 'x-sandport-identity'
ASSERTION_ISSUER = 'sandport'
ASSERTION_AUDIENCE = 'app'
ASSERTION_LEEWAY_SECS = 5
MAX_ASSERTION_LEN = 8192
EMAIL_HEADER = 'x-cognito-email'

# Cognito, Keycloak and most OIDC providers use UUIDs or url-safe base64 as
# `sub`. Anything else is rejected, never rewritten: two distinct ids must
# never map to the same storage path.
_USER_ID_RE = re.compile(r'[A-Za-z0-9_-]{1,128}')
_EMAIL_RE = re.compile(r'[^\s@<>"\x00-\x1f\x7f]{1,200}@[^\s@<>"\x00-\x1f\x7f]{1,200}')


class InvalidUserId(ValueError):
    """A user id that does not have the accepted shape."""


class IdentityRejected(Exception):
    """The request has no identity the app may believe."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def validate_user_id(value: object) -> str:
    """Return ``value`` if it is an acceptable user id, else raise InvalidUserId.

    Uses a full match (``$`` would accept a trailing newline).
    """
    if not isinstance(value, str) or _USER_ID_RE.fullmatch(value) is None:
        raise InvalidUserId('user id must match [A-Za-z0-9_-]{1,128}')
    return value


def is_valid_user_id(value: object) -> bool:
    try:
        validate_user_id(value)
    except InvalidUserId:
        return False
    return True


@dataclass(frozen=True)
class VerifiedIdentity:
    user_id: str
    email: str | None = None

    def __post_init__(self) -> None:
        validate_user_id(self.user_id)


IdentityVerifier = Callable[[HTTPConnection], Awaitable[VerifiedIdentity]]


@dataclass(frozen=True)
class TrustedHeaderPolicy:
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def from_env(cls) -> TrustedHeaderPolicy:
        networks = []
        for item in os.environ.get('SANDPORT_TRUSTED_PROXIES', '').split(','):
            item = item.strip()
            if item:
                networks.append(ipaddress.ip_network(item, strict=False))
        return cls(trusted_proxies=tuple(networks))

    @property
    def configured(self) -> bool:
        return bool(self.trusted_proxies)


def _single_header(request: HTTPConnection, name: str) -> str | None:
    values = request.headers.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise IdentityRejected(f'{name} sent more than once')
    return values[0]


def check_trusted_header(
    request: HTTPConnection, policy: TrustedHeaderPolicy
) -> VerifiedIdentity:
    """The trusted-header rule, separate from configuration for testing."""
    if not policy.configured:
        raise IdentityRejected('no trusted proxy configured (SANDPORT_TRUSTED_PROXIES)')
    _check_peer(request, policy)

    raw_user_id = _single_header(request, USER_ID_HEADER)
    if raw_user_id is None or raw_user_id == '':
        raise IdentityRejected('no user identity')
    try:
        user_id = validate_user_id(raw_user_id)
    except InvalidUserId as e:
        raise IdentityRejected(str(e)) from None

    email: str | None = None
    try:
        raw_email = _single_header(request, EMAIL_HEADER)
    except IdentityRejected:
        raw_email = None
    if raw_email and _EMAIL_RE.fullmatch(raw_email):
        email = raw_email
    return VerifiedIdentity(user_id=user_id, email=email)


def _check_peer(request: HTTPConnection, policy: TrustedHeaderPolicy) -> None:
    if not policy.trusted_proxies:
        return
    client = request.client
    host = getattr(client, 'host', None) if client is not None else None
    try:
        peer = ipaddress.ip_address(host) if host else None
    except ValueError:
        peer = None
    if peer is None or not any(peer in net for net in policy.trusted_proxies):
        raise IdentityRejected('request did not come from a trusted proxy')


def read_assertion_key(path: str) -> bytes:
    """The key as sandport reads it: the file's text, trimmed, at least 16 characters."""
    with open(path, encoding='utf-8') as f:
        key = f.read().strip()
    if len(key) < 16:
        raise ValueError(f'{path}: the assertion key is shorter than 16 characters')
    return key.encode('utf-8')


def check_signed_assertion(
    request: HTTPConnection,
    key: bytes,
    policy: TrustedHeaderPolicy | None = None,
) -> VerifiedIdentity:
    """The signed-assertion rule, separate from configuration for testing."""
    import jwt

    if policy is not None:
        _check_peer(request, policy)
    token = _single_header(request, ASSERTION_HEADER)
    if not token:
        raise IdentityRejected('no identity assertion')
    if len(token) > MAX_ASSERTION_LEN:
        raise IdentityRejected('identity assertion too long')
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=['HS256'],
            audience=ASSERTION_AUDIENCE,
            issuer=ASSERTION_ISSUER,
            leeway=ASSERTION_LEEWAY_SECS,
            options={'require': ['exp', 'iat', 'iss', 'aud', 'sub']},
        )
    except jwt.InvalidTokenError as e:
        raise IdentityRejected(f'invalid identity assertion: {type(e).__name__}') from None
    try:
        user_id = validate_user_id(claims.get('sub'))
    except InvalidUserId as e:
        raise IdentityRejected(str(e)) from None
    # sandport also sends the plain header; a different value means tampering
    plain = _single_header(request, USER_ID_HEADER)
    if plain is not None and plain != user_id:
        raise IdentityRejected('X-Cognito-User-Id does not match the identity assertion')
    email = claims.get('email')
    if not (isinstance(email, str) and _EMAIL_RE.fullmatch(email)):
        email = None
    return VerifiedIdentity(user_id=user_id, email=email)


@lru_cache(maxsize=1)
def _policy_from_env() -> TrustedHeaderPolicy:
    return TrustedHeaderPolicy.from_env()


@lru_cache(maxsize=1)
def _assertion_key_from_env() -> bytes:
    path = os.environ.get('SANDPORT_ASSERTION_KEY_FILE', '').strip()
    if not path:
        raise ValueError('SANDPORT_ASSERTION_KEY_FILE is not set')
    return read_assertion_key(path)


async def trusted_header_verifier(request: HTTPConnection) -> VerifiedIdentity:
    """Believe ``X-Cognito-User-Id`` only when sandport sent the request."""
    return check_trusted_header(request, _policy_from_env())


async def signed_assertion_verifier(request: HTTPConnection) -> VerifiedIdentity:
    """Believe sandport's signed identity assertion (``X-Sandport-Identity``)."""
    return check_signed_assertion(request, _assertion_key_from_env(), _policy_from_env())


def load_verifier(dotted_path: str | None = None) -> IdentityVerifier:
    """Resolve the configured verifier (see the module's documentation)."""
    path = dotted_path or os.environ.get('SANDPORT_IDENTITY_VERIFIER', '').strip()
    if not path:
        if os.environ.get('SANDPORT_ASSERTION_KEY_FILE', '').strip():
            return signed_assertion_verifier
        return trusted_header_verifier
    module_name, _, attr = path.rpartition('.')
    if not module_name:
        raise ValueError(f'SANDPORT_IDENTITY_VERIFIER={path!r} is not a dotted path')
    verifier: IdentityVerifier = getattr(importlib.import_module(module_name), attr)
    if not callable(verifier):
        raise ValueError(f'{path} is not callable')
    return verifier
