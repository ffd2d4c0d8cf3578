"""The auth class takes the identity from sandport only and answers 401 otherwise."""

from __future__ import annotations

import ipaddress

import pytest
from conftest import as_user, mint_assertion
from starlette.requests import Request

from sandport_openhands.identity import (
    IdentityRejected,
    InvalidUserId,
    TrustedHeaderPolicy,
    VerifiedIdentity,
    check_trusted_header,
    load_verifier,
    validate_user_id,
)

SANDPORT_PEER = '172.30.1.2'


def make_request(
    headers: list[tuple[str, str]] | None = None,
    peer: str | None = SANDPORT_PEER,
    path: str = '/api/v1/settings',
) -> Request:
    scope = {
        'type': 'http',
        'method': 'GET',
        'path': path,
        'raw_path': path.encode(),
        'query_string': b'',
        'headers': [(k.lower().encode(), v.encode()) for k, v in headers or []],
        'client': (peer, 40000) if peer else None,
        'server': ('openhands', 3000),
        'scheme': 'http',
    }
    return Request(scope)


BY_PEER = TrustedHeaderPolicy(trusted_proxies=(ipaddress.ip_network('172.30.1.0/29'),))


def test_valid_identity_from_sandport() -> None:
    identity = check_trusted_header(
        make_request(
            [
                ('X-Cognito-User-Id', '3f1c2a9e-0b7d-4c55-9a61-0e2d5b8f7a10'),
                ('X-Cognito-Email', 'alice@example.com'),
            ]
        ),
        BY_PEER,
    )
    assert identity == VerifiedIdentity(
        user_id='3f1c2a9e-0b7d-4c55-9a61-0e2d5b8f7a10', email='alice@example.com'
    )


def test_missing_identity_is_refused() -> None:
    with pytest.raises(IdentityRejected, match='no user identity'):
        check_trusted_header(make_request([]), BY_PEER)
    with pytest.raises(IdentityRejected):
        check_trusted_header(make_request([('X-Cognito-User-Id', '')]), BY_PEER)


def test_header_from_another_peer_is_forged() -> None:
    # e.g. a sandbox calling the app directly with a victim's id
    request = make_request([('X-Cognito-User-Id', 'victim')], peer='172.31.0.7')
    with pytest.raises(IdentityRejected, match='trusted proxy'):
        check_trusted_header(request, BY_PEER)
    with pytest.raises(IdentityRejected, match='trusted proxy'):
        check_trusted_header(make_request([('X-Cognito-User-Id', 'victim')], peer=None), BY_PEER)


def test_a_proxy_secret_header_proves_nothing() -> None:
    # sandport sends no shared secret; a header of that name from elsewhere is just a header
    request = make_request(
        [('X-Cognito-User-Id', 'victim'), ('X-Sandport-Proxy-Secret', 'x' * 32)],
        peer='172.31.0.7',
    )
    with pytest.raises(IdentityRejected, match='trusted proxy'):
        check_trusted_header(request, BY_PEER)


@pytest.mark.parametrize(
    'user_id',
    ['../bob', 'alice/../../etc', 'alice bob', 'alice\n', 'a' * 129, 'al.ice', 'alice%2f', 'ålice'],
)
def test_malformed_user_ids_are_refused_not_rewritten(user_id: str) -> None:
    with pytest.raises(InvalidUserId):
        validate_user_id(user_id)
    request = make_request([])
    # raw bytes, as a client could send them
    request.scope['headers'].append((b'x-cognito-user-id', user_id.encode('utf-8')))
    with pytest.raises(IdentityRejected):
        check_trusted_header(request, BY_PEER)


def test_two_identity_headers_are_refused() -> None:
    request = make_request([('X-Cognito-User-Id', 'alice'), ('X-Cognito-User-Id', 'bob')])
    with pytest.raises(IdentityRejected, match='more than once'):
        check_trusted_header(request, BY_PEER)


def test_without_a_trusted_proxy_nothing_is_believed() -> None:
    unconfigured = TrustedHeaderPolicy(trusted_proxies=())
    with pytest.raises(IdentityRejected, match='no trusted proxy'):
        check_trusted_header(make_request([('X-Cognito-User-Id', 'alice')]), unconfigured)


def test_malformed_email_is_dropped_not_trusted() -> None:
    identity = check_trusted_header(
        make_request([('X-Cognito-User-Id', 'alice'), ('X-Cognito-Email', 'not an email <x>')]),
        BY_PEER,
    )
    assert identity == VerifiedIdentity('alice', None)


async def test_auth_class_answers_401_without_identity(patched_tree) -> None:
    from openhands.app_server.errors import AuthError

    from sandport_openhands.auth import SandportUserAuth

    for request in (
        make_request([]),
        make_request([('X-Cognito-User-Id', 'alice')]),  # no signed assertion: forged
        make_request(list(as_user('../alice').items())),
        make_request([('X-Sandport-Identity', mint_assertion('alice', key=b'k' * 32))]),
    ):
        with pytest.raises(AuthError) as caught:
            await SandportUserAuth.get_instance(request)
        assert caught.value.status_code == 401


async def test_auth_class_accepts_sandport_identity(patched_tree) -> None:
    from sandport_openhands.auth import SandportUserAuth

    auth = await SandportUserAuth.get_instance(make_request(list(as_user('alice').items())))
    assert await auth.get_user_id() == 'alice'
    assert await auth.get_user_email() is None


async def test_get_for_user_validates(patched_tree) -> None:
    from openhands.app_server.errors import AuthError

    from sandport_openhands.auth import SandportUserAuth

    assert await (await SandportUserAuth.get_for_user('bob')).get_user_id() == 'bob'
    with pytest.raises(AuthError):
        await SandportUserAuth.get_for_user('../bob')


async def test_verifier_is_one_pluggable_function(patched_tree, monkeypatch) -> None:
    from openhands.app_server.errors import AuthError

    from sandport_openhands.auth import SandportUserAuth

    calls = []

    async def signed_assertion_verifier(request: Request) -> VerifiedIdentity:
        calls.append(request.url.path)
        if request.headers.get('x-sandport-assertion') != 'valid':
            raise IdentityRejected('bad assertion')
        return VerifiedIdentity('carol')

    import sys
    import types

    module = types.ModuleType('sandport_test_verifier')
    module.verify = signed_assertion_verifier  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, 'sandport_test_verifier', module)
    verifier = load_verifier('sandport_test_verifier.verify')
    assert verifier is signed_assertion_verifier

    auth = await SandportUserAuth.authenticate(
        make_request([('X-Sandport-Assertion', 'valid')]), verifier
    )
    assert await auth.get_user_id() == 'carol'
    with pytest.raises(AuthError):
        await SandportUserAuth.authenticate(
            make_request([('X-Cognito-User-Id', 'alice')]), verifier
        )
    assert len(calls) == 2


def test_upstream_resolves_the_auth_class(patched_tree) -> None:
    from openhands.app_server.shared import server_config
    from openhands.app_server.user_auth.user_auth import UserAuth
    from openhands.app_server.utils.import_utils import get_impl

    from sandport_openhands.auth import SandportUserAuth

    assert get_impl(UserAuth, server_config.user_auth_class) is SandportUserAuth


# -- sandport's signed identity assertion (X-Sandport-Identity) --

ASSERTION_KEY = b'assertion-key-shared-by-sandport-and-the-app'


def mint(key: bytes = ASSERTION_KEY, **overrides) -> str:
    import time

    import jwt

    now = int(time.time())
    claims = {
        'iss': 'sandport',
        'aud': 'app',
        'sub': 'alice',
        'email': 'alice@example.com',
        'email_verified': True,
        'iat': now,
        'exp': now + 60,
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm='HS256')


def test_signed_assertion_is_believed() -> None:
    from sandport_openhands.identity import check_signed_assertion

    identity = check_signed_assertion(
        make_request([('X-Sandport-Identity', mint()), ('X-Cognito-User-Id', 'alice')]),
        ASSERTION_KEY,
    )
    assert identity == VerifiedIdentity('alice', 'alice@example.com')


@pytest.mark.parametrize(
    'token',
    [
        mint(key=b'another-key-that-is-long-enough-too'),  # forged: not sandport's key
        mint(exp=1_000_000_000, iat=999_999_940),  # expired long ago
        mint(aud='sandbox'),
        mint(iss='somebody'),
        mint(sub='../bob'),
        mint(sub=None),
        mint(exp=None),
        mint()[:-4] + 'AAAA',  # tampered signature
        'eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSIsImlzcyI6InNhbmRwb3J0IiwiYXVkIjoiYXBwIn0.',
        '',
    ],
)
def test_bad_assertions_are_refused(token: str) -> None:
    from sandport_openhands.identity import check_signed_assertion

    with pytest.raises(IdentityRejected):
        check_signed_assertion(make_request([('X-Sandport-Identity', token)]), ASSERTION_KEY)


def test_assertion_and_plain_header_must_agree() -> None:
    from sandport_openhands.identity import check_signed_assertion

    with pytest.raises(IdentityRejected, match='does not match'):
        check_signed_assertion(
            make_request([('X-Sandport-Identity', mint()), ('X-Cognito-User-Id', 'bob')]),
            ASSERTION_KEY,
        )
    with pytest.raises(IdentityRejected, match='no identity assertion'):
        check_signed_assertion(make_request([('X-Cognito-User-Id', 'alice')]), ASSERTION_KEY)
    with pytest.raises(IdentityRejected, match='trusted proxy'):
        check_signed_assertion(
            make_request([('X-Sandport-Identity', mint())], peer='172.31.0.7'),
            ASSERTION_KEY,
            BY_PEER,
        )


def test_assertion_key_selects_the_signed_verifier(tmp_path, monkeypatch) -> None:
    from sandport_openhands.identity import (
        read_assertion_key,
        signed_assertion_verifier,
        trusted_header_verifier,
    )

    key_file = tmp_path / 'assertion-key'
    key_file.write_text(ASSERTION_KEY.decode() + '\n')
    assert read_assertion_key(str(key_file)) == ASSERTION_KEY
    monkeypatch.delenv('SANDPORT_IDENTITY_VERIFIER', raising=False)
    monkeypatch.delenv('SANDPORT_ASSERTION_KEY_FILE', raising=False)
    assert load_verifier() is trusted_header_verifier
    monkeypatch.setenv('SANDPORT_ASSERTION_KEY_FILE', str(key_file))
    assert load_verifier() is signed_assertion_verifier
    key_file.write_text('short')
    with pytest.raises(ValueError):
        read_assertion_key(str(key_file))
