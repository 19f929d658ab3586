"""URL input: pull an HTTP(S) media file or HLS stream and publish it, COMPLETE at its end.

FFmpeg (through PyAV) opens and demuxes the URL in a worker thread, which reads at the media's
own pace (at most `LEAD` seconds ahead of real time, as LiveKit's non-live URL pipeline plays a
file) and feeds the transcoders; their bounded queues block it when encoding falls behind. At the
end of the media the encoders flush, the last frames are sent, and the session ends COMPLETE;
a source that cannot be opened or read ends it with ERROR and FFmpeg's reason.
"""

from __future__ import annotations

import time
from typing import Any

import av

from ..logs import get_logger
from . import info as rules
from .session import TranscodingSession
from .transcode import in_thread

log = get_logger("lkserver.ingress.url")

LEAD = 0.5  # seconds the reader may run ahead of real time
OPEN_TIMEOUT = 15.0
READ_TIMEOUT = 15.0
VIDEO_MIME = {"h264": "video/H264", "hevc": "video/H265", "vp8": "video/VP8", "vp9": "video/VP9", "av1": "video/AV1"}
AUDIO_MIME = {"aac": "audio/aac", "mp3": "audio/mpeg", "opus": "audio/opus", "vorbis": "audio/vorbis",
              "flac": "audio/flac"}


class UrlSession(TranscodingSession):
    input_type = rules.URL
    live = False

    def __init__(self, manager: Any, info: Any, resource_id: str) -> None:
        super().__init__(manager, info, resource_id)
        self.url = info.url
        self.container: Any | None = None

    def run(self) -> None:
        if not self.stopping:
            self.spawn(self._pull())

    async def _pull(self) -> None:
        try:
            await in_thread(self._read, f"ingress-url-{self.resource_id}")
        except Exception as e:  # noqa: BLE001 - the reason goes into the ingress state
            if not self.stopping:
                log.info("ingress_url_failed", ingress_id=self.ingress_id, error=str(e))
                await self.stop(rules.ERROR, str(e))
            return
        if self.stopping:
            return
        await self.drain()
        await self.stop(rules.COMPLETE)

    def _read(self) -> None:
        """Worker thread: open, demux, pace, feed the transcoders."""
        try:
            container = av.open(self.url, timeout=(OPEN_TIMEOUT, READ_TIMEOUT),
                                options={"rw_timeout": str(int(READ_TIMEOUT * 1e6))})
        except av.FFmpegError as e:
            raise RuntimeError(f"cannot open {self.url}: {e.strerror or e}") from None
        self.container = container
        try:
            self._demux(container)
        finally:
            container.close()

    def _demux(self, container: Any) -> None:
        video = next((s for s in container.streams.video), None)
        audio = next((s for s in container.streams.audio), None)
        if video is None and audio is None:
            raise RuntimeError(f"{self.url} has no audio or video")
        streams = [s for s in (video, audio) if s is not None]
        origin: dict[int, int] = {}
        if video is not None:
            ctx = video.codec_context
            self.start_video(ctx, VIDEO_MIME.get(ctx.name, f"video/{ctx.name}"))
            if video.average_rate:
                self.video_stats.framerate = float(video.average_rate)
        if audio is not None:
            ctx = audio.codec_context
            self.start_audio(ctx, AUDIO_MIME.get(ctx.name, f"audio/{ctx.name}"))
        # media time 0: the earliest start among the streams, in seconds
        starts = [float(s.start_time * s.time_base) for s in streams if s.start_time is not None and s.time_base]
        zero = min(starts) if starts else 0.0
        for s in streams:
            origin[s.index] = round(zero / s.time_base) if s.time_base else 0
        wall0 = time.monotonic()
        for pkt in container.demux(streams):
            if self.stopping:
                return
            if pkt.size == 0 or pkt.pts is None or pkt.time_base is None:
                continue
            shift = origin.get(pkt.stream.index, 0)
            pkt.pts -= shift
            if pkt.dts is not None:
                pkt.dts -= shift
            t = float(pkt.pts * pkt.time_base)
            ahead = wall0 + t - LEAD - time.monotonic()
            if ahead > 0:
                time.sleep(min(ahead, 1.0))
                if self.stopping:
                    return
            if pkt.stream is video and self.video_tx is not None:
                self.video_stats.bytes_in += pkt.size
                while not self.video_tx.put(pkt, block=True, timeout=0.5):
                    if self.stopping or self.video_tx.closed:
                        return
            elif pkt.stream is audio and self.audio_tx is not None:
                self.audio_stats.bytes_in += pkt.size
                while not self.audio_tx.put(pkt, block=True, timeout=0.5):
                    if self.stopping or self.audio_tx.closed:
                        return
            failed = (self.video_tx and self.video_tx.failed) or (self.audio_tx and self.audio_tx.failed)
            if failed:
                raise RuntimeError(failed)
