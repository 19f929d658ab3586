"""`lkserver serve` and its configuration (server-api.md §2.4, §6): keys from the config file,
`key_file`, LIVEKIT_KEYS or LIVEKIT_CONFIG; refusals with a clear message; the file's keys used.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from conftest import ROOT, ServerProcess, free_port, free_udp_port
from livekit import api
from twirp_raw import JSON, bearer, make_token, post


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "REDIS_"))}
    return {**env, **(extra or {})}


class ExactServer(ServerProcess):
    """`lkserver serve ARGS` exactly: no --dev, --port or --log-level added."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "lkserver", "serve", "--data-dir", str(self.data_dir), *self.args]


def start_exact(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> ServerProcess:
    if "--config" not in args and "LIVEKIT_CONFIG" not in (env or {}):
        args += ("--tcp-port", "0", "--udp-port", "0")  # media ports that never collide
    s = ExactServer(tmp_path / "data", *args, env={})
    s.env = clean_env(env)
    return s.start()


def write_config(tmp_path: Path, conf: dict[str, Any], name: str = "livekit.yaml") -> str:
    conf = {"rtc": {"tcp_port": 0, "udp_port": free_udp_port()}, **conf}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(conf))
    return str(path)


def refused(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run `lkserver serve ARGS`, expect it to exit non-zero at once; return its stderr."""
    proc = subprocess.run([sys.executable, "-m", "lkserver", "serve", "--data-dir", str(tmp_path / "d"),
                           "--port", "0", *args], env=clean_env(env), capture_output=True, text=True,
                          timeout=60, cwd=str(ROOT))
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "lkserver listening" not in proc.stderr
    return proc.stderr


async def works_with(url: str, key: str, secret: str) -> bool:
    """Whether a token signed with key/secret gets past the auth middleware."""
    async with aiohttp.ClientSession() as s:
        reply = await post(s, url, "/twirp/livekit.RoomService/ListRooms", b"{}",
                           {"Content-Type": JSON, **bearer(make_token({"roomList": True}, key=key, secret=secret))})
    if reply.status == 401:
        assert reply.text == "invalid API key", reply.text
        return False
    assert reply.status == 200, reply.text
    return True


LONG_SECRET = "s" * 40


def test_no_keys_without_dev_refuses_to_start(tmp_path) -> None:
    err = refused(tmp_path)
    assert "no API keys configured" in err and "--dev" in err and "LIVEKIT_KEYS" in err


async def test_livekit_keys_env(tmp_path) -> None:
    s = start_exact(tmp_path, "--port", "0", env={"LIVEKIT_KEYS": f"APIone: {LONG_SECRET}\nAPItwo: {LONG_SECRET}2"})
    try:
        assert await works_with(s.url, "APIone", LONG_SECRET)
        assert await works_with(s.url, "APItwo", LONG_SECRET + "2")
        assert not await works_with(s.url, "devkey", "secret")  # no dev key without --dev
        assert "0.0.0.0" in s.log_text()  # not dev mode: every interface
    finally:
        assert s.stop() == 0


async def test_dev_mode_with_keys_does_not_add_devkey(tmp_path) -> None:
    s = start_exact(tmp_path, "--dev", "--port", "0", env={"LIVEKIT_KEYS": f"APIdev: {LONG_SECRET}"})
    try:
        assert await works_with(s.url, "APIdev", LONG_SECRET)
        assert not await works_with(s.url, "devkey", "secret")
    finally:
        s.stop()


def test_malformed_livekit_keys_refused(tmp_path) -> None:
    assert "LIVEKIT_KEYS" in refused(tmp_path, env={"LIVEKIT_KEYS": "just-a-key"})
    assert "LIVEKIT_KEYS" in refused(tmp_path, env={"LIVEKIT_KEYS": "key: [unclosed"})


async def test_key_file(tmp_path) -> None:
    key_file = tmp_path / "keys.yaml"
    key_file.write_text(f"APIfile: {LONG_SECRET}\n")
    key_file.chmod(0o644)
    config = write_config(tmp_path, {"key_file": str(key_file)})
    err = refused(tmp_path, "--config", config)
    assert "key_file" in err and "must not be accessible by others" in err
    key_file.chmod(0o600)
    s = start_exact(tmp_path, "--config", config, "--port", "0")
    try:
        assert await works_with(s.url, "APIfile", LONG_SECRET)
    finally:
        s.stop()
    assert "key_file" in refused(tmp_path, "--config", write_config(tmp_path, {"key_file": str(tmp_path / "none")}))


async def test_config_file_keys_are_used(tmp_path) -> None:
    port = free_port()
    config = write_config(tmp_path, {
        "port": port, "bind_addresses": ["127.0.0.1"], "keys": {"APIconf": LONG_SECRET},
        "room": {"empty_timeout": 77, "departure_timeout": 8, "max_participants": 3},
        "logging": {"level": "warn"},
    })
    s = start_exact(tmp_path, "--config", config)
    try:
        assert s.port == port
        async with api.LiveKitAPI(s.url, "APIconf", LONG_SECRET) as lk:
            room = await lk.room.create_room(api.CreateRoomRequest(name="cfg-room"))
        assert (room.empty_timeout, room.departure_timeout, room.max_participants) == (77, 8, 3)
        # logging.level warn: no info lines (the startup banner is not a log line)
        assert " INFO " not in s.log_text() and "lkserver listening on http://127.0.0.1" in s.log_text()
    finally:
        s.stop()
    # flags win over the file
    s = start_exact(tmp_path, "--config", config, "--port", "0", "--log-level", "info")
    try:
        assert s.port != port and "server_started" in s.log_text()
    finally:
        s.stop()


async def test_livekit_config_env_body(tmp_path) -> None:
    body = yaml.safe_dump({"keys": {"APIenv": LONG_SECRET}, "room": {"empty_timeout": 55},
                           "rtc": {"tcp_port": 0, "udp_port": free_udp_port()}})
    s = start_exact(tmp_path, "--port", "0", env={"LIVEKIT_CONFIG": body})
    try:
        async with api.LiveKitAPI(s.url, "APIenv", LONG_SECRET) as lk:
            room = await lk.room.create_room(api.CreateRoomRequest(name="env-room"))
        assert room.empty_timeout == 55
    finally:
        s.stop()


async def test_unknown_keys_are_reported_not_fatal(tmp_path) -> None:
    config = write_config(tmp_path, {
        "keys": {"APIx": LONG_SECRET}, "bind_addresses": ["127.0.0.1"],
        "turn": {"enabled": False}, "no_such_key": 1, "room": {"bogus_setting": True, "empty_timeout": 9},
    })
    s = start_exact(tmp_path, "--config", config, "--port", "0")
    try:
        log = s.log_text()
        assert "config_keys_ignored" in log
        for key in ("turn", "no_such_key", "room.bogus_setting"):
            assert key in log, log
        async with api.LiveKitAPI(s.url, "APIx", LONG_SECRET) as lk:
            assert (await lk.room.create_room(api.CreateRoomRequest(name="x"))).empty_timeout == 9
    finally:
        s.stop()


def test_webhooks_need_an_api_key(tmp_path) -> None:
    base = {"keys": {"APIx": LONG_SECRET}}
    for webhook in ({"urls": ["http://127.0.0.1:9/hook"]},
                    {"urls": ["http://127.0.0.1:9/hook"], "api_key": "APIunknown"}):
        err = refused(tmp_path, "--config", write_config(tmp_path, {**base, "webhook": webhook}))
        assert "api_key is required to use webhooks" in err


def test_prometheus_basic_auth_needs_both(tmp_path) -> None:
    for prom in ({"port": free_port(), "username": "u"}, {"port": free_port(), "password": "p"}):
        err = refused(tmp_path, "--config", write_config(tmp_path, {"keys": {"APIx": LONG_SECRET},
                                                                     "prometheus": prom}))
        assert "prometheus.username and prometheus.password" in err


@pytest.mark.parametrize("conf, message", [
    ("port: [1, 2]", "port"),
    ("room: {empty_timeout: soon}", "room.empty_timeout"),
    ("keys: [a, b]", "keys"),
    ("this is: not: yaml: [", "not valid YAML"),
    ("- a list", "mapping"),
    ("logging: {level: loud}", "logging.level"),
])
def test_bad_config_values_refused(tmp_path, conf: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(conf + "\n")
    assert message in refused(tmp_path, "--config", str(path), env={"LIVEKIT_KEYS": f"k: {LONG_SECRET}"})


def test_missing_config_file_refused(tmp_path) -> None:
    err = refused(tmp_path, "--config", str(tmp_path / "nope.yaml"))
    assert "cannot read config file" in err
