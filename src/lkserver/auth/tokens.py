"""Access tokens: minting (AccessToken), verification (TokenVerifier) and the server's key lookup.

HS256 JWTs as LiveKit issues and checks them (protocol auth/accesstoken.go, auth/verifier.go):
`iss` is the API key that selects the secret, `exp` is required, 60 s of leeway on `exp`/`nbf`,
identity from `sub` (falling back to `jti`). AccessToken and TokenVerifier are drop-ins for the
official `livekit.api` ones: the same builder API, byte-identical claim JSON, the same PyJWT
exceptions on rejection (signing and checking are done by `hs256`, which mirrors PyJWT). The
server path (`verify_with_keys`) reproduces the error messages of LiveKit's auth middleware
(pkg/service/auth.go).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import time
from collections.abc import Mapping
from typing import Any, Literal

import jwt
from livekit.protocol.room import RoomConfiguration

from . import hs256
from .grants import (
    AgentEndpointGrants,
    AgentGrants,
    AgentThreadGrants,
    Claims,
    InferenceGrants,
    ObservabilityGrants,
    SIPGrants,
    VideoGrants,
    parse_claims,
)

DEFAULT_TTL = datetime.timedelta(hours=6)
DEFAULT_LEEWAY = datetime.timedelta(minutes=1)
_MICROSECOND = datetime.timedelta(microseconds=1)

_Kind = Literal["standard", "egress", "ingress", "sip", "agent"]
ParticipantKind = _Kind

# the wall clock tokens are minted against (tests pin it to compare with the official SDK)
_clock_ns = time.time_ns


class AuthError(Exception):
    """A token was rejected; `str(err)` is the message LiveKit's middleware answers with."""


class AccessToken:
    """Builds a signed access token; drop-in for `livekit.api.AccessToken`.

    >>> token = (AccessToken("devkey", "secret")
    ...          .with_identity("alice")
    ...          .with_grants(VideoGrants(room_join=True, room="my-room"))
    ...          .to_jwt())

    The key and secret default to LIVEKIT_API_KEY / LIVEKIT_API_SECRET (ValueError when neither
    is there). Every `with_*` sets one claim and returns the token, so calls chain:
    `with_identity` (`sub`), `with_name`, `with_kind` ("standard", "egress", "ingress", "sip",
    "agent"), `with_metadata`, `with_attributes`, `with_grants` (VideoGrants),
    `with_sip_grants`, `with_room_preset`, `with_room_config` (a RoomConfiguration: the room
    created on join), `with_sha256` (a body's base64 SHA-256, for webhooks), `with_ttl`
    (default 6 h), and the agent/inference/observability grants. For the same inputs and
    instant, `to_jwt()` returns exactly the official SDK's string.
    """

    ParticipantKind = ParticipantKind

    def __init__(self, api_key: str | None = None, api_secret: str | None = None) -> None:
        api_key = api_key or os.getenv("LIVEKIT_API_KEY")
        api_secret = api_secret or os.getenv("LIVEKIT_API_SECRET")
        if not api_key or not api_secret:
            raise ValueError("api_key and api_secret must be set")
        self.api_key = api_key
        self.api_secret = api_secret
        self.claims = Claims()
        self.identity = ""
        self.ttl = DEFAULT_TTL

    def with_ttl(self, ttl: datetime.timedelta) -> AccessToken:
        self.ttl = ttl
        return self

    def with_grants(self, grants: VideoGrants) -> AccessToken:
        self.claims.video = grants
        return self

    def with_sip_grants(self, grants: SIPGrants) -> AccessToken:
        self.claims.sip = grants
        return self

    def with_observability_grants(self, grants: ObservabilityGrants) -> AccessToken:
        self.claims.observability = grants
        return self

    def with_inference_grants(self, grants: InferenceGrants) -> AccessToken:
        self.claims.inference = grants
        return self

    def with_agent_grants(self, grants: AgentGrants) -> AccessToken:
        self.claims.agent = grants
        return self

    def with_agent_endpoint_grants(self, grants: AgentEndpointGrants) -> AccessToken:
        self.claims.agent_endpoint = grants
        return self

    def with_agent_thread_grants(self, grants: AgentThreadGrants) -> AccessToken:
        self.claims.agent_thread = grants
        return self

    def with_identity(self, identity: str) -> AccessToken:
        self.identity = identity
        return self

    def with_kind(self, kind: _Kind) -> AccessToken:
        self.claims.kind = kind
        return self

    def with_name(self, name: str) -> AccessToken:
        self.claims.name = name
        return self

    def with_metadata(self, metadata: str) -> AccessToken:
        self.claims.metadata = metadata
        return self

    def with_attributes(self, attributes: dict[str, str]) -> AccessToken:
        self.claims.attributes = attributes
        return self

    def with_sha256(self, sha256: str) -> AccessToken:
        self.claims.sha256 = sha256
        return self

    def with_room_preset(self, preset: str) -> AccessToken:
        self.claims.room_preset = preset
        return self

    def with_room_config(self, config: RoomConfiguration) -> AccessToken:
        self.claims.room_config = config
        return self

    def to_jwt(self) -> str:
        """The signed token: the claims plus `sub` (identity, "" when unset), `iss`, `nbf`, `exp`.

        Raises ValueError when `room_join` is granted without an identity or a room.
        """
        video = self.claims.video
        if video and video.room_join and (not self.identity or not video.room):
            raise ValueError("identity and room must be set when joining a room")
        if not isinstance(self.api_key, str):
            raise TypeError("Issuer (iss) must be a string.")
        payload = self.claims.asdict()
        # whole seconds, floored, exactly as calendar.timegm(datetime.now(utc).utctimetuple())
        now_us = _clock_ns() // 1000
        payload["sub"] = self.identity
        payload["iss"] = self.api_key
        payload["nbf"] = now_us // 1_000_000
        payload["exp"] = (now_us + self.ttl // _MICROSECOND) // 1_000_000
        return hs256.sign(payload, hs256.hmac_key(self.api_secret))


class TokenVerifier:
    """Verifies a token signed with one API key; drop-in for `livekit.api.TokenVerifier`.

    >>> claims = TokenVerifier("devkey", "secret").verify(token)
    >>> claims.identity, claims.video.room
    ('alice', 'my-room')

    A bad token raises the PyJWT exception the official SDK raises (all `jwt.InvalidTokenError`):
    `InvalidSignatureError` for a wrong secret, `ExpiredSignatureError` past `exp` + leeway,
    `InvalidIssuerError` for another API key, `MissingRequiredClaimError` without `exp`,
    `DecodeError` for anything that is not a JWT.
    """

    def __init__(
        self,
        api_key: str | None = None,
        api_secret: str | None = None,
        *,
        leeway: datetime.timedelta = DEFAULT_LEEWAY,
    ) -> None:
        self.api_key = api_key or os.getenv("LIVEKIT_API_KEY")
        self.api_secret = api_secret or os.getenv("LIVEKIT_API_SECRET")
        self._leeway = leeway
        self._key_of: tuple[Any, bytes] = (None, b"")

    def _hmac_key(self, secret: str | bytes) -> bytes:
        # api_secret is a public attribute: re-derive the key only when it changes
        cached_secret, key = self._key_of
        if cached_secret is not secret:
            key = hs256.hmac_key(secret)
            self._key_of = (secret, key)
        return key

    def verify(self, token: str, *, verify_signature: bool = True) -> Claims:
        """Claims of a valid token; raises `jwt.InvalidTokenError` subclasses otherwise.

        `verify_signature=False` decodes without any check (for inspection only).
        """
        if not verify_signature:
            return parse_claims(hs256.decode_unverified(token))
        if not self.api_key or not self.api_secret:
            raise ValueError("api_key and api_secret must be set")
        payload = hs256.decode(token, self._hmac_key(self.api_secret), issuer=self.api_key,
                               leeway=self._leeway.total_seconds())
        return parse_claims(payload)


def verify_with_keys(
    token: str, keys: Mapping[str, str], leeway: float = DEFAULT_LEEWAY.total_seconds()
) -> tuple[Claims, dict[str, Any], str]:
    """Verify a token against the server's key set; returns (claims, raw payload, api key).

    Raises AuthError with the message LiveKit's auth middleware gives for each failure.
    """
    try:
        parsed = hs256.parse(token)
        if parsed.header.get("alg") != hs256.ALGORITHM:
            raise AuthError("invalid authorization token")
        payload = parsed.payload()
    except jwt.PyJWTError:
        raise AuthError("invalid authorization token") from None
    api_key = payload.get("iss")
    secret = keys.get(api_key) if isinstance(api_key, str) else None
    if secret is None or not isinstance(api_key, str):
        raise AuthError("invalid API key")
    try:
        parsed.verify_signature(hs256.hmac_key(secret))
        hs256.validate_claims(payload, issuer=api_key, leeway=leeway)
        claims = parse_claims(payload)
    except (jwt.PyJWTError, TypeError, ValueError) as e:
        raise AuthError(f"invalid authorization token: {e}") from None
    return claims, payload, api_key


WEBHOOK_TOKEN_TTL = datetime.timedelta(minutes=5)


def webhook_token(body: bytes, api_key: str, api_secret: str,
                  ttl: datetime.timedelta = WEBHOOK_TOKEN_TTL) -> str:
    """The `Authorization` value a LiveKit server sends with a webhook `body` (the raw JWT, no
    `Bearer `): `iss`, `nbf` = `iat` = now, `exp` = now + 5 min, `sha256` = base64 SHA-256 of
    the exact body bytes, no `sub` and no grants; keys sorted as Go's encoder writes them
    (reference server-api.md §5.2). WebhookReceiver of either official SDK accepts it.
    """
    now = _clock_ns() // 1_000_000_000
    payload = {
        "exp": now + int(ttl.total_seconds()),
        "iat": now,
        "iss": api_key,
        "nbf": now,
        "sha256": base64.b64encode(hashlib.sha256(body).digest()).decode("ascii"),
    }
    return hs256.sign(payload, hs256.hmac_key(api_secret))
