"""Web egress source: a URL rendered by headless Chromium, captured through the DevTools protocol.

Runs inside the egress worker. Chromium is started with `--remote-debugging-pipe` (DevTools
messages as NUL-terminated JSON on fds 3 and 4: no port to find or to expose); the page is sized
to the output with Emulation.setDeviceMetricsOverride and captured with Page.startScreencast
(JPEG frames, each acknowledged). Audio: a script added before any page script taps every
AudioContext output and every playing <audio>/<video> element into a ScriptProcessor whose PCM
reaches us through a Runtime binding - Chromium has no audio device to capture here. The page
signals `START_RECORDING` / `END_RECORDING` on its console, as LiveKit's templates do; the
recording waits for the first only when await_start_signal is set (egress pkg/source/web.go).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable
from typing import Any

PAGE_LOAD_TIMEOUT = 30.0

AUDIO_TAP = r"""
(() => {
  if (window.__lkTapInstalled) return;
  window.__lkTapInstalled = true;
  const taps = new WeakMap();
  const connect = AudioNode.prototype.connect;
  function tapFor(ctx) {
    let t = taps.get(ctx);
    if (t) return t;
    const node = ctx.createScriptProcessor(4096, 2, 2);
    node.onaudioprocess = (e) => {
      const l = e.inputBuffer.getChannelData(0), r = e.inputBuffer.getChannelData(1);
      const mono = new Float32Array(l.length);
      let loud = false;
      for (let i = 0; i < l.length; i++) { mono[i] = (l[i] + r[i]) / 2; if (mono[i] !== 0) loud = true; }
      if (!loud) return;
      const bytes = new Uint8Array(mono.buffer);
      let s = ""; for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
      try { window.__lkAudio(ctx.sampleRate + ":" + btoa(s)); } catch (err) {}
    };
    taps.set(ctx, node);
    const sink = ctx.createGain(); sink.gain.value = 0;
    connect.call(node, sink); connect.call(sink, ctx.destination);
    return node;
  }
  AudioNode.prototype.connect = function (dest, ...rest) {
    const out = connect.call(this, dest, ...rest);
    if (dest instanceof AudioDestinationNode) { connect.call(this, tapFor(this.context)); }
    return out;
  };
  let mediaCtx = null;
  document.addEventListener("play", (e) => {
    const el = e.target;
    if (!(el instanceof HTMLMediaElement) || el.__lkTapped) return;
    el.__lkTapped = true;
    mediaCtx = mediaCtx || new AudioContext();
    const src = mediaCtx.createMediaElementSource(el);
    src.connect(mediaCtx.destination);
  }, true);
})();
"""


class PageError(Exception):
    pass


class Browser:
    """A headless Chromium page, sized WxH, driven over the DevTools pipe."""

    def __init__(self, chromium: str, width: int, height: int, on_frame: Callable[[bytes], None],
                 on_audio: Callable[[int, bytes], None], on_console: Callable[[str], None]) -> None:
        self.width, self.height = width, height
        self.on_frame, self.on_audio, self.on_console = on_frame, on_audio, on_console
        self.profile = tempfile.mkdtemp(prefix="lkserver-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # the child sees the pipe on fds 3 (commands in) and 4 (answers out)
        args = [chromium, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--mute-audio",
                "--autoplay-policy=no-user-gesture-required", "--hide-scrollbars",
                "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows", "--disable-features=CalculateNativeWinOcclusion",
                f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"]

        # a shell moves them there (no preexec_fn: the worker has threads)
        shell = ["/bin/sh", "-c", f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}']
        self.proc = subprocess.Popen(shell + args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, pass_fds=(to_browser_r, from_browser_w))
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[threading.Event, list]] = {}
        self._lock = threading.Lock()
        self.session = ""
        self.closed = False
        self.loaded = threading.Event()
        threading.Thread(target=self._read, name="egress-cdp", daemon=True).start()

    # -- the pipe ----------------------------------------------------------------------------------

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                for ev, box in list(self._pending.values()):
                    box.append({"error": {"message": "browser closed"}})
                    ev.set()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                try:
                    self._dispatch(json.loads(raw))
                except Exception:  # noqa: BLE001 - one odd message never stops the capture
                    pass

    def _dispatch(self, msg: dict) -> None:
        if "id" in msg:
            waiter = self._pending.pop(msg["id"], None)
            if waiter is not None:
                waiter[1].append(msg)
                waiter[0].set()
            return
        method, params = msg.get("method", ""), msg.get("params", {})
        if method == "Page.screencastFrame":
            self.send("Page.screencastFrameAck", {"sessionId": params["sessionId"]}, wait=False)
            self.on_frame(base64.b64decode(params["data"]))
        elif method == "Runtime.bindingCalled" and params.get("name") == "__lkAudio":
            rate, _, data = params.get("payload", "").partition(":")
            try:
                self.on_audio(int(rate), base64.b64decode(data))
            except ValueError:
                pass
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", "")) for a in params.get("args", []))
            self.on_console(text)
        elif method == "Page.loadEventFired":
            self.loaded.set()

    def send(self, method: str, params: dict | None = None, *, session: bool = True, wait: bool = True,
             timeout: float = 10.0) -> dict:
        mid = next(self._ids)
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        ev, box = threading.Event(), []  # type: ignore[var-annotated]
        if wait:
            self._pending[mid] = (ev, box)
        with self._lock:
            try:
                os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
            except OSError as e:
                raise PageError(f"browser gone: {e}") from None
        if not wait:
            return {}
        if not ev.wait(timeout):
            self._pending.pop(mid, None)
            raise PageError(f"{method} timed out")
        answer = box[0]
        if "error" in answer:
            raise PageError(answer["error"].get("message", "error"))
        return answer.get("result", {})

    # -- the page -----------------------------------------------------------------------------------

    def open(self, url: str) -> None:
        targets = self.send("Target.getTargets", session=False, timeout=PAGE_LOAD_TIMEOUT)["targetInfos"]
        page = next((t for t in targets if t["type"] == "page"), None)
        target_id = page["targetId"] if page else self.send(
            "Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target_id, "flatten": True},
                                 session=False)["sessionId"]
        self.send("Page.enable")
        self.send("Page.bringToFront")
        self.send("Emulation.setFocusEmulationEnabled", {"enabled": True})
        self.send("Runtime.enable")
        self.send("Runtime.addBinding", {"name": "__lkAudio"})
        self.send("Page.addScriptToEvaluateOnNewDocument", {"source": AUDIO_TAP})
        self.send("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": self.height,
                                                         "deviceScaleFactor": 1, "mobile": False})
        result = self.send("Page.navigate", {"url": url}, timeout=PAGE_LOAD_TIMEOUT)
        if result.get("errorText"):
            raise PageError(result["errorText"])
        if not self.loaded.wait(PAGE_LOAD_TIMEOUT):
            raise PageError("timed out waiting for the page to load")
        self.send("Page.startScreencast", {"format": "jpeg", "quality": 85, "maxWidth": self.width,
                                           "maxHeight": self.height, "everyNthFrame": 1})

    def close(self) -> None:
        try:
            if not self.closed:
                self.send("Browser.close", session=False, wait=False)
        except PageError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        import shutil

        shutil.rmtree(self.profile, ignore_errors=True)
