"""Egress outputs inside the worker: shared encoders and the sinks their packets go to.

One H.264 and one audio encoder per job; every sink muxes the same packets (PyAV streams made
from the encoders' parameters, so no sink encodes again): a file (MP4/OGG/WebM), HLS (MPEG-TS
segments cut on keyframes every `segment_duration`, an EVENT playlist that becomes VOD with
ENDLIST at the end, an optional sliding live playlist), RTMP pushes (one thread and bounded
queue each, so a slow server never stalls the others), JPEG images every capture_interval, and
raw PCM to a websocket (S16LE, 48 kHz, stereo, plus `{"muted": bool}` text messages, as LiveKit
egress's websocket sink). Finished files are handed to the Uploader (one thread, bounded queue).
"""

from __future__ import annotations

import fractions
import io
import json
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import av
from av.video.frame import PictureType

from .storage import Storage, UploadError

Emit = Callable[[dict], None]
UPLOAD_QUEUE = 256
STREAM_QUEUE = 512  # packets buffered per RTMP destination (several seconds at 30 fps)
LIVE_PLAYLIST_WINDOW = 5
X264_PRESET = "veryfast"


def ns(t: float) -> int:
    return int(t * 1e9)


class Encoders:
    """The job's encoders, held by an in-memory template container whose streams sinks copy."""

    def __init__(self, plan: dict, video: bool, audio: bool, gop: int, x264_preset: str = X264_PRESET) -> None:
        self.template = av.open(io.BytesIO(), "w", format="matroska")
        self.video = self.audio = None
        self.fps = int(plan["framerate"])
        self.gop, self.next_key = gop, 0
        if video:
            vs = self.template.add_stream("libx264", rate=self.fps)
            vs.width, vs.height, vs.pix_fmt = int(plan["width"]), int(plan["height"]), "yuv420p"
            vs.time_base = fractions.Fraction(1, self.fps)
            ctx = vs.codec_context
            ctx.bit_rate = int(plan["video_bitrate"]) * 1000
            ctx.gop_size = gop
            ctx.options = {"preset": x264_preset, "tune": "zerolatency", "profile": plan.get("video_profile", "main"),
                           "bufsize": str(int(plan["video_bitrate"]) * 2000), "maxrate": str(int(plan["video_bitrate"]) * 1000),
                           "keyint_min": str(gop), "sc_threshold": "0", "threads": "2"}
            self.video = vs
        if audio:
            codec = plan.get("audio_codec") or "audio/aac"
            if codec == "audio/opus":
                a = self.template.add_stream("libopus", rate=48000)
                self.audio_rate = 48000
            elif codec == "audio/mpeg":
                a = self.template.add_stream("libmp3lame", rate=int(plan["audio_frequency"]))
                self.audio_rate = int(plan["audio_frequency"])
            else:
                a = self.template.add_stream("aac", rate=int(plan["audio_frequency"]))
                self.audio_rate = int(plan["audio_frequency"])
            a.layout = "stereo"
            a.bit_rate = int(plan["audio_bitrate"]) * 1000
            a.time_base = fractions.Fraction(1, self.audio_rate)
            self.audio = a
        self.template.start_encoding()  # opens the encoders: their parameters reach the streams

    def encode_video(self, frame: Any) -> list:
        """Keyframes by the clock: every `gop` frames of media time, counted on pts, so that frames
        skipped by a CPU-starved compositor do not stretch a GOP (and an HLS segment) past its length."""
        assert self.video is not None
        key = frame.pts >= self.next_key
        if key:
            self.next_key = frame.pts + self.gop
        frame.pict_type = PictureType.I if key else PictureType.NONE  # a repeated frame object is reused
        return list(self.video.codec_context.encode(frame))

    def encode_audio(self, frame: Any) -> list:
        assert self.audio is not None
        return list(self.audio.codec_context.encode(frame))

    def flush(self) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        if self.video is not None:
            out += [("v", p) for p in self.video.codec_context.encode(None)]
        if self.audio is not None:
            out += [("a", p) for p in self.audio.codec_context.encode(None)]
        return out


def copy_packet(p: Any, stream: Any) -> Any:
    q = av.Packet(bytes(p))
    q.pts, q.dts, q.time_base = p.pts, p.dts, p.time_base
    q.is_keyframe = p.is_keyframe
    if stream is not None:
        q.stream = stream
    return q


class Uploader:
    """Uploads finished files in order on one thread; remembers the first failure."""

    def __init__(self, emit: Emit) -> None:
        self.emit = emit
        self.q: queue.Queue = queue.Queue(UPLOAD_QUEUE)
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name="egress-upload", daemon=True)
        self.thread.start()

    def put(self, storage: Storage, local: str, key: str, done: Callable[[str], None] | None = None,
            keep: bool = False) -> None:
        try:
            self.q.put_nowait((storage, local, key, done, keep))
        except queue.Full:
            self.error = self.error or f"{storage.provider} upload queue full ({UPLOAD_QUEUE} pending): storage cannot keep up"

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            storage, local, key, done, keep = item
            try:
                location = storage.upload(local, key)
            except UploadError as e:
                self.error = self.error or str(e)
                self.emit({"ev": "log", "level": "warning", "msg": "upload_failed", "error": str(e)})
                continue
            if done is not None:
                done(location)
            if not keep and os.path.abspath(local) != os.path.abspath(location):
                try:
                    os.unlink(local)
                except OSError:
                    pass

    def close(self, timeout: float = 120.0) -> None:
        self.q.put(None)
        self.thread.join(timeout)


class Sink:
    def write(self, kind: str, pkt: Any) -> None: ...

    def close(self, now: float) -> None: ...


class FileSink(Sink):
    FORMATS = {"video/mp4": "mp4", "audio/ogg": "ogg", "video/webm": "webm", "video/mp2t": "mpegts", "audio/mpeg": "mp3"}

    def __init__(self, conf: dict, tmp_dir: str, enc: Encoders, storage: Storage, uploader: Uploader,
                 manifest: dict) -> None:
        self.conf, self.storage, self.uploader, self.manifest = conf, storage, uploader, manifest
        self.local = os.path.join(tmp_dir, os.path.basename(conf["filepath"]))
        self.container = av.open(self.local, "w", format=self.FORMATS[conf["output_type"]])
        self.streams = {}
        if enc.video is not None and conf["output_type"] not in ("audio/ogg", "audio/mpeg"):
            self.streams["v"] = self.container.add_stream_from_template(enc.video)
        if enc.audio is not None:
            self.streams["a"] = self.container.add_stream_from_template(enc.audio)
        self.started_at = 0.0
        self.result: dict = {"filename": conf["filepath"]}

    def write(self, kind: str, pkt: Any) -> None:
        s = self.streams.get(kind)
        if s is not None:
            if not self.started_at:
                self.started_at = time.time()
            self.container.mux(copy_packet(pkt, s))

    def close(self, now: float) -> None:
        self.container.close()
        if not self.started_at:  # nothing was recorded: no file to keep or upload
            return
        self.result.update(started_at=ns(self.started_at or now), ended_at=ns(now),
                           duration=ns(now - (self.started_at or now)), size=os.path.getsize(self.local))

        def done(location: str) -> None:
            self.result["location"] = location
            self.manifest.setdefault("files", []).append({"filename": self.conf["filepath"], "location": location})

        self.uploader.put(self.storage, self.local, self.conf["filepath"], done, keep=False)


class PassthroughFileSink(FileSink):
    """Track egress: the publisher's own packets, muxed without transcoding."""

    def __init__(self, conf: dict, tmp_dir: str, template_stream: Any, storage: Storage, uploader: Uploader,
                 manifest: dict, kind: str) -> None:
        self.conf, self.storage, self.uploader, self.manifest = conf, storage, uploader, manifest
        self.local = os.path.join(tmp_dir, os.path.basename(conf["filepath"]))
        self.container = av.open(self.local, "w", format=self.FORMATS[conf["output_type"]])
        if isinstance(template_stream, tuple):  # (codec name, kwargs) for add_mux_stream
            name, kw = template_stream
            self.streams = {kind: self.container.add_mux_stream(name, **kw)}
        else:
            self.streams = {kind: self.container.add_stream_from_template(template_stream)}
        self.started_at = 0.0
        self.result = {"filename": conf["filepath"]}


class HlsSink(Sink):
    def __init__(self, conf: dict, tmp_dir: str, enc: Encoders, storage: Storage, uploader: Uploader,
                 manifest: dict, emit: Emit) -> None:
        self.conf, self.enc, self.storage, self.uploader, self.emit = conf, enc, storage, uploader, emit
        self.tmp_dir = tmp_dir
        self.duration = float(conf["duration"])
        self.segments: list[dict] = []  # {name, duration, size, location}
        self.container: Any = None
        self.streams: dict = {}
        self.seg_start_pts = 0.0  # seconds
        self.seg_started_wall = 0.0
        self.index = 0
        self.last_t = 0.0
        self.size = 0
        self.started_at = 0.0
        self.playlist_key = conf["storage_dir"] + conf["playlist"]
        self.live_key = conf["storage_dir"] + conf["live_playlist"] if conf["live_playlist"] else ""
        self.result: dict = {"playlist_name": self.playlist_key}
        if self.live_key:
            self.result["live_playlist_name"] = self.live_key
        self.manifest_playlist = {"location": "", "segments": []}
        manifest.setdefault("playlists", []).append(self.manifest_playlist)
        self.has_video = enc.video is not None

    def _segment_name(self) -> str:
        if self.conf["suffix"] == 1:  # TIMESTAMP
            t = self.seg_started_wall
            stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(t)) + f"{int(t * 1000) % 1000:03d}"
            return f"{self.conf['prefix']}_{stamp}.ts"
        return f"{self.conf['prefix']}_{self.index:05d}.ts"

    def _open(self, t: float) -> None:
        self.seg_start_pts = t
        self.seg_started_wall = time.time()
        name = self._segment_name()
        local = os.path.join(self.tmp_dir, "hls", name)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        self.container = av.open(local, "w", format="mpegts")
        self.current = {"name": name, "local": local}
        self.streams = {}
        if self.enc.video is not None:
            self.streams["v"] = self.container.add_stream_from_template(self.enc.video)
        if self.enc.audio is not None:
            self.streams["a"] = self.container.add_stream_from_template(self.enc.audio)

    def _close_segment(self, end_t: float, final: bool = False) -> None:
        if self.container is None:
            return
        self.container.close()
        self.container = None
        seg = {"name": self.current["name"], "duration": max(0.001, end_t - self.seg_start_pts),
               "size": os.path.getsize(self.current["local"])}
        self.segments.append(seg)
        self.size += seg["size"]
        self.index += 1
        key = self.conf["storage_dir"] + seg["name"]

        def done(location: str, seg: dict = seg) -> None:
            seg["location"] = location
            self.manifest_playlist["segments"].append({"filename": key, "location": location})

        self.uploader.put(self.storage, self.current["local"], key, done)
        self._write_playlists(final)

    def _playlist(self, segs: list[dict], first_index: int, final: bool, event: bool) -> str:
        target = max([math.ceil(s["duration"]) for s in segs] + [int(self.duration)])
        lines = ["#EXTM3U", "#EXT-X-VERSION:3"]
        if event:
            lines.append("#EXT-X-PLAYLIST-TYPE:" + ("VOD" if final else "EVENT"))
        lines += [f"#EXT-X-TARGETDURATION:{target}", f"#EXT-X-MEDIA-SEQUENCE:{first_index}"]
        for s in segs:
            lines += [f"#EXTINF:{s['duration']:.3f},", os.path.relpath(s["name"], os.path.dirname(self.conf["playlist"]) or ".")]
        if final:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"

    def _write_playlists(self, final: bool) -> None:
        for key, text, attr in (
            (self.playlist_key, self._playlist(self.segments, 0, final, True), "playlist_location"),
            (self.live_key, self._playlist(self.segments[-LIVE_PLAYLIST_WINDOW:],
                                           max(0, len(self.segments) - LIVE_PLAYLIST_WINDOW), final, False),
             "live_playlist_location"),
        ):
            if not key:
                continue
            local = os.path.join(self.tmp_dir, "hls", f"{attr}-{len(self.segments)}.m3u8")
            with open(local, "w") as f:
                f.write(text)

            def done(location: str, attr: str = attr) -> None:
                self.result[attr] = location
                if attr == "playlist_location":
                    self.manifest_playlist["location"] = location

            self.uploader.put(self.storage, local, key, done)

    def write(self, kind: str, pkt: Any) -> None:
        if pkt.pts is None:
            return
        t = float(pkt.pts * pkt.time_base)
        if self.container is None:
            if self.has_video and (kind != "v" or not pkt.is_keyframe):
                return  # a segment starts on a keyframe
            self.started_at = self.started_at or time.time()
            self._open(t)
        elif t - self.seg_start_pts >= self.duration - 1e-3 and (
                (kind == "v" and pkt.is_keyframe) or not self.has_video):
            self._close_segment(t)
            self._open(t)
        self.last_t = max(self.last_t, t)
        s = self.streams.get(kind)
        if s is not None:
            self.container.mux(copy_packet(pkt, s))

    def close(self, now: float) -> None:
        frame_t = 1.0 / self.enc.fps if self.has_video else 0.0
        self._close_segment(self.last_t + frame_t, final=True)
        if not self.segments:
            self._write_playlists(True)
        total = sum(s["duration"] for s in self.segments)
        self.result.update(duration=ns(total), size=self.size, segment_count=len(self.segments),
                           started_at=ns(self.started_at or now), ended_at=ns(now))


class RtmpSink(Sink):
    """One RTMP (FLV) or SRT (MPEG-TS) destination, pushed from its own thread; a failure marks
    only this stream."""

    def __init__(self, url: str, redacted: str, enc: Encoders, emit: Emit,
                 on_failed: Callable[[str, str], None]) -> None:
        self.url, self.redacted, self.enc, self.emit, self.on_failed = url, redacted, enc, emit, on_failed
        self.q: queue.Queue = queue.Queue(STREAM_QUEUE)
        self.started = False
        self.failed = False
        self.waiting_keyframe = True
        self.thread = threading.Thread(target=self._run, name="egress-rtmp", daemon=True)
        self.thread.start()

    def write(self, kind: str, pkt: Any) -> None:
        if self.failed:
            return
        if self.waiting_keyframe:
            if self.enc.video is not None and not (kind == "v" and pkt.is_keyframe):
                return
            self.waiting_keyframe = False
        try:
            self.q.put_nowait((kind, copy_packet(pkt, None)))
        except queue.Full:
            self.waiting_keyframe = True  # drop until the next keyframe: the server is too slow
            self.emit({"ev": "log", "level": "warning", "msg": "stream_queue_full", "url": self.redacted})

    def _run(self) -> None:
        container = None
        try:
            fmt = "mpegts" if self.url.startswith("srt://") else "flv"
            container = av.open(self.url, "w", format=fmt, timeout=(10.0, 10.0))
            streams = {}
            if self.enc.video is not None:
                streams["v"] = container.add_stream_from_template(self.enc.video)
            if self.enc.audio is not None:
                streams["a"] = container.add_stream_from_template(self.enc.audio)
            container.start_encoding()
            self.started = True
            self.emit({"ev": "stream_started", "url": self.redacted, "started_at": ns(time.time())})
            while True:
                item = self.q.get()
                if item is None:
                    break
                kind, pkt = item
                pkt.stream = streams[kind]
                container.mux(pkt)
            container.close()
            container = None
        except Exception as e:  # noqa: BLE001 - any push failure ends this stream only
            self.failed = True
            self.on_failed(self.redacted, str(e))
        finally:
            if container is not None:
                try:
                    container.close()
                except Exception:  # noqa: BLE001
                    pass

    def close(self, now: float, timeout: float = 10.0) -> None:
        if not self.failed:
            try:
                self.q.put(None, timeout=timeout)
            except queue.Full:
                pass
        self.thread.join(timeout)


class ImageSink:
    def __init__(self, conf: dict, tmp_dir: str, storage: Storage, uploader: Uploader, manifest: dict,
                 src_w: int, src_h: int, index: int) -> None:
        self.conf, self.storage, self.uploader, self.manifest = conf, storage, uploader, manifest
        self.dir = os.path.join(tmp_dir, f"images{index}")
        os.makedirs(self.dir, exist_ok=True)
        self.w = int(conf["width"]) or src_w
        self.h = int(conf["height"]) or src_h
        self.w, self.h = self.w // 2 * 2 or 2, self.h // 2 * 2 or 2
        self.next_t = 0.0
        self.count = 0
        self.started_at = 0.0
        self.result: dict = {"filename_prefix": conf.get("info_prefix") or conf["prefix"]}

    def due(self, t: float) -> bool:
        return t >= self.next_t

    def capture(self, t: float, frame: Any) -> None:
        self.next_t = t + int(self.conf["interval"])
        now = time.time()
        self.started_at = self.started_at or now
        img = frame.reformat(width=self.w, height=self.h, format="yuvj420p")
        img.pts = 0
        enc = av.CodecContext.create("mjpeg", "w")  # one picture per encoder: stateless and cheap
        enc.width, enc.height, enc.pix_fmt = self.w, self.h, "yuvj420p"
        enc.time_base = fractions.Fraction(1, 1)
        enc.options = {"qmin": "2", "qmax": "8"}
        data = b"".join(bytes(p) for p in enc.encode(img)) + b"".join(bytes(p) for p in enc.encode(None))
        suffix = self.conf["suffix"]
        if suffix == 2:  # NONE_OVERWRITE
            name = f"{self.conf['prefix']}.jpeg"
        elif suffix == 1:  # TIMESTAMP
            name = f"{self.conf['prefix']}_{time.strftime('%Y%m%d%H%M%S', time.gmtime(now))}{int(now * 1000) % 1000:03d}.jpeg"
        else:
            name = f"{self.conf['prefix']}_{self.count:05d}.jpeg"
        self.count += 1
        local = os.path.join(self.dir, f"{self.count}-{os.path.basename(name)}")
        with open(local, "wb") as f:
            f.write(data)
        key = self.conf["storage_dir"] + name
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"

        def done(location: str) -> None:
            self.manifest.setdefault("images", []).append({"filename": key, "timestamp": stamp, "location": location})

        self.uploader.put(self.storage, local, key, done)

    def close(self, now: float) -> None:
        self.result.update(image_count=self.count, started_at=ns(self.started_at or now), ended_at=ns(now))


class WebsocketSink:
    """Raw PCM (S16LE 48 kHz stereo) to a websocket; an asyncio loop of its own in one thread."""

    def __init__(self, url: str, redacted: str, emit: Emit, on_failed: Callable[[str, str], None]) -> None:
        import asyncio

        self.url, self.redacted, self.emit, self.on_failed = url, redacted, emit, on_failed
        self.loop = asyncio.new_event_loop()
        self.q: Any = None
        self.failed = False
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="egress-ws", daemon=True)
        self.thread.start()
        self.ready.wait(5)

    def _run(self) -> None:
        import asyncio

        asyncio.set_event_loop(self.loop)
        self.q = asyncio.Queue(STREAM_QUEUE)
        self.ready.set()
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        import aiohttp

        try:
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(self.url, heartbeat=None, timeout=aiohttp.ClientWSTimeout(ws_close=5)) as ws:
                    self.emit({"ev": "stream_started", "url": self.redacted, "started_at": ns(time.time())})
                    while True:
                        item = await self.q.get()
                        if item is None:
                            break
                        if isinstance(item, str):
                            await ws.send_str(item)
                        else:
                            await ws.send_bytes(item)
                    await ws.close()
        except Exception as e:  # noqa: BLE001
            self.failed = True
            self.on_failed(self.redacted, str(e) or e.__class__.__name__)

    def _put(self, item: Any) -> None:
        if self.failed or self.q is None:
            return

        def put() -> None:
            if not self.q.full():
                self.q.put_nowait(item)

        self.loop.call_soon_threadsafe(put)

    def write_pcm(self, data: bytes) -> None:
        self._put(data)

    def muted(self, muted: bool) -> None:
        self._put(json.dumps({"muted": muted}))

    def close(self, now: float) -> None:
        if not self.failed and self.q is not None:
            self.loop.call_soon_threadsafe(self.q.put_nowait, None)
        self.thread.join(10)
