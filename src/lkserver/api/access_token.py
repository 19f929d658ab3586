"""`livekit.api.access_token` under its official name: grants, claims and tokens from `lkserver.auth`.

There is one implementation, shared with the server; this module only gives it the import path
code written for the official SDK uses (`from livekit.api.access_token import VideoGrants`).
"""

from ..auth.grants import (
    AgentEndpointGrants,
    AgentGrants,
    AgentThreadGrants,
    Claims,
    InferenceGrants,
    ObservabilityGrants,
    SIPGrants,
    VideoGrants,
    camel_to_snake,
    snake_to_lower_camel,
)
from ..auth.tokens import DEFAULT_LEEWAY, DEFAULT_TTL, AccessToken, TokenVerifier

__all__ = [
    "DEFAULT_LEEWAY",
    "DEFAULT_TTL",
    "AccessToken",
    "AgentEndpointGrants",
    "AgentGrants",
    "AgentThreadGrants",
    "Claims",
    "InferenceGrants",
    "ObservabilityGrants",
    "SIPGrants",
    "TokenVerifier",
    "VideoGrants",
    "camel_to_snake",
    "snake_to_lower_camel",
]
