"""The session recorder, the analytics store and the API's queries, on both store backends.

Events are the domain's own `Event`s with chosen times, so day boundaries, ties, retention and
restarts can be pinned to the millisecond; the recorder, the store (a real SQLite file, a real
redis-server) and the queries are the real ones. The realtime test (test_analytics_sessions.py)
shows the same answers for sessions made by official clients.
"""

from __future__ import annotations

import datetime as dt

import pytest
import redis.asyncio as aioredis
from livekit.protocol.egress import EgressInfo, EgressStatus
from livekit.protocol.models import ParticipantInfo, Room, TrackInfo, TrackSource

from lkserver.analytics.queries import BadRequest, get_session, list_sessions, parse_list_query
from lkserver.analytics.recorder import SessionRecorder
from lkserver.events import Event, EventName
from lkserver.store import SQLiteKV
from lkserver.store.analytics import AnalyticsStore
from lkserver.store.redis import RedisKV

REDIS_DB = 11  # a database of its own, flushed by these tests only
DAY = 86400.0
T0 = dt.datetime(2025, 3, 10, 12, 0, tzinfo=dt.UTC).timestamp()


@pytest.fixture(params=["sqlite", "redis"])
async def kv(request, tmp_path):
    if request.param == "sqlite":
        backend = SQLiteKV(str(tmp_path / "store" / "lkserver.db"))
    else:
        redis_url = request.getfixturevalue("redis_url")
        host, port = redis_url.rsplit(":", 1)
        client = aioredis.Redis(host=host, port=int(port), db=REDIS_DB)
        await client.flushdb()
        await client.aclose()
        backend = RedisKV(redis_url, db=REDIS_DB)
    yield backend
    await backend.close()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ts(seconds: float) -> str:
    """Protobuf Timestamp JSON of a time in seconds."""
    from google.protobuf.timestamp_pb2 import Timestamp

    t = Timestamp()
    t.FromMilliseconds(round(seconds * 1000))
    return t.ToJsonString()


def room_started(sid: str, name: str, at: float) -> Event:
    return Event(EventName.ROOM_STARTED, room=Room(sid=sid, name=name, creation_time=int(at),
                                                   creation_time_ms=round(at * 1000)), created_at=at)


def room_finished(sid: str, name: str, at: float) -> Event:
    return Event(EventName.ROOM_FINISHED, room=Room(sid=sid, name=name), created_at=at)


def joined(room: str, psid: str, identity: str, at: float, name: str = "") -> Event:
    return Event(EventName.PARTICIPANT_JOINED, room=Room(sid=room, name="r"),
                 participant=ParticipantInfo(sid=psid, identity=identity, name=name), created_at=at)


def left(room: str, psid: str, identity: str, at: float, aborted: bool = False) -> Event:
    name = EventName.PARTICIPANT_CONNECTION_ABORTED if aborted else EventName.PARTICIPANT_LEFT
    return Event(name, room=Room(sid=room, name="r"),
                 participant=ParticipantInfo(sid=psid, identity=identity), created_at=at)


def published(room: str, psid: str, source: int, at: float) -> Event:
    return Event(EventName.TRACK_PUBLISHED, room=Room(sid=room, name="r"),
                 participant=ParticipantInfo(sid=psid), track=TrackInfo(sid="TR_" + psid, source=source),
                 created_at=at)


def egress(name: EventName, room: str, egress_id: str, status: int) -> Event:
    return Event(name, egress_info=EgressInfo(egress_id=egress_id, room_id=room, status=status))


def recorder(kv, clock: Clock, **kw) -> SessionRecorder:
    return SessionRecorder(AnalyticsStore(kv), clock=clock, **kw)


async def test_a_session_with_rejoins_sources_and_intervals(kv) -> None:
    clock = Clock(T0 + 100)
    rec = recorder(kv, clock)
    for e in [room_started("RM_a", "standup", T0),
              joined("RM_a", "PA_1", "alice", T0 + 1, "Alice"),
              published("RM_a", "PA_1", TrackSource.CAMERA, T0 + 1.5),
              published("RM_a", "PA_1", TrackSource.MICROPHONE, T0 + 1.6),
              joined("RM_a", "PA_2", "bob", T0 + 2, "Bob"),
              published("RM_a", "PA_2", TrackSource.SCREEN_SHARE, T0 + 3),
              published("RM_a", "PA_2", TrackSource.SCREEN_SHARE_AUDIO, T0 + 3),
              left("RM_a", "PA_1", "alice", T0 + 10),
              joined("RM_a", "PA_3", "alice", T0 + 12, "Alice 2"),  # a rejoin: a new PA_ sid
              # connected, never active: no participant session
              left("RM_a", "PA_9", "carol", T0 + 13, aborted=True)]:
        rec.handle(e)
    await rec.flush()
    store = AnalyticsStore(kv)

    live = await get_session(store, "RM_a", round(clock.now * 1000))
    assert "endTime" not in live and live["numParticipants"] == 2
    alice = live["participants"][0]
    assert alice["participantIdentity"] == "alice" and "leftAt" not in alice  # connected again
    assert [s["sessionId"] for s in alice["sessions"]] == ["PA_1", "PA_3"]
    assert "leftAt" not in alice["sessions"][1]
    [summary] = (await list_sessions(store, parse_list_query({}, dt.date(2025, 3, 10), 7)))["sessions"]
    assert summary["numActiveParticipants"] == 2 and "endedAt" not in summary

    for e in [left("RM_a", "PA_3", "alice", T0 + 20), left("RM_a", "PA_2", "bob", T0 + 21),
              room_finished("RM_a", "standup", T0 + 25)]:
        rec.handle(e)
    await rec.flush()
    assert rec.sessions == {}  # ended and stored: out of memory

    details = await get_session(store, "RM_a", round(clock.now * 1000))
    assert details == {
        "roomId": "RM_a", "roomName": "standup", "bandwidth": "0",
        "startTime": ts(T0), "endTime": ts(T0 + 25), "numParticipants": 2,
        "connectionMinutes": "3",  # 9 s, 8 s and 19 s, each rounded up to a minute
        "participants": [
            {"participantIdentity": "alice", "participantName": "Alice 2", "roomId": "RM_a",
             "joinedAt": ts(T0 + 1), "leftAt": ts(T0 + 20),
             "publishedSources": {"cameraTrack": True, "microphoneTrack": True,
                                  "screenShareTrack": False, "screenShareAudio": False},
             "sessions": [
                 {"sessionId": "PA_1", "participantId": "PA_1", "joinedAt": ts(T0 + 1), "leftAt": ts(T0 + 10)},
                 {"sessionId": "PA_3", "participantId": "PA_3", "joinedAt": ts(T0 + 12), "leftAt": ts(T0 + 20)},
             ]},
            {"participantIdentity": "bob", "participantName": "Bob", "roomId": "RM_a",
             "joinedAt": ts(T0 + 2), "leftAt": ts(T0 + 21),
             "publishedSources": {"cameraTrack": False, "microphoneTrack": False,
                                  "screenShareTrack": True, "screenShareAudio": True},
             "sessions": [{"sessionId": "PA_2", "participantId": "PA_2", "joinedAt": ts(T0 + 2),
                           "leftAt": ts(T0 + 21)}]},
        ],
    }
    listed = await list_sessions(store, parse_list_query({}, dt.date(2025, 3, 10), 7))
    assert listed == {"sessions": [{
        "sessionId": "RM_a", "roomName": "standup", "createdAt": ts(T0), "lastActive": ts(T0 + 25),
        "bandwidthIn": "0", "bandwidthOut": "0", "egress": 0, "numParticipants": 2,
        "numActiveParticipants": 0, "endedAt": ts(T0 + 25)}]}
    assert await get_session(store, "RM_missing", 0) is None


async def test_media_bytes_are_sampled_per_stream(kv) -> None:
    """Counters come from the SFU per stream; a stream that ends keeps its last count."""
    counters: dict[str, dict] = {"PA_1": {(True, "TR_a", 1): 1000, (False, "TR_b", 7): 50}}
    clock = Clock(T0 + 5)
    rec = recorder(kv, clock, media=lambda sid: counters.get(sid))
    rec.handle(room_started("RM_m", "media", T0))
    rec.handle(joined("RM_m", "PA_1", "alice", T0 + 1))
    rec.sample()
    counters["PA_1"] = {(True, "TR_a", 1): 4000}  # the subscription ended; its 50 bytes stay
    rec.sample()
    counters["PA_1"] = {(True, "TR_a", 1): 4500, (True, "TR_c", 2): 10, (False, "TR_d", 8): 300}
    rec.handle(left("RM_m", "PA_1", "alice", T0 + 9))  # sampled once more as it leaves
    counters.pop("PA_1")
    rec.sample()
    await rec.flush()
    [s] = (await list_sessions(AnalyticsStore(kv), parse_list_query({}, dt.date(2025, 3, 10), 7)))["sessions"]
    assert (s["bandwidthIn"], s["bandwidthOut"]) == ("4510", "350")
    details = await get_session(AnalyticsStore(kv), "RM_m", 0)
    assert details["bandwidth"] == "4860"


async def test_egress_never_active_ended(kv) -> None:
    clock = Clock(T0 + 50)
    rec = recorder(kv, clock)
    store = AnalyticsStore(kv)
    rec.handle(room_started("RM_e", "rec", T0))
    rec.handle(room_started("RM_n", "plain", T0 + 1))
    await rec.flush()

    async def state(sid: str) -> int:
        return (await store.get_session(sid)).egress

    assert await state("RM_e") == 0
    rec.handle(egress(EventName.EGRESS_STARTED, "RM_e", "EG_1", EgressStatus.EGRESS_STARTING))
    rec.handle(egress(EventName.EGRESS_UPDATED, "RM_e", "EG_1", EgressStatus.EGRESS_ACTIVE))
    rec.handle(egress(EventName.EGRESS_STARTED, "RM_e", "EG_2", EgressStatus.EGRESS_STARTING))
    await rec.flush()
    assert await state("RM_e") == 1
    rec.handle(egress(EventName.EGRESS_ENDED, "RM_e", "EG_1", EgressStatus.EGRESS_COMPLETE))
    await rec.flush()
    assert await state("RM_e") == 1  # EG_2 still runs
    rec.handle(room_finished("RM_e", "rec", T0 + 30))
    await rec.flush()
    assert "RM_e" not in rec.sessions
    # the egress outlives the room: its end is applied to the stored session
    rec.handle(egress(EventName.EGRESS_ENDED, "RM_e", "EG_2", EgressStatus.EGRESS_FAILED))
    await rec.flush()
    assert await state("RM_e") == 2
    assert await state("RM_n") == 0


async def test_date_filters_are_exact_at_day_boundaries_and_paging_is_stable(kv) -> None:
    d1 = dt.datetime(2025, 3, 8, tzinfo=dt.UTC).timestamp()
    d2, d3 = d1 + DAY, d1 + 2 * DAY
    created = {
        "RM_d1_last": d2 - 0.001,  # 2025-03-08T23:59:59.999Z
        "RM_d2_first": d2,  # 2025-03-09T00:00:00.000Z
        "RM_d2_tie_a": d2 + 3600, "RM_d2_tie_b": d2 + 3600, "RM_d2_tie_c": d2 + 3600,  # same ms
        "RM_d2_last": d3 - 0.001,
        "RM_d3_first": d3,
    }
    rec = recorder(kv, Clock(d3 + 60))
    for sid, at in created.items():
        rec.handle(room_started(sid, sid.lower(), at))
    await rec.flush()
    store = AnalyticsStore(kv)
    today = dt.date(2025, 3, 10)

    async def ids(**params) -> list[str]:
        q = parse_list_query({k: str(v) for k, v in params.items()}, today, 7)
        return [s["sessionId"] for s in (await list_sessions(store, q))["sessions"]]

    day2 = ["RM_d2_last", "RM_d2_tie_c", "RM_d2_tie_b", "RM_d2_tie_a", "RM_d2_first"]
    assert await ids(start="2025-03-09", end="2025-03-09") == day2
    assert await ids(start="2025-03-09") == ["RM_d3_first", *day2]
    assert await ids(end="2025-03-08") == ["RM_d1_last"]
    assert await ids(start="2025-03-08", end="2025-03-08") == ["RM_d1_last"]
    assert await ids(start="2025-03-10", end="2025-03-10") == ["RM_d3_first"]
    assert await ids(start="2025-03-11") == []
    everything = await ids()
    assert everything == ["RM_d3_first", *day2, "RM_d1_last"]
    for limit in (1, 2, 3, 7):
        pages, page = [], 0
        while True:
            got = await ids(limit=limit, page=page)
            assert len(got) <= limit
            if not got:
                break
            pages.extend(got)
            page += 1
        assert pages == everything, limit
    assert await ids(limit=3, page=1) == everything[3:6]
    assert await ids(limit=1000, page=1) == []


def test_list_parameters_and_their_400s() -> None:
    today = dt.date(2025, 3, 10)
    q = parse_list_query({}, today, 7)
    assert (q.start, q.end, q.limit, q.page) == ("2025-03-03", None, 100, 0)
    assert parse_list_query({"start": "2025-03-03", "v": "2"}, today, 7).start == "2025-03-03"
    assert parse_list_query({"start": "2025-03-13", "end": "2025-03-13"}, today, 7).end == "2025-03-13"
    assert parse_list_query({"limit": "1000", "page": "12345"}, today, 7).limit == 1000
    bad = {
        "limit": ["0", "-1", "1001", "ten", "1.5", " ", ""],
        "page": ["-1", "x", "1e3", ""],
        "start": ["2025-03-02", "03/04/2025", "2025-3-4", "2025-02-30", "yesterday", ""],
        "end": ["2025-13-01", "20250310"],
    }
    for name, values in bad.items():
        for value in values:
            with pytest.raises(BadRequest) as e:
                parse_list_query({name: value}, today, 7)
            assert name in str(e.value), (name, value, str(e.value))
    with pytest.raises(BadRequest, match="within 7 days"):
        parse_list_query({"start": "2025-03-02"}, today, 7)
    with pytest.raises(BadRequest, match="within 30 days"):
        parse_list_query({"start": "2025-02-07"}, today, 30)
    assert parse_list_query({"start": "2025-02-08"}, today, 30).start == "2025-02-08"
    with pytest.raises(BadRequest, match="before start"):
        parse_list_query({"start": "2025-03-09", "end": "2025-03-08"}, today, 7)


async def test_restart_closes_what_a_stopped_process_left_open(kv) -> None:
    clock = Clock(T0 + 10)
    first = recorder(kv, clock, media=lambda sid: {(True, "TR", 1): 99})
    for e in [room_started("RM_live", "live", T0), joined("RM_live", "PA_1", "alice", T0 + 1),
              room_started("RM_gone", "gone", T0), joined("RM_gone", "PA_2", "bob", T0 + 2)]:
        first.handle(e)
    clock.now = T0 + 7
    first.sample()  # last seen connected at T0 + 7
    await first.flush()
    # the process dies here (no stop): a new one finds RM_live restored, RM_gone not
    clock.now = T0 + 60
    second = recorder(kv, clock, live_room_sids=lambda: ["RM_live"])
    await second._recover()
    store = AnalyticsStore(kv)
    live = await get_session(store, "RM_live", 0)
    assert "endTime" not in live
    assert live["participants"][0]["sessions"] == [
        {"sessionId": "PA_1", "participantId": "PA_1", "joinedAt": ts(T0 + 1), "leftAt": ts(T0 + 7)}]
    gone = await get_session(store, "RM_gone", 0)
    assert gone["endTime"] == ts(T0 + 7) and gone["participants"][0]["leftAt"] == ts(T0 + 7)
    assert gone["bandwidth"] == "99"
    assert set(second.sessions) == {"RM_live"}
    # the restored room goes on: a new participant session, then its end
    second.handle(joined("RM_live", "PA_3", "alice", T0 + 61))
    second.handle(room_finished("RM_live", "live", T0 + 70))
    await second.flush()
    live = await get_session(store, "RM_live", 0)
    assert live["endTime"] == ts(T0 + 70)
    assert [s["sessionId"] for s in live["participants"][0]["sessions"]] == ["PA_1", "PA_3"]
    assert await AnalyticsStore(kv).open_sessions() == []


async def test_a_graceful_stop_ends_participant_sessions_not_the_session(kv) -> None:
    clock = Clock(T0 + 30)
    rec = recorder(kv, clock)
    await rec.start()
    rec.handle(room_started("RM_s", "stays", T0))
    rec.handle(joined("RM_s", "PA_1", "alice", T0 + 1))
    await rec.stop()
    s = await get_session(AnalyticsStore(kv), "RM_s", 0)
    assert "endTime" not in s  # the room outlives the process
    assert s["participants"][0]["sessions"][0]["leftAt"] == ts(T0 + 30)


async def test_retention_purges_ended_sessions_only(kv) -> None:
    now = dt.datetime(2025, 3, 20, 8, tzinfo=dt.UTC).timestamp()
    rec = recorder(kv, Clock(now), retention_days=7)
    old_day = now - 9 * DAY
    for e in [room_started("RM_old", "old", old_day), room_finished("RM_old", "old", old_day + 60),
              room_started("RM_old_live", "old-live", old_day + 1),
              room_started("RM_edge", "edge", dt.datetime(2025, 3, 13, tzinfo=dt.UTC).timestamp()),
              room_finished("RM_edge", "edge", now - 6 * DAY),
              room_started("RM_new", "new", now - 60)]:
        rec.handle(e)
    await rec.flush()
    store = AnalyticsStore(kv)
    assert await rec.purge() == 1
    assert await store.get_session("RM_old") is None
    assert await store.participants("RM_old") == []
    assert await store.get_session("RM_old_live") is not None  # still live: kept
    assert await store.get_session("RM_edge") is not None  # 2025-03-13 is inside the window
    assert "2025-03-11" in await store.days()  # RM_old_live keeps its day
    rec.handle(room_finished("RM_old_live", "old-live", now))
    await rec.flush()
    assert await rec.purge() == 1
    assert "2025-03-11" not in await store.days()
