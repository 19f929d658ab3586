"""AgentDispatchService client: send agents into rooms explicitly.

Every RPC of the `livekit.AgentDispatchService` Twirp service, each with a token granting
`roomAdmin` for the request's room (reference server-api.md §2.6). The method names and their
plain-argument signatures (`delete_dispatch(dispatch_id, room_name)`, `list_dispatch(room_name)`,
`get_dispatch(dispatch_id, room_name)`) are the official `AgentDispatchService`'s.

```python
async with api.LiveKitAPI("http://127.0.0.1:7880", "devkey", "secret") as lk:
    d = await lk.agent_dispatch.create_dispatch(
        api.CreateAgentDispatchRequest(agent_name="support-bot", room="my-room", metadata="{}"))
    print([x.id for x in await lk.agent_dispatch.list_dispatch("my-room")])
```
"""

from __future__ import annotations

from livekit.protocol.agent_dispatch import (
    AgentDispatch,
    CreateAgentDispatchRequest,
    DeleteAgentDispatchRequest,
    ListAgentDispatchRequest,
    ListAgentDispatchResponse,
)

from ..auth import VideoGrants
from ._service import Service

SVC = "AgentDispatchService"


class AgentDispatchService(Service):
    """Manage agent dispatches (roomAdmin on the room); reach it as `LiveKitAPI(...).agent_dispatch`."""

    def _admin(self, room: str) -> dict[str, str]:
        return self._auth_header(VideoGrants(room_admin=True, room=room))

    async def create_dispatch(self, req: CreateAgentDispatchRequest) -> AgentDispatch:
        """Dispatch the agent named `req.agent_name` (registered with that name) to `req.room`."""
        return await self._client.request(SVC, "CreateDispatch", req, self._admin(req.room), AgentDispatch)

    async def delete_dispatch(self, dispatch_id: str, room_name: str) -> AgentDispatch:
        """Delete a dispatch; its agent jobs are ended. Returns the deleted dispatch."""
        return await self._client.request(
            SVC, "DeleteDispatch", DeleteAgentDispatchRequest(dispatch_id=dispatch_id, room=room_name),
            self._admin(room_name), AgentDispatch)

    async def list_dispatch(self, room_name: str) -> list[AgentDispatch]:
        """Every dispatch of a room."""
        res = await self._client.request(SVC, "ListDispatch", ListAgentDispatchRequest(room=room_name),
                                         self._admin(room_name), ListAgentDispatchResponse)
        return list(res.agent_dispatches)

    async def get_dispatch(self, dispatch_id: str, room_name: str) -> AgentDispatch | None:
        """One dispatch of a room by id, or None (a ListDispatch filtered by `dispatch_id`)."""
        res = await self._client.request(
            SVC, "ListDispatch", ListAgentDispatchRequest(dispatch_id=dispatch_id, room=room_name),
            self._admin(room_name), ListAgentDispatchResponse)
        return res.agent_dispatches[0] if res.agent_dispatches else None
