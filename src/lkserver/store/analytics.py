"""Typed records of the sessions analytics store, over any `KV` backend (SQLite or Redis).

A session is one room lifetime (its `RM_` sid); a participant session is one connection of a
participant (its `PA_` sid). Layout, one namespace per line (Redis: one hash each):

    analytics_days                     day (YYYY-MM-DD, UTC) -> ""   days that have sessions
    analytics_sessions:<day>           room sid -> session record    sessions created that day
    analytics_session_day              room sid -> day               find a session by id
    analytics_open                     room sid -> day               sessions not ended yet
    analytics_participants:<room sid>  record key -> participant record

Listing a date range reads only the namespaces of its days, so a query costs what its range
holds, not what the store holds. Records are compact JSON (lkserver's own shapes; LiveKit has
no protobuf for them).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

NS_DAYS = "analytics_days"
NS_SESSIONS = "analytics_sessions:"  # + day
NS_SESSION_DAY = "analytics_session_day"
NS_OPEN = "analytics_open"
NS_PARTICIPANTS = "analytics_participants:"  # + room sid

# published sources, as bits of ParticipantRecord.sources
CAMERA, MICROPHONE, SCREEN_SHARE, SCREEN_SHARE_AUDIO = 1, 2, 4, 8

# SessionRecord.egress, as the Analytics API reports it
EGRESS_NEVER, EGRESS_ACTIVE, EGRESS_ENDED = 0, 1, 2


@dataclass
class SessionRecord:
    sid: str
    room: str
    created_ms: int
    ended_ms: int = 0  # 0 while the room lives
    last_active_ms: int = 0
    egress: int = EGRESS_NEVER
    egress_ids: list[str] = field(default_factory=list)  # egresses active now
    num_participants: int = 0  # distinct identities that joined
    num_active: int = 0  # participant sessions connected now
    bytes_in: int = 0  # media bytes participants sent to the server
    bytes_out: int = 0  # media bytes the server sent to participants

    @property
    def day(self) -> str:
        return day_of(self.created_ms)


@dataclass
class ParticipantRecord:
    key: str  # the PA_ sid (a sid seen again in the same session gets "<sid>.<n>")
    sid: str
    identity: str
    name: str = ""
    joined_ms: int = 0
    left_ms: int = 0  # 0 while connected
    sources: int = 0  # CAMERA | MICROPHONE | ...
    bytes_in: int = 0
    bytes_out: int = 0
    last_seen_ms: int = 0  # last time it was seen connected (joined, sampled)


def day_of(ms: int) -> str:
    """The UTC calendar day of a time in milliseconds, as YYYY-MM-DD."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d")


def _encode(record: Any) -> bytes:
    return json.dumps(asdict(record), separators=(",", ":"), ensure_ascii=False).encode()


def _decode(cls: type, data: bytes) -> Any:
    raw = json.loads(data)
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in raw.items() if k in known})


class AnalyticsStore:
    """Sessions and participant sessions in one KV backend (the server's store)."""

    def __init__(self, kv: Any) -> None:
        self.kv = kv

    async def write(self, sessions: Iterable[SessionRecord],
                    participants: Iterable[tuple[str, ParticipantRecord]]) -> None:
        """Store sessions and (room sid, participant) records, with their indexes, in one batch."""
        items: list[tuple[str, str, bytes]] = []
        ended: list[str] = []
        for s in sessions:
            day = s.day
            items.append((NS_SESSIONS + day, s.sid, _encode(s)))
            items.append((NS_SESSION_DAY, s.sid, day.encode()))
            items.append((NS_DAYS, day, b""))
            if s.ended_ms:
                ended.append(s.sid)
            else:
                items.append((NS_OPEN, s.sid, day.encode()))
        for room_sid, p in participants:
            items.append((NS_PARTICIPANTS + room_sid, p.key, _encode(p)))
        if items:
            await self.kv.put_many(items)
        for sid in ended:
            await self.kv.delete(NS_OPEN, sid)

    async def get_session(self, sid: str) -> SessionRecord | None:
        day = await self.kv.get(NS_SESSION_DAY, sid)
        if day is None:
            return None
        data = await self.kv.get(NS_SESSIONS + day.decode(), sid)
        return None if data is None else _decode(SessionRecord, data)

    async def days(self) -> list[str]:
        return [day for day, _ in await self.kv.items(NS_DAYS)]

    async def sessions_of_day(self, day: str) -> list[SessionRecord]:
        return [_decode(SessionRecord, v) for _, v in await self.kv.items(NS_SESSIONS + day)]

    async def open_sessions(self) -> list[SessionRecord]:
        out = []
        for sid, _ in await self.kv.items(NS_OPEN):
            s = await self.get_session(sid)
            if s is not None:
                out.append(s)
        return out

    async def participants(self, room_sid: str) -> list[ParticipantRecord]:
        return [_decode(ParticipantRecord, v) for _, v in await self.kv.items(NS_PARTICIPANTS + room_sid)]

    async def delete_session(self, s: SessionRecord) -> None:
        for key, _ in await self.kv.items(NS_PARTICIPANTS + s.sid):
            await self.kv.delete(NS_PARTICIPANTS + s.sid, key)
        await self.kv.delete(NS_OPEN, s.sid)
        await self.kv.delete(NS_SESSION_DAY, s.sid)
        await self.kv.delete(NS_SESSIONS + s.day, s.sid)

    async def forget_day_if_empty(self, day: str) -> bool:
        if await self.kv.items(NS_SESSIONS + day):
            return False
        await self.kv.delete(NS_DAYS, day)
        return True
