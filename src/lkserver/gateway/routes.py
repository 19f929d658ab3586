"""The tenant REST gateway under `/livekit/`: many tenants share one server, each sees only its
own rooms. Routes and shapes as SaynaAI/sayna (reference media-services.md §5.1, seed "tenant REST
gateway"); the room work goes through this server's RoomService, as sayna goes through LiveKit's.

    GET    /livekit/rooms               {rooms: [{name, num_participants, creation_time}]}
    GET    /livekit/rooms/{room_name}   the room and its participants; another tenant's: 404
    POST   /livekit/token               create or open the tenant's room, then a join-only token
    DELETE /livekit/participant         remove a participant of one of the tenant's rooms
    POST   /livekit/participant/mute    mute or unmute a track in one of the tenant's rooms

Fixed from the anchor (§5 "gaps worth not copying"): tokens carry roomJoin for one room and
nothing else (no roomList, roomCreate, roomRecord, roomAdmin, canUpdateOwnMetadata), so a tenant
token cannot reach the RoomService; a room without an `auth_id` is never claimed; every route
checks ownership, and another tenant's room answers the same 404 as a missing one. Beyond the
anchor: a tenant keeps a room name while its tokens for it may be valid (leases.py), and a room
such a token re-creates (auto_create) carries the tenant's `auth_id`. Errors are JSON
`{"error", "code"}`; 500 only when the room service itself fails.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from livekit.protocol import room as proto
from livekit.protocol.models import ParticipantInfo, Room
from livekit.protocol.room import RoomConfiguration

from ..auth import AccessToken, Claims, VideoGrants
from ..config import GatewaySettings, LimitSettings
from ..logs import get_logger
from ..services.context import RequestContext
from ..twirp import TwirpError
from ..twirp.errors import PSRPC_PREFIX
from .leases import NameLeases
from .rest import (
    BadBody,
    bool_field,
    error,
    json_response,
    raw_path,
    read_json_object,
    string_field,
)
from .tenants import AuthError, Tenants, tagged, visible

log = get_logger("lkserver.gateway")

PREFIX = "/livekit/"

# what a RoomService failure means to a gateway caller: (status, code); anything else is 500
TWIRP_STATUS = {
    "invalid_argument": (400, "INVALID_REQUEST"),
    "malformed": (400, "INVALID_REQUEST"),
    "out_of_range": (400, "INVALID_REQUEST"),
    "failed_precondition": (409, "FAILED_PRECONDITION"),
    "resource_exhausted": (429, "RESOURCE_EXHAUSTED"),
}


class RoomServiceFailed(Exception):
    """The room service failed in a way the caller cannot fix (HTTP 500)."""


class Gateway:
    def __init__(self, settings: GatewaySettings, room_service: Any, keys: dict[str, str],
                 limits: LimitSettings, kv: Any) -> None:
        self.settings = settings
        self.leases = NameLeases(kv)
        self.rooms = room_service
        self.key, self.secret = next(iter(keys.items()))
        self.limits = limits
        self.tenants = Tenants(settings.tenants, settings.auth_required)
        self.routes: dict[tuple[str, str], Callable[[web.Request, str | None], Awaitable[web.Response]]] = {
            ("GET", "rooms"): self.list_rooms,
            ("POST", "token"): self.token,
            ("DELETE", "participant"): self.remove_participant,
            ("POST", "participant/mute"): self.mute,
        }

    # -- dispatch --------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self.settings.enabled:
            return error(404, "NOT_FOUND", "the tenant gateway is off (gateway.enabled in the config)")
        path = raw_path(request)[len(PREFIX):]
        if path.startswith("rooms/") and len(path) > len("rooms/") and "/" not in path[len("rooms/"):]:
            allowed = ("GET",)
            handler: Any = self.get_room
        else:
            allowed = tuple(m for m, p in self.routes if p == path)
            if not allowed:
                return error(404, "NOT_FOUND", "no such route")
            handler = self.routes.get((request.method, path))
        if request.method not in allowed:
            return error(405, "METHOD_NOT_ALLOWED", f"use {', '.join(allowed)}",
                         headers={"Allow": ", ".join(allowed)})
        try:
            tenant = self.tenants.identify(request.headers.get("Authorization"),
                                           request.query.get("api_key"))
        except AuthError as e:
            return error(401, e.code, e.message)
        try:
            return await handler(request, tenant)
        except BadBody as e:
            return error(400, "INVALID_REQUEST", str(e))
        except RoomServiceFailed as e:
            return error(500, "ROOM_SERVICE_FAILED", str(e))

    # -- the room service ----------------------------------------------------------------------------

    async def _call(self, method: str, req: Any, room: str = "") -> Any:
        """A RoomService call with a server-side context that may do exactly what the gateway
        needs. TwirpErrors a caller can act on are re-raised; anything else is RoomServiceFailed."""
        ctx = RequestContext(claims=Claims(identity="lkserver-gateway", video=VideoGrants(
            room_create=True, room_list=True, room_admin=True, room=room)))
        try:
            return await getattr(self.rooms, method)(ctx, req)
        except TwirpError as e:
            if e.code in TWIRP_STATUS or e.code in ("not_found", "unavailable"):
                raise
            log.error("gateway_room_service_failed", method=method, code=e.code, msg=e.msg)
            raise RoomServiceFailed(f"room service failed: {e.msg}") from None
        except Exception as e:  # noqa: BLE001 - whatever broke in the room service is a 500
            log.error("gateway_room_service_failed", method=method, error=f"{type(e).__name__}: {e}")
            raise RoomServiceFailed("room service failed") from None

    async def _store(self, op: Awaitable[Any]) -> Any:
        """A lease read or write: the leases share the room service's store, and fail with it."""
        try:
            return await op
        except Exception as e:  # noqa: BLE001 - the store is the room service's: its failure is a 500
            log.error("gateway_store_failed", error=f"{type(e).__name__}: {e}")
            raise RoomServiceFailed("room service failed: its store is unavailable") from None

    async def _room(self, name: str, tenant: str | None) -> Room | None:
        """The room if it exists and the caller may see it."""
        res = await self._call("list_rooms", proto.ListRoomsRequest(names=[name]))
        for room in res.rooms:
            if room.name == name and visible(tenant, room.metadata):
                return room
        return None

    # -- routes ----------------------------------------------------------------------------------

    async def list_rooms(self, request: web.Request, tenant: str | None) -> web.Response:
        res = await self._call("list_rooms", proto.ListRoomsRequest())
        rooms = sorted((r for r in res.rooms if visible(tenant, r.metadata)), key=lambda r: r.name)
        return json_response({"rooms": [{"name": r.name, "num_participants": r.num_participants,
                                         "creation_time": r.creation_time} for r in rooms]})

    async def get_room(self, request: web.Request, tenant: str | None) -> web.Response:
        name = unquote(raw_path(request)[len(PREFIX) + len("rooms/"):])
        room = await self._room(name, tenant)
        if room is None:
            return _room_not_found(name)
        res = await self._call("list_participants", proto.ListParticipantsRequest(room=name), room=name)
        return json_response({
            "sid": room.sid, "name": room.name, "num_participants": room.num_participants,
            "max_participants": room.max_participants, "creation_time": room.creation_time,
            "metadata": room.metadata, "active_recording": room.active_recording,
            "participants": [_participant(p) for p in res.participants],
        })

    async def token(self, request: web.Request, tenant: str | None) -> web.Response:
        body = await read_json_object(request)
        lim = self.limits
        name = string_field(body, "room_name", max_len=lim.max_room_name_length)
        identity = string_field(body, "participant_identity", max_len=lim.max_participant_identity_length)
        display = string_field(body, "participant_name", required=False,
                               max_len=lim.max_participant_name_length)
        if tenant is not None:
            holder = await self._store(self.leases.holder(name))
            if holder is not None and holder != tenant:
                return _access_denied(name)  # its tokens for this name may still be out there
        create = proto.CreateRoomRequest(name=name)
        if tenant is not None:
            create.metadata = tagged(tenant)
        try:
            # get-or-create: an existing room comes back as it is, so its owner is checked below
            room = await self._call("create_room", create)
        except TwirpError as e:
            return _twirp_error(e, name, "")
        if not visible(tenant, room.metadata):
            return _access_denied(name)
        video = VideoGrants(room_join=True, room=name, can_publish=True, can_subscribe=True,
                            can_publish_data=True)
        ttl = self.settings.token_ttl
        tok = (AccessToken(self.key, self.secret).with_identity(identity).with_grants(video)
               .with_ttl(dt.timedelta(seconds=ttl)))
        if display:
            tok.with_name(display)
        if tenant is not None:
            # a room this token brings back to life (auto_create after it closed) is the tenant's
            tok.with_room_config(RoomConfiguration(metadata=tagged(tenant)))
            await self._store(self.leases.extend(name, tenant, time.time() + ttl + 60))  # + leeway
        log.info("gateway_token", tenant=tenant or "-", room=name, identity=identity)
        return json_response({"token": tok.to_jwt(), "room_name": name, "participant_identity": identity,
                              "livekit_url": self._livekit_url(request)})

    async def remove_participant(self, request: web.Request, tenant: str | None) -> web.Response:
        body = await read_json_object(request)
        name = string_field(body, "room_name")
        identity = string_field(body, "participant_identity")
        if await self._room(name, tenant) is None:
            return _room_not_found(name)
        try:
            await self._call("remove_participant",
                             proto.RoomParticipantIdentity(room=name, identity=identity), room=name)
        except TwirpError as e:
            return _twirp_error(e, name, identity)
        log.info("gateway_participant_removed", tenant=tenant or "-", room=name, identity=identity)
        return json_response({"status": "removed", "room_name": name, "participant_identity": identity})

    async def mute(self, request: web.Request, tenant: str | None) -> web.Response:
        body = await read_json_object(request)
        name = string_field(body, "room_name")
        identity = string_field(body, "participant_identity")
        track_sid = string_field(body, "track_sid")
        muted = bool_field(body, "muted")
        if await self._room(name, tenant) is None:
            return _room_not_found(name)
        req = proto.MuteRoomTrackRequest(room=name, identity=identity, track_sid=track_sid, muted=muted)
        try:
            res = await self._call("mute_published_track", req, room=name)
        except TwirpError as e:
            return _twirp_error(e, name, identity)
        if not res.HasField("track"):
            return error(404, "TRACK_NOT_FOUND", f"participant '{identity}' has no track '{track_sid}'")
        return json_response({"room_name": name, "participant_identity": identity,
                              "track_sid": track_sid, "muted": res.track.muted})

    def _livekit_url(self, request: web.Request) -> str:
        if self.settings.livekit_url:
            return self.settings.livekit_url
        secure = request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
        return f"{'wss' if secure else 'ws'}://{request.host}"


def _access_denied(name: str) -> web.Response:
    return error(403, "ROOM_ACCESS_DENIED",
                 f"room '{name}' belongs to another tenant (or to none): choose another name")


def _room_not_found(name: str) -> web.Response:
    # the same answer for a missing room and another tenant's: existence is not disclosed
    return error(404, "ROOM_NOT_FOUND", f"Room '{name}' not found or not accessible")


def _twirp_error(e: TwirpError, room: str, identity: str) -> web.Response:
    if e.code in ("not_found", "unavailable"):  # unavailable: nobody hosts that participant
        return error(404, "PARTICIPANT_NOT_FOUND", f"Participant '{identity}' not found in room '{room}'")
    status, code = TWIRP_STATUS[e.code]
    return error(status, code, e.msg.removeprefix(PSRPC_PREFIX))


def _participant(p: ParticipantInfo) -> dict[str, Any]:
    return {"sid": p.sid, "identity": p.identity, "name": p.name,
            "state": ParticipantInfo.State.Name(p.state), "kind": ParticipantInfo.Kind.Name(p.kind),
            "joined_at": p.joined_at, "metadata": p.metadata, "attributes": dict(p.attributes),
            "is_publisher": p.is_publisher}


__all__ = ["PREFIX", "Gateway"]
