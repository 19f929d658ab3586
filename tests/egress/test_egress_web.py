"""Web egress: a local page rendered in Debian's headless Chromium, recorded with its audio.

The page paints a solid colour, plays a 600 Hz oscillator through WebAudio, says START_RECORDING
on its console (the request awaits it) and, when asked, END_RECORDING (which ends the egress).
"""

from __future__ import annotations

import shutil

import av
import pytest
from aiohttp import web
from egressfix import S, eg_server, lkapi, probe, wait_status, wall_seconds  # noqa: F401
from livekit import api

PAGE = """<!doctype html><html><body style="margin:0;background:rgb(220,30,30)">
<script>
const ctx = new AudioContext();
const osc = ctx.createOscillator();
osc.frequency.value = 600;
const gain = ctx.createGain(); gain.gain.value = 0.3;
osc.connect(gain); gain.connect(ctx.destination); osc.start();
window.addEventListener("load", () => setTimeout(() => console.log("START_RECORDING"), 300));
const end = new URLSearchParams(location.search).get("end");
if (end) setTimeout(() => console.log("END_RECORDING"), Number(end));
</script></body></html>"""


@pytest.fixture
async def page_url():
    if shutil.which("chromium") is None:
        pytest.fail("chromium is not installed: run `make test` (scripts/install-system-deps.sh installs it)")
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/page", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/page"  # type: ignore[union-attr]
    await runner.cleanup()


async def test_web_page_recorded_with_audio_until_end_signal(eg_server, page_url):
    async with lkapi(eg_server) as lk:
        info = await lk.egress.start_web_egress(api.WebEgressRequest(
            url=page_url + "?end=4000", await_start_signal=True,
            file_outputs=[api.EncodedFileOutput(filepath="web/page.mp4")]))
        assert info.source_type == api.EgressSourceType.EGRESS_SOURCE_TYPE_WEB and info.room_name == ""
        done = await wait_status(lk, info.egress_id, (S.EGRESS_COMPLETE, S.EGRESS_FAILED, S.EGRESS_ABORTED),
                                 timeout=40)
    assert done.status == S.EGRESS_COMPLETE and done.details == "End reason: Source closed", done
    f = done.file_results[0]
    p = probe(f.location)
    assert p.streams == {"video": "h264", "audio": "aac"} and (p.width, p.height) == (1280, 720)
    assert abs(p.peak_hz - 600) < 5
    assert abs(p.duration - wall_seconds(f.started_at, f.ended_at)) < 0.5, (p, f)
    assert 2.5 < p.duration < 5.0  # from START_RECORDING to END_RECORDING
    with av.open(f.location) as c:
        frame = list(c.decode(video=0))[-1].to_ndarray(format="rgb24")
    r, g, b = frame[360, 640].astype(int)
    assert r > 180 and g < 80 and b < 80  # the page's red fills the picture


async def test_web_egress_page_load_error(eg_server):
    async with lkapi(eg_server) as lk:
        info = await lk.egress.start_web_egress(api.WebEgressRequest(
            url="http://127.0.0.1:9/unreachable", file_outputs=[api.EncodedFileOutput(filepath="web/x.mp4")]))
        done = await wait_status(lk, info.egress_id, (S.EGRESS_COMPLETE, S.EGRESS_FAILED, S.EGRESS_ABORTED),
                                 timeout=40)
    assert done.status == S.EGRESS_FAILED and done.error.startswith("page load error: "), done
