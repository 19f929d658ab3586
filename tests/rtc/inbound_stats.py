"""A received video track's inbound-rtp counters, sampled with the official Python SDK
(`Track.get_stats()`): used by tests/rtc/py_client.py and benchmarks/bench_media_quality.py."""

from __future__ import annotations

import asyncio
import time

from livekit import rtc


def inbound_row(stats, t: float) -> dict:
    """One sample of an `inbound_rtp` stats entry: frames, packets, repair and freeze counters."""
    i, r = stats.inbound, stats.received
    return {"t": t, "decoded": i.frames_decoded, "keyframes": i.key_frames_decoded,
            "lost": r.packets_lost, "received": r.packets_received, "nacks": i.nack_count,
            "rtx": i.retransmitted_packets_received, "pli": i.pli_count, "fir": i.fir_count,
            "freezes": i.freeze_count, "freeze_s": round(i.total_freeze_duration, 3),
            "w": i.frame_width, "h": i.frame_height, "fps": i.frames_per_second}


async def sample_inbound(track: rtc.Track, rows: list, interval: float, t0: float = 0.0, digits: int = 2) -> None:
    """Append a row every `interval` seconds (t = monotonic time - t0) until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            stats = await track.get_stats()
        except Exception:  # noqa: BLE001 - the track may be going away; try again next time
            continue
        for st in stats:
            if st.WhichOneof("stats") == "inbound_rtp":
                rows.append(inbound_row(st.inbound_rtp, round(time.monotonic() - t0, digits)))
