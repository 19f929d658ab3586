"""Grants, claims and tokens: shared by the server (verification, webhook signing) and the client
SDK (minting, verification)."""

from .grants import (
    AgentEndpointGrants,
    AgentGrants,
    AgentThreadGrants,
    Claims,
    InferenceGrants,
    ObservabilityGrants,
    SIPGrants,
    VideoGrants,
    camel_to_snake,
    parse_claims,
    snake_to_lower_camel,
)
from .tokens import (
    DEFAULT_LEEWAY,
    DEFAULT_TTL,
    AccessToken,
    AuthError,
    TokenVerifier,
    verify_with_keys,
    webhook_token,
)

__all__ = [
    "DEFAULT_LEEWAY",
    "DEFAULT_TTL",
    "AccessToken",
    "AgentEndpointGrants",
    "AgentGrants",
    "AgentThreadGrants",
    "AuthError",
    "Claims",
    "InferenceGrants",
    "ObservabilityGrants",
    "SIPGrants",
    "TokenVerifier",
    "VideoGrants",
    "camel_to_snake",
    "parse_claims",
    "snake_to_lower_camel",
    "verify_with_keys",
    "webhook_token",
]
