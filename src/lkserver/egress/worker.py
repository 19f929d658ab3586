"""The egress worker: one OS process per egress job, where all decoding, mixing, composing,
encoding, muxing and uploading happens (ARCHITECTURE rule 6; LiveKit egress also runs each job
in its own process, `egress run-handler`).

    python -m lkserver.egress.worker MEDIA_FD

stdin carries control messages (JSON lines: start, track, track_gone, muted, layout, add_stream,
remove_stream, stop), stdout carries status (JSON lines: ready, active, keyframe, stream_started,
stream_failed, log, result), MEDIA_FD is a SOCK_SEQPACKET socket of RTP packets, each prefixed
with one byte naming the input. The server starts a worker before it is needed (a warm spare),
so a job starts without paying for Python and PyAV imports.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import traceback
from collections import deque
from typing import Any

import av
import numpy as np

from .compositor import Compositor, TileSource
from .depacketize import ReorderBuffer, RtpPacket, depacketizer_for
from .sinks import (
    Encoders,
    FileSink,
    HlsSink,
    ImageSink,
    PassthroughFileSink,
    RtmpSink,
    Uploader,
    WebsocketSink,
    ns,
)
from .storage import open_storage

MIX_RATE = 48000
MIX_CHUNK = 960  # 20 ms
JITTER_PRIME = MIX_CHUNK * 3  # an input is mixed once 60 ms are buffered ...
JITTER_MAX = MIX_RATE // 2  # ... and trimmed back to that past 500 ms
SPEAKER_HOLD = 1.0  # seconds another participant must be louder before the speaker changes
KEYFRAME_REQUEST_INTERVAL = 1.0
START_SIGNAL_TIMEOUT = 30.0  # a web page asked to signal START_RECORDING must do so this soon
DECODERS = {"audio/opus": "opus", "audio/red": "opus", "video/vp8": "vp8", "video/h264": "h264"}
CHANNEL_BOTH, CHANNEL_LEFT, CHANNEL_RIGHT = 0, 1, 2


class Status:
    """JSON lines on stdout, from any thread."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def __call__(self, msg: dict) -> None:
        line = json.dumps(msg, separators=(",", ":")) + "\n"
        with self.lock:
            try:
                self.stream.write(line)
                self.stream.flush()
            except (BrokenPipeError, ValueError):
                pass


class PcmBuffer:
    """Decoded mono float32 samples of one input, with a small jitter allowance (bounded)."""

    def __init__(self) -> None:
        self.chunks: deque[np.ndarray] = deque()
        self.available = 0
        self.primed = False
        self.lock = threading.Lock()

    def write(self, samples: np.ndarray) -> None:
        with self.lock:
            self.chunks.append(samples)
            self.available += len(samples)
            if self.available >= JITTER_PRIME:
                self.primed = True
            while self.available > JITTER_MAX:  # too far behind: drop the oldest
                old = self.chunks.popleft()
                self.available -= len(old)

    def read(self, n: int) -> np.ndarray | None:
        with self.lock:
            if not self.primed:
                return None
            if self.available < n:
                self.primed = False  # ran dry: prime again before mixing it
            out = np.zeros(n, dtype=np.float32)
            i = 0
            while i < n and self.chunks:
                c = self.chunks[0]
                take = min(n - i, len(c))
                out[i:i + take] = c[:take]
                i += take
                if take == len(c):
                    self.chunks.popleft()
                else:
                    self.chunks[0] = c[take:]
                self.available -= take
            return out


class Input:
    """One subscribed track: RTP -> frames -> decoded audio samples or the latest picture."""

    def __init__(self, job: Job, msg: dict) -> None:
        self.job = job
        self.index = int(msg["index"])
        self.kind = msg["kind"]
        self.mime = msg["mime"].lower()
        self.identity = msg.get("identity", "")
        self.source = msg.get("source", "")
        self.channel = int(msg.get("channel", CHANNEL_BOTH))
        self.reorder = ReorderBuffer()
        self.depack = depacketizer_for(self.mime)
        self.decoder = av.CodecContext.create(DECODERS[self.mime], "r") if job.decoding else None
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=MIX_RATE) if self.kind == "audio" else None
        self.pcm = PcmBuffer()
        self.frame: Any = None
        self.frame_id = 0
        self.level = 0.0
        self.last_keyframe_request = 0.0
        self.lock = threading.Lock()
        self.muted = bool(msg.get("muted", False))
        self.gone = False

    def push(self, data: bytes) -> None:
        try:
            pkt = RtpPacket.parse(data)
        except ValueError:
            return
        with self.lock:
            for p in self.reorder.push(pkt):
                for frame in self.depack.push(p):
                    self.job.on_frame(self, frame)
            if self.depack.need_keyframe:
                now = time.monotonic()
                if now - self.last_keyframe_request > KEYFRAME_REQUEST_INTERVAL:
                    self.last_keyframe_request = now
                    self.job.emit({"ev": "keyframe", "index": self.index})

    def decode(self, data: bytes) -> None:
        assert self.decoder is not None
        try:
            frames = self.decoder.decode(av.Packet(data))
        except av.error.FFmpegError:
            if self.kind == "video":
                self.depack.need_keyframe = True
            return
        for f in frames:
            if self.kind == "audio":
                assert self.resampler is not None
                for r in self.resampler.resample(f):
                    samples = r.to_ndarray().reshape(-1).astype(np.float32)
                    self.pcm.write(samples)
                    rms = float(np.sqrt(np.mean(samples * samples))) if len(samples) else 0.0
                    self.level = self.level * 0.9 + rms * 0.1
            else:
                self.frame = f if f.format.name == "yuv420p" else f.reformat(format="yuv420p")
                self.frame_id += 1
                self.job.first_media.set()


class PageInput:
    """The web page as an input: screencast JPEGs and tapped page audio (egress/web.py)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.identity = "web"
        self.source = ""
        self.channel = CHANNEL_BOTH
        self.pcm = PcmBuffer()
        self.frame: Any = None
        self.frame_id = 0
        self.level = 0.0
        self.muted = False
        self.gone = False
        self.jpeg = av.CodecContext.create("mjpeg", "r") if kind == "video" else None
        self.resamplers: dict[int, Any] = {}

    def on_jpeg(self, data: bytes) -> None:
        assert self.jpeg is not None
        try:
            for f in self.jpeg.decode(av.Packet(data)):
                self.frame = f.reformat(format="yuv420p")
                self.frame_id += 1
        except av.error.FFmpegError:
            pass

    def on_pcm(self, rate: int, data: bytes) -> None:
        samples = np.frombuffer(data, dtype="<f4")
        if rate != MIX_RATE:
            r = self.resamplers.get(rate)
            if r is None:
                r = self.resamplers[rate] = av.AudioResampler(format="flt", layout="mono", rate=MIX_RATE)
            f = av.AudioFrame.from_ndarray(samples.reshape(1, -1).astype(np.float32), format="flt", layout="mono")
            f.sample_rate = rate
            out = [x.to_ndarray().reshape(-1) for x in r.resample(f)]
            samples = np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
        self.pcm.write(samples.astype(np.float32))


class Job:
    def __init__(self, start: dict, emit: Status) -> None:
        self.plan = start["plan"]
        self.tmp_dir = start["tmp_dir"]
        self.output_dir = start["output_dir"]
        self.endpoints = start.get("endpoints", {})
        self.x264_preset = start.get("x264_preset", "veryfast")
        self.chromium = start.get("chromium", "")
        self.browser: Any = None
        self.start_signal = threading.Event()
        self.emit = emit
        self.passthrough = bool(self.plan["passthrough"])
        self.decoding = not self.passthrough or bool(self.plan.get("websocket"))
        self.inputs: dict[int, Input] = {}
        self.stop_event = threading.Event()
        self.first_media = threading.Event()
        self.stop_reason = ""
        self.layout = self.plan.get("layout", "")
        self.manifest: dict = {}
        self.uploader = Uploader(emit)
        self.streams: dict[str, Any] = {}  # redacted url -> RtmpSink / WebsocketSink
        self.stream_errors: dict[str, str] = {}
        self.sinks: list[Any] = []
        self.images: list[ImageSink] = []
        self.enc: Encoders | None = None
        self.error = ""
        self.aborted = ""
        self.active_at = 0.0
        self.media_ended_at = 0.0
        self.speaker: str | None = None
        self.speaker_candidate: tuple[str | None, float] = (None, 0.0)
        self.pass_sink: PassthroughFileSink | None = None
        self.pass_first_ts: int | None = None
        self.pass_last_ts = 0
        self.pass_lock = threading.Lock()  # the media thread muxes, the main thread closes
        self.pass_closed = False
        self.sinks_lock = threading.Lock()
        os.makedirs(self.tmp_dir, exist_ok=True)

    # -- control -----------------------------------------------------------------------------

    def control(self, msg: dict) -> None:
        op = msg.get("op")
        if op == "track":
            self.inputs[int(msg["index"])] = Input(self, msg)
        elif op == "track_gone":
            inp = self.inputs.get(int(msg["index"]))
            if inp is not None:
                inp.gone = True
        elif op == "muted":
            inp = self.inputs.get(int(msg["index"]))
            if inp is not None:
                inp.muted = bool(msg["muted"])
                for s in list(self.streams.values()):
                    if isinstance(s, WebsocketSink):
                        s.muted(inp.muted)
        elif op == "layout":
            self.layout = msg["layout"]
        elif op == "add_stream":
            self._add_rtmp(msg["url"], msg["redacted"])
        elif op == "remove_stream":
            sink = self.streams.pop(msg["redacted"], None)
            if sink is not None:
                with self.sinks_lock:
                    if sink in self.sinks:
                        self.sinks.remove(sink)
                threading.Thread(target=self._close_stream, args=(msg["redacted"], sink), daemon=True).start()
        elif op == "stop":
            self.stop_reason = msg.get("reason", "")
            self.stop_event.set()

    def stop_itself(self, reason: str) -> None:
        """The source ended the recording (not the server): tell the server why, then finish."""
        if not self.stop_event.is_set():
            self.stop_reason = reason
            self.emit({"ev": "ending", "reason": reason})
            self.stop_event.set()

    def _close_stream(self, redacted: str, sink: Any) -> None:
        sink.close(time.time())
        self.emit({"ev": "stream_ended", "url": redacted, "ended_at": ns(time.time())})

    def on_media(self, index: int, data: bytes) -> None:
        inp = self.inputs.get(index)
        if inp is not None and not inp.gone:
            inp.push(data)

    def _stream_failed(self, redacted: str, error: str) -> None:
        self.stream_errors[redacted] = error
        self.emit({"ev": "stream_failed", "url": redacted, "error": error, "ended_at": ns(time.time())})
        with self.sinks_lock:
            live = [s for s in self.streams.values() if not s.failed]
            others = self.plan.get("file") or self.plan.get("segments") or self.plan.get("images")
        if not live and not others:
            self.error = self.error or error
            self.stop_itself("Failure")

    def _add_rtmp(self, url: str, redacted: str) -> None:
        assert self.enc is not None
        sink = RtmpSink(url, redacted, self.enc, self.emit, self._stream_failed)
        with self.sinks_lock:
            self.streams[redacted] = sink
            self.sinks.append(sink)

    # -- media -------------------------------------------------------------------------------

    def on_frame(self, inp: Input, frame: Any) -> None:
        if self.passthrough:
            self._passthrough_frame(inp, frame)
        else:
            inp.decode(frame.data)

    # -- the job -------------------------------------------------------------------------------

    def run(self) -> dict:
        try:
            if self.passthrough:
                self._run_passthrough()
            else:
                self._run_composite()
        except Exception as e:  # noqa: BLE001 - reported as the job's failure
            traceback.print_exc(file=sys.stderr)
            self.error = self.error or f"{e.__class__.__name__}: {e}"
        return self._finish()

    def _storage(self, storage: dict) -> Any:
        return open_storage(storage, self.output_dir, self.endpoints)

    def _gop(self) -> int:
        plan = self.plan
        seconds = plan["segments"]["duration"] if plan.get("segments") else (plan.get("key_frame_interval") or 4)
        return max(1, int(round(float(seconds) * int(plan["framerate"]))))

    def _run_composite(self) -> None:
        plan = self.plan
        video, audio = bool(plan["video_enabled"]), bool(plan["audio_enabled"])
        encoded = plan.get("file") or plan.get("segments") or plan.get("stream")
        self.enc = Encoders(plan, video and bool(encoded), audio and bool(encoded), self._gop(), self.x264_preset) \
            if encoded else None
        if plan.get("file"):
            self.sinks.append(FileSink(plan["file"], self.tmp_dir, self.enc, self._storage(plan["file"]["storage"]),
                                       self.uploader, self.manifest))
        if plan.get("segments"):
            self.sinks.append(HlsSink(plan["segments"], self.tmp_dir, self.enc,
                                      self._storage(plan["segments"]["storage"]), self.uploader, self.manifest,
                                      self.emit))
        if plan.get("stream"):
            for url, redacted in plan["stream"]["urls"]:
                self._add_rtmp(url, redacted)
        if plan.get("websocket"):
            for url, redacted in plan["websocket"]["urls"]:
                ws = WebsocketSink(url, redacted, self.emit, self._stream_failed)
                self.streams[redacted] = ws
        for i, img in enumerate(plan.get("images") or []):
            self.images.append(ImageSink(img, self.tmp_dir, self._storage(img["storage"]), self.uploader,
                                         self.manifest, int(plan["width"]), int(plan["height"]), i))
        compositor = Compositor(int(plan["width"]), int(plan["height"]),
                                self.layout if plan["source"] == "template" else "single-speaker")
        layout = self.layout
        if plan["source"] == "web" and not self._open_page():
            return
        if plan["source"] in ("participant", "tracks"):
            # an SDK source starts with its media (or is aborted if stopped first)
            while not self.first_media.wait(0.05):
                if self.stop_event.is_set():
                    self.error = ""
                    self.aborted = "Stop called before pipeline could start"
                    return
                if any(i.kind == "audio" and i.pcm.primed for i in self.inputs.values()):
                    break
        fps = int(plan["framerate"])
        tiles: dict[str, TileSource] = {}
        t0 = time.monotonic()
        self.active_at = time.time()
        self.emit({"ev": "active", "started_at": ns(self.active_at)})
        vi = ai = 0
        last_frame: Any = None
        while not self.stop_event.is_set():
            now = time.monotonic() - t0
            if video:
                behind = int(now * fps) - vi
                if behind > fps:  # more than a second late (CPU starved): skip ahead
                    vi += behind - 1
                while vi / fps <= now:
                    if plan["source"] == "template" and layout != self.layout:
                        layout = self.layout
                        compositor.set_layout(layout)
                    canvas, changed = compositor.render(self._tile_sources(tiles), self._update_speaker(now))
                    # an unchanged picture is sent again as the same frame (the encoder copies it)
                    frame = av.VideoFrame.from_ndarray(canvas, format="yuv420p") \
                        if changed or last_frame is None else last_frame
                    frame.pts = vi
                    last_frame = frame
                    if self.enc is not None and self.enc.video is not None:
                        self._dispatch("v", self.enc.encode_video(frame))
                    for img in self.images:
                        if img.due(vi / fps):
                            img.capture(vi / fps, frame)
                    vi += 1
            if audio:
                if int(now * MIX_RATE) - ai > MIX_RATE:
                    ai = int(now * MIX_RATE) - MIX_CHUNK
                while ai / MIX_RATE <= now:
                    self._mix_and_encode(ai)
                    ai += MIX_CHUNK
            nxt = min((vi / fps) if video else 1e9, (ai / MIX_RATE) if audio else 1e9)
            delay = nxt - (time.monotonic() - t0)
            if delay > 0:
                self.stop_event.wait(delay)
        self.media_ended_at = time.time()
        del last_frame
        if self.enc is not None:
            for kind, p in self.enc.flush():
                self._dispatch(kind, [p])

    def _open_page(self) -> bool:
        """Web egress: load the page (and wait for START_RECORDING if asked); False: do not record."""
        from .web import Browser, PageError

        plan = self.plan
        video, audio = PageInput("video"), PageInput("audio")
        self.inputs[0], self.inputs[1] = video, audio  # type: ignore[assignment]

        def on_console(text: str) -> None:
            if "START_RECORDING" in text:
                self.start_signal.set()
            elif "END_RECORDING" in text:
                self.stop_itself("Source closed")

        try:
            self.browser = Browser(self.chromium, int(plan["width"]), int(plan["height"]), video.on_jpeg,
                                   audio.on_pcm, on_console)
            self.browser.open(plan["web_url"])
        except (PageError, OSError) as e:
            self.error = f"page load error: {e}"
            return False
        if plan.get("await_start_signal"):
            deadline = time.monotonic() + START_SIGNAL_TIMEOUT
            while not self.start_signal.wait(0.05):
                if self.stop_event.is_set():
                    self.aborted = "Stop called before pipeline could start"
                    return False
                if time.monotonic() > deadline:
                    self.aborted = "Start signal not received"
                    return False
        return True

    def _tile_sources(self, tiles: dict[str, TileSource]) -> list[TileSource]:
        """One tile per participant: its screen share or camera picture, or an empty tile."""
        seen: dict[str, TileSource] = {}
        for inp in list(self.inputs.values()):
            if inp.gone:
                continue
            key = inp.identity + ("#screen" if inp.source == "screen_share" else "")
            if inp.kind == "audio":
                key = inp.identity
                if key in seen or any(k.split("#")[0] == key for k in seen):
                    continue
            t = tiles.setdefault(key, TileSource(key))
            t.screen_share = inp.source == "screen_share"
            if inp.kind == "video" and inp.frame is not None and not inp.muted:
                t.frame, t.frame_id = inp.frame, inp.frame_id
            elif inp.kind == "video":
                t.frame, t.frame_id = None, 0
            seen[key] = t
        return list(seen.values())

    def _update_speaker(self, now: float) -> str | None:
        loudest, level = None, 0.002
        for inp in list(self.inputs.values()):
            if inp.kind == "audio" and not inp.gone and not inp.muted and inp.level > level:
                loudest, level = inp.identity, inp.level
        if loudest is None or loudest == self.speaker:
            self.speaker_candidate = (None, 0.0)
            return self.speaker
        if self.speaker is None:
            self.speaker = loudest
            return self.speaker
        cand, since = self.speaker_candidate
        if cand != loudest:
            self.speaker_candidate = (loudest, now)
        elif now - since >= SPEAKER_HOLD:
            self.speaker = loudest
            self.speaker_candidate = (None, 0.0)
        return self.speaker

    def _mix_and_encode(self, ai: int) -> None:
        left = np.zeros(MIX_CHUNK, dtype=np.float32)
        right = np.zeros(MIX_CHUNK, dtype=np.float32)
        for inp in list(self.inputs.values()):
            if inp.kind != "audio" or inp.gone:
                continue
            s = inp.pcm.read(MIX_CHUNK)
            if s is None or inp.muted:
                continue
            if inp.channel in (CHANNEL_BOTH, CHANNEL_LEFT):
                left += s
            if inp.channel in (CHANNEL_BOTH, CHANNEL_RIGHT):
                right += s
        stereo = np.clip(np.stack([left, right], axis=1), -1.0, 1.0)
        pcm16 = (stereo * 32767).astype("<i2")
        for s in list(self.streams.values()):
            if isinstance(s, WebsocketSink):
                s.write_pcm(pcm16.tobytes())
        if self.enc is not None and self.enc.audio is not None:
            frame = av.AudioFrame.from_ndarray(pcm16.reshape(1, -1), format="s16", layout="stereo")
            frame.sample_rate = MIX_RATE
            frame.pts = ai
            frame.time_base = _tb(MIX_RATE)
            self._dispatch("a", self.enc.encode_audio(frame))

    def _dispatch(self, kind: str, packets: list) -> None:
        if not packets:
            return
        with self.sinks_lock:
            sinks = list(self.sinks)
        for p in packets:
            for s in sinks:
                s.write(kind, p)

    # -- passthrough (track egress) ------------------------------------------------------------

    def _run_passthrough(self) -> None:
        plan = self.plan
        if plan.get("websocket"):
            for url, redacted in plan["websocket"]["urls"]:
                self.streams[redacted] = WebsocketSink(url, redacted, self.emit, self._stream_failed)
        while not self.first_media.wait(0.05):
            if self.stop_event.is_set():
                self.aborted = "Stop called before pipeline could start"
                return
        self.active_at = time.time()
        self.emit({"ev": "active", "started_at": ns(self.active_at)})
        self.stop_event.wait()
        self.media_ended_at = time.time()

    def _passthrough_frame(self, inp: Input, frame: Any) -> None:
        plan = self.plan
        if plan.get("websocket"):
            self._websocket_audio(inp, frame.data)
            return
        with self.pass_lock:  # muxing into a container while it is closed crashes FFmpeg
            if self.pass_closed:
                return
            if self.pass_sink is None:
                if inp.kind == "video" and not frame.keyframe:
                    return
                self.pass_sink = self._open_passthrough(inp, frame)
                self.pass_first_ts = frame.timestamp
                self.first_media.set()
            rate = 48000 if inp.kind == "audio" else 90000
            pkt = av.Packet(frame.data)
            pkt.pts = pkt.dts = frame.timestamp - (self.pass_first_ts or 0)
            if pkt.pts < 0:
                return
            pkt.time_base = _tb(rate)
            pkt.is_keyframe = frame.keyframe
            self.pass_last_ts = max(self.pass_last_ts, pkt.pts)
            self.pass_sink.write(inp.kind[0], pkt)

    def _websocket_audio(self, inp: Input, data: bytes) -> None:
        assert inp.decoder is not None
        try:
            frames = inp.decoder.decode(av.Packet(data))
        except av.error.FFmpegError:
            return
        if not hasattr(inp, "ws_resampler"):
            inp.ws_resampler = av.AudioResampler(format="s16", layout="stereo", rate=48000)  # type: ignore[attr-defined]
        for f in frames:
            for r in inp.ws_resampler.resample(f):  # type: ignore[attr-defined]
                pcm = r.to_ndarray().astype("<i2").tobytes()
                for s in list(self.streams.values()):
                    s.write_pcm(pcm)
        if not self.first_media.is_set():
            self.first_media.set()

    def _open_passthrough(self, inp: Input, frame: Any) -> PassthroughFileSink:
        conf = self.plan["file"]
        storage = self._storage(conf["storage"])
        if inp.mime in ("audio/opus", "audio/red"):
            import io

            tmpl = av.open(io.BytesIO(), "w", format="ogg")
            s = tmpl.add_stream("libopus", rate=48000)
            s.layout = "stereo"
            tmpl.start_encoding()
            self._template = tmpl  # keeps the template stream alive
            template: Any = s
        else:
            dec = av.CodecContext.create(DECODERS[inp.mime], "r")
            w = h = 0
            try:
                for f in dec.decode(av.Packet(frame.data)):
                    w, h = f.width, f.height
            except av.error.FFmpegError:
                pass
            template = ("vp8" if inp.mime == "video/vp8" else "h264", {"width": w, "height": h})
        return PassthroughFileSink(conf, self.tmp_dir, template, storage, self.uploader, self.manifest,
                                   inp.kind[0])

    # -- the end -------------------------------------------------------------------------------

    def _finish(self) -> dict:
        now = self.media_ended_at or time.time()  # when the recording stopped, not when it is closed
        if self.browser is not None:
            self.browser.close()
        result: dict = {"ev": "result", "error": self.error, "aborted": self.aborted,
                        "file_results": [], "segment_results": [], "image_results": [], "stream_results": []}
        close_errors = []
        with self.pass_lock:
            self.pass_closed = True  # no packet reaches the passthrough file from here on
        for s in list(self.sinks) + ([self.pass_sink] if self.pass_sink else []):
            if isinstance(s, RtmpSink):
                continue
            try:
                s.close(now)
            except Exception as e:  # noqa: BLE001
                close_errors.append(f"{e.__class__.__name__}: {e}")
        for img in self.images:
            img.close(now)
        for redacted, s in list(self.streams.items()):
            s.close(now)
            result["stream_results"].append({"url": redacted, "failed": bool(s.failed),
                                             "error": self.stream_errors.get(redacted, ""), "ended_at": ns(now)})
        self.uploader.close()
        for s in self.sinks + ([self.pass_sink] if self.pass_sink else []):
            if isinstance(s, (FileSink, PassthroughFileSink)):
                result["file_results"].append(s.result)
            elif isinstance(s, HlsSink):
                result["segment_results"].append(s.result)
        if self.pass_sink is not None:
            r = self.pass_sink.result
            rate = 48000 if "a" in self.pass_sink.streams else 90000
            r["duration"] = int(self.pass_last_ts / rate * 1e9)
        result["image_results"] = [img.result for img in self.images]
        if not self.error and close_errors:
            self.error = close_errors[0]
        upload_error = self.uploader.error
        if upload_error and not self.error:
            self.error = upload_error
        result["error"] = self.error
        # the manifest: beside the file (or playlist / images), only for a recording that finished
        if not self.error and not result["aborted"] and self._manifest_target() is not None:
            result["manifest_location"] = self._write_manifest(now)
        result["ended_at"] = ns(now)
        return result

    def _manifest_target(self) -> tuple[dict, str] | None:
        plan = self.plan
        if plan.get("file") and not plan["file"]["disable_manifest"]:
            return plan["file"]["storage"], os.path.dirname(plan["file"]["filepath"])
        if plan.get("segments") and not plan["segments"]["disable_manifest"]:
            return plan["segments"]["storage"], plan["segments"]["storage_dir"].rstrip("/")
        for img in plan.get("images") or []:
            if not img["disable_manifest"]:
                return img["storage"], img["storage_dir"].rstrip("/")
        return None

    def _write_manifest(self, now: float) -> str:
        target = self._manifest_target()
        assert target is not None
        storage, directory = target
        plan = self.plan
        m = {"egress_id": plan["egress_id"], "room_id": plan["room_id"], "room_name": plan["room_name"],
             "url": plan.get("web_url", ""), "started_at": ns(self.active_at or now), "ended_at": ns(now),
             "publisher_identity": plan.get("identity") or plan["replacements"].get("{publisher_identity}", ""),
             "track_id": plan.get("track_id", ""), "track_kind": plan["replacements"].get("{track_type}", ""),
             "track_source": plan["replacements"].get("{track_source}", ""),
             "audio_track_id": plan.get("audio_track_id", ""), "video_track_id": plan.get("video_track_id", "")}
        m = {k: v for k, v in m.items() if v}
        for k in ("files", "playlists", "images"):
            if self.manifest.get(k):
                m[k] = self.manifest[k]
        local = os.path.join(self.tmp_dir, f"{plan['egress_id']}.json")
        with open(local, "w") as f:
            json.dump(m, f, indent=2)
        key = (directory + "/" if directory else "") + f"{plan['egress_id']}.json"
        try:
            return self._storage(storage).upload(local, key)
        except Exception as e:  # noqa: BLE001
            self.emit({"ev": "log", "level": "warning", "msg": "manifest_upload_failed", "error": str(e)})
            return ""


def _tb(rate: int) -> Any:
    import fractions

    return fractions.Fraction(1, rate)


def _read_control(job: Job, stdin: Any) -> None:
    for line in stdin:
        line = line.strip()
        if not line:
            continue
        try:
            job.control(json.loads(line))
        except Exception:  # noqa: BLE001
            traceback.print_exc(file=sys.stderr)
    # the server went away: finish what we have
    job.stop_reason = job.stop_reason or "Source closed"
    job.stop_event.set()


def _read_media(job: Job, sock: socket.socket) -> None:
    while True:
        try:
            data = sock.recv(65536)
        except OSError:
            return
        if not data:
            return
        try:
            job.on_media(data[0], data[1:])
        except Exception:  # noqa: BLE001 - a bad packet never ends the recording
            traceback.print_exc(file=sys.stderr)


def main() -> int:
    media = socket.socket(fileno=int(sys.argv[1]))
    emit = Status(sys.stdout)
    emit({"ev": "ready", "pid": os.getpid()})
    start: dict | None = None
    for line in sys.stdin:
        if line.strip():
            start = json.loads(line)
            break
    if start is None or start.get("op") != "start":
        return 0
    job = Job(start, emit)
    try:  # `ps` and /proc show which egress this process records (an egress id is 15 characters)
        with open("/proc/self/comm", "w") as f:
            f.write(job.plan["egress_id"][:15])
    except OSError:
        pass
    for msg in start.get("tracks", []):
        job.control({"op": "track", **msg})
    threading.Thread(target=_read_control, args=(job, sys.stdin), daemon=True).start()
    threading.Thread(target=_read_media, args=(job, media), daemon=True).start()
    result = job.run()
    emit(result)
    sys.stdout.flush()
    os._exit(0)  # encoder / uploader threads are done; do not wait on daemon readers


if __name__ == "__main__":
    sys.exit(main())
