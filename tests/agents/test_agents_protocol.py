"""The /agent protocol with hand-driven workers (livekit-protocol messages over a WebSocket):
registration, job offers to the available worker, a declined offer going to the next worker,
workers that report FULL getting nothing, pings answered, a job status update reaching
ListDispatch, and the job ended when its dispatch is deleted (JobTermination)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import livekit.api as lk
from conftest import API_KEY, API_SECRET
from livekit.protocol import agent as pa
from livekit.protocol import agent_dispatch as pad


class RawWorker:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session: aiohttp.ClientSession) -> None:
        self.ws, self.session = ws, session
        self.offers: list[pa.AvailabilityRequest] = []
        self.assignments: list[pa.JobAssignment] = []
        self.terminations: list[str] = []
        self.pongs: list[pa.WorkerPong] = []
        self.accept = True
        self.worker_id = ""
        self._reader: asyncio.Task | None = None

    @classmethod
    async def connect(cls, url: str, agent_name: str, *, load: float = 0.0,
                      status: int = pa.WorkerStatus.WS_AVAILABLE) -> RawWorker:
        tok = lk.AccessToken(API_KEY, API_SECRET).with_grants(lk.VideoGrants(agent=True)).to_jwt()
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(f"{url}/agent?protocol=1", headers={"Authorization": f"Bearer {tok}"})
        w = cls(ws, session)
        await w.send(pa.WorkerMessage(register=pa.RegisterWorkerRequest(
            type=pa.JobType.JT_ROOM, agent_name=agent_name, version="test")))
        first = pa.ServerMessage.FromString((await ws.receive(timeout=10)).data)
        assert first.WhichOneof("message") == "register"
        w.worker_id = first.register.worker_id
        await w.send(pa.WorkerMessage(update_worker=pa.UpdateWorkerStatus(status=status, load=load)))
        w._reader = asyncio.ensure_future(w._read())
        return w

    async def send(self, msg: pa.WorkerMessage) -> None:
        await self.ws.send_bytes(msg.SerializeToString())

    async def _read(self) -> None:
        async for m in self.ws:
            msg = pa.ServerMessage.FromString(m.data)
            kind = msg.WhichOneof("message")
            if kind == "availability":
                self.offers.append(msg.availability)
                job = msg.availability.job
                await self.send(pa.WorkerMessage(availability=pa.AvailabilityResponse(
                    job_id=job.id, available=self.accept, participant_identity=f"agent-{job.id}",
                    participant_name="Raw agent")))
            elif kind == "assignment":
                self.assignments.append(msg.assignment)
            elif kind == "termination":
                self.terminations.append(msg.termination.job_id)
            elif kind == "pong":
                self.pongs.append(msg.pong)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self.ws.close()
        await self.session.close()


async def until(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition never met"
        await asyncio.sleep(0.05)


async def test_offers_declines_load_and_termination(server):
    api = lk.LiveKitAPI(server.url, API_KEY, API_SECRET)
    full = await RawWorker.connect(server.url, "raw", status=pa.WorkerStatus.WS_FULL)
    busy = await RawWorker.connect(server.url, "raw", load=1.0)  # no spare capacity: weight 0
    decliner = await RawWorker.connect(server.url, "raw")
    decliner.accept = False
    taker = await RawWorker.connect(server.url, "raw", load=0.9)  # weight 0.1 against the decliner's 1.0
    workers = [full, busy, decliner, taker]
    try:
        assert len({w.worker_id for w in workers}) == 4 and all(w.worker_id.startswith("AW_") for w in workers)
        await taker.send(pa.WorkerMessage(ping=pa.WorkerPing(timestamp=1234)))
        await until(lambda: taker.pongs)
        assert taker.pongs[0].last_timestamp == 1234

        for i in (1, 2):
            await api.agent_dispatch.create_dispatch(pad.CreateAgentDispatchRequest(agent_name="raw", room=f"other-{i}"))
        d = await api.agent_dispatch.create_dispatch(pad.CreateAgentDispatchRequest(
            agent_name="raw", room="raw-room", metadata="hello"))
        await until(lambda: len(taker.assignments) == 3)
        assert not full.offers and not busy.offers  # FULL, and no spare load, get no offers
        assert decliner.offers, "the lighter worker was never offered a job (p < 0.001)"
        assigned = {x.job.id for x in taker.assignments}
        assert {o.job.id for o in decliner.offers} <= assigned  # declined, then taken by the next worker
        a = next(x for x in taker.assignments if x.job.room.name == "raw-room")
        assert a.job.room.name == "raw-room" and a.job.metadata == "hello" and a.job.dispatch_id == d.id
        claims = lk.TokenVerifier(API_KEY, API_SECRET).verify(a.token)
        assert claims.identity == f"agent-{a.job.id}" and claims.kind == "agent"
        assert claims.video.agent and claims.video.room_join and claims.video.room == "raw-room"
        assert claims.attributes == {"lk.agent_name": "raw"}

        await taker.send(pa.WorkerMessage(update_job=pa.UpdateJobStatus(
            job_id=a.job.id, status=pa.JobStatus.JS_RUNNING)))
        await asyncio.sleep(0.3)
        [ours] = [x for x in await api.agent_dispatch.list_dispatch("raw-room") if x.id == d.id]
        assert [j.state.status for j in ours.state.jobs] == [pa.JobStatus.JS_RUNNING]
        assert ours.state.jobs[0].state.worker_id == taker.worker_id

        await api.agent_dispatch.delete_dispatch(d.id, "raw-room")
        await until(lambda: taker.terminations)
        assert taker.terminations == [a.job.id]  # only the deleted dispatch ends
    finally:
        for w in workers:
            await w.close()
        await api.aclose()


async def test_worker_without_agent_grant_or_register(server):
    tok = lk.AccessToken(API_KEY, API_SECRET).with_grants(lk.VideoGrants(agent=True)).to_jwt()
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(f"{server.url}/agent", headers={"Authorization": f"Bearer {tok}"})
        await ws.send_bytes(pa.WorkerMessage(register=pa.RegisterWorkerRequest(type=99)).SerializeToString())
        msg = await ws.receive(timeout=5)  # an unknown job type: the server closes the socket
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        await ws.close()
