"""The room-composite renderer: participants' latest video frames laid out on one YUV canvas.

Reproduces the layouts of LiveKit's default egress template (egress template-default Room.tsx):
`grid`, `speaker` and `single-speaker`, each with a `-light` or `-dark` theme (anything but
`-light` is dark; an unknown name is grid); `grid` turns into `speaker` while someone shares a
screen, with the screen share as the main tile; the speaker layouts follow the active speaker.
Drawn directly in YUV 4:2:0 with numpy slices: a tile is rescaled (swscale) only when a new frame
arrives or the tile's size changes, and the canvas is redrawn only when something changed, so a
still room costs almost nothing per output frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# (Y, U, V) colours per theme: background, empty tile, speaker border
THEMES = {
    "dark": {"bg": (16, 128, 128), "tile": (40, 128, 128), "border": (145, 54, 34)},
    "light": {"bg": (235, 128, 128), "tile": (200, 128, 128), "border": (145, 54, 34)},
}
GAP = 8  # pixels between tiles


def parse_layout(layout: str) -> tuple[str, str]:
    """("grid" | "speaker" | "single-speaker", "dark" | "light") for a template layout name."""
    theme = "light" if layout.endswith("-light") else "dark"
    base = layout.removesuffix("-light").removesuffix("-dark")
    if base not in ("grid", "speaker", "single-speaker"):
        base = "grid"
    return base, theme


def _even(v: float) -> int:
    return max(2, int(v) // 2 * 2)


Rect = tuple[int, int, int, int]  # x, y, w, h (all even)


def grid_rects(n: int, w: int, h: int) -> list[Rect]:
    if n <= 0:
        return []
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    tw, th = (w - GAP * (cols + 1)) / cols, (h - GAP * (rows + 1)) / rows
    out = []
    for i in range(n):
        r, c = divmod(i, cols)
        in_row = min(cols, n - r * cols)
        x0 = (w - in_row * tw - (in_row - 1) * GAP) / 2  # center a short last row
        out.append((_even(x0 + c * (tw + GAP)), _even(GAP + r * (th + GAP)), _even(tw), _even(th)))
    return out


def speaker_rects(n: int, w: int, h: int) -> list[Rect]:
    """The first rect is the main (speaker) tile; the others form a strip on the right."""
    if n <= 0:
        return []
    if n == 1:
        return [(0, 0, w, h)]
    strip_w = _even(w / 5)
    main = (0, 0, _even(w - strip_w - GAP), h)
    others = n - 1
    th = _even(min((h - GAP * (others + 1)) / others, strip_w * 9 / 16))
    x = w - strip_w
    return [main] + [(x, _even(GAP + i * (th + GAP)), strip_w - GAP, th) for i in range(others)]


@dataclass
class TileSource:
    """What the compositor needs to know of one participant."""

    key: str  # participant identity
    frame: Any = None  # latest av.VideoFrame (or None: no video)
    frame_id: int = 0  # changes whenever `frame` does
    screen_share: bool = False
    _cache: dict = field(default_factory=dict)  # (w, h) -> (frame_id, planes, fitted size)


def frame_planes(frame: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Y, U, V planes of a yuv420p av.VideoFrame as 2-D arrays (line padding removed)."""
    out = []
    for i, p in enumerate(frame.planes):
        pw, ph = (frame.width, frame.height) if i == 0 else ((frame.width + 1) // 2, (frame.height + 1) // 2)
        arr = np.frombuffer(p, dtype=np.uint8).reshape(ph, p.line_size)[:, :pw]
        out.append(arr)
    return out[0], out[1], out[2]


class Canvas:
    """A yuv420p image in one contiguous buffer (the layout av.VideoFrame.from_ndarray takes)."""

    def __init__(self, w: int, h: int) -> None:
        self.w, self.h = w, h
        self.buf = np.empty(w * h * 3 // 2, dtype=np.uint8)
        self.y = self.buf[: w * h].reshape(h, w)
        self.u = self.buf[w * h: w * h * 5 // 4].reshape(h // 2, w // 2)
        self.v = self.buf[w * h * 5 // 4:].reshape(h // 2, w // 2)

    def fill(self, rect: Rect, color: tuple[int, int, int]) -> None:
        x, y, w, h = rect
        self.y[y:y + h, x:x + w] = color[0]
        self.u[y // 2:(y + h) // 2, x // 2:(x + w) // 2] = color[1]
        self.v[y // 2:(y + h) // 2, x // 2:(x + w) // 2] = color[2]

    def blit(self, x: int, y: int, planes: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        py, pu, pv = planes
        h, w = py.shape
        self.y[y:y + h, x:x + w] = py
        self.u[y // 2:y // 2 + pu.shape[0], x // 2:x // 2 + pu.shape[1]] = pu
        self.v[y // 2:y // 2 + pv.shape[0], x // 2:x // 2 + pv.shape[1]] = pv

    def border(self, rect: Rect, color: tuple[int, int, int], t: int = 4) -> None:
        x, y, w, h = rect
        for r in ((x, y, w, t), (x, y + h - t, w, t), (x, y, t, h), (x + w - t, y, t, h)):
            self.fill(r, color)

    def ndarray(self) -> np.ndarray:
        return self.buf.reshape(self.h * 3 // 2, self.w)


class Compositor:
    def __init__(self, width: int, height: int, layout: str = "") -> None:
        self.canvas = Canvas(width, height)
        self.set_layout(layout)
        self._signature: tuple | None = None

    def set_layout(self, layout: str) -> None:
        self.layout, self.theme = parse_layout(layout)
        self._signature = None

    def arrange(self, sources: list[TileSource], speaker: str | None) -> list[tuple[TileSource, Rect]]:
        """Which sources are drawn, and where."""
        w, h = self.canvas.w, self.canvas.h
        shares = [s for s in sources if s.screen_share and s.frame is not None]
        layout = "speaker" if self.layout == "grid" and shares else self.layout
        if layout == "grid":
            return list(zip(sources, grid_rects(len(sources), w, h)))
        main = shares[0] if shares else next((s for s in sources if s.key == speaker and not s.screen_share), None)
        if main is None:
            main = next((s for s in sources if s.frame is not None), sources[0] if sources else None)
        if main is None:
            return []
        if layout == "single-speaker":
            return [(main, (0, 0, w, h))]
        ordered = [main] + [s for s in sources if s is not main]
        return list(zip(ordered, speaker_rects(len(ordered), w, h)))

    def render(self, sources: list[TileSource], speaker: str | None = None) -> tuple[np.ndarray, bool]:
        """The canvas (H*3/2 x W yuv420p) and whether it changed since the last call."""
        placed = self.arrange(sources, speaker)
        frames = tuple((s.frame_id, s.frame.width if s.frame is not None else 0,
                        s.frame.height if s.frame is not None else 0) for s, _ in placed)
        scene = (self.layout, self.theme, speaker, tuple((s.key, r) for s, r in placed))
        if self._signature is not None and self._signature[0] == scene:
            if self._signature[1] == frames:
                return self.canvas.ndarray(), False
            # same scene, new pictures of the same sizes: redraw only the tiles that changed
            changed = [(s, r) for (s, r), now, before in zip(placed, frames, self._signature[1]) if now != before]
            if all(b[1:] == n[1:] for n, b in zip(frames, self._signature[1])):
                self._signature = (scene, frames)
                for src, rect in changed:
                    self._draw_tile(src, rect, speaker, len(placed), tile_bg=False)
                return self.canvas.ndarray(), True
        self._signature = (scene, frames)
        c = self.canvas
        c.fill((0, 0, c.w, c.h), THEMES[self.theme]["bg"])
        for src, rect in placed:
            self._draw_tile(src, rect, speaker, len(placed), tile_bg=True)
        return c.ndarray(), True

    def _draw_tile(self, src: TileSource, rect: Rect, speaker: str | None, count: int, tile_bg: bool) -> None:
        colors = THEMES[self.theme]
        c = self.canvas
        if tile_bg or src.frame is None:
            c.fill(rect, colors["tile"])
        if src.frame is not None:
            fitted = self._scaled(src, rect)
            if fitted is not None:
                (fw, fh), planes = fitted
                c.blit(rect[0] + _even((rect[2] - fw) / 2) if rect[2] > fw else rect[0],
                       rect[1] + _even((rect[3] - fh) / 2) if rect[3] > fh else rect[1], planes)
        if speaker is not None and src.key == speaker and count > 1 and self.layout != "single-speaker":
            c.border(rect, colors["border"])

    def _scaled(self, src: TileSource, rect: Rect) -> tuple[tuple[int, int], tuple] | None:
        key = (rect[2], rect[3])
        cached = src._cache.get(key)
        if cached is not None and cached[0] == src.frame_id:
            return cached[1], cached[2]
        f = src.frame
        if not f.width or not f.height:
            return None
        scale = min(rect[2] / f.width, rect[3] / f.height)
        fw, fh = min(_even(f.width * scale), rect[2]), min(_even(f.height * scale), rect[3])
        scaled = f.reformat(width=fw, height=fh, format="yuv420p")
        planes = frame_planes(scaled)  # views into `scaled`, which the cache keeps alive
        src._cache.clear()  # one size at a time: a layout change rescales once
        src._cache[key] = (src.frame_id, (fw, fh), planes, scaled)
        return (fw, fh), planes
