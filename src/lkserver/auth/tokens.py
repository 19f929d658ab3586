"""Access tokens: minting (AccessToken), verification (TokenVerifier) and the server's key lookup.

HS256 JWTs as LiveKit issues and checks them (protocol auth/accesstoken.go, auth/verifier.go):
`iss` is the API key that selects the secret, `exp` is required, 60 s of leeway on `exp`/`nbf`,
identity from `sub` (falling back to `jti`). The server path (`verify_with_keys`) reproduces the
error messages of LiveKit's auth middleware (pkg/service/auth.go).
"""

from __future__ import annotations

import calendar
import datetime
import os
from typing import Any, Literal, Mapping, Optional

import jwt

from .grants import Claims, SIPGrants, VideoGrants, parse_claims
from livekit.protocol.room import RoomConfiguration

DEFAULT_TTL = datetime.timedelta(hours=6)
DEFAULT_LEEWAY = datetime.timedelta(minutes=1)

ParticipantKind = Literal["standard", "egress", "ingress", "sip", "agent"]


class AuthError(Exception):
    """A token was rejected; `str(err)` is the message LiveKit's middleware answers with."""


class AccessToken:
    """Builds a signed access token; drop-in for `livekit.api.AccessToken`.

    >>> token = (AccessToken("devkey", "secret")
    ...          .with_identity("alice")
    ...          .with_grants(VideoGrants(room_join=True, room="my-room"))
    ...          .to_jwt())
    """

    ParticipantKind = ParticipantKind

    def __init__(self, api_key: Optional[str] = None, api_secret: Optional[str] = None) -> None:
        api_key = api_key or os.getenv("LIVEKIT_API_KEY")
        api_secret = api_secret or os.getenv("LIVEKIT_API_SECRET")
        if not api_key or not api_secret:
            raise ValueError("api_key and api_secret must be set")
        self.api_key = api_key
        self.api_secret = api_secret
        self.claims = Claims()
        self.identity = ""
        self.ttl = DEFAULT_TTL

    def with_ttl(self, ttl: datetime.timedelta) -> "AccessToken":
        self.ttl = ttl
        return self

    def with_grants(self, grants: VideoGrants) -> "AccessToken":
        self.claims.video = grants
        return self

    def with_sip_grants(self, grants: SIPGrants) -> "AccessToken":
        self.claims.sip = grants
        return self

    def with_observability_grants(self, grants: Any) -> "AccessToken":
        self.claims.observability = grants
        return self

    def with_inference_grants(self, grants: Any) -> "AccessToken":
        self.claims.inference = grants
        return self

    def with_agent_grants(self, grants: Any) -> "AccessToken":
        self.claims.agent = grants
        return self

    def with_agent_endpoint_grants(self, grants: Any) -> "AccessToken":
        self.claims.agent_endpoint = grants
        return self

    def with_agent_thread_grants(self, grants: Any) -> "AccessToken":
        self.claims.agent_thread = grants
        return self

    def with_identity(self, identity: str) -> "AccessToken":
        self.identity = identity
        return self

    def with_kind(self, kind: ParticipantKind) -> "AccessToken":
        self.claims.kind = kind
        return self

    def with_name(self, name: str) -> "AccessToken":
        self.claims.name = name
        return self

    def with_metadata(self, metadata: str) -> "AccessToken":
        self.claims.metadata = metadata
        return self

    def with_attributes(self, attributes: dict[str, str]) -> "AccessToken":
        self.claims.attributes = attributes
        return self

    def with_sha256(self, sha256: str) -> "AccessToken":
        self.claims.sha256 = sha256
        return self

    def with_room_preset(self, preset: str) -> "AccessToken":
        self.claims.room_preset = preset
        return self

    def with_room_config(self, config: RoomConfiguration) -> "AccessToken":
        self.claims.room_config = config
        return self

    def to_jwt(self) -> str:
        video = self.claims.video
        if video and video.room_join and (not self.identity or not video.room):
            raise ValueError("identity and room must be set when joining a room")
        payload = self.claims.asdict()
        now = datetime.datetime.now(datetime.timezone.utc)
        payload["sub"] = self.identity
        payload["iss"] = self.api_key
        payload["nbf"] = calendar.timegm(now.utctimetuple())
        payload["exp"] = calendar.timegm((now + self.ttl).utctimetuple())
        return jwt.encode(payload, self.api_secret, algorithm="HS256")


class TokenVerifier:
    """Verifies a token signed with one API key; drop-in for `livekit.api.TokenVerifier`."""

    def __init__(
        self,
        api_key: Optional[str] = None,
        api_secret: Optional[str] = None,
        *,
        leeway: datetime.timedelta = DEFAULT_LEEWAY,
    ) -> None:
        self.api_key = api_key or os.getenv("LIVEKIT_API_KEY")
        self.api_secret = api_secret or os.getenv("LIVEKIT_API_SECRET")
        self._leeway = leeway

    def verify(self, token: str, *, verify_signature: bool = True) -> Claims:
        """Claims of a valid token; raises `jwt.InvalidTokenError` subclasses otherwise."""
        if verify_signature and (not self.api_key or not self.api_secret):
            raise ValueError("api_key and api_secret must be set")
        payload = jwt.decode(
            token,
            key=self.api_secret or "",
            issuer=self.api_key or "",
            algorithms=["HS256"],
            leeway=self._leeway.total_seconds(),
            options={"verify_signature": verify_signature, "require": ["exp"]}
            if verify_signature else {"verify_signature": False},
        )
        return parse_claims(payload)


def verify_with_keys(
    token: str, keys: Mapping[str, str], leeway: float = DEFAULT_LEEWAY.total_seconds()
) -> tuple[Claims, dict[str, Any], str]:
    """Verify a token against the server's key set; returns (claims, raw payload, api key).

    Raises AuthError with the message LiveKit's auth middleware gives for each failure.
    """
    try:
        header = jwt.get_unverified_header(token)
        if header.get("alg") != "HS256":
            raise AuthError("invalid authorization token")
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise AuthError("invalid authorization token") from None
    api_key = unverified.get("iss")
    secret = keys.get(api_key) if isinstance(api_key, str) else None
    if secret is None:
        raise AuthError("invalid API key")
    try:
        payload = jwt.decode(
            token, key=secret, algorithms=["HS256"], issuer=api_key, leeway=leeway,
            options={"require": ["exp"]},
        )
        claims = parse_claims(payload)
    except jwt.InvalidTokenError as e:
        raise AuthError(f"invalid authorization token: {e}") from None
    except (TypeError, ValueError) as e:
        raise AuthError(f"invalid authorization token: {e}") from None
    return claims, payload, api_key
