"""Functions the patched ``DockerSandboxService.start_sandbox`` calls.

Kept free of imports of the sandbox service itself, because the patched
upstream module imports this one at load time.

* ``new_sandbox_id``: sandbox ids are conversation ids (32 lowercase hex), so
  that a sandbox started without a conversation still has a routable id.
* ``sandbox_labels``: the ``conversation_id`` and ``user_id`` labels sandport
  discovers and authorises sandboxes by. Refuses (``SandboxError``) to start a
  sandbox whose owner is unknown or whose id is not a conversation id: an
  unlabelled sandbox would be unreachable, a mislabelled one reachable by the
  wrong user.
* ``sandbox_volumes``: every writable host directory mounted into sandboxes
  becomes ``{host_dir}/{sandbox_id}`` (a named volume ``{name}-{sandbox_id}``),
  so that no two sandboxes share a workspace. Read-only mounts stay shared.
* ``started_for_task`` / ``discard_failed_start``: a sandbox a conversation start
  created and could not bring up is removed (its container; the workspace stays),
  instead of running on with nobody using it.
* ``sandbox_network``: with ``SANDPORT_SANDBOX_NETWORK`` set, sandboxes join
  that Docker network and publish no ports on the host; the app and sandport
  reach them by container name / address on that network.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import uuid
from collections import OrderedDict
from typing import Any, Iterable

from openhands.app_server.errors import SandboxError

from sandport_openhands.identity import is_valid_user_id

_logger = logging.getLogger(__name__)

LABEL_CONVERSATION_ID = 'conversation_id'
LABEL_USER_ID = 'user_id'
SANDBOX_ID_RE = re.compile(r'[0-9a-f]{32}')


def new_sandbox_id() -> str:
    return uuid.uuid4().hex


def is_sandbox_id(value: object) -> bool:
    return isinstance(value, str) and SANDBOX_ID_RE.fullmatch(value) is not None


def sandbox_owner(service: Any) -> str | None:
    principal = getattr(service, 'sandport_principal', None)
    owner = getattr(principal, 'user_id', None)
    return owner if is_valid_user_id(owner) else None


def sandbox_labels(service: Any, sandbox_id: object) -> dict[str, str]:
    owner = sandbox_owner(service)
    if owner is None:
        raise SandboxError(
            'refusing to start a sandbox without a known owner '
            '(is the sandport sandbox service configured?)'
        )
    if not is_sandbox_id(sandbox_id):
        raise SandboxError(
            'refusing to start a sandbox whose id is not a conversation id '
            '(32 lowercase hex)'
        )
    assert isinstance(sandbox_id, str)
    _refuse_other_owners(service, sandbox_id, owner)
    return {LABEL_CONVERSATION_ID: sandbox_id, LABEL_USER_ID: owner}


def _refuse_other_owners(service: Any, sandbox_id: str, owner: str) -> None:
    """A container of another user already carries this conversation id: refuse (one list
    call per sandbox start; sandport would refuse both containers' routes anyway)."""
    docker = getattr(service, 'docker_client', None)
    if docker is None:
        return
    for container in docker.containers.list(all=True):
        labels = getattr(container, 'labels', None) or {}
        if labels.get(LABEL_CONVERSATION_ID) == sandbox_id and labels.get(LABEL_USER_ID) != owner:
            _logger.warning(
                'refused a sandbox for conversation %s: another user\'s container has that id',
                sandbox_id,
            )
            raise SandboxError(
                'refusing to start a sandbox for a conversation id that belongs to another user'
            )


def _prepare_workspace_dir(path: str) -> None:
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        # Not visible from the app (it runs elsewhere); Docker creates it.
        return
    try:
        os.mkdir(path)
    except FileExistsError:
        return
    except OSError as e:
        _logger.warning('cannot create workspace directory %s: %s', path, e)
        return
    # The sandbox's user id is not known here; the parent directory (owned by
    # root, mode 0711) keeps other host users from finding it.
    os.chmod(path, 0o777)


def _is_writable(mode: str) -> bool:
    return mode.split(',')[0] != 'ro'


def _per_sandbox_source(source: str, sandbox_id: str) -> str:
    if os.path.isabs(source):
        return os.path.join(source, sandbox_id)
    return f'{source}-{sandbox_id}'


def writable_sources(mounts: Iterable[Any], sandbox_id: str) -> list[str]:
    """The per-sandbox host directories and volume names of a sandbox."""
    return [
        _per_sandbox_source(m.host_path, sandbox_id) for m in mounts if _is_writable(m.mode)
    ]


def sandbox_volumes(mounts: Iterable[Any], sandbox_id: str) -> dict[str, dict[str, str]]:
    if not is_sandbox_id(sandbox_id):
        raise SandboxError('sandbox id is not a conversation id (32 lowercase hex)')
    volumes: dict[str, dict[str, str]] = {}
    for mount in mounts:
        source: str = mount.host_path
        mode: str = mount.mode
        if _is_writable(mode):
            source = _per_sandbox_source(source, sandbox_id)
            if os.path.isabs(source):
                _prepare_workspace_dir(source)
        volumes[source] = {'bind': mount.container_path, 'mode': mode}
    return volumes


SECRET_KEY_FILE_VARIABLE = 'SANDPORT_SANDBOX_SECRET_KEY_FILE'


def sandbox_env(sandbox_id: str) -> dict[str, str]:
    """Environment every sandbox of this conversation gets, whichever container it is.

    ``OH_SECRET_KEY`` encrypts the secrets the agent server keeps in the conversation's
    workspace. Upstream falls back to the container's session key, which a recreated
    container does not share, so secrets were lost with the container. The key here is
    derived from one master key and the conversation id: stable across restarts and
    re-creation, different for every conversation (an agent that reads its own environment
    learns nothing about another conversation's key).
    """
    path = os.environ.get(SECRET_KEY_FILE_VARIABLE, '').strip()
    if not path:
        return {}
    with open(path, 'rb') as f:
        master = f.read().strip()
    if len(master) < 16:
        raise SandboxError(f'{SECRET_KEY_FILE_VARIABLE}: the key is shorter than 16 bytes')
    key = hmac.new(master, b'sandport-sandbox-secret-key:' + sandbox_id.encode(), hashlib.sha256)
    return {'OH_SECRET_KEY': key.hexdigest()}


def sandbox_network() -> str | None:
    return os.environ.get('SANDPORT_SANDBOX_NETWORK', '').strip() or None


# Start task id -> the sandbox that task created. Bounded: a start ends within minutes, and
# only a failed one reads its entry, so the oldest entries are the ones that ended well.
_STARTED_BY_TASK: OrderedDict[uuid.UUID, str] = OrderedDict()
_STARTED_BY_TASK_MAX = 4096


def started_for_task(task_id: uuid.UUID, sandbox_id: str) -> None:
    """Notes that the start task ``task_id`` created ``sandbox_id`` (not found it running)."""
    _STARTED_BY_TASK[task_id] = sandbox_id
    while len(_STARTED_BY_TASK) > _STARTED_BY_TASK_MAX:
        _STARTED_BY_TASK.popitem(last=False)


async def discard_failed_start(sandbox_service: Any, task_id: uuid.UUID) -> None:
    """The start task failed: remove the sandbox it created, if any. Never raises: the task's
    own error is the one to report."""
    sandbox_id = _STARTED_BY_TASK.pop(task_id, None)
    discard = getattr(sandbox_service, 'discard_failed_start', None)
    if sandbox_id is None or discard is None:
        return
    try:
        await discard(sandbox_id)
    except Exception:
        _logger.exception('could not remove sandbox %s after its failed start', sandbox_id)
