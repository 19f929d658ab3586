"""What a service handler knows about the request it serves: who called, with which grants."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ..auth import Claims, VideoGrants, SIPGrants
from ..twirp.errors import permission_denied


@dataclass
class RequestContext:
    claims: Claims | None = None
    api_key: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def video(self) -> VideoGrants:
        return self.claims.video if self.claims and self.claims.video else _NO_VIDEO

    @property
    def sip(self) -> SIPGrants:
        return self.claims.sip if self.claims and self.claims.sip else _NO_SIP

    # Permission predicates of LiveKit's services (livekit pkg/service/auth.go). A failure is
    # `unauthenticated` "permissions denied", as LiveKit answers.

    def require_create(self) -> None:
        if not self.video.room_create:
            raise permission_denied()

    def require_list(self) -> None:
        if not self.video.room_list:
            raise permission_denied()

    def require_record(self) -> None:
        if not self.video.room_record:
            raise permission_denied()

    def require_admin(self, room: str) -> None:
        """roomAdmin for exactly this room; an empty `room` grant is not a wildcard."""
        v = self.video
        if not v.room_admin or v.room != room:
            raise permission_denied()

    def require_destination(self, room: str, destination: str) -> None:
        self.require_admin(room)
        if self.video.destination_room != destination:
            raise permission_denied()

    def require_ingress_admin(self) -> None:
        if not self.video.ingress_admin:
            raise permission_denied()

    def require_sip_admin(self) -> None:
        if not self.sip.admin:
            raise permission_denied()

    def require_sip_call(self) -> None:
        if not self.sip.call:
            raise permission_denied()


_NO_VIDEO = VideoGrants(can_publish=False, can_subscribe=False, can_publish_data=False)
_NO_SIP = SIPGrants()
