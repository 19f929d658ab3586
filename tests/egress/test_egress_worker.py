"""The egress worker's job without a server: track egress closing its file while media still arrives.

The media thread muxes the publisher's packets while the main thread closes the file on stop; FFmpeg
crashes (SIGSEGV) or fails the close when both touch the container at once (a CI failure of
test_track_egress_vp8_to_webm: "End reason: StopEgress API", status FAILED). Run in a child process
so that a crash fails this test rather than the whole pytest run.
"""

from __future__ import annotations

import fractions
import os
import subprocess
import sys
import threading
from pathlib import Path

import av

ROUNDS = 40


def vp8_frames(n: int) -> list[tuple[bytes, bool]]:
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = 320, 180, "yuv420p"
    enc.time_base = fractions.Fraction(1, 30)
    enc.options = {"deadline": "realtime", "cpu-used": "8"}
    out = []
    for i in range(n):
        f = av.VideoFrame(320, 180, "yuv420p")
        f.pts = i
        out += [(bytes(p), p.is_keyframe) for p in enc.encode(f)]
    return out


def record_while_stopping(tmp: Path, rounds: int) -> None:
    from livekit.protocol import egress as pe

    from lkserver.egress import plan as P
    from lkserver.egress.depacketize import Frame
    from lkserver.egress.worker import Job

    frames = vp8_frames(30)
    for r in range(rounds):
        req = pe.TrackEgressRequest(room_name="r", track_id="TR_v", file=pe.DirectFileOutput(filepath=f"v{r}.webm"))
        plan, _ = P.build_plan(P.TRACK, req, f"EG_{r}", room_id="RM_x")
        plan.file.output_type = "video/webm"
        events: list[dict] = []
        job = Job({"plan": plan.to_dict(), "tmp_dir": str(tmp / f"tmp{r}"), "output_dir": str(tmp / "out")},
                  events.append)
        job.control({"op": "track", "index": 0, "kind": "video", "mime": "video/vp8"})
        inp = job.inputs[0]
        running = threading.Event()
        running.set()

        def feed() -> None:
            i = 0
            while running.is_set():
                data, key = frames[i % len(frames)]
                job.on_frame(inp, Frame(i * 3000, data, key or i % len(frames) == 0))
                i += 1
                if i == 10:
                    job.stop_event.set()  # stop while frames keep coming

        t = threading.Thread(target=feed)
        t.start()
        result = job.run()
        running.clear()
        t.join()
        assert result["error"] == "", result
        with av.open(str(tmp / "out" / f"v{r}.webm")) as c:
            assert c.streams.video[0].codec_context.name == "vp8"


def test_track_egress_file_closes_cleanly_while_media_arrives(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, __file__, str(tmp_path)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)})
    assert p.returncode == 0, (p.returncode, p.stderr[-3000:])


if __name__ == "__main__":
    record_while_stopping(Path(sys.argv[1]), ROUNDS)


def test_keyframes_follow_media_time_when_frames_are_skipped() -> None:
    """A CPU-starved compositor skips frames (pts jumps); keyframes still come every GOP of media
    time, so HLS segments keep their length (a CI run cut 5 s into 2 segments of 2 s, not 3)."""
    from lkserver.egress.sinks import Encoders

    enc = Encoders({"framerate": 30, "width": 320, "height": 180, "video_bitrate": 500}, True, False, gop=60,
                   x264_preset="ultrafast")
    keys = []
    frame = av.VideoFrame(320, 180, "yuv420p")
    for pts in [*range(0, 30), *range(100, 140), *range(140, 200)]:  # 70 frames skipped after pts 29
        frame.pts = pts  # the same object, as the compositor re-sends an unchanged picture
        keys += [p.pts for p in enc.encode_video(frame) if p.is_keyframe]
    keys += [p.pts for kind, p in enc.flush() if p.is_keyframe]
    assert keys == [0, 100, 160], keys
