"""The RTMP listener: many publishers at once, each `rtmp://host/<app>/<stream_key>`.

A thin asyncio shell around the sans-I/O `RtmpServerConnection` (rtmp.py): bytes in, events
out. A `publish` is admitted by stream key (LiveKit: the last path component of the publishing
name; any application name), then its FLV audio/video bodies (flv.py) feed an `RtmpSession`
that transcodes and publishes into the room. Malformed bytes close that connection only.
Bounds: `MAX_CONNECTIONS` connections, `HANDSHAKE_TIMEOUT` to reach `publish`, `IDLE_TIMEOUT`
without a byte.
"""

from __future__ import annotations

import asyncio
import fractions
import socket
import time
from typing import Any

from .. import ids
from ..logs import get_logger
from . import flv
from . import info as rules
from .info import IngressError
from .rtmp import (
    Connected,
    Media,
    MetaData,
    PublishRequested,
    RtmpError,
    RtmpServerConnection,
    Unpublished,
)
from .session import TranscodingSession
from .transcode import make_decoder, packet

log = get_logger("lkserver.ingress.rtmp")

MAX_CONNECTIONS = 256
HANDSHAKE_TIMEOUT = 15.0
IDLE_TIMEOUT = 30.0
MS = fractions.Fraction(1, 1000)
MIME_IN = {"h264": "video/H264", "aac": "audio/aac", "mp3": "audio/mpeg"}


class TimestampUnwrapper:
    """RTMP's 32-bit millisecond timestamps made monotonic-safe across the 49-day wrap."""

    def __init__(self) -> None:
        self.last = -1
        self.offset = 0

    def __call__(self, ts: int) -> int:
        if self.last >= 0 and ts < self.last and self.last - ts > 0x80000000:
            self.offset += 1 << 32
        self.last = ts
        return ts + self.offset


class RtmpSession(TranscodingSession):
    input_type = rules.RTMP

    def __init__(self, manager: Any, info: Any, resource_id: str) -> None:
        super().__init__(manager, info, resource_id)
        self.origin: int | None = None  # first media timestamp (ms): media time 0
        self.unwrap = TimestampUnwrapper()
        self.avcc = b""
        self.asc = b""
        self.last_media = time.monotonic()

    def on_media(self, media: Media) -> None:
        if self.stopping:
            return
        self.last_media = time.monotonic()
        ts = self.unwrap(media.timestamp)
        if self.origin is None:
            self.origin = ts
        t = ts - self.origin
        if media.kind == "video":
            self._video(flv.parse_video(media.payload), t, len(media.payload))
        else:
            self._audio(flv.parse_audio(media.payload), t, len(media.payload))

    def _video(self, p: flv.VideoPacket | None, t: int, size: int) -> None:
        if p is None or p.end_of_sequence:
            return
        self.video_stats.bytes_in += size
        if p.config:
            if p.data != self.avcc:
                if self.video_tx is None:
                    self.start_video(make_decoder("h264", p.data), MIME_IN["h264"])
                else:
                    self.video_tx.push(("decoder", make_decoder("h264", p.data)), True)
                self.avcc = p.data
            return
        if self.video_tx is None:
            return  # frames before the decoder configuration cannot be decoded
        self.video_tx.push(packet(p.data, t + p.cts, MS, t), p.keyframe)

    def _audio(self, p: flv.AudioPacket, t: int, size: int) -> None:
        self.audio_stats.bytes_in += size
        if p.codec == "aac":
            if p.config:
                if self.audio_tx is None:
                    self.start_audio(make_decoder("aac", p.data), MIME_IN["aac"])
                self.asc = p.data
                return
        elif self.audio_tx is None:
            self.start_audio(make_decoder("mp3"), MIME_IN["mp3"])
        if self.audio_tx is not None:
            self.audio_tx.push(packet(p.data, t, MS))

    def check_health(self) -> None:
        if time.monotonic() - self.last_media > IDLE_TIMEOUT:
            self.fail("no media received")


class RtmpConnection(asyncio.Protocol):
    def __init__(self, server: RtmpServer) -> None:
        self.server = server
        self.core = RtmpServerConnection()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.session: RtmpSession | None = None
        self.follower: asyncio.Future | None = None
        self.closed = False
        self.last_data = time.monotonic()
        self.started = time.monotonic()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else ""
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_data = time.monotonic()
        try:
            events = self.core.receive_data(data)
        except RtmpError as e:
            log.warning("rtmp_protocol_error", peer=self.peer, error=str(e))
            self.abort()
            return
        self._flush()
        for ev in events:
            try:
                self._handle(ev)
            except flv.FlvError as e:
                log.warning("rtmp_bad_media", peer=self.peer, error=str(e))
                if self.session is not None:
                    self.session.fail(str(e))
                self.abort()
                return

    def _handle(self, ev: Any) -> None:
        if isinstance(ev, Media):
            if self.session is not None:
                self.session.on_media(ev)
        elif isinstance(ev, PublishRequested):
            asyncio.ensure_future(self._admit(ev))
        elif isinstance(ev, Unpublished):
            log.info("rtmp_unpublished", peer=self.peer, reason=ev.reason)
            self._end_session()
        elif isinstance(ev, Connected):
            log.debug("rtmp_connected", peer=self.peer, app=ev.app)
        elif isinstance(ev, MetaData):
            self._metadata(ev.values)

    def _metadata(self, values: dict) -> None:
        if self.session is None:
            return
        stats = self.session.video_stats
        try:
            if not stats.framerate and float(values.get("framerate", 0) or 0) > 0:
                stats.framerate = float(values["framerate"])
        except (TypeError, ValueError):
            pass

    async def _admit(self, req: PublishRequested) -> None:
        key = req.stream_key
        try:
            info = await self.server.manager.admit(key, rules.RTMP)
            session = RtmpSession(self.server.manager, info, ids.new_id(rules.RESOURCE_PREFIX[rules.RTMP]))
            if self.closed:
                return
            await self.server.manager.start_session(session)
        except IngressError as e:
            log.info("rtmp_publish_refused", peer=self.peer, error=e.message)
            self.core.reject_publish(e.message)
            self._flush()
            return
        except Exception as e:
            log.exception("rtmp_publish_failed", peer=self.peer)
            self.core.reject_publish(f"internal error: {e}")
            self._flush()
            return
        if self.closed:
            await session.stop(rules.INACTIVE)
            return
        self.session = session
        self.core.accept_publish()
        self._flush()
        # not one of the session's tasks: those are cancelled when it stops, this one acts then
        self.follower = asyncio.ensure_future(self._follow(session))

    async def _follow(self, session: RtmpSession) -> None:
        """A session ended by the server (update, delete, error) drops the encoder's connection."""
        await session.ended.wait()
        if self.session is session:
            self.session = None
            self.abort()

    def _end_session(self) -> None:
        session, self.session = self.session, None
        if session is not None and not session.stopping:
            session.spawn(session.stop(rules.INACTIVE))

    def _flush(self) -> None:
        data = self.core.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)
        if self.core.close_after_send and self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
        self._end_session()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self._end_session()

    def check_timeouts(self, now: float) -> None:
        if self.session is None and now - self.started > HANDSHAKE_TIMEOUT:
            log.info("rtmp_handshake_timeout", peer=self.peer)
            self.abort()
        elif now - self.last_data > IDLE_TIMEOUT:
            log.info("rtmp_idle_timeout", peer=self.peer)
            self.abort()


class RtmpServer:
    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self.connections: set[RtmpConnection] = set()
        self.servers: list[asyncio.AbstractServer] = []
        self.port = 0
        self._timer: asyncio.Task | None = None

    async def start(self, hosts: list[str], port: int) -> int:
        loop = asyncio.get_running_loop()
        bound = port
        for host in hosts:
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, bound))
            except OSError as e:
                sock.close()
                await self.stop()
                raise OSError(e.errno, f"cannot listen for RTMP on {host}:{bound}: {e.strerror}") from None
            bound = sock.getsockname()[1]
            sock.listen(128)
            self.servers.append(await loop.create_server(self._protocol, sock=sock))
        self.port = bound
        self._timer = asyncio.ensure_future(self._check_timeouts())
        return bound

    def _protocol(self) -> asyncio.Protocol:
        conn = RtmpConnection(self)
        if len(self.connections) >= MAX_CONNECTIONS:
            log.warning("rtmp_too_many_connections", limit=MAX_CONNECTIONS)
            conn.closed = True  # connection_made will close it at once

            def refuse(transport: Any) -> None:
                transport.abort()

            conn.connection_made = refuse  # type: ignore[method-assign]
        return conn

    async def _check_timeouts(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for conn in list(self.connections):
                conn.check_timeouts(now)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for srv in self.servers:
            srv.close()
        for conn in list(self.connections):
            conn.abort()
        for srv in self.servers:
            try:
                await asyncio.wait_for(srv.wait_closed(), 2.0)
            except TimeoutError:
                pass
        self.servers.clear()
