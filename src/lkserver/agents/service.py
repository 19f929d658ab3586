"""The `/agent` WebSocket endpoint and the pool of registered workers.

LiveKit's agent service (livekit pkg/service/agentservice.go; reference media-services.md
§3.3): a worker connects with a token carrying the `agent` grant (401 otherwise; non-WebSocket
requests get 404), must register within 10 s, and is pooled by (agent name, namespace, job
type, deployment). A job goes to a worker picked at random weighted by (1 - load) among the
AVAILABLE ones; a worker that declines is skipped and the next tried.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web
from google.protobuf.message import DecodeError
from livekit.protocol import agent as pa
from livekit.protocol import models as pm

from ..logs import get_logger
from .worker import (
    REGISTER_TIMEOUT,
    AvailabilityTimeout,
    Registration,
    Worker,
    WorkerUnavailable,
    registration_from,
)

log = get_logger("lkserver.agents")

DEFAULT_TARGET_LOAD = 0.7
MAX_WORKER_MESSAGE = 1 << 20

# (request) -> (claims, api_key); raises with `.message` for a bad token (server/http.py's)
Authenticate = Callable[[web.Request], tuple[object, str]]


class AgentService:
    def __init__(self, keys: dict[str, str], authenticate: Authenticate, server_info: pm.ServerInfo,
                 target_load: float = DEFAULT_TARGET_LOAD) -> None:
        self.keys = keys
        self.authenticate = authenticate
        self.server_info = server_info
        self.target_load = target_load
        self.workers: dict[str, Worker] = {}
        self.job_workers: dict[str, Worker] = {}
        # the dispatcher's hook: a job's state changed on its worker
        self.on_job_update: Callable[[pa.Job], None] = lambda job: None
        self.on_worker_registered: Callable[[Worker], None] = lambda w: None

    def routes(self) -> dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]:
        return {"/agent": self.handle}

    # -- the socket ------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.Response(status=404, text="404 page not found")
        try:
            claims, api_key = self.authenticate(request)
        except Exception as e:  # noqa: BLE001 - the HTTP app's auth error (any kind) is a 401
            return web.Response(status=401, text=getattr(e, "message", "invalid token"))
        video = getattr(claims, "video", None)
        if claims is None or video is None or not video.agent:
            return web.Response(status=401, text="permissions denied")
        reg = Registration()
        try:
            reg.protocol = int(request.query.get("protocol", "1"))
        except ValueError:
            pass
        ws = web.WebSocketResponse(max_msg_size=MAX_WORKER_MESSAGE, autoping=True, heartbeat=30.0)
        await ws.prepare(request)
        outbox: asyncio.Queue[pa.ServerMessage] = asyncio.Queue(maxsize=256)

        def send(msg: pa.ServerMessage) -> bool:
            if ws.closed:
                return False
            try:
                outbox.put_nowait(msg)
            except asyncio.QueueFull:
                log.warning("agent_worker_too_slow", worker=reg.worker_id)
                asyncio.ensure_future(ws.close())
                return False
            return True

        writer = asyncio.ensure_future(self._write(ws, outbox))
        worker: Worker | None = None
        try:
            first = await self._register(ws, reg)
            if first is None:
                return ws
            worker = Worker(reg, api_key, self.keys.get(api_key, ""), send)
            worker.on_job_update = lambda job: self.on_job_update(job)
            send(pa.ServerMessage(register=pa.RegisterWorkerResponse(worker_id=reg.worker_id,
                                                                     server_info=self.server_info)))
            self.workers[worker.id] = worker
            log.info("agent_worker_registered", worker=worker.id, agent_name=reg.agent_name,
                     job_type=pa.JobType.Name(reg.job_type), namespace=reg.namespace, version=reg.version)
            self.on_worker_registered(worker)
            async for msg in ws:
                if msg.type != WSMsgType.BINARY:
                    continue
                try:
                    wm = pa.WorkerMessage.FromString(msg.data)
                except DecodeError:
                    log.warning("agent_bad_worker_message", worker=worker.id, size=len(msg.data))
                    continue
                try:
                    worker.handle(wm)
                except WorkerUnavailable:
                    break
        finally:
            if worker is not None:
                self._deregister(worker)
            writer.cancel()
            await ws.close()
        return ws

    async def _register(self, ws: web.WebSocketResponse, reg: Registration) -> Registration | None:
        """Read until a RegisterWorkerRequest arrives (pings answered), within REGISTER_TIMEOUT."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REGISTER_TIMEOUT
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning("agent_register_timeout", worker=reg.worker_id)
                return None
            try:
                msg = await ws.receive(timeout=remaining)
            except TimeoutError:
                log.warning("agent_register_timeout", worker=reg.worker_id)
                return None
            if msg.type != WSMsgType.BINARY:
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR):
                    return None
                continue
            try:
                wm = pa.WorkerMessage.FromString(msg.data)
            except DecodeError:
                return None
            kind = wm.WhichOneof("message")
            if kind == "register":
                try:
                    return registration_from(wm.register, reg)
                except ValueError as e:
                    log.warning("agent_register_refused", worker=reg.worker_id, error=str(e))
                    return None
            if kind == "ping":
                import time

                await ws.send_bytes(pa.ServerMessage(pong=pa.WorkerPong(
                    last_timestamp=wm.ping.timestamp, timestamp=int(time.time() * 1000))).SerializeToString())

    @staticmethod
    async def _write(ws: web.WebSocketResponse, outbox: asyncio.Queue[pa.ServerMessage]) -> None:
        try:
            while True:
                msg = await outbox.get()
                await ws.send_bytes(msg.SerializeToString())
        except (ConnectionError, RuntimeError):
            pass

    def _deregister(self, worker: Worker) -> None:
        worker.close()
        self.workers.pop(worker.id, None)
        for job_id, w in list(self.job_workers.items()):
            if w is worker:
                del self.job_workers[job_id]
        log.info("agent_worker_deregistered", worker=worker.id, agent_name=worker.reg.agent_name)

    # -- jobs ------------------------------------------------------------------------------------

    def pool(self, agent_name: str, namespace: str, job_type: int, deployment: str) -> list[Worker]:
        key = (agent_name, namespace, job_type, deployment)
        return [w for w in self.workers.values() if w.reg.key == key and not w.closed]

    def has_workers(self, agent_name: str, job_type: int, namespace: str = "", deployment: str = "") -> bool:
        return bool(self.pool(agent_name, namespace, job_type, deployment))

    def affinity(self, job: pa.Job) -> float:
        """What this node bids for a job: Σ max(0, target_load - load) over available workers."""
        return sum(max(0.0, self.target_load - w.load)
                   for w in self.pool(job.agent_name, job.namespace, job.type, job.deployment)
                   if w.status == pa.WorkerStatus.WS_AVAILABLE)

    def _pick(self, candidates: list[Worker]) -> Worker | None:
        weights = [max(0.0, 1.0 - w.load) for w in candidates]
        total = sum(weights)
        if not candidates or total <= 0:
            return None
        return random.choices(candidates, weights=weights)[0]

    async def launch_job(self, job: pa.Job) -> pa.JobState | None:
        """Assign a job to one of its pool's workers; None when none would take it."""
        tried: set[str] = set()
        while True:
            candidates = [w for w in self.pool(job.agent_name, job.namespace, job.type, job.deployment)
                          if w.id not in tried and w.status == pa.WorkerStatus.WS_AVAILABLE]
            worker = self._pick(candidates)
            if worker is None:
                log.warning("agent_no_worker_available", job=job.id, agent_name=job.agent_name,
                            room=job.room.name)
                return None
            tried.add(worker.id)
            try:
                state = await worker.assign(job)
            except WorkerUnavailable:
                continue
            except AvailabilityTimeout:
                log.warning("agent_availability_timeout", job=job.id, worker=worker.id)
                return None
            if state.status == pa.JobStatus.JS_RUNNING:
                self.job_workers[job.id] = worker
                log.info("agent_job_assigned", job=job.id, worker=worker.id, room=job.room.name,
                         agent_name=job.agent_name, identity=state.participant_identity)
            return state

    def terminate_job(self, job_id: str, agent_left: bool = False) -> pa.JobState | None:
        worker = self.job_workers.pop(job_id, None)
        if worker is None:
            return None
        return worker.terminate(job_id, agent_left)
