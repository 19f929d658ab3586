"""Mixed rooms: the three official realtime clients in one room, each publishing to the others.

Browser = livekit-client in headless chromium, Python = `livekit` (PyPI), Node = `@livekit/rtc-node`.
Every subscriber checks the content it got: the tone's frequency, decoded 640x360 frames, data
messages; RPCs cross SDKs too.
"""

from __future__ import annotations

import asyncio

import rtcfix
from rtcfix import py_client, token
from sdkclients import (
    assert_tone,
    assert_video,
    browser_clients,
    events,
    node_client,
    short,
    wait_active,
)

rtc_server = rtcfix.rtc_server  # the fixture: one realtime server per module


def assert_data(report: dict, sender: str, text: str) -> None:
    got = [d["data"] for d in report["data"] if d["from"] == sender and d["topic"] == "t"]
    assert got == [f"{text}-{i}" for i in range(10)], short(report)


async def test_browser_publishes_python_and_node_subscribe(rtc_server):
    room = "mixed-web-pub"
    py = asyncio.ensure_future(py_client(rtc_server, token("py", room), "--seconds", "12", "--rpc-method", "echo"))
    node = asyncio.ensure_future(node_client(rtc_server, token("node", room), "--seconds", "12",
                                             "--rpc-method", "echo"))
    await wait_active(rtc_server, room, ["py", "node"])
    [web] = await browser_clients(rtc_server, [
        {"token": token("web", room), "seconds": 7, "publish": "av", "waitFor": "node", "sendData": "web",
         "callRpc": "node:echo:to-node"},
    ], tone=440)
    py_r, node_r = await py, await node
    assert not web["errors"] and not py_r["errors"] and not node_r["errors"], (short(web), short(py_r), short(node_r))
    for sub in (py_r, node_r):
        assert_tone(sub, "web", 440)
        assert_video(sub, "web", "640x360")
        assert_data(sub, "web", "web")
    assert web["rpc"] == "TO-NODE"
    assert [e["caller"] for e in events(node_r, "rpc_invoked")] == ["web"]


async def test_python_publishes_browser_and_node_subscribe(rtc_server):
    room = "mixed-py-pub"
    web = asyncio.ensure_future(browser_clients(rtc_server, [
        {"token": token("web", room), "seconds": 11, "rpcMethod": "echo"},
    ]))
    node = asyncio.ensure_future(node_client(rtc_server, token("node", room), "--seconds", "13"))
    await wait_active(rtc_server, room, ["web", "node"])
    py = await py_client(rtc_server, token("py", room), "--seconds", "7", "--wait-for", "web",
                         "--publish-audio", "523", "--publish-video", "640x360", "--send-data", "py",
                         "--call-rpc", "web:echo:to-web")
    [web_r], node_r = await web, await node
    assert not web_r["errors"] and not py["errors"] and not node_r["errors"], (short(web_r), short(py), short(node_r))
    for sub in (web_r, node_r):
        assert_tone(sub, "py", 523)
        assert_video(sub, "py", "640x360")
        assert_data(sub, "py", "py")
    assert py["rpc"] == "TO-WEB"
    assert [e["caller"] for e in events(web_r, "rpc_invoked")] == ["py"]


async def test_node_publishes_on_v0_browser_and_python_subscribe(rtc_server):
    room = "mixed-node-pub"
    web = asyncio.ensure_future(browser_clients(rtc_server, [
        {"token": token("web", room), "seconds": 11, "v0": True},
    ]))
    py = asyncio.ensure_future(py_client(rtc_server, token("py", room), "--seconds", "13", "--rpc-method", "echo"))
    await wait_active(rtc_server, room, ["web", "py"])
    node = await node_client(rtc_server, token("node", room), "--seconds", "7", "--single-pc", "off",
                             "--wait-for", "web", "--publish-audio", "660", "--publish-video", "640x360",
                             "--send-data", "node", "--call-rpc", "py:echo:to-py")
    [web_r], py_r = await web, await py
    assert not web_r["errors"] and not py_r["errors"] and not node["errors"], (short(web_r), short(py_r), short(node))
    for sub in (web_r, py_r):
        assert_tone(sub, "node", 660)
        assert_video(sub, "node", "640x360")
        assert_data(sub, "node", "node")
    assert node["rpc"] == "TO-PY"
    assert [e["caller"] for e in events(py_r, "rpc_invoked")] == ["node"]
