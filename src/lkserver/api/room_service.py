"""RoomService client: rooms and the participants in them.

Every RPC of the `livekit.RoomService` Twirp service (14), method for method as the official
`RoomService` plus `perform_rpc`. Each call's token grants `roomCreate` (create, delete),
`roomList` (list) or `roomAdmin` on the request's room (everything else; move/forward also
name the `destinationRoom`), as reference server-api.md §2.6 requires.

```python
async with api.LiveKitAPI("http://127.0.0.1:7880", "devkey", "secret") as lk:
    room = await lk.room.create_room(api.CreateRoomRequest(name="my-room"))
    rooms = await lk.room.list_rooms(api.ListRoomsRequest())
```
"""

from __future__ import annotations

from uuid import uuid4

from livekit.protocol.models import ParticipantInfo, Room
from livekit.protocol.room import (
    CreateRoomRequest,
    DeleteRoomRequest,
    DeleteRoomResponse,
    ForwardParticipantRequest,
    ForwardParticipantResponse,
    ListParticipantsRequest,
    ListParticipantsResponse,
    ListRoomsRequest,
    ListRoomsResponse,
    MoveParticipantRequest,
    MoveParticipantResponse,
    MuteRoomTrackRequest,
    MuteRoomTrackResponse,
    PerformRpcRequest,
    PerformRpcResponse,
    RemoveParticipantResponse,
    RoomParticipantIdentity,
    SendDataRequest,
    SendDataResponse,
    UpdateParticipantRequest,
    UpdateRoomMetadataRequest,
    UpdateSubscriptionsRequest,
    UpdateSubscriptionsResponse,
)

from ..auth import VideoGrants
from ._service import Service

SVC = "RoomService"


def _admin(room: str) -> VideoGrants:
    return VideoGrants(room_admin=True, room=room)


class RoomService(Service):
    """Client for the RoomService API; reach it as `LiveKitAPI(...).room`."""

    async def create_room(self, create: CreateRoomRequest) -> Room:
        """Create a room, or return the existing one of that name unchanged."""
        return await self._client.request(SVC, "CreateRoom", create,
                                          self._auth_header(VideoGrants(room_create=True)), Room)

    async def list_rooms(self, list: ListRoomsRequest) -> ListRoomsResponse:
        """All rooms, or those named in `list.names`."""
        return await self._client.request(SVC, "ListRooms", list,
                                          self._auth_header(VideoGrants(room_list=True)), ListRoomsResponse)

    async def delete_room(self, delete: DeleteRoomRequest) -> DeleteRoomResponse:
        """Close a room: every participant is disconnected."""
        return await self._client.request(SVC, "DeleteRoom", delete,
                                          self._auth_header(VideoGrants(room_create=True)), DeleteRoomResponse)

    async def update_room_metadata(self, update: UpdateRoomMetadataRequest) -> Room:
        """Replace a room's metadata; returns the updated room."""
        return await self._client.request(SVC, "UpdateRoomMetadata", update,
                                          self._auth_header(_admin(update.room)), Room)

    async def list_participants(self, list: ListParticipantsRequest) -> ListParticipantsResponse:
        """The participants of a room."""
        return await self._client.request(SVC, "ListParticipants", list,
                                          self._auth_header(_admin(list.room)), ListParticipantsResponse)

    async def get_participant(self, get: RoomParticipantIdentity) -> ParticipantInfo:
        """One participant of a room, by identity."""
        return await self._client.request(SVC, "GetParticipant", get,
                                          self._auth_header(_admin(get.room)), ParticipantInfo)

    async def remove_participant(self, remove: RoomParticipantIdentity) -> RemoveParticipantResponse:
        """Disconnect a participant from a room."""
        return await self._client.request(SVC, "RemoveParticipant", remove,
                                          self._auth_header(_admin(remove.room)), RemoveParticipantResponse)

    async def forward_participant(self, forward: ForwardParticipantRequest) -> None:
        """Forward a participant and their tracks to another room as well (a LiveKit Cloud feature)."""
        grants = VideoGrants(room_admin=True, room=forward.room, destination_room=forward.destination_room)
        await self._client.request(SVC, "ForwardParticipant", forward, self._auth_header(grants),
                                   ForwardParticipantResponse)

    async def move_participant(self, move: MoveParticipantRequest) -> None:
        """Move a participant to another room (a LiveKit Cloud feature)."""
        grants = VideoGrants(room_admin=True, room=move.room, destination_room=move.destination_room)
        await self._client.request(SVC, "MoveParticipant", move, self._auth_header(grants),
                                   MoveParticipantResponse)

    async def mute_published_track(self, update: MuteRoomTrackRequest) -> MuteRoomTrackResponse:
        """Mute (or, if the server allows remote unmute, unmute) a participant's track."""
        return await self._client.request(SVC, "MutePublishedTrack", update,
                                          self._auth_header(_admin(update.room)), MuteRoomTrackResponse)

    async def update_participant(self, update: UpdateParticipantRequest) -> ParticipantInfo:
        """Change a participant's name, metadata, attributes or permissions."""
        return await self._client.request(SVC, "UpdateParticipant", update,
                                          self._auth_header(_admin(update.room)), ParticipantInfo)

    async def update_subscriptions(self, update: UpdateSubscriptionsRequest) -> UpdateSubscriptionsResponse:
        """Subscribe a participant to tracks, or unsubscribe it."""
        return await self._client.request(SVC, "UpdateSubscriptions", update,
                                          self._auth_header(_admin(update.room)), UpdateSubscriptionsResponse)

    async def send_data(self, send: SendDataRequest) -> SendDataResponse:
        """Send data to participants; a random nonce lets the server drop duplicates."""
        send.nonce = uuid4().bytes
        return await self._client.request(SVC, "SendData", send,
                                          self._auth_header(_admin(send.room)), SendDataResponse)

    async def perform_rpc(self, perform_rpc: PerformRpcRequest) -> PerformRpcResponse:
        """Call an RPC method registered by a participant and return its response."""
        return await self._client.request(SVC, "PerformRpc", perform_rpc,
                                          self._auth_header(_admin(perform_rpc.room)), PerformRpcResponse)
