"""LiveKitAPI: the entry point holding one client per service."""

from __future__ import annotations

import os
from typing import Any, Optional

import aiohttp

from .room_service import RoomService


class LiveKitAPI:
    """Clients for the server APIs of a LiveKit (or lkserver) deployment.

    ```python
    from lkserver import api
    async with api.LiveKitAPI("http://127.0.0.1:7880", "devkey", "secret") as lk:
        rooms = await lk.room.list_rooms(api.ListRoomsRequest())
    ```
    url, api_key and api_secret default to LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET.
    """

    def __init__(self, url: Optional[str] = None, api_key: Optional[str] = None,
                 api_secret: Optional[str] = None, *, token: Optional[str] = None,
                 timeout: aiohttp.ClientTimeout = aiohttp.ClientTimeout(total=60),
                 session: Optional[aiohttp.ClientSession] = None) -> None:
        url = url or os.getenv("LIVEKIT_URL")
        if not token and not api_key and not api_secret:
            api_key = os.getenv("LIVEKIT_API_KEY")
            api_secret = os.getenv("LIVEKIT_API_SECRET")
        if not url:
            raise ValueError("url must be set")
        if not token and (not api_key or not api_secret):
            raise ValueError("api_key and api_secret must be set")
        self._custom_session = session is not None
        self._session = session or aiohttp.ClientSession(timeout=timeout)
        key, secret = api_key or "", api_secret or ""
        self._room = RoomService(self._session, url, key, secret)
        if token:
            for svc in self._services():
                svc._token = token

    def _services(self) -> list[Any]:
        return [self._room]

    @property
    def room(self) -> RoomService:
        return self._room

    async def aclose(self) -> None:
        if not self._custom_session:
            await self._session.close()

    async def __aenter__(self) -> "LiveKitAPI":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
