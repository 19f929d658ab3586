"""Ingress client: bring RTMP, WHIP and URL streams into rooms.

Every RPC of the `livekit.Ingress` Twirp service, each with a token granting `ingressAdmin`
(reference server-api.md §2.6), method for method as the official `IngressService`.

```python
async with api.LiveKitAPI("http://127.0.0.1:7880", "devkey", "secret") as lk:
    info = await lk.ingress.create_ingress(api.CreateIngressRequest(
        input_type=api.IngressInput.RTMP_INPUT, room_name="my-room", participant_identity="obs"))
    print(info.url, info.stream_key)
```
"""

from __future__ import annotations

from livekit.protocol.ingress import (
    CreateIngressRequest,
    DeleteIngressRequest,
    IngressInfo,
    ListIngressRequest,
    ListIngressResponse,
    UpdateIngressRequest,
)

from ..auth import VideoGrants
from ._service import Service

SVC = "Ingress"


class IngressService(Service):
    """Client for the Ingress API; reach it as `LiveKitAPI(...).ingress`."""

    def _admin(self) -> dict[str, str]:
        return self._auth_header(VideoGrants(ingress_admin=True))

    async def create_ingress(self, create: CreateIngressRequest) -> IngressInfo:
        """Create an ingress endpoint (RTMP or WHIP) or start pulling a URL into a room."""
        return await self._client.request(SVC, "CreateIngress", create, self._admin(), IngressInfo)

    async def update_ingress(self, update: UpdateIngressRequest) -> IngressInfo:
        """Change a reusable ingress; only the fields that are set are applied."""
        return await self._client.request(SVC, "UpdateIngress", update, self._admin(), IngressInfo)

    async def list_ingress(self, list: ListIngressRequest) -> ListIngressResponse:
        """Ingresses, filtered by `room_name` or `ingress_id`."""
        return await self._client.request(SVC, "ListIngress", list, self._admin(), ListIngressResponse)

    async def delete_ingress(self, delete: DeleteIngressRequest) -> IngressInfo:
        """Stop an ingress if it is active and delete it."""
        return await self._client.request(SVC, "DeleteIngress", delete, self._admin(), IngressInfo)
