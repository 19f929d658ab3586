"""Egress request plans without a server: LiveKit egress's defaults, presets, file types and
extensions, filename templates, HLS naming, stream URL checks and redaction (egress pkg/config).

The layouts are in test_egress_compositor.py."""

from __future__ import annotations

import time

import pytest
from livekit.protocol import egress as pe
from livekit.protocol import models as pm

from lkserver.egress import plan as P
from lkserver.egress.manager import auto_track_filepath
from lkserver.egress.errors import EgressError

NOW = time.mktime((2022, 10, 4, 1, 13, 6, 0, 0, -1))


def build(kind: str, req, **kw):
    return P.build_plan(kind, req, "EG_test", room_id="RM_x", now=NOW, **kw)


def rc(**kw) -> pe.RoomCompositeEgressRequest:
    return pe.RoomCompositeEgressRequest(room_name="testroom", **kw)


def test_defaults_and_presets():
    plan, info = build(P.ROOM_COMPOSITE, rc(file_outputs=[pe.EncodedFileOutput()]))
    assert (plan.width, plan.height, plan.framerate, plan.video_bitrate, plan.depth) == (1280, 720, 30, 3000, 24)
    assert (plan.audio_codec, plan.video_codec, plan.audio_bitrate, plan.audio_frequency) == \
        (P.AAC, P.H264, 128, 44100)
    assert info.status == pe.EgressStatus.EGRESS_STARTING and info.started_at == int(NOW * 1e9)
    # "" -> {room_name}-{time}.mp4, as LiveKit's README example
    assert plan.file.filepath == "testroom-2022-10-04T011306.mp4" == info.file_results[0].filename
    assert info.file.filename == plan.file.filepath  # the deprecated single result mirrors it
    plan, _ = build(P.ROOM_COMPOSITE, rc(preset=pe.EncodingOptionsPreset.PORTRAIT_H264_1080P_60,
                                         file_outputs=[pe.EncodedFileOutput()]))
    assert (plan.width, plan.height, plan.framerate, plan.video_bitrate) == (1080, 1920, 60, 6000)


@pytest.mark.parametrize("filepath,audio_only,expected", [
    ("a/b/", False, "a/b/testroom-2022-10-04T011306.mp4"),
    ("rec/{room_name}-{room_id}", False, "rec/testroom-RM_x.mp4"),
    ("x.ogg", False, "x.mp4"),  # a known wrong extension is replaced
    ("x.data", False, "x.data.mp4"),  # an unknown one is kept
    ("../../etc/x", False, "etc/x.mp4"),  # leading ../ are cleaned
    ("audio", True, "audio.ogg"),  # audio only: OGG first
    ("{utc}", False, "20221004011306000.mp4" if time.timezone == 0 else None),
])
def test_file_names(filepath, audio_only, expected):
    plan, _ = build(P.ROOM_COMPOSITE, rc(audio_only=audio_only, file_outputs=[pe.EncodedFileOutput(filepath=filepath)]))
    if expected is not None:
        assert plan.file.filepath == expected


def test_segments_names():
    seg = pe.SegmentedFileOutput(filename_prefix="hls/seg", playlist_name="hls/index.m3u8",
                                 live_playlist_name="hls/live.m3u8")
    plan, info = build(P.ROOM_COMPOSITE, rc(segment_outputs=[seg]))
    s = plan.segments
    assert (s.prefix, s.playlist, s.live_playlist, s.storage_dir, s.duration) == \
        ("seg", "index.m3u8", "live.m3u8", "hls/", 4)
    assert info.segment_results[0].playlist_name == "hls/index.m3u8"
    assert info.segment_results[0].live_playlist_name == "hls/live.m3u8"
    plan, _ = build(P.ROOM_COMPOSITE, rc(segment_outputs=[pe.SegmentedFileOutput()]))
    assert (plan.segments.prefix, plan.segments.playlist) == ("testroom-2022-10-04T011306",
                                                              "testroom-2022-10-04T011306.m3u8")
    plan, _ = build(P.ROOM_COMPOSITE, rc(segment_outputs=[pe.SegmentedFileOutput(filename_prefix="only/p")]))
    assert (plan.segments.storage_dir, plan.segments.prefix, plan.segments.playlist) == ("only/", "p", "p.m3u8")
    for live, msg in (("other/live", "live_playlist_name must be in same directory as playlist_name"),
                      ("hls/index", "live_playlist_name cannot be identical to playlist_name")):
        with pytest.raises(EgressError) as e:
            build(P.ROOM_COMPOSITE, rc(segment_outputs=[pe.SegmentedFileOutput(
                playlist_name="hls/index.m3u8", live_playlist_name=live)]))
        assert e.value.msg.endswith(msg)


def test_stream_urls_redacted_and_checked():
    plan, info = build(P.ROOM_COMPOSITE, rc(stream_outputs=[pe.StreamOutput(urls=[
        "rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl", "mux://streamkey123"])]))
    assert [s.url for s in info.stream_results] == ["rtmp://a.rtmp.youtube.com/live2/{abc...jkl}",
                                                    "rtmps://global-live.mux.com:443/app/{str...123}"]
    assert list(info.room_composite.stream_outputs[0].urls) == ["rtmp://a.rtmp.youtube.com/live2/{abc...jkl}",
                                                                 "mux://{str...123}"]
    assert plan.stream.urls[1][0] == "rtmps://global-live.mux.com:443/app/streamkey123"
    assert plan.key_frame_interval == 4.0  # streams default to a 4 s GOP
    assert P.redact_identifier("ab") == "{...}" and P.redact_identifier("abcdefghi") == "{abc...ghi}"


def test_storage_secrets_redacted_in_the_stored_request():
    s3 = pe.S3Upload(access_key="AK", secret="SK", bucket="b", session_token="t")
    plan, info = build(P.ROOM_COMPOSITE, rc(file_outputs=[pe.EncodedFileOutput(s3=s3)]))
    stored = info.room_composite.file_outputs[0].s3
    assert (stored.access_key, stored.secret, stored.session_token, stored.bucket) == \
        ("{access_key}", "{secret}", "{session_token}", "b")
    assert plan.file.storage == {"s3": {"access_key": "AK", "secret": "SK", "bucket": "b", "session_token": "t"}}


def test_v2_requests():
    req = pe.StartEgressRequest(room_name="testroom", template=pe.TemplateSource(layout="speaker", audio_only=True),
                                outputs=[pe.Output(file=pe.FileOutput(filepath="v2/a"))],
                                storage=pe.StorageConfig(azure=pe.AzureBlobUpload(account_name="acc",
                                                                                 account_key="k", container_name="c")))
    plan, info = build(P.EGRESS, req)
    assert plan.source == "template" and plan.file.filepath == "v2/a.ogg"
    assert plan.file.storage == {"azure": {"account_name": "acc", "account_key": "k", "container_name": "c"}}
    assert info.egress.storage.azure.account_key == "{account_key}"
    media = pe.StartEgressRequest(room_name="testroom", preset=pe.EncodingOptionsPreset.PASSTHROUGH,
                                  media=pe.MediaSource(video_track_id="TR_v"),
                                  outputs=[pe.Output(file=pe.FileOutput())])
    plan, _ = build(P.EGRESS, media)
    assert plan.passthrough and plan.source == "track" and plan.track_id == "TR_v"
    both = pe.StartEgressRequest(room_name="testroom", preset=pe.EncodingOptionsPreset.PASSTHROUGH,
                                 media=pe.MediaSource(video_track_id="TR_v", audio=pe.AudioConfig(
                                     routes=[pe.AudioRoute(track_id="TR_a")])),
                                 outputs=[pe.Output(file=pe.FileOutput())])
    with pytest.raises(EgressError) as e:
        build(P.EGRESS, both)
    assert e.value.msg.endswith("request has missing or invalid field: passthrough track_id")


def test_track_binding_names_the_file_after_the_track():
    plan, info = build(P.TRACK, pe.TrackEgressRequest(room_name="testroom", track_id="TR_a",
                                                      file=pe.DirectFileOutput(filepath="{track_type}-{track_source}-{track_id}")))
    P.bind_track(plan, info, mime="audio/opus", track_id="TR_a", kind="audio", source="microphone",
                 identity="alice", now=NOW)
    assert plan.file.filepath == "audio-microphone-TR_a.ogg" == info.file_results[0].filename
    plan, info = build(P.TRACK, pe.TrackEgressRequest(room_name="testroom", track_id="TR_v",
                                                      file=pe.DirectFileOutput(filepath="t/")))
    P.bind_track(plan, info, mime="video/VP8", track_id="TR_v", kind="video", source="camera", identity="a", now=NOW)
    assert plan.file.filepath == "t/TR_v-2022-10-04T011306.webm"
    assert auto_track_filepath("") == "" and auto_track_filepath("rec/") == "rec/"
    assert auto_track_filepath("rec/x.mp4") == "rec/x-{track_id}.mp4" and auto_track_filepath("x") == "x-{track_id}"


def test_advanced_options_checked():
    for adv, field in ((pe.EncodingOptions(width=15), "width"), (pe.EncodingOptions(height=721), "height"),
                       (pe.EncodingOptions(depth=12), "depth")):
        with pytest.raises(EgressError) as e:
            build(P.ROOM_COMPOSITE, rc(advanced=adv, file_outputs=[pe.EncodedFileOutput()]))
        assert (e.value.code, e.value.msg) == ("invalid_argument", f"request has missing or invalid field: {field}")
    plan, _ = build(P.ROOM_COMPOSITE, rc(advanced=pe.EncodingOptions(
        width=640, height=360, framerate=15, audio_codec=pm.AudioCodec.OPUS, video_codec=pm.VideoCodec.H264_HIGH,
        key_frame_interval=2), file_outputs=[pe.EncodedFileOutput()]))
    assert (plan.width, plan.height, plan.framerate, plan.video_profile, plan.audio_codec) == \
        (640, 360, 15, "high", P.OPUS)
    with pytest.raises(EgressError) as e:  # OPUS audio cannot go to HLS
        build(P.ROOM_COMPOSITE, rc(advanced=pe.EncodingOptions(audio_codec=pm.AudioCodec.OPUS),
                                   segment_outputs=[pe.SegmentedFileOutput()]))
    assert e.value.msg.endswith("format application/x-mpegurl incompatible with codec audio/opus")
