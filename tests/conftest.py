"""Shared fixtures: real lkserver processes on ephemeral ports, a real Redis, official clients."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "tests" / "node"
API_KEY = "devkey"
API_SECRET = "secret"
LISTEN_RE = re.compile(r"lkserver listening on http://([^:]+):(\d+)")


class ServerProcess:
    """An `lkserver serve` child process; `url` is valid once `start()` returns."""

    started: "list[ServerProcess]" = []  # every server of this pytest run, for failure reports

    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None,
                 config: str | None = None) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = data_dir / "livekit.yaml"
            data_dir.mkdir(parents=True, exist_ok=True)
            self.config_path.write_text(config)
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self.port = 0
        self._listening = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "lkserver", "serve", "--data-dir", str(self.data_dir)]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        else:
            # media ports: a free TCP port and per-transport UDP ports, so servers never collide
            cmd += ["--dev", "--udp-port", "0", "--tcp-port", "0"]
        if "--port" not in self.args:
            cmd += ["--port", "0"]
        if "--log-level" not in self.args:
            cmd += ["--log-level", os.environ.get("LKSERVER_TEST_LOG_LEVEL", "info")]
        return cmd + self.args

    def start(self, timeout: float = 20.0) -> "ServerProcess":
        self.lines = []
        if self not in ServerProcess.started:
            ServerProcess.started.append(self)
        self._listening = threading.Event()  # one per process: an old pump cannot set the new one's
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=self.env, cwd=str(ROOT))
        threading.Thread(target=self._pump, args=(self.proc, self._listening), daemon=True).start()
        if not self._listening.wait(timeout) or not self.port_known():
            self.kill()
            raise RuntimeError("lkserver did not start:\n" + "".join(self.lines[-40:]))
        return self

    def port_known(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and any(LISTEN_RE.search(ln) for ln in self.lines)

    def _pump(self, proc: subprocess.Popen, listening: threading.Event) -> None:
        assert proc.stderr is not None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "server.log", "a")  # kept for post-mortems of failed tests
        for line in proc.stderr:
            self.lines.append(line)
            log.write(line)
            log.flush()
            m = LISTEN_RE.search(line)
            if m:
                self.port = int(m.group(2))
                listening.set()
        listening.set()  # exited: start() stops waiting and reports it

    def log_text(self) -> str:
        return "".join(self.lines)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:
    """A failed test's report ends with the log tail (egress workers' tracebacks included) of each
    server still running, so that a failure in CI can be read without the data directory."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for srv in ServerProcess.started:
        if srv.proc is not None and srv.proc.poll() is None and srv.lines:
            report.sections.append((f"lkserver log tail ({srv.data_dir.name})", "".join(srv.lines[-60:])))


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    started: list[ServerProcess] = []

    def make(*args: str, data_dir: Path | None = None, env: dict[str, str] | None = None,
             config: str | None = None, start: bool = True) -> ServerProcess:
        s = ServerProcess(data_dir or tmp_path / f"data{len(started)}", *args, env=env, config=config)
        started.append(s)
        return s.start() if start else s

    yield make
    for s in started:
        s.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One dev server shared by a test module."""
    s = ServerProcess(tmp_path_factory.mktemp("lkserver")).start()
    yield s
    s.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server (Debian's) on an ephemeral port."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: run `make test` (it installs Debian's redis-server)")
    port = free_port()
    d = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(d)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    stop_peer(proc)


def stop_peer(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """End a third-party test peer (redis, moto, azurite): SIGTERM, then SIGKILL if it lingers.

    Their graceful shutdowns are not under test, and some wait on idle keep-alive connections."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_node(script: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run a script from tests/node with the official npm packages installed there."""
    if not (NODE_DIR / "node_modules").exists():
        pytest.fail("tests/node/node_modules is missing: run `make test` (it runs npm ci)")
    return subprocess.run(["node", str(NODE_DIR / script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=str(NODE_DIR))
