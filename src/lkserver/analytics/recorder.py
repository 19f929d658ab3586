"""Sessions recorded from the event stream: what LiveKit Cloud's Analytics API reports.

A session is one room lifetime (room_started .. room_finished, its `RM_` sid). Each
participant_joined .. participant_left is one participant session (its `PA_` sid; a rejoin is a
new sid); track_published marks the sources it published; egress_* events move the session's
egress state from never started to active to ended. Media bytes in and out per participant
session come from sampling the SFU's per-stream counters (`media(sid)`, rtc/service.py) every
`sample_interval` seconds and at the moments a stream ends (track_unpublished, participant_left),
so the forwarding path does no extra work.

The event bus calls `handle` synchronously: it only changes the in-memory state of live sessions
and marks records dirty. One writer task stores dirty records in batches (write-behind; their
number is bounded by the live sessions and participants, however many events arrive). Ended
sessions leave memory once stored. After a restart, participant sessions a previous process left
open are closed at the last time they were seen connected.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from livekit.protocol.egress import EgressStatus
from livekit.protocol.models import TrackSource

from ..events import Event, EventName
from ..logs import get_logger
from ..store.analytics import (
    CAMERA,
    EGRESS_ACTIVE,
    EGRESS_ENDED,
    MICROPHONE,
    SCREEN_SHARE,
    SCREEN_SHARE_AUDIO,
    AnalyticsStore,
    ParticipantRecord,
    SessionRecord,
    day_of,
)

log = get_logger("lkserver.analytics")

SOURCE_BITS = {
    TrackSource.CAMERA: CAMERA,
    TrackSource.MICROPHONE: MICROPHONE,
    TrackSource.SCREEN_SHARE: SCREEN_SHARE,
    TrackSource.SCREEN_SHARE_AUDIO: SCREEN_SHARE_AUDIO,
}
EGRESS_LIVE_STATUSES = (EgressStatus.EGRESS_STARTING, EgressStatus.EGRESS_ACTIVE, EgressStatus.EGRESS_ENDING)

# media(sid) -> {stream key: bytes so far}; a key is (True, ...) for a stream the participant
# sends (bytes in), (False, ...) for one it receives (bytes out); None: not connected here
MediaCounters = Callable[[str], dict | None]

# egress events for sessions no longer in memory, applied by the writer; bounded so a flood of
# them cannot grow memory (the oldest are dropped, and logged)
LATE_UPDATES_LIMIT = 10000
PURGE_INTERVAL = 3600.0
RETRY_DELAY = 1.0


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


@dataclass
class LiveSession:
    record: SessionRecord
    participants: dict[str, ParticipantRecord] = field(default_factory=dict)  # key -> record
    live: dict[str, str] = field(default_factory=dict)  # PA sid -> key of its open record
    identities: set[str] = field(default_factory=set)
    # PA sid -> stream key -> last byte count seen (streams that ended keep their last count)
    streams: dict[str, dict] = field(default_factory=dict)
    # sources published by a PA sid whose participant_joined has not been seen (yet)
    early_sources: dict[str, int] = field(default_factory=dict)


class SessionRecorder:
    def __init__(self, store: AnalyticsStore, *, retention_days: int = 7,
                 media: MediaCounters | None = None,
                 live_room_sids: Callable[[], Iterable[str]] | None = None,
                 clock: Callable[[], float] = time.time, sample_interval: float = 2.0,
                 flush_delay: float = 0.2) -> None:
        self.store = store
        self.retention_days = retention_days
        self.media = media
        self.live_room_sids = live_room_sids or (lambda: ())
        self.clock = clock
        self.sample_interval = sample_interval
        self.flush_delay = flush_delay
        self.sessions: dict[str, LiveSession] = {}  # room sid -> session not yet ended and stored
        self._dirty_sessions: set[str] = set()
        self._dirty_participants: set[tuple[str, str]] = set()  # (room sid, record key)
        self._late: deque[tuple[str, str, int]] = deque(maxlen=LATE_UPDATES_LIMIT)
        self._wake = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Take over sessions a previous process left open, then record and purge."""
        await self._recover()
        await self.purge()
        self._tasks = [asyncio.create_task(self._writer()),
                       asyncio.create_task(self._every(self.sample_interval, self.sample)),
                       asyncio.create_task(self._purger())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []
        self.sample()
        # whoever is still connected is disconnected by this stop (the rooms live on in the store)
        now = _ms(self.clock())
        for live in self.sessions.values():
            for psid in list(live.live):
                self._close_participant(live, psid, now)
        try:
            await self.flush()
        except Exception as e:  # noqa: BLE001 - the store is gone; say so and let the server stop
            log.error("analytics_final_write_failed", unsaved_sessions=len(self._dirty_sessions),
                      error=_describe(e))

    async def _recover(self) -> None:
        live_rooms = set(self.live_room_sids())
        now = _ms(self.clock())
        for s in await self.store.open_sessions():
            if s.sid in self.sessions:
                continue
            live = LiveSession(s)
            for p in await self.store.participants(s.sid):
                live.participants[p.key] = p
                live.identities.add(p.identity)
                if not p.left_ms:
                    # connected to a process that stopped: it left then, as far as we know
                    p.left_ms = max(p.last_seen_ms, p.joined_ms)
                    self._dirty_participants.add((s.sid, p.key))
            s.num_active = 0
            if s.sid not in live_rooms:
                # the room is gone (it ended while its last record was being written)
                ends = [p.left_ms for p in live.participants.values()]
                s.ended_ms = max([s.last_active_ms, s.created_ms, *ends])
                s.last_active_ms = s.ended_ms
            self.sessions[s.sid] = live
            self._dirty_sessions.add(s.sid)
        if self.sessions:
            log.info("analytics_sessions_recovered", count=len(self.sessions), now_ms=now)
        await self.flush()

    async def _every(self, seconds: float, fn: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - a periodic task outlives any one failure
                log.error("analytics_periodic_failed", task=fn.__name__, error=_describe(e))

    async def _purger(self) -> None:
        while True:
            await asyncio.sleep(PURGE_INTERVAL)
            try:
                await self.purge()
            except Exception as e:  # noqa: BLE001 - retried at the next interval
                log.error("analytics_purge_failed", error=_describe(e))

    # -- the event stream ------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        """EventBus subscriber: synchronous, in memory only."""
        name = event.name
        now = _ms(event.created_at)
        if name == EventName.ROOM_STARTED:
            self._session(event, now)
        elif name == EventName.ROOM_FINISHED:
            self._room_finished(event, now)
        elif name == EventName.PARTICIPANT_JOINED:
            self._participant_joined(event, now)
        elif name in (EventName.PARTICIPANT_LEFT, EventName.PARTICIPANT_CONNECTION_ABORTED):
            self._participant_left(event, now)
        elif name == EventName.TRACK_PUBLISHED:
            self._track_published(event)
        elif name == EventName.TRACK_UNPUBLISHED:
            self._track_unpublished(event)
        elif name in (EventName.EGRESS_STARTED, EventName.EGRESS_UPDATED, EventName.EGRESS_ENDED):
            self._egress(event)
        else:
            return
        self._wake.set()

    def _session(self, event: Event, now: int) -> LiveSession | None:
        """The live session of the event's room, started on first sight."""
        room = event.room
        if room is None or not room.sid:
            return None
        live = self.sessions.get(room.sid)
        if live is None:
            created = room.creation_time_ms or room.creation_time * 1000 or now
            live = LiveSession(SessionRecord(sid=room.sid, room=room.name, created_ms=created,
                                             last_active_ms=max(created, now)))
            self.sessions[room.sid] = live
            self._dirty_sessions.add(room.sid)
        return live

    def _room_finished(self, event: Event, now: int) -> None:
        live = self._session(event, now)
        if live is None:
            return
        for psid in list(live.live):
            self._close_participant(live, psid, now)
        s = live.record
        s.ended_ms = max(now, s.created_ms)
        s.last_active_ms = s.ended_ms
        s.num_active = 0
        self._dirty_sessions.add(s.sid)

    def _participant_joined(self, event: Event, now: int) -> None:
        live = self._session(event, now)
        p = event.participant
        if live is None or p is None or p.sid in live.live:
            return
        key, n = p.sid, 1
        while key in live.participants:
            n += 1
            key = f"{p.sid}.{n}"
        sources = live.early_sources.pop(p.sid, 0)
        for t in p.tracks:
            sources |= SOURCE_BITS.get(t.source, 0)
        live.participants[key] = ParticipantRecord(key=key, sid=p.sid, identity=p.identity,
                                                   name=p.name, joined_ms=now, sources=sources,
                                                   last_seen_ms=now)
        live.live[p.sid] = key
        live.identities.add(p.identity)
        s = live.record
        s.num_participants = len(live.identities)
        s.num_active = len(live.live)
        s.last_active_ms = max(s.last_active_ms, now)
        self._dirty_sessions.add(s.sid)
        self._dirty_participants.add((s.sid, key))

    def _participant_left(self, event: Event, now: int) -> None:
        room, p = event.room, event.participant
        if room is None or p is None:
            return
        live = self.sessions.get(room.sid)
        if live is None or p.sid not in live.live:
            return  # never joined (connection aborted before media), or already gone
        self._sample_participant(live, p.sid)
        self._close_participant(live, p.sid, now)

    def _close_participant(self, live: LiveSession, psid: str, now: int) -> None:
        key = live.live.pop(psid)
        rec = live.participants[key]
        rec.left_ms = max(now, rec.joined_ms)
        rec.last_seen_ms = rec.left_ms
        live.streams.pop(psid, None)
        s = live.record
        s.num_active = len(live.live)
        s.last_active_ms = max(s.last_active_ms, now)
        self._dirty_sessions.add(s.sid)
        self._dirty_participants.add((s.sid, key))

    def _track_published(self, event: Event) -> None:
        room, p, track = event.room, event.participant, event.track
        if room is None or p is None or track is None:
            return
        live = self.sessions.get(room.sid)
        bit = SOURCE_BITS.get(track.source, 0)
        if live is None or not bit:
            return
        key = live.live.get(p.sid)
        if key is None:
            live.early_sources[p.sid] = live.early_sources.get(p.sid, 0) | bit
            return
        rec = live.participants[key]
        if not rec.sources & bit:
            rec.sources |= bit
            self._dirty_participants.add((room.sid, key))

    def _track_unpublished(self, event: Event) -> None:
        # the publisher's stream is still counted at this moment: take its final byte count
        room, p = event.room, event.participant
        if room is not None and p is not None:
            live = self.sessions.get(room.sid)
            if live is not None and p.sid in live.live:
                self._sample_participant(live, p.sid)

    def _egress(self, event: Event) -> None:
        info = event.egress_info
        if info is None or not info.egress_id:
            return
        live = self.sessions.get(info.room_id) if info.room_id else None
        if live is None and info.room_name:
            live = next((s for s in self.sessions.values()
                         if s.record.room == info.room_name and not s.record.ended_ms), None)
        active = event.name != EventName.EGRESS_ENDED and info.status in EGRESS_LIVE_STATUSES
        if live is None:
            if info.room_id:
                self._late.append((info.room_id, info.egress_id, int(active)))
                if len(self._late) == LATE_UPDATES_LIMIT:
                    log.warning("analytics_late_updates_full", limit=LATE_UPDATES_LIMIT)
            return
        if _apply_egress(live.record, info.egress_id, active):
            self._dirty_sessions.add(live.record.sid)

    # -- media bytes -----------------------------------------------------------------------------

    def sample(self) -> None:
        """Take the byte counters of every live participant session (and keep sessions with
        somebody connected active)."""
        now = _ms(self.clock())
        for live in self.sessions.values():
            if not live.live:
                continue
            for psid in live.live:
                self._sample_participant(live, psid)
                rec = live.participants[live.live[psid]]
                rec.last_seen_ms = now
                self._dirty_participants.add((live.record.sid, rec.key))
            live.record.last_active_ms = max(live.record.last_active_ms, now)
            self._dirty_sessions.add(live.record.sid)
        if self._dirty_sessions or self._dirty_participants:
            self._wake.set()

    def _sample_participant(self, live: LiveSession, psid: str) -> None:
        if self.media is None:
            return
        counters = self.media(psid)
        if not counters:
            return
        seen = live.streams.setdefault(psid, {})
        changed = False
        for key, value in counters.items():
            if value > seen.get(key, 0):
                seen[key] = value
                changed = True
        if not changed:
            return
        rec = live.participants[live.live[psid]]
        rec.bytes_in = sum(v for k, v in seen.items() if k[0])
        rec.bytes_out = sum(v for k, v in seen.items() if not k[0])
        s = live.record
        s.bytes_in = sum(p.bytes_in for p in live.participants.values())
        s.bytes_out = sum(p.bytes_out for p in live.participants.values())
        self._dirty_participants.add((s.sid, rec.key))
        self._dirty_sessions.add(s.sid)

    # -- storing ---------------------------------------------------------------------------------

    async def _writer(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.flush_delay)  # let a burst of events share one batch
            try:
                await self.flush()
            except Exception as e:  # noqa: BLE001 - the records stay dirty and are retried
                if not failures:
                    log.error("analytics_write_failed", error=_describe(e), retry="with backoff")
                failures += 1
                self._wake.set()
                await asyncio.sleep(min(RETRY_DELAY * 2 ** min(failures, 5), 30.0))
                continue
            if failures:
                log.info("analytics_write_recovered", failed_attempts=failures)
                failures = 0

    async def flush(self) -> None:
        """Store every dirty record now (queries call this first: they see their own process's
        latest state)."""
        async with self._write_lock:
            sessions, parts = self._dirty_sessions, self._dirty_participants
            self._dirty_sessions, self._dirty_participants = set(), set()
            records = [self.sessions[sid].record for sid in sessions if sid in self.sessions]
            prec = [(rs, self.sessions[rs].participants[key]) for rs, key in parts if rs in self.sessions]
            try:
                # records are encoded before the first await, so later changes wait for the next batch
                await self.store.write(records, prec)
            except BaseException:
                self._dirty_sessions |= sessions
                self._dirty_participants |= parts
                raise
            for s in records:
                if s.ended_ms and s.sid not in self._dirty_sessions:
                    live = self.sessions.get(s.sid)
                    if live is not None and not any(rs == s.sid for rs, _ in self._dirty_participants):
                        del self.sessions[s.sid]
            while self._late:
                room_sid, egress_id, active = self._late.popleft()
                stored = await self.store.get_session(room_sid)
                if stored is not None and _apply_egress(stored, egress_id, bool(active)):
                    await self.store.write([stored], [])

    async def purge(self) -> int:
        """Delete ended sessions created before the retention window; returns how many."""
        cutoff = day_of(_ms(self.clock() - self.retention_days * 86400.0))
        removed = 0
        for day in await self.store.days():
            if day >= cutoff:
                continue
            for s in await self.store.sessions_of_day(day):
                if s.ended_ms and s.sid not in self.sessions:
                    await self.store.delete_session(s)
                    removed += 1
            await self.store.forget_day_if_empty(day)
        if removed:
            log.info("analytics_sessions_purged", count=removed, before=cutoff)
        return removed


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _apply_egress(s: SessionRecord, egress_id: str, active: bool) -> bool:
    """Move the session's egress state (active while any egress runs, ended once one has run);
    True when the record changed."""
    before = (s.egress, list(s.egress_ids))
    if active and egress_id not in s.egress_ids:
        s.egress_ids.append(egress_id)
    elif not active and egress_id in s.egress_ids:
        s.egress_ids.remove(egress_id)
    s.egress = EGRESS_ACTIVE if s.egress_ids else EGRESS_ENDED
    return (s.egress, s.egress_ids) != before


__all__ = ["LiveSession", "MediaCounters", "SessionRecorder"]
