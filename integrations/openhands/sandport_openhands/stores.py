"""Per-user settings and secrets stores.

Selected through upstream's ``ServerConfig.settings_store_class`` and
``ServerConfig.secret_store_class``. Records live at
``users/{user_id}/settings.json`` and ``users/{user_id}/secrets.json`` in the
store named by ``SANDPORT_USER_DATA``.

The parsing is upstream's own (``FileSettingsStore``/``FileSecretsStore``);
only the file access differs: a missing record is ``None``, anything else that
goes wrong (I/O error, unreadable JSON) is raised, so an unreadable record is
never mistaken for "no settings yet" and overwritten with defaults. Without a
valid user id no store is handed out at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from openhands.app_server.errors import AuthError
from openhands.app_server.secrets.file_secrets_store import FileSecretsStore
from openhands.app_server.secrets.secrets_models import Secrets
from openhands.app_server.settings.file_settings_store import FileSettingsStore
from openhands.app_server.settings.settings_models import (
    SandboxGroupingStrategy,
    Settings,
)

from sandport_openhands.identity import InvalidUserId, validate_user_id
from sandport_openhands.storage import (
    RecordNotFound,
    StorageError,
    UserDataStore,
    default_store,
    user_prefix,
)


class UserFiles:
    """The ``read``/``write`` surface upstream's file stores use, scoped to one user.

    ``read`` raises ``FileNotFoundError`` only when the record does not exist;
    every other failure is a ``StorageError``.
    """

    def __init__(self, backend: UserDataStore, user_id: str) -> None:
        self.backend = backend
        self.user_id = validate_user_id(user_id)
        self.prefix = user_prefix(self.user_id)

    def _key(self, path: str) -> str:
        return f'{self.prefix}/{path.lstrip("/")}'

    def read(self, path: str) -> str:
        try:
            data = self.backend.read(self._key(path))
        except RecordNotFound:
            raise FileNotFoundError(path) from None
        try:
            return data.decode('utf-8')
        except UnicodeDecodeError as e:
            raise StorageError(f'{self._key(path)} is not UTF-8') from e

    def write(self, path: str, contents: str | bytes) -> None:
        data = contents.encode('utf-8') if isinstance(contents, str) else contents
        self.backend.write(self._key(path), data)


def _checked_user_id(user_id: str | None) -> str:
    if user_id is None:
        raise AuthError('a user identity is required')
    try:
        return validate_user_id(user_id)
    except InvalidUserId:
        raise AuthError('invalid user identity') from None


@dataclass
class SandportSettingsStore(FileSettingsStore):
    """Settings of one user.

    Every conversation gets its own sandbox (``NO_GROUPING`` is enforced):
    the sandbox id is the conversation id, which is what sandport routes on.
    """

    user_id: str | None = None

    async def load(
        self,
        *,
        resolve_agent_profile: bool = False,
        override_agent_profile_id: str | None = None,
    ) -> Settings | None:
        try:
            settings = await super().load(
                resolve_agent_profile=resolve_agent_profile,
                override_agent_profile_id=override_agent_profile_id,
            )
        except (StorageError, ValueError) as e:
            # ValueError covers unreadable JSON and failed validation
            raise StorageError(f'settings of user {self.user_id} unreadable: {e}') from e
        if settings is not None:
            settings.sandbox_grouping_strategy = SandboxGroupingStrategy.NO_GROUPING
        return settings

    async def store(self, settings: Settings) -> None:
        settings.sandbox_grouping_strategy = SandboxGroupingStrategy.NO_GROUPING
        await super().store(settings)

    @classmethod
    async def get_instance(cls, user_id: str | None) -> SandportSettingsStore:
        uid = _checked_user_id(user_id)
        return cls(
            file_store=UserFiles(default_store(), uid),  # type: ignore[arg-type]
            path='settings.json',
            user_id=uid,
        )


@dataclass
class SandportSecretsStore(FileSecretsStore):
    """Secrets (custom secrets and provider tokens) of one user."""

    user_id: str | None = None

    async def load(self) -> Secrets | None:
        try:
            return await super().load()
        except (StorageError, ValueError, AttributeError, TypeError) as e:
            raise StorageError(f'secrets of user {self.user_id} unreadable: {e}') from e

    @classmethod
    async def get_instance(cls, user_id: str | None) -> SandportSecretsStore:
        uid = _checked_user_id(user_id)
        return cls(
            file_store=UserFiles(default_store(), uid),  # type: ignore[arg-type]
            path='secrets.json',
            user_id=uid,
        )
