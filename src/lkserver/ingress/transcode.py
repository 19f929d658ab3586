"""Transcoding with PyAV in worker threads: compressed input in, encoded WebRTC frames out.

One thread per media kind and session (ARCHITECTURE rule 6: media work never blocks the event
loop; PyAV releases the GIL inside FFmpeg's decode, scale and encode calls). Video: decode, cap
the frame rate, scale to each output layer (LiveKit's rule: fit the layer keeping the source's
aspect ratio, never upscale, round up to even sizes, stop at the first layer as large as the
source), encode H.264 constrained baseline (libx264, zerolatency, as LiveKit's x264enc settings)
or VP8 (libvpx realtime). Audio: decode, resample to 48 kHz, encode Opus in 20 ms frames.

Inputs wait in a bounded queue. A live source (RTMP, WHIP) never blocks: when the queue is full
the packet is dropped and video waits for the next keyframe. A file source (URL input) blocks,
which paces its reader. Output frames go to `on_output`, called from the worker thread.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
from av.video.reformatter import Interpolation, VideoReformatter
from livekit.protocol import models as pm

from ..logs import get_logger

log = get_logger("lkserver.ingress.transcode")

VIDEO_QUEUE = 120  # compressed packets: ~4 s at 30 fps
AUDIO_QUEUE = 250  # ~5 s of AAC frames
OPUS_RATE = 48000
OPUS_FRAME = 960  # 20 ms
VIDEO_CLOCK = 90000
GOP_SECONDS = 2.0
MAX_DECODE_ERRORS = 50  # consecutive packets that fail to decode before the input is declared bad


@dataclass
class EncodedFrame:
    kind: str  # "audio" | "video"
    layer: int  # index into the session's video layers (0 = top); 0 for audio
    data: bytes
    time: float  # seconds on the session's media clock
    keyframe: bool = True
    width: int = 0
    height: int = 0


@dataclass
class InputStats:
    """What the source sends, for IngressState.video/audio."""

    mime_type: str = ""
    width: int = 0
    height: int = 0
    framerate: float = 0.0
    channels: int = 0
    sample_rate: int = 0
    bytes_in: int = 0
    started: float = 0.0

    def average_bitrate(self) -> int:
        elapsed = time.monotonic() - self.started if self.started else 0.0
        return int(self.bytes_in * 8 / elapsed) if elapsed > 0.5 else 0


def fit_layers(layers: list[pm.VideoLayer], src_w: int, src_h: int) -> list[pm.VideoLayer]:
    """ingress webrtc_sink.go filterAndSortLayersByQuality + applyResolutionToLayer, largest first."""
    by_quality = {layer.quality: layer for layer in layers}
    out = []
    for q in (pm.VideoQuality.LOW, pm.VideoQuality.MEDIUM, pm.VideoQuality.HIGH):
        layer = by_quality.get(q)
        if layer is None:
            continue
        w, h = src_w, src_h
        if w > layer.width:
            w = layer.width
            h = (w * src_h) // src_w
        if h > layer.height:
            h = layer.height
            w = (h * src_w) // src_h
        w, h = ((w + 1) >> 1) << 1, ((h + 1) >> 1) << 1
        out.append(pm.VideoLayer(quality=layer.quality, width=w, height=h, bitrate=layer.bitrate))
        if layer.width >= src_w and layer.height >= src_h:
            break
    return list(reversed(out))


class _Worker:
    """A thread draining a bounded queue; `fail` is reported once, from the thread."""

    name = "worker"

    def __init__(self, maxsize: int, on_error: Callable[[str], None]) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize)
        self.on_error = on_error
        self.thread = threading.Thread(target=self._run, name=f"ingress-{self.name}", daemon=True)
        self.closed = False
        self.dropped = 0
        self.failed = ""

    def start(self) -> None:
        self.thread.start()

    def put(self, item: Any, block: bool = False, timeout: float | None = None) -> bool:
        if self.closed:
            return False
        try:
            self.queue.put(item, block=block, timeout=timeout)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def close(self) -> None:
        """Stop after what is queued (end of stream: encoders are flushed)."""
        if self.closed:
            return
        self.closed = True
        while True:
            try:
                self.queue.put(None, timeout=0.5)
                return
            except queue.Full:
                try:
                    self.queue.get_nowait()  # make room for the end marker
                except queue.Empty:
                    pass

    def join(self, timeout: float = 5.0) -> None:
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def _run(self) -> None:
        try:
            while True:
                item = self.queue.get()
                if item is None:
                    self.flush()
                    return
                self.handle(item)
        except Exception as e:
            self.failed = f"{self.name} pipeline failed: {e}"
            log.exception("ingress_pipeline_failed", kind=self.name)
            self.on_error(self.failed)
            while not self.closed:  # keep the queue drained until the session closes us
                try:
                    if self.queue.get(timeout=0.5) is None:
                        return
                except queue.Empty:
                    pass

    def handle(self, item: Any) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        pass


class VideoTranscoder(_Worker):
    """Items: av.Packet (with pts in its time_base on the session clock), decoded by `decoder`."""

    name = "video"

    def __init__(self, decoder: Any, layers: list[pm.VideoLayer], codec: str, fps: float,
                 on_output: Callable[[EncodedFrame], None], on_error: Callable[[str], None],
                 on_layers: Callable[[list[pm.VideoLayer]], None] = lambda layers: None,
                 stats: InputStats | None = None, live: bool = True,
                 speed_preset: str = "veryfast") -> None:
        super().__init__(VIDEO_QUEUE, on_error)
        self.decoder = decoder
        self.wanted_layers = layers
        self.codec = codec  # "h264" | "vp8"
        self.fps = fps or 30.0
        self.on_output = on_output
        self.on_layers = on_layers
        self.stats = stats or InputStats()
        self.live = live
        self.speed_preset = speed_preset
        self.layers: list[pm.VideoLayer] = []
        self.encoders: list[Any] = []
        self.scalers: list[VideoReformatter] = []
        self.src_size = (0, 0)
        self.last_time = -1.0
        self.keyframe_wanted = threading.Event()
        self.keyframe_layers: set[int] = set()
        self.waiting_for_key = False
        self.decode_errors = 0
        self.time_base: fractions.Fraction | None = None
        self.frames_in = 0
        self.frames_out = 0
        self._fps_window: list[float] = []

    def request_keyframe(self, layer: int = -1) -> None:
        """Any thread: the next frame of that layer (every layer when -1) is a keyframe."""
        self.keyframe_layers.add(layer)
        self.keyframe_wanted.set()

    def push(self, packet: Any, keyframe: bool) -> bool:
        """Queue a compressed packet; a live source drops (and then waits for a keyframe) when full."""
        if self.waiting_for_key:
            if not keyframe:
                return False
            self.waiting_for_key = False
        if self.put(packet, block=not self.live, timeout=None if not self.live else 0):
            return True
        self.waiting_for_key = True
        return False

    def handle(self, packet: Any) -> None:
        if isinstance(packet, tuple):  # ("decoder", ctx): the source's decoder configuration changed
            self.decoder = packet[1]
            return
        try:
            frames = self.decoder.decode(packet)
            self.decode_errors = 0
        except av.FFmpegError as e:
            self.decode_errors += 1
            if self.decode_errors >= MAX_DECODE_ERRORS:
                raise RuntimeError(f"cannot decode the video ({e})") from None
            return
        for frame in frames:
            self._on_frame(frame)

    def flush(self) -> None:
        try:
            for frame in self.decoder.decode(None):
                self._on_frame(frame)
        except av.FFmpegError:
            pass
        for i, enc in enumerate(self.encoders):
            try:
                for p in enc.encode(None):
                    self._emit(i, p)
            except av.FFmpegError:
                pass

    def _on_frame(self, frame: av.VideoFrame) -> None:
        if frame.time_base is not None:
            self.time_base = frame.time_base
        elif frame.pts is not None:
            frame.time_base = self.time_base  # frames flushed at the end carry none
        if frame.pts is None or frame.time_base is None:
            return
        t = float(frame.pts * frame.time_base)
        self.frames_in += 1
        self._observe(t, frame.width, frame.height)
        if self.last_time >= 0 and t - self.last_time < 0.9 / self.fps:
            return  # above the output frame rate
        if (frame.width, frame.height) != self.src_size:
            self._open_encoders(frame.width, frame.height)
        self.last_time = t
        force: set[int] = set()
        if self.keyframe_wanted.is_set():
            self.keyframe_wanted.clear()
            force, self.keyframe_layers = self.keyframe_layers, set()
            if -1 in force:
                force = set(range(len(self.layers)))
        pts = round(t * VIDEO_CLOCK)
        for i, (layer, enc, scaler) in enumerate(zip(self.layers, self.encoders, self.scalers)):
            out = scaler.reformat(frame, width=layer.width, height=layer.height, format="yuv420p",
                                  interpolation=Interpolation.BILINEAR)
            out.pts = pts
            out.time_base = enc.time_base
            if i in force:
                out.pict_type = av.video.frame.PictureType.I
            for p in enc.encode(out):
                self._emit(i, p)

    def _observe(self, t: float, w: int, h: int) -> None:
        self.stats.width, self.stats.height = w, h
        window = self._fps_window
        window.append(t)
        if len(window) > 31:
            del window[0]
        if len(window) >= 2 and window[-1] > window[0]:
            self.stats.framerate = round((len(window) - 1) / (window[-1] - window[0]), 2)

    def _open_encoders(self, w: int, h: int) -> None:
        self.encoders = []  # a new source size: new encoders (the old ones are released)
        self.src_size = (w, h)
        self.layers = fit_layers(self.wanted_layers, w, h)
        self.encoders = [self._encoder(layer) for layer in self.layers]
        self.scalers = [VideoReformatter() for _ in self.layers]
        self.on_layers(self.layers)
        log.info("ingress_video_encoders", source=f"{w}x{h}", codec=self.codec,
                 layers=",".join(f"{x.width}x{x.height}@{x.bitrate // 1000}k" for x in self.layers))

    def _encoder(self, layer: pm.VideoLayer) -> Any:
        gop = max(1, int(self.fps * GOP_SECONDS))
        kbps = max(layer.bitrate // 1000, 50)
        if self.codec == "vp8":
            enc = av.CodecContext.create("libvpx", "w")
            enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                           "auto-alt-ref": "0", "error-resilient": "1", "static-thresh": "0",
                           "undershoot-pct": "95", "max-intra-rate": "300"}
            enc.qmin, enc.qmax = 4, 56
        else:
            enc = av.CodecContext.create("libx264", "w")
            enc.options = {"preset": self.speed_preset, "tune": "zerolatency", "profile": "baseline",
                           "forced-idr": "1",
                           "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:"
                                          f"vbv-maxrate={kbps}:vbv-bufsize={kbps}:nal-hrd=none"}
        enc.width, enc.height = layer.width, layer.height
        enc.pix_fmt = "yuv420p"
        enc.bit_rate = layer.bitrate
        enc.gop_size = gop
        enc.framerate = fractions.Fraction(round(self.fps * 1000), 1000)
        enc.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        enc.thread_count = 2 if layer.width * layer.height > 640 * 360 else 1
        enc.open()
        return enc

    def _emit(self, layer: int, p: Any) -> None:
        if p.pts is None:
            return
        self.frames_out += 1
        lay = self.layers[layer]
        self.on_output(EncodedFrame("video", layer, bytes(p), p.pts / VIDEO_CLOCK, p.is_keyframe,
                                    lay.width, lay.height))


class AudioTranscoder(_Worker):
    """Items: av.Packet on the session clock; out: Opus frames of 20 ms."""

    name = "audio"

    def __init__(self, decoder: Any, channels: int, bitrate: int, dtx: bool,
                 on_output: Callable[[EncodedFrame], None], on_error: Callable[[str], None],
                 stats: InputStats | None = None, live: bool = True) -> None:
        super().__init__(AUDIO_QUEUE, on_error)
        self.decoder = decoder
        self.channels = channels
        self.on_output = on_output
        self.stats = stats or InputStats()
        self.live = live
        layout = "stereo" if channels == 2 else "mono"
        self.resampler = av.AudioResampler(format="s16", layout=layout, rate=OPUS_RATE)
        self.fifo = av.AudioFifo()
        self.encoder = av.CodecContext.create("libopus", "w")
        self.encoder.sample_rate = OPUS_RATE
        self.encoder.layout = layout
        self.encoder.format = "s16"
        self.encoder.bit_rate = bitrate
        self.encoder.time_base = fractions.Fraction(1, OPUS_RATE)
        self.encoder.options = {"application": "audio", "frame_duration": "20", "dtx": "1" if dtx else "0"}
        self.next_sample = 0  # pts (in samples) of the next Opus frame
        self.clock_started = False
        self.last_pts = 0
        self.pending_pts: collections.deque[int] = collections.deque(maxlen=64)
        self.decode_errors = 0
        self.time_base: fractions.Fraction | None = None

    def push(self, packet: Any) -> bool:
        return self.put(packet, block=not self.live, timeout=None if not self.live else 0)

    def handle(self, packet: Any) -> None:
        try:
            frames = self.decoder.decode(packet)
            self.decode_errors = 0
        except av.FFmpegError as e:
            self.decode_errors += 1
            if self.decode_errors >= MAX_DECODE_ERRORS:
                raise RuntimeError(f"cannot decode the audio ({e})") from None
            return
        for frame in frames:
            self._on_frame(frame)

    def _on_frame(self, frame: av.AudioFrame) -> None:
        self.stats.sample_rate = frame.sample_rate
        self.stats.channels = len(frame.layout.channels)
        if frame.time_base is not None:
            self.time_base = frame.time_base
        tb = frame.time_base or self.time_base
        t = float(frame.pts * tb) if frame.pts is not None and tb else None
        for out in self.resampler.resample(frame):
            if t is not None:
                expected = self.next_sample + self.fifo.samples
                start = round(t * OPUS_RATE)
                if not self.clock_started or abs(start - expected) > OPUS_RATE // 10:
                    # first frame, or the source jumped: restart the sample clock there
                    self.fifo = av.AudioFifo()
                    self.next_sample = start
                    self.clock_started = True
                t = None
            out.pts = None
            self.fifo.write(out)
        while self.fifo.samples >= OPUS_FRAME:
            chunk = self.fifo.read(OPUS_FRAME)
            chunk.pts = self.next_sample
            chunk.time_base = self.encoder.time_base
            chunk.sample_rate = OPUS_RATE
            self.pending_pts.append(self.next_sample)
            self.next_sample += OPUS_FRAME
            for p in self.encoder.encode(chunk):
                self._emit(p)

    def flush(self) -> None:
        try:
            for p in self.encoder.encode(None):
                self._emit(p)
        except av.FFmpegError:
            pass

    def _emit(self, p: Any) -> None:
        # one packet per 20 ms frame, in order: each takes the time of the frame it encodes
        # (the packet's own pts is shifted by the encoder's priming)
        pts = self.pending_pts.popleft() if self.pending_pts else self.last_pts + OPUS_FRAME
        self.last_pts = pts
        self.on_output(EncodedFrame("audio", 0, bytes(p), pts / OPUS_RATE))


def make_decoder(codec: str, extradata: bytes = b"") -> Any:
    """A decoder for an elementary stream (RTMP's H.264/AAC/MP3, WHIP's VP8/H.264/Opus)."""
    ctx = av.CodecContext.create(codec, "r")
    if extradata:
        ctx.extradata = extradata
    if ctx.type == "video":
        ctx.thread_type = "SLICE"
        ctx.thread_count = 2
    return ctx


def packet(data: bytes, pts: int, time_base: fractions.Fraction, dts: int | None = None) -> av.Packet:
    p = av.Packet(data)
    p.pts = pts
    p.dts = pts if dts is None else dts
    p.time_base = time_base
    return p


def in_thread(fn: Callable[[], Any], name: str) -> asyncio.Future:
    """Run a blocking call in a thread of its own (not the loop's shared executor, which a few
    long URL reads could exhaust); the future resolves on the calling loop."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future = loop.create_future()

    def run() -> None:
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - delivered to the awaiting coroutine
            loop.call_soon_threadsafe(lambda err=e: fut.done() or fut.set_exception(err))
        else:
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(result))

    threading.Thread(target=run, name=name, daemon=True).start()
    return fut
