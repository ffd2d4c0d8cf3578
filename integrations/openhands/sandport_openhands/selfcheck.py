"""Start-up self-check: refuse to serve unless the security wiring is in effect.

Run as ``python -m sandport_openhands.selfcheck`` after ``sandport patch
apply`` and before the app starts. It checks the *effective* configuration
(environment variables included, which could override the patched defaults):

* the user auth class is ``SandportUserAuth`` and its verifier is configured
  (the assertion key readable, or a trusted proxy set);
* settings and secrets use the per-user stores;
* conversation metadata uses the per-user service;
* sandboxes use the owner-scoped Docker service, and upstream's
  ``start_sandbox`` calls the label and workspace hooks;
* a conversation's id is fixed before its sandbox starts, and claimed for its
  first owner (the streaming start claims it before it answers);
* the browser gets sandport runtime URLs for sandboxes: the middleware is
  installed and ``SANDPORT_RUNTIME_URL`` (or ``OH_WEB_URL``) is valid, and set
  whenever sandboxes publish no ports (``SANDPORT_SANDBOX_NETWORK``);
* the sandboxes' secret key (``SANDPORT_SANDBOX_SECRET_KEY_FILE``), when set, can be read;
* the per-user store can be listed (nothing is written).

Exit status 0 when all hold; otherwise 1 and one line on stderr starting with
``SECURITY SELF-CHECK FAILED:`` naming every failed check.
"""

from __future__ import annotations

import inspect
import os
import sys
from typing import Callable


def _check_auth() -> str | None:
    from openhands.app_server.shared import server_config
    from openhands.app_server.user_auth.user_auth import UserAuth
    from openhands.app_server.utils.import_utils import get_impl

    from sandport_openhands import identity
    from sandport_openhands.auth import SandportUserAuth, configured_verifier

    impl = get_impl(UserAuth, server_config.user_auth_class)  # type: ignore[type-abstract]
    if not issubclass(impl, SandportUserAuth):
        return f'user auth class is {server_config.user_auth_class}'
    verifier = configured_verifier()
    policy = identity.TrustedHeaderPolicy.from_env()
    if verifier is identity.trusted_header_verifier and not policy.configured:
        return (
            'trusted-header identity without SANDPORT_TRUSTED_PROXIES '
            '(or set SANDPORT_ASSERTION_KEY_FILE)'
        )
    if verifier is identity.signed_assertion_verifier:
        identity.read_assertion_key(os.environ['SANDPORT_ASSERTION_KEY_FILE'].strip())
    return None


def _check_stores() -> str | None:
    from openhands.app_server import shared

    from sandport_openhands.stores import SandportSecretsStore, SandportSettingsStore

    problems = []
    if not issubclass(shared.SettingsStoreImpl, SandportSettingsStore):
        problems.append(f'settings store is {shared.SettingsStoreImpl.__name__}')
    if not issubclass(shared.SecretsStoreImpl, SandportSecretsStore):
        problems.append(f'secrets store is {shared.SecretsStoreImpl.__name__}')
    return '; '.join(problems) or None


def _check_services() -> str | None:
    from openhands.app_server.config import get_global_config
    from openhands.app_server.user.auth_user_context import AuthUserContextInjector

    from sandport_openhands.conversations import (
        UserScopedAppConversationInfoServiceInjector,
    )
    from sandport_openhands.sandbox import SandportDockerSandboxServiceInjector

    config = get_global_config()
    problems = []
    if not isinstance(
        config.app_conversation_info, UserScopedAppConversationInfoServiceInjector
    ):
        problems.append(
            f'conversation metadata service is {type(config.app_conversation_info).__name__}'
        )
    if not isinstance(config.sandbox, SandportDockerSandboxServiceInjector):
        problems.append(f'sandbox service is {type(config.sandbox).__name__}')
    if type(config.user) is not AuthUserContextInjector:
        problems.append(f'user context is {type(config.user).__name__}')
    return '; '.join(problems) or None


def _check_patched_code() -> str | None:
    from openhands.app_server.app_conversation import (
        live_status_app_conversation_service as live_status,
    )
    from openhands.app_server.sandbox.docker_sandbox_service import (
        DockerSandboxService,
    )

    problems = []
    start = inspect.getsource(DockerSandboxService.start_sandbox)
    for hook in ('sandbox_labels(', 'sandbox_volumes(', 'new_sandbox_id('):
        if hook not in start:
            problems.append(f'start_sandbox does not call {hook[:-1]}')
    source = inspect.getsource(live_status)
    if 'request.conversation_id = uuid4()' not in source:
        problems.append('conversation id is not fixed before the sandbox starts')
    if 'await _sandport_claim(user_id, request.conversation_id)' not in source:
        problems.append('conversation ids are not bound to their first owner')
    from openhands.app_server.app_conversation import app_conversation_router as router

    stream_start = inspect.getsource(router.stream_app_conversation_start)
    if '_sandport_claim(' not in stream_start:
        problems.append('the streaming start does not refuse another user\'s conversation id')
    return '; '.join(problems) or None


def _check_public_urls() -> str | None:
    import importlib.util

    from sandport_openhands import public_urls
    from sandport_openhands.docker_hooks import sandbox_network

    spec = importlib.util.find_spec('openhands.app_server.app')
    if spec is None or spec.origin is None:
        return 'openhands.app_server.app not found'
    with open(spec.origin, encoding='utf-8') as f:
        if 'app.add_middleware(_SandportPublicUrls)' not in f.read():
            return 'the public URL middleware is not installed'
    template = public_urls.runtime_url_template()
    if template is None and sandbox_network():
        return (
            'sandboxes publish no ports (SANDPORT_SANDBOX_NETWORK) but neither '
            f'{public_urls.RUNTIME_URL_VARIABLE} nor OH_WEB_URL is set'
        )
    return None


def _check_sandbox_secret_key() -> str | None:
    """When configured, the master key of the sandboxes' secret keys is readable and long."""
    from sandport_openhands.docker_hooks import sandbox_env

    sandbox_env('0' * 32)
    return None


def _check_storage() -> str | None:
    """The per-user store answers (read-only: start-up may run as another user)."""
    from sandport_openhands.storage import default_store

    default_store().list('users')
    return None


CHECKS: dict[str, Callable[[], str | None]] = {
    'identity': _check_auth,
    'settings-and-secrets': _check_stores,
    'services': _check_services,
    'patched-code': _check_patched_code,
    'public-urls': _check_public_urls,
    'sandbox-secret-key': _check_sandbox_secret_key,
    'user-data-store': _check_storage,
}


def run() -> list[str]:
    failures = []
    for name, check in CHECKS.items():
        try:
            problem = check()
        except Exception as e:  # any error is a failed check
            problem = f'{type(e).__name__}: {e}'
        if problem:
            failures.append(f'{name} ({problem})')
    return failures


def main() -> int:
    failures = run()
    if failures:
        print('SECURITY SELF-CHECK FAILED: ' + ', '.join(failures), file=sys.stderr)
        return 1
    print('sandport self-check passed: ' + ', '.join(CHECKS), file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
