"""The `lkserver` CLI against a real server, as a user runs it (subprocess, LIVEKIT_* environment).

Tokens are checked with the official `livekit-api` TokenVerifier; a participant for the
`room participants` commands joins through a raw `/rtc` WebSocket (kept alive with signal pings).
Errors exit 1 with `twirp error <code>: <msg>` on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time

import aiohttp
import jwt
import pytest
from conftest import API_KEY, API_SECRET, ROOT
from livekit import api
from livekit.protocol.rtc import SignalRequest


class Result:
    def __init__(self, rc: int, stdout: str, stderr: str) -> None:
        self.rc, self.stdout, self.stderr = rc, stdout, stderr

    def json(self):
        return json.loads(self.stdout)

    def __repr__(self) -> str:
        return f"Result(rc={self.rc}, stdout={self.stdout!r}, stderr={self.stderr!r})"


async def lk(*args: str, url: str | None = None, key: str = API_KEY, secret: str = API_SECRET,
             env: dict[str, str] | None = None) -> Result:
    """Run `lkserver ARGS` without blocking the event loop (the test's WebSocket stays served)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    if url is not None:
        base.update(LIVEKIT_URL=url, LIVEKIT_API_KEY=key, LIVEKIT_API_SECRET=secret)
    base.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lkserver", *args, env=base, cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return Result(proc.returncode, out.decode(), err.decode())


@contextlib.asynccontextmanager
async def ws_participant(server, room: str, identity: str, **claims):
    """A participant in `room` for as long as the block runs (a raw signalling WebSocket)."""
    token = (api.AccessToken(API_KEY, API_SECRET).with_identity(identity).with_name(claims.get("name", ""))
             .with_grants(api.VideoGrants(room_join=True, room=room)).to_jwt())
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.ws_url}/rtc?access_token={token}&protocol=15") as ws:
            await ws.receive(timeout=10)  # join response

            async def keepalive() -> None:
                while True:
                    await ws.send_bytes(SignalRequest(ping=int(time.time() * 1000)).SerializeToString())
                    with contextlib.suppress(asyncio.TimeoutError):
                        while (await ws.receive(timeout=2)).type not in (aiohttp.WSMsgType.CLOSED,
                                                                          aiohttp.WSMsgType.CLOSING):
                            pass

            task = asyncio.create_task(keepalive())
            try:
                yield ws
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def twirp_error_line(res: Result, code: str) -> str:
    assert res.rc == 1, res
    assert res.stdout == "", res
    line = res.stderr.strip()
    assert line.startswith(f"twirp error {code}: "), res
    assert "\n" not in line and "Traceback" not in res.stderr, res
    return line


# -- token ---------------------------------------------------------------------------------------

async def test_token_create_verifies_with_the_official_sdk() -> None:
    res = await lk("--api-key", "APIcli", "--api-secret", "a-secret-of-some-length-1234567890",
                   "token", "create", "--join", "--room", "cli-room", "--identity", "alice", "--name", "Alice",
                   "--metadata", '{"m": 1}', "--valid-for", "90s", "--token-only")
    assert res.rc == 0, res
    token = res.stdout.strip()
    assert "\n" not in token and token.count(".") == 2
    claims = api.TokenVerifier("APIcli", "a-secret-of-some-length-1234567890").verify(token)
    assert (claims.identity, claims.name, claims.metadata) == ("alice", "Alice", '{"m": 1}')
    assert claims.video.room_join and claims.video.room == "cli-room"
    assert not claims.video.room_admin and not claims.video.room_create
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["exp"] - payload["nbf"] == 90 and payload["iss"] == "APIcli"
    with pytest.raises(Exception):
        api.TokenVerifier("APIcli", "another-secret-of-some-length-12345").verify(token)


@pytest.mark.parametrize("flags, grants, ttl", [
    (["--admin", "--room", "r1"], {"room_admin": True, "room": "r1"}, 300),
    (["--list", "--create", "--valid-for", "1h30m"], {"room_list": True, "room_create": True}, 5400),
    (["--record", "--valid-for", "24h"], {"room_record": True}, 86400),
])
async def test_token_create_grants_and_ttl(flags, grants, ttl) -> None:
    res = await lk("--dev-keys", "token", "create", *flags, "--json")
    assert res.rc == 0, res
    body = res.json()
    assert set(body) == {"url", "identity", "name", "room", "access_token"}
    claims = api.TokenVerifier(API_KEY, API_SECRET).verify(body["access_token"])
    for name, value in grants.items():
        assert getattr(claims.video, name) == value, name
    payload = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert payload["exp"] - payload["nbf"] == ttl


async def test_token_create_plain_output_and_errors() -> None:
    res = await lk("--dev-keys", "--url", "http://example:7880", "token", "create", "--list")
    assert res.rc == 0
    lines = res.stdout.strip().splitlines()
    assert lines[0] == "Project URL: http://example:7880"
    assert lines[1].startswith("Access token: ")
    api.TokenVerifier(API_KEY, API_SECRET).verify(lines[1].removeprefix("Access token: "))
    for args, message in [
        ((), "at least one grant is required"),
        (("--join", "--identity", "a"), "--room is required"),
        (("--join", "--room", "r"), "--identity is required"),
        (("--list", "--json", "--token-only"), "cannot be used together"),
    ]:
        res = await lk("--dev-keys", "token", "create", *args)
        assert res.rc == 1 and message in res.stderr, res
    res = await lk("--dev-keys", "token", "create", "--list", "--valid-for", "soon")
    assert res.rc == 2 and "is not a duration" in res.stderr
    res = await lk("token", "create", "--list")  # no key, no secret
    assert res.rc == 1 and "no API key and secret" in res.stderr


# -- rooms ---------------------------------------------------------------------------------------

async def test_room_commands(server) -> None:
    url = server.url
    res = await lk("room", "create", "cli-a", "--empty-timeout", "600", "--departure-timeout", "9",
                   "--max-participants", "3", "--metadata", "meta", "--json", url=url)
    assert res.rc == 0, res
    room = res.json()
    assert room["name"] == "cli-a" and room["emptyTimeout"] == 600 and room["departureTimeout"] == 9
    assert room["maxParticipants"] == 3 and room["metadata"] == "meta" and room["sid"].startswith("RM_")
    res = await lk("room", "create", "[bold]cli-b[/bold]", url=url)
    assert res.rc == 0 and "Created room [bold]cli-b[/bold] (RM_" in res.stdout, res
    # list: a table by default, JSON with --json, names as filters
    res = await lk("room", "list", url=url)
    assert res.rc == 0 and "cli-a" in res.stdout and room["sid"] in res.stdout and "[bold]cli-b[/bold]" in res.stdout
    res = await lk("room", "list", "cli-a", "nope", "--json", url=url)
    assert [r["name"] for r in res.json()] == ["cli-a"]
    # update-metadata (also clears it)
    res = await lk("room", "update-metadata", "cli-a", "--metadata", '{"x": "[y]"}', "--json", url=url)
    assert res.rc == 0 and res.json()["metadata"] == '{"x": "[y]"}'
    res = await lk("room", "update-metadata", "cli-a", "--metadata", "", url=url)
    assert res.rc == 0 and "Updated room cli-a" in res.stdout
    async with api.LiveKitAPI(url, API_KEY, API_SECRET) as client:
        rooms = {r.name: r for r in (await client.room.list_rooms(api.ListRoomsRequest())).rooms}
    assert rooms["cli-a"].metadata == "" and "[bold]cli-b[/bold]" in rooms
    # delete, then the errors a user meets
    res = await lk("room", "delete", "cli-a", url=url)
    assert res.rc == 0 and "Deleted room cli-a" in res.stdout
    line = twirp_error_line(await lk("room", "delete", "cli-a", url=url), "not_found")
    assert line.endswith("requested room does not exist")
    line = twirp_error_line(await lk("room", "create", "x" * 300, url=url), "invalid_argument")
    assert "room name length exceeds limits" in line
    twirp_error_line(await lk("room", "update-metadata", "cli-none", "--metadata", "m", url=url), "not_found")


async def test_room_commands_with_bad_credentials_or_server(server) -> None:
    line = twirp_error_line(await lk("room", "list", url=server.url, secret="wrong"), "unauthenticated")
    assert "invalid authorization token" in line
    line = twirp_error_line(await lk("room", "list", url=server.url, key="APInobody"), "unauthenticated")
    assert line.endswith("invalid API key")
    from conftest import free_port

    res = await lk("room", "list", url=f"http://127.0.0.1:{free_port()}")
    assert res.rc == 1 and res.stderr.startswith("cannot reach http://127.0.0.1:"), res
    res = await lk("room", "list", env={"LIVEKIT_URL": server.url})
    assert res.rc == 1 and "no API key and secret" in res.stderr


# -- participants --------------------------------------------------------------------------------

async def test_participant_commands(server) -> None:
    url, room = server.url, "cli-people"
    async with ws_participant(server, room, "bob", name="Bob"):
        res = await lk("room", "participants", "list", room, url=url)
        assert res.rc == 0 and "bob" in res.stdout and "Bob" in res.stdout and "STANDARD" in res.stdout, res
        res = await lk("room", "participants", "list", room, "--json", url=url)
        [p] = res.json()
        assert p["identity"] == "bob" and p["sid"].startswith("PA_")
        res = await lk("room", "participants", "get", "--room", room, "bob", url=url)
        assert res.rc == 0 and res.json()["sid"] == p["sid"]
        res = await lk("room", "participants", "update", "--room", room, "bob", "--name", "Robert",
                       "--metadata", "[m]", "--attribute", "team=blue", "--attribute", "x=1",
                       "--permissions", '{"canSubscribe": true, "canPublishData": true}', url=url)
        assert res.rc == 0, res
        updated = res.json()
        assert (updated["name"], updated["metadata"], updated["attributes"]) == (
            "Robert", "[m]", {"team": "blue", "x": "1"})
        assert updated["permission"].get("canPublish", False) is False  # permissions are replaced whole
        assert updated["permission"]["canSubscribe"] is True
        res = await lk("room", "participants", "update", "--room", room, "bob", "--attribute", "x=", url=url)
        assert res.json()["attributes"] == {"team": "blue"}  # an empty value deletes
        res = await lk("room", "participants", "update", "--room", room, "bob", "--attribute", "novalue", url=url)
        assert res.rc == 1 and "expected key=value" in res.stderr
        res = await lk("room", "participants", "update", "--room", room, "bob", "--permissions", "{nope", url=url)
        assert res.rc == 1 and "--permissions" in res.stderr
        res = await lk("room", "participants", "remove", "--room", room, "bob", url=url)
        assert res.rc == 0 and "Removed bob from cli-people" in res.stdout
        line = twirp_error_line(await lk("room", "participants", "get", "--room", room, "bob", url=url),
                                "not_found")
        assert line.endswith("participant does not exist")
    twirp_error_line(await lk("room", "participants", "remove", "--room", room, "ghost", url=url), "not_found")
    twirp_error_line(await lk("room", "participants", "update", "--room", room, "ghost", "--name", "G", url=url),
                     "not_found")
    res = await lk("room", "participants", "list", "cli-nobody", "--json", url=url)
    assert res.rc == 0 and res.json() == []
