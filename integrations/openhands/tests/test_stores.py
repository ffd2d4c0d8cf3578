"""Settings and secrets are stored per user; an error is never "nothing there"."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from sandport_openhands.storage import (
    LocalDirStore,
    RecordNotFound,
    S3Store,
    StorageError,
    UserDataStore,
)


def _settings(**values):
    from openhands.app_server.settings.settings_models import Settings

    return Settings(**values)


async def test_two_users_settings_are_isolated(patched_tree, user_data: LocalDirStore) -> None:
    from openhands.app_server.shared import SettingsStoreImpl

    from sandport_openhands.stores import SandportSettingsStore

    assert SettingsStoreImpl is SandportSettingsStore
    alice = await SettingsStoreImpl.get_instance('alice')
    bob = await SettingsStoreImpl.get_instance('bob')

    assert await alice.load() is None  # nothing stored yet: not found, not an error
    await alice.store(_settings(language='fr'))

    loaded = await alice.load()
    assert loaded is not None and loaded.language == 'fr'
    assert await bob.load() is None
    assert (user_data.root / 'users/alice/settings.json').is_file()
    assert not (user_data.root / 'users/bob').exists()
    assert not (user_data.root / 'settings.json').exists()


async def test_two_users_secrets_are_isolated(patched_tree, user_data: LocalDirStore) -> None:
    from openhands.app_server.secrets.secrets_models import CustomSecret, Secrets
    from openhands.app_server.shared import SecretsStoreImpl

    from sandport_openhands.stores import SandportSecretsStore

    assert SecretsStoreImpl is SandportSecretsStore
    alice = await SecretsStoreImpl.get_instance('alice')
    bob = await SecretsStoreImpl.get_instance('bob')
    await alice.store(
        Secrets(custom_secrets={'API_TOKEN': CustomSecret.from_value({'secret': 'alice-only'})})
    )

    loaded = await alice.load()
    assert loaded is not None
    assert loaded.custom_secrets['API_TOKEN'].secret.get_secret_value() == 'alice-only'
    assert await bob.load() is None
    raw = (user_data.root / 'users/alice/secrets.json').read_text()
    assert 'alice-only' in raw
    mode = (user_data.root / 'users/alice/secrets.json').stat().st_mode & 0o777
    assert mode == 0o600


@pytest.mark.parametrize('user_id', [None, '', '../bob', 'bob/../../x', 'a' * 200])
async def test_no_store_without_a_valid_identity(patched_tree, user_data, user_id) -> None:
    from openhands.app_server.errors import AuthError

    from sandport_openhands.stores import SandportSecretsStore, SandportSettingsStore

    for cls in (SandportSettingsStore, SandportSecretsStore):
        with pytest.raises(AuthError):
            await cls.get_instance(user_id)


async def test_unreadable_settings_are_an_error_not_empty(
    patched_tree, user_data: LocalDirStore
) -> None:
    from sandport_openhands.stores import SandportSecretsStore, SandportSettingsStore

    store = await SandportSettingsStore.get_instance('alice')
    path = user_data.root / 'users/alice/settings.json'

    path.parent.mkdir(parents=True)
    path.write_text('{"language": "fr", truncated')
    with pytest.raises(StorageError):
        await store.load()

    path.unlink()
    path.mkdir()  # an I/O error (EISDIR) instead of a record
    with pytest.raises(StorageError):
        await store.load()

    secrets = await SandportSecretsStore.get_instance('alice')
    (user_data.root / 'users/alice/secrets.json').write_bytes(b'\xff\xfe not utf-8')
    with pytest.raises(StorageError):
        await secrets.load()


class FailingStore(UserDataStore):
    """A backend that is down: every operation fails."""

    def read(self, key: str) -> bytes:
        raise StorageError('connection reset')

    def write(self, key: str, data: bytes) -> None:
        raise StorageError('connection reset')

    def list(self, prefix: str) -> list[str]:
        raise StorageError('connection reset')

    def exists(self, key: str) -> bool:
        raise StorageError('connection reset')

    def delete_tree(self, prefix: str) -> bool:
        raise StorageError('connection reset')

    def create(self, key: str, data: bytes) -> bool:
        raise StorageError('connection reset')


async def test_backend_failure_is_not_settings_not_found(patched_tree) -> None:
    from sandport_openhands.stores import (
        SandportSecretsStore,
        SandportSettingsStore,
        UserFiles,
    )

    settings = SandportSettingsStore(file_store=UserFiles(FailingStore(), 'alice'), user_id='alice')  # type: ignore[arg-type]
    secrets = SandportSecretsStore(file_store=UserFiles(FailingStore(), 'alice'), path='secrets.json', user_id='alice')  # type: ignore[arg-type]
    with pytest.raises(StorageError):
        await settings.load()
    with pytest.raises(StorageError):
        await secrets.load()


async def test_one_sandbox_per_conversation_is_enforced(patched_tree, user_data) -> None:
    from openhands.app_server.settings.settings_models import SandboxGroupingStrategy

    from sandport_openhands.stores import SandportSettingsStore

    store = await SandportSettingsStore.get_instance('alice')
    await store.store(_settings(sandbox_grouping_strategy=SandboxGroupingStrategy.ADD_TO_ANY))
    loaded = await store.load()
    assert loaded is not None
    assert loaded.sandbox_grouping_strategy == SandboxGroupingStrategy.NO_GROUPING


def test_local_store_distinguishes_missing_from_failing(tmp_path: Path) -> None:
    store = LocalDirStore(tmp_path)
    with pytest.raises(RecordNotFound):
        store.read('users/alice/settings.json')
    assert store.list('users/alice/conversations') == []
    store.write('users/alice/settings.json', b'{}')
    assert store.read('users/alice/settings.json') == b'{}'
    (tmp_path / 'users/alice/secrets.json').mkdir()
    with pytest.raises(StorageError):
        store.read('users/alice/secrets.json')
    (tmp_path / 'users/bob').write_text('not a directory')
    with pytest.raises(StorageError):
        store.list('users/bob')
    for bad in ('../x', 'users//x', '/etc/passwd', 'users/./x', 'a\\b'):
        with pytest.raises(ValueError):
            store.read(bad)


def test_s3_store_only_nosuchkey_is_not_found() -> None:
    import boto3
    from botocore.stub import Stubber

    client = boto3.client(
        's3', region_name='us-east-1', aws_access_key_id='x', aws_secret_access_key='x'
    )
    store = S3Store('bucket', 'sandport', client=client)
    with Stubber(client) as stub:
        stub.add_client_error('get_object', service_error_code='NoSuchKey', http_status_code=404)
        stub.add_client_error('get_object', service_error_code='AccessDenied', http_status_code=403)
        stub.add_client_error('get_object', service_error_code='SlowDown', http_status_code=503)
        stub.add_response(
            'get_object',
            {'Body': _streaming(b'{"language": "de"}')},
            {'Bucket': 'bucket', 'Key': 'sandport/users/alice/settings.json'},
        )
        with pytest.raises(RecordNotFound):
            store.read('users/alice/settings.json')
        with pytest.raises(StorageError):
            store.read('users/alice/settings.json')
        with pytest.raises(StorageError):
            store.read('users/alice/settings.json')
        assert json.loads(store.read('users/alice/settings.json')) == {'language': 'de'}


def _streaming(data: bytes):
    from botocore.response import StreamingBody

    return StreamingBody(io.BytesIO(data), len(data))
