"""Agent test helpers: the official livekit-agents framework in its own venv, and a worker process."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rtc"))

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements-agents.txt"
AGENTS_VENV = ROOT / ".venv" / "agents"


def agents_python() -> str:
    """.venv/agents/bin/python with livekit-agents installed (built once, rebuilt when the pins change)."""
    stamp = AGENTS_VENV / ".installed"
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    py = AGENTS_VENV / "bin" / "python"
    if not (stamp.exists() and stamp.read_text() == want and py.exists()):
        subprocess.run([sys.executable, "-m", "venv", str(AGENTS_VENV)], check=True)
        pip = subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)])
        if pip.returncode:
            raise RuntimeError(f"could not install {REQUIREMENTS.name} into {AGENTS_VENV} (no network in the "
                               "test namespace? `make test` builds it first: `make agents-deps`)")
        stamp.write_text(want)
    return str(py)


if __name__ == "__main__":  # `make agents-deps`
    print(agents_python())


class Worker:
    """An agent_worker.py process; `events` collects its JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict] = []
        self.stderr: list[str] = []
        self._changed = asyncio.Event()
        self._readers = [asyncio.ensure_future(self._read_out()), asyncio.ensure_future(self._read_err())]

    @classmethod
    async def start(cls, url: str, key: str, secret: str, *args: str) -> Worker:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
        proc = await asyncio.create_subprocess_exec(
            agents_python(), str(HERE / "agent_worker.py"), url, key, secret, *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=str(ROOT))
        return cls(proc)

    async def _read_out(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            text = line.decode(errors="replace").strip()
            if text.startswith("{"):
                self.events.append(json.loads(text))
                self._changed.set()

    async def _read_err(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace"))
            del self.stderr[:-200]

    async def wait_for(self, event: str, timeout: float = 30.0, **match: object) -> dict:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for e in self.events:
                if e.get("event") == event and all(e.get(k) == v for k, v in match.items()):
                    return e
            remaining = deadline - loop.time()
            if remaining <= 0 or self.proc.returncode is not None:
                raise AssertionError(f"worker never reported {event} {match}: {self.events}\n"
                                     + "".join(self.stderr[-60:]))
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
            except TimeoutError:
                pass

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for r in self._readers:
            r.cancel()
