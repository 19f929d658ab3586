"""Egress requests -> a validated plan: source, encoding, outputs, filenames, and the first EgressInfo.

Sans-I/O. Reproduces LiveKit egress's request handling (egress pkg/config/pipeline.go Update,
applyV2Source, validatePassthrough, output*.go, encoding.go, urls.go; protocol egress/redact.go):
the same defaults (1280x720 H.264 main 30 fps 3000 kbps, AAC 128 kbps 44.1 kHz), presets,
advanced-option checks, output limits, file type and extension rules, filename templates
(`{room_name} {room_id} {time} {utc} {publisher_identity} {track_id} {track_type} {track_source}`),
HLS prefix/playlist rules, RTMP URL checks and stream-key redaction, and the error messages
(`request has missing or invalid field: <field>`, `invalid url <url>: <reason>`, ...).
"""

from __future__ import annotations

import posixpath
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from google.protobuf.json_format import MessageToDict
from livekit.protocol import egress as pe
from livekit.protocol import models as pm

from .errors import FAILED_PRECONDITION, INVALID_ARGUMENT, EgressError

# -- errors, as LiveKit egress words them (pkg/errors/errors.go)


def invalid_input(field_name: str) -> EgressError:
    return EgressError(INVALID_ARGUMENT, f"request has missing or invalid field: {field_name}")


def invalid_url(url: str, reason: str) -> EgressError:
    return EgressError(INVALID_ARGUMENT, f"invalid url {url}: {reason}")


def not_supported(feature: str) -> EgressError:
    return EgressError(INVALID_ARGUMENT, f"{feature} is not yet supported")


def incompatible(fmt: str, codec: str) -> EgressError:
    return EgressError(INVALID_ARGUMENT, f"format {fmt} incompatible with codec {codec}")


NO_COMPATIBLE_CODEC = "no supported codec is compatible with all outputs"
NO_COMPATIBLE_FILE_TYPE = "no supported file output type is compatible with the selected codecs"
NON_RETRYABLE = "output configuration does not support retry"

# -- types (egress pkg/types/types.go) -------------------------------------------------------

AAC, OPUS, RAW_AUDIO, MP3 = "audio/aac", "audio/opus", "audio/x-raw", "audio/mpeg"
H264, VP8, VP9 = "video/h264", "video/vp8", "video/vp9"
PCMU, PCMA = "audio/pcmu", "audio/pcma"

OT_UNKNOWN, OT_RAW, OT_OGG, OT_MP3, OT_IVF, OT_MP4 = "", "audio/x-raw", "audio/ogg", "audio/mpeg", "video/x-ivf", "video/mp4"
OT_TS, OT_WEBM, OT_JPEG, OT_RTMP, OT_SRT, OT_HLS = "video/mp2t", "video/webm", "image/jpeg", "rtmp", "srt", "application/x-mpegurl"

EXTENSIONS = {OT_RAW: ".raw", OT_OGG: ".ogg", OT_MP3: ".mp3", OT_IVF: ".ivf", OT_MP4: ".mp4", OT_TS: ".ts",
              OT_WEBM: ".webm", OT_HLS: ".m3u8", OT_JPEG: ".jpeg"}
KNOWN_EXTENSIONS = set(EXTENSIONS.values())
DEFAULT_AUDIO = {OT_RAW: RAW_AUDIO, OT_OGG: OPUS, OT_MP3: MP3, OT_MP4: AAC, OT_TS: AAC, OT_WEBM: OPUS,
                 OT_RTMP: AAC, OT_SRT: AAC, OT_HLS: AAC}
DEFAULT_VIDEO = {OT_IVF: VP8, OT_MP4: H264, OT_TS: H264, OT_WEBM: VP8, OT_RTMP: H264, OT_SRT: H264, OT_HLS: H264}
COMPATIBLE = {
    OT_RAW: {RAW_AUDIO}, OT_OGG: {OPUS}, OT_IVF: {VP8, VP9}, OT_MP4: {AAC, OPUS, H264},
    OT_TS: {AAC, OPUS, H264}, OT_WEBM: {OPUS, VP8, VP9}, OT_RTMP: {AAC, H264}, OT_SRT: {AAC, H264},
    OT_HLS: {AAC, H264}, OT_MP3: {MP3, OPUS, AAC, RAW_AUDIO},
    OT_UNKNOWN: {AAC, OPUS, MP3, H264, VP8, VP9},
}
ALL_AUDIO = {AAC, OPUS, RAW_AUDIO, MP3}
ALL_VIDEO = {H264}  # composites only ever encode H.264
AUDIO_ONLY_FILE_TYPES = [OT_OGG, OT_MP4, OT_MP3]
VIDEO_FILE_TYPES = [OT_MP4]
TRACK_FILE_TYPES = {OPUS: OT_OGG, PCMU: OT_OGG, PCMA: OT_OGG, H264: OT_MP4, VP8: OT_WEBM, VP9: OT_WEBM,
                    "audio/red": OT_OGG}  # RED carries Opus
STREAM_SCHEMES = {"rtmp": OT_RTMP, "rtmps": OT_RTMP, "mux": OT_RTMP, "twitch": OT_RTMP, "srt": OT_SRT,
                  "ws": OT_RAW, "wss": OT_RAW}
FILE_TYPES = {pe.EncodedFileType.MP4: OT_MP4, pe.EncodedFileType.OGG: OT_OGG, pe.EncodedFileType.MP3: OT_MP3}
RTMP_RE = re.compile(r"^(rtmps?://)(.*/)(.*/)(\S*)( live=1)?$")
STREAM_KEYFRAME_INTERVAL = 4.0

PRESETS = {
    pe.EncodingOptionsPreset.H264_720P_30: (1280, 720, 30, 3000),
    pe.EncodingOptionsPreset.H264_720P_60: (1280, 720, 60, 4500),
    pe.EncodingOptionsPreset.H264_1080P_30: (1920, 1080, 30, 4500),
    pe.EncodingOptionsPreset.H264_1080P_60: (1920, 1080, 60, 6000),
    pe.EncodingOptionsPreset.PORTRAIT_H264_720P_30: (720, 1280, 30, 3000),
    pe.EncodingOptionsPreset.PORTRAIT_H264_720P_60: (720, 1280, 60, 4500),
    pe.EncodingOptionsPreset.PORTRAIT_H264_1080P_30: (1080, 1920, 30, 4500),
    pe.EncodingOptionsPreset.PORTRAIT_H264_1080P_60: (1080, 1920, 60, 6000),
}
PASSTHROUGH = 8

# request kinds (EgressInfo.request oneof names)
ROOM_COMPOSITE, WEB, PARTICIPANT, TRACK_COMPOSITE, TRACK, EGRESS = (
    "room_composite", "web", "participant", "track_composite", "track", "egress")


def redact_identifier(s: str) -> str:
    prefix = suffix = ""
    for i in (3, 2, 1):
        if len(s) >= i * 3:
            prefix, suffix = s[:i], s[len(s) - i:]
            break
    return "{" + prefix + "..." + suffix + "}"


def redact_query(url: str) -> str:
    base, sep, query = url.partition("?")
    if not sep or not query:
        return url
    parts = []
    for p in query.split("&"):
        k, eq, v = p.partition("=")
        parts.append(f"{k}={{...}}" if eq and v else p)
    return base + "?" + "&".join(parts)


def redact_stream_url(url: str) -> tuple[str, bool]:
    m = re.match(r"^(mux|twitch)://(\S+)$", url)
    if m:
        return f"{m.group(1)}://{redact_identifier(m.group(2))}", True
    m = RTMP_RE.match(url)
    if not m:
        red = redact_query(url)
        return red, red != url
    g = list(m.groups(""))
    g[3] = redact_identifier(g[3])
    return "".join(g), True


def redact_upload(msg: Any) -> None:
    """protocol egress.RedactUpload: secrets of the storage a message names become placeholders."""
    def red(obj: Any, name: str, placeholder: str) -> None:
        if getattr(obj, name):
            setattr(obj, name, placeholder)

    oneofs = [o.name for o in msg.DESCRIPTOR.oneofs]
    which = msg.WhichOneof("output") if "output" in oneofs else \
        msg.WhichOneof("provider") if "provider" in oneofs else None
    if which == "s3":
        for n, ph in (("access_key", "{access_key}"), ("secret", "{secret}"),
                      ("assume_role_external_id", "{external_id}"), ("session_token", "{session_token}")):
            red(msg.s3, n, ph)
    elif which == "gcp":
        red(msg.gcp, "credentials", "{credentials}")
    elif which == "azure":
        red(msg.azure, "account_name", "{account_name}")
        red(msg.azure, "account_key", "{account_key}")
    elif which == "aliOSS":
        red(msg.aliOSS, "access_key", "{access_key}")
        red(msg.aliOSS, "secret", "{secret}")


def redact_request(kind: str, req: Any) -> None:
    """The stored copy of a request carries no secrets (protocol egress/redact.go)."""
    if kind == EGRESS:
        if req.HasField("storage"):
            redact_upload(req.storage)
        for o in req.outputs:
            if o.HasField("storage"):
                redact_upload(o.storage)
            if o.HasField("stream"):
                _redact_stream(o.stream)
        return
    if kind == TRACK:
        if req.HasField("file"):
            redact_upload(req.file)
        elif req.websocket_url:
            req.websocket_url = redact_query(req.websocket_url)
        return
    for name in ("file_outputs", "segment_outputs", "image_outputs"):
        for o in getattr(req, name, []):
            redact_upload(o)
    for s in getattr(req, "stream_outputs", []):
        _redact_stream(s)
    for name in ("file", "segments"):
        if name in req.DESCRIPTOR.fields_by_name and req.HasField(name):
            redact_upload(getattr(req, name))
    if "stream" in req.DESCRIPTOR.fields_by_name and req.HasField("stream"):
        _redact_stream(req.stream)


def _redact_stream(stream: pe.StreamOutput) -> None:
    for i, u in enumerate(stream.urls):
        stream.urls[i] = redact_stream_url(u)[0]


def clean_path(p: str) -> str:
    """egress config.clean: normalize, drop leading ../, keep a trailing slash."""
    if not p:
        return ""
    slash = p.endswith("/")
    p = posixpath.normpath(p)
    while p.startswith("../"):
        p = p[3:]
    if p in ("", ".", ".."):
        return ""
    return p + "/" if slash else p


def replace_all(s: str, replacements: dict[str, str]) -> str:
    for k, v in replacements.items():
        s = s.replace(k, v)
    return s


def strip_known_extension(name: str) -> str:
    i = name.rfind(".")
    if i > -1:
        name = name[:i]
    return name


# -- the plan ----------------------------------------------------------------------------------


@dataclass
class FileOutput:
    output_type: str  # OT_* ("" until the codecs decide)
    filepath: str  # storage path after templating (the FileInfo.filename)
    disable_manifest: bool = False
    storage: dict = field(default_factory=dict)  # {"s3": {...}} | {"azure": {...}} | ... | {}


@dataclass
class SegmentsOutput:
    prefix: str
    playlist: str
    live_playlist: str
    storage_dir: str
    suffix: int  # SegmentedFileSuffix
    duration: int
    disable_manifest: bool = False
    storage: dict = field(default_factory=dict)


@dataclass
class StreamOutput:
    output_type: str  # OT_RTMP | OT_SRT | OT_RAW
    urls: list = field(default_factory=list)  # [(url to push, redacted url)]


@dataclass
class ImagesOutput:
    prefix: str  # file name prefix (no directory)
    storage_dir: str
    suffix: int  # ImageFileSuffix
    interval: int
    width: int
    height: int
    disable_manifest: bool = False
    storage: dict = field(default_factory=dict)
    info_prefix: str = ""


@dataclass
class EgressPlan:
    egress_id: str
    kind: str  # which request (EgressInfo.request oneof name)
    source: str  # "template" | "web" | "participant" | "tracks" | "track"
    room_name: str = ""
    room_id: str = ""
    layout: str = ""
    web_url: str = ""
    await_start_signal: bool = False
    identity: str = ""
    screen_share: bool = False
    audio_track_id: str = ""
    video_track_id: str = ""
    track_id: str = ""  # passthrough track
    capture_all_audio: bool = False
    audio_routes: list = field(default_factory=list)  # [{"track_id"|"participant_identity"|"participant_kind": v, "channel": n}]
    audio_enabled: bool = False
    video_enabled: bool = False
    passthrough: bool = False
    audio_mixing: int = 0
    # encoding
    width: int = 1280
    height: int = 720
    depth: int = 24
    framerate: int = 30
    video_bitrate: int = 3000
    video_profile: str = "main"
    audio_bitrate: int = 128
    audio_frequency: int = 44100
    key_frame_interval: float = 0.0
    audio_codec: str = ""
    video_codec: str = ""
    # outputs
    file: FileOutput | None = None
    segments: SegmentsOutput | None = None
    stream: StreamOutput | None = None
    websocket: StreamOutput | None = None
    images: list = field(default_factory=list)
    # filename template context known at request time
    replacements: dict = field(default_factory=dict)
    identifier: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def manifest_wanted(self) -> bool:
        return any(o is not None and not o.disable_manifest for o in (self.file, self.segments)) or \
            any(not i.disable_manifest for i in self.images)

    def cpu_cost_kind(self) -> str:
        if self.source == "track":
            return "track"
        if self.source == "tracks":
            return "track_composite"
        if self.source == "participant":
            return "participant"
        if self.source == "web":
            return "web_audio" if not self.video_enabled else "web"
        return "room_composite_audio" if not self.video_enabled else "room_composite"


def build_plan(kind: str, req: Any, egress_id: str, *, room_id: str = "",
               now: float | None = None) -> tuple[EgressPlan, pe.EgressInfo]:
    """Validate a start request of type `kind`; return the plan and the STARTING EgressInfo."""
    now = time.time() if now is None else now
    ns = int(now * 1e9)
    info = pe.EgressInfo(egress_id=egress_id, room_id=room_id, status=pe.EgressStatus.EGRESS_STARTING,
                         started_at=ns, updated_at=ns)
    clone = type(req)()
    clone.CopyFrom(req)
    redact_request(kind, clone)
    getattr(info, kind).CopyFrom(clone)
    plan = EgressPlan(egress_id=egress_id, kind=kind, source="template", room_id=room_id)

    if kind == ROOM_COMPOSITE:
        info.room_name = plan.room_name = req.room_name
        _template(plan, req.layout, req.audio_only, req.video_only, req.custom_base_url)
        plan.audio_mixing = req.audio_mixing
        _encoding(plan, req)
        _encoded_outputs(plan, req, info, now)
    elif kind == WEB:
        plan.source = "web"
        _web(plan, req.url, req.audio_only, req.video_only, req.await_start_signal)
        _encoding(plan, req)
        _encoded_outputs(plan, req, info, now)
    elif kind == PARTICIPANT:
        plan.source = "participant"
        info.room_name = plan.room_name = req.room_name
        plan.audio_enabled = plan.video_enabled = True
        plan.identity, plan.screen_share = req.identity, req.screen_share
        if not req.identity:
            raise invalid_input("identity")
        _encoding(plan, req)
        _encoded_outputs(plan, req, info, now)
    elif kind == TRACK_COMPOSITE:
        plan.source = "tracks"
        info.room_name = plan.room_name = req.room_name
        plan.audio_track_id, plan.video_track_id = req.audio_track_id, req.video_track_id
        plan.audio_enabled, plan.video_enabled = bool(req.audio_track_id), bool(req.video_track_id)
        if not plan.audio_enabled and not plan.video_enabled:
            raise invalid_input("audio_track_id or video_track_id")
        _encoding(plan, req)
        _encoded_outputs(plan, req, info, now)
    elif kind == TRACK:
        plan.source, plan.passthrough = "track", True
        info.room_name = plan.room_name = req.room_name
        plan.track_id = req.track_id
        if not req.track_id:
            raise invalid_input("track_id")
        _direct_output(plan, req, info, now)
    elif kind == EGRESS:
        if req.room_name:
            info.room_name = plan.room_name = req.room_name
        _encoding(plan, req, oneof="encoding")
        if plan.passthrough:
            _validate_passthrough(req)
        _v2_source(plan, req)
        _v2_outputs(plan, req, info, now)
    else:
        raise invalid_input("request")

    if plan.passthrough and kind not in (TRACK, EGRESS):
        raise invalid_input("preset")
    info.source_type = (pe.EgressSourceType.EGRESS_SOURCE_TYPE_WEB if _uses_web(plan)
                        else pe.EgressSourceType.EGRESS_SOURCE_TYPE_SDK)
    if not plan.passthrough:
        _output_codecs(plan, info, now)
    return plan, info


def _uses_web(plan: EgressPlan) -> bool:
    if plan.source == "web":
        return True
    if plan.source == "template":
        # LiveKit renders templates in Chrome unless audio-only without layout (ShouldUseSDKSource);
        # lkserver composes itself either way, but reports the source type LiveKit would
        return not (plan.audio_enabled and not plan.video_enabled and not plan.layout)
    return False


def _template(plan: EgressPlan, layout: str, audio_only: bool, video_only: bool, base_url: str) -> None:
    plan.source, plan.layout, plan.await_start_signal = "template", layout, True
    if base_url:
        u = urlsplit(base_url)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise invalid_input("template base url")
    plan.audio_enabled, plan.video_enabled = not video_only, not audio_only
    if not plan.audio_enabled and not plan.video_enabled:
        raise invalid_input("audio_only and video_only")


def _web(plan: EgressPlan, url: str, audio_only: bool, video_only: bool, await_start: bool) -> None:
    plan.source, plan.web_url, plan.await_start_signal = "web", url, await_start
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise invalid_input("web url")
    plan.audio_enabled, plan.video_enabled = not video_only, not audio_only
    if not plan.audio_enabled and not plan.video_enabled:
        raise invalid_input("audio_only and video_only")


def _encoding(plan: EgressPlan, req: Any, oneof: str = "options") -> None:
    which = req.WhichOneof(oneof)
    if which == "preset":
        if req.preset == PASSTHROUGH:
            plan.passthrough = True
        elif req.preset in PRESETS:
            plan.width, plan.height, plan.framerate, plan.video_bitrate = PRESETS[req.preset]
    elif which == "advanced":
        apply_advanced(plan, req.advanced)


def apply_advanced(plan: EgressPlan, adv: pe.EncodingOptions) -> None:
    """egress config.applyAdvanced: codecs, sizes (>= 16 and even), depth 8/16/24, rates."""
    plan.audio_codec = {pm.AudioCodec.OPUS: OPUS, pm.AudioCodec.AAC: AAC,
                        pm.AudioCodec.AC_MP3: MP3}.get(adv.audio_codec, plan.audio_codec)
    if adv.audio_bitrate:
        plan.audio_bitrate = adv.audio_bitrate
    if adv.audio_frequency:
        plan.audio_frequency = adv.audio_frequency
    if adv.video_codec == pm.VideoCodec.H264_BASELINE:
        plan.video_codec, plan.video_profile = H264, "baseline"
    elif adv.video_codec == pm.VideoCodec.H264_MAIN:
        plan.video_codec = H264
    elif adv.video_codec == pm.VideoCodec.H264_HIGH:
        plan.video_codec, plan.video_profile = H264, "high"
    if adv.width > 0:
        if adv.width < 16 or adv.width % 2:
            raise invalid_input("width")
        plan.width = adv.width
    if adv.height > 0:
        if adv.height < 16 or adv.height % 2:
            raise invalid_input("height")
        plan.height = adv.height
    if adv.depth not in (0, 8, 16, 24):
        raise invalid_input("depth")
    if adv.depth:
        plan.depth = adv.depth
    if adv.framerate:
        plan.framerate = adv.framerate
    if adv.video_bitrate:
        plan.video_bitrate = adv.video_bitrate
    if adv.key_frame_interval:
        plan.key_frame_interval = adv.key_frame_interval


def _v2_source(plan: EgressPlan, req: pe.StartEgressRequest) -> None:
    which = req.WhichOneof("source")
    if which == "template":
        t = req.template
        _template(plan, t.layout, t.audio_only, t.video_only, t.custom_base_url)
    elif which == "web":
        w = req.web
        _web(plan, w.url, w.audio_only, w.video_only, w.await_start_signal)
    elif which == "media":
        m = req.media
        plan.source = "tracks"
        v = m.WhichOneof("video")
        if v == "video_track_id":
            plan.video_enabled = True
            plan.video_track_id = m.video_track_id
            if plan.passthrough:
                plan.track_id = m.video_track_id
        elif v == "participant_video":
            plan.video_enabled = True
            plan.identity, plan.screen_share = m.participant_video.identity, m.participant_video.prefer_screen_share
            plan.source = "participant"
        if m.HasField("audio"):
            if m.audio.capture_all:
                plan.audio_enabled = plan.capture_all_audio = True
            elif m.audio.routes:
                plan.audio_enabled = True
                for r in m.audio.routes:
                    match = r.WhichOneof("match")
                    plan.audio_routes.append({"match": match, "value": getattr(r, match) if match else "",
                                              "channel": int(r.channel)})
                if plan.passthrough:
                    plan.track_id = m.audio.routes[0].track_id
        if plan.passthrough:
            plan.source = "track"
        if not plan.audio_enabled and not plan.video_enabled:
            raise invalid_input("audio or video")
    else:
        raise invalid_input("source")


def _validate_passthrough(req: pe.StartEgressRequest) -> None:
    if req.WhichOneof("source") != "media":
        raise invalid_input("passthrough source")
    m = req.media
    video = audio = ""
    v = m.WhichOneof("video")
    if v == "video_track_id":
        if not m.video_track_id:
            raise invalid_input("passthrough video_track_id")
        video = m.video_track_id
    elif v == "participant_video":
        raise invalid_input("passthrough participant_video")
    if m.HasField("audio"):
        if m.audio.capture_all:
            raise invalid_input("passthrough capture_all")
        if len(m.audio.routes) > 1:
            raise invalid_input("passthrough audio routes")
        if len(m.audio.routes) == 1:
            if m.audio.routes[0].WhichOneof("match") != "track_id":
                raise invalid_input("passthrough audio route match")
            if not m.audio.routes[0].track_id:
                raise invalid_input("passthrough audio route track_id")
            audio = m.audio.routes[0].track_id
    if bool(video) == bool(audio):
        raise invalid_input("passthrough track_id")
    if len(req.outputs) != 1:
        raise invalid_input("passthrough outputs")
    o = req.outputs[0]
    if o.WhichOneof("config") != "file":
        raise invalid_input("passthrough output")
    if o.file.file_type != pe.EncodedFileType.DEFAULT_FILETYPE:
        raise invalid_input("passthrough file_type")


# -- outputs -----------------------------------------------------------------------------------


def filename_info(plan: EgressPlan, now: float) -> tuple[str, dict[str, str]]:
    """egress getFilenameInfo: the identifier for default names and the template values."""
    lt = time.localtime(now)
    tstr = time.strftime("%Y-%m-%dT%H%M%S", lt)
    utc = time.strftime("%Y%m%d%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}"
    rep = dict(plan.replacements)
    if plan.room_name:
        rep.update({"{room_name}": plan.room_name, "{room_id}": plan.room_id, "{time}": tstr, "{utc}": utc})
        return plan.room_name, rep
    rep.update({"{time}": tstr, "{utc}": utc})
    return "web", rep


def storage_of(msg: Any, fallback: Any = None) -> dict:
    """The storage a legacy output (s3/gcp/azure/aliOSS oneof) or a v2 StorageConfig names."""
    for m in (msg, fallback):
        if m is None:
            continue
        names = [o.name for o in m.DESCRIPTOR.oneofs]
        which = m.WhichOneof("output" if "output" in names else "provider") if names else None
        if which:
            return {which: MessageToDict(getattr(m, which), preserving_proto_field_name=True)}
    return {}


def _file_output(plan: EgressPlan, output_type: str, filepath: str, disable_manifest: bool,
                 storage: dict, now: float) -> FileOutput:
    conf = FileOutput(output_type, clean_path(filepath), disable_manifest, storage)
    if output_type:
        update_filepath(plan, conf, now)
    else:
        conf.filepath = replace_all(conf.filepath, filename_info(plan, now)[1])
    return conf


def update_filepath(plan: EgressPlan, conf: FileOutput, now: float, identifier: str = "") -> None:
    default_identifier, rep = filename_info(plan, now)
    identifier = identifier or default_identifier
    path = replace_all(conf.filepath, rep)
    ext = EXTENSIONS[conf.output_type]
    if not path or path.endswith("/"):
        path = f"{path}{identifier}-{time.strftime('%Y-%m-%dT%H%M%S', time.localtime(now))}{ext}"
    elif not path.endswith(ext):
        i = path.rfind(".")
        if i > -1 and path[i:] in KNOWN_EXTENSIONS:
            path = path[:i]
        path += ext
    conf.filepath = path


def _segments_output(plan: EgressPlan, seg: pe.SegmentedFileOutput, storage: dict, now: float) -> SegmentsOutput:
    identifier, rep = filename_info(plan, now)
    prefix = replace_all(clean_path(seg.filename_prefix), rep)
    playlist = replace_all(clean_path(seg.playlist_name), rep)
    live = replace_all(clean_path(seg.live_playlist_name), rep)
    playlist_dir, playlist_name = posixpath.split(playlist)
    live_dir, live_name = posixpath.split(live)
    segment_dir, segment_prefix = posixpath.split(prefix)
    playlist_dir += "/" if playlist_dir else ""
    live_dir += "/" if live_dir else ""
    segment_dir += "/" if segment_dir else ""
    if live_dir and live_dir != playlist_dir:
        raise invalid_input("live_playlist_name must be in same directory as playlist_name")
    playlist_name, live_name = strip_known_extension(playlist_name), strip_known_extension(live_name)
    if segment_dir:
        if playlist_dir == segment_dir:
            segment_dir = ""
        elif not playlist_dir:
            playlist_dir, segment_dir = segment_dir, ""
    if not playlist_name:
        playlist_name = segment_prefix or f"{identifier}-{time.strftime('%Y-%m-%dT%H%M%S', time.localtime(now))}"
    if not segment_prefix:
        segment_prefix = playlist_name
    playlist_file = playlist_name + ".m3u8"
    live_file = live_name + ".m3u8" if live_name else ""
    if playlist_file == live_file:
        raise invalid_input("live_playlist_name cannot be identical to playlist_name")
    return SegmentsOutput(prefix=segment_dir + segment_prefix, playlist=playlist_file, live_playlist=live_file,
                          storage_dir=playlist_dir, suffix=int(seg.filename_suffix),
                          duration=int(seg.segment_duration) or 4, disable_manifest=seg.disable_manifest,
                          storage=storage)


def _images_output(plan: EgressPlan, img: pe.ImageOutput, storage: dict, now: float) -> ImagesOutput:
    if img.image_codec not in (0, 1):  # IC_DEFAULT, IC_JPEG
        raise invalid_input("image_codec")
    if img.filename_suffix not in (0, 1, 2):
        raise invalid_input("filename_suffix")
    identifier, rep = filename_info(plan, now)
    prefix = replace_all(clean_path(img.filename_prefix), rep)
    d, name = posixpath.split(prefix)
    if not name:
        name = f"{identifier}-{time.strftime('%Y-%m-%dT%H%M%S', time.localtime(now))}"
    width, height = img.width, img.height
    if plan.source in ("template", "web"):
        width, height = width or plan.width, height or plan.height
    return ImagesOutput(prefix=name, storage_dir=d + "/" if d else "", suffix=int(img.filename_suffix),
                        interval=int(img.capture_interval) or 10, width=width, height=height,
                        disable_manifest=img.disable_manifest, storage=storage, info_prefix=prefix)


def _stream_output(plan: EgressPlan, stream: pe.StreamOutput) -> tuple[str, StreamOutput]:
    """(which: "stream" | "websocket", the StreamOutput) for a StreamOutput request."""
    proto = stream.protocol
    if proto == pe.StreamProtocol.DEFAULT_PROTOCOL:
        if not stream.urls:
            raise invalid_input("stream protocol")
        scheme = urlsplit(stream.urls[0]).scheme
        if scheme not in STREAM_SCHEMES:
            raise invalid_url(stream.urls[0], "invalid protocol")
        ot = STREAM_SCHEMES[scheme]
    else:
        ot = {pe.StreamProtocol.RTMP: OT_RTMP, pe.StreamProtocol.SRT: OT_SRT,
              pe.StreamProtocol.WEBSOCKET: OT_RAW}.get(proto, OT_RTMP)
    out = StreamOutput(ot)
    for u in stream.urls:
        out.urls.append(list(validate_stream_url(u, ot)))
    if ot in (OT_RTMP, OT_SRT):
        plan.audio_codec, plan.video_codec = AAC, H264
    elif ot == OT_RAW:
        plan.audio_codec = RAW_AUDIO
    return ("websocket" if ot == OT_RAW else "stream"), out


def validate_stream_url(url: str, output_type: str) -> tuple[str, str]:
    """(url to push, redacted url), or invalid_url (egress StreamConfig.ValidateUrl)."""
    u = urlsplit(url)
    if STREAM_SCHEMES.get(u.scheme) != output_type:
        raise invalid_url(url, "invalid scheme")
    if output_type == OT_RTMP:
        parsed = url
        if u.scheme == "mux":
            parsed = f"rtmps://global-live.mux.com:443/app/{u.netloc}"
        elif u.scheme == "twitch":
            # LiveKit resolves the closest ingest through ingest.twitch.tv; the global one works anywhere
            parsed = f"rtmp://live.twitch.tv/app/{u.netloc}"
        m = RTMP_RE.match(parsed)
        if not m:
            raise invalid_url(url, "rtmp urls must be of format rtmp(s)://{host}(/{path})/{app}/{stream_key}( live=1)")
        g = list(m.groups(""))
        g[3] = redact_identifier(g[3])
        return parsed, "".join(g)
    return url, url


def _add_stream(plan: EgressPlan, info: pe.EgressInfo, stream: pe.StreamOutput, now: float) -> None:
    which, out = _stream_output(plan, stream)
    if which == "websocket" and plan.video_enabled and plan.audio_enabled:
        plan.video_enabled = False
    setattr(plan, which, out)
    for parsed, redacted in out.urls:
        si = info.stream_results.add(url=redacted, status=pe.StreamInfo.Status.ACTIVE)
        if out.output_type != OT_RTMP:
            si.started_at = int(now * 1e9)


def _finish_outputs(plan: EgressPlan, info: pe.EgressInfo, has_stream: bool) -> None:
    count = (plan.file is not None) + (plan.segments is not None) + len(plan.images) + \
        (len(plan.stream.urls) if plan.stream else 0) + (len(plan.websocket.urls) if plan.websocket else 0)
    if count == 0:
        raise invalid_input("output")
    if plan.segments is not None:
        if has_stream and plan.key_frame_interval > 0:
            plan.segments.duration = min(int(plan.key_frame_interval), plan.segments.duration)
        plan.key_frame_interval = 0
    elif plan.key_frame_interval == 0 and plan.stream is not None:
        plan.key_frame_interval = STREAM_KEYFRAME_INTERVAL


def _encoded_outputs(plan: EgressPlan, req: Any, info: pe.EgressInfo, now: float) -> None:
    """Legacy requests: file_outputs / stream_outputs / segment_outputs / image_outputs (+ deprecated)."""
    fields = req.DESCRIPTOR.fields_by_name
    files, streams, segments, images = (list(req.file_outputs), list(req.stream_outputs),
                                        list(req.segment_outputs), list(req.image_outputs))
    if len(files) > 1:
        raise invalid_input("multiple file outputs")
    file = files[0] if files else (req.file if "file" in fields and req.HasField("file") else None)
    if file is not None:
        plan.file = _file_output(plan, FILE_TYPES.get(file.file_type, OT_UNKNOWN), file.filepath,
                                 file.disable_manifest, storage_of(file), now)
        info.file_results.add(filename=plan.file.filepath)
    if len(streams) > 1:
        raise invalid_input("multiple stream outputs")
    stream = streams[0] if streams else (req.stream if "stream" in fields and req.HasField("stream") else None)
    if stream is not None:
        _add_stream(plan, info, stream, now)
        if not files and not segments and not images and not stream.urls:
            raise invalid_input("stream url")
    if len(segments) > 1:
        raise invalid_input("multiple segmented file outputs")
    seg = segments[0] if segments else (req.segments if "segments" in fields and req.HasField("segments") else None)
    if seg is not None:
        plan.segments = _segments_output(plan, seg, storage_of(seg), now)
        _segments_info(plan, info)
    if images:
        if not plan.video_enabled:
            raise invalid_input("audio_only images")
        if plan.file is None and plan.segments is None and plan.stream is None and plan.websocket is None:
            plan.audio_enabled = False
        for img in images:
            plan.images.append(_images_output(plan, img, storage_of(img), now))
            info.image_results.add(filename_prefix=plan.images[-1].info_prefix)
    _finish_outputs(plan, info, stream is not None)
    _set_result(plan, info)


def _segments_info(plan: EgressPlan, info: pe.EgressInfo) -> None:
    s = plan.segments
    assert s is not None
    si = info.segment_results.add(playlist_name=posixpath.join(s.storage_dir, s.playlist))
    if s.live_playlist:
        si.live_playlist_name = posixpath.join(s.storage_dir, s.live_playlist)


def _set_result(plan: EgressPlan, info: pe.EgressInfo) -> None:
    """The deprecated single `result` field, set when only one kind of output was asked."""
    kinds = [k for k, v in (("file", plan.file), ("stream", plan.stream or plan.websocket),
                            ("segments", plan.segments)) if v is not None]
    if len(kinds) != 1 or plan.images:
        return
    if kinds[0] == "file":
        info.file.CopyFrom(info.file_results[0])
    elif kinds[0] == "segments":
        info.segments.CopyFrom(info.segment_results[0])
    elif info.stream_results:
        info.stream.info.extend(info.stream_results)


def _v2_outputs(plan: EgressPlan, req: pe.StartEgressRequest, info: pe.EgressInfo, now: float) -> None:
    if not req.outputs:
        raise invalid_input("output")
    fallback = req.storage if req.HasField("storage") else None
    counts = {"file": 0, "stream": 0, "segments": 0}
    has_stream = False
    for o in req.outputs:
        storage = storage_of(o.storage if o.HasField("storage") else None, fallback)
        which = o.WhichOneof("config")
        if which == "file":
            counts["file"] += 1
            if counts["file"] > 1:
                raise invalid_input("multiple file outputs")
            f = o.file
            plan.file = _file_output(plan, FILE_TYPES.get(f.file_type, OT_UNKNOWN), f.filepath,
                                     f.disable_manifest, storage, now)
            info.file_results.add(filename=plan.file.filepath)
        elif which == "stream":
            counts["stream"] += 1
            if counts["stream"] > 1:
                raise invalid_input("multiple stream outputs")
            has_stream = True
            _add_stream(plan, info, o.stream, now)
        elif which == "segments":
            counts["segments"] += 1
            if counts["segments"] > 1:
                raise invalid_input("multiple segmented file outputs")
            plan.segments = _segments_output(plan, o.segments, storage, now)
            _segments_info(plan, info)
        elif which == "images":
            if not plan.video_enabled:
                raise invalid_input("audio_only images")
            plan.images.append(_images_output(plan, o.images, storage, now))
            info.image_results.add(filename_prefix=plan.images[-1].info_prefix)
        else:
            raise invalid_input("output config")
    if plan.images and plan.file is None and plan.segments is None and not has_stream:
        plan.audio_enabled = False
    _finish_outputs(plan, info, has_stream)
    _set_result(plan, info)


def _direct_output(plan: EgressPlan, req: pe.TrackEgressRequest, info: pe.EgressInfo, now: float) -> None:
    which = req.WhichOneof("output")
    if which == "file":
        plan.file = _file_output(plan, OT_UNKNOWN, req.file.filepath, req.file.disable_manifest,
                                 storage_of(req.file), now)
        info.file_results.add(filename=plan.file.filepath)
        info.file.CopyFrom(info.file_results[0])
    elif which == "websocket_url":
        plan.websocket = StreamOutput(OT_RAW, [[req.websocket_url, redact_query(req.websocket_url)]])
        if urlsplit(req.websocket_url).scheme not in ("ws", "wss"):
            raise invalid_url(req.websocket_url, "invalid scheme")
        si = info.stream_results.add(url=redact_query(req.websocket_url), status=pe.StreamInfo.Status.ACTIVE,
                                     started_at=int(now * 1e9))
        info.stream.info.add().CopyFrom(si)
        plan.audio_codec = RAW_AUDIO
    else:
        raise invalid_input("output")


def _output_codecs(plan: EgressPlan, info: pe.EgressInfo, now: float) -> None:
    """egress validateAndUpdateOutputCodecs + updateOutputType: pick codecs and the file type."""
    outputs = [t for t in (plan.file.output_type if plan.file else None,
                           OT_HLS if plan.segments else None,
                           plan.stream.output_type if plan.stream else None,
                           OT_RAW if plan.websocket else None) if t is not None]
    audio: set[str] = set()
    video: set[str] = set()
    if plan.audio_enabled:
        audio = {plan.audio_codec} if plan.audio_codec else set(ALL_AUDIO)
        for ot in outputs:
            audio &= COMPATIBLE[ot]
            if not audio:
                if not plan.audio_codec:
                    raise EgressError(INVALID_ARGUMENT, NO_COMPATIBLE_CODEC)
                raise incompatible(ot, plan.audio_codec)
    if plan.video_enabled:
        video = {plan.video_codec} if plan.video_codec else set(ALL_VIDEO)
        for ot in outputs:
            video &= COMPATIBLE[ot]
            if not video:
                if not plan.audio_codec:
                    raise EgressError(INVALID_ARGUMENT, NO_COMPATIBLE_CODEC)
                raise incompatible(ot, plan.video_codec)
    if plan.file is not None and plan.file.output_type == OT_UNKNOWN:
        if not plan.video_enabled:
            candidates, need_a, need_v = AUDIO_ONLY_FILE_TYPES, audio, None
        elif not plan.audio_enabled:
            candidates, need_a, need_v = VIDEO_FILE_TYPES, None, video
        else:
            candidates, need_a, need_v = VIDEO_FILE_TYPES, audio, video
        chosen = next((t for t in candidates if (need_a is None or COMPATIBLE[t] & need_a)
                       and (need_v is None or COMPATIBLE[t] & need_v)), None)
        if chosen is None:
            raise EgressError(INVALID_ARGUMENT, NO_COMPATIBLE_FILE_TYPE)
        plan.file.output_type = chosen
        update_filepath(plan, plan.file, now)
        info.file_results[0].filename = plan.file.filepath
        if info.HasField("file"):
            info.file.filename = plan.file.filepath
    # the file's type is known now (it was "" while the codecs were checked)
    all_outputs = [plan.file.output_type] + outputs[1:] if plan.file is not None else outputs
    if plan.audio_enabled:
        plan.audio_codec = next((DEFAULT_AUDIO[t] for t in all_outputs if DEFAULT_AUDIO.get(t) in audio),
                                None) or min(audio)
    if plan.video_enabled:
        plan.video_codec = next((DEFAULT_VIDEO[t] for t in all_outputs if DEFAULT_VIDEO.get(t) in video),
                                None) or min(video)


def track_file_type(mime: str) -> str:
    return TRACK_FILE_TYPES.get(mime.lower(), OT_UNKNOWN)


def bind_track(plan: EgressPlan, info: pe.EgressInfo, *, mime: str, track_id: str, kind: str,
               source: str, identity: str, now: float | None = None) -> None:
    """Track egress: the codec decides the container; track templates get their values."""
    now = time.time() if now is None else now
    plan.replacements.update({"{track_id}": track_id, "{track_type}": kind, "{track_source}": source,
                              "{publisher_identity}": identity})
    if plan.file is not None:
        ot = track_file_type(mime)
        if not ot:
            raise not_supported(f"track egress of {mime}")
        plan.file.output_type = ot
        plan.file.filepath = replace_all(plan.file.filepath, plan.replacements)
        update_filepath(plan, plan.file, now, identifier=track_id)  # SDK source: named after the track
        info.file_results[0].filename = plan.file.filepath
        if info.HasField("file"):
            info.file.filename = plan.file.filepath


def non_retryable() -> EgressError:
    return EgressError(FAILED_PRECONDITION, NON_RETRYABLE)
