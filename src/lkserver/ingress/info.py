"""IngressInfo rules (sans-I/O): creation, updates, validation, encoding presets.

Reproduces LiveKit's control plane (livekit pkg/service/ingress.go: CreateIngressWithUrl,
updateInfoUsingRequest, updateEnableTranscoding), protocol ingress/validation.go and errors.go
(the exact messages), and the ingress service's presets (livekit/ingress pkg/params/presets.go,
params.go: layer sizes halve per layer, bitrates scale with pixel area to the power 0.75).
Everything here is pure: protobuf messages in, protobuf messages or `IngressError` out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import urlsplit

from livekit.protocol import ingress as pi
from livekit.protocol import models as pm

from .. import ids

RTMP, WHIP, URL = pi.IngressInput.RTMP_INPUT, pi.IngressInput.WHIP_INPUT, pi.IngressInput.URL_INPUT
Status = pi.IngressState.Status
INACTIVE, BUFFERING, PUBLISHING = Status.ENDPOINT_INACTIVE, Status.ENDPOINT_BUFFERING, Status.ENDPOINT_PUBLISHING
ERROR, COMPLETE = Status.ENDPOINT_ERROR, Status.ENDPOINT_COMPLETE
ACTIVE = (BUFFERING, PUBLISHING)

# per-session resource ids (protocol utils: RTMPResourcePrefix, WHIPResourcePrefix, URLResourcePrefix)
RESOURCE_PREFIX = {RTMP: "RT_", WHIP: "WH_", URL: "UR_"}

# participant attributes the ingress participant carries (protocol livekit/attrs.go)
ATTR_INGRESS_ID = "ingress.ingressID"
ATTR_RESOURCE_ID = "ingress.resourceID"


class IngressError(Exception):
    """A rule LiveKit enforces, with its psrpc code (a Twirp code name) and exact message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid_ingress(detail: str) -> IngressError:
    return IngressError("invalid_argument", f"invalid ingress: {detail}")


def invalid_video(detail: str) -> IngressError:
    return IngressError("invalid_argument", f"invalid video parameters: {detail}")


def invalid_audio(detail: str) -> IngressError:
    return IngressError("invalid_argument", f"invalid audio parameters: {detail}")


def invalid_bypass(detail: str) -> IngressError:
    return IngressError("invalid_argument", f"invalid transcoding bypass configuration: {detail}")


ERR_INVALID_TYPE = IngressError("invalid_argument", "invalid ingress type")
ERR_NOT_FOUND = IngressError("not_found", "ingress does not exist")
ERR_NON_REUSABLE = IngressError("invalid_argument", "ingress is not reusable and cannot be modified")
ERR_DISABLED = IngressError("permission_denied", "session is disabled")
ERR_MISSING_STREAM_KEY = IngressError("invalid_argument", "missing stream key")


# -- presets --------------------------------------------------------------------------------------

REF_BITRATE, REF_WIDTH, REF_HEIGHT, REF_FRAMERATE = 3_500_000, 1920, 1080, 30.0

# preset -> (width, height, fps, top-layer bitrate, layer count)
VIDEO_PRESETS: dict[int, tuple[int, int, float, int, int]] = {
    pi.IngressVideoEncodingPreset.H264_720P_30FPS_3_LAYERS: (1280, 720, 30, 1_900_000, 3),
    pi.IngressVideoEncodingPreset.H264_1080P_30FPS_3_LAYERS: (1920, 1080, 30, 3_500_000, 3),
    pi.IngressVideoEncodingPreset.H264_540P_25FPS_2_LAYERS: (960, 540, 25, 1_000_000, 2),
    pi.IngressVideoEncodingPreset.H264_720P_30FPS_1_LAYER: (1280, 720, 30, 1_900_000, 1),
    pi.IngressVideoEncodingPreset.H264_1080P_30FPS_1_LAYER: (1920, 1080, 30, 3_500_000, 1),
    pi.IngressVideoEncodingPreset.H264_720P_30FPS_3_LAYERS_HIGH_MOTION: (1280, 720, 30, 2_500_000, 3),
    pi.IngressVideoEncodingPreset.H264_1080P_30FPS_3_LAYERS_HIGH_MOTION: (1920, 1080, 30, 4_500_000, 3),
    pi.IngressVideoEncodingPreset.H264_540P_25FPS_2_LAYERS_HIGH_MOTION: (960, 540, 25, 1_300_000, 2),
    pi.IngressVideoEncodingPreset.H264_720P_30FPS_1_LAYER_HIGH_MOTION: (1280, 720, 30, 2_500_000, 1),
    pi.IngressVideoEncodingPreset.H264_1080P_30FPS_1_LAYER_HIGH_MOTION: (1920, 1080, 30, 4_500_000, 1),
}

# preset -> (channels, bitrate)
AUDIO_PRESETS: dict[int, tuple[int, int]] = {
    pi.IngressAudioEncodingPreset.OPUS_STEREO_96KBPS: (2, 96_000),
    pi.IngressAudioEncodingPreset.OPUS_MONO_64KBS: (1, 64_000),
}


def bitrate_for(ref_bitrate: int, ref_w: int, ref_h: int, ref_fps: float, w: int, h: int, fps: float) -> int:
    """ref_bitrate * (fps ratio)^0.75 * (pixel area ratio)^0.75, truncated as Go's uint32()."""
    ratio = math.pow(fps / ref_fps, 0.75) * math.pow((w * h) / (ref_w * ref_h), 0.75)
    return int(ref_bitrate * ratio)


def compute_layers(width: int, height: int, bitrate: int, count: int) -> list[pm.VideoLayer]:
    """The top layer, then layers of half the previous size (HIGH, then MEDIUM/LOW)."""
    layers = [pm.VideoLayer(quality=pm.VideoQuality.HIGH, width=width, height=height, bitrate=bitrate)]
    for i in range(1, count):
        w, h = width >> i, height >> i
        layers.append(pm.VideoLayer(quality=count - 1 - i, width=w, height=h,
                                    bitrate=bitrate_for(bitrate, width, height, 1, w, h, 1)))
    return layers


def video_preset_options(preset: int) -> pi.IngressVideoEncodingOptions:
    if preset not in VIDEO_PRESETS:
        raise IngressError("invalid_argument", "invalid video encoding preset")
    w, h, fps, bitrate, count = VIDEO_PRESETS[preset]
    return pi.IngressVideoEncodingOptions(video_codec=pm.VideoCodec.H264_BASELINE, frame_rate=fps,
                                          layers=compute_layers(w, h, bitrate, count))


def audio_preset_options(preset: int) -> pi.IngressAudioEncodingOptions:
    if preset not in AUDIO_PRESETS:
        raise IngressError("invalid_argument", "invalid audio encoding preset")
    channels, bitrate = AUDIO_PRESETS[preset]
    return pi.IngressAudioEncodingOptions(audio_codec=pm.AudioCodec.OPUS, channels=channels, bitrate=bitrate)


def video_encoding(options: pi.IngressVideoOptions) -> pi.IngressVideoEncodingOptions:
    """What a transcoding session encodes (ingress params.getVideoEncodingOptions)."""
    which = options.WhichOneof("encoding_options")
    if which is None:
        return video_preset_options(pi.IngressVideoEncodingPreset.H264_720P_30FPS_3_LAYERS)
    if which == "preset":
        return video_preset_options(options.preset)
    o = pi.IngressVideoEncodingOptions()
    o.CopyFrom(options.options)
    if o.video_codec == pm.VideoCodec.DEFAULT_VC:
        o.video_codec = pm.VideoCodec.H264_BASELINE
    if o.frame_rate <= 0:
        o.frame_rate = REF_FRAMERATE
    if not o.layers:
        o.layers.extend(compute_layers(1280, 720, 1_700_000, 3))
    else:
        for layer in o.layers:
            if layer.bitrate == 0:
                layer.bitrate = bitrate_for(REF_BITRATE, REF_WIDTH, REF_HEIGHT, REF_FRAMERATE,
                                            layer.width, layer.height, o.frame_rate)
    return o


def audio_encoding(options: pi.IngressAudioOptions) -> pi.IngressAudioEncodingOptions:
    """ingress params.getAudioEncodingOptions: Opus, stereo 96 kbps unless told otherwise."""
    which = options.WhichOneof("encoding_options")
    if which is None:
        return audio_preset_options(pi.IngressAudioEncodingPreset.OPUS_STEREO_96KBPS)
    if which == "preset":
        return audio_preset_options(options.preset)
    o = pi.IngressAudioEncodingOptions()
    o.CopyFrom(options.options)
    if o.audio_codec == pm.AudioCodec.DEFAULT_AC:
        o.audio_codec = pm.AudioCodec.OPUS
    if o.channels == 0:
        o.channels = 2
    if o.bitrate == 0:
        o.bitrate = 64_000 if o.channels == 1 else 96_000
    return o


def layers_by_size(layers: list[pm.VideoLayer]) -> list[pm.VideoLayer]:
    """Largest first: the top layer is what a single-stream publisher sends."""
    return sorted(layers, key=lambda layer: (layer.width * layer.height, layer.quality), reverse=True)


# -- validation (protocol ingress/validation.go) -----------------------------------------------

def validate(info: pi.IngressInfo, *, need_room: bool = False) -> None:
    """ValidateForSerialization (and Validate when `need_room`)."""
    if need_room and not info.room_name:
        raise invalid_ingress("no room name")
    if info.input_type not in (RTMP, WHIP, URL):
        raise invalid_ingress("unsupported input type")
    if info.input_type in (RTMP, WHIP):
        if not info.stream_key:
            raise invalid_ingress("no stream key")
    else:
        if not info.url:
            raise invalid_ingress("no source URL")
        if info.HasField("enabled") and not info.enabled:
            raise invalid_ingress("disabled non reusable ingress")
    if not info.participant_identity:
        raise invalid_ingress("no participant identity")
    _validate_bypass(info)
    _validate_enable_transcoding(info)
    if info.HasField("video"):
        _validate_video(info.video)
    if info.HasField("audio"):
        _validate_audio(info.audio)


def _has_video_encoding(info: pi.IngressInfo) -> bool:
    return info.HasField("video") and info.video.WhichOneof("encoding_options") is not None


def _has_audio_encoding(info: pi.IngressInfo) -> bool:
    return info.HasField("audio") and info.audio.WhichOneof("encoding_options") is not None


def _validate_bypass(info: pi.IngressInfo) -> None:
    if not info.bypass_transcoding:
        return
    if info.input_type != WHIP:
        raise invalid_bypass("bypassing transcoding impossible with selected input type")
    if _has_video_encoding(info):
        raise invalid_bypass("video encoding options must be empty if transcoding bypass is selected")
    if _has_audio_encoding(info):
        raise invalid_bypass("audio encoding options must be empty if transcoding bypass is selected")


def _validate_enable_transcoding(info: pi.IngressInfo) -> None:
    if info.input_type == WHIP:
        enabled = info.enable_transcoding if info.HasField("enable_transcoding") else False
    else:
        enabled = True
        if info.HasField("enable_transcoding") and not info.enable_transcoding:
            raise invalid_bypass("bypassing transcoding impossible with selected input type")
    if not enabled:
        if _has_video_encoding(info):
            raise invalid_bypass("video encoding options must be empty if transcoding is disabled")
        if _has_audio_encoding(info):
            raise invalid_bypass("audio encoding options must be empty if transcoding is disabled")


def _validate_video(options: pi.IngressVideoOptions) -> None:
    if options.source not in (pm.TrackSource.UNKNOWN, pm.TrackSource.CAMERA, pm.TrackSource.SCREEN_SHARE):
        raise invalid_video("invalid track source")
    which = options.WhichOneof("encoding_options")
    if which == "preset":
        if options.preset not in VIDEO_PRESETS:
            raise invalid_video("invalid preset")
    elif which == "options":
        o = options.options
        if o.frame_rate < 0:
            raise invalid_video("invalid framerate")
        if o.video_codec not in (pm.VideoCodec.DEFAULT_VC, pm.VideoCodec.H264_BASELINE, pm.VideoCodec.VP8):
            raise invalid_video("video codec unsupported")
        by_quality: dict[int, pm.VideoLayer] = {}
        for layer in o.layers:
            if layer.width == 0 or layer.height == 0:
                raise invalid_video("invalid output media dimensions")
            if layer.width % 2:
                raise invalid_ingress("layer width must be even")
            if layer.height % 2:
                raise invalid_ingress("layer height must be even")
            if layer.quality in by_quality:
                raise invalid_video("more than one layer with the same quality level")
            by_quality[layer.quality] = layer
        old_w = old_h = 0
        for q in (pm.VideoQuality.LOW, pm.VideoQuality.MEDIUM, pm.VideoQuality.HIGH):
            layer = by_quality.get(q)
            if layer is None:
                continue
            if layer.height < old_h:
                raise invalid_video("video layers do not have increasing height with increasing quality")
            if layer.width < old_w:
                raise invalid_video("video layers do not have increasing width with increasing quality")
            old_w, old_h = layer.width, layer.height


def _validate_audio(options: pi.IngressAudioOptions) -> None:
    if options.source not in (pm.TrackSource.UNKNOWN, pm.TrackSource.MICROPHONE,
                              pm.TrackSource.SCREEN_SHARE_AUDIO):
        raise invalid_audio("invalid track source")
    which = options.WhichOneof("encoding_options")
    if which == "preset":
        if options.preset not in AUDIO_PRESETS:
            raise invalid_audio("invalid preset")
    elif which == "options":
        o = options.options
        if o.audio_codec not in (pm.AudioCodec.DEFAULT_AC, pm.AudioCodec.OPUS):
            raise invalid_audio("audio codec unsupported")
        if o.channels > 2:
            raise invalid_audio("invalid audio channel count")


def update_enable_transcoding(info: pi.IngressInfo) -> None:
    """Defaults: transcoding on for RTMP and URL, off for WHIP (bypass_transcoding kept in step)."""
    if info.HasField("enable_transcoding"):
        info.bypass_transcoding = not info.enable_transcoding
        return
    if info.input_type == WHIP:
        info.enable_transcoding = False
        info.bypass_transcoding = True
    else:
        info.enable_transcoding = True


# -- creation and updates ---------------------------------------------------------------------

def check_url(url: str) -> str:
    """URL input sources: http, https (and srt, which LiveKit accepts and lkserver does not)."""
    if not url:
        raise invalid_ingress("missing URL parameter")
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise IngressError("invalid_argument", str(e)) from None
    if parts.scheme not in ("http", "https", "srt"):
        raise invalid_ingress(f"invalid url scheme {parts.scheme}")
    return parts.geturl()


def new_info(req: pi.CreateIngressRequest, base_url: str) -> pi.IngressInfo:
    """CreateIngressWithUrl: the record (state INACTIVE) or an IngressError."""
    if req.input_type not in (RTMP, WHIP, URL):
        raise ERR_INVALID_TYPE
    url = check_url(req.url) if req.input_type == URL else base_url
    info = pi.IngressInfo(
        ingress_id=ids.new_id(ids.INGRESS), name=req.name,
        stream_key=ids.new_id("") if req.input_type != URL else "", url=url, input_type=req.input_type,
        room_name=req.room_name, participant_identity=req.participant_identity,
        participant_name=req.participant_name, participant_metadata=req.participant_metadata,
        state=pi.IngressState(),
    )
    if req.HasField("audio"):
        info.audio.CopyFrom(req.audio)
    if req.HasField("video"):
        info.video.CopyFrom(req.video)
    if req.HasField("enable_transcoding"):
        info.enable_transcoding = req.enable_transcoding
    if req.HasField("enabled"):
        info.enabled = req.enabled
    if req.input_type == URL:
        validate(info, need_room=True)
    else:
        info.reusable = True
        validate(info)
    update_enable_transcoding(info)
    return info


def apply_update(req: pi.UpdateIngressRequest, info: pi.IngressInfo) -> None:
    """updateInfoUsingRequest: only non-empty fields overwrite; then validated."""
    for name in ("name", "room_name", "participant_identity", "participant_name", "participant_metadata"):
        value = getattr(req, name)
        if value:
            setattr(info, name, value)
    if req.HasField("enable_transcoding"):
        info.enable_transcoding = req.enable_transcoding
    if req.HasField("audio"):
        info.audio.CopyFrom(req.audio)
    if req.HasField("video"):
        info.video.CopyFrom(req.video)
    if req.HasField("enabled"):
        info.enabled = req.enabled
    validate(info)
    update_enable_transcoding(info)


def is_enabled(info: pi.IngressInfo) -> bool:
    return not info.HasField("enabled") or info.enabled


def config_of(info: pi.IngressInfo) -> bytes:
    """The record without its state: what an update changes (a live session ends when it does)."""
    copy = pi.IngressInfo()
    copy.CopyFrom(info)
    copy.ClearField("state")
    return copy.SerializeToString(deterministic=True)


@dataclass(frozen=True)
class PublishPlan:
    """What a session publishes, resolved from the record once at its start."""

    transcode: bool
    video: pi.IngressVideoEncodingOptions
    audio: pi.IngressAudioEncodingOptions
    video_name: str
    video_source: int
    audio_name: str
    audio_source: int

    @classmethod
    def of(cls, info: pi.IngressInfo) -> PublishPlan:
        return cls(
            transcode=info.enable_transcoding if info.HasField("enable_transcoding") else info.input_type != WHIP,
            video=video_encoding(info.video), audio=audio_encoding(info.audio),
            video_name=info.video.name, video_source=info.video.source,
            audio_name=info.audio.name, audio_source=info.audio.source,
        )
