"""HTTP routes of the Analytics API: `GET /api/project/{project_id}/sessions[/{session_id}]`.

As LiveKit Cloud: authorized by a LiveKit access token with the `roomList` grant
(`Authorization: Bearer`), the project id is this server's `project_id`. Errors are JSON
`{"error": message, "code": CODE}`: 400 bad parameters, 401 no or bad token, 403 a token without
roomList, 404 unknown project or session, 405 other methods.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from ..gateway.rest import error, json_response, query_params, raw_path
from .queries import BadRequest, get_session, list_sessions, parse_list_query
from .recorder import SessionRecorder

PREFIX = "/api/project/"

# verifies a request's token: returns its Claims (None without a token), raises with a message
Authenticate = Callable[[web.Request], Any]


class AnalyticsApi:
    def __init__(self, project_id: str, recorder: SessionRecorder, authenticate: Authenticate,
                 retention_days: int, clock: Callable[[], float] = time.time) -> None:
        self.project_id = project_id
        self.recorder = recorder
        self.store = recorder.store
        self.authenticate = authenticate
        self.retention_days = retention_days
        self.clock = clock

    async def handle(self, request: web.Request) -> web.StreamResponse:
        parts = raw_path(request)[len(PREFIX):].split("/")
        if len(parts) not in (2, 3) or parts[1] != "sessions" or (len(parts) == 3 and not parts[2]):
            return error(404, "NOT_FOUND", "no such route")
        if request.method != "GET":
            return error(405, "METHOD_NOT_ALLOWED", "use GET", headers={"Allow": "GET"})
        try:
            claims = self.authenticate(request)
        except Exception as e:  # noqa: BLE001 - the verifier says what is wrong with the token
            return error(401, "UNAUTHENTICATED", getattr(e, "message", None) or str(e))
        if claims is None:
            return error(401, "UNAUTHENTICATED", "missing access token: send Authorization: Bearer <token>")
        if not (claims.video and claims.video.room_list):
            return error(403, "PERMISSION_DENIED", "the token needs the roomList grant")
        if unquote(parts[0]) != self.project_id:
            return error(404, "PROJECT_NOT_FOUND", "project not found")
        now = self.clock()
        if len(parts) == 3:
            return await self._details(unquote(parts[2]), now)
        try:
            q = parse_list_query(query_params(request), _utc_day(now), self.retention_days)
        except BadRequest as e:
            return error(400, "INVALID_ARGUMENT", str(e))
        self.recorder.sample()
        await self.recorder.flush()
        return json_response(await list_sessions(self.store, q))

    async def _details(self, session_id: str, now: float) -> web.StreamResponse:
        self.recorder.sample()
        await self.recorder.flush()
        body = await get_session(self.store, session_id, int(now * 1000))
        if body is None:
            return error(404, "SESSION_NOT_FOUND", "session not found")
        return json_response(body)


def _utc_day(now: float) -> dt.date:
    return dt.datetime.fromtimestamp(now, dt.UTC).date()


__all__ = ["PREFIX", "AnalyticsApi"]
