"""Room composite egress from a real room: the official SDK publishes, livekit-api records.

The file is probed with PyAV: its duration within 0.5 s of the wall time the egress reported,
H.264 at the asked size, AAC, and the publisher's tone as the audio's strongest frequency.
"""

from __future__ import annotations

import asyncio

from egressfix import Publisher, S, eg_server, lkapi, probe, wait_status, wall_seconds  # noqa: F401
from livekit import api


async def test_room_composite_file_with_tone_and_video(eg_server):
    async with lkapi(eg_server) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="rc-file"))
        async with Publisher(eg_server, "rc-file", "alice", "--audio", "440", "--video", "640x360"):
            await asyncio.sleep(1.0)
            info = await lk.egress.start_room_composite_egress(api.RoomCompositeEgressRequest(
                room_name="rc-file", layout="grid-dark",
                file_outputs=[api.EncodedFileOutput(filepath="rc/{room_name}-test.mp4")]))
            assert info.egress_id.startswith("EG_") and info.status == S.EGRESS_STARTING
            await wait_status(lk, info.egress_id, (S.EGRESS_ACTIVE,))
            await asyncio.sleep(4)
            stopped = await lk.egress.stop_egress(api.StopEgressRequest(egress_id=info.egress_id))
            assert stopped.status == S.EGRESS_ENDING and stopped.details == "End reason: StopEgress API"
            done = await wait_status(lk, info.egress_id, (S.EGRESS_COMPLETE, S.EGRESS_FAILED))
    assert done.status == S.EGRESS_COMPLETE, done
    f = done.file_results[0]
    assert f.filename == "rc/rc-file-test.mp4" and f.size > 0
    p = probe(f.location)
    assert abs(p.duration - wall_seconds(f.started_at, f.ended_at)) < 0.5, (p, f)
    assert p.streams == {"video": "h264", "audio": "aac"}
    assert (p.width, p.height) == (1280, 720)
    assert abs(p.peak_hz - 440) < 5
    assert done.manifest_location.endswith(f"rc/{done.egress_id}.json")
