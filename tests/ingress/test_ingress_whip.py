"""WHIP ingress end to end: aiortc publishes over WHIP, the official Python SDK watches the room.

Passthrough (the default for WHIP: the client's VP8 and Opus reach the room untouched) and
transcoding (enable_transcoding: decoded and re-encoded to the preset's H.264 layers); the HTTP
exchange as LiveKit's WHIP server answers it (201 + Location + ETag, path or Bearer stream key,
PATCH for ICE, DELETE ending the session, errors with the message as the body).
"""

from __future__ import annotations

import asyncio
import json
import sys

import aiohttp
import pytest
from ingressfix import (
    WHIP_CLIENT,
    dump,
    ingress_failures,
    ingress_info,
    lkapi,
    poll,
    py_client,
    simulcast_seen,
    start_ingress_server,
    token,
    tone_and_sizes,
)

from lkserver import api


async def whip_client(endpoint: str, *args: str, timeout: float = 60.0) -> dict:
    proc = await asyncio.create_subprocess_exec(sys.executable, str(WHIP_CLIENT), endpoint, *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, err.decode()[-3000:]
    return json.loads(lines[-1])


def whip_create(room: str, identity: str, **kw) -> api.CreateIngressRequest:
    return api.CreateIngressRequest(input_type=api.IngressInput.WHIP_INPUT, room_name=room,
                                    participant_identity=identity, **kw)


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_whip_passthrough(tmp_path, codec):
    server = start_ingress_server(tmp_path / "srv")
    try:
        async with lkapi(server) as lk:
            info = await lk.ingress.create_ingress(whip_create("whip", "browser", participant_name="Browser"))
            assert info.url == f"{server.url}/w" and not info.enable_transcoding and info.bypass_transcoding
            viewer = asyncio.ensure_future(py_client(server, token("viewer", "whip"), "--seconds", "8"))
            client = asyncio.ensure_future(whip_client(f"{info.url}/{info.stream_key}", "--seconds", "10",
                                                       "--hz", "550", "--size", "640x480", "--delete",
                                                       "--codec", codec.lower()))
            live = await poll(lambda: ingress_info(lk, info.ingress_id),
                              lambda i: i.state.status == api.IngressState.ENDPOINT_PUBLISHING
                              and i.state.video.width and len(i.state.tracks) == 2,
                              what="PUBLISHING with both tracks")
            report = await viewer
            result = await client
            ended = await poll(lambda: ingress_info(lk, info.ingress_id),
                               lambda i: i.state.status == api.IngressState.ENDPOINT_INACTIVE, what="INACTIVE")
    finally:
        server.stop()
    assert result["post_status"] == 201, result
    h = result["post_headers"]
    assert h["Location"] == f"/w/{info.stream_key}/{live.state.resource_id}" and h["Content-Type"] == "application/sdp"
    assert len(h["ETag"]) == 8 and "Location" in h["Access-Control-Expose-Headers"]
    assert f"{codec}/90000" in result["answer_codecs"] and "opus/48000/2" in result["answer_codecs"]
    assert result["delete_status"] == 200 and result["delete_again_status"] == 404
    assert result["delete_again_body"] == "ingress not found"
    peak, sizes = tone_and_sizes(report, "browser")
    assert abs(peak - 550) < 5 and sizes.get("640x480", 0) > 30, dump(report)
    st = live.state
    assert st.resource_id.startswith("WH_") and st.video.mime_type == f"video/{codec}"
    assert (st.video.width, st.video.height) == (640, 480) and st.audio.mime_type == "audio/opus"
    assert {t.mime_type for t in st.tracks} == {f"video/{codec}", "audio/opus"}
    assert ended.state.ended_at and not ended.state.error


async def test_whip_transcoding_bearer_and_ice_restart(tmp_path):
    server = start_ingress_server(tmp_path / "srv")
    try:
        async with lkapi(server) as lk:
            info = await lk.ingress.create_ingress(whip_create("whip-tx", "encoder", enable_transcoding=True))
            assert info.enable_transcoding and not info.bypass_transcoding
            viewer = asyncio.ensure_future(py_client(server, token("viewer", "whip-tx"), "--seconds", "8"))
            client = asyncio.ensure_future(whip_client(info.url, "--bearer", info.stream_key, "--seconds", "10",
                                                       "--hz", "770", "--size", "640x360", "--patch-ice"))
            live = await poll(lambda: ingress_info(lk, info.ingress_id),
                              lambda i: i.state.status == api.IngressState.ENDPOINT_PUBLISHING
                              and len(i.state.tracks) == 2, what="PUBLISHING with both tracks")
            report = await viewer
            result = await client
            # the client went away without DELETE: its session ends when the media stops
            ended = await poll(lambda: ingress_info(lk, info.ingress_id),
                               lambda i: i.state.status != api.IngressState.ENDPOINT_PUBLISHING,
                               timeout=40, what="the session's end")
    finally:
        server.stop()
    assert result["post_status"] == 201, result
    assert result["patch_status"] == 200 and "a=ice-ufrag:" in result["patch_body"], result
    assert "a=candidate:" in result["patch_body"] and result["patch_wrong_etag_status"] == 412
    peak, sizes = tone_and_sizes(report, "encoder")
    assert abs(peak - 770) < 5 and simulcast_seen(sizes, "640x360", ["640x360", "320x180"]), dump(report)
    video = next(t for t in live.state.tracks if t.type == api.TrackType.VIDEO)
    assert video.mime_type == "video/H264"  # re-encoded with the default preset's codec
    assert [(v.width, v.height) for v in video.layers] == [(640, 360), (320, 180)]  # no upscaling
    assert ended.state.status in (api.IngressState.ENDPOINT_INACTIVE, api.IngressState.ENDPOINT_ERROR)


async def test_whip_refusals(tmp_path):
    server = start_ingress_server(tmp_path / "srv")
    try:
        async with lkapi(server) as lk:
            rtmp = await lk.ingress.create_ingress(api.CreateIngressRequest(
                input_type=api.IngressInput.RTMP_INPUT, room_name="r", participant_identity="p"))
            off = await lk.ingress.create_ingress(whip_create("r", "q", enabled=False))
            ok = await lk.ingress.create_ingress(whip_create("r", "w"))
        base = f"{server.url}/w"
        offer_free = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
        async with aiohttp.ClientSession() as http:
            results = {}
            for name, url, body, headers in [
                ("unknown key", f"{base}/NOSUCHKEY", offer_free, {}),
                ("no key", base, offer_free, {}),
                ("disabled", f"{base}/{off.stream_key}", offer_free, {}),
                ("rtmp key", f"{base}/{rtmp.stream_key}", offer_free, {}),
                ("bad sdp", f"{base}/{ok.stream_key}", "hello", {}),
                ("no media", f"{base}/{ok.stream_key}", offer_free, {}),
                ("unknown resource", f"{base}/{ok.stream_key}/WH_nothing", "", {}),
            ]:
                method = "DELETE" if name == "unknown resource" else "POST"
                async with http.request(method, url, data=body, headers=headers) as resp:
                    results[name] = (resp.status, await resp.text())
            async with http.options(f"{base}/{ok.stream_key}") as resp:
                options = (resp.status, resp.headers.get("Access-Control-Allow-Origin"))
    finally:
        server.stop()
    assert results["unknown key"] == (404, "ingress does not exist")
    assert results["no key"] == (400, "missing stream key")
    assert results["disabled"] == (403, "session is disabled")
    assert results["rtmp key"] == (400, "invalid ingress type")
    assert results["bad sdp"][0] == 400 and results["bad sdp"][1].startswith("invalid SDP offer")
    assert results["no media"][0] == 400 and "no audio or video" in results["no media"][1]
    assert results["unknown resource"] == (404, "ingress not found")
    assert options == (204, "*")
    assert ingress_failures(server.log_text()) == []
