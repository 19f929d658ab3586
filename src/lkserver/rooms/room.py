"""A live room: its Room record, its participants and its close rule.

Reproduces LiveKit's room lifecycle (livekit pkg/rtc/room.go, pkg/service/roommanager.go;
reference server-api.md §4): dependent participants (agents, recorders) do not keep a room alive
or count toward num_participants; an idle room closes after departure_timeout once somebody has
come and gone, otherwise after empty_timeout from its creation. Times are whole seconds.
"""

from __future__ import annotations

from livekit.protocol.models import Room as RoomInfo
from livekit.protocol.room import RoomConfiguration

from .participant import Participant


class Room:
    def __init__(self, info: RoomInfo, internal: RoomConfiguration | None = None,
                 last_left_at: float | None = None) -> None:
        self.info = info
        self.internal = internal or RoomConfiguration()
        self.participants: dict[str, Participant] = {}
        # set when a non-dependent participant leaves; restored from the store after a restart
        self.last_left_at = last_left_at
        self.closed = False

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def sid(self) -> str:
        return self.info.sid

    def non_dependent_count(self) -> int:
        return sum(1 for p in self.participants.values() if not p.is_dependent)

    def to_proto(self, out: RoomInfo | None = None) -> RoomInfo:
        """The Room as the API and webhooks show it, with live counters.

        Written into `out` when given (say, `response.rooms.add()`: one copy instead of two)."""
        if out is None:
            out = RoomInfo()
        out.CopyFrom(self.info)
        participants = publishers = 0
        for p in self.participants.values():
            if not p.is_dependent:
                participants += 1
                publishers += p.is_publisher
        out.num_participants = participants
        out.num_publishers = publishers
        return out

    def should_close(self, now: float) -> bool:
        if self.closed or self.non_dependent_count() > 0:
            return False
        if self.last_left_at is not None and self.info.departure_timeout >= 0:
            if int(now) - int(self.last_left_at) >= self.info.departure_timeout:
                return True
            return False
        return int(now) - self.info.creation_time >= self.info.empty_timeout
