"""On whose behalf a service instance acts.

Upstream services receive a ``UserContext``. Two kinds exist here:

* a user: a request authenticated by ``SandportUserAuth``, or an internal
  operation that upstream runs as a sandbox's owner
  (``SpecifyUserContext(owner)``, e.g. webhooks authenticated by the
  sandbox's session key);
* the app itself: upstream's ``ADMIN`` singleton, which upstream uses only in
  internal code paths (looking up a sandbox by its session key, setting a
  conversation's title) and never for a request.

Anything else (a context without a user id that is not ``ADMIN``, an invalid
user id) is refused: services fail closed instead of acting for nobody.
"""

from __future__ import annotations

from dataclasses import dataclass

from openhands.app_server.errors import AuthError
from openhands.app_server.user.specifiy_user_context import ADMIN
from openhands.app_server.user.user_context import UserContext

from sandport_openhands.identity import InvalidUserId, validate_user_id


@dataclass(frozen=True)
class Principal:
    """``user_id`` is None only for the app's own internal operations."""

    user_id: str | None

    @property
    def is_app(self) -> bool:
        return self.user_id is None

    def may_access(self, owner: str | None) -> bool:
        if self.user_id is None:
            return True
        return owner is not None and owner == self.user_id


APP = Principal(user_id=None)


async def principal_of(user_context: UserContext) -> Principal:
    if user_context is ADMIN:
        return APP
    user_id = await user_context.get_user_id()
    if user_id is None:
        raise AuthError('a user identity is required')
    try:
        return Principal(user_id=validate_user_id(user_id))
    except InvalidUserId:
        raise AuthError('invalid user identity') from None
