"""EgressManager: egress jobs on the event loop - admission, the status machine, records, events.

Each job is an `EgressJob`: a hidden EGRESS participant in the room (identity = egress id, as
LiveKit's egress token) subscribes to what the request names and hands every RTP packet to the
job's worker process through a bounded socket (a full socket drops the packet, never blocks the
loop); the worker reports back (active, keyframe requests, stream changes, the final result).
The status machine is LiveKit's (protocol livekit_egress.go, egress pkg/pipeline/controller.go):
STARTING -> ACTIVE -> ENDING -> COMPLETE, FAILED (`details` "End reason: Failure" unless a
reason was set), ABORTED (412, "Stop called before pipeline could start"), LIMIT_REACHED (413,
"Session limit reached"); `egress_started` when the record is first stored, `egress_updated` on
ACTIVE and ENDING, `egress_ended` at the end. Records live in the store (namespace `egress`,
EgressInfo protobuf as LiveKit's Redis hash) and are swept 24 h after they end.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from livekit.protocol import egress as pe
from livekit.protocol import models as pm

from .. import ids
from ..config import EgressSettings
from ..events import Event, EventBus, EventName
from ..logs import get_logger
from ..rooms import RoomManager
from . import plan as plans
from .errors import (
    FAILED_PRECONDITION,
    INTERNAL,
    INVALID_ARGUMENT,
    NOT_FOUND,
    RESOURCE_EXHAUSTED,
    UNAVAILABLE,
    EgressError,
)
from .plan import EgressPlan, build_plan, validate_stream_url

if TYPE_CHECKING:
    from ..rtc.service import RtcService
    from ..store import Store

log = get_logger("lkserver.egress")

NS_EGRESS = "egress"  # egress id -> EgressInfo, as LiveKit's `egress` hash
RETENTION = 24 * 3600.0  # ended records are purged this long after ended_at
SWEEP_INTERVAL = 30 * 60.0
MEDIA_SNDBUF = 4 << 20  # the bounded queue between the loop and a worker (kernel socket buffer)
READY_TIMEOUT = 30.0
RESULT_TIMEOUT = 120.0
TRACK_WAIT = 10.0  # seconds a track composite waits for its tracks to be published  # a worker that does not finish this long after stop is killed

S = pe.EgressStatus
DEPACKETIZED = ("audio/opus", "audio/red", "video/vp8", "video/h264")  # what egress/depacketize.py reads
ACTIVE_STATES = (S.EGRESS_STARTING, S.EGRESS_ACTIVE, S.EGRESS_ENDING)
SOURCE_NAMES = {pm.TrackSource.CAMERA: "camera", pm.TrackSource.MICROPHONE: "microphone",
                pm.TrackSource.SCREEN_SHARE: "screen_share", pm.TrackSource.SCREEN_SHARE_AUDIO: "screen_share_audio"}


def egress_not_found() -> EgressError:
    return EgressError(NOT_FOUND, "egress does not exist")


def now_ns() -> int:
    return time.time_ns()


DEFAULT_CPU_COST = {
    "room_composite_cpu_cost": 0.5, "audio_room_composite_cpu_cost": 0.1, "web_cpu_cost": 1.0,
    "audio_web_cpu_cost": 0.5, "participant_cpu_cost": 0.4, "track_composite_cpu_cost": 0.4,
    "track_cpu_cost": 0.05,
}
COST_KEYS = {"room_composite": "room_composite_cpu_cost", "room_composite_audio": "audio_room_composite_cpu_cost",
             "web": "web_cpu_cost", "web_audio": "audio_web_cpu_cost", "participant": "participant_cpu_cost",
             "track_composite": "track_composite_cpu_cost", "track": "track_cpu_cost"}


def auto_track_filepath(path: str) -> str:
    """A custom auto track egress path gains -{track_id} (livekit pkg/rtc/egress.go getFilePath)."""
    if not path or path.endswith("/") or "{track_id}" in path:
        return path
    i = path.find(".")
    return f"{path}-{{track_id}}" if i == -1 else f"{path[:i]}-{{track_id}}{path[i:]}"


class Worker:
    """A started worker process (maybe a warm spare): pipes, media socket, status lines."""

    def __init__(self, proc: asyncio.subprocess.Process, media: socket.socket) -> None:
        self.proc = proc
        self.media = media

    @classmethod
    async def spawn(cls) -> Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MEDIA_SNDBUF)
        except OSError:
            pass
        ours.setblocking(False)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lkserver.egress.worker", str(theirs.fileno()),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, pass_fds=[theirs.fileno()],
            limit=1 << 20)
        theirs.close()
        w = cls(proc, ours)
        line = await asyncio.wait_for(w.proc.stdout.readline(), READY_TIMEOUT)  # type: ignore[union-attr]
        if not line:
            raise RuntimeError("egress worker did not start")
        return w

    def send(self, msg: dict) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.write((json.dumps(msg, separators=(",", ":")) + "\n").encode())

    def kill(self) -> None:
        if self.proc.returncode is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        self.media.close()


class EgressJob:
    def __init__(self, manager: EgressManager, plan: EgressPlan, info: pe.EgressInfo, cost: float,
                 webhooks: list) -> None:
        self.manager = manager
        self.plan = plan
        self.info = info
        self.cost = cost
        self.webhooks = webhooks
        self.worker: Worker | None = None
        self.local: Any = None  # LocalParticipant
        self.indexes: dict[str, int] = {}  # track sid -> input index
        self.dropped = 0
        self.stopping = False
        self.end_reason = ""
        self.limit_reached = False
        self.done = asyncio.Event()
        self.tasks: list[asyncio.Task] = []
        self.result: dict | None = None
        self.fail_error = ""  # set when the server side gives up on the job
        self.aborted = False  # stopped while STARTING

    @property
    def egress_id(self) -> str:
        return self.info.egress_id

    # -- media from the room ---------------------------------------------------------------------

    def wants(self, track: Any) -> bool:
        """Whether this job records a published track (a rtc PublishedTrack)."""
        p, info = self.plan, track.info
        if track.owner.p.info.kind == pm.ParticipantInfo.Kind.EGRESS:
            return False
        audio = info.type == pm.TrackType.AUDIO
        if audio and not p.audio_enabled or not audio and not p.video_enabled:
            return False
        if p.source == "template":
            return True
        if p.source == "track":
            return info.sid == p.track_id
        if p.source == "tracks":
            if info.sid in (p.audio_track_id, p.video_track_id):
                return True
            if audio and p.capture_all_audio:
                return True
            return audio and any(self._route_matches(r, track) for r in p.audio_routes)
        if p.source == "participant":
            if track.owner.identity != p.identity:
                return audio and (p.capture_all_audio or any(self._route_matches(r, track) for r in p.audio_routes))
            if audio:
                return True
            screen = info.source == pm.TrackSource.SCREEN_SHARE
            return screen == p.screen_share or not self._has_preferred_video(track.owner)
        return False

    def _has_preferred_video(self, owner: Any) -> bool:
        want = pm.TrackSource.SCREEN_SHARE if self.plan.screen_share else pm.TrackSource.CAMERA
        return any(t.info.source == want and t.published for t in owner.tracks.values())

    def _route_matches(self, route: dict, track: Any) -> bool:
        m, v = route.get("match"), route.get("value")
        if m == "track_id":
            return track.info.sid == v
        if m == "participant_identity":
            return track.owner.identity == v
        if m == "participant_kind":
            return int(track.owner.p.info.kind) == int(v)
        return False

    def _channel(self, track: Any) -> int:
        for r in self.plan.audio_routes:
            if self._route_matches(r, track):
                return int(r.get("channel", 0))
        mixing = self.plan.audio_mixing
        if mixing == pe.AudioMixing.DUAL_CHANNEL_AGENT:
            return 1 if track.owner.p.info.kind == pm.ParticipantInfo.Kind.AGENT else 2
        if mixing == pe.AudioMixing.DUAL_CHANNEL_ALTERNATE:
            audio_inputs = sum(1 for sid in self.indexes if sid != track.info.sid)
            return 1 + audio_inputs % 2
        return 0

    def attach(self, track: Any) -> None:
        """Subscribe to a track and announce it to the worker."""
        if self.worker is None or self.local is None or track.sid in self.indexes or self.stopping:
            return
        if not self.wants(track) or track.codec is None:
            return
        if len(self.indexes) >= 255:
            return
        index = len(self.indexes)
        mime = track.codec.mime.lower()
        if mime not in DEPACKETIZED:
            log.warning("egress_codec_unsupported", egress_id=self.egress_id, track=track.sid, mime=mime)
            return
        self.indexes[track.sid] = index
        prefix = bytes([index])
        media = self.worker.media

        def on_rtp(packet: bytes) -> None:
            try:
                media.send(prefix + packet)
            except (BlockingIOError, InterruptedError):
                self.dropped += 1  # the worker is behind: drop rather than block the loop
            except OSError:
                pass

        kind = "audio" if track.info.type == pm.TrackType.AUDIO else "video"
        try:
            sub = self.local.subscribe(track.sid, on_rtp)
        except KeyError:
            del self.indexes[track.sid]
            return
        if mime == "audio/red" and getattr(sub, "red_primary", True):
            mime = "audio/opus"  # the SFU hands local subscribers RED's primary block: plain Opus
        self.worker.send({"op": "track", "index": index, "kind": kind, "mime": mime,
                          "identity": track.owner.identity, "source": SOURCE_NAMES.get(track.info.source, ""),
                          "channel": self._channel(track) if kind == "audio" else 0, "muted": track.info.muted})
        if kind == "video":
            self.local.request_keyframe(track.sid)

    def detach(self, track: Any) -> None:
        index = self.indexes.get(track.sid)
        if index is None or self.worker is None:
            return
        self.worker.send({"op": "track_gone", "index": index})
        if self.plan.source in ("track", "tracks") and not self.stopping:
            remaining = [sid for sid in (self.plan.track_id, self.plan.audio_track_id, self.plan.video_track_id)
                         if sid and sid != track.sid and sid in self.indexes]
            if not remaining:
                self.manager.spawn(self.manager.end(self, "Source closed"))

    def track_muted(self, track_sid: str, muted: bool) -> None:
        index = self.indexes.get(track_sid)
        if index is not None and self.worker is not None:
            self.worker.send({"op": "muted", "index": index, "muted": muted})

    # -- worker status -------------------------------------------------------------------------

    async def read_status(self) -> None:
        assert self.worker is not None
        stdout = self.worker.proc.stdout
        assert stdout is not None
        while True:
            line = await stdout.readline()
            if not line:
                break
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            ev = msg.get("ev")
            if ev == "active":
                await self.manager.set_active(self, int(msg["started_at"]))
            elif ev == "keyframe":
                sid = next((s for s, i in self.indexes.items() if i == msg["index"]), None)
                if sid and self.local is not None:
                    self.local.request_keyframe(sid)
            elif ev == "stream_started":
                self._stream(msg["url"], started_at=int(msg["started_at"]))
                await self.manager.save(self)
            elif ev in ("stream_failed", "stream_ended"):
                failed = ev == "stream_failed"
                self._stream(msg["url"], ended_at=int(msg["ended_at"]), failed=failed, error=msg.get("error", ""))
                await self.manager.save(self)
            elif ev == "ending":  # the source ended it (END_RECORDING, every stream failed)
                await self.manager.ending(self, str(msg.get("reason", "")))
            elif ev == "result":
                self.result = msg
            elif ev == "log":
                log.warning("egress_worker_" + str(msg.get("msg", "event")), egress_id=self.egress_id,
                            **{k: v for k, v in msg.items() if k not in ("ev", "msg", "level")})
        rc = await self.worker.proc.wait()
        await self.manager.finish(self, rc)

    def _stream(self, url: str, *, started_at: int = 0, ended_at: int = 0, failed: bool = False,
                error: str = "") -> None:
        for si in self.info.stream_results:
            if si.url == url and (si.status == pe.StreamInfo.Status.ACTIVE):
                if started_at:
                    si.started_at = started_at
                if ended_at:
                    si.ended_at = ended_at
                    if si.started_at:
                        si.duration = ended_at - si.started_at
                    else:
                        si.started_at = ended_at
                    si.status = pe.StreamInfo.Status.FAILED if failed else pe.StreamInfo.Status.FINISHED
                    si.error = error
                return


class EgressManager:
    def __init__(self, settings: EgressSettings, data_dir: str, rooms: RoomManager, store: Store,
                 events: EventBus, rtc: RtcService) -> None:
        self.settings = settings
        self.rooms = rooms
        self.store = store
        self.events = events
        self.rtc = rtc
        self.output_dir = os.path.abspath(settings.output_dir or os.path.join(data_dir, "egress"))
        self.tmp_dir = os.path.abspath(settings.tmp_dir or os.path.join(data_dir, "egress-tmp"))
        self.jobs: dict[str, EgressJob] = {}
        self.records: dict[str, pe.EgressInfo] = {}
        self.cpu_cost = {**DEFAULT_CPU_COST, **{k: float(v) for k, v in settings.cpu_cost.items()}}
        self.capacity = float(settings.cpu_capacity) or (os.cpu_count() or 1) * float(settings.max_cpu_utilization)
        self._spares: list[asyncio.Task] = []
        self._tasks: set[asyncio.Task] = set()
        self._sweeper: asyncio.Task | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.auto_egress_seen: set[tuple[str, str]] = set()
        self.closing = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        for _, data in await self.store.kv.items(NS_EGRESS):
            info = pe.EgressInfo.FromString(data)
            if info.status in ACTIVE_STATES:
                # its worker belonged to the previous process, which is gone
                info.status = S.EGRESS_FAILED
                info.error = "egress ended by a server restart"
                info.details = info.details or "End reason: Process killed"
                info.ended_at = info.updated_at = now_ns()
                await self.store.kv.put(NS_EGRESS, info.egress_id, info.SerializeToString())
            self.records[info.egress_id] = info
        self._unsubscribe = self.events.subscribe(self._on_event)
        self.rooms.on_participant_update(self._on_participant_update)
        self._sweeper = asyncio.create_task(self._sweep_forever())
        if self.settings.warm_at_start:
            self._keep_spares()

    async def stop(self) -> None:
        """Server shutdown: every running egress ends (its files are finished and uploaded)."""
        self.closing = True
        if self._unsubscribe:
            self._unsubscribe()
        if self._sweeper:
            self._sweeper.cancel()
        await asyncio.gather(*(self.end(j, "Source closed") for j in list(self.jobs.values())),
                             return_exceptions=True)
        waits = [j.done.wait() for j in self.jobs.values()]
        if waits:
            await asyncio.wait([asyncio.ensure_future(w) for w in waits], timeout=30)
        for j in list(self.jobs.values()):
            if j.worker:
                j.worker.kill()
        for t in self._spares:
            t.cancel()
            if t.done() and not t.cancelled() and t.exception() is None:
                t.result().kill()

    def spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            await self.sweep()

    async def sweep(self, now: float | None = None) -> None:
        cutoff = int(((now or time.time()) - RETENTION) * 1e9)
        for eid, info in list(self.records.items()):
            if info.status not in ACTIVE_STATES and info.ended_at and info.ended_at < cutoff:
                del self.records[eid]
                await self.store.kv.delete(NS_EGRESS, eid)

    # -- API -------------------------------------------------------------------------------------

    def cost_of(self, plan: EgressPlan) -> float:
        return self.cpu_cost[COST_KEYS[plan.cpu_cost_kind()]]

    async def start_egress(self, kind: str, req: Any, *, webhooks: list | None = None) -> pe.EgressInfo:
        """Validate, admit and launch; returns the STARTING EgressInfo (stored, egress_started sent)."""
        if self.closing:
            raise EgressError(UNAVAILABLE, "server is shutting down")
        room_name = getattr(req, "room_name", "")
        room_id = ""
        if kind != plans.WEB and not (kind == plans.EGRESS and req.WhichOneof("source") == "web"):
            room = self.rooms.get_room(room_name)
            if room is None:
                raise EgressError(NOT_FOUND, "requested room does not exist")
            room_id = room.sid
        egress_id = ids.new_id(ids.EGRESS)
        plan, info = build_plan(kind, req, egress_id, room_id=room_id)
        if plan.source == "track":
            self._bind_track(plan, info)
        if plan.source == "web" and not self._chromium():
            raise EgressError(UNAVAILABLE, "web egress needs chromium: install it (Debian package `chromium`)")
        cost = self.cost_of(plan)
        used = sum(j.cost for j in self.jobs.values())
        if used + cost > self.capacity + 1e-9:
            raise EgressError(RESOURCE_EXHAUSTED,
                                   f"not enough CPU: this egress needs {cost:.2f} cores, "
                                   f"{used:.2f} of {self.capacity:.2f} are reserved")
        job = EgressJob(self, plan, info, cost, list(webhooks or []))
        self.jobs[egress_id] = job  # reserved before the first await
        try:
            job.worker = await self._take_worker()
        except Exception as e:
            del self.jobs[egress_id]
            raise EgressError(INTERNAL, f"failed to launch egress worker: {e}") from None
        await self.save(job)
        self._publish(EventName.EGRESS_STARTED, job)
        log.info("egress_started", egress_id=egress_id, room=plan.room_name, kind=kind, source=plan.source)
        os.makedirs(self.tmp_dir, exist_ok=True)
        job.worker.send({"op": "start", "plan": plan.to_dict(), "tmp_dir": os.path.join(self.tmp_dir, egress_id),
                         "output_dir": self.output_dir, "endpoints": dict(self.settings.storage_endpoints),
                         "x264_preset": self.settings.x264_preset, "chromium": self._chromium()})
        job.tasks.append(asyncio.ensure_future(job.read_status()))
        if plan.room_name and plan.source != "web":
            await self._join(job)
        limit = self._session_limit(plan)
        if limit:
            job.tasks.append(asyncio.ensure_future(self._limit_timer(job, limit)))
        out = pe.EgressInfo()
        out.CopyFrom(info)
        return out

    def _chromium(self) -> str:
        return self.settings.chromium_path or shutil.which("chromium") or shutil.which("chromium-browser") or ""

    def _bind_track(self, plan: EgressPlan, info: pe.EgressInfo) -> None:
        room = self.rooms.get_room(plan.room_name)
        track = self.rtc._find_track(room, plan.track_id) if room is not None else None
        if track is None or track.codec is None:
            raise EgressError(NOT_FOUND, f"track {plan.track_id} not found")
        kind = "audio" if track.info.type == pm.TrackType.AUDIO else "video"
        if track.codec.mime.lower() not in DEPACKETIZED:
            raise plans.not_supported(f"track egress of {track.codec.mime}")
        plan.audio_enabled, plan.video_enabled = kind == "audio", kind == "video"
        if plan.websocket is not None and kind != "audio":
            raise plans.invalid_input("track_id")  # websocket output is audio only
        plans.bind_track(plan, info, mime=track.codec.mime, track_id=track.sid, kind=kind,
                         source=SOURCE_NAMES.get(track.info.source, "unknown"), identity=track.owner.identity)

    def _session_limit(self, plan: EgressPlan) -> float:
        lim = self.settings.session_limits
        values = []
        if plan.file is not None:
            values.append(float(lim.get("file_output_max_duration", 0) or 0))
        if plan.stream is not None or plan.websocket is not None:
            values.append(float(lim.get("stream_output_max_duration", 0) or 0))
        if plan.segments is not None:
            values.append(float(lim.get("segment_output_max_duration", 0) or 0))
        if plan.images:
            values.append(float(lim.get("image_output_max_duration", 0) or 0))
        values = [v for v in values if v > 0]
        return min(values) if values else 0.0

    async def _limit_timer(self, job: EgressJob, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if job.info.status in (S.EGRESS_STARTING, S.EGRESS_ACTIVE) and not job.stopping:
            job.limit_reached = True
            await self.end(job, "Session limit reached")

    async def _take_worker(self) -> Worker:
        worker: Worker | None = None
        while self._spares and worker is None:
            t = self._spares.pop(0)
            try:
                w = await t
                if w.proc.returncode is None:
                    worker = w
            except Exception:  # noqa: BLE001 - a spare that failed to start; try a fresh one
                pass
        if worker is None:
            worker = await Worker.spawn()
        self._keep_spares()
        return worker

    def _keep_spares(self) -> None:
        while len(self._spares) < self.settings.warm_workers and not self.closing:
            self._spares.append(asyncio.ensure_future(Worker.spawn()))

    async def _join(self, job: EgressJob) -> None:
        from ..rtc.local import LocalParticipant

        try:
            local = await LocalParticipant.join(self.rtc, job.plan.room_name, job.egress_id,
                                                kind=pm.ParticipantInfo.Kind.EGRESS, hidden=True,
                                                can_publish=False, create_room=False)
        except Exception as e:  # noqa: BLE001
            log.warning("egress_join_failed", egress_id=job.egress_id, error=str(e))
            await self.fail(job, "recording ended early: connection to room failed")
            return
        job.local = local
        local.on_track_published = job.attach
        local.on_track_unpublished = job.detach
        for track in local.remote_tracks():
            job.attach(track)
        if job.plan.source == "tracks":
            job.tasks.append(asyncio.ensure_future(self._require_tracks(job)))

    async def _require_tracks(self, job: EgressJob) -> None:
        """A track composite whose tracks do not show up (published, with media) fails."""
        deadline = time.monotonic() + TRACK_WAIT
        while time.monotonic() < deadline:
            missing = [t for t in (job.plan.audio_track_id, job.plan.video_track_id) if t and t not in job.indexes]
            if not missing or job.stopping:
                return
            await asyncio.sleep(0.1)
        await self.fail(job, f"track {missing[0]} not found")

    async def set_active(self, job: EgressJob, started_at: int) -> None:
        info = job.info
        if info.status != S.EGRESS_STARTING or job.stopping:
            return
        info.status = S.EGRESS_ACTIVE
        info.updated_at = now_ns()
        for r in list(info.file_results) + ([info.file] if info.HasField("file") else []):
            r.started_at = started_at
        for r in list(info.segment_results) + ([info.segments] if info.HasField("segments") else []):
            r.started_at = started_at
        for r in info.image_results:
            r.started_at = started_at
        await self.save(job)
        self._publish(EventName.EGRESS_UPDATED, job)
        log.info("egress_active", egress_id=job.egress_id)
        await self._update_recording(job.plan.room_name)

    async def _update_recording(self, room_name: str) -> None:
        """The room is recording while any of its egresses is active (Room.active_recording)."""
        if room_name:
            active = any(j.plan.room_name == room_name and j.info.status == S.EGRESS_ACTIVE for j in self.jobs.values())
            await self.rooms.set_active_recording(room_name, active)

    async def end(self, job: EgressJob, reason: str) -> None:
        """SendEOS: ACTIVE -> ENDING with the reason; the worker finishes and reports."""
        if job.stopping:
            return
        job.stopping = True
        job.end_reason = reason
        info = job.info
        info.details = f"End reason: {reason}"
        if job.limit_reached:
            info.status = S.EGRESS_LIMIT_REACHED
            info.error = "Session limit reached"
            info.error_code = 413
            info.updated_at = info.ended_at = now_ns()
            await self.save(job)
        elif info.status == S.EGRESS_ACTIVE:
            info.status = S.EGRESS_ENDING
            info.updated_at = now_ns()
            await self.save(job)
            self._publish(EventName.EGRESS_UPDATED, job)
        elif info.status == S.EGRESS_STARTING:  # stopped before it started (LiveKit SendEOS)
            job.aborted = True
            info.status = S.EGRESS_ABORTED
            info.error, info.error_code = "Stop called before pipeline could start", 412
            info.updated_at = info.ended_at = now_ns()
            await self.save(job)
        if job.worker is not None:
            job.worker.send({"op": "stop", "reason": reason})
            job.tasks.append(asyncio.ensure_future(self._kill_if_stuck(job)))
        await self._leave(job)

    async def ending(self, job: EgressJob, reason: str) -> None:
        """The worker is finishing on its own: ACTIVE -> ENDING with its reason."""
        if job.stopping:
            return
        job.stopping = True
        job.end_reason = reason
        job.info.details = f"End reason: {reason}"
        if job.info.status == S.EGRESS_ACTIVE:
            job.info.status = S.EGRESS_ENDING
            job.info.updated_at = now_ns()
            await self.save(job)
            self._publish(EventName.EGRESS_UPDATED, job)
        job.tasks.append(asyncio.ensure_future(self._kill_if_stuck(job)))
        await self._leave(job)

    async def _kill_if_stuck(self, job: EgressJob) -> None:
        try:
            await asyncio.wait_for(job.done.wait(), RESULT_TIMEOUT)
        except TimeoutError:
            if job.worker is not None:
                job.worker.kill()

    async def fail(self, job: EgressJob, error: str) -> None:
        job.fail_error = error
        job.stopping = True
        if job.worker is not None:
            job.worker.send({"op": "stop", "reason": "Failure"})
        await self._leave(job)

    async def _leave(self, job: EgressJob) -> None:
        if job.local is not None:
            local, job.local = job.local, None
            local.on_track_published = lambda t: None
            local.on_track_unpublished = lambda t: None
            await local.leave()

    async def finish(self, job: EgressJob, returncode: int) -> None:
        """The worker exited: the final status from its result (or its death)."""
        info = job.info
        result = job.result
        now = now_ns()
        if result is None:
            how = f"signal {signal.Signals(-returncode).name}" if returncode < 0 else f"exit code {returncode}"
            result = {"error": f"egress worker process died ({how})"}
            if not info.details:
                info.details = "End reason: Process killed" if returncode < 0 else ""
        self._apply_results(info, result)
        error = job.fail_error or result.get("error", "")
        aborted = result.get("aborted", "")
        if job.aborted and not error:
            info.status = S.EGRESS_ABORTED
            info.error, info.error_code = "Stop called before pipeline could start", 412
        elif job.limit_reached and not error:
            info.status = S.EGRESS_LIMIT_REACHED
            info.error, info.error_code = "Session limit reached", 413
        elif aborted and not error:
            info.status = S.EGRESS_ABORTED
            info.error, info.error_code = aborted, 412
        elif error:
            info.status = S.EGRESS_FAILED
            info.error = error
            info.error_code = 500
            if not info.details:
                info.details = "End reason: Failure"
            for si in info.stream_results:
                if si.status == pe.StreamInfo.Status.ACTIVE:
                    si.status = pe.StreamInfo.Status.FAILED
        else:
            info.status = S.EGRESS_COMPLETE
        if result.get("manifest_location"):
            info.manifest_location = result["manifest_location"]
        info.ended_at = info.updated_at = now
        self._sync_result_fields(info)
        await self.save(job)
        self.jobs.pop(job.egress_id, None)
        if job.worker is not None:
            job.worker.media.close()
        await self._leave(job)
        job.done.set()
        self._publish(EventName.EGRESS_ENDED, job)
        log.info("egress_ended", egress_id=job.egress_id, status=S.Name(info.status), error=info.error or "-",
                 dropped=job.dropped)
        await self._update_recording(job.plan.room_name)
        for t in job.tasks:
            if t is not asyncio.current_task():
                t.cancel()
        if not info.error:  # a failed egress keeps its work files (say, what could not be uploaded)
            shutil.rmtree(os.path.join(self.tmp_dir, job.egress_id), ignore_errors=True)

    def _apply_results(self, info: pe.EgressInfo, result: dict) -> None:
        for target, items in ((info.file_results, result.get("file_results", [])),
                              (info.segment_results, result.get("segment_results", [])),
                              (info.image_results, result.get("image_results", []))):
            for i, r in enumerate(items):
                if i < len(target):
                    for k, v in r.items():
                        if k in target[i].DESCRIPTOR.fields_by_name and v not in (None, ""):
                            setattr(target[i], k, v)
        for r in result.get("stream_results", []):
            for si in info.stream_results:
                if si.url == r["url"] and si.status == pe.StreamInfo.Status.ACTIVE:
                    si.ended_at = int(r["ended_at"])
                    si.duration = si.ended_at - si.started_at if si.started_at else 0
                    si.started_at = si.started_at or si.ended_at
                    si.status = pe.StreamInfo.Status.FAILED if r.get("failed") else pe.StreamInfo.Status.FINISHED
                    si.error = r.get("error", "")

    @staticmethod
    def _sync_result_fields(info: pe.EgressInfo) -> None:
        """The deprecated single-result fields mirror the lists."""
        if info.HasField("file") and info.file_results:
            info.file.CopyFrom(info.file_results[0])
        if info.HasField("segments") and info.segment_results:
            info.segments.CopyFrom(info.segment_results[0])
        if info.HasField("stream"):
            del info.stream.info[:]
            info.stream.info.extend(info.stream_results)

    async def save(self, job: EgressJob) -> None:
        info = pe.EgressInfo()
        info.CopyFrom(job.info)
        self.records[info.egress_id] = info
        await self.store.kv.put(NS_EGRESS, info.egress_id, info.SerializeToString())

    def _publish(self, name: EventName, job: EgressJob) -> None:
        info = pe.EgressInfo()
        info.CopyFrom(job.info)
        self.events.publish(Event(name, egress_info=info, room=pm.Room(sid=info.room_id, name=info.room_name),
                                  extra_webhooks=job.webhooks))

    def get(self, egress_id: str) -> pe.EgressInfo:
        info = self.records.get(egress_id)
        if info is None:
            raise egress_not_found()
        return info

    def list(self, room_name: str = "", egress_id: str = "", active: bool = False) -> list[pe.EgressInfo]:
        if egress_id:
            infos = [self.get(egress_id)]
        else:
            infos = [i for i in self.records.values() if not room_name or i.room_name == room_name]
            infos.sort(key=lambda i: i.started_at)
        if active:
            infos = [i for i in infos if i.status in ACTIVE_STATES]
        return infos

    def _running(self, egress_id: str, verb: str) -> EgressJob:
        info = self.get(egress_id)
        job = self.jobs.get(egress_id)
        if job is None or info.status not in (S.EGRESS_STARTING, S.EGRESS_ACTIVE) or job.stopping:
            raise EgressError(FAILED_PRECONDITION,
                                   f"egress with status {S.Name(info.status)} cannot be {verb}")
        return job

    async def stop_egress(self, egress_id: str) -> pe.EgressInfo:
        job = self._running(egress_id, "stopped")
        await self.end(job, "StopEgress API")
        out = pe.EgressInfo()
        out.CopyFrom(job.info)
        return out

    async def update_layout(self, egress_id: str, layout: str) -> pe.EgressInfo:
        info = self.get(egress_id)
        job = self.jobs.get(egress_id)
        if job is None or job.local is None:
            raise EgressError(NOT_FOUND, "participant does not exist")
        await self.rooms.update_participant(job.plan.room_name, egress_id, metadata=json.dumps({"layout": layout}))
        job.plan.layout = layout
        if job.worker is not None:
            job.worker.send({"op": "layout", "layout": layout})
        return info

    async def update_stream(self, egress_id: str, add: list[str], remove: list[str]) -> pe.EgressInfo:
        job = self._running(egress_id, "updated")
        stream = job.plan.stream
        if stream is None:
            raise EgressError(INVALID_ARGUMENT, "UpdateStream called on non-streaming egress")
        errors: list[EgressError] = []
        for url in add:
            try:
                parsed, redacted = validate_stream_url(url, stream.output_type)
            except EgressError as e:
                errors.append(e)
                continue
            if any(r == redacted for _, r in stream.urls):
                continue
            stream.urls.append([parsed, redacted])
            job.info.stream_results.add(url=redacted, status=pe.StreamInfo.Status.ACTIVE)
            assert job.worker is not None
            job.worker.send({"op": "add_stream", "url": parsed, "redacted": redacted})
        for url in remove:
            redacted = plans.redact_stream_url(url)[0] if url.startswith(("rtmp", "mux", "twitch")) else url
            found = [u for u in stream.urls if u[0] == url or u[1] == redacted]
            if not found:
                errors.append(EgressError(NOT_FOUND, f"stream {url} not found"))
                continue
            stream.urls.remove(found[0])
            assert job.worker is not None
            job.worker.send({"op": "remove_stream", "redacted": found[0][1]})
        self._sync_result_fields(job.info)
        job.info.updated_at = now_ns()
        await self.save(job)
        if not stream.urls and not (job.plan.file or job.plan.segments or job.plan.images):
            await self.end(job, "All streams stopped")
        if errors:
            first = errors[0]
            raise EgressError(first.code, "\n".join(e.msg for e in errors))
        out = pe.EgressInfo()
        out.CopyFrom(job.info)
        return out

    # -- the room's side ---------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if event.name == EventName.ROOM_FINISHED and event.room is not None:
            self.auto_egress_seen = {k for k in self.auto_egress_seen if k[0] != event.room.name}
            for job in list(self.jobs.values()):
                if job.plan.room_name == event.room.name and job.plan.source != "web":
                    self.spawn(self.end(job, "Source closed"))
        elif event.name == EventName.PARTICIPANT_LEFT and event.participant is not None and event.room is not None:
            for job in list(self.jobs.values()):
                if job.plan.source == "participant" and job.plan.room_name == event.room.name \
                        and job.plan.identity == event.participant.identity:
                    self.spawn(self.end(job, "Source closed"))
        elif event.name == EventName.TRACK_PUBLISHED and event.room is not None and event.participant is not None:
            self._auto_egress(event)

    def _on_participant_update(self, room: Any, p: Any) -> None:
        for job in self.jobs.values():
            if job.plan.room_name != room.name or not job.indexes:
                continue
            for t in p.info.tracks:
                if t.sid in job.indexes:
                    job.track_muted(t.sid, t.muted)

    # -- auto egress (CreateRoom's `egress`) -------------------------------------------------------

    async def start_room_egress(self, room_name: str, conf: Any) -> None:
        """RoomEgress.room at room creation; a failure fails CreateRoom (LiveKit roommanager.go)."""
        req = pe.RoomCompositeEgressRequest()
        req.CopyFrom(conf)
        req.room_name = room_name
        await self.start_egress(plans.ROOM_COMPOSITE, req, webhooks=list(req.webhooks))

    def _auto_egress(self, event: Event) -> None:
        room = self.rooms.get_room(event.room.name)  # type: ignore[union-attr]
        if room is None or not room.internal.HasField("egress"):
            return
        conf = room.internal.egress
        p, track = event.participant, event.track
        participant = room.participants.get(p.identity) if p else None
        if participant is None or participant.info.kind == pm.ParticipantInfo.Kind.EGRESS or track is None:
            return
        if conf.HasField("participant") and (room.name, "p:" + p.identity) not in self.auto_egress_seen:
            self.auto_egress_seen.add((room.name, "p:" + p.identity))
            a = conf.participant
            req = pe.ParticipantEgressRequest(room_name=room.name, identity=p.identity,
                                              file_outputs=a.file_outputs, segment_outputs=a.segment_outputs)
            if a.WhichOneof("options") == "preset":
                req.preset = a.preset
            elif a.WhichOneof("options") == "advanced":
                req.advanced.CopyFrom(a.advanced)
            self.spawn(self._auto_start(plans.PARTICIPANT, req))
        if conf.HasField("tracks") and (room.name, "t:" + track.sid) not in self.auto_egress_seen:
            self.auto_egress_seen.add((room.name, "t:" + track.sid))
            a = conf.tracks
            path = auto_track_filepath(a.filepath)
            req = pe.TrackEgressRequest(room_name=room.name, track_id=track.sid)
            req.file.filepath = path
            req.file.disable_manifest = a.disable_manifest
            which = a.WhichOneof("output")
            if which:
                getattr(req.file, which).CopyFrom(getattr(a, which))
            self.spawn(self._auto_start(plans.TRACK, req))

    async def _auto_start(self, kind: str, req: Any) -> None:
        try:
            await self.start_egress(kind, req)
        except EgressError as e:
            # LiveKit sends a synthetic egress_ended (FAILED) when an auto egress cannot launch
            info = pe.EgressInfo(egress_id=ids.new_id(ids.EGRESS), room_name=req.room_name,
                                 status=S.EGRESS_FAILED, error=e.msg, details="End reason: Failure",
                                 started_at=now_ns(), ended_at=now_ns(), updated_at=now_ns())
            getattr(info, kind).CopyFrom(req)
            plans.redact_request(kind, getattr(info, kind))
            log.warning("auto_egress_failed", room=req.room_name, kind=kind, error=e.msg)
            self.events.publish(Event(EventName.EGRESS_ENDED, egress_info=info,
                                      room=pm.Room(name=req.room_name)))
