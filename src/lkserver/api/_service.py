"""Base of the service clients: a Twirp client and a short-lived token per call.

Each call mints its own token carrying exactly the grant its RPC needs (reference
server-api.md §2.6), as the official SDK does, so a leaked request header is worth little.
"""

from __future__ import annotations

import datetime

import aiohttp

from ..auth import AccessToken, SIPGrants, VideoGrants
from .twirp_client import TwirpClient

AUTHORIZATION = "authorization"
# each call mints its own token; it only has to outlive the request (the longest, a SIP dial
# waiting for an answer, is bounded by its ringing timeout plus a margin)
CALL_TOKEN_TTL = datetime.timedelta(minutes=10)


class Service:
    def __init__(self, session: aiohttp.ClientSession, url: str, api_key: str, api_secret: str,
                 failover: bool = True) -> None:
        self._client = TwirpClient(session, url, "livekit", failover=failover)
        self.api_key = api_key
        self.api_secret = api_secret
        # a pre-signed token (LiveKitAPI(token=...)) is sent as is instead of minting per call;
        # the caller is then responsible for its grants
        self._token: str | None = None

    def _auth_header(self, grants: VideoGrants | None, sip: SIPGrants | None = None) -> dict[str, str]:
        if self._token:
            return {AUTHORIZATION: f"Bearer {self._token}"}
        tok = AccessToken(self.api_key, self.api_secret).with_ttl(CALL_TOKEN_TTL)
        if grants:
            tok.with_grants(grants)
        if sip is not None:
            tok.with_sip_grants(sip)
        return {AUTHORIZATION: f"Bearer {tok.to_jwt()}"}
