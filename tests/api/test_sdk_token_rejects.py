"""Bad tokens: ours must reject exactly what the official SDK (PyJWT) rejects, with the same
exception class and message, and accept exactly what it accepts. Never silent acceptance.

Every token here also goes through the server's `verify_with_keys`, which must answer AuthError
for each rejected token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import livekit.api as official
import pytest

from lkserver import api
from lkserver.auth import AuthError, hs256, verify_with_keys

KEY, SECRET = "APIrejects", "the-right-secret-of-32-characters!!"
STD_HEADER = {"alg": "HS256", "typ": "JWT"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: Any = STD_HEADER, payload: Any = None, secret: str = SECRET, *,
          digest: Any = hashlib.sha256, raw_header: bytes | None = None,
          raw_payload: bytes | None = None, sig: str | None = None) -> str:
    """A compact JWS put together by hand, so any part can be wrong."""
    if payload is None:
        payload = valid_payload()
    h = b64(raw_header if raw_header is not None else json.dumps(header).encode())
    p = b64(raw_payload if raw_payload is not None else json.dumps(payload).encode())
    signing_input = f"{h}.{p}".encode()
    if sig is None:
        sig = b64(hmac.new(secret.encode(), signing_input, digest).digest())
    return f"{h}.{p}.{sig}"


def valid_payload(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    payload: dict[str, Any] = {"video": {"roomJoin": True, "room": "r"}, "sub": "alice", "iss": KEY,
                               "nbf": now - 10, "exp": now + 3600}
    for k, v in changes.items():
        if v is DROP:
            payload.pop(k, None)
        else:
            payload[k] = v
    return payload


DROP = object()


def flip(s: str, i: int) -> str:
    c = s[i]
    return s[:i] + ("A" if c != "A" else "B") + s[i + 1:]


def make_tokens() -> dict[str, Any]:
    """The corpus, built against the current time (timing cases sit far from any boundary)."""
    now = int(time.time())
    good = forge()
    g_head, g_body, g_sig = good.split(".")
    return {
        # well-formed and valid: accepted by both
        "valid": good,
        "valid-bytes": good.encode(),
        "exp-within-leeway": forge(payload=valid_payload(exp=now - 30)),
        "nbf-within-leeway": forge(payload=valid_payload(nbf=now + 30)),
        "exp-numeric-string": forge(payload=valid_payload(exp=str(now + 3600))),
        "exp-float": forge(payload=valid_payload(exp=now + 3600.5)),
        "aud-empty": forge(payload=valid_payload(aud="")),
        "header-without-typ": forge(header={"alg": "HS256"}),
        "header-extra-fields": forge(header={"alg": "HS256", "typ": "JWT", "kid": "k1", "x": [1]}),
        "unknown-claims": forge(payload=valid_payload(foo={"bar": 1}, video={"roomJoin": True, "new": 1})),
        "no-sub": forge(payload=valid_payload(sub=DROP)),
        "padded-segments": f"{g_head}.{g_body}.{g_sig}=" if len(g_sig) % 4 == 3 else good,
        # garbage
        "empty": "",
        "one-word": "garbage",
        "two-segments": "abc.def",
        "three-garbage": "abc.def.ghi",
        "dots-only": "..",
        "four-segments": good + ".x",
        "leading-space": " " + good,
        "trailing-newline": good + "\n",
        "non-ascii": "é.é.é",
        "bad-base64-char": f"{g_head}.{g_body[:-1]}!.{g_sig}",
        "bad-base64-length": f"{g_head}.{g_body}A.{g_sig}",
        "too-much-padding": f"{g_head}===.{g_body}.{g_sig}",
        "non-canonical-base64": f"{g_head}.{g_body}.{g_sig[:-1]}{'B' if g_sig[-1] != 'B' else 'C'}",
        "header-not-json": forge(raw_header=b"not json"),
        "header-json-list": forge(raw_header=b"[1,2]"),
        "header-no-alg": forge(header={"typ": "JWT"}),
        "header-kid-int": forge(header={"alg": "HS256", "kid": 7}),
        "header-crit-unknown": forge(header={"alg": "HS256", "crit": ["exp"], "exp": 1}),
        "header-crit-empty": forge(header={"alg": "HS256", "crit": []}),
        "header-b64-false": forge(header={"alg": "HS256", "b64": False, "crit": ["b64"]}),
        "header-b64-false-detached": f"{b64(json.dumps({'alg': 'HS256', 'b64': False, 'crit': ['b64']}).encode())}..{g_sig}",
        "header-b64-false-no-crit": f"{b64(json.dumps({'alg': 'HS256', 'b64': False}).encode())}..{g_sig}",
        "payload-not-json": forge(raw_payload=b"{not json"),
        "payload-json-list": forge(raw_payload=b"[1]"),
        "payload-json-string": forge(raw_payload=b'"hello"'),
        "payload-deep-nesting": forge(raw_payload=b"[" * 100000 + b"]" * 100000),
        # algorithm confusion
        "alg-none": f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{g_body}.",
        "alg-none-with-sig": forge(header={"alg": "none"}),
        "alg-HS512": forge(header={"alg": "HS512", "typ": "JWT"}, digest=hashlib.sha512),
        "alg-RS256": forge(header={"alg": "RS256", "typ": "JWT"}),
        "alg-lowercase": forge(header={"alg": "hs256", "typ": "JWT"}),
        "alg-empty": forge(header={"alg": ""}),
        "alg-list": forge(header={"alg": ["HS256"]}),
        # signature
        "wrong-secret": forge(secret="a-different-secret-of-32-characters"),
        "empty-signature": f"{g_head}.{g_body}.",
        "flipped-signature": f"{g_head}.{g_body}.{flip(g_sig, 5)}",
        "truncated-signature": f"{g_head}.{g_body}.{g_sig[:20]}",
        "tampered-payload": f"{g_head}.{b64(json.dumps(valid_payload(video={'roomAdmin': True, 'room': 'r'})).encode())}.{g_sig}",
        # registered claims
        "expired": forge(payload=valid_payload(exp=now - 3600)),
        "expired-bool": forge(payload=valid_payload(exp=True)),
        "missing-exp": forge(payload=valid_payload(exp=DROP)),
        "null-exp": forge(payload=valid_payload(exp=None)),
        "exp-not-a-number": forge(payload=valid_payload(exp="tomorrow")),
        "exp-object": forge(payload=valid_payload(exp={"a": 1})),
        "exp-huge": forge(raw_payload=b'{"iss":"%s","exp":1e400}' % KEY.encode()),
        "nbf-future": forge(payload=valid_payload(nbf=now + 3600)),
        "nbf-not-a-number": forge(payload=valid_payload(nbf="soon")),
        "iat-future": forge(payload=valid_payload(iat=now + 3600)),
        "iat-not-a-number": forge(payload=valid_payload(iat=[1])),
        "wrong-issuer": forge(payload=valid_payload(iss="APIother")),
        "missing-issuer": forge(payload=valid_payload(iss=DROP)),
        "issuer-not-string": forge(payload=valid_payload(iss=5)),
        "audience": forge(payload=valid_payload(aud="someone")),
        "audience-list": forge(payload=valid_payload(aud=["a", "b"])),
        "sub-not-string": forge(payload=valid_payload(sub=12)),
        "jti-not-string": forge(payload=valid_payload(jti=12)),
        "bad-room-config": forge(payload=valid_payload(roomConfig={"name": 5})),
        "room-config-wrong-type": forge(payload=valid_payload(roomConfig={"agents": "x"})),
    }


def outcome(verify: Any, token: Any) -> tuple[str, str, Any]:
    try:
        claims = verify(token)
    except Exception as e:  # noqa: BLE001 - the exception is what is compared
        return "raise", type(e).__name__, (type(e), str(e))
    return "ok", "", claims


@pytest.mark.parametrize("name", list(make_tokens()))
def test_same_verdict_as_official(name: str) -> None:
    token = make_tokens()[name]
    ours = outcome(api.TokenVerifier(KEY, SECRET).verify, token)
    theirs = outcome(official.TokenVerifier(KEY, SECRET).verify, token)
    assert ours[0] == theirs[0], (ours, theirs)
    if theirs[0] == "raise":
        their_type, their_msg = theirs[2]
        our_type, our_msg = ours[2]
        # the same class (ours may be a subclass), the same message
        assert issubclass(our_type, their_type), (our_type, their_type)
        assert our_msg == their_msg or their_type.__name__ == "ParseError", (our_msg, their_msg)
        with pytest.raises(AuthError):
            verify_with_keys(token, {KEY: SECRET})
    else:
        assert ours[2].video == ours[2].video.__class__(**vars(theirs[2].video))
        assert ours[2].identity == theirs[2].identity
        claims, _, key = verify_with_keys(token, {KEY: SECRET})
        assert key == KEY and claims.video.room_join


def test_rejections_are_invalid_token_errors() -> None:
    """Callers catch `jwt.InvalidTokenError` for every bad token."""
    verifier = api.TokenVerifier(KEY, SECRET)
    for name, token in make_tokens().items():
        kind, _, detail = outcome(verifier.verify, token)
        if kind == "raise":
            assert issubclass(detail[0], jwt.InvalidTokenError), (name, detail)


@pytest.mark.parametrize("name", [
    "expired", "wrong-secret", "wrong-issuer", "tampered-payload", "alg-none", "missing-exp",
    "flipped-signature", "nbf-future"])
def test_named_rejections(name: str) -> None:
    expected = {
        "expired": (jwt.ExpiredSignatureError, "Signature has expired"),
        "wrong-secret": (jwt.InvalidSignatureError, "Signature verification failed"),
        "wrong-issuer": (jwt.InvalidIssuerError, "Invalid issuer"),
        "tampered-payload": (jwt.InvalidSignatureError, "Signature verification failed"),
        "alg-none": (jwt.InvalidAlgorithmError, "The specified alg value is not allowed"),
        "missing-exp": (jwt.MissingRequiredClaimError, 'Token is missing the "exp" claim'),
        "flipped-signature": (jwt.InvalidSignatureError, "Signature verification failed"),
        "nbf-future": (jwt.ImmatureSignatureError, "The token is not yet valid (nbf)"),
    }[name]
    with pytest.raises(expected[0]) as e:
        api.TokenVerifier(KEY, SECRET).verify(make_tokens()[name])
    assert str(e.value) == expected[1]


def test_server_messages() -> None:
    """verify_with_keys answers what LiveKit's auth middleware answers (server-api.md §2.1)."""
    tokens = make_tokens()

    def message(token: str) -> str:
        with pytest.raises(AuthError) as e:
            verify_with_keys(token, {KEY: SECRET})
        return str(e.value)

    assert message("garbage") == "invalid authorization token"
    assert message(tokens["alg-HS512"]) == "invalid authorization token"
    assert message(tokens["wrong-issuer"]) == "invalid API key"
    assert message(tokens["missing-issuer"]) == "invalid API key"
    assert message(tokens["wrong-secret"]) == "invalid authorization token: Signature verification failed"
    assert message(tokens["expired"]) == "invalid authorization token: Signature has expired"


def test_expired_minted_token_and_leeway() -> None:
    past = api.AccessToken(KEY, SECRET).with_ttl(api.access_token.DEFAULT_LEEWAY * -2).to_jwt()
    with pytest.raises(jwt.ExpiredSignatureError):
        api.TokenVerifier(KEY, SECRET).verify(past)
    with pytest.raises(jwt.ExpiredSignatureError):
        official.TokenVerifier(KEY, SECRET).verify(past)
    import datetime
    lenient = api.TokenVerifier(KEY, SECRET, leeway=datetime.timedelta(minutes=5))
    assert lenient.verify(past).identity == ""
    just_expired = api.AccessToken(KEY, SECRET).with_ttl(datetime.timedelta(seconds=-30)).to_jwt()
    assert api.TokenVerifier(KEY, SECRET).verify(just_expired) is not None  # inside 60 s leeway
    with pytest.raises(jwt.ExpiredSignatureError):
        api.TokenVerifier(KEY, SECRET, leeway=datetime.timedelta(0)).verify(just_expired)


def test_wrong_secret_both_directions() -> None:
    ours = api.AccessToken(KEY, SECRET).with_identity("a").to_jwt()
    theirs = official.AccessToken(KEY, SECRET).with_identity("a").to_jwt()
    for token in (ours, theirs):
        with pytest.raises(jwt.InvalidSignatureError):
            api.TokenVerifier(KEY, SECRET + "!").verify(token)
        with pytest.raises(jwt.InvalidSignatureError):
            official.TokenVerifier(KEY, SECRET + "!").verify(token)
        with pytest.raises(jwt.InvalidIssuerError):
            api.TokenVerifier("APIother", SECRET).verify(token)


def test_unverified_decode_reads_without_checking() -> None:
    expired = make_tokens()["expired"]
    claims = api.TokenVerifier().verify(expired, verify_signature=False)
    assert claims.identity == "alice"
    with pytest.raises(jwt.DecodeError):
        api.TokenVerifier().verify("garbage", verify_signature=False)


def test_asymmetric_key_material_is_refused_as_secret() -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"
    with pytest.raises(jwt.InvalidKeyError):
        api.AccessToken(KEY, pem).to_jwt()
    with pytest.raises(jwt.InvalidKeyError):
        official.AccessToken(KEY, pem).to_jwt()


def test_sign_is_pyjwt_encode() -> None:
    payloads = [
        {}, {"a": 1}, {"ü": "☃", "nested": {"list": [1, 2.5, None, True], "s": "\u2028"}},
        {"big": 2**70, "neg": -1, "f": 1e-7}, {"quote": "\"'\\/<>&"},
    ]
    for p in payloads:
        for secret in ("s", "a-secret-of-at-least-32-characters-long", "ü-secret"):
            assert hs256.sign(p, secret.encode()) == jwt.encode(p, secret, algorithm="HS256")
