"""lkserver's Python server SDK: the `livekit.api` surface (`from lkserver import api`).

Manage rooms, participants, egress, ingress, SIP, and agent dispatch; mint and verify access
tokens; receive webhooks. Primary entry point is `LiveKitAPI`. Messages are the official
`livekit-protocol` protobufs, re-exported here (and as `proto_room`, `proto_egress`, ... modules)
as the official SDK does.

```python
from lkserver import api

token = (api.AccessToken("devkey", "secret").with_identity("alice")
         .with_grants(api.VideoGrants(room_join=True, room="my-room")).to_jwt())

async with api.LiveKitAPI("http://127.0.0.1:7880", "devkey", "secret") as lk:
    rooms = await lk.room.list_rooms(api.ListRoomsRequest())
```
"""

from livekit.protocol import agent_dispatch as proto_agent_dispatch
from livekit.protocol import egress as proto_egress
from livekit.protocol import ingress as proto_ingress
from livekit.protocol import models as proto_models
from livekit.protocol import room as proto_room
from livekit.protocol import sip as proto_sip
from livekit.protocol import webhook as proto_webhook
from livekit.protocol.agent import *
from livekit.protocol.agent_dispatch import *
from livekit.protocol.connector_twilio import *
from livekit.protocol.connector_whatsapp import *
from livekit.protocol.egress import *
from livekit.protocol.ingress import *
from livekit.protocol.models import *
from livekit.protocol.room import *
from livekit.protocol.sip import *
from livekit.protocol.webhook import *

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
from . import (
    access_token,
    agent_dispatch_service,
    egress_service,
    ingress_service,
    room_service,
    sip_service,
    version,
    webhook,
)
from .agent_dispatch_service import AgentDispatchService
from .egress_service import EgressService
from .ingress_service import IngressService
from .livekit_api import LiveKitAPI
from .room_service import RoomService
from .sip_service import SipService
from .twirp_client import ServerError, ServerErrorCode, SipCallError, TwirpError, TwirpErrorCode
from .version import __version__
from .webhook import (
    HashMismatchError,
    MissingSha256Error,
    WebhookError,
    WebhookParseError,
    WebhookReceiver,
)

__all__ = [
    "AccessToken",
    "AgentDispatchService",
    "AgentEndpointGrants",
    "AgentGrants",
    "AgentThreadGrants",
    "Claims",
    "EgressService",
    "HashMismatchError",
    "InferenceGrants",
    "IngressService",
    "LiveKitAPI",
    "MissingSha256Error",
    "ObservabilityGrants",
    "RoomService",
    "SIPGrants",
    "ServerError",
    "ServerErrorCode",
    "SipCallError",
    "SipService",
    "TokenVerifier",
    "TwirpError",
    "TwirpErrorCode",
    "VideoGrants",
    "WebhookError",
    "WebhookParseError",
    "WebhookReceiver",
    "__version__",
    "access_token",
    "agent_dispatch_service",
    "egress_service",
    "ingress_service",
    "proto_agent_dispatch",
    "proto_egress",
    "proto_ingress",
    "proto_models",
    "proto_room",
    "proto_sip",
    "proto_webhook",
    "room_service",
    "sip_service",
    "version",
    "webhook",
]
