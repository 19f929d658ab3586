"""lkserver's Python server SDK: the `livekit.api` surface (`from lkserver import api`).

Manage rooms, participants, egress, ingress, SIP, and agent dispatch. Primary entry point is
`LiveKitAPI`. Messages are the official `livekit-protocol` protobufs.
"""

from livekit.protocol import agent_dispatch as proto_agent_dispatch
from livekit.protocol import egress as proto_egress
from livekit.protocol import ingress as proto_ingress
from livekit.protocol import models as proto_models
from livekit.protocol import room as proto_room
from livekit.protocol import sip as proto_sip
from livekit.protocol import webhook as proto_webhook
from livekit.protocol.agent_dispatch import *  # noqa: F401,F403
from livekit.protocol.egress import *  # noqa: F401,F403
from livekit.protocol.ingress import *  # noqa: F401,F403
from livekit.protocol.models import *  # noqa: F401,F403
from livekit.protocol.room import *  # noqa: F401,F403
from livekit.protocol.sip import *  # noqa: F401,F403
from livekit.protocol.webhook import *  # noqa: F401,F403

from ..auth import (
    AccessToken,
    AgentEndpointGrants,
    AgentGrants,
    AgentThreadGrants,
    Claims,
    InferenceGrants,
    ObservabilityGrants,
    SIPGrants,
    TokenVerifier,
    VideoGrants,
)
from .livekit_api import LiveKitAPI
from .twirp_client import ServerError, ServerErrorCode, TwirpError, TwirpErrorCode

__all__ = [
    "AccessToken", "AgentEndpointGrants", "AgentGrants", "AgentThreadGrants", "Claims",
    "InferenceGrants", "LiveKitAPI", "ObservabilityGrants", "SIPGrants", "ServerError",
    "ServerErrorCode", "TokenVerifier", "TwirpError", "TwirpErrorCode", "VideoGrants",
    "proto_agent_dispatch", "proto_egress", "proto_ingress", "proto_models", "proto_room",
    "proto_sip", "proto_webhook",
]
