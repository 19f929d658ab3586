"""The Analytics API's answers, as LiveKit Cloud serves them (docs "Analytics API";
reference media-services.md §4), computed from the session records.

List: `{sessions: [{sessionId, roomName, createdAt, lastActive, bandwidthIn, bandwidthOut, egress,
numParticipants, numActiveParticipants}]}` (plus `endedAt` once a session ended, which `lk
analytics session list` reads). Details: `{roomId, roomName, bandwidth, startTime, endTime,
numParticipants, connectionMinutes, participants: [{participantIdentity, participantName, roomId,
joinedAt, leftAt, publishedSources{cameraTrack, microphoneTrack, screenShareTrack,
screenShareAudio}, sessions: [{sessionId, participantId, joinedAt, leftAt}]}]}`. Byte counts and
minutes are int64s, so strings, as protojson writes them; times are protobuf Timestamp JSON
(RFC 3339, UTC); a time that has not happened yet (a live session's end) is left out, as
protojson leaves out an unset Timestamp. Participant sessions carry their `PA_` sid as both
`sessionId` (the docs) and `participantId` (what Cloud actually sends).

Paging is stable: sessions are ordered newest first by (creation time, sid), a total order that
never changes for a stored session, and a page is a slice of it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from ..store.analytics import (
    CAMERA,
    MICROPHONE,
    SCREEN_SHARE,
    SCREEN_SHARE_AUDIO,
    AnalyticsStore,
    ParticipantRecord,
    SessionRecord,
)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class BadRequest(ValueError):
    """A query parameter the API refuses (HTTP 400); the message says which and why."""


@dataclass(frozen=True)
class ListQuery:
    start: str  # YYYY-MM-DD, inclusive
    end: str | None  # YYYY-MM-DD, inclusive; None: no upper bound
    limit: int
    page: int


def _int_param(params: Mapping[str, str], name: str, default: int, low: int, high: int | None) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[+-]?\d{1,18}", raw.strip()):
        raise BadRequest(f"{name} must be an integer, got {raw[:40]!r}")
    value = int(raw)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BadRequest(f"{name} must be {bound}, got {value}")
    return value


def _date_param(params: Mapping[str, str], name: str) -> dt.date | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        if not DATE.match(raw):
            raise ValueError
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a date as YYYY-MM-DD, got {raw[:40]!r}") from None


def parse_list_query(params: Mapping[str, str], today: dt.date, retention_days: int) -> ListQuery:
    """`limit`, `page` (from 0), `start` and `end` (YYYY-MM-DD, inclusive, UTC days). `start`
    may reach back `retention_days` days (LiveKit Cloud: 7); without it the whole window is
    listed. Unknown parameters are ignored (clients send `v=2`)."""
    limit = _int_param(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    page = _int_param(params, "page", 0, 0, None)
    earliest = today - dt.timedelta(days=retention_days)
    start = _date_param(params, "start")
    end = _date_param(params, "end")
    if start is not None and start < earliest:
        raise BadRequest(f"start must be within {retention_days} days of the current date "
                         f"(on or after {earliest.isoformat()}), got {start.isoformat()}")
    if start is not None and end is not None and end < start:
        raise BadRequest(f"end ({end.isoformat()}) must not be before start ({start.isoformat()})")
    return ListQuery(start=(start or earliest).isoformat(), end=end.isoformat() if end else None,
                     limit=limit, page=page)


def timestamp(ms: int) -> str:
    """A protobuf Timestamp's JSON form."""
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts.ToJsonString()


def session_summary(s: SessionRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "sessionId": s.sid,
        "roomName": s.room,
        "createdAt": timestamp(s.created_ms),
        "lastActive": timestamp(max(s.last_active_ms, s.created_ms)),
        "bandwidthIn": str(s.bytes_in),
        "bandwidthOut": str(s.bytes_out),
        "egress": s.egress,
        "numParticipants": s.num_participants,
        "numActiveParticipants": 0 if s.ended_ms else s.num_active,
    }
    if s.ended_ms:
        out["endedAt"] = timestamp(s.ended_ms)
    return out


async def list_sessions(store: AnalyticsStore, q: ListQuery) -> dict[str, Any]:
    # days partition creation times, so reading days newest first and stopping once the page is
    # filled gives the same slice as sorting everything (every session of a later day is newer)
    first, wanted = q.page * q.limit, (q.page + 1) * q.limit
    records: list[SessionRecord] = []
    for day in sorted(await store.days(), reverse=True):
        if day < q.start:
            break
        if q.end is not None and day > q.end:
            continue
        records.extend(sorted(await store.sessions_of_day(day), key=lambda s: (s.created_ms, s.sid),
                              reverse=True))
        if len(records) >= wanted:
            break
    return {"sessions": [session_summary(s) for s in records[first:wanted]]}


def _sources(bits: int) -> dict[str, bool]:
    return {"cameraTrack": bool(bits & CAMERA), "microphoneTrack": bool(bits & MICROPHONE),
            "screenShareTrack": bool(bits & SCREEN_SHARE),
            "screenShareAudio": bool(bits & SCREEN_SHARE_AUDIO)}


def _connection_minutes(parts: list[ParticipantRecord], now_ms: int) -> int:
    """Participant minutes, each participant session rounded up to a whole minute (LiveKit's
    billing rounds every use up before summing)."""
    total = 0
    for p in parts:
        end = p.left_ms or max(now_ms, p.joined_ms)
        total += -(-(end - p.joined_ms) // 60000) if end > p.joined_ms else 0
    return total


def session_details(s: SessionRecord, parts: list[ParticipantRecord], now_ms: int) -> dict[str, Any]:
    by_identity: dict[str, list[ParticipantRecord]] = {}
    for p in sorted(parts, key=lambda p: (p.joined_ms, p.key)):
        by_identity.setdefault(p.identity, []).append(p)
    participants = []
    for identity, sessions in by_identity.items():
        entry: dict[str, Any] = {
            "participantIdentity": identity,
            "participantName": sessions[-1].name,
            "roomId": s.sid,
            "joinedAt": timestamp(sessions[0].joined_ms),
        }
        if all(p.left_ms for p in sessions):
            entry["leftAt"] = timestamp(max(p.left_ms for p in sessions))
        bits = 0
        for p in sessions:
            bits |= p.sources
        entry["publishedSources"] = _sources(bits)
        entry["sessions"] = []
        for p in sessions:
            one: dict[str, Any] = {"sessionId": p.sid, "participantId": p.sid,
                                   "joinedAt": timestamp(p.joined_ms)}
            if p.left_ms:
                one["leftAt"] = timestamp(p.left_ms)
            entry["sessions"].append(one)
        participants.append(entry)
    out: dict[str, Any] = {
        "roomId": s.sid,
        "roomName": s.room,
        "bandwidth": str(s.bytes_in + s.bytes_out),
        "startTime": timestamp(s.created_ms),
    }
    if s.ended_ms:
        out["endTime"] = timestamp(s.ended_ms)
    out["numParticipants"] = len(by_identity)
    out["connectionMinutes"] = str(_connection_minutes(parts, now_ms))
    out["participants"] = participants
    return out


async def get_session(store: AnalyticsStore, sid: str, now_ms: int) -> dict[str, Any] | None:
    s = await store.get_session(sid)
    if s is None:
        return None
    return session_details(s, await store.participants(sid), now_ms)


__all__ = ["BadRequest", "ListQuery", "get_session", "list_sessions", "parse_list_query",
           "session_details", "session_summary", "timestamp"]
