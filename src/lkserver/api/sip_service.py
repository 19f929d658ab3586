"""SIP client: trunks, dispatch rules, outbound calls and call transfers.

Every RPC of the `livekit.SIP` Twirp service (16). Trunk and dispatch-rule RPCs carry a token
granting `sip.admin`; CreateSIPParticipant `sip.call`; TransferSIPParticipant `sip.call` plus
`roomAdmin` on the call's room (reference server-api.md §2.6). Method names, signatures, the
`*_fields` partial-update helpers, the deprecated `*_sip_*` aliases and the dialing timeouts are
the official `SipService`'s; `get_inbound_trunk`, `get_outbound_trunk` and the deprecated
`list_sip_trunk` cover the three RPCs the official client has no method for.

```python
async with api.LiveKitAPI("http://127.0.0.1:7880", "devkey", "secret") as lk:
    trunk = await lk.sip.create_outbound_trunk(api.CreateSIPOutboundTrunkRequest(
        trunk=api.SIPOutboundTrunkInfo(name="carrier", address="sip.example.com", numbers=["+15550100"])))
    await lk.sip.create_sip_participant(api.CreateSIPParticipantRequest(
        sip_trunk_id=trunk.sip_trunk_id, sip_call_to="+15550199", room_name="my-room"))
```
"""

from __future__ import annotations

import warnings

import aiohttp
from livekit.protocol.models import ListUpdate
from livekit.protocol.sip import (
    CreateSIPDispatchRuleRequest,
    CreateSIPInboundTrunkRequest,
    CreateSIPOutboundTrunkRequest,
    CreateSIPParticipantRequest,
    DeleteSIPDispatchRuleRequest,
    DeleteSIPTrunkRequest,
    GetSIPInboundTrunkRequest,
    GetSIPInboundTrunkResponse,
    GetSIPOutboundTrunkRequest,
    GetSIPOutboundTrunkResponse,
    ListSIPDispatchRuleRequest,
    ListSIPDispatchRuleResponse,
    ListSIPInboundTrunkRequest,
    ListSIPInboundTrunkResponse,
    ListSIPOutboundTrunkRequest,
    ListSIPOutboundTrunkResponse,
    ListSIPTrunkRequest,
    ListSIPTrunkResponse,
    SIPDispatchRule,
    SIPDispatchRuleInfo,
    SIPDispatchRuleUpdate,
    SIPInboundTrunkInfo,
    SIPInboundTrunkUpdate,
    SIPMediaConfig,
    SIPOutboundConfig,
    SIPOutboundTrunkInfo,
    SIPOutboundTrunkUpdate,
    SIPParticipantInfo,
    SIPTransport,
    SIPTrunkInfo,
    TransferSIPParticipantRequest,
    TransferSIPParticipantResponse,
    UpdateSIPDispatchRuleRequest,
    UpdateSIPInboundTrunkRequest,
    UpdateSIPOutboundTrunkRequest,
)

from ..auth import SIPGrants, VideoGrants
from ._service import Service
from .twirp_client import ServerError, SipCallError

SVC = "SIP"

# Ring window assumed when a dialing request leaves `ringing_timeout` unset (the server's default),
# and how long a dialing request must outlast it so it does not abort before the callee answers.
DEFAULT_RINGING_TIMEOUT = 30.0
RINGING_TIMEOUT_MARGIN = 2.0

DialRequest = CreateSIPParticipantRequest | TransferSIPParticipantRequest


def pin_ringing_timeout(request: DialRequest) -> None:
    """Make the ring window explicit so the request timeout derived from it cannot drift from
    the server's default."""
    if not request.HasField("ringing_timeout"):
        request.ringing_timeout.seconds = int(DEFAULT_RINGING_TIMEOUT)


def dial_timeout(user_timeout: float | None, request: DialRequest) -> float:
    """Seconds a dialing request may take: the ring window plus a margin, or more if asked."""
    ring = (float(request.ringing_timeout.seconds) if request.HasField("ringing_timeout")
            else DEFAULT_RINGING_TIMEOUT)
    floor = ring + RINGING_TIMEOUT_MARGIN
    return max(user_timeout or floor, floor)


def _as_sip_error(err: ServerError) -> ServerError:
    # a failure carrying a SIP status or transfer reason becomes a SipCallError; auth and
    # validation errors stay plain ServerErrors
    if "sip_status_code" in err.metadata or "sip_transfer_reason" in err.metadata:
        return SipCallError.from_server_error(err)
    return err


def _apply_list_update(target: ListUpdate, value: ListUpdate | list[str] | None) -> None:
    # a plain list replaces the whole list; a ListUpdate can also add and remove
    if value is None:
        return
    if isinstance(value, ListUpdate):
        target.set.extend(value.set)
        target.add.extend(value.add)
        target.remove.extend(value.remove)
    else:
        target.set.extend(value)


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated, use {new} instead", DeprecationWarning, stacklevel=3)


class SipService(Service):
    """Client for the SIP API; reach it as `LiveKitAPI(...).sip`."""

    def _admin_headers(self) -> dict[str, str]:
        return self._auth_header(VideoGrants(), sip=SIPGrants(admin=True))

    # --- inbound trunks

    async def create_inbound_trunk(self, create: CreateSIPInboundTrunkRequest) -> SIPInboundTrunkInfo:
        """Create an inbound trunk: which numbers and addresses may call in."""
        return await self._client.request(SVC, "CreateSIPInboundTrunk", create, self._admin_headers(),
                                          SIPInboundTrunkInfo)

    async def get_inbound_trunk(self, get: GetSIPInboundTrunkRequest) -> GetSIPInboundTrunkResponse:
        """One inbound trunk by `sip_trunk_id`."""
        return await self._client.request(SVC, "GetSIPInboundTrunk", get, self._admin_headers(),
                                          GetSIPInboundTrunkResponse)

    async def update_inbound_trunk(self, trunk_id: str, trunk: SIPInboundTrunkInfo) -> SIPInboundTrunkInfo:
        """Replace an inbound trunk entirely."""
        return await self._client.request(
            SVC, "UpdateSIPInboundTrunk",
            UpdateSIPInboundTrunkRequest(sip_trunk_id=trunk_id, replace=trunk),
            self._admin_headers(), SIPInboundTrunkInfo)

    async def update_inbound_trunk_fields(
        self,
        trunk_id: str,
        *,
        numbers: ListUpdate | list[str] | None = None,
        allowed_addresses: ListUpdate | list[str] | None = None,
        allowed_numbers: ListUpdate | list[str] | None = None,
        auth_username: str | None = None,
        auth_password: str | None = None,
        name: str | None = None,
        metadata: str | None = None,
        media: SIPMediaConfig | None = None,
    ) -> SIPInboundTrunkInfo:
        """Update only the given fields of an inbound trunk."""
        update = SIPInboundTrunkUpdate(auth_username=auth_username, auth_password=auth_password,
                                       name=name, metadata=metadata, media=media)
        _apply_list_update(update.numbers, numbers)
        _apply_list_update(update.allowed_addresses, allowed_addresses)
        _apply_list_update(update.allowed_numbers, allowed_numbers)
        return await self._client.request(
            SVC, "UpdateSIPInboundTrunk",
            UpdateSIPInboundTrunkRequest(sip_trunk_id=trunk_id, update=update),
            self._admin_headers(), SIPInboundTrunkInfo)

    async def list_inbound_trunk(self, list: ListSIPInboundTrunkRequest) -> ListSIPInboundTrunkResponse:
        """Inbound trunks, optionally filtered (`trunk_ids`, `numbers`) and paged."""
        return await self._client.request(SVC, "ListSIPInboundTrunk", list, self._admin_headers(),
                                          ListSIPInboundTrunkResponse)

    # --- outbound trunks

    async def create_outbound_trunk(self, create: CreateSIPOutboundTrunkRequest) -> SIPOutboundTrunkInfo:
        """Create an outbound trunk: the carrier address and numbers calls are made from."""
        return await self._client.request(SVC, "CreateSIPOutboundTrunk", create, self._admin_headers(),
                                          SIPOutboundTrunkInfo)

    async def get_outbound_trunk(self, get: GetSIPOutboundTrunkRequest) -> GetSIPOutboundTrunkResponse:
        """One outbound trunk by `sip_trunk_id`."""
        return await self._client.request(SVC, "GetSIPOutboundTrunk", get, self._admin_headers(),
                                          GetSIPOutboundTrunkResponse)

    async def update_outbound_trunk(self, trunk_id: str, trunk: SIPOutboundTrunkInfo) -> SIPOutboundTrunkInfo:
        """Replace an outbound trunk entirely."""
        return await self._client.request(
            SVC, "UpdateSIPOutboundTrunk",
            UpdateSIPOutboundTrunkRequest(sip_trunk_id=trunk_id, replace=trunk),
            self._admin_headers(), SIPOutboundTrunkInfo)

    async def update_outbound_trunk_fields(
        self,
        trunk_id: str,
        *,
        address: str | None = None,
        transport: SIPTransport | None = None,
        numbers: ListUpdate | list[str] | None = None,
        auth_username: str | None = None,
        auth_password: str | None = None,
        name: str | None = None,
        metadata: str | None = None,
        media: SIPMediaConfig | None = None,
    ) -> SIPOutboundTrunkInfo:
        """Update only the given fields of an outbound trunk."""
        update = SIPOutboundTrunkUpdate(address=address, transport=transport,
                                        auth_username=auth_username, auth_password=auth_password,
                                        name=name, metadata=metadata, media=media)
        _apply_list_update(update.numbers, numbers)
        return await self._client.request(
            SVC, "UpdateSIPOutboundTrunk",
            UpdateSIPOutboundTrunkRequest(sip_trunk_id=trunk_id, update=update),
            self._admin_headers(), SIPOutboundTrunkInfo)

    async def list_outbound_trunk(self, list: ListSIPOutboundTrunkRequest) -> ListSIPOutboundTrunkResponse:
        """Outbound trunks, optionally filtered (`trunk_ids`, `numbers`) and paged."""
        return await self._client.request(SVC, "ListSIPOutboundTrunk", list, self._admin_headers(),
                                          ListSIPOutboundTrunkResponse)

    # --- any trunk

    async def list_sip_trunk(self, list: ListSIPTrunkRequest) -> ListSIPTrunkResponse:
        """Legacy trunks (the deprecated ListSIPTrunk RPC).

        .. deprecated:: use `list_inbound_trunk` and `list_outbound_trunk`.
        """
        _deprecated("list_sip_trunk", "list_inbound_trunk or list_outbound_trunk")
        return await self._client.request(SVC, "ListSIPTrunk", list, self._admin_headers(),
                                          ListSIPTrunkResponse)

    async def delete_trunk(self, delete: DeleteSIPTrunkRequest) -> SIPTrunkInfo:
        """Delete an inbound or outbound trunk."""
        return await self._client.request(SVC, "DeleteSIPTrunk", delete, self._admin_headers(),
                                          SIPTrunkInfo)

    # --- dispatch rules

    async def create_dispatch_rule(self, create: CreateSIPDispatchRuleRequest) -> SIPDispatchRuleInfo:
        """Create a rule sending inbound calls to rooms."""
        return await self._client.request(SVC, "CreateSIPDispatchRule", create, self._admin_headers(),
                                          SIPDispatchRuleInfo)

    async def update_dispatch_rule(self, rule_id: str, rule: SIPDispatchRuleInfo) -> SIPDispatchRuleInfo:
        """Replace a dispatch rule entirely."""
        return await self._client.request(
            SVC, "UpdateSIPDispatchRule",
            UpdateSIPDispatchRuleRequest(sip_dispatch_rule_id=rule_id, replace=rule),
            self._admin_headers(), SIPDispatchRuleInfo)

    async def update_dispatch_rule_fields(
        self,
        rule_id: str,
        *,
        trunk_ids: ListUpdate | list[str] | None = None,
        rule: SIPDispatchRule | None = None,
        name: str | None = None,
        metadata: str | None = None,
        attributes: dict[str, str] | None = None,
    ) -> SIPDispatchRuleInfo:
        """Update only the given fields of a dispatch rule."""
        update = SIPDispatchRuleUpdate(name=name, metadata=metadata, rule=rule, attributes=attributes)
        _apply_list_update(update.trunk_ids, trunk_ids)
        return await self._client.request(
            SVC, "UpdateSIPDispatchRule",
            UpdateSIPDispatchRuleRequest(sip_dispatch_rule_id=rule_id, update=update),
            self._admin_headers(), SIPDispatchRuleInfo)

    async def list_dispatch_rule(self, list: ListSIPDispatchRuleRequest) -> ListSIPDispatchRuleResponse:
        """Dispatch rules, optionally filtered and paged."""
        return await self._client.request(SVC, "ListSIPDispatchRule", list, self._admin_headers(),
                                          ListSIPDispatchRuleResponse)

    async def delete_dispatch_rule(self, delete: DeleteSIPDispatchRuleRequest) -> SIPDispatchRuleInfo:
        """Delete a dispatch rule; returns it."""
        return await self._client.request(SVC, "DeleteSIPDispatchRule", delete, self._admin_headers(),
                                          SIPDispatchRuleInfo)

    # --- calls

    async def create_sip_participant(
        self,
        create: CreateSIPParticipantRequest,
        *,
        timeout: float | None = None,
        trunk_id: str | None = None,
        outbound_trunk_config: SIPOutboundConfig | None = None,
    ) -> SIPParticipantInfo:
        """Dial a number and bring the call into a room as a participant.

        With `wait_until_answered` the request lasts until the callee answers: its timeout is
        the ring window plus a margin (at least `timeout`). A SIP failure (busy, no answer)
        raises SipCallError with the SIP status.
        """
        client_timeout: aiohttp.ClientTimeout | None = None
        if create.wait_until_answered:
            pin_ringing_timeout(create)
            client_timeout = aiohttp.ClientTimeout(total=dial_timeout(timeout, create))
        elif timeout:
            client_timeout = aiohttp.ClientTimeout(total=timeout)
        if trunk_id:
            create.sip_trunk_id = trunk_id
        if outbound_trunk_config:
            create.trunk.CopyFrom(outbound_trunk_config)
        try:
            return await self._client.request(
                SVC, "CreateSIPParticipant", create,
                self._auth_header(VideoGrants(), sip=SIPGrants(call=True)),
                SIPParticipantInfo, timeout=client_timeout)
        except ServerError as e:
            raise _as_sip_error(e) from None

    async def transfer_sip_participant(
        self,
        transfer: TransferSIPParticipantRequest,
        *,
        timeout: float | None = None,
    ) -> TransferSIPParticipantResponse:
        """Transfer a SIP participant's call to another number or SIP URI.

        Transferring dials, so the request timeout is the ring window plus a margin (at least
        `timeout`). A status other than successful in the response means the transfer did not
        complete even though nothing was raised.
        """
        pin_ringing_timeout(transfer)
        client_timeout = aiohttp.ClientTimeout(total=dial_timeout(timeout, transfer))
        try:
            return await self._client.request(
                SVC, "TransferSIPParticipant", transfer,
                self._auth_header(VideoGrants(room_admin=True, room=transfer.room_name),
                                  sip=SIPGrants(call=True)),
                TransferSIPParticipantResponse, timeout=client_timeout)
        except ServerError as e:
            raise _as_sip_error(e) from None

    # --- deprecated names, kept for code written against older official SDKs

    async def create_sip_inbound_trunk(self, create: CreateSIPInboundTrunkRequest) -> SIPInboundTrunkInfo:
        """.. deprecated:: use `create_inbound_trunk`."""
        _deprecated("create_sip_inbound_trunk", "create_inbound_trunk")
        return await self.create_inbound_trunk(create)

    async def update_sip_inbound_trunk(self, trunk_id: str, trunk: SIPInboundTrunkInfo) -> SIPInboundTrunkInfo:
        """.. deprecated:: use `update_inbound_trunk`."""
        _deprecated("update_sip_inbound_trunk", "update_inbound_trunk")
        return await self.update_inbound_trunk(trunk_id, trunk)

    async def update_sip_inbound_trunk_fields(
        self,
        trunk_id: str,
        *,
        numbers: list[str] | None = None,
        allowed_addresses: list[str] | None = None,
        allowed_numbers: list[str] | None = None,
        auth_username: str | None = None,
        auth_password: str | None = None,
        name: str | None = None,
        metadata: str | None = None,
    ) -> SIPInboundTrunkInfo:
        """.. deprecated:: use `update_inbound_trunk_fields`."""
        _deprecated("update_sip_inbound_trunk_fields", "update_inbound_trunk_fields")
        return await self.update_inbound_trunk_fields(
            trunk_id, numbers=numbers, allowed_addresses=allowed_addresses,
            allowed_numbers=allowed_numbers, auth_username=auth_username,
            auth_password=auth_password, name=name, metadata=metadata)

    async def create_sip_outbound_trunk(self, create: CreateSIPOutboundTrunkRequest) -> SIPOutboundTrunkInfo:
        """.. deprecated:: use `create_outbound_trunk`."""
        _deprecated("create_sip_outbound_trunk", "create_outbound_trunk")
        return await self.create_outbound_trunk(create)

    async def update_sip_outbound_trunk(self, trunk_id: str, trunk: SIPOutboundTrunkInfo) -> SIPOutboundTrunkInfo:
        """.. deprecated:: use `update_outbound_trunk`."""
        _deprecated("update_sip_outbound_trunk", "update_outbound_trunk")
        return await self.update_outbound_trunk(trunk_id, trunk)

    async def update_sip_outbound_trunk_fields(
        self,
        trunk_id: str,
        *,
        address: str | None = None,
        transport: SIPTransport | None = None,
        numbers: list[str] | None = None,
        auth_username: str | None = None,
        auth_password: str | None = None,
        name: str | None = None,
        metadata: str | None = None,
    ) -> SIPOutboundTrunkInfo:
        """.. deprecated:: use `update_outbound_trunk_fields`."""
        _deprecated("update_sip_outbound_trunk_fields", "update_outbound_trunk_fields")
        return await self.update_outbound_trunk_fields(
            trunk_id, address=address, transport=transport, numbers=numbers,
            auth_username=auth_username, auth_password=auth_password, name=name, metadata=metadata)

    async def list_sip_inbound_trunk(self, list: ListSIPInboundTrunkRequest) -> ListSIPInboundTrunkResponse:
        """.. deprecated:: use `list_inbound_trunk`."""
        _deprecated("list_sip_inbound_trunk", "list_inbound_trunk")
        return await self.list_inbound_trunk(list)

    async def list_sip_outbound_trunk(self, list: ListSIPOutboundTrunkRequest) -> ListSIPOutboundTrunkResponse:
        """.. deprecated:: use `list_outbound_trunk`."""
        _deprecated("list_sip_outbound_trunk", "list_outbound_trunk")
        return await self.list_outbound_trunk(list)

    async def delete_sip_trunk(self, delete: DeleteSIPTrunkRequest) -> SIPTrunkInfo:
        """.. deprecated:: use `delete_trunk`."""
        _deprecated("delete_sip_trunk", "delete_trunk")
        return await self.delete_trunk(delete)

    async def create_sip_dispatch_rule(self, create: CreateSIPDispatchRuleRequest) -> SIPDispatchRuleInfo:
        """.. deprecated:: use `create_dispatch_rule`."""
        _deprecated("create_sip_dispatch_rule", "create_dispatch_rule")
        return await self.create_dispatch_rule(create)

    async def update_sip_dispatch_rule(self, rule_id: str, rule: SIPDispatchRuleInfo) -> SIPDispatchRuleInfo:
        """.. deprecated:: use `update_dispatch_rule`."""
        _deprecated("update_sip_dispatch_rule", "update_dispatch_rule")
        return await self.update_dispatch_rule(rule_id, rule)

    async def update_sip_dispatch_rule_fields(
        self,
        rule_id: str,
        *,
        trunk_ids: list[str] | None = None,
        rule: SIPDispatchRule | None = None,
        name: str | None = None,
        metadata: str | None = None,
        attributes: dict[str, str] | None = None,
    ) -> SIPDispatchRuleInfo:
        """.. deprecated:: use `update_dispatch_rule_fields`."""
        _deprecated("update_sip_dispatch_rule_fields", "update_dispatch_rule_fields")
        return await self.update_dispatch_rule_fields(
            rule_id, trunk_ids=trunk_ids, rule=rule, name=name, metadata=metadata, attributes=attributes)

    async def list_sip_dispatch_rule(self, list: ListSIPDispatchRuleRequest) -> ListSIPDispatchRuleResponse:
        """.. deprecated:: use `list_dispatch_rule`."""
        _deprecated("list_sip_dispatch_rule", "list_dispatch_rule")
        return await self.list_dispatch_rule(list)

    async def delete_sip_dispatch_rule(self, delete: DeleteSIPDispatchRuleRequest) -> SIPDispatchRuleInfo:
        """.. deprecated:: use `delete_dispatch_rule`."""
        _deprecated("delete_sip_dispatch_rule", "delete_dispatch_rule")
        return await self.delete_dispatch_rule(delete)
