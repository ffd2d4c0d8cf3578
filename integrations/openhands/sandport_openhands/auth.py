"""The app's user authentication: the identity comes from sandport only.

Selected through upstream's ``ServerConfig.user_auth_class``. Every route
dependency that needs a user (``get_user_id``, the user context of the V1
services, settings and secrets) resolves it through ``get_instance``, which
asks the configured verifier (``sandport_openhands.identity``). A request
without an identity the verifier vouches for gets 401: there is no anonymous
or shared fallback user.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

from fastapi import Request
from pydantic import SecretStr

from openhands.app_server.errors import AuthError
from openhands.app_server.integrations.provider import PROVIDER_TOKEN_TYPE
from openhands.app_server.secrets.secrets_models import Secrets
from openhands.app_server.secrets.secrets_store import SecretsStore
from openhands.app_server.settings.settings_models import Settings
from openhands.app_server.settings.settings_store import SettingsStore
from openhands.app_server.user_auth.user_auth import AuthType, UserAuth

from sandport_openhands.identity import (
    IdentityRejected,
    IdentityVerifier,
    InvalidUserId,
    load_verifier,
    validate_user_id,
)
from sandport_openhands.stores import SandportSecretsStore, SandportSettingsStore

_logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def configured_verifier() -> IdentityVerifier:
    return load_verifier()


@dataclass
class SandportUserAuth(UserAuth):
    """A user whose id a verifier vouched for (or the owner of a sandbox)."""

    user_id: str
    email: str | None = None
    _settings: Settings | None = None
    _settings_store: SettingsStore | None = None
    _secrets_store: SecretsStore | None = None
    _secrets: Secrets | None = None

    def __post_init__(self) -> None:
        validate_user_id(self.user_id)

    async def get_user_id(self) -> str | None:
        return self.user_id

    async def get_user_email(self) -> str | None:
        return self.email

    async def get_access_token(self) -> SecretStr | None:
        return None

    async def get_user_settings_store(self) -> SettingsStore:
        if self._settings_store is None:
            self._settings_store = await SandportSettingsStore.get_instance(
                self.user_id
            )
        return self._settings_store

    async def get_secrets_store(self) -> SecretsStore:
        if self._secrets_store is None:
            self._secrets_store = await SandportSecretsStore.get_instance(
                self.user_id
            )
        return self._secrets_store

    async def get_secrets(self) -> Secrets | None:
        if self._secrets is None:
            store = await self.get_secrets_store()
            self._secrets = await store.load()
        return self._secrets

    async def get_provider_tokens(self) -> PROVIDER_TOKEN_TYPE | None:
        secrets = await self.get_secrets()
        return secrets.provider_tokens if secrets is not None else None

    async def get_mcp_api_key(self) -> str | None:
        return None

    def get_auth_type(self) -> AuthType | None:
        return None

    @classmethod
    async def authenticate(
        cls, request: Request, verifier: IdentityVerifier
    ) -> SandportUserAuth:
        try:
            identity = await verifier(request)
        except IdentityRejected as e:
            _logger.info(
                'request refused without identity: %s (%s %s)',
                e.reason,
                request.method,
                request.url.path,
            )
            raise AuthError('authentication required') from None
        return cls(user_id=identity.user_id, email=identity.email)

    @classmethod
    async def get_instance(cls, request: Request) -> UserAuth:
        return await cls.authenticate(request, configured_verifier())

    @classmethod
    async def get_for_user(cls, user_id: str) -> UserAuth:
        """The owner of a sandbox, for requests authenticated by its session key."""
        try:
            return cls(user_id=validate_user_id(user_id))
        except InvalidUserId:
            raise AuthError('invalid user identity') from None
