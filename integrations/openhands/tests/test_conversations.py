"""Conversation metadata is per user: no listing, reading, resuming or deleting across users."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from sandport_openhands.storage import LocalDirStore, StorageError


def _info(conversation_id: UUID, owner: str | None = None, **values):
    from openhands.app_server.app_conversation.app_conversation_models import (
        AppConversationInfo,
    )

    return AppConversationInfo(
        id=conversation_id,
        created_by_user_id=owner,
        sandbox_id=f'oh-agent-server-{conversation_id.hex}',
        **values,
    )


def _service(store: LocalDirStore, user_id: str | None):
    from sandport_openhands.conversations import UserScopedAppConversationInfoService
    from sandport_openhands.principal import Principal

    return UserScopedAppConversationInfoService(store=store, principal=Principal(user_id))


async def test_users_see_only_their_own_conversations(patched_tree, user_data) -> None:
    alice, bob = _service(user_data, 'alice'), _service(user_data, 'bob')
    cid = uuid4()
    await alice.save_app_conversation_info(_info(cid, title='alice private'))

    page = await alice.search_app_conversation_info()
    assert [i.id for i in page.items] == [cid]
    assert page.items[0].created_by_user_id == 'alice'
    assert await alice.count_app_conversation_info() == 1

    # bob can neither list, count, read, find by sandbox, resume (needs get) nor delete it
    assert (await bob.search_app_conversation_info()).items == []
    assert await bob.count_app_conversation_info() == 0
    assert await bob.get_app_conversation_info(cid) is None
    assert await bob.batch_get_app_conversation_info([cid]) == [None]
    assert await bob.count_conversations_by_sandbox_id(f'oh-agent-server-{cid.hex}') == 0
    assert await bob.delete_app_conversation_info(cid) is False
    await bob.update_execution_status(cid, 'deleting')
    assert (await alice.get_app_conversation_info(cid)) is not None

    assert (user_data.root / f'users/alice/conversations/{cid.hex}/metadata.json').is_file()
    assert await alice.delete_app_conversation_info(cid) is True
    assert await alice.get_app_conversation_info(cid) is None


async def test_a_conversation_id_cannot_be_taken_over(patched_tree, user_data) -> None:
    from openhands.app_server.errors import PermissionsError

    alice, bob = _service(user_data, 'alice'), _service(user_data, 'bob')
    cid = uuid4()
    await alice.save_app_conversation_info(_info(cid))
    with pytest.raises(PermissionsError):
        await bob.save_app_conversation_info(_info(cid))
    with pytest.raises(PermissionsError):
        await bob.save_app_conversation_info(_info(uuid4(), owner='alice'))
    assert await bob.count_app_conversation_info() == 0


async def test_app_context_finds_the_owner_but_cannot_create_ownerless(
    patched_tree, user_data
) -> None:
    from openhands.app_server.errors import PermissionsError

    cid = uuid4()
    await _service(user_data, 'alice').save_app_conversation_info(_info(cid, title='t'))
    app = _service(user_data, None)
    found = await app.get_app_conversation_info(cid)
    assert found is not None and found.created_by_user_id == 'alice'

    # e.g. the webhook stub for a sandbox without an owner
    with pytest.raises(PermissionsError):
        await app.save_app_conversation_info(_info(uuid4(), owner=None))
    # the app may save on the owner's behalf (title callback)
    found.title = 'renamed'
    await app.save_app_conversation_info(found)
    again = await _service(user_data, 'alice').get_app_conversation_info(cid)
    assert again is not None and again.title == 'renamed'


async def test_unreadable_metadata_is_an_error_not_empty(patched_tree, user_data) -> None:
    alice = _service(user_data, 'alice')
    cid = uuid4()
    await alice.save_app_conversation_info(_info(cid))
    path = user_data.root / f'users/alice/conversations/{cid.hex}/metadata.json'
    path.write_text('{"format": 1, "owner": "alice", "info": {"id": ')

    with pytest.raises(StorageError):
        await alice.get_app_conversation_info(cid)
    with pytest.raises(StorageError):
        await alice.search_app_conversation_info()
    with pytest.raises(StorageError):
        await alice.count_app_conversation_info()

    # a record moved into another user's directory is refused, not adopted
    other = user_data.root / f'users/bob/conversations/{cid.hex}'
    other.mkdir(parents=True)
    (other / 'metadata.json').write_text(
        '{"format": 1, "owner": "alice", "execution_status": null, "info": {}}'
    )
    with pytest.raises(StorageError):
        await _service(user_data, 'bob').get_app_conversation_info(cid)


async def test_principal_of_upstream_contexts(patched_tree) -> None:
    from openhands.app_server.errors import AuthError
    from openhands.app_server.user.auth_user_context import AuthUserContext
    from openhands.app_server.user.specifiy_user_context import ADMIN, SpecifyUserContext

    from sandport_openhands.auth import SandportUserAuth
    from sandport_openhands.principal import APP, Principal, principal_of

    assert await principal_of(ADMIN) == APP
    assert await principal_of(SpecifyUserContext('alice')) == Principal('alice')
    context = AuthUserContext(user_auth=SandportUserAuth(user_id='bob'))
    assert await principal_of(context) == Principal('bob')
    # a context without a user that is not the app's own ADMIN: refused
    with pytest.raises(AuthError):
        await principal_of(SpecifyUserContext(user_id=None))
    with pytest.raises(AuthError):
        await principal_of(SpecifyUserContext('../alice'))


async def test_injector_scopes_the_service_to_the_request_user(patched_tree, user_data) -> None:
    from openhands.app_server.config import get_global_config
    from openhands.app_server.services.injector import InjectorState
    from openhands.app_server.user.auth_user_context import AuthUserContext
    from openhands.app_server.user.specifiy_user_context import USER_CONTEXT_ATTR

    from sandport_openhands.auth import SandportUserAuth
    from sandport_openhands.conversations import (
        UserScopedAppConversationInfoService,
        UserScopedAppConversationInfoServiceInjector,
    )

    injector = get_global_config().app_conversation_info
    assert isinstance(injector, UserScopedAppConversationInfoServiceInjector)

    state = InjectorState()
    setattr(state, USER_CONTEXT_ATTR, AuthUserContext(user_auth=SandportUserAuth(user_id='alice')))
    async with injector.context(state) as service:
        assert isinstance(service, UserScopedAppConversationInfoService)
        assert service.principal.user_id == 'alice'


async def test_sub_conversations_and_paging(patched_tree, user_data) -> None:
    alice = _service(user_data, 'alice')
    parent = uuid4()
    await alice.save_app_conversation_info(_info(parent, title='parent'))
    children = [uuid4() for _ in range(3)]
    for child in children:
        await alice.save_app_conversation_info(
            _info(child, parent_conversation_id=parent, title='child')
        )
    top = await alice.search_app_conversation_info()
    assert [i.id for i in top.items] == [parent]
    assert sorted(top.items[0].sub_conversation_ids) == sorted(children)
    assert set(await alice.get_sub_conversation_ids(parent)) == set(children)

    first = await alice.search_app_conversation_info(include_sub_conversations=True, limit=3)
    assert len(first.items) == 3 and first.next_page_id == '3'
    rest = await alice.search_app_conversation_info(
        include_sub_conversations=True, limit=3, page_id=first.next_page_id
    )
    assert len(rest.items) == 1 and rest.next_page_id is None


async def test_a_conversation_id_belongs_to_its_first_owner(patched_tree, tmp_path) -> None:
    from uuid import uuid4

    from fastapi import HTTPException

    from sandport_openhands.conversations import claim_conversation_id, owner_key
    from sandport_openhands.storage import LocalDirStore

    store = LocalDirStore(tmp_path)
    conversation = uuid4()
    await claim_conversation_id('alice', conversation, store)
    # alice again: a retry or a resumed sandbox
    await claim_conversation_id('alice', conversation, store)
    with pytest.raises(HTTPException) as refused:
        await claim_conversation_id('bob', conversation, store)
    assert refused.value.status_code == 409
    assert store.read(owner_key(conversation)) == b'alice'


def test_creating_a_record_twice_keeps_the_first(tmp_path) -> None:
    from sandport_openhands.storage import LocalDirStore

    store = LocalDirStore(tmp_path)
    assert store.create('conversation-owners/x', b'alice')
    assert not store.create('conversation-owners/x', b'bob')
    assert store.read('conversation-owners/x') == b'alice'
    assert not [p for p in (tmp_path / 'conversation-owners').iterdir() if p.name.startswith('.tmp')]
