"""`lkserver webhook`: a receiver for developers, and a look into the durable outbox.

  lkserver --dev-keys webhook listen [--port 7890] [--host 127.0.0.1] [--compact]
  lkserver webhook outbox [--data-dir DIR | --config FILE] [--destination URL] [--json]
                          [--limit N] [--redeliver]

`listen` checks each POST as the SDKs' WebhookReceiver does (the JWT with the global
--api-key/--api-secret, then the body's sha256 claim), pretty-prints the event on stdout and
answers 200; a request that fails the check gets one `REJECTED ...` line on stderr and a 401.
`outbox` opens the server's store (the SQLite file in the data directory, or the configured
Redis) and shows what waits to be delivered and what was dead-lettered; `--redeliver` puts the
dead letters back in their queues (a running server picks them up within seconds).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

webhook_app = typer.Typer(help="Receive webhooks; inspect and redeliver the webhook outbox.",
                          no_args_is_help=True)

# no markup: events carry room names, identities and metadata that may hold "[...]"
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def _fail(message: str) -> None:
    err.print(message, style="red")
    raise typer.Exit(1)


# -- listen -------------------------------------------------------------------------------------

def rejection_reason(exc: Exception) -> str:
    """Why a webhook request was refused, in a developer's words."""
    import jwt

    from ..api import HashMismatchError, MissingSha256Error, WebhookParseError

    if isinstance(exc, jwt.InvalidSignatureError):
        return "bad signature: the token was not signed with this API secret"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "bad signature: the token was signed by another API key"
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "token expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "token not valid yet (clock skew?)"
    if isinstance(exc, jwt.DecodeError):
        return f"the Authorization header is not a JWT ({exc})"
    if isinstance(exc, MissingSha256Error):
        return "bad signature: the token has no sha256 claim"
    if isinstance(exc, HashMismatchError):
        return "bad signature: the body is not the one the token signs (sha256 mismatch)"
    if isinstance(exc, WebhookParseError):
        return f"the body is not a WebhookEvent ({exc})"
    return f"{type(exc).__name__}: {exc}"


def describe(event: Any) -> str:
    """One line naming the event and the resources it is about."""
    parts = [event.event, f"id={event.id}"]
    if event.HasField("room"):
        parts.append(f"room={event.room.name or event.room.sid}")
    if event.HasField("participant"):
        parts.append(f"participant={event.participant.identity or event.participant.sid}")
    if event.HasField("track"):
        parts.append(f"track={event.track.sid}")
    if event.HasField("egress_info"):
        parts.append(f"egress={event.egress_info.egress_id}")
    if event.HasField("ingress_info"):
        parts.append(f"ingress={event.ingress_info.ingress_id}")
    if event.created_at:
        parts.append("at=" + time.strftime("%H:%M:%S", time.localtime(event.created_at)))
    return "  ".join(parts)


@webhook_app.command("listen")
def listen(
    ctx: typer.Context,
    port: int = typer.Option(7890, "--port", "-p", help="Port to listen on (0 picks a free one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    compact: bool = typer.Option(False, "--compact", help="One line per event, no JSON."),
) -> None:
    """Receive webhooks on any path: verify each one, print its event."""
    t = ctx.obj
    key, secret = getattr(t, "api_key", ""), getattr(t, "api_secret", "")
    if not key or not secret:
        _fail("no API key and secret to verify with: pass --api-key/--api-secret (before `webhook`), "
              "set LIVEKIT_API_KEY/LIVEKIT_API_SECRET, or use --dev-keys")
    try:
        asyncio.run(_listen(host, port, key, secret, compact))
    except OSError as e:
        _fail(f"cannot listen on {host}:{port}: {e.strerror or e}")


async def _listen(host: str, port: int, key: str, secret: str, compact: bool) -> None:
    from aiohttp import web
    from google.protobuf.json_format import MessageToJson

    from ..api import TokenVerifier, WebhookReceiver

    receiver = WebhookReceiver(TokenVerifier(key, secret))

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        auth = request.headers.get("Authorization", "")
        where = f"{request.method} {request.path} from {request.remote}"
        if not auth:
            err.print(f"REJECTED {where}: no Authorization header")
            return web.Response(status=401, text="no Authorization header\n")
        try:
            event = receiver.receive(body, auth)
        except Exception as e:  # noqa: BLE001 -- every refusal is reported, none stops the listener
            reason = rejection_reason(e)
            err.print(f"REJECTED {where}: {reason}")
            return web.Response(status=401, text=reason + "\n")
        out.print(describe(event))
        if not compact:
            out.print(MessageToJson(event, indent=2))
        return web.Response(text="ok\n")

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_route("POST", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = getattr(site, "_server", None)
    bound = server.sockets[0].getsockname()[1] if server and server.sockets else port
    err.print(f"listening for webhooks on http://{host}:{bound}/ (any path), verifying with API key {key}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


# -- outbox -------------------------------------------------------------------------------------

def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _as_dict(r: Any) -> dict[str, Any]:
    d = {"seq": r.seq, "destination": r.destination, "key": r.key, "event": r.event_name,
         "id": r.event_id, "created_at": r.created_at, "attempts": r.attempts,
         "last_error": r.last_error}
    if r.died_at is not None:
        d["died_at"] = r.died_at
    return d


@webhook_app.command("outbox")
def outbox(
    data_dir: str | None = typer.Option(None, "--data-dir", help="The server's data directory."),
    config: str | None = typer.Option(None, "--config", help="The server's config file (its store)."),
    destination: str | None = typer.Option(None, "--destination", help="Only this URL."),
    limit: int = typer.Option(50, "--limit", help="At most this many records of each kind."),
    redeliver: bool = typer.Option(False, "--redeliver", help="Move the dead letters back to pending."),
    as_json: bool = typer.Option(False, "--json", "-j", help="Print JSON."),
) -> None:
    """Show the webhook events waiting for delivery and the dead letters."""
    from ..config import ConfigError, load_config
    from ..store import open_store

    try:
        # the outbox needs only the store's location; keys do not matter here (hence dev=True)
        cfg = load_config(config_file=config, data_dir=data_dir, dev=True)
    except ConfigError as e:
        _fail(f"lkserver: {e}")
    r = cfg.redis
    if not r.address:
        import os

        if not os.path.exists(os.path.join(cfg.data_dir, "lkserver.db")):
            _fail(f"no lkserver store in {os.path.abspath(cfg.data_dir)} (pass --data-dir or --config)")

    async def go() -> None:
        store = open_store(cfg.data_dir, r.address, username=r.username, password=r.password,
                           db=r.db, use_tls=r.use_tls)
        try:
            ob = store.outbox
            if redeliver:
                seqs = [d.seq for d in await ob.dead(10**9, destination)] if destination else None
                moved = await ob.redeliver(time.time(), seqs)
                err.print(f"redelivering {moved} dead webhook event(s)")
            counts = await ob.counts()
            pending = await ob.pending(limit, destination)
            dead = await ob.dead(limit, destination)
        finally:
            await store.close()
        if destination:
            counts.pending = {k: v for k, v in counts.pending.items() if k == destination}
            counts.dead = {k: v for k, v in counts.dead.items() if k == destination}
        if as_json:
            out.print(json.dumps({"pending_count": counts.pending, "dead_count": counts.dead,
                                  "pending": [_as_dict(x) for x in pending],
                                  "dead": [_as_dict(x) for x in dead]}, indent=2))
            return
        now = time.time()
        n_pending, n_dead = sum(counts.pending.values()), sum(counts.dead.values())
        out.print(f"pending: {n_pending}" + "".join(f"\n  {u}: {n}" for u, n in counts.pending.items()))
        if pending:
            table = Table("Destination", "Key", "Event", "ID", "Age", "Attempts", "Last error")
            for x in pending:
                table.add_row(x.destination, x.key, x.event_name, x.event_id, _age(now - x.created_at),
                              str(x.attempts), x.last_error)
            out.print(table)
        out.print(f"dead: {n_dead}" + "".join(f"\n  {u}: {n}" for u, n in counts.dead.items()))
        if dead:
            table = Table("Destination", "Key", "Event", "ID", "Age", "Attempts", "Reason")
            for x in dead:
                table.add_row(x.destination, x.key, x.event_name, x.event_id, _age(now - x.created_at),
                              str(x.attempts), x.last_error)
            out.print(table)
        if n_dead and not redeliver:
            out.print("(`lkserver webhook outbox --redeliver` sends the dead ones again)")

    from redis.exceptions import RedisError

    try:
        asyncio.run(go())
    except (OSError, RedisError) as e:
        _fail(f"cannot open the store: {e}")
