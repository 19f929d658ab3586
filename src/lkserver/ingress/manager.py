"""The ingress capability: records (create, update, list, delete) and the sessions they run.

LiveKit splits this between its server (pkg/service/ingress.go, ioservice_ingress.go: records
and webhooks) and a separate ingress service (sessions); lkserver runs both in one process:
`IngressManager` keeps the records in the store, admits publishers by stream key, and turns
every session state change into a stored IngressState plus, on a status change only, the
`ingress_started` (to PUBLISHING) or `ingress_ended` (to INACTIVE, ERROR or COMPLETE) event.
Updating or deleting an ingress ends its live session; with several server processes on one
Redis, the process holding the session notices within `session.RECORD_CHECK` seconds.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from livekit.protocol import ingress as pi
from livekit.protocol.models import Room

from .. import ids
from ..config import IngressSettings
from ..events import Event, EventBus, EventName
from ..logs import get_logger
from ..store.ingress import IngressStore, OutOfDate
from . import info as rules
from .info import IngressError
from .session import IngressSession

log = get_logger("lkserver.ingress")


class IngressManager:
    def __init__(self, settings: IngressSettings, store: IngressStore, events: EventBus, rtc: Any,
                 *, shared_store: bool = False) -> None:
        self.settings = settings
        self.store = store
        self.events = events
        self.rtc = rtc
        self.shared_store = shared_store
        self.x264_preset = "veryfast"
        self.sessions: dict[str, IngressSession] = {}  # by ingress id
        self.by_resource: dict[str, IngressSession] = {}
        self.rtmp_base_url = settings.rtmp_base_url
        self.whip_base_url = settings.whip_base_url
        self._state_lock = asyncio.Lock()
        self._admit_lock = asyncio.Lock()

    async def start(self) -> None:
        if self.shared_store:
            return  # other processes may hold live sessions
        # sessions of a previous run of this process are gone: say so in their records
        for info in await self.store.list():
            if info.state.status in rules.ACTIVE:
                state = info.state
                state.status = rules.INACTIVE if info.reusable else rules.ERROR
                state.error = "" if info.reusable else "server restarted"
                state.ended_at = state.updated_at = _now_ns()
                await self.store.store_state(info.ingress_id, state)

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop(rules.INACTIVE) for s in list(self.sessions.values())),
                             return_exceptions=True)

    # -- the API (services/ingress.py authorizes and maps errors) --------------------------------

    async def create(self, req: pi.CreateIngressRequest) -> pi.IngressInfo:
        base = {rules.RTMP: self.rtmp_base_url, rules.WHIP: self.whip_base_url}.get(req.input_type, "")
        info = rules.new_info(req, base)
        if info.input_type == rules.URL:
            return await self._launch_url(info)
        await self.store.store(info)
        log.info("ingress_created", ingress_id=info.ingress_id, input=pi.IngressInput.Name(info.input_type),
                 room=info.room_name)
        return info

    async def update(self, req: pi.UpdateIngressRequest) -> pi.IngressInfo:
        info = await self._load(req.ingress_id)
        if not info.reusable:
            raise rules.ERR_NON_REUSABLE
        if info.state.status == rules.ERROR:
            info.state.status = rules.INACTIVE
            await self.store.store_state(info.ingress_id, info.state)
        rules.apply_update(req, info)
        await self.store.store(_without_state(info))
        session = self.sessions.get(info.ingress_id)
        if session is not None:
            await session.stop(rules.INACTIVE)  # the encoder reconnects to pick up the change
        return await self._load(info.ingress_id)

    async def list(self, room_name: str = "", ingress_id: str = "") -> list[pi.IngressInfo]:
        if ingress_id:
            return [await self._load(ingress_id)]
        return await self.store.list(room_name)

    async def delete(self, ingress_id: str) -> pi.IngressInfo:
        info = await self._load(ingress_id)
        session = self.sessions.get(ingress_id)
        if session is not None:
            await session.stop(rules.INACTIVE)
            info = await self._load(ingress_id)
        await self.store.delete(info)
        info.state.status = rules.INACTIVE
        log.info("ingress_deleted", ingress_id=ingress_id)
        return info

    async def _load(self, ingress_id: str) -> pi.IngressInfo:
        info = await self.store.load(ingress_id) if ingress_id else None
        if info is None:
            raise rules.ERR_NOT_FOUND
        return info

    # -- sessions ------------------------------------------------------------------------------------

    async def admit(self, stream_key: str, input_type: int) -> pi.IngressInfo:
        """The ingress a publisher may start with this key (LiveKit's handleNewPublisher checks)."""
        if not stream_key:
            raise rules.ERR_MISSING_STREAM_KEY
        info = await self.store.load_by_stream_key(stream_key)
        if info is None:
            raise rules.ERR_NOT_FOUND
        if not rules.is_enabled(info):
            raise rules.ERR_DISABLED
        if info.input_type != input_type:
            raise rules.ERR_INVALID_TYPE
        rules.validate(info, need_room=True)
        return info

    @property
    def max_transcoding(self) -> int:
        return self.settings.max_transcoding_sessions or 2 * (os.cpu_count() or 1)

    async def start_session(self, session: IngressSession) -> None:
        """Register and begin a session; one session per ingress: a new publisher replaces the old.
        Raises IngressError (resource_exhausted) when the transcoding budget is used up."""
        async with self._admit_lock:
            old = self.sessions.get(session.ingress_id)
            if session.transcoding:
                busy = sum(1 for s in self.sessions.values() if s.transcoding and s is not old)
                if busy >= self.max_transcoding:
                    log.warning("ingress_capacity_exceeded", ingress_id=session.ingress_id,
                                sessions=busy, limit=self.max_transcoding)
                    raise IngressError("resource_exhausted", "server capacity exceeded")
            if old is not None:
                log.info("ingress_session_replaced", ingress_id=session.ingress_id, old=old.resource_id,
                         new=session.resource_id)
                await old.stop(rules.INACTIVE)
            self.sessions[session.ingress_id] = session
            self.by_resource[session.resource_id] = session
        try:
            await session.begin()
        except IngressError as e:
            await session.stop(rules.ERROR, e.message)
            raise
        except Exception as e:
            log.exception("ingress_session_failed", ingress_id=session.ingress_id)
            await session.stop(rules.ERROR, str(e))
            raise

    def forget(self, session: IngressSession) -> None:
        if self.sessions.get(session.ingress_id) is session:
            del self.sessions[session.ingress_id]
        if self.by_resource.get(session.resource_id) is session:
            del self.by_resource[session.resource_id]

    async def report(self, session: IngressSession) -> None:
        """Store the session's state; on a status change, publish ingress_started / ingress_ended."""
        state = pi.IngressState()
        state.CopyFrom(session.state)
        state.updated_at = _now_ns()
        async with self._state_lock:
            info = await self.store.load(session.ingress_id)
            if info is None:
                return  # deleted
            previous = info.state.status
            try:
                await self.store.store_state(session.ingress_id, state)
            except OutOfDate:
                log.info("ingress_state_superseded", ingress_id=session.ingress_id,
                         resource_id=session.resource_id)
                return
        if previous == state.status:
            return
        info.state.CopyFrom(state)
        if state.status == rules.PUBLISHING:
            name = EventName.INGRESS_STARTED
        elif state.status in (rules.INACTIVE, rules.ERROR, rules.COMPLETE):
            name = EventName.INGRESS_ENDED
        else:
            return
        self.events.publish(Event(name, ingress_info=info, room=Room(name=info.room_name)))

    async def record_changed(self, session: IngressSession) -> bool:
        info = await self.store.load(session.ingress_id)
        return info is None or rules.config_of(info) != session.config

    # -- URL input -------------------------------------------------------------------------------------

    async def _launch_url(self, info: pi.IngressInfo) -> pi.IngressInfo:
        if info.url.startswith("srt://"):
            raise IngressError("unimplemented", "SRT input is not supported by lkserver: "
                                                "pull an HTTP(S) file or HLS stream, or push with RTMP or WHIP")
        from .urlpull import UrlSession

        await self.store.store(info)
        session = UrlSession(self, info, ids.new_id(rules.RESOURCE_PREFIX[rules.URL]))
        try:
            await self.start_session(session)
        except Exception:
            # as LiveKit: a launch that fails leaves no record, the caller gets the error
            await self.store.delete(info)
            raise
        session.run()
        return await self._load(info.ingress_id)

    def session_for_resource(self, resource_id: str) -> IngressSession | None:
        return self.by_resource.get(resource_id)


def _now_ns() -> int:
    import time

    return time.time_ns()


def _without_state(info: pi.IngressInfo) -> pi.IngressInfo:
    copy = pi.IngressInfo()
    copy.CopyFrom(info)
    copy.ClearField("state")
    return copy
