"""Conversation metadata stored per user.

Replaces upstream's SQL ``conversation_metadata`` table (which has no owner
column in the open-source app) through the ``AppServerConfig.app_conversation_info``
injector. Each conversation is one record,
``users/{user_id}/conversations/{conversation_id_hex}/metadata.json``, in the
store named by ``SANDPORT_USER_DATA``.

* A user sees, counts, updates and deletes only records under their own
  ``users/{user_id}/``: another user's conversation id is simply "not found".
* A conversation id belongs to the first user who saved it; another user's
  save of the same id is refused (403).
* The app's own internal operations (upstream's ``ADMIN`` context) find a
  conversation's owner by looking under every user; they cannot create a
  conversation without an owner.
* A record that cannot be read raises ``StorageError``; it is never skipped or
  reported as missing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, AsyncGenerator, Callable, ClassVar
from uuid import UUID

from fastapi import HTTPException, Request
from pydantic import ValidationError

from openhands.app_server.app_conversation.app_conversation_info_service import (
    AppConversationInfoService,
    AppConversationInfoServiceInjector,
)
from openhands.app_server.app_conversation.app_conversation_models import (
    AppConversationInfo,
    AppConversationInfoPage,
    AppConversationSortOrder,
)
from openhands.app_server.errors import PermissionsError
from openhands.app_server.services.injector import InjectorState
from openhands.sdk import ConversationStats
from openhands.sdk.event import ConversationStateUpdateEvent

from sandport_openhands.identity import is_valid_user_id, validate_user_id
from sandport_openhands.principal import Principal, principal_of
from sandport_openhands.storage import (
    RecordNotFound,
    StorageError,
    UserDataStore,
    default_store,
    user_prefix,
)

_logger = logging.getLogger(__name__)

RECORD_FORMAT = 1
_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


def _lock_for(key: str) -> asyncio.Lock:
    lock = _locks.get(key)
    if lock is None:
        lock = asyncio.Lock()
        _locks[key] = lock
    return lock


def conversation_dir(user_id: str, conversation_id: UUID) -> str:
    return f'{user_prefix(user_id)}/conversations/{conversation_id.hex}'


def metadata_key(user_id: str, conversation_id: UUID) -> str:
    return f'{conversation_dir(user_id, conversation_id)}/metadata.json'


def owner_key(conversation_id: UUID) -> str:
    """Where a conversation id's first owner is recorded, for every user to check against."""
    return f'conversation-owners/{conversation_id.hex}'


async def claim_conversation_id(
    user_id: str | None, conversation_id: UUID, store: UserDataStore | None = None
) -> None:
    """Binds a conversation id to the first user who starts a conversation with it.

    Called before anything is created for a new conversation: the same user may start it
    again (a retry, a resumed sandbox), anybody else is refused, so no second user can get
    a container labelled with somebody else's conversation id (409).
    """
    if not is_valid_user_id(user_id):
        raise PermissionsError('refusing to start a conversation without a known owner')
    assert user_id is not None
    store = store or default_store()
    key = owner_key(conversation_id)
    if await asyncio.to_thread(store.create, key, user_id.encode()):
        return
    owner = (await asyncio.to_thread(store.read, key)).decode()
    if owner != user_id:
        _logger.warning(
            'refused conversation id %s for %s: it belongs to another user', conversation_id.hex, user_id
        )
        raise HTTPException(409, 'conversation id belongs to another user')


async def conversation_owner(
    conversation_id: UUID, store: UserDataStore | None = None
) -> str | None:
    """The user a conversation id was claimed for, or None when nobody claimed it."""
    store = store or default_store()
    try:
        owner = (await asyncio.to_thread(store.read, owner_key(conversation_id))).decode()
    except RecordNotFound:
        return None
    return owner if is_valid_user_id(owner) else None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# Sort order → (key, descending).
_ORDERINGS: dict[AppConversationSortOrder, tuple[Callable[[AppConversationInfo], Any], bool]] = {
    AppConversationSortOrder.CREATED_AT: (lambda i: _aware(i.created_at), False),
    AppConversationSortOrder.CREATED_AT_DESC: (lambda i: _aware(i.created_at), True),
    AppConversationSortOrder.UPDATED_AT: (lambda i: _aware(i.updated_at), False),
    AppConversationSortOrder.UPDATED_AT_DESC: (lambda i: _aware(i.updated_at), True),
    AppConversationSortOrder.TITLE: (lambda i: i.title or '', False),
    AppConversationSortOrder.TITLE_DESC: (lambda i: i.title or '', True),
}


@dataclass
class _Record:
    owner: str
    info: AppConversationInfo
    execution_status: str | None = None

    def dump(self) -> bytes:
        payload = {
            'format': RECORD_FORMAT,
            'owner': self.owner,
            'execution_status': self.execution_status,
            'info': json.loads(self.info.model_dump_json()),
        }
        return json.dumps(payload, indent=1, sort_keys=True).encode('utf-8')

    @classmethod
    def parse(cls, key: str, data: bytes, expected_owner: str) -> _Record:
        try:
            payload = json.loads(data)
            if payload.get('format') != RECORD_FORMAT:
                raise ValueError(f'unknown record format {payload.get("format")!r}')
            owner = payload['owner']
            if owner != expected_owner:
                raise ValueError('owner field does not match the record location')
            info = AppConversationInfo.model_validate(payload['info'])
        except (ValueError, KeyError, TypeError, ValidationError) as e:
            raise StorageError(f'{key} is unreadable: {e}') from e
        info.created_by_user_id = owner
        return cls(owner=owner, info=info, execution_status=payload.get('execution_status'))


@dataclass
class UserScopedAppConversationInfoService(AppConversationInfoService):
    store: UserDataStore
    principal: Principal
    # upstream deletes conversations only from services it knows to delete transactionally;
    # one conversation here is one record tree, removed at once (patch 42)
    sandport_transactional_delete: ClassVar[bool] = True

    # -- storage helpers (run in a thread: the store is blocking) --

    async def _io(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def _read(self, owner: str, conversation_id: UUID) -> _Record | None:
        key = metadata_key(owner, conversation_id)
        try:
            data = await self._io(self.store.read, key)
        except RecordNotFound:
            return None
        return _Record.parse(key, data, owner)

    async def _write(self, record: _Record) -> None:
        await self._io(
            self.store.write, metadata_key(record.owner, record.info.id), record.dump()
        )

    async def _all_users(self) -> list[str]:
        names = await self._io(self.store.list, 'users')
        return [n for n in names if is_valid_user_id(n)]

    async def _owners_of(self, conversation_id: UUID) -> list[str]:
        owners = []
        for user in await self._all_users():
            if await self._io(self.store.exists, metadata_key(user, conversation_id)):
                owners.append(user)
        return owners

    async def _find(self, conversation_id: UUID) -> _Record | None:
        """The record visible to the principal, or None."""
        if self.principal.user_id is not None:
            return await self._read(self.principal.user_id, conversation_id)
        owners = await self._owners_of(conversation_id)
        if not owners:
            return None
        if len(owners) > 1:
            raise StorageError(
                f'conversation {conversation_id.hex} is stored for several users'
            )
        return await self._read(owners[0], conversation_id)

    async def _visible_records(self) -> list[_Record]:
        users = (
            [self.principal.user_id]
            if self.principal.user_id is not None
            else await self._all_users()
        )
        records: list[_Record] = []
        for user in users:
            names = await self._io(self.store.list, f'{user_prefix(user)}/conversations')
            for name in names:
                try:
                    conversation_id = UUID(hex=name)
                except ValueError:
                    continue
                if conversation_id.hex != name:
                    continue
                record = await self._read(user, conversation_id)
                if record is not None:
                    records.append(record)
        return records

    @staticmethod
    def _matches(
        info: AppConversationInfo,
        title__contains: str | None,
        created_at__gte: datetime | None,
        created_at__lt: datetime | None,
        updated_at__gte: datetime | None,
        updated_at__lt: datetime | None,
        sandbox_id__eq: str | None,
    ) -> bool:
        if title__contains is not None and (
            info.title is None or title__contains.lower() not in info.title.lower()
        ):
            return False
        created = _aware(info.created_at)
        updated = _aware(info.updated_at)
        if created_at__gte is not None and created < _aware(created_at__gte):
            return False
        if created_at__lt is not None and created >= _aware(created_at__lt):
            return False
        if updated_at__gte is not None and updated < _aware(updated_at__gte):
            return False
        if updated_at__lt is not None and updated >= _aware(updated_at__lt):
            return False
        if sandbox_id__eq is not None and info.sandbox_id != sandbox_id__eq:
            return False
        return True

    # -- reads --

    async def search_app_conversation_info(
        self,
        title__contains: str | None = None,
        created_at__gte: datetime | None = None,
        created_at__lt: datetime | None = None,
        updated_at__gte: datetime | None = None,
        updated_at__lt: datetime | None = None,
        sandbox_id__eq: str | None = None,
        sort_order: AppConversationSortOrder = AppConversationSortOrder.CREATED_AT_DESC,
        page_id: str | None = None,
        limit: int = 100,
        include_sub_conversations: bool = False,
    ) -> AppConversationInfoPage:
        records = await self._visible_records()
        items = [
            r.info
            for r in records
            if (include_sub_conversations or r.info.parent_conversation_id is None)
            and self._matches(
                r.info,
                title__contains,
                created_at__gte,
                created_at__lt,
                updated_at__gte,
                updated_at__lt,
                sandbox_id__eq,
            )
        ]
        by_parent: dict[UUID, list[UUID]] = {}
        for r in records:
            if r.info.parent_conversation_id is not None:
                by_parent.setdefault(r.info.parent_conversation_id, []).append(r.info.id)

        ordering = _ORDERINGS.get(sort_order)
        if ordering is not None:
            key, reverse = ordering
            items.sort(key=key, reverse=reverse)

        try:
            offset = max(int(page_id), 0) if page_id is not None else 0
        except ValueError:
            offset = 0
        page = items[offset : offset + limit]
        for info in page:
            info.sub_conversation_ids = by_parent.get(info.id, [])
        next_page_id = str(offset + limit) if offset + limit < len(items) else None
        return AppConversationInfoPage(items=page, next_page_id=next_page_id)

    async def count_app_conversation_info(
        self,
        title__contains: str | None = None,
        created_at__gte: datetime | None = None,
        created_at__lt: datetime | None = None,
        updated_at__gte: datetime | None = None,
        updated_at__lt: datetime | None = None,
        sandbox_id__eq: str | None = None,
    ) -> int:
        records = await self._visible_records()
        return sum(
            1
            for r in records
            if self._matches(
                r.info,
                title__contains,
                created_at__gte,
                created_at__lt,
                updated_at__gte,
                updated_at__lt,
                sandbox_id__eq,
            )
        )

    async def get_app_conversation_info(
        self, conversation_id: UUID
    ) -> AppConversationInfo | None:
        record = await self._find(conversation_id)
        if record is None:
            return None
        record.info.sub_conversation_ids = await self.get_sub_conversation_ids(
            conversation_id
        )
        return record.info

    async def get_sub_conversation_ids(
        self, parent_conversation_id: UUID
    ) -> list[UUID]:
        return [
            r.info.id
            for r in await self._visible_records()
            if r.info.parent_conversation_id == parent_conversation_id
        ]

    async def count_conversations_by_sandbox_id(self, sandbox_id: str) -> int:
        return sum(
            1 for r in await self._visible_records() if r.info.sandbox_id == sandbox_id
        )

    # -- writes --

    def _owner_for_save(self, info: AppConversationInfo) -> str:
        if self.principal.user_id is not None:
            if info.created_by_user_id not in (None, self.principal.user_id):
                raise PermissionsError('conversation belongs to another user')
            return self.principal.user_id
        if info.created_by_user_id is None:
            raise PermissionsError('a conversation needs an owner')
        return validate_user_id(info.created_by_user_id)

    async def save_app_conversation_info(
        self, info: AppConversationInfo
    ) -> AppConversationInfo:
        owner = self._owner_for_save(info)
        async with _lock_for(info.id.hex):
            existing = await self._read(owner, info.id)
            if existing is None:
                others = [u for u in await self._owners_of(info.id) if u != owner]
                if others:
                    raise PermissionsError('conversation belongs to another user')
            stored = info.model_copy(deep=True)
            stored.created_by_user_id = owner
            stored.sub_conversation_ids = []
            await self._write(
                _Record(
                    owner=owner,
                    info=stored,
                    execution_status=existing.execution_status if existing else None,
                )
            )
        info.created_by_user_id = owner
        return info

    async def delete_app_conversation_info(self, conversation_id: UUID) -> bool:
        record = await self._find(conversation_id)
        if record is None:
            return False
        async with _lock_for(conversation_id.hex):
            deleted: bool = await self._io(
                self.store.delete_tree, conversation_dir(record.owner, conversation_id)
            )
        return deleted

    async def _update(self, conversation_id: UUID, change: Any) -> None:
        async with _lock_for(conversation_id.hex):
            record = await self._find(conversation_id)
            if record is None:
                _logger.debug(
                    'conversation %s not found or not accessible; update skipped',
                    conversation_id,
                )
                return
            change(record)
            record.info.updated_at = datetime.now(UTC)
            record.info.sub_conversation_ids = []
            await self._write(record)

    async def process_stats_event(
        self,
        event: ConversationStateUpdateEvent,
        conversation_id: UUID,
    ) -> None:
        # Statistics are best effort, as upstream's SQL service treats them.
        try:
            value = event.value
            stats: ConversationStats | None = None
            if isinstance(value, ConversationStats):
                stats = value
            elif isinstance(value, dict):
                stats = ConversationStats.model_validate(value)
            elif hasattr(value, 'usage_to_metrics'):
                stats = ConversationStats.model_validate(
                    {'usage_to_metrics': value.usage_to_metrics}
                )
            if stats is None:
                return
            agent_metrics = stats.usage_to_metrics.get('agent')
            if agent_metrics is None:
                return
            snapshot = agent_metrics.get_snapshot()

            def change(record: _Record) -> None:
                record.info.metrics = snapshot

            await self._update(conversation_id, change)
        except Exception:
            _logger.exception(
                'error updating statistics of conversation %s', conversation_id
            )

    async def update_execution_status(
        self,
        conversation_id: UUID,
        execution_status: str,
    ) -> None:
        def change(record: _Record) -> None:
            record.execution_status = execution_status

        await self._update(conversation_id, change)


class UserScopedAppConversationInfoServiceInjector(AppConversationInfoServiceInjector):
    async def inject(
        self, state: InjectorState, request: Request | None = None
    ) -> AsyncGenerator[AppConversationInfoService, None]:
        # Inline import, as upstream's injectors do, to avoid a circular import
        from openhands.app_server.config import get_user_context

        async with get_user_context(state, request) as user_context:
            principal = await principal_of(user_context)
            yield UserScopedAppConversationInfoService(
                store=default_store(), principal=principal
            )
