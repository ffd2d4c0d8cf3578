"""Docker sandboxes owned by users.

Selected through upstream's ``AppServerConfig.sandbox`` injector. Upstream's
Docker sandbox service lists, pauses, resumes and deletes every container with
its name prefix, for anybody. This subclass acts for one principal:

* a user sees and controls only containers labelled ``user_id=<them>``;
* the app's internal operations (upstream's ``ADMIN`` context: finding the
  sandbox that presented a session key) see all of them;
* every sandbox reports its owner (``created_by_user_id``), which upstream's
  webhook and sandbox-secret endpoints use to act for the right user.

Creating containers is upstream's code, patched to call
``sandport_openhands.docker_hooks`` (labels, per-sandbox workspace, network).
Every URL reported is also recorded for ``public_urls``, which hands the
browser the sandport runtime URL of the same port.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Any, AsyncGenerator
from uuid import UUID

from docker.errors import APIError, NotFound
from fastapi import Request

from openhands.app_server.sandbox.docker_sandbox_service import (
    DockerSandboxService,
    DockerSandboxServiceInjector,
)
from openhands.app_server.sandbox.sandbox_models import (
    VSCODE,
    ExposedUrl,
    SandboxInfo,
    SandboxRecord,
    SandboxStatus,
)
from openhands.app_server.sandbox.sandbox_service import (
    SESSION_API_KEY_VARIABLE,
    SandboxService,
)
from openhands.app_server.services.injector import InjectorState

from sandport_openhands import public_urls
from sandport_openhands.docker_hooks import (
    LABEL_CONVERSATION_ID,
    LABEL_USER_ID,
    is_sandbox_id,
    sandbox_network,
    writable_sources,
)
from sandport_openhands.identity import is_valid_user_id
from sandport_openhands.principal import Principal, principal_of


_logger = logging.getLogger(__name__)


def container_owner(container: Any) -> str | None:
    owner = (getattr(container, 'labels', None) or {}).get(LABEL_USER_ID)
    return owner if is_valid_user_id(owner) else None


@dataclass
class SandportDockerSandboxService(DockerSandboxService):
    # None (the default) sees nothing and cannot start anything
    sandport_principal: Principal | None = None

    def _visible(self, container: Any) -> bool:
        principal = self.sandport_principal
        return principal is not None and principal.may_access(container_owner(container))

    async def _container_to_sandbox_info(self, container: Any) -> SandboxInfo | None:
        if not self._visible(container):
            return None
        info = await super()._container_to_sandbox_info(container)
        if info is None:
            return None
        info.created_by_user_id = container_owner(container)
        if sandbox_network() and info.status == SandboxStatus.RUNNING:
            info.exposed_urls = self._network_urls(container, info.session_api_key)
        conversation_id = (getattr(container, 'labels', None) or {}).get(LABEL_CONVERSATION_ID)
        for exposed in info.exposed_urls or []:
            # the browser gets the sandport runtime URL of the same port (public_urls.py)
            public_urls.remember(exposed.url, conversation_id or '', exposed.port)
        return info

    def _network_urls(self, container: Any, session_api_key: str | None) -> list[ExposedUrl]:
        """Sandboxes publish no ports: address them by name on the sandbox network."""
        urls = []
        for port in self.exposed_ports:
            url = f'http://{container.name}:{port.container_port}'
            if port.name == VSCODE:
                folder = container.attrs['Config']['WorkingDir']
                url += f'/?tkn={session_api_key}&folder={folder}'
            urls.append(ExposedUrl(name=port.name, url=url, port=port.container_port))
        return urls

    async def get_sandbox_record_by_session_api_key(
        self, session_api_key: str
    ) -> SandboxRecord | None:
        try:
            for container in self.docker_client.containers.list(all=True):
                if not (
                    container.name
                    and container.name.startswith(self.container_name_prefix)
                    and self._visible(container)
                ):
                    continue
                env = self._get_container_env_vars(container)
                if env.get(SESSION_API_KEY_VARIABLE) == session_api_key:
                    return SandboxRecord(
                        id=container.name,
                        created_by_user_id=container_owner(container),
                    )
            return None
        except (NotFound, APIError):
            return None

    def _controls(self, sandbox_id: str) -> bool:
        if not sandbox_id.startswith(self.container_name_prefix):
            return False
        try:
            container = self.docker_client.containers.get(sandbox_id)
        except (NotFound, APIError):
            return False
        return self._visible(container)

    async def resume_sandbox(self, sandbox_id: str) -> bool:
        if self._controls(sandbox_id):
            return await super().resume_sandbox(sandbox_id)
        return await self._recreate_lost(sandbox_id)

    async def _recreate_lost(self, sandbox_id: str) -> bool:
        """The container is gone (a host reboot, ``docker rm``, a clean-up): start a new one
        with the same id, hence the same labels, workspace volume and secret key, for the
        user the conversation id belongs to and nobody else."""
        from sandport_openhands.conversations import conversation_owner

        principal = self.sandport_principal
        short_id = sandbox_id[len(self.container_name_prefix) :]
        if (
            principal is None
            or principal.user_id is None
            or not sandbox_id.startswith(self.container_name_prefix)
            or not is_sandbox_id(short_id)
        ):
            return False
        try:
            self.docker_client.containers.get(sandbox_id)
            return False  # it exists: not lost, and not this user's
        except NotFound:
            pass
        except APIError:
            return False
        if await conversation_owner(UUID(short_id)) != principal.user_id:
            return False
        _logger.info('re-creating lost sandbox %s for its owner', sandbox_id)
        await self.start_sandbox(sandbox_id=short_id)
        return True

    async def pause_sandbox(self, sandbox_id: str) -> bool:
        if not self._controls(sandbox_id):
            return False
        return await super().pause_sandbox(sandbox_id)

    async def delete_sandbox(self, sandbox_id: str) -> bool:
        if not self._controls(sandbox_id):
            return False
        deleted = await super().delete_sandbox(sandbox_id)
        if deleted:
            self._delete_workspace_volumes(sandbox_id[len(self.container_name_prefix) :])
        return deleted

    async def discard_failed_start(self, sandbox_id: str) -> None:
        """A sandbox a conversation start created and could not bring up: remove the
        container, keep the workspace (a conversation started again keeps its files)."""
        if not self._controls(sandbox_id):
            return
        _logger.warning('removing sandbox %s: its conversation did not start', sandbox_id)
        await super().delete_sandbox(sandbox_id)

    def _delete_workspace_volumes(self, short_id: str) -> None:
        """Remove the per-sandbox named volumes (host directories are kept)."""
        if not is_sandbox_id(short_id):
            return
        for source in writable_sources(self.mounts, short_id):
            if os.path.isabs(source):
                continue
            try:
                self.docker_client.volumes.get(source).remove()
            except (NotFound, APIError):
                pass


class SandportDockerSandboxServiceInjector(DockerSandboxServiceInjector):
    """Upstream's Docker sandbox settings, with the service scoped to a principal."""

    async def inject(
        self, state: InjectorState, request: Request | None = None
    ) -> AsyncGenerator[SandboxService, None]:
        # Inline import, as upstream's injectors do, to avoid a circular import
        from openhands.app_server.config import get_user_context

        async with get_user_context(state, request) as user_context:
            principal = await principal_of(user_context)
        async for service in super().inject(state, request):
            assert isinstance(service, DockerSandboxService)
            values = {
                f.name: getattr(service, f.name)
                for f in dataclasses.fields(service)
                if f.init
            }
            yield SandportDockerSandboxService(**values, sandport_principal=principal)
