"""The Ingress Twirp service against real servers, through the official livekit-api and ours.

LiveKit's control-plane semantics (reference server-api.md §7, media-services.md §2.3): ids and
stream keys, the configured base URLs, defaults per input type, validation errors with their
codes and messages, updates applying only the fields that are set, listing by room or id,
deletion, the ingressAdmin grant. Records survive a restart, on SQLite and on Redis, and no
webhook fires for create, update or delete of an idle ingress.
"""

from __future__ import annotations

import re

import aiohttp
import livekit.api as official
import pytest
from conftest import API_KEY, API_SECRET
from ingressfix import WebhookRecorder

from lkserver import api

RTMP_BASE = "rtmp://ingress.example.com:1935/live"
WHIP_BASE = "https://ingress.example.com/w"
BASE57 = re.compile(r"^[23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz]{12}$")


def config(extra: str = "", webhook: str = "") -> str:
    hook = f"webhook:\n  api_key: {API_KEY}\n  urls: [{webhook}]\n" if webhook else ""
    return f"""
development: true
keys: {{{API_KEY}: {API_SECRET}}}
rtc: {{udp_port: 0, tcp_port: 0}}
ingress:
  rtmp_port: -1
  rtmp_base_url: {RTMP_BASE}
  whip_base_url: {WHIP_BASE}
{hook}{extra}"""


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_crud_with_the_official_sdk(server_factory, tmp_path, request, backend):
    extra = ""
    if backend == "redis":
        extra = f"redis:\n  address: {request.getfixturevalue('redis_url')}\n"
    hooks = await WebhookRecorder().start()
    server = server_factory(config=config(extra, hooks.url), data_dir=tmp_path / "data")
    try:
        async with official.LiveKitAPI(server.url, API_KEY, API_SECRET) as lk:
            rtmp = await lk.ingress.create_ingress(official.CreateIngressRequest(
                input_type=official.IngressInput.RTMP_INPUT, name="obs", room_name="studio",
                participant_identity="cam", participant_name="Camera", participant_metadata="m",
                video=official.IngressVideoOptions(name="screen", source=official.TrackSource.SCREEN_SHARE,
                                                   preset=official.IngressVideoEncodingPreset.H264_1080P_30FPS_3_LAYERS),
                audio=official.IngressAudioOptions(preset=official.IngressAudioEncodingPreset.OPUS_MONO_64KBS)))
            whip = await lk.ingress.create_ingress(official.CreateIngressRequest(
                input_type=official.IngressInput.WHIP_INPUT, room_name="other", participant_identity="web",
                enabled=False))
            # creation defaults
            assert rtmp.ingress_id.startswith("IN_") and BASE57.match(rtmp.stream_key)
            assert rtmp.url == RTMP_BASE and whip.url == WHIP_BASE and rtmp.stream_key != whip.stream_key
            assert rtmp.reusable and rtmp.enable_transcoding and not rtmp.bypass_transcoding
            assert whip.reusable and not whip.enable_transcoding and whip.bypass_transcoding
            assert rtmp.state.status == official.IngressState.ENDPOINT_INACTIVE and not rtmp.HasField("enabled")
            assert whip.HasField("enabled") and not whip.enabled
            assert (rtmp.name, rtmp.room_name, rtmp.participant_identity, rtmp.participant_name,
                    rtmp.participant_metadata) == ("obs", "studio", "cam", "Camera", "m")
            assert rtmp.video.preset == official.IngressVideoEncodingPreset.H264_1080P_30FPS_3_LAYERS
            assert rtmp.video.source == official.TrackSource.SCREEN_SHARE and rtmp.video.name == "screen"
            # listing: all, by room, by id
            everything = await lk.ingress.list_ingress(official.ListIngressRequest())
            assert {i.ingress_id for i in everything.items} == {rtmp.ingress_id, whip.ingress_id}
            by_room = await lk.ingress.list_ingress(official.ListIngressRequest(room_name="studio"))
            assert [i.ingress_id for i in by_room.items] == [rtmp.ingress_id]
            by_id = await lk.ingress.list_ingress(official.ListIngressRequest(ingress_id=whip.ingress_id))
            assert [i.participant_identity for i in by_id.items] == ["web"]
            # updates: only what is set changes
            updated = await lk.ingress.update_ingress(official.UpdateIngressRequest(
                ingress_id=rtmp.ingress_id, room_name="studio-2", participant_name="Cam 2", enabled=False))
            assert (updated.room_name, updated.participant_name, updated.participant_identity, updated.name) == \
                ("studio-2", "Cam 2", "cam", "obs")
            assert not updated.enabled and updated.stream_key == rtmp.stream_key
            assert updated.video.preset == rtmp.video.preset
            with pytest.raises(official.TwirpError) as bad_update:
                await lk.ingress.update_ingress(official.UpdateIngressRequest(
                    ingress_id=rtmp.ingress_id, enable_transcoding=False, room_name="never"))
            unchanged = (await lk.ingress.list_ingress(official.ListIngressRequest(ingress_id=rtmp.ingress_id))).items[0]
        # records survive a restart of the server
        server.stop()
        server.start()
        async with official.LiveKitAPI(server.url, API_KEY, API_SECRET) as lk:
            after = await lk.ingress.list_ingress(official.ListIngressRequest())
            assert {i.ingress_id: i.room_name for i in after.items} == {rtmp.ingress_id: "studio-2",
                                                                        whip.ingress_id: "other"}
            deleted = await lk.ingress.delete_ingress(official.DeleteIngressRequest(ingress_id=rtmp.ingress_id))
            assert deleted.ingress_id == rtmp.ingress_id
            assert deleted.state.status == official.IngressState.ENDPOINT_INACTIVE
            rest = await lk.ingress.list_ingress(official.ListIngressRequest())
            assert [i.ingress_id for i in rest.items] == [whip.ingress_id]
            for call in (lk.ingress.delete_ingress(official.DeleteIngressRequest(ingress_id=rtmp.ingress_id)),
                         lk.ingress.list_ingress(official.ListIngressRequest(ingress_id=rtmp.ingress_id)),
                         lk.ingress.update_ingress(official.UpdateIngressRequest(ingress_id=rtmp.ingress_id,
                                                                                 name="x"))):
                with pytest.raises(official.TwirpError) as e:
                    await call
                assert (e.value.code, e.value.message) == ("not_found", "twirp error unknown: ingress does not exist")
            if backend == "redis":  # leave the shared Redis clean for other tests
                await lk.ingress.delete_ingress(official.DeleteIngressRequest(ingress_id=whip.ingress_id))
    finally:
        server.stop()
        await hooks.stop()
    assert bad_update.value.code == "invalid_argument"
    assert bad_update.value.message.endswith("bypassing transcoding impossible with selected input type")
    assert unchanged.room_name == "studio-2" and unchanged.enable_transcoding
    assert hooks.events == []  # no webhook for create, update or delete of an idle ingress


async def test_validation_and_grants(server_factory, tmp_path):
    server = server_factory(config=config(), data_dir=tmp_path / "data")
    async with api.LiveKitAPI(server.url, API_KEY, API_SECRET) as lk:
        cases = [
            (api.CreateIngressRequest(input_type=api.IngressInput.RTMP_INPUT, room_name="r"),
             "invalid_argument", "invalid ingress: no participant identity"),
            (api.CreateIngressRequest(input_type=5, participant_identity="p"), "invalid_argument",
             "invalid ingress type"),
            (api.CreateIngressRequest(input_type=api.IngressInput.URL_INPUT, participant_identity="p", room_name="r",
                                      url="rtsp://camera/1"), "invalid_argument", "invalid ingress: invalid url scheme rtsp"),
            (api.CreateIngressRequest(input_type=api.IngressInput.WHIP_INPUT, participant_identity="p",
                                      audio=api.IngressAudioOptions(preset=1)), "invalid_argument",
             ("invalid transcoding bypass configuration: audio encoding options must be empty if transcoding is "
             "disabled")),
            (api.CreateIngressRequest(input_type=api.IngressInput.RTMP_INPUT, participant_identity="p",
                                      video=api.IngressVideoOptions(options=api.IngressVideoEncodingOptions(
                                          video_codec=api.VideoCodec.H264_MAIN))),
             "invalid_argument", "invalid video parameters: video codec unsupported"),
        ]
        for req, code, message in cases:
            with pytest.raises(api.TwirpError) as e:
                await lk.ingress.create_ingress(req)
            assert (e.value.code, e.value.message) == (code, "twirp error unknown: " + message)
        assert (await lk.ingress.list_ingress(api.ListIngressRequest())).items == []
    # without the ingressAdmin grant: LiveKit's `unauthenticated` "permissions denied"
    async with aiohttp.ClientSession() as http:
        for grants in (api.VideoGrants(room_admin=True, room="r", room_create=True, room_list=True),
                       api.VideoGrants(room_record=True)):
            jwt = api.AccessToken(API_KEY, API_SECRET).with_grants(grants).to_jwt()
            for method in ("CreateIngress", "UpdateIngress", "ListIngress", "DeleteIngress"):
                async with http.post(f"{server.url}/twirp/livekit.Ingress/{method}", json={},
                                     headers={"Authorization": f"Bearer {jwt}"}) as resp:
                    assert resp.status == 401
                    assert await resp.json() == {"code": "unauthenticated", "msg": "permissions denied"}
