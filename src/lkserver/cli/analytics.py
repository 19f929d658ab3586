"""`lkserver analytics`: the sessions of a server, through its Analytics API.

  lkserver analytics sessions [--start YYYY-MM-DD] [--end YYYY-MM-DD] [--limit N] [--page N] [--json]
  lkserver analytics session SESSION_ID [--json]

As `lk analytics session list|get` (livekit-cli cmd/lk/analytics.go): a token with the roomList
grant (identity `lk-analytics`) signed with the global --api-key/--api-secret, GET
`{--url}/api/project/{--project-id}/sessions[/{id}]`, the same table columns. Region, connection
type and SDK are not reported by lkserver; their columns show "-".
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote, urlencode

import typer
from rich.console import Console
from rich.table import Table

analytics_app = typer.Typer(help="Sessions analytics (room lifetimes and their participants).",
                            no_args_is_help=True)

out = Console(markup=False, highlight=False, soft_wrap=True)
err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


def _fail(message: str) -> None:
    err.print(message, style="red")
    raise typer.Exit(1)


def _dash(value: Any) -> str:
    return "-" if value in (None, "") else str(value)


def format_bytes(value: Any) -> str:
    """As lk's util.FormatBytes: 1000-based units, one decimal."""
    try:
        n = float(value)
    except (TypeError, ValueError):
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return "-"


def _call(ctx: typer.Context, path: str, query: dict[str, str], project_id: str) -> Any:
    import aiohttp

    from ..auth import AccessToken, VideoGrants
    from .main import _target

    t = _target(ctx)
    token = (AccessToken(t.api_key, t.api_secret).with_identity("lk-analytics")
             .with_grants(VideoGrants(room_list=True)).to_jwt())
    base = t.url.rstrip("/").replace("ws://", "http://", 1).replace("wss://", "https://", 1)
    url = f"{base}/api/project/{quote(project_id, safe='')}/sessions{path}"
    if query:
        url += "?" + urlencode(query)

    async def go() -> tuple[int, str]:
        async with aiohttp.ClientSession() as http, \
                http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
            return resp.status, await resp.text()

    try:
        status, text = asyncio.run(go())
    except (OSError, aiohttp.ClientError) as e:
        _fail(f"cannot reach {t.url}: {e}")
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if status >= 400:
        message = body.get("error") if isinstance(body, dict) else text.strip()[:200]
        _fail(f"analytics API error {status}: {message}")
    if not isinstance(body, dict):
        _fail(f"analytics API answered something that is not JSON: {text[:200]!r}")
    return body


PROJECT_ID = typer.Option("lkserver", "--project-id", help="The server's project_id (config).")
AS_JSON = typer.Option(False, "--json", "-j", help="Print the API's JSON.")


@analytics_app.command("sessions")
def sessions(
    ctx: typer.Context,
    start: str | None = typer.Option(None, "--start", help="First day, YYYY-MM-DD (UTC)."),
    end: str | None = typer.Option(None, "--end", help="Last day, YYYY-MM-DD (UTC), inclusive."),
    limit: int = typer.Option(10, "--limit", help="Sessions per page."),
    page: int = typer.Option(0, "--page", help="Page number, from 0."),
    project_id: str = PROJECT_ID,
    as_json: bool = AS_JSON,
) -> None:
    """List sessions, newest first."""
    query = {"limit": str(limit), "page": str(page)}
    if start:
        query["start"] = start
    if end:
        query["end"] = end
    body = _call(ctx, "", query, project_id)
    if as_json:
        out.print(json.dumps(body, indent=2, ensure_ascii=False))
        return
    rows = body.get("sessions") or []
    if not rows:
        out.print("No sessions found")
        return
    table = Table("Session ID", "Room", "Created", "Ended", "Participants", "Active", "Bandwidth In",
                  "Bandwidth Out")
    for s in rows:
        table.add_row(_dash(s.get("sessionId")), _dash(s.get("roomName")), _dash(s.get("createdAt")),
                      _dash(s.get("endedAt")), str(s.get("numParticipants", 0)),
                      str(s.get("numActiveParticipants", 0)), format_bytes(s.get("bandwidthIn")),
                      format_bytes(s.get("bandwidthOut")))
    out.print(table)


@analytics_app.command("session")
def session(
    ctx: typer.Context,
    session_id: str = typer.Argument(..., help="Session ID (the room sid, RM_...)."),
    project_id: str = PROJECT_ID,
    as_json: bool = AS_JSON,
) -> None:
    """Show one session and its participants."""
    body = _call(ctx, "/" + quote(session_id, safe=""), {}, project_id)
    if as_json:
        out.print(json.dumps(body, indent=2, ensure_ascii=False))
        return
    summary = Table("Session ID", "Room", "Start", "End", "Participants", "Connection Minutes", "Bandwidth")
    summary.add_row(_dash(body.get("roomId")), _dash(body.get("roomName")), _dash(body.get("startTime")),
                    _dash(body.get("endTime")), str(body.get("numParticipants", 0)),
                    _dash(body.get("connectionMinutes")), format_bytes(body.get("bandwidth")))
    out.print(summary)
    participants = body.get("participants") or []
    if not participants:
        return
    table = Table("Identity", "Name", "Joined", "Left", "Region", "Connection", "SDK")
    for p in participants:
        table.add_row(_dash(p.get("participantIdentity")), _dash(p.get("participantName")),
                      _dash(p.get("joinedAt")), _dash(p.get("leftAt")), _dash(p.get("region")),
                      _dash(p.get("connectionType")), _dash(p.get("sdkVersion")))
    out.print(table)


__all__ = ["analytics_app", "format_bytes"]
