"""Helpers of the gateway tests: servers with tenants, gateway calls, raw signalling participants."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from conftest import API_KEY, API_SECRET
from livekit import api

TENANTS = {"acme": "acme-secret-0123456789", "globex": "globex-secret-0123456789",
           "initech": "initech-secret-0123456789"}


def gateway_section(auth_required: bool = True) -> str:
    """The config besides keys: rooms that outlive a test, and the gateway with TENANTS."""
    tenants = "".join(f"    {t}: {s}\n" for t, s in TENANTS.items())
    return f"""
room:
  empty_timeout: 600
  departure_timeout: 600
gateway:
  enabled: true
  auth_required: {str(auth_required).lower()}
  tenants:
{tenants}"""


def gateway_config(auth_required: bool = True, extra: str = "") -> str:
    return f"""
development: true
keys:
  {API_KEY}: {API_SECRET}
{gateway_section(auth_required)}{extra}"""


SERVER_ARGS = ("--udp-port", "0", "--tcp-port", "0")


def auth(tenant: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {TENANTS[tenant]}"} if tenant else {}


async def call(http: aiohttp.ClientSession, method: str, url: str, tenant: str | None = None,
               body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = body if isinstance(body, (str, bytes)) or body is None else json.dumps(body)
    async with http.request(method, url, data=data, headers={**auth(tenant), **(headers or {})}) as resp:
        text = await resp.text()
        assert resp.content_type == "application/json", (resp.status, resp.content_type, text)
        return resp.status, json.loads(text)


def admin(server: Any) -> api.LiveKitAPI:
    """The server's own API (server keys): what an operator sees, outside any tenant."""
    return api.LiveKitAPI(server.url, API_KEY, API_SECRET)


async def join(http: aiohttp.ClientSession, livekit_url: str, token: str) -> aiohttp.ClientWebSocketResponse:
    """A participant over raw signalling: in the room once the join response arrived."""
    ws = await http.ws_connect(f"{livekit_url}/rtc?access_token={token}&protocol=15")
    msg = await ws.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.BINARY, msg
    return ws


def claims_of(token: str) -> Any:
    """The token's claims, checked with the official SDK's verifier."""
    return api.TokenVerifier(API_KEY, API_SECRET).verify(token)
