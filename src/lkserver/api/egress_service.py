"""Egress client: record or stream rooms, participants, tracks and web pages.

Every RPC of the `livekit.Egress` Twirp service, each with a token granting `roomRecord`
(reference server-api.md §2.6), method for method as the official `EgressService`.

```python
async with api.LiveKitAPI("http://127.0.0.1:7880", "devkey", "secret") as lk:
    info = await lk.egress.start_room_composite_egress(api.RoomCompositeEgressRequest(
        room_name="my-room",
        file_outputs=[api.EncodedFileOutput(filepath="my-room.mp4")]))
    await lk.egress.stop_egress(api.StopEgressRequest(egress_id=info.egress_id))
```
"""

from __future__ import annotations

from livekit.protocol.egress import (
    EgressInfo,
    ListEgressRequest,
    ListEgressResponse,
    ParticipantEgressRequest,
    RoomCompositeEgressRequest,
    StartEgressRequest,
    StopEgressRequest,
    TrackCompositeEgressRequest,
    TrackEgressRequest,
    UpdateLayoutRequest,
    UpdateStreamRequest,
    WebEgressRequest,
)

from ..auth import VideoGrants
from ._service import Service

SVC = "Egress"


class EgressService(Service):
    """Client for the Egress API; reach it as `LiveKitAPI(...).egress`."""

    def _record(self) -> dict[str, str]:
        return self._auth_header(VideoGrants(room_record=True))

    async def start_room_composite_egress(self, start: RoomCompositeEgressRequest) -> EgressInfo:
        """Start a composite recording of a room (all participants, laid out as a web page)."""
        return await self._client.request(SVC, "StartRoomCompositeEgress", start, self._record(), EgressInfo)

    async def start_web_egress(self, start: WebEgressRequest) -> EgressInfo:
        """Start a recording of a web page."""
        return await self._client.request(SVC, "StartWebEgress", start, self._record(), EgressInfo)

    async def start_participant_egress(self, start: ParticipantEgressRequest) -> EgressInfo:
        """Start a recording of one participant's tracks."""
        return await self._client.request(SVC, "StartParticipantEgress", start, self._record(), EgressInfo)

    async def start_track_composite_egress(self, start: TrackCompositeEgressRequest) -> EgressInfo:
        """Start a composite recording of one audio and one video track."""
        return await self._client.request(SVC, "StartTrackCompositeEgress", start, self._record(),
                                          EgressInfo)

    async def start_track_egress(self, start: TrackEgressRequest) -> EgressInfo:
        """Start a recording of a single track, without transcoding."""
        return await self._client.request(SVC, "StartTrackEgress", start, self._record(), EgressInfo)

    async def start_egress(self, start: StartEgressRequest) -> EgressInfo:
        """Start an egress; the request's source and outputs determine its type."""
        return await self._client.request(SVC, "StartEgress", start, self._record(), EgressInfo)

    async def update_layout(self, update: UpdateLayoutRequest) -> EgressInfo:
        """Change the layout of a room composite recording."""
        return await self._client.request(SVC, "UpdateLayout", update, self._record(), EgressInfo)

    async def update_stream(self, update: UpdateStreamRequest) -> EgressInfo:
        """Add or remove stream URLs of a RoomComposite, Web or Participant egress."""
        return await self._client.request(SVC, "UpdateStream", update, self._record(), EgressInfo)

    async def list_egress(self, list: ListEgressRequest) -> ListEgressResponse:
        """Active and recently completed egresses, filtered by `room_name`, `egress_id`, `active`."""
        return await self._client.request(SVC, "ListEgress", list, self._record(), ListEgressResponse)

    async def stop_egress(self, stop: StopEgressRequest) -> EgressInfo:
        """Stop an active egress."""
        return await self._client.request(SVC, "StopEgress", stop, self._record(), EgressInfo)
