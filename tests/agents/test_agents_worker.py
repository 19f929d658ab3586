"""Agent dispatch and workers with the official `livekit-agents` framework (PyPI, its own venv).

A worker registers over /agent, gets the job for a room dispatched to its agent name (the API,
CreateRoom's `agents`, a token's room configuration) or, with no name, every room's implicit
dispatch; its participant joins as kind AGENT and shows in ListParticipants; ListDispatch shows
the dispatches and their jobs; DeleteDispatch ends the job (the agent leaves).
"""

from __future__ import annotations

import asyncio

import aiohttp
import livekit.api as lk
import pytest
from agentsfix import Worker
from conftest import API_KEY, API_SECRET
from livekit.protocol import agent_dispatch as pad
from livekit.protocol import models
from rtcfix import py_client, start_rtc_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_rtc_server(tmp_path_factory.mktemp("agents"))
    yield s
    s.stop()


async def participants(api: lk.LiveKitAPI, room: str) -> list[models.ParticipantInfo]:
    return list((await api.room.list_participants(lk.ListParticipantsRequest(room=room))).participants)


async def wait_participant(api: lk.LiveKitAPI, room: str, identity: str, present: bool = True) -> list:
    for _ in range(100):
        parts = await participants(api, room)
        if (identity in [p.identity for p in parts]) == present:
            return parts
        await asyncio.sleep(0.2)
    raise AssertionError(f"{identity} {'never joined' if present else 'never left'} {room}: {parts}")


async def test_explicit_dispatch_job_and_delete(server):
    api = lk.LiveKitAPI(server.url, API_KEY, API_SECRET)
    worker = await Worker.start(server.url, API_KEY, API_SECRET, "--agent-name", "helper")
    try:
        reg = await worker.wait_for("registered")
        assert reg["worker_id"].startswith("AW_")
        d = await api.agent_dispatch.create_dispatch(pad.CreateAgentDispatchRequest(
            agent_name="helper", room="agent-room", metadata='{"task": "greet"}'))
        assert d.id.startswith("AD_") and d.room == "agent-room" and d.state.created_at > 10**18
        job = await worker.wait_for("job", room="agent-room")
        assert job["agent_name"] == "helper" and job["metadata"] == '{"task": "greet"}'
        assert job["dispatch_id"] == d.id and job["job_id"].startswith("AJ_")
        parts = await wait_participant(api, "agent-room", job["identity"])
        agent = next(p for p in parts if p.identity == job["identity"])
        assert agent.kind == models.ParticipantInfo.Kind.AGENT
        assert agent.attributes["lk.agent_name"] == "helper"

        listed = await api.agent_dispatch.list_dispatch("agent-room")
        by_name = {x.agent_name: x for x in listed}
        assert set(by_name) == {"", "helper"}  # the room's implicit dispatch, and ours
        ours = by_name["helper"]
        assert [j.id for j in ours.state.jobs] == [job["job_id"]]
        assert ours.state.jobs[0].state.participant_identity == job["identity"]
        assert ours.state.jobs[0].state.worker_id == reg["worker_id"]
        assert (await api.agent_dispatch.get_dispatch(d.id, "agent-room")).id == d.id

        deleted = await api.agent_dispatch.delete_dispatch(d.id, "agent-room")
        assert deleted.id == d.id and deleted.state.deleted_at > 0
        await wait_participant(api, "agent-room", job["identity"], present=False)
        with pytest.raises(lk.TwirpError) as e:
            await api.agent_dispatch.delete_dispatch(d.id, "agent-room")
        assert (e.value.code, e.value.message) == ("not_found", "twirp error unknown: dispatch ID not found")
        with pytest.raises(lk.TwirpError) as e:
            await api.agent_dispatch.list_dispatch("no-such-room")
        assert (e.value.code, e.value.message) == ("unavailable", "twirp error unknown: no response from servers")
    finally:
        await worker.stop()
        await api.aclose()


async def test_automatic_worker_gets_every_room(server):
    api = lk.LiveKitAPI(server.url, API_KEY, API_SECRET)
    worker = await Worker.start(server.url, API_KEY, API_SECRET)
    try:
        await worker.wait_for("registered")
        await api.room.create_room(lk.CreateRoomRequest(name="auto-room"))
        job = await worker.wait_for("job", room="auto-room")
        assert job["agent_name"] == ""
        await wait_participant(api, "auto-room", job["identity"])
        # a room that asks for a named agent gets no automatic one
        await api.room.create_room(lk.CreateRoomRequest(
            name="named-room", agents=[pad.RoomAgentDispatch(agent_name="someone-else")]))
        listed = await api.agent_dispatch.list_dispatch("named-room")
        assert [x.agent_name for x in listed] == ["someone-else"] and not listed[0].state.jobs
        await asyncio.sleep(1.0)
        assert not [e for e in worker.events if e.get("room") == "named-room"]
    finally:
        await worker.stop()
        await api.aclose()


async def test_room_config_dispatches(server):
    """CreateRoom's `agents` and a join token's room configuration dispatch a named agent."""
    api = lk.LiveKitAPI(server.url, API_KEY, API_SECRET)
    worker = await Worker.start(server.url, API_KEY, API_SECRET, "--agent-name", "concierge")
    try:
        await worker.wait_for("registered")
        await api.room.create_room(lk.CreateRoomRequest(
            name="lobby", agents=[pad.RoomAgentDispatch(agent_name="concierge", metadata="from-create")]))
        job = await worker.wait_for("job", room="lobby")
        assert job["metadata"] == "from-create"
        tok = (lk.AccessToken(API_KEY, API_SECRET).with_identity("guest")
               .with_grants(lk.VideoGrants(room_join=True, room="token-room"))
               .with_room_config(lk.RoomConfiguration(agents=[
                   pad.RoomAgentDispatch(agent_name="concierge", metadata="from-token")])).to_jwt())
        guest = asyncio.ensure_future(py_client(server, tok, "--seconds", "6"))
        job2 = await worker.wait_for("job", room="token-room", timeout=40)
        assert job2["metadata"] == "from-token"
        report = await guest
        assert job2["identity"] in report["remote_final"] or any(
            e.get("identity") == job2["identity"] for e in report["events"])
    finally:
        await worker.stop()
        await api.aclose()


async def test_agent_endpoint_refuses_without_agent_grant(server):
    tok = (lk.AccessToken(API_KEY, API_SECRET).with_identity("not-a-worker")
           .with_grants(lk.VideoGrants(room_join=True, room="x")).to_jwt())
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{server.url}/agent", headers={"Authorization": f"Bearer {tok}"}) as r:
            assert r.status == 404  # not a WebSocket request
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await s.ws_connect(f"{server.url}/agent", headers={"Authorization": f"Bearer {tok}"})
        assert e.value.status == 401
