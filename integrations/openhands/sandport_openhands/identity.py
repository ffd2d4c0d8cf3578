"""Who is calling: user id validation and the identity verifier.

The app believes an identity only when a verifier vouches for it. A verifier
is one async function ``(request) -> VerifiedIdentity`` that raises
``IdentityRejected`` when the request carries no identity or one it cannot
trust. Today's verifier reads the ``X-Cognito-User-Id`` header that sandport
sets, and accepts it only from sandport (peer address and/or shared secret).
A verifier for sandport's signed identity assertion replaces it by setting
``SANDPORT_IDENTITY_VERIFIER`` to its dotted path; nothing else changes.

Environment:

``SANDPORT_IDENTITY_VERIFIER``
    Dotted path of the verifier (default: ``trusted_header_verifier`` here).
``SANDPORT_TRUSTED_PROXIES``
    Comma-separated CIDRs; the trusted header is accepted only from these
    peer addresses (sandport's address on the app network).
``SANDPORT_PROXY_SECRET_FILE``
    File holding a secret that sandport sends in ``X-Sandport-Proxy-Secret``
    on every request it forwards to the app.

At least one of the last two must be set, otherwise every request is refused:
a header that anybody able to reach the app can set proves nothing.
"""

from __future__ import annotations

import hmac
import importlib
import ipaddress
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Awaitable, Callable

from starlette.requests import HTTPConnection

USER_ID_HEADER = 'x-cognito-user-id'
EMAIL_HEADER = 'x-cognito-email'
PROXY_SECRET_HEADER = 'x-sandport-proxy-secret'

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
    proxy_secret: bytes | None

    @classmethod
    def from_env(cls) -> TrustedHeaderPolicy:
        networks = []
        for item in os.environ.get('SANDPORT_TRUSTED_PROXIES', '').split(','):
            item = item.strip()
            if item:
                networks.append(ipaddress.ip_network(item, strict=False))
        secret: bytes | None = None
        secret_file = os.environ.get('SANDPORT_PROXY_SECRET_FILE', '').strip()
        if secret_file:
            with open(secret_file, 'rb') as f:
                secret = f.read().strip()
            if len(secret) < 16:
                raise ValueError(
                    f'{secret_file}: the proxy secret must be at least 16 bytes'
                )
        return cls(trusted_proxies=tuple(networks), proxy_secret=secret)

    @property
    def configured(self) -> bool:
        return bool(self.trusted_proxies) or self.proxy_secret is not None


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
        raise IdentityRejected(
            'no trusted proxy configured (SANDPORT_TRUSTED_PROXIES or '
            'SANDPORT_PROXY_SECRET_FILE)'
        )
    if policy.trusted_proxies:
        client = request.client
        host = getattr(client, 'host', None) if client is not None else None
        try:
            peer = ipaddress.ip_address(host) if host else None
        except ValueError:
            peer = None
        if peer is None or not any(peer in net for net in policy.trusted_proxies):
            raise IdentityRejected('request did not come from a trusted proxy')
    if policy.proxy_secret is not None:
        presented = _single_header(request, PROXY_SECRET_HEADER)
        if presented is None or not hmac.compare_digest(
            presented.encode('utf-8', 'surrogateescape'), policy.proxy_secret
        ):
            raise IdentityRejected('missing or wrong proxy secret')

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


@lru_cache(maxsize=1)
def _policy_from_env() -> TrustedHeaderPolicy:
    return TrustedHeaderPolicy.from_env()


async def trusted_header_verifier(request: HTTPConnection) -> VerifiedIdentity:
    """Believe ``X-Cognito-User-Id`` only when sandport sent the request."""
    return check_trusted_header(request, _policy_from_env())


def load_verifier(dotted_path: str | None = None) -> IdentityVerifier:
    """Resolve the configured verifier (``SANDPORT_IDENTITY_VERIFIER``)."""
    path = dotted_path or os.environ.get('SANDPORT_IDENTITY_VERIFIER', '').strip()
    if not path:
        return trusted_header_verifier
    module_name, _, attr = path.rpartition('.')
    if not module_name:
        raise ValueError(f'SANDPORT_IDENTITY_VERIFIER={path!r} is not a dotted path')
    verifier: IdentityVerifier = getattr(importlib.import_module(module_name), attr)
    if not callable(verifier):
        raise ValueError(f'{path} is not callable')
    return verifier
