"""`lkserver webhook listen`: verifies like the SDKs' WebhookReceiver, pretty-prints events, and
says clearly why it refuses a request."""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta

import livekit.api as official
from conftest import ROOT
from whsink import KEY, SECRET, config, room_cycles


class Listener:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lkserver", *args, "webhook", "listen", "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT))
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=lambda s=stream, k=sink: k.extend(iter(s.readline, "")),
                             daemon=True).start()
        self.port = 0
        m = self.wait(lambda: re.search(r"http://127\.0\.0\.1:(\d+)/", "".join(self.err)))
        self.port = int(m.group(1))

    def wait(self, fn, timeout: float = 30.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = fn()
            if got:
                return got
            time.sleep(0.05)
        raise AssertionError(f"timed out; stdout={''.join(self.out)!r} stderr={''.join(self.err)!r}")

    def post(self, body: bytes, auth: str | None) -> int:
        headers = {"Content-Type": "application/webhook+json"}
        if auth is not None:
            headers["Authorization"] = auth
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/hook", data=body, headers=headers)
        try:
            return urllib.request.urlopen(req, timeout=10).status
        except urllib.error.HTTPError as e:
            return e.code

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def signed(body: bytes, key: str, secret: str) -> str:
    return (official.AccessToken(key, secret)
            .with_sha256(base64.b64encode(hashlib.sha256(body).digest()).decode())
            .with_ttl(timedelta(minutes=5)).to_jwt())


def test_listen_prints_server_events_and_rejects_forgeries(server_factory) -> None:
    lis = Listener("--api-key", KEY, "--api-secret", SECRET)
    try:
        srv = server_factory(config=config([f"http://127.0.0.1:{lis.port}/hook"]))
        expected = room_cycles(srv.url, ["cli-room"], cycles=1)
        lis.wait(lambda: "room_finished" in "".join(lis.out))
        out = "".join(lis.out)
        sid = expected["cli-room"][0][1]
        assert re.search(r"^room_started  id=EV_\w+  room=cli-room", out, re.MULTILINE)
        assert re.search(r"^room_finished  id=EV_\w+  room=cli-room", out, re.MULTILINE)
        assert f'"sid": "{sid}"' in out, "the event's JSON follows its line"
        assert lis.err[1:] == [], "nothing refused"

        body = b'{"event":"room_started","room":{"name":"forged"},"id":"EV_forged"}'
        assert lis.post(body, signed(body, KEY, "not-the-secret-of-this-listener-at-all")) == 401
        assert lis.post(body.replace(b"forged", b"altered"), signed(body, KEY, SECRET)) == 401
        assert lis.post(body, signed(body, "APIsomeoneelse", SECRET)) == 401
        assert lis.post(body, None) == 401
        assert lis.post(body, "Bearer not-a-jwt") == 401
        lis.wait(lambda: len(lis.err) >= 6)
        rejected = lis.err[1:]
        assert all(line.startswith("REJECTED POST /hook from 127.0.0.1: ") for line in rejected)
        assert "bad signature: the token was not signed with this API secret" in rejected[0]
        assert "sha256 mismatch" in rejected[1]
        assert "signed by another API key" in rejected[2]
        assert "no Authorization header" in rejected[3]
        assert "not a JWT" in rejected[4]
        # a genuine one is still printed after all that
        assert lis.post(body, signed(body, KEY, SECRET)) == 200
        lis.wait(lambda: "EV_forged" in "".join(lis.out))
    finally:
        lis.stop()


def test_listen_needs_keys() -> None:
    res = subprocess.run([sys.executable, "-m", "lkserver", "webhook", "listen"], capture_output=True,
                         text=True, cwd=str(ROOT), timeout=30, check=False,
                         env={"PATH": "/usr/bin:/bin"})
    assert res.returncode == 1
    assert "no API key and secret" in res.stderr
