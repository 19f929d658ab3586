"""FLV audio and video tag bodies, as RTMP audio/video messages carry them (sans-I/O).

Adobe FLV specification v10.1 annex E.4.2/E.4.3: VIDEODATA with AVCVIDEOPACKET (H.264: the
AVCDecoderConfigurationRecord, then length-prefixed NAL units with a composition time offset)
and AUDIODATA with AACAUDIODATA (the AudioSpecificConfig, then raw AAC frames) or MP3. The
"Enhanced RTMP" extended video header (veovera enhanced-rtmp v1) is read for `avc1`; other
FourCCs (HEVC, AV1, VP9) are reported as unsupported.
"""

from __future__ import annotations

from dataclasses import dataclass


class FlvError(ValueError):
    """A tag body that cannot be read, or a codec lkserver does not ingest."""


@dataclass
class VideoPacket:
    codec: str  # "h264"
    config: bool  # an AVCDecoderConfigurationRecord (decoder extradata), not a frame
    keyframe: bool
    data: bytes  # avcC record, or AVCC (4-byte length-prefixed) NAL units
    cts: int  # composition time offset, ms (pts = dts + cts)
    end_of_sequence: bool = False


@dataclass
class AudioPacket:
    codec: str  # "aac" | "mp3"
    config: bool  # an AudioSpecificConfig (decoder extradata), not a frame
    data: bytes
    sample_rate: int  # from the tag header (AAC: the config decides)
    channels: int


VIDEO_CODECS = {2: "Sorenson H.263", 3: "Screen video", 4: "VP6", 5: "VP6 alpha", 6: "Screen video 2",
                7: "H.264", 12: "HEVC", 13: "AV1"}
AUDIO_FORMATS = {0: "PCM", 1: "ADPCM", 2: "MP3", 3: "PCM LE", 4: "Nellymoser", 5: "Nellymoser",
                 6: "Nellymoser", 7: "G.711 A-law", 8: "G.711 mu-law", 10: "AAC", 11: "Speex", 14: "MP3 8 kHz"}
SOUND_RATES = (5512, 11025, 22050, 44100)


def _si24(b: bytes) -> int:
    v = int.from_bytes(b, "big")
    return v - (1 << 24) if v & 0x800000 else v


def parse_video(body: bytes) -> VideoPacket | None:
    """A video tag body; None for tags that carry no picture (video info/command frames)."""
    if not body:
        raise FlvError("empty video tag")
    b0 = body[0]
    if b0 & 0x80:  # Enhanced RTMP: IsExHeader | FrameType(3) | PacketType(4) | FourCC
        frame_type, packet_type = (b0 >> 4) & 0x07, b0 & 0x0F
        if len(body) < 5:
            raise FlvError("truncated enhanced video tag")
        fourcc = body[1:5].decode("latin-1")
        if fourcc != "avc1":
            raise FlvError(f"unsupported video codec {fourcc!r}: send H.264")
        if frame_type == 5 or packet_type in (4, 5):  # command frame, metadata, MPEG-2 TS sequence start
            return None
        if packet_type == 0:
            return VideoPacket("h264", True, True, bytes(body[5:]), 0)
        if packet_type == 2:
            return VideoPacket("h264", False, False, b"", 0, end_of_sequence=True)
        if packet_type == 1:
            if len(body) < 8:
                raise FlvError("truncated enhanced video tag")
            return VideoPacket("h264", False, frame_type == 1, bytes(body[8:]), _si24(body[5:8]))
        if packet_type == 3:  # CodedFramesX: no composition time
            return VideoPacket("h264", False, frame_type == 1, bytes(body[5:]), 0)
        raise FlvError(f"unknown enhanced video packet type {packet_type}")
    frame_type, codec_id = b0 >> 4, b0 & 0x0F
    if frame_type == 5:
        return None
    if codec_id != 7:
        raise FlvError(f"unsupported video codec {VIDEO_CODECS.get(codec_id, codec_id)}: send H.264")
    if len(body) < 5:
        raise FlvError("truncated AVC video tag")
    packet_type = body[1]
    cts = _si24(body[2:5])
    if packet_type == 0:
        return VideoPacket("h264", True, True, bytes(body[5:]), 0)
    if packet_type == 1:
        return VideoPacket("h264", False, frame_type == 1, bytes(body[5:]), cts)
    if packet_type == 2:
        return VideoPacket("h264", False, False, b"", 0, end_of_sequence=True)
    raise FlvError(f"unknown AVC packet type {packet_type}")


def parse_audio(body: bytes) -> AudioPacket:
    if not body:
        raise FlvError("empty audio tag")
    b0 = body[0]
    fmt = b0 >> 4
    rate = SOUND_RATES[(b0 >> 2) & 0x03]
    channels = 2 if b0 & 0x01 else 1
    if fmt == 10:
        if len(body) < 2:
            raise FlvError("truncated AAC audio tag")
        return AudioPacket("aac", body[1] == 0, bytes(body[2:]), rate, channels)
    if fmt in (2, 14):
        return AudioPacket("mp3", False, bytes(body[1:]), 8000 if fmt == 14 else rate, channels)
    raise FlvError(f"unsupported audio format {AUDIO_FORMATS.get(fmt, fmt)}: send AAC or MP3")


def aac_config(asc: bytes) -> tuple[int, int]:
    """(sample rate, channels) of an AudioSpecificConfig (ISO 14496-3 §1.6.2.1)."""
    rates = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
    if len(asc) < 2:
        raise FlvError("AudioSpecificConfig too short")
    bits = int.from_bytes(asc[:5].ljust(5, b"\0"), "big")
    pos = 40
    object_type = (bits >> (pos - 5)) & 0x1F
    pos -= 5
    if object_type == 31:
        pos -= 6
    index = (bits >> (pos - 4)) & 0x0F
    pos -= 4
    if index == 15:
        rate = (bits >> (pos - 24)) & 0xFFFFFF
        pos -= 24
    elif index < len(rates):
        rate = rates[index]
    else:
        raise FlvError("bad AAC sampling frequency index")
    channels = (bits >> (pos - 4)) & 0x0F
    return rate, channels

