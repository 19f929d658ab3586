"""Agent dispatches: which agents a room asked for, and the jobs launched for them.

LiveKit's room-side agent logic (livekit pkg/rtc/room.go `createAgentDispatchesFromRoomAgent`,
`launchRoomAgents`, `launchTargetAgents`; reference server-api.md §3.1, §7): a room starts
with the dispatches of its configuration (CreateRoom's `agents`, a token's room config, a SIP
dispatch rule's room config) or, when it has none, one implicit dispatch with an empty agent
name, which automatic workers answer. Each dispatch launches a JT_ROOM job at once, a
JT_PARTICIPANT job per joining participant and a JT_PUBLISHER job per first publish (dependent
participants excluded), each to workers registered for that type. Dispatches are stored per
room and deleted with it. Driven by the event stream; the room manager knows nothing of agents.
"""

from __future__ import annotations

import asyncio
import time

from livekit.protocol import agent as pa
from livekit.protocol import agent_dispatch as pad
from livekit.protocol import models as pm

from .. import ids
from ..events import Event, EventBus, EventName
from ..logs import get_logger
from ..rooms import RoomManager
from ..store import Store
from .service import AgentService

log = get_logger("lkserver.agents")


class DispatchNotFound(Exception):
    pass


class AgentDispatcher:
    def __init__(self, rooms: RoomManager, store: Store, events: EventBus, agents: AgentService) -> None:
        self.rooms = rooms
        self.store = store
        self.agents = agents
        self.dispatches: dict[str, dict[str, pad.AgentDispatch]] = {}
        # agent participant (room, identity) -> job id, to end the job when the agent leaves
        self._agent_jobs: dict[tuple[str, str], str] = {}
        self._publishers: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task] = set()
        events.subscribe(self._on_event)
        agents.on_job_update = self._on_job_update

    async def start(self) -> None:
        """Bring back the dispatches of the rooms restored from the store (their jobs ended)."""
        for name in list(self.rooms.rooms):
            stored = await self.store.list_agent_dispatches(name)
            if stored:
                self.dispatches[name] = {d.id: d for d in stored}

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        self._tasks.clear()

    # -- the API ---------------------------------------------------------------------------------

    async def create_dispatch(self, req: pad.CreateAgentDispatchRequest) -> pad.AgentDispatch:
        d = pad.AgentDispatch(id=ids.new_id(ids.AGENT_DISPATCH), agent_name=req.agent_name, room=req.room,
                              metadata=req.metadata, restart_policy=req.restart_policy,
                              deployment=req.deployment, attributes=req.attributes)
        await self._add(d)
        room = self.rooms.get_room(req.room)
        await self._launch(d, pa.JobType.JT_ROOM)
        if room is not None:
            for p in list(room.participants.values()):
                if not p.is_dependent:
                    self._spawn(self._launch(d, pa.JobType.JT_PARTICIPANT, p.info))
                    if p.is_publisher:
                        self._spawn(self._launch(d, pa.JobType.JT_PUBLISHER, p.info))
        return self._copy(d)

    def list_dispatches(self, room: str, dispatch_id: str = "") -> list[pad.AgentDispatch]:
        return [self._copy(d) for d in self.dispatches.get(room, {}).values()
                if not dispatch_id or d.id == dispatch_id]

    async def delete_dispatch(self, room: str, dispatch_id: str) -> pad.AgentDispatch:
        d = self.dispatches.get(room, {}).pop(dispatch_id, None)
        if d is None:
            raise DispatchNotFound(dispatch_id)
        d.state.deleted_at = time.time_ns()
        await self.store.delete_message("agent_dispatch:" + room, dispatch_id)
        for job in d.state.jobs:
            self.agents.terminate_job(job.id)
        return self._copy(d)

    # -- events ----------------------------------------------------------------------------------

    def _on_event(self, ev: Event) -> None:
        if ev.name == EventName.ROOM_STARTED and ev.room is not None:
            self._room_started(ev.room.name)
        elif ev.name == EventName.ROOM_FINISHED and ev.room is not None:
            self._spawn(self._room_finished(ev.room.name))
        elif ev.name == EventName.PARTICIPANT_JOINED and ev.room is not None and ev.participant is not None:
            if not self._dependent(ev.participant):
                for d in list(self.dispatches.get(ev.room.name, {}).values()):
                    self._spawn(self._launch(d, pa.JobType.JT_PARTICIPANT, ev.participant))
        elif ev.name == EventName.TRACK_PUBLISHED and ev.room is not None and ev.participant is not None:
            key = (ev.room.name, ev.participant.identity)
            room = self.rooms.get_room(ev.room.name)
            p = room.participants.get(ev.participant.identity) if room else None
            if key not in self._publishers and p is not None and not p.is_dependent:
                self._publishers.add(key)
                for d in list(self.dispatches.get(ev.room.name, {}).values()):
                    self._spawn(self._launch(d, pa.JobType.JT_PUBLISHER, p.info))
        elif ev.name in (EventName.PARTICIPANT_LEFT, EventName.PARTICIPANT_CONNECTION_ABORTED) \
                and ev.room is not None and ev.participant is not None:
            self._publishers.discard((ev.room.name, ev.participant.identity))
            job_id = self._agent_jobs.pop((ev.room.name, ev.participant.identity), None)
            if job_id is not None:
                self.agents.terminate_job(job_id, agent_left=True)

    @staticmethod
    def _dependent(info: pm.ParticipantInfo) -> bool:
        return info.kind in (pm.ParticipantInfo.Kind.AGENT, pm.ParticipantInfo.Kind.EGRESS) \
            or info.permission.agent or info.permission.recorder

    def _room_started(self, name: str) -> None:
        """Synchronous with the event, so a CreateDispatch that created the room comes after."""
        room = self.rooms.get_room(name)
        if room is None or name in self.dispatches:
            return
        # LiveKit: without configured dispatches, one with an empty name (any automatic agent)
        configured = list(room.internal.agents) or [pad.RoomAgentDispatch()]
        self.dispatches[name] = {}
        for rad in configured:
            d = pad.AgentDispatch(id=ids.new_id(ids.AGENT_DISPATCH), agent_name=rad.agent_name, room=name,
                                  metadata=rad.metadata, restart_policy=rad.restart_policy,
                                  deployment=rad.deployment, attributes=rad.attributes)
            d.state.created_at = time.time_ns()
            self.dispatches[name][d.id] = d
            self._spawn(self._store_and_launch(d))

    async def _store_and_launch(self, d: pad.AgentDispatch) -> None:
        await self.store.store_agent_dispatch(self._stripped(d))
        await self._launch(d, pa.JobType.JT_ROOM)

    async def _room_finished(self, name: str) -> None:
        for d in self.dispatches.pop(name, {}).values():
            for job in d.state.jobs:
                self.agents.terminate_job(job.id)
        for key in [k for k in self._agent_jobs if k[0] == name]:
            del self._agent_jobs[key]
        self._publishers = {k for k in self._publishers if k[0] != name}
        await self.store.delete_agent_dispatches(name)

    # -- helpers ---------------------------------------------------------------------------------

    async def _add(self, d: pad.AgentDispatch) -> None:
        d.state.created_at = time.time_ns()
        self.dispatches.setdefault(d.room, {})[d.id] = d
        await self.store.store_agent_dispatch(self._stripped(d))

    async def _launch(self, d: pad.AgentDispatch, job_type: int,
                      participant: pm.ParticipantInfo | None = None) -> None:
        if not self.agents.has_workers(d.agent_name, job_type, deployment=d.deployment):
            return
        room = self.rooms.get_room(d.room)
        if room is None:
            return
        job = pa.Job(id=ids.new_id(ids.AGENT_JOB), dispatch_id=d.id, type=job_type, room=room.to_proto(),
                     metadata=d.metadata, agent_name=d.agent_name, deployment=d.deployment,
                     attributes=d.attributes)
        if participant is not None:
            job.participant.CopyFrom(participant)
        job.state.status = pa.JobStatus.JS_PENDING
        state = await self.agents.launch_job(job)
        if state is None:
            return
        job.state.CopyFrom(state)
        if d.id not in self.dispatches.get(d.room, {}):
            self.agents.terminate_job(job.id)  # deleted meanwhile
            return
        d.state.jobs.append(job)
        if state.participant_identity:
            self._agent_jobs[(d.room, state.participant_identity)] = job.id

    def _on_job_update(self, job: pa.Job) -> None:
        d = self.dispatches.get(job.room.name, {}).get(job.dispatch_id)
        if d is None:
            return
        for j in d.state.jobs:
            if j.id == job.id:
                j.state.CopyFrom(job.state)

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("agent_dispatch_task_failed", error=repr(task.exception()))

    @staticmethod
    def _copy(d: pad.AgentDispatch) -> pad.AgentDispatch:
        out = pad.AgentDispatch()
        out.CopyFrom(d)
        return out

    @staticmethod
    def _stripped(d: pad.AgentDispatch) -> pad.AgentDispatch:
        """Stored without jobs, as LiveKit's agent_dispatch hash keeps them."""
        out = pad.AgentDispatch()
        out.CopyFrom(d)
        del out.state.jobs[:]
        return out
