"""`lkserver egress` against a real server: start (flags and a request file), list, update-layout,
update-stream errors, stop, and --follow stopped with Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

from conftest import ROOT
from egressfix import S, eg_server, lkapi, probe, wait_status  # noqa: F401
from livekit import api


def cli(server, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lkserver", "--url", server.url, "--dev-keys", "egress", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=str(ROOT),
                          env={**os.environ, "COLUMNS": "200"})  # a table wide enough for whole ids


async def test_cli_start_list_layout_stop(eg_server):
    async with lkapi(eg_server) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="cli-room"))
        r = await asyncio.to_thread(cli, eg_server, "start", "--room", "cli-room", "--layout", "grid-light",
                                    "--file", "cli/{room_name}.mp4")
        assert r.returncode == 0, r.stderr
        egress_id = r.stdout.strip()
        assert egress_id.startswith("EG_") and "started" in r.stderr
        await wait_status(lk, egress_id, (S.EGRESS_ACTIVE,))
        listed = await asyncio.to_thread(cli, eg_server, "list", "--room", "cli-room", "--json")
        assert [i["egressId"] for i in json.loads(listed.stdout)] == [egress_id]
        r = await asyncio.to_thread(cli, eg_server, "update-layout", "--id", egress_id, "--layout", "speaker-dark")
        assert r.returncode == 0 and "speaker-dark" in r.stdout, r.stderr
        parts = await lk.room.list_participants(api.ListParticipantsRequest(room="cli-room"))
        recorder = next(p for p in parts.participants if p.identity == egress_id)  # the hidden recorder
        assert json.loads(recorder.metadata) == {"layout": "speaker-dark"}
        r = await asyncio.to_thread(cli, eg_server, "update-stream", "--id", egress_id, "--add-urls", "rtmp://h/a/k")
        assert r.returncode == 1
        assert r.stderr.strip() == ("twirp error invalid_argument: twirp error unknown: "
                                    "UpdateStream called on non-streaming egress")
        await asyncio.sleep(1)
        r = await asyncio.to_thread(cli, eg_server, "stop", "--id", egress_id)
        assert r.returncode == 0 and f"Stopping {egress_id} (ENDING)" in r.stdout, r.stdout + r.stderr
        done = await wait_status(lk, egress_id, (S.EGRESS_COMPLETE,))
        table = await asyncio.to_thread(cli, eg_server, "list", "--id", egress_id)
        assert egress_id in table.stdout and "COMPLETE" in table.stdout and "room-composite" in table.stdout
    assert done.file_results[0].filename == "cli/cli-room.mp4"
    assert probe(done.file_results[0].location).streams == {"video": "h264", "audio": "aac"}


async def test_cli_follow_until_ctrl_c(eg_server, tmp_path):
    async with lkapi(eg_server) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="cli-follow"))
    request = tmp_path / "req.json"
    request.write_text(json.dumps({"room_name": "cli-follow", "audio_only": True,
                                   "file_outputs": [{"filepath": "cli/follow"}]}))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lkserver", "--url", eg_server.url, "--dev-keys", "egress", "start", str(request),
        "--type", "room-composite", "--follow", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=str(ROOT))
    await asyncio.sleep(4)
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    first = out.decode().splitlines()[0]
    assert first.endswith(" COMPLETE"), out.decode()
    assert "cli/follow.ogg" in out.decode()
    bad = await asyncio.to_thread(cli, eg_server, "stop", "--id", "EG_nope")
    assert bad.returncode == 1 and bad.stderr.strip() == "twirp error not_found: twirp error unknown: egress does not exist"
