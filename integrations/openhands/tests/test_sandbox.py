"""The patched Docker sandbox service labels, isolates and scopes sandboxes.

The Docker client is replaced by a recorder: upstream's ``start_sandbox`` runs
unchanged apart from the manifest's patches, and what it would send to Docker
is checked.
"""

from __future__ import annotations

import functools
import types
from datetime import datetime, timezone
from typing import Any
from uuid import UUID, uuid4

import pytest
from docker.errors import NotFound

IMAGE = 'ghcr.io/openhands/agent-server:1.34.0-python'


class FakeContainer:
    def __init__(self, name: str, labels: dict[str, str], env: dict[str, str], status: str = 'created'):
        self.name = name
        self.labels = labels
        self.status = status
        self.image = types.SimpleNamespace(tags=[IMAGE], id='sha256:0')
        self.attrs = {
            'Created': datetime.now(timezone.utc).isoformat(),
            'Config': {
                'Env': [f'{k}={v}' for k, v in env.items()],
                'WorkingDir': '/workspace/project',
            },
            'HostConfig': {'NetworkMode': 'default'},
            'NetworkSettings': {'Ports': {}},
            'State': {'StartedAt': datetime.now(timezone.utc).isoformat()},
        }
        self.calls: list[str] = []

    def pause(self) -> None:
        self.calls.append('pause')

    def unpause(self) -> None:
        self.calls.append('unpause')

    def start(self) -> None:
        self.calls.append('start')

    def stop(self, timeout: int = 10) -> None:
        self.calls.append('stop')

    def remove(self) -> None:
        self.calls.append('remove')


class RecordingDockerClient:
    """Stands in for docker.DockerClient; records every containers.run()."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []
        self.by_name: dict[str, FakeContainer] = {}
        self.containers = self
        self.removed_volumes: list[str] = []
        self.volumes = types.SimpleNamespace(
            get=lambda name: types.SimpleNamespace(
                remove=lambda: self.removed_volumes.append(name)
            )
        )
        self.images = types.SimpleNamespace(get=lambda image_id: types.SimpleNamespace(id=image_id))

    # containers.*
    def run(self, **kwargs: Any) -> FakeContainer:
        self.runs.append(kwargs)
        container = FakeContainer(kwargs['name'], dict(kwargs['labels']), kwargs['environment'])
        self.by_name[container.name] = container
        return container

    def list(self, all: bool = False) -> list[FakeContainer]:
        return list(self.by_name.values())

    def get(self, name: str) -> FakeContainer:
        if name not in self.by_name:
            raise NotFound(name)
        return self.by_name[name]


class SpecService:
    async def get_default_sandbox_spec(self):
        from openhands.app_server.sandbox.sandbox_spec_models import SandboxSpecInfo

        return SandboxSpecInfo(id=IMAGE, command=None, working_dir='/workspace/project')

    async def get_sandbox_spec(self, spec_id: str):
        return await self.get_default_sandbox_spec() if spec_id == IMAGE else None


def make_service(docker: RecordingDockerClient, user_id: str | None, cls: Any = None, **extra: Any):
    from openhands.app_server.sandbox.docker_sandbox_service import (
        DockerSandboxServiceInjector,
        VolumeMount,
    )

    from sandport_openhands.principal import Principal
    from sandport_openhands.sandbox import SandportDockerSandboxService

    cls = cls or SandportDockerSandboxService
    kwargs: dict[str, Any] = dict(
        sandbox_spec_service=SpecService(),
        container_name_prefix='oh-agent-server-',
        host_port=3000,
        container_url_pattern='http://localhost:{port}',
        mounts=[
            VolumeMount(host_path='/srv/openhands/workspaces', container_path='/workspace', mode='rw'),
            VolumeMount(host_path='/srv/openhands/shared', container_path='/shared', mode='ro'),
            VolumeMount(host_path='cache', container_path='/cache', mode='rw'),
        ],
        exposed_ports=DockerSandboxServiceInjector().exposed_ports,
        health_check_path=None,
        httpx_client=None,
        max_num_sandboxes=10,
        docker_client=docker,
        **extra,
    )
    if cls is SandportDockerSandboxService:
        kwargs['sandport_principal'] = Principal(user_id)
    return cls(**kwargs)


async def test_sandbox_gets_conversation_and_owner_labels(patched_tree) -> None:
    docker = RecordingDockerClient()
    service = make_service(docker, 'alice')
    conversation_id = uuid4()

    info = await service.start_sandbox(sandbox_id=conversation_id.hex)

    (run,) = docker.runs
    assert run['labels'] == {
        'sandbox_spec_id': IMAGE,
        'conversation_id': conversation_id.hex,
        'user_id': 'alice',
    }
    assert run['name'] == f'oh-agent-server-{conversation_id.hex}'
    assert info.id == run['name']
    assert info.created_by_user_id == 'alice'
    assert info.sandbox_spec_id == IMAGE


async def test_sandbox_without_id_gets_a_conversation_shaped_id(patched_tree) -> None:
    docker = RecordingDockerClient()
    await make_service(docker, 'alice').start_sandbox()
    (run,) = docker.runs
    label = run['labels']['conversation_id']
    assert UUID(hex=label).hex == label and len(label) == 32
    assert run['name'] == f'oh-agent-server-{label}'


async def test_each_sandbox_gets_its_own_workspace(patched_tree) -> None:
    docker = RecordingDockerClient()
    service = make_service(docker, 'alice')
    first, second = uuid4().hex, uuid4().hex
    await service.start_sandbox(sandbox_id=first)
    await service.start_sandbox(sandbox_id=second)
    volumes = [run['volumes'] for run in docker.runs]
    assert volumes[0] == {
        f'/srv/openhands/workspaces/{first}': {'bind': '/workspace', 'mode': 'rw'},
        '/srv/openhands/shared': {'bind': '/shared', 'mode': 'ro'},
        f'cache-{first}': {'bind': '/cache', 'mode': 'rw'},
    }
    writable = lambda v: {k for k, m in v.items() if m['mode'] == 'rw'}  # noqa: E731
    assert not writable(volumes[0]) & writable(volumes[1])


@pytest.mark.parametrize('sandbox_id', ['abc', 'A' * 32, '../' + 'a' * 29, uuid4().hex + '0'])
async def test_sandbox_id_must_be_a_conversation_id(patched_tree, sandbox_id: str) -> None:
    from openhands.app_server.errors import SandboxError

    docker = RecordingDockerClient()
    with pytest.raises(SandboxError):
        await make_service(docker, 'alice').start_sandbox(sandbox_id=sandbox_id)
    assert docker.runs == []


async def test_no_sandbox_without_an_owner(patched_tree) -> None:
    from openhands.app_server.errors import SandboxError
    from openhands.app_server.sandbox.docker_sandbox_service import DockerSandboxService

    for service in (
        # upstream's class, e.g. selected by an environment variable: no owner known
        make_service(RecordingDockerClient(), None, cls=DockerSandboxService),
        # the app's internal context starts nothing on nobody's behalf
        make_service(RecordingDockerClient(), None),
    ):
        with pytest.raises(SandboxError, match='owner'):
            await service.start_sandbox(sandbox_id=uuid4().hex)
        assert service.docker_client.runs == []


async def test_users_see_and_control_only_their_sandboxes(patched_tree) -> None:
    docker = RecordingDockerClient()
    alice, bob = make_service(docker, 'alice'), make_service(docker, 'bob')
    app = make_service(docker, None)
    alice_info = await alice.start_sandbox(sandbox_id=uuid4().hex)
    bob_info = await bob.start_sandbox(sandbox_id=uuid4().hex)
    # a container of the same name prefix without labels (e.g. from before sandport)
    docker.by_name['oh-agent-server-legacy'] = FakeContainer('oh-agent-server-legacy', {}, {})

    assert [s.id for s in (await bob.search_sandboxes()).items] == [bob_info.id]
    assert await bob.get_sandbox(alice_info.id) is None
    assert await bob.pause_sandbox(alice_info.id) is False
    assert await bob.resume_sandbox(alice_info.id) is False
    assert await bob.delete_sandbox(alice_info.id) is False
    assert docker.by_name[alice_info.id].calls == []

    assert docker.removed_volumes == []
    assert await alice.delete_sandbox(alice_info.id) is True
    assert docker.by_name[alice_info.id].calls == ['remove']
    # the sandbox's own named workspace volume goes with it; host directories stay
    assert f'cache-{alice_info.id[-32:]}' in docker.removed_volumes
    assert not any(v.startswith('/') for v in docker.removed_volumes)
    assert {s.id for s in (await app.search_sandboxes()).items} == {alice_info.id, bob_info.id, 'oh-agent-server-legacy'}


async def test_session_key_lookup_reports_the_owner(patched_tree) -> None:
    from openhands.app_server.sandbox.sandbox_service import SESSION_API_KEY_VARIABLE

    docker = RecordingDockerClient()
    await make_service(docker, 'alice').start_sandbox(sandbox_id=uuid4().hex)
    key = docker.runs[0]['environment'][SESSION_API_KEY_VARIABLE]
    docker.by_name['oh-agent-server-legacy'] = FakeContainer(
        'oh-agent-server-legacy', {}, {SESSION_API_KEY_VARIABLE: 'legacy-key'}
    )

    app = make_service(docker, None)
    record = await app.get_sandbox_record_by_session_api_key(key)
    assert record is not None and record.created_by_user_id == 'alice'
    # no owner label: no owner, so the webhook is not run as anybody
    legacy = await app.get_sandbox_record_by_session_api_key('legacy-key')
    assert legacy is not None and legacy.created_by_user_id is None
    assert await app.get_sandbox_record_by_session_api_key('wrong') is None


async def test_sandbox_network_publishes_no_ports(patched_tree, monkeypatch) -> None:
    from openhands.app_server.sandbox.sandbox_models import AGENT_SERVER, SandboxStatus

    monkeypatch.setenv('SANDPORT_SANDBOX_NETWORK', 'sandport_sandboxes')
    docker = RecordingDockerClient()
    service = make_service(docker, 'alice')
    info = await service.start_sandbox(sandbox_id=uuid4().hex)
    (run,) = docker.runs
    assert run['ports'] is None
    assert run['network'] == 'sandport_sandboxes'

    docker.by_name[info.id].status = 'running'
    running = await service.get_sandbox(info.id)
    assert running is not None and running.status == SandboxStatus.RUNNING
    urls = {u.name: u.url for u in running.exposed_urls or []}
    assert urls[AGENT_SERVER] == f'http://{info.id}:8000'


async def test_conversation_id_and_sandbox_id_agree(patched_tree) -> None:
    """Upstream's conversation start (patched) names and labels the sandbox after the conversation."""
    from openhands.app_server.app_conversation.app_conversation_models import (
        AppConversationStartRequest,
    )
    from openhands.app_server.app_conversation.live_status_app_conversation_service import (
        LiveStatusAppConversationService,
    )

    docker = RecordingDockerClient()
    fake = start_driver(docker)

    request = AppConversationStartRequest()  # the UI sends no conversation id
    steps = LiveStatusAppConversationService._start_app_conversation(fake, request)
    task = await anext(steps)
    assert task.request.conversation_id is not None
    while not docker.runs:
        await anext(steps)
    await steps.aclose()

    (run,) = docker.runs
    assert run['labels']['conversation_id'] == task.request.conversation_id.hex
    assert run['labels']['user_id'] == 'alice'
    assert task.sandbox_id == f'oh-agent-server-{task.request.conversation_id.hex}'


def start_driver(docker: RecordingDockerClient, running: Any = None) -> types.SimpleNamespace:
    """Enough of LiveStatusAppConversationService for upstream's real start generator, as
    alice, with a sandbox that never becomes ready."""
    from openhands.app_server.app_conversation.live_status_app_conversation_service import (
        LiveStatusAppConversationService,
    )
    from openhands.app_server.errors import SandboxError

    service = make_service(docker, 'alice')

    async def never_ready(*args: Any, **kwargs: Any) -> None:
        raise SandboxError('sandbox did not become ready')

    service.wait_for_sandbox_running = never_ready  # type: ignore[method-assign]

    async def find_running() -> Any:
        return running

    async def user_id() -> str:
        return 'alice'

    async def no_email() -> None:
        return None

    fake = types.SimpleNamespace(
        user_context=types.SimpleNamespace(get_user_id=user_id, get_user_email=no_email),
        sandbox_service=service,
        sandbox_startup_timeout=1,
        sandbox_startup_poll_frequency=1,
        httpx_client=None,
        _apply_suggested_task=lambda request: None,
        _find_running_sandbox_for_user=find_running,
    )
    fake._wait_for_sandbox_start = functools.partial(
        LiveStatusAppConversationService._wait_for_sandbox_start, fake
    )
    return fake


def container_volumes(docker: RecordingDockerClient) -> list[str]:
    (run,) = docker.runs
    return list(run['volumes'])


async def run_start(fake: types.SimpleNamespace) -> Any:
    from openhands.app_server.app_conversation.app_conversation_models import (
        AppConversationStartRequest,
    )
    from openhands.app_server.app_conversation.live_status_app_conversation_service import (
        LiveStatusAppConversationService,
    )

    steps = LiveStatusAppConversationService._start_app_conversation(
        fake, AppConversationStartRequest()
    )
    task = None
    async for task in steps:
        pass
    return task


async def test_a_sandbox_whose_conversation_failed_to_start_is_removed(
    patched_tree, user_data
) -> None:
    from openhands.app_server.app_conversation.app_conversation_models import (
        AppConversationStartTaskStatus,
    )

    docker = RecordingDockerClient()
    task = await run_start(start_driver(docker))
    assert task.status == AppConversationStartTaskStatus.ERROR
    (container,) = docker.by_name.values()
    assert container.name == task.sandbox_id
    assert 'remove' in container.calls, container.calls
    # the container goes, the conversation's workspace stays (upstream also tries its own
    # `openhands-workspace-{id}` volume, which sandport's per-conversation mounts never use)
    short_id = task.sandbox_id.removeprefix('oh-agent-server-')
    assert f'cache-{short_id}' in container_volumes(docker)
    assert [v for v in docker.removed_volumes if short_id in v] == [
        f'openhands-workspace-{task.sandbox_id}'
    ]


async def test_a_failed_start_leaves_a_sandbox_it_found_running_alone(
    patched_tree, user_data
) -> None:
    from openhands.app_server.app_conversation.app_conversation_models import (
        AppConversationStartTaskStatus,
    )

    docker = RecordingDockerClient()
    owner = make_service(docker, 'alice')
    running = await owner.start_sandbox(sandbox_id=uuid4().hex)
    docker.by_name[running.id].status = 'running'
    task = await run_start(start_driver(docker, running=running))
    assert task.status == AppConversationStartTaskStatus.ERROR
    assert task.sandbox_id == running.id
    assert 'remove' not in docker.by_name[running.id].calls


async def test_injector_is_the_default_and_scopes_to_the_user(patched_tree, monkeypatch) -> None:
    from openhands.app_server.config import get_global_config
    from openhands.app_server.services.injector import InjectorState
    from openhands.app_server.user.specifiy_user_context import (
        ADMIN,
        USER_CONTEXT_ATTR,
        SpecifyUserContext,
    )

    from sandport_openhands.sandbox import (
        SandportDockerSandboxService,
        SandportDockerSandboxServiceInjector,
    )

    injector = get_global_config().sandbox
    assert isinstance(injector, SandportDockerSandboxServiceInjector)

    import openhands.app_server.sandbox.docker_sandbox_spec_service as spec_module

    # no Docker engine needed
    monkeypatch.setattr(spec_module, '_global_docker_client', RecordingDockerClient())
    for context, expected in ((SpecifyUserContext('alice'), 'alice'), (ADMIN, None)):
        state = InjectorState()
        setattr(state, USER_CONTEXT_ATTR, context)
        async with injector.context(state) as service:
            assert isinstance(service, SandportDockerSandboxService)
            assert service.sandport_principal is not None
            assert service.sandport_principal.user_id == expected


async def test_no_sandbox_for_a_conversation_id_another_users_container_has(patched_tree) -> None:
    from openhands.app_server.errors import SandboxError

    docker = RecordingDockerClient()
    conversation_id = uuid4().hex
    # bob's container, started before ids were claimed (or by hand), labelled with the id
    docker.by_name['squatter'] = FakeContainer(
        'squatter', {'conversation_id': conversation_id, 'user_id': 'bob'}, {})
    with pytest.raises(SandboxError, match='another user'):
        await make_service(docker, 'alice').start_sandbox(sandbox_id=conversation_id)
    assert docker.runs == []


def test_every_container_of_a_conversation_gets_the_same_secret_key(tmp_path, monkeypatch) -> None:
    from sandport_openhands.docker_hooks import sandbox_env

    assert sandbox_env('a' * 32) == {}
    key_file = tmp_path / 'sandbox-secret-key'
    key_file.write_text('master-key-0123456789abcdef\n')
    monkeypatch.setenv('SANDPORT_SANDBOX_SECRET_KEY_FILE', str(key_file))
    first = sandbox_env('a' * 32)['OH_SECRET_KEY']
    assert sandbox_env('a' * 32)['OH_SECRET_KEY'] == first
    assert sandbox_env('b' * 32)['OH_SECRET_KEY'] != first
    assert 'master-key' not in first


async def test_a_lost_sandbox_is_recreated_for_its_owner_only(patched_tree, user_data) -> None:
    from sandport_openhands.conversations import claim_conversation_id

    conversation_id = uuid4()
    await claim_conversation_id('alice', conversation_id)
    name = f'oh-agent-server-{conversation_id.hex}'

    bob_docker = RecordingDockerClient()
    assert not await make_service(bob_docker, 'bob').resume_sandbox(name)
    assert bob_docker.runs == []

    docker = RecordingDockerClient()
    assert await make_service(docker, 'alice').resume_sandbox(name)
    (run,) = docker.runs
    assert run['name'] == name
    assert run['labels']['user_id'] == 'alice'
    # an id nobody claimed is not re-created
    assert not await make_service(RecordingDockerClient(), 'alice').resume_sandbox(
        f'oh-agent-server-{uuid4().hex}')
