"""One registered agent worker: its registration, load, running jobs and pending job offers.

The worker side of LiveKit's `/agent` protocol (livekit pkg/agent/worker.go; reference
media-services.md §3.3), without sockets: `handle(WorkerMessage)` consumes what the worker
sends, `send` (a bounded outbox the connection drains) carries ServerMessages to it.
A job offer is an AvailabilityRequest answered within AVAILABILITY_TIMEOUT; an accepted offer
becomes a JobAssignment carrying a join token of kind AGENT, valid one hour.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from livekit.protocol import agent as pa
from livekit.protocol import models as pm

from .. import ids
from ..auth import AccessToken, VideoGrants
from ..logs import get_logger

log = get_logger("lkserver.agents")

REGISTER_TIMEOUT = 10.0
AVAILABILITY_TIMEOUT = 10.0
AGENT_TOKEN_TTL = datetime.timedelta(hours=1)
AGENT_NAME_ATTRIBUTE = "lk.agent_name"
MAX_OUTBOX = 256  # server messages queued for one worker; a worker this far behind is dropped

DEFAULT_PERMISSIONS = pm.ParticipantPermission(can_subscribe=True, can_publish=True, can_publish_data=True,
                                               can_update_metadata=True)


class WorkerUnavailable(Exception):
    """The worker declined the job, or closed; LiveKit tries the next worker."""


class AvailabilityTimeout(Exception):
    """The worker did not answer a job offer in time; LiveKit gives up on the job."""


@dataclass
class Registration:
    worker_id: str = field(default_factory=lambda: ids.new_id(ids.AGENT_WORKER))
    protocol: int = 1
    version: str = ""
    agent_name: str = ""
    namespace: str = ""
    job_type: int = pa.JobType.JT_ROOM
    permissions: pm.ParticipantPermission = field(default_factory=lambda: _copy(DEFAULT_PERMISSIONS))
    deployment: str = ""

    @property
    def key(self) -> tuple[str, str, int, str]:
        """Workers are pooled by (agent_name, namespace, job_type, deployment)."""
        return (self.agent_name, self.namespace, self.job_type, self.deployment)


def _copy(p: pm.ParticipantPermission) -> pm.ParticipantPermission:
    out = pm.ParticipantPermission()
    out.CopyFrom(p)
    return out


def registration_from(req: pa.RegisterWorkerRequest, base: Registration) -> Registration:
    """Apply a RegisterWorkerRequest (worker.go HandleRegister); raises ValueError on a bad type."""
    if req.type not in pa.JobType.values():
        raise ValueError("unknown job type")
    base.version, base.agent_name = req.version, req.agent_name
    base.namespace, base.job_type, base.deployment = req.namespace, req.type, req.deployment
    if req.HasField("allowed_permissions"):
        base.permissions = _copy(req.allowed_permissions)
    return base


class Worker:
    def __init__(self, registration: Registration, api_key: str, api_secret: str,
                 send: Callable[[pa.ServerMessage], bool]) -> None:
        self.reg = registration
        self.api_key = api_key
        self.api_secret = api_secret
        self._send = send
        self.status = pa.WorkerStatus.WS_AVAILABLE
        self.load = 0.0
        self.jobs: dict[str, pa.Job] = {}
        self._offers: dict[str, asyncio.Future[pa.AvailabilityResponse]] = {}
        self.closed = False
        # called with a job whose status the worker reported (the dispatcher records it)
        self.on_job_update: Callable[[pa.Job], None] = lambda job: None

    @property
    def id(self) -> str:
        return self.reg.worker_id

    def send(self, msg: pa.ServerMessage) -> None:
        if not self._send(msg):
            raise WorkerUnavailable("worker connection closed")

    # -- the server offers jobs ---------------------------------------------------------------------

    async def assign(self, job: pa.Job, timeout: float = AVAILABILITY_TIMEOUT) -> pa.JobState:
        """Offer a job; on acceptance send the assignment and return the running job state.

        Raises WorkerUnavailable when the worker declines or is gone, AvailabilityTimeout when
        it does not answer (worker.go AssignJob)."""
        if job.id in self._offers:
            raise ValueError("duplicate job assignment")
        offered = pa.Job()
        offered.CopyFrom(job)
        now = time.time_ns()
        state = offered.state
        state.worker_id, state.agent_id = self.id, ""
        state.updated_at = state.started_at = now
        state.status = pa.JobStatus.JS_RUNNING
        fut: asyncio.Future[pa.AvailabilityResponse] = asyncio.get_running_loop().create_future()
        self._offers[job.id] = fut
        try:
            self.send(pa.ServerMessage(availability=pa.AvailabilityRequest(job=offered)))
            try:
                res = await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                raise AvailabilityTimeout("agent worker availability timeout") from None
        finally:
            self._offers.pop(job.id, None)
        if res.terminate:
            state.ended_at = now
            state.status = pa.JobStatus.JS_SUCCESS
            return state
        if not res.available:
            raise WorkerUnavailable("agent worker not available")
        state.participant_identity = res.participant_identity
        attributes = dict(res.participant_attributes)
        attributes[AGENT_NAME_ATTRIBUTE] = self.reg.agent_name
        token = self.agent_token(offered.room.name, res.participant_identity, res.participant_name,
                                 res.participant_metadata, attributes)
        self.send(pa.ServerMessage(assignment=pa.JobAssignment(job=offered, token=token)))
        self.jobs[offered.id] = offered
        out = pa.JobState()
        out.CopyFrom(state)
        return out

    def agent_token(self, room: str, identity: str, name: str, metadata: str,
                    attributes: dict[str, str]) -> str:
        """protocol agent/token.go BuildAgentToken: kind agent, one hour, the worker's permissions."""
        p = self.reg.permissions
        grants = VideoGrants(room_join=True, agent=True, room=room, can_subscribe=p.can_subscribe,
                             can_publish=p.can_publish, can_publish_data=p.can_publish_data,
                             hidden=p.hidden, can_update_own_metadata=p.can_update_metadata,
                             can_subscribe_metrics=p.can_subscribe_metrics)
        return (AccessToken(self.api_key, self.api_secret).with_grants(grants).with_identity(identity)
                .with_name(name).with_kind("agent").with_ttl(AGENT_TOKEN_TTL).with_metadata(metadata)
                .with_attributes(attributes).to_jwt())

    def terminate(self, job_id: str, agent_left: bool = False) -> pa.JobState | None:
        """End a running job: JobTermination to the worker, and the job's final state."""
        if job_id not in self.jobs:
            return None
        try:
            self.send(pa.ServerMessage(termination=pa.JobTermination(job_id=job_id)))
        except WorkerUnavailable:
            pass
        return self.update_job(pa.UpdateJobStatus(
            job_id=job_id, status=pa.JobStatus.JS_FAILED if agent_left else pa.JobStatus.JS_SUCCESS,
            error="agent worker left the room" if agent_left else ""))

    # -- what the worker sends --------------------------------------------------------------------

    def handle(self, msg: pa.WorkerMessage) -> None:
        kind = msg.WhichOneof("message")
        if kind == "availability":
            fut = self._offers.get(msg.availability.job_id)
            if fut is not None and not fut.done():
                fut.set_result(msg.availability)
            else:
                log.warning("agent_availability_unknown_job", worker=self.id, job=msg.availability.job_id)
        elif kind == "update_job":
            self.update_job(msg.update_job)
        elif kind == "update_worker":
            u = msg.update_worker
            if u.HasField("status"):
                self.status = u.status
            self.load = u.load
        elif kind == "ping":
            self.send(pa.ServerMessage(pong=pa.WorkerPong(last_timestamp=msg.ping.timestamp,
                                                          timestamp=int(time.time() * 1000))))
        elif kind == "register":
            log.warning("agent_worker_registered_twice", worker=self.id)
        # simulate_job and migrate_job: not implemented by LiveKit's open-source server either

    def update_job(self, update: pa.UpdateJobStatus) -> pa.JobState | None:
        job = self.jobs.get(update.job_id)
        if job is None:
            return None
        now = time.time_ns()
        st = job.state
        st.updated_at = now
        if st.status == pa.JobStatus.JS_PENDING and update.status != pa.JobStatus.JS_PENDING:
            st.started_at = now
        st.status, st.error = update.status, update.error
        if update.status in (pa.JobStatus.JS_SUCCESS, pa.JobStatus.JS_FAILED):
            st.ended_at = now
            del self.jobs[update.job_id]
            log.info("agent_job_ended", worker=self.id, job=update.job_id,
                     status=pa.JobStatus.Name(update.status), error=update.error)
        self.on_job_update(job)
        out = pa.JobState()
        out.CopyFrom(st)
        return out

    def close(self) -> None:
        self.closed = True
        for fut in self._offers.values():
            if not fut.done():
                fut.set_exception(WorkerUnavailable("worker closed"))
