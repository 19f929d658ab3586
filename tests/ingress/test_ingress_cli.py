"""`lkserver ingress create|list|update|delete` against a real server, as a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from conftest import API_KEY, API_SECRET, ROOT


async def cli(server, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "LIVEKIT_URL": server.url, "LIVEKIT_API_KEY": API_KEY, "LIVEKIT_API_SECRET": API_SECRET,
           "COLUMNS": "250"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "lkserver", "ingress", *args, env=env,
                                                cwd=str(ROOT), stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


CONFIG = f"""
development: true
keys: {{{API_KEY}: {API_SECRET}}}
rtc: {{udp_port: 0, tcp_port: 0}}
ingress: {{rtmp_port: -1, rtmp_base_url: "rtmp://media.example.com/x"}}
"""


async def test_ingress_cli(server_factory, tmp_path):
    server = server_factory(config=CONFIG, data_dir=tmp_path / "data")
    rc, out, err = await cli(server, "create", "--input-type", "rtmp", "--room", "show", "--identity", "obs",
                             "--name", "main cam", "--video-preset", "h264_540p_25fps_2_layers")
    assert rc == 0, err
    lines = out.splitlines()
    ingress_id = lines[0].split()[2]
    assert lines[0] == f"Created ingress {ingress_id} (ENDPOINT_INACTIVE)"
    assert lines[1] == "URL: rtmp://media.example.com/x" and len(lines[2].removeprefix("Stream key: ")) == 12
    # the request as a JSON file, with LiveKit's field names (what `lk ingress create ingress.json` reads)
    spec = tmp_path / "whip.json"
    spec.write_text(json.dumps({"input_type": "WHIP_INPUT", "name": "browser", "room_name": "show",
                                "participant_identity": "web", "participant_name": "Web"}))
    rc, out, err = await cli(server, "create", str(spec), "--json")
    assert rc == 0, err
    whip = json.loads(out)
    assert whip["inputType"] == "WHIP_INPUT" and whip["participantName"] == "Web" and whip["url"].endswith("/w")
    rc, out, err = await cli(server, "list", "--room", "show")
    assert rc == 0 and ingress_id in out and whip["ingressId"] in out and "ENDPOINT_INACTIVE" in out, out
    rc, out, err = await cli(server, "update", "--id", ingress_id, "--disabled", "--participant-name", "Cam A",
                             "--json")
    assert rc == 0, err
    updated = json.loads(out)
    assert updated["enabled"] is False and updated["participantName"] == "Cam A" and updated["name"] == "main cam"
    assert updated["video"]["preset"] == "H264_540P_25FPS_2_LAYERS"
    patch = tmp_path / "update.json"
    patch.write_text(json.dumps({"ingress_id": whip["ingressId"], "room_name": "other"}))
    rc, out, err = await cli(server, "update", str(patch))
    assert rc == 0 and out.startswith(f"Updated ingress {whip['ingressId']}"), err
    rc, out, err = await cli(server, "list", "--id", whip["ingressId"], "--json")
    assert [i["roomName"] for i in json.loads(out)] == ["other"]
    rc, out, err = await cli(server, "delete", ingress_id)
    assert rc == 0 and out.strip() == f"Deleted ingress {ingress_id}"
    # errors: one line on stderr, exit 1
    rc, out, err = await cli(server, "delete", ingress_id)
    assert rc == 1 and err.strip() == "twirp error not_found: twirp error unknown: ingress does not exist"
    rc, out, err = await cli(server, "create", "--input-type", "rtmp", "--room", "show")
    assert rc == 1 and "invalid ingress: no participant identity" in err
    rc, out, err = await cli(server, "create", "--input-type", "srt", "--identity", "x")
    assert rc == 1 and "expected rtmp, whip or url" in err
    rc, out, err = await cli(server, "update", "--name", "x")
    assert rc == 1 and "an ingress id is required" in err
