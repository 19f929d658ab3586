"""`lkserver sip ...` and `lkserver dispatch ...` against a real server, as a user runs them."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from conftest import API_KEY, API_SECRET, ROOT


async def lkcli(server, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env.update(LIVEKIT_URL=server.url, LIVEKIT_API_KEY=API_KEY, LIVEKIT_API_SECRET=API_SECRET)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "lkserver", *args, env=env, cwd=str(ROOT),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_sip_trunks_rules_and_errors(server, tmp_path):
    rc, out, err = await lkcli(server, "sip", "trunk", "create-inbound", "--name", "pbx", "--number", "+15550700",
                               "--auth-user", "u", "--auth-pass", "p", "--json")
    assert rc == 0, err
    inbound = json.loads(out)
    assert inbound["sipTrunkId"].startswith("ST_") and inbound["numbers"] == ["+15550700"]
    # the same number again: LiveKit's conflict, on one stderr line, exit 1
    rc, out, err = await lkcli(server, "sip", "trunk", "create-inbound", "--number", "+1 555 0700",
                               "--allowed-address", "10.0.0.1")
    assert rc == 1 and err.strip().startswith("twirp error invalid_argument: Conflicting inbound SIP Trunks:"), err
    f = tmp_path / "out.json"
    f.write_text(json.dumps({"name": "carrier", "address": "sip.example.com", "numbers": ["+15550701"]}))
    rc, out, err = await lkcli(server, "sip", "trunk", "create-outbound", "--file", str(f), "--transport", "tcp")
    assert rc == 0 and "Created outbound trunk ST_" in out, err
    rc, out, err = await lkcli(server, "sip", "trunk", "list")
    assert rc == 0 and "pbx" in out and "carrier" in out and "inbound" in out and "outbound" in out, out
    rc, out, _ = await lkcli(server, "sip", "trunk", "get", inbound["sipTrunkId"])
    assert json.loads(out)["name"] == "pbx"

    rc, out, err = await lkcli(server, "sip", "dispatch-rule", "create", "--direct", "front-desk", "--pin", "42",
                               "--trunk", inbound["sipTrunkId"], "--name", "desk", "--json")
    assert rc == 0, err
    rule = json.loads(out)
    assert rule["rule"]["dispatchRuleDirect"] == {"roomName": "front-desk", "pin": "42"}
    rc, out, _ = await lkcli(server, "sip", "dispatch-rule", "list")
    assert rule["sipDispatchRuleId"] in out and "direct front-desk (pin)" in out
    rc, out, err = await lkcli(server, "sip", "dispatch-rule", "delete", rule["sipDispatchRuleId"])
    assert rc == 0 and "Deleted" in out
    rc, out, err = await lkcli(server, "sip", "participant", "create", "--trunk", "ST_nope", "--call", "+1",
                               "--room", "r")
    assert rc == 1 and err.strip() == "twirp error not_found: requested sip trunk does not exist", err
    rc, out, err = await lkcli(server, "sip", "trunk", "delete", inbound["sipTrunkId"])
    assert rc == 0


async def test_dispatch_commands(server):
    rc, out, err = await lkcli(server, "dispatch", "create", "--room", "cli-room", "--agent-name", "bot",
                               "--metadata", "m", "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert d["id"].startswith("AD_") and d["agentName"] == "bot"
    rc, out, _ = await lkcli(server, "dispatch", "list", "cli-room", "--json")
    names = sorted(x.get("agentName", "") for x in json.loads(out))
    assert names == ["", "bot"]  # the room's implicit dispatch and ours
    rc, out, _ = await lkcli(server, "dispatch", "list", "cli-room")
    assert "<automatic>" in out and d["id"] in out
    rc, out, err = await lkcli(server, "dispatch", "delete", d["id"], "--room", "cli-room")
    assert rc == 0 and "Deleted dispatch" in out
    rc, out, err = await lkcli(server, "dispatch", "delete", d["id"], "--room", "cli-room")
    assert rc == 1 and "dispatch ID not found" in err
