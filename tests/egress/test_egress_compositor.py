"""The room-composite renderer: layouts, themes, speaker and screen-share rules, and pixels."""

from __future__ import annotations

import av
import numpy as np

from lkserver.egress.compositor import (
    THEMES,
    Compositor,
    TileSource,
    grid_rects,
    parse_layout,
    speaker_rects,
)


def solid(w: int, h: int, rgb: tuple[int, int, int]) -> av.VideoFrame:
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[:, :] = rgb
    return av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")


def rgb_at(canvas: np.ndarray, w: int, h: int, x: int, y: int) -> tuple[int, int, int]:
    frame = av.VideoFrame.from_ndarray(canvas, format="yuv420p")
    return tuple(int(v) for v in frame.to_ndarray(format="rgb24")[y, x])


def test_layouts():
    assert parse_layout("grid-light") == ("grid", "light") and parse_layout("speaker-dark") == ("speaker", "dark")
    assert parse_layout("nonsense") == ("grid", "dark") and parse_layout("single-speaker") == ("single-speaker", "dark")
    rects = grid_rects(5, 1280, 720)
    assert len(rects) == 5 and all(x % 2 == y % 2 == w % 2 == h % 2 == 0 for x, y, w, h in rects)
    assert all(x + w <= 1280 and y + h <= 720 for x, y, w, h in rects)
    main, *strip = speaker_rects(4, 1280, 720)
    assert main[2] > 3 * strip[0][2] and len(strip) == 3
    # the speaker layout puts the active speaker in the main tile; a screen share takes it in grid
    c = Compositor(1280, 720, "speaker")
    a, b = TileSource("a"), TileSource("b")
    assert [s.key for s, _ in c.arrange([a, b], "b")] == ["b", "a"]
    c.set_layout("grid")
    share = TileSource("a#screen", frame=object(), frame_id=1, screen_share=True)
    placed = c.arrange([a, b, share], None)
    assert placed[0][0] is share and placed[0][1] == speaker_rects(3, 1280, 720)[0]
    c.set_layout("single-speaker")
    assert [s.key for s, _ in c.arrange([a, b], "b")] == ["b"]


def test_render_pixels_and_redraw_only_on_change():
    c = Compositor(640, 360, "grid-light")
    red = TileSource("red", frame=solid(320, 180, (230, 20, 20)), frame_id=1)
    blue = TileSource("blue", frame=solid(320, 180, (20, 20, 230)), frame_id=1)
    canvas, changed = c.render([red, blue], None)
    assert changed
    (x1, y1, w1, h1), (x2, y2, w2, h2) = grid_rects(2, 640, 360)
    r = rgb_at(canvas, 640, 360, x1 + w1 // 2, y1 + h1 // 2)
    b = rgb_at(canvas, 640, 360, x2 + w2 // 2, y2 + h2 // 2)
    corner = rgb_at(canvas, 640, 360, 1, 1)
    assert r[0] > 180 and r[2] < 80 and b[2] > 180 and b[0] < 80
    assert min(corner) > 200  # light theme background
    assert c.render([red, blue], None)[1] is False  # nothing changed: no redraw
    blue.frame, blue.frame_id = solid(320, 180, (20, 200, 20)), 2
    canvas, changed = c.render([red, blue], None)
    assert changed and rgb_at(canvas, 640, 360, x2 + w2 // 2, y2 + h2 // 2)[1] > 150
    c.set_layout("single-speaker-dark")
    canvas, _ = c.render([red, blue], "red")
    assert rgb_at(canvas, 640, 360, 320, 180)[0] > 180  # the speaker fills the picture
    empty = Compositor(320, 180, "grid-dark").render([], None)[0]
    assert int(empty[0, 0]) == THEMES["dark"]["bg"][0]  # an empty room records the empty layout
