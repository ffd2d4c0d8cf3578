"""Test set-up: the real openhands-ai package, patched by the manifest.

Run with the patched tree (which also holds the installed sandport_openhands
package) first on PYTHONPATH, as ci.sh does. The process environment is set
here, before anything imports openhands: upstream reads it at import time.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

_STATE = Path(tempfile.mkdtemp(prefix='sandport-openhands-tests-'))
atexit.register(shutil.rmtree, _STATE, True)
_ASSERTION_KEY_FILE = _STATE / 'assertion-key'
_ASSERTION_KEY_FILE.write_text('test-assertion-key-0123456789abcdef\n')
ASSERTION_KEY = b'test-assertion-key-0123456789abcdef'

os.environ.update(
    {
        'OPENHANDS_SUPPRESS_BANNER': '1',
        'LITELLM_LOCAL_MODEL_COST_MAP': 'True',
        'OH_PERSISTENCE_DIR': str(_STATE / 'persistence'),
        'SANDPORT_USER_DATA': str(_STATE / 'user-data'),
        'SANDPORT_ASSERTION_KEY_FILE': str(_ASSERTION_KEY_FILE),
    }
)
for name in ('SANDPORT_TRUSTED_PROXIES', 'SANDPORT_IDENTITY_VERIFIER', 'OPENHANDS_CONFIG_CLS',
             'SANDPORT_SANDBOX_NETWORK', 'RUNTIME', 'OH_SANDBOX_KIND',
             'OH_APP_CONVERSATION_INFO_KIND'):
    os.environ.pop(name, None)


def mint_assertion(user_id: str, key: bytes = ASSERTION_KEY, **claims: object) -> str:
    """An identity assertion shaped as sandport signs it (identity.py's docstring)."""
    import time

    import jwt

    now = int(time.time())
    body = {'iss': 'sandport', 'aud': 'app', 'sub': user_id, 'iat': now, 'exp': now + 60}
    body.update(claims)
    return jwt.encode(body, key, algorithm='HS256')


def as_user(user_id: str) -> dict[str, str]:
    """The identity headers sandport sends for ``user_id``."""
    return {'X-Cognito-User-Id': user_id, 'X-Sandport-Identity': mint_assertion(user_id)}


def pytest_report_header(config: pytest.Config) -> list[str]:
    import openhands
    import sandport_openhands

    return [
        f'openhands: {openhands.__version__} from {Path(openhands.__file__).parent}',
        f'sandport_openhands from {Path(sandport_openhands.__file__).parent}',
    ]


@pytest.fixture(scope='session')
def patched_tree() -> Path:
    """The tree the tests run against, checked to be patched."""
    import openhands.app_server.sandbox.docker_sandbox_service as dss

    source = Path(dss.__file__).read_text()
    assert '_sandport_hooks.sandbox_labels(self, sandbox_id)' in source, (
        f'{dss.__file__} is not patched: put the patched tree first on PYTHONPATH'
    )
    return Path(dss.__file__).parents[3]


@pytest.fixture
def user_data(tmp_path: Path):
    """A fresh local user-data store, used as the process-wide default."""
    from sandport_openhands import storage

    store = storage.LocalDirStore(tmp_path / 'user-data')
    storage.default_store.cache_clear()
    original = storage.default_store
    storage.default_store = lambda: store  # type: ignore[assignment]
    # modules that imported the function by name
    import sandport_openhands.conversations as conversations
    import sandport_openhands.stores as stores

    saved = (stores.default_store, conversations.default_store)
    stores.default_store = storage.default_store  # type: ignore[assignment]
    conversations.default_store = storage.default_store  # type: ignore[assignment]
    try:
        yield store
    finally:
        storage.default_store = original
        stores.default_store, conversations.default_store = saved



@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests in a fresh event loop (no plugin needed)."""
    import asyncio
    import inspect

    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    asyncio.run(pyfuncitem.obj(**kwargs))
    return True
