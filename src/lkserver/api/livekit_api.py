"""LiveKitAPI: the entry point holding one client per service, sharing one HTTP session."""

from __future__ import annotations

import os
from typing import Self

import aiohttp

from .agent_dispatch_service import AgentDispatchService
from .egress_service import EgressService
from .ingress_service import IngressService
from .room_service import RoomService
from .sip_service import SipService

DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=60)


class LiveKitAPI:
    """Clients for the server APIs of a LiveKit (or lkserver) deployment.

    ```python
    from lkserver import api

    async with api.LiveKitAPI("http://127.0.0.1:7880", "devkey", "secret") as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="my-room"))
        rooms = await lk.room.list_rooms(api.ListRoomsRequest())
    ```

    `url`, `api_key` and `api_secret` default to LIVEKIT_URL, LIVEKIT_API_KEY and
    LIVEKIT_API_SECRET; instead of a key pair, a pre-signed `token` (or LIVEKIT_TOKEN) can be
    sent as is with every call. `timeout` applies to every request (default 60 s). With your
    own `session`, closing it stays your job. `failover` is accepted for compatibility with the
    official SDK (its region failover only concerns LiveKit Cloud hosts).
    """

    def __init__(self, url: str | None = None, api_key: str | None = None,
                 api_secret: str | None = None, *, token: str | None = None,
                 timeout: aiohttp.ClientTimeout | None = DEFAULT_TIMEOUT,
                 session: aiohttp.ClientSession | None = None, failover: bool = True) -> None:
        url = url or os.getenv("LIVEKIT_URL")
        # environment credentials only when none were given, so an ambient LIVEKIT_TOKEN never
        # overrides an explicit key pair (or the reverse)
        if not token and not api_key and not api_secret:
            token = os.getenv("LIVEKIT_TOKEN")
        if not token and not api_key and not api_secret:
            api_key = os.getenv("LIVEKIT_API_KEY")
            api_secret = os.getenv("LIVEKIT_API_SECRET")
        if not url:
            raise ValueError("url must be set")
        if not token and (not api_key or not api_secret):
            raise ValueError("api_key and api_secret must be set")
        self._custom_session = session is not None
        self._session = session or aiohttp.ClientSession(timeout=timeout or DEFAULT_TIMEOUT)
        key, secret = api_key or "", api_secret or ""
        self._room = RoomService(self._session, url, key, secret, failover)
        self._egress = EgressService(self._session, url, key, secret, failover)
        self._ingress = IngressService(self._session, url, key, secret, failover)
        self._sip = SipService(self._session, url, key, secret, failover)
        self._agent_dispatch = AgentDispatchService(self._session, url, key, secret, failover)
        if token:
            for svc in (self._room, self._egress, self._ingress, self._sip, self._agent_dispatch):
                svc._token = token

    @classmethod
    def with_token(cls, token: str, url: str | None = None, *,
                   timeout: aiohttp.ClientTimeout | None = DEFAULT_TIMEOUT,
                   session: aiohttp.ClientSession | None = None, failover: bool = True) -> LiveKitAPI:
        """A client that sends a pre-signed token (which must carry the calls' grants) verbatim;
        it needs no secret, so it suits code that must not hold one."""
        return cls(url, token=token, timeout=timeout, session=session, failover=failover)

    @property
    def room(self) -> RoomService:
        """Rooms and participants (RoomService)."""
        return self._room

    @property
    def egress(self) -> EgressService:
        """Recordings and streams out of rooms (Egress)."""
        return self._egress

    @property
    def ingress(self) -> IngressService:
        """Streams into rooms (Ingress)."""
        return self._ingress

    @property
    def sip(self) -> SipService:
        """Trunks, dispatch rules and phone calls (SIP)."""
        return self._sip

    @property
    def agent_dispatch(self) -> AgentDispatchService:
        """Explicit agent dispatch (AgentDispatchService)."""
        return self._agent_dispatch

    async def aclose(self) -> None:
        """Close the HTTP session (unless it was passed in); call it when done with the client."""
        if not self._custom_session:
            await self._session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
