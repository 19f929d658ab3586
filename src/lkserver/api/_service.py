"""Base of the service clients: a Twirp client and a short-lived token per call."""

from __future__ import annotations

import datetime
from typing import Optional

import aiohttp

from ..auth import AccessToken, SIPGrants, VideoGrants
from .twirp_client import TwirpClient

AUTHORIZATION = "authorization"
# each call mints its own token; it only has to outlive the request
CALL_TOKEN_TTL = datetime.timedelta(minutes=10)


class Service:
    def __init__(self, session: aiohttp.ClientSession, host: str, api_key: str, api_secret: str) -> None:
        self._client = TwirpClient(session, host, "livekit")
        self.api_key = api_key
        self.api_secret = api_secret
        # a pre-signed token (LiveKitAPI(token=...)) is sent as is instead of minting per call
        self._token: Optional[str] = None

    def _auth_header(self, grants: Optional[VideoGrants], sip: Optional[SIPGrants] = None) -> dict[str, str]:
        if self._token:
            return {AUTHORIZATION: f"Bearer {self._token}"}
        tok = AccessToken(self.api_key, self.api_secret).with_ttl(CALL_TOKEN_TTL)
        if grants:
            tok.with_grants(grants)
        if sip is not None:
            tok.with_sip_grants(sip)
        return {AUTHORIZATION: f"Bearer {tok.to_jwt()}"}
