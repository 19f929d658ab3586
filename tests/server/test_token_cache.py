"""The server's verified-token cache answers exactly what verifying every time answers.

A cached entry may be used only while the token would still pass the time checks (exp, nbf, iat
with 60 s leeway); these tests move the cache's clock across those edges and compare with
`hs256.validate_claims` at the same instant, and check that bad tokens are never cached.
"""

from __future__ import annotations

import time

import jwt
import pytest

from lkserver.auth import AuthError, hs256, verify_with_keys
from lkserver.server.http import TokenCache

KEYS = {"APIk": "a-secret-of-at-least-32-characters-xx", "APIother": "another-secret-of-32-characters-yyyy"}


def token(key: str = "APIk", secret_key: str | None = None, **claims) -> str:
    """A token with iss=key, signed with the secret of `secret_key` (default: key's own)."""
    now = int(time.time())
    payload = {"iss": key, "sub": "alice", "nbf": now, "exp": now + 600, "video": {"roomList": True}}
    payload.update(claims)
    secret = KEYS.get(secret_key or key, "x" * 32)
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, algorithm="HS256")


class Clock:
    """The real clock until `at` is set; then that instant, frozen."""

    def __init__(self) -> None:
        self.at: float | None = None

    def __call__(self) -> float:
        return time.time() if self.at is None else self.at


def test_hit_returns_the_verified_claims() -> None:
    cache = TokenCache(KEYS)
    t = token()
    first = cache.verify(t)
    assert first[0].identity == "alice" and first[2] == "APIk"
    assert cache.verify(t) is first  # served from the cache
    assert first[0] == verify_with_keys(t, KEYS)[0]


@pytest.mark.parametrize("relative", [
    {},                                  # nbf now, exp in 10 min
    {"iat": 30},                         # issued "in the future", within leeway
    {"nbf": 45},                         # valid in 45 s (leeway 60)
    {"nbf": None, "iat": None},          # only exp
    {"exp": 5},                          # about to expire
])
def test_entry_is_used_exactly_inside_the_validity_window(relative) -> None:
    # times relative to now, made when the test runs (parameters are built at collection)
    now = int(time.time())
    claims = {k: None if v is None else now + v for k, v in relative.items()}
    t = token(**claims)
    payload = jwt.decode(t, options={"verify_signature": False})
    edges = [payload["exp"] + 60] + [payload[k] - 60 for k in ("nbf", "iat") if k in payload]
    offsets = sorted({e - time.time() + d for e in edges for d in (-0.5, -0.01, 0.01, 0.5)} | {0.0, 3600.0})
    for off in offsets:
        clock = Clock()
        cache = TokenCache(KEYS, clock=clock)
        first = cache.verify(t)  # verified and kept now
        clock.at = time.time() + off  # the cache and the reference judge the same instant
        try:
            hs256.validate_claims(payload, issuer="APIk", leeway=60, now=clock.at)
            valid_then = True
        except jwt.PyJWTError:
            valid_then = False
        # outside the window the entry is dropped and the token verified again (against the real
        # clock, so here it passes again with a new result)
        assert (cache.verify(t) is first) == valid_then, (relative, off)


@pytest.mark.parametrize("bad, message", [
    (lambda: token(exp=int(time.time()) - 120), "invalid authorization token: Signature has expired"),
    (lambda: token(nbf=int(time.time()) + 300), "invalid authorization token: The token is not yet valid (nbf)"),
    (lambda: token(key="APInobody"), "invalid API key"),
    (lambda: token(secret_key="APIother"), "invalid authorization token: Signature verification failed"),
    (lambda: "not-a-token", "invalid authorization token"),
])
def test_bad_tokens_fail_the_same_and_are_not_kept(bad, message) -> None:
    cache = TokenCache(KEYS)
    t = bad()
    for _ in range(2):
        with pytest.raises(AuthError) as e:
            cache.verify(t)
        assert str(e.value) == message
    with pytest.raises(AuthError) as direct:
        verify_with_keys(t, KEYS)
    assert str(direct.value) == message
    assert len(cache._entries) == 0


def test_cache_is_a_bounded_lru() -> None:
    cache = TokenCache(KEYS, size=3)
    tokens = [token(sub=f"user-{i}") for i in range(4)]
    results = [cache.verify(t) for t in tokens[:3]]
    assert cache.verify(tokens[0]) is results[0]  # touch the oldest: now most recent
    cache.verify(tokens[3])  # evicts tokens[1], the least recently used
    assert len(cache._entries) == 3
    assert cache.verify(tokens[0]) is results[0]
    assert cache.verify(tokens[2]) is results[2]
    again = cache.verify(tokens[1])
    assert again is not results[1] and again[0] == results[1][0]
