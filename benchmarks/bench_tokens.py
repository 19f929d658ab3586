"""Access tokens: AccessToken.to_jwt() and TokenVerifier.verify() per second, lkserver vs livekit-api.

    .venv/bin/python benchmarks/bench_tokens.py [--seconds 1.0] [--check]

Both SDKs run in the same process on the same inputs, interleaved; each figure is the best of
several timed rounds (the least disturbed). Two tokens: a typical join token, and a rich one
(attributes, metadata, SIP grants, a room configuration with an agent dispatch). `--check`
exits non-zero when lkserver is slower than the official SDK on any row (target ratio >= 1.0).
The verifier also runs through `verify_with_keys`, the server's path (no official equivalent).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import livekit.api as official
from livekit.protocol.agent_dispatch import RoomAgentDispatch
from livekit.protocol.room import RoomConfiguration

from lkserver import api as ours
from lkserver.auth import verify_with_keys

KEY, SECRET = "APIbenchmark", "a-benchmark-secret-of-at-least-32-characters"


def join_token(mod: Any) -> Any:
    return (mod.AccessToken(KEY, SECRET).with_identity("alice").with_name("Alice")
            .with_grants(mod.VideoGrants(room_join=True, room="my-room")))


def rich_token(mod: Any) -> Any:
    return (mod.AccessToken(KEY, SECRET).with_identity("agent-7").with_name("Agent").with_kind("agent")
            .with_metadata('{"role":"assistant","lang":"en"}')
            .with_attributes({"team": "support", "tier": "gold", "region": "eu"})
            .with_grants(mod.VideoGrants(room_join=True, room="support-42", can_publish_sources=["microphone"],
                                         can_update_own_metadata=True, agent=True))
            .with_sip_grants(mod.SIPGrants(call=True))
            .with_room_config(RoomConfiguration(max_participants=4, empty_timeout=120,
                                                agents=[RoomAgentDispatch(agent_name="bot", metadata="{}")]))
            .with_ttl(datetime.timedelta(minutes=30)))


def rate(fn: Callable[[], Any], seconds: float, rounds: int = 5) -> float:
    """Operations per second: the best round of `rounds`, each about seconds/rounds long."""
    n = 1
    while True:  # calibrate a batch to ~10 ms
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - t0 > 0.01:
            break
        n *= 2
    best = 0.0
    budget = seconds / rounds
    for _ in range(rounds):
        ops, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < budget:
            for _ in range(n):
                fn()
            ops += n
        best = max(best, ops / elapsed)
    return best


def measure(seconds: float) -> list[tuple[str, float, float | None]]:
    rows: list[tuple[str, float, float | None]] = []
    our_verifier, their_verifier = ours.TokenVerifier(KEY, SECRET), official.TokenVerifier(KEY, SECRET)
    keys = {KEY: SECRET}
    for label, build in (("join", join_token), ("rich", rich_token)):
        our_tok, their_tok = build(ours), build(official)
        token = their_tok.to_jwt()
        assert our_verifier.verify(token).identity == their_verifier.verify(token).identity
        # interleave so that drift in machine load hits both sides alike
        their_mint = rate(their_tok.to_jwt, seconds)
        our_mint = rate(our_tok.to_jwt, seconds)
        rows.append((f"to_jwt() {label} token", their_mint, our_mint))
        their_verify = rate(lambda: their_verifier.verify(token), seconds)  # noqa: B023
        our_verify = rate(lambda: our_verifier.verify(token), seconds)  # noqa: B023
        rows.append((f"verify() {label} token", their_verify, our_verify))
        server_path = rate(lambda: verify_with_keys(token, keys), seconds)  # noqa: B023
        rows.append((f"verify_with_keys() {label} (server)", server_path, None))
    return rows


def table(rows: list[tuple[str, float, float | None]]) -> str:
    out = [f"{'operation':34} {'livekit-api /s':>15} {'lkserver /s':>12} {'ratio':>6}",
           f"{'-' * 34} {'-' * 15} {'-' * 12} {'-' * 6}"]
    for name, theirs, mine in rows:
        if mine is None:  # server path: lkserver only
            out.append(f"{name:34} {'-':>15} {theirs:12,.0f} {'-':>6}")
        else:
            out.append(f"{name:34} {theirs:15,.0f} {mine:12,.0f} {mine / theirs:6.2f}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--check", action="store_true", help="fail unless lkserver >= official on every row")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # PyJWT's short-key warnings would distort the official side
    rows = measure(args.seconds)
    print(table(rows))
    slower = [name for name, theirs, mine in rows if mine is not None and mine < theirs]
    if args.check and slower:
        print(f"slower than livekit-api: {', '.join(slower)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
