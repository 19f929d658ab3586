"""The `lkserver` command: `serve` starts a server; the rest talk to one, in the style of `lk`.

Conventions from LiveKit's `lk` CLI: global `--url/--api-key/--api-secret` (defaults from
LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET; `--dev` for devkey/secret), results on
stdout, status and errors on stderr (exit 1), `--json` on read commands, the same nouns, verbs,
positional arguments and table columns as `lk`.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Awaitable, Callable, List, Optional

import typer
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="lkserver: a LiveKit-compatible realtime server.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
token_app = typer.Typer(help="Create access tokens.", no_args_is_help=True)
room_app = typer.Typer(help="Manage rooms.", no_args_is_help=True)
participants_app = typer.Typer(help="Manage the participants of a room.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(room_app, name="room")
room_app.add_typer(participants_app, name="participants")
app.add_typer(__import__("lkserver.cli.webhook", fromlist=["webhook_app"]).webhook_app, name="webhook")
app.add_typer(__import__("lkserver.cli.egress", fromlist=["egress_app"]).egress_app, name="egress")
app.add_typer(__import__("lkserver.cli.sip", fromlist=["sip_app"]).sip_app, name="sip")
app.add_typer(__import__("lkserver.cli.dispatch", fromlist=["dispatch_app"]).dispatch_app, name="dispatch")
app.add_typer(__import__("lkserver.cli.analytics", fromlist=["analytics_app"]).analytics_app, name="analytics")
app.add_typer(__import__("lkserver.cli.ingress", fromlist=["ingress_app"]).ingress_app, name="ingress")

# no console markup: room names, identities, metadata and server messages are printed as they are
# ("[bold]x" is a valid room name and must not turn into bold "x", nor break --json output)
out = Console(markup=False)
err = Console(stderr=True, markup=False)


@dataclass
class Target:
    url: str
    api_key: str
    api_secret: str


def fail(message: str) -> None:
    err.print(message, style="red", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@app.callback()
def main_options(
    ctx: typer.Context,
    url: str = typer.Option("http://localhost:7880", envvar="LIVEKIT_URL", help="Server URL."),
    api_key: str = typer.Option("", envvar="LIVEKIT_API_KEY", help="API key."),
    api_secret: str = typer.Option("", envvar="LIVEKIT_API_SECRET", help="API secret."),
    dev: bool = typer.Option(False, "--dev-keys", help="Use the development keys devkey/secret."),
) -> None:
    if dev:
        api_key, api_secret = "devkey", "secret"
    ctx.obj = Target(url, api_key, api_secret)


def _target(ctx: typer.Context) -> Target:
    t: Target = ctx.obj
    if not t.api_key or not t.api_secret:
        fail("no API key and secret: pass --api-key/--api-secret, set LIVEKIT_API_KEY/LIVEKIT_API_SECRET, "
             "or use --dev-keys")
    return t


def print_json(msg: Message | list[Message]) -> None:
    if isinstance(msg, list):
        out.print("[" + ",\n".join(MessageToJson(m, indent=2) for m in msg) + "]", highlight=False)
    else:
        out.print(MessageToJson(msg, indent=2), highlight=False)


def run_api(ctx: typer.Context, call: Callable[[Any], Awaitable[Any]]) -> Any:
    from ..api import LiveKitAPI, ServerError

    t = _target(ctx)

    async def go() -> Any:
        async with LiveKitAPI(t.url, t.api_key, t.api_secret) as lk:
            return await call(lk)

    try:
        return asyncio.run(go())
    except ServerError as e:
        fail(f"twirp error {e.code}: {e.message}")
    except OSError as e:
        fail(f"cannot reach {t.url}: {e}")


# -- serve --------------------------------------------------------------------------------------

@app.command()
def serve(
    dev: bool = typer.Option(False, "--dev", help="Development mode: keys devkey/secret, bind 127.0.0.1."),
    config: Optional[str] = typer.Option(None, "--config", help="livekit.yaml-compatible config file."),
    bind: Optional[List[str]] = typer.Option(None, "--bind", help="Address to listen on (repeatable)."),
    port: Optional[int] = typer.Option(None, "--port", help="HTTP port (default 7880; 0 picks a free one)."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Where the embedded store lives."),
    log_level: Optional[str] = typer.Option(None, "--log-level", help="debug, info, warn or error."),
    udp_port: Optional[str] = typer.Option(None, "--udp-port", help="UDP port (or range a-b) for media."),
    node_ip: Optional[str] = typer.Option(None, "--node-ip", help="IP address advertised to clients."),
    tcp_port: Optional[int] = typer.Option(None, "--tcp-port", help="ICE/TCP port (0 picks a free one)."),
) -> None:
    """Start the server."""
    from ..config import ConfigError, load_config
    from ..logs import setup_logging

    try:
        cfg = load_config(config_file=config, dev=dev, port=port, bind=bind, data_dir=data_dir,
                          log_level=log_level, udp_port=udp_port, node_ip=node_ip,
                          tcp_port=tcp_port)
    except ConfigError as e:
        fail(f"lkserver: {e}")
    setup_logging(cfg.logging.level)
    try:
        try:
            import uvloop  # the faster event loop, as ARCHITECTURE.md chooses

            uvloop.run(_serve(cfg))
        except ImportError:
            asyncio.run(_serve(cfg))
    except OSError as e:
        fail(f"lkserver: {e}")
    except Exception as e:
        # a configured Redis that cannot be used: say so instead of a traceback
        if cfg.redis.address and type(e).__module__.startswith("redis."):
            fail(f"lkserver: cannot use the Redis store at {cfg.redis.address}: {e}")
        raise


async def _serve(cfg: Any) -> None:
    from ..server import Server

    server = Server(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except BaseException:
        # release what did start (sockets, the webhook HTTP session, the store) before failing
        try:
            await server.stop()
        except Exception:  # the original error is the one to report
            pass
        raise
    err.print(f"lkserver listening on http://{cfg.bind_hosts[0]}:{server.port}", highlight=False)
    await stop.wait()
    await server.stop()


# -- token --------------------------------------------------------------------------------------

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> timedelta:
    m = _DURATION.match(text.strip())
    if not text.strip() or not m or not any(m.groups()):
        raise typer.BadParameter(f"{text!r} is not a duration like 5m, 1h30m or 90s")
    h, mi, s = (int(g) if g else 0 for g in m.groups())
    return timedelta(hours=h, minutes=mi, seconds=s)


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    room: str = typer.Option("", "--room", "-r", help="Room the token is for."),
    identity: str = typer.Option("", "--identity", "-i", help="Participant identity."),
    name: str = typer.Option("", "--name", "-n", help="Participant display name."),
    metadata: str = typer.Option("", "--metadata", help="Participant metadata."),
    join: bool = typer.Option(False, "--join", help="Grant: join the room."),
    admin: bool = typer.Option(False, "--admin", help="Grant: administer the room."),
    list_: bool = typer.Option(False, "--list", help="Grant: list rooms."),
    create: bool = typer.Option(False, "--create", help="Grant: create and delete rooms."),
    record: bool = typer.Option(False, "--record", "--egress", help="Grant: record (egress)."),
    ingress: bool = typer.Option(False, "--ingress", help="Grant: manage ingress."),
    valid_for: str = typer.Option("5m", "--valid-for", help="How long the token is valid (e.g. 5m, 24h)."),
    as_json: bool = typer.Option(False, "--json", "-j", help="Print JSON."),
    token_only: bool = typer.Option(False, "--token-only", help="Print only the token."),
) -> None:
    """Create an access token."""
    from ..auth import AccessToken, VideoGrants

    t = _target(ctx)
    if as_json and token_only:
        fail("--json and --token-only cannot be used together")
    if not any((join, admin, list_, create, record, ingress)):
        fail("at least one grant is required: --join, --admin, --list, --create, --record or --ingress")
    if (join or admin) and not room:
        fail("--room is required with --join or --admin")
    if join and not identity:
        fail("--identity is required with --join")
    grants = VideoGrants(room_join=join or None, room_admin=admin or None, room_list=list_ or None,
                         room_create=create or None, room_record=record or None,
                         ingress_admin=ingress or None, room=room)
    tok = (AccessToken(t.api_key, t.api_secret).with_grants(grants).with_identity(identity)
           .with_name(name).with_metadata(metadata).with_ttl(parse_duration(valid_for)))
    jwt = tok.to_jwt()
    if token_only:
        out.print(jwt, highlight=False, soft_wrap=True)
    elif as_json:
        import json

        out.print(json.dumps({"url": t.url, "identity": identity, "name": name, "room": room,
                              "access_token": jwt}, indent=2), highlight=False, soft_wrap=True)
    else:
        out.print(f"Project URL: {t.url}", highlight=False, soft_wrap=True)
        out.print(f"Access token: {jwt}", highlight=False, soft_wrap=True)


# -- room ---------------------------------------------------------------------------------------

@room_app.command("list")
def room_list(
    ctx: typer.Context,
    names: Optional[List[str]] = typer.Argument(None, help="Only these rooms."),
    as_json: bool = typer.Option(False, "--json", "-j", help="Print JSON."),
) -> None:
    """List rooms."""
    from ..api import ListRoomsRequest

    res = run_api(ctx, lambda lk: lk.room.list_rooms(ListRoomsRequest(names=names or [])))
    if as_json:
        print_json(list(res.rooms))
        return
    table = Table("RoomID", "Name", "Participants", "Publishers")
    for r in res.rooms:
        table.add_row(r.sid, r.name, str(r.num_participants), str(r.num_publishers))
    out.print(table)


@room_app.command("create")
def room_create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Room name."),
    empty_timeout: int = typer.Option(0, "--empty-timeout", help="Seconds an empty room stays open."),
    departure_timeout: int = typer.Option(0, "--departure-timeout", help="Seconds after the last one leaves."),
    max_participants: int = typer.Option(0, "--max-participants", help="0 means unlimited."),
    metadata: str = typer.Option("", "--metadata", help="Room metadata."),
    room_preset: str = typer.Option("", "--room-preset", help="A room_configurations preset."),
    as_json: bool = typer.Option(False, "--json", "-j", help="Print JSON."),
) -> None:
    """Create a room (or show the existing one of that name)."""
    from ..api import CreateRoomRequest

    req = CreateRoomRequest(name=name, empty_timeout=empty_timeout, departure_timeout=departure_timeout,
                            max_participants=max_participants, metadata=metadata, room_preset=room_preset)
    room = run_api(ctx, lambda lk: lk.room.create_room(req))
    if as_json:
        print_json(room)
    else:
        out.print(f"Created room {room.name} ({room.sid})", highlight=False)


@room_app.command("delete")
def room_delete(ctx: typer.Context, name: str = typer.Argument(..., help="Room name.")) -> None:
    """Delete a room, disconnecting everyone in it."""
    from ..api import DeleteRoomRequest

    run_api(ctx, lambda lk: lk.room.delete_room(DeleteRoomRequest(room=name)))
    out.print(f"Deleted room {name}", highlight=False)


@room_app.command("update-metadata")
def room_update_metadata(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Room name."),
    metadata: str = typer.Option(..., "--metadata", help="New metadata (may be empty)."),
    as_json: bool = typer.Option(False, "--json", "-j", help="Print JSON."),
) -> None:
    """Set a room's metadata."""
    from ..api import UpdateRoomMetadataRequest

    room = run_api(ctx, lambda lk: lk.room.update_room_metadata(
        UpdateRoomMetadataRequest(room=name, metadata=metadata)))
    if as_json:
        print_json(room)
    else:
        out.print(f"Updated room {room.name}", highlight=False)


# `lk room update --metadata M ROOM` spelling
room_app.command("update", hidden=True)(room_update_metadata)


# -- room participants --------------------------------------------------------------------------

def _state(p: Any) -> str:
    from livekit.protocol.models import ParticipantInfo

    return ParticipantInfo.State.Name(p.state)


def _kind(p: Any) -> str:
    from livekit.protocol.models import ParticipantInfo

    return ParticipantInfo.Kind.Name(p.kind)


@participants_app.command("list")
def participants_list(
    ctx: typer.Context,
    room: str = typer.Argument(..., help="Room name."),
    as_json: bool = typer.Option(False, "--json", "-j", help="Print JSON."),
) -> None:
    """List the participants of a room."""
    from ..api import ListParticipantsRequest

    res = run_api(ctx, lambda lk: lk.room.list_participants(ListParticipantsRequest(room=room)))
    if as_json:
        print_json(list(res.participants))
        return
    table = Table("Identity", "Name", "State", "Kind", "Tracks", "Joined")
    for p in res.participants:
        table.add_row(p.identity, p.name, _state(p), _kind(p), str(len(p.tracks)), str(p.joined_at))
    out.print(table)


@participants_app.command("get")
def participants_get(
    ctx: typer.Context,
    identity: str = typer.Argument(..., help="Participant identity."),
    room: str = typer.Option(..., "--room", "-r", help="Room name."),
) -> None:
    """Show one participant (JSON)."""
    from ..api import RoomParticipantIdentity

    print_json(run_api(ctx, lambda lk: lk.room.get_participant(RoomParticipantIdentity(room=room, identity=identity))))


@participants_app.command("remove")
def participants_remove(
    ctx: typer.Context,
    identity: str = typer.Argument(..., help="Participant identity."),
    room: str = typer.Option(..., "--room", "-r", help="Room name."),
) -> None:
    """Disconnect a participant from a room."""
    from ..api import RoomParticipantIdentity

    run_api(ctx, lambda lk: lk.room.remove_participant(RoomParticipantIdentity(room=room, identity=identity)))
    out.print(f"Removed {identity} from {room}", highlight=False)


@participants_app.command("update")
def participants_update(
    ctx: typer.Context,
    identity: str = typer.Argument(..., help="Participant identity."),
    room: str = typer.Option(..., "--room", "-r", help="Room name."),
    name: str = typer.Option("", "--name", help="New display name."),
    metadata: str = typer.Option("", "--metadata", help="New metadata."),
    attribute: Optional[List[str]] = typer.Option(None, "--attribute", help="k=v (repeatable; k= deletes)."),
    permissions: str = typer.Option("", "--permissions", help='ParticipantPermission JSON, e.g. {"canPublish":false}'),
) -> None:
    """Update a participant's name, metadata, attributes or permissions."""
    from google.protobuf.json_format import Parse, ParseError

    from ..api import ParticipantPermission, UpdateParticipantRequest

    req = UpdateParticipantRequest(room=room, identity=identity, name=name, metadata=metadata)
    for kv in attribute or []:
        if "=" not in kv:
            fail(f"--attribute {kv!r}: expected key=value")
        k, v = kv.split("=", 1)
        req.attributes[k] = v
    if permissions:
        try:
            req.permission.CopyFrom(Parse(permissions, ParticipantPermission()))
        except ParseError as e:
            fail(f"--permissions: {e}")
    print_json(run_api(ctx, lambda lk: lk.room.update_participant(req)))


def main() -> None:
    # typer/click read the terminal width from COLUMNS; keep tokens on one line when piped
    if not sys.stdout.isatty():
        os.environ.setdefault("COLUMNS", "200")
    import warnings

    import jwt

    warnings.filterwarnings("ignore", category=jwt.InsecureKeyLengthWarning)
    app()


if __name__ == "__main__":
    main()
