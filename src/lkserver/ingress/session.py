"""One ingress session: a publisher's stream, from its first bytes to its end (LiveKit's "resource").

`IngressSession` owns the state machine of IngressState (BUFFERING when a publisher arrives,
PUBLISHING once media reaches the room, then INACTIVE after a clean end of a reusable ingress,
COMPLETE at the end of a URL's media, ERROR with a message otherwise) and the ingress
participant. `TranscodingSession` adds the worker-thread transcoders shared by RTMP, URL input
and transcoded WHIP: its subclasses only feed compressed packets in.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from livekit.protocol import ingress as pi
from livekit.protocol import models as pm

from ..logs import get_logger
from ..rooms import RoomFull, RoomNotFound
from . import info as rules
from .publish import IngressPublisher
from .transcode import AudioTranscoder, EncodedFrame, InputStats, VideoTranscoder, in_thread

if TYPE_CHECKING:
    from .manager import IngressManager

log = get_logger("lkserver.ingress")

WATCH_INTERVAL = 1.0
STATE_REFRESH = 5.0  # input bitrates and tracks are re-reported this often while publishing
RECORD_CHECK = 2.0  # how often a session looks for an update or deletion by another process


def now_ns() -> int:
    return time.time_ns()


class IngressSession:
    input_type = rules.RTMP
    transcoding = False  # counts against ingress.max_transcoding_sessions

    def __init__(self, manager: IngressManager, info: pi.IngressInfo, resource_id: str) -> None:
        self.manager = manager
        self.info = pi.IngressInfo()
        self.info.CopyFrom(info)
        self.info.ClearField("state")
        self.config = rules.config_of(info)
        self.plan = rules.PublishPlan.of(info)
        self.resource_id = resource_id
        self.state = pi.IngressState(status=rules.BUFFERING, started_at=now_ns(), resource_id=resource_id)
        self.publisher: IngressPublisher | None = None
        self.video_stats = InputStats()
        self.audio_stats = InputStats()
        self.ended = asyncio.Event()
        self.stopping = False
        self._tasks: set[asyncio.Task] = set()
        self._last_refresh = 0.0
        self._last_record_check = time.monotonic()

    @property
    def ingress_id(self) -> str:
        return self.info.ingress_id

    def spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- lifecycle ---------------------------------------------------------------------------------

    async def begin(self) -> None:
        """BUFFERING, then join the room as the ingress participant."""
        log.info("ingress_session_started", ingress_id=self.ingress_id, resource_id=self.resource_id,
                 input=pi.IngressInput.Name(self.input_type), room=self.info.room_name)
        await self.manager.report(self)
        self.publisher = IngressPublisher(
            self.manager.rtc, self.info.room_name, self.info.participant_identity,
            name=self.info.participant_name, metadata=self.info.participant_metadata,
            attributes={rules.ATTR_INGRESS_ID: self.ingress_id, rules.ATTR_RESOURCE_ID: self.resource_id},
            live=getattr(self, "live", True))
        try:
            await self.publisher.join()
        except RoomNotFound:
            raise rules.IngressError("not_found", "requested room does not exist") from None
        except RoomFull:
            raise rules.IngressError("resource_exhausted", "room is full") from None
        self.publisher.on_keyframe_request = self.on_keyframe_request
        self.state.room_id = self.publisher.room_sid
        self.spawn(self._watch())

    async def stop(self, status: int = rules.INACTIVE, error: str = "") -> None:
        """End the session (idempotent): media stops, the participant leaves, the final state is stored."""
        if self.stopping:
            await self.ended.wait()
            return
        self.stopping = True
        try:
            await self.close_media()
        except Exception:
            log.exception("ingress_close_failed", ingress_id=self.ingress_id)
        if self.publisher is not None:
            await self.publisher.close()
        self.state.status = status
        self.state.error = error
        self.state.ended_at = now_ns()
        self._fill_state()
        try:
            await self.manager.report(self)
        finally:
            self.manager.forget(self)
            for task in list(self._tasks):
                if task is not asyncio.current_task():
                    task.cancel()
            self.ended.set()
            log.info("ingress_session_ended", ingress_id=self.ingress_id, resource_id=self.resource_id,
                     status=pi.IngressState.Status.Name(status), error=error)

    def fail(self, error: str) -> None:
        """End with ERROR (callable from anywhere on the loop)."""
        if not self.stopping:
            self.spawn(self.stop(rules.ERROR, error))

    async def close_media(self) -> None:
        """Subclasses release their input and workers here."""

    def on_keyframe_request(self, layer: int = -1) -> None:
        """A subscriber lost the picture (of one video layer, or of all when -1)."""

    # -- state ---------------------------------------------------------------------------------------

    def publishing(self) -> None:
        """Media reached the room: PUBLISHING (once)."""
        if self.state.status == rules.BUFFERING and not self.stopping:
            self.state.status = rules.PUBLISHING
            self._fill_state()
            self._last_refresh = time.monotonic()
            self.spawn(self.manager.report(self))

    def _fill_state(self) -> None:
        v, a = self.video_stats, self.audio_stats
        if v.mime_type:
            self.state.video.CopyFrom(pi.InputVideoState(
                mime_type=v.mime_type, average_bitrate=v.average_bitrate(), width=v.width, height=v.height,
                framerate=v.framerate))
        if a.mime_type:
            self.state.audio.CopyFrom(pi.InputAudioState(
                mime_type=a.mime_type, average_bitrate=a.average_bitrate(), channels=a.channels,
                sample_rate=a.sample_rate))
        if self.publisher is not None:
            del self.state.tracks[:]
            self.state.tracks.extend(self.publisher.published_tracks())

    async def _watch(self) -> None:
        while not self.stopping:
            await asyncio.sleep(WATCH_INTERVAL)
            if self.stopping:
                return
            if self.publisher is not None and self.publisher.gone:
                self.fail("room disconnected")
                return
            now = time.monotonic()
            if self.state.status == rules.PUBLISHING and now - self._last_refresh >= STATE_REFRESH:
                self._last_refresh = now
                self._fill_state()
                await self.manager.report(self)
            if now - self._last_record_check >= RECORD_CHECK:
                self._last_record_check = now
                if await self.manager.record_changed(self):
                    # updated or deleted (possibly through another server process): this session ends
                    self.spawn(self.stop(rules.INACTIVE))
                    return
            self.check_health()

    def check_health(self) -> None:
        """Subclasses end sessions whose input went quiet."""


class TranscodingSession(IngressSession):
    """Decode what the source sends and publish the plan's encodings (Opus + H.264 or VP8)."""

    live = True
    transcoding = True

    def __init__(self, manager: IngressManager, info: pi.IngressInfo, resource_id: str) -> None:
        super().__init__(manager, info, resource_id)
        self.loop = asyncio.get_running_loop()
        self.video_tx: VideoTranscoder | None = None
        self.audio_tx: AudioTranscoder | None = None
        self.video_layers: list[pm.VideoLayer] = []
        opts = self.plan.video
        self.video_codec = "vp8" if opts.video_codec == pm.VideoCodec.VP8 else "h264"

    def start_video(self, decoder: Any, mime_type: str) -> VideoTranscoder:
        opts = self.plan.video
        self.video_stats.mime_type = mime_type
        self.video_stats.started = time.monotonic()
        layers = rules.layers_by_size(list(opts.layers))
        self.video_tx = VideoTranscoder(
            decoder, layers, self.video_codec, opts.frame_rate, self._from_worker, self._worker_failed,
            on_layers=self._layers_from_worker, stats=self.video_stats, live=self.live,
            speed_preset=self.manager.x264_preset)
        self.video_tx.start()
        return self.video_tx

    def start_audio(self, decoder: Any, mime_type: str) -> AudioTranscoder:
        opts = self.plan.audio
        self.audio_stats.mime_type = mime_type
        self.audio_stats.started = time.monotonic()
        self.audio_tx = AudioTranscoder(decoder, opts.channels, opts.bitrate, not opts.disable_dtx,
                                        self._from_worker, self._worker_failed, stats=self.audio_stats,
                                        live=self.live)
        self.audio_tx.start()
        return self.audio_tx

    def on_keyframe_request(self, layer: int = -1) -> None:
        if self.video_tx is not None:
            self.video_tx.request_keyframe(layer)

    # worker threads -> loop
    def _from_worker(self, frame: EncodedFrame) -> None:
        self.loop.call_soon_threadsafe(self._on_encoded, frame)

    def _layers_from_worker(self, layers: list[pm.VideoLayer]) -> None:
        self.loop.call_soon_threadsafe(self._on_layers, layers)

    def _worker_failed(self, message: str) -> None:
        self.loop.call_soon_threadsafe(self.fail, message)

    def _on_layers(self, layers: list[pm.VideoLayer]) -> None:
        self.video_layers = layers

    def _on_encoded(self, frame: EncodedFrame) -> None:
        pub = self.publisher
        if pub is None or self.stopping or pub.participant is None:
            return
        if frame.kind == "video" and not pub.video and frame.layer == 0 and self.video_layers:
            pub.add_video(self.video_codec, self.video_layers, self.plan.video_name, self.plan.video_source)
        elif frame.kind == "audio" and pub.audio is None:
            pub.add_audio(self.plan.audio.channels, self.plan.audio_name, self.plan.audio_source,
                          self.plan.audio.disable_dtx)
        pub.push(frame)
        if self.state.status == rules.BUFFERING:
            self.publishing()
        elif len(self.state.tracks) < (pub.audio is not None) + bool(pub.video):
            self._fill_state()  # a second track appeared: report it
            self.spawn(self.manager.report(self))

    async def close_media(self) -> None:
        workers = [w for w in (self.video_tx, self.audio_tx) if w is not None]
        for w in workers:
            w.close()
        await asyncio.gather(*(in_thread(lambda w=w: w.join(5.0), "ingress-join") for w in workers))

    async def drain(self, timeout: float = 10.0) -> None:
        """End of the input: let the workers flush and the pacer send what they made."""
        workers = [w for w in (self.video_tx, self.audio_tx) if w is not None]
        for w in workers:
            w.close()
        await asyncio.gather(*(in_thread(lambda w=w: w.join(timeout), "ingress-join") for w in workers))
        deadline = time.monotonic() + timeout
        while self.publisher is not None and self.publisher.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
