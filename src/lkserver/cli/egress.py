"""`lkserver egress`: start, list, stop and update egresses, the way `lk egress` does.

  lkserver --dev-keys egress start [--type room-composite] REQUEST.json [--follow]
  lkserver --dev-keys egress start --room my-room [--layout grid] [--file out.mp4] [--audio-only] [--follow]
  lkserver --dev-keys egress list [--room R] [--id EG_x] [--active] [--json]
  lkserver --dev-keys egress stop --id EG_x
  lkserver --dev-keys egress update-layout --id EG_x --layout speaker
  lkserver --dev-keys egress update-stream --id EG_x [--add-urls URL]... [--remove-urls URL]...

A request file is the protojson of the request type (`--type`: room-composite, web,
participant, track-composite, track, or egress for the unified StartEgressRequest), as `lk`
takes it. `--follow` shows the recording's progress until it ends; Ctrl-C then stops it.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from typing import Any

import typer
from google.protobuf.json_format import Parse, ParseError
from rich.console import Console
from rich.live import Live
from rich.table import Table

egress_app = typer.Typer(help="Record and stream rooms, participants, tracks and web pages.", no_args_is_help=True)
out = Console(markup=False, highlight=False)
err = Console(stderr=True, markup=False, highlight=False)

TYPES = {
    "room-composite": ("RoomCompositeEgressRequest", "start_room_composite_egress"),
    "web": ("WebEgressRequest", "start_web_egress"),
    "participant": ("ParticipantEgressRequest", "start_participant_egress"),
    "track-composite": ("TrackCompositeEgressRequest", "start_track_composite_egress"),
    "track": ("TrackEgressRequest", "start_track_egress"),
    "egress": ("StartEgressRequest", "start_egress"),
}


def _main() -> Any:
    from . import main

    return main


def _status(info: Any) -> str:
    from livekit.protocol.egress import EgressStatus

    return EgressStatus.Name(info.status).removeprefix("EGRESS_")


def _source(info: Any) -> str:
    kind = info.WhichOneof("request") or ""
    req = getattr(info, kind) if kind else None
    if kind == "web":
        return req.url
    if kind == "track":
        return req.track_id
    if kind == "track_composite":
        return ",".join(t for t in (req.audio_track_id, req.video_track_id) if t)
    if kind == "participant":
        return req.identity
    return info.room_name


def _outputs(info: Any) -> list[str]:
    rows = [f"file {f.location or f.filename}" + (f" ({f.size} bytes)" if f.size else "") for f in info.file_results]
    rows += [f"hls {s.playlist_location or s.playlist_name} ({s.segment_count} segments)" for s in info.segment_results]
    rows += [f"stream {s.url}" for s in info.stream_results]
    rows += [f"images {i.filename_prefix}* ({i.image_count})" for i in info.image_results]
    return rows


def _show(info: Any) -> None:
    out.print(f"{info.egress_id} {_status(info)}" + (f" error: {info.error}" if info.error else ""))
    for row in _outputs(info):
        out.print(f"  {row}")


def _follow(ctx: typer.Context, egress_id: str) -> Any:
    """Progress until the egress ends; Ctrl-C stops it and follows it to its end."""
    from livekit.protocol.egress import EgressStatus, ListEgressRequest, StopEgressRequest

    from ..api import LiveKitAPI

    t = _main()._target(ctx)
    done = (EgressStatus.EGRESS_COMPLETE, EgressStatus.EGRESS_FAILED, EgressStatus.EGRESS_ABORTED,
            EgressStatus.EGRESS_LIMIT_REACHED)

    async def go() -> Any:
        loop = asyncio.get_running_loop()
        interrupted = asyncio.Event()
        loop.add_signal_handler(signal.SIGINT, interrupted.set)
        async with LiveKitAPI(t.url, t.api_key, t.api_secret) as lk:
            start = time.monotonic()
            stopping = False
            with Live(console=err, refresh_per_second=4, transient=True) as live:
                while True:
                    res = await lk.egress.list_egress(ListEgressRequest(egress_id=egress_id))
                    info = res.items[0]
                    if info.status in done:
                        return info
                    if interrupted.is_set() and not stopping:
                        stopping = True
                        await lk.egress.stop_egress(StopEgressRequest(egress_id=egress_id))
                    table = Table.grid(padding=(0, 2))
                    table.add_row(egress_id, _status(info), f"{time.monotonic() - start:6.1f} s",
                                  "stopping..." if stopping else "Ctrl-C to stop")
                    for row in _outputs(info):
                        table.add_row("", row)
                    live.update(table)
                    try:
                        await asyncio.wait_for(interrupted.wait(), 0.5)
                    except TimeoutError:
                        pass

    return asyncio.run(go())


@egress_app.command("start")
def start(
    ctx: typer.Context,
    request: str | None = typer.Argument(None, help="Request JSON file ('-' for stdin)."),
    type_: str = typer.Option("room-composite", "--type", help="|".join(TYPES)),
    room: str = typer.Option("", "--room", help="Without a request file: record this room (room composite)."),
    layout: str = typer.Option("", "--layout", help="grid, speaker, single-speaker (+ -light / -dark)."),
    file: str = typer.Option("", "--file", help="Without a request file: output file path (MP4/OGG)."),
    audio_only: bool = typer.Option(False, "--audio-only"),
    video_only: bool = typer.Option(False, "--video-only"),
    follow: bool = typer.Option(False, "--follow", "-f", help="Show progress until the egress ends."),
    as_json: bool = typer.Option(False, "--json", "-j", help="Print JSON."),
) -> None:
    """Start an egress from a request file, or record a room with --room."""
    from livekit.protocol import egress as pe

    m = _main()
    if type_ not in TYPES:
        m.fail(f"unknown --type {type_!r}: one of {', '.join(TYPES)}")
    cls_name, method = TYPES[type_]
    if request is not None:
        text = sys.stdin.read() if request == "-" else _read(m, request)
        try:
            req = Parse(text, getattr(pe, cls_name)())
        except ParseError as e:
            m.fail(f"{request}: not a {cls_name}: {e}")
    elif room:
        type_, method = "room-composite", "start_room_composite_egress"
        req = pe.RoomCompositeEgressRequest(room_name=room, layout=layout, audio_only=audio_only,
                                            video_only=video_only,
                                            file_outputs=[pe.EncodedFileOutput(filepath=file)])
    else:
        m.fail("give a request file, or --room to record a room")
    info = m.run_api(ctx, lambda lk: getattr(lk.egress, method)(req))
    if as_json and not follow:
        m.print_json(info)
        return
    err.print(f"started {info.egress_id} ({_status(info)})")
    if follow:
        info = _follow(ctx, info.egress_id)
        if as_json:
            m.print_json(info)
        else:
            _show(info)
        if info.error:
            raise typer.Exit(1)
    else:
        out.print(info.egress_id)


def _read(m: Any, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        m.fail(f"cannot read {path}: {e.strerror}")
    return ""


@egress_app.command("list")
def list_(
    ctx: typer.Context,
    room: str = typer.Option("", "--room", help="Only this room's egresses."),
    egress_id: str = typer.Option("", "--id", help="Only this egress."),
    active: bool = typer.Option(False, "--active", help="Only STARTING, ACTIVE and ENDING ones."),
    as_json: bool = typer.Option(False, "--json", "-j", help="Print JSON."),
) -> None:
    """List egresses."""
    from livekit.protocol.egress import ListEgressRequest

    m = _main()
    res = m.run_api(ctx, lambda lk: lk.egress.list_egress(ListEgressRequest(room_name=room, egress_id=egress_id,
                                                                             active=active)))
    if as_json:
        m.print_json(list(res.items))
        return
    table = Table("EgressID", "Status", "Type", "Source", "Started At", "Error")
    for i in res.items:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(i.started_at / 1e9)) if i.started_at else ""
        table.add_row(i.egress_id, _status(i), (i.WhichOneof("request") or "").replace("_", "-"), _source(i),
                      started, i.error)
    out.print(table)


@egress_app.command("stop")
def stop(
    ctx: typer.Context,
    egress_id: list[str] = typer.Option(..., "--id", help="Egress id (repeatable)."),
) -> None:
    """Stop egresses; they finish their files and end COMPLETE."""
    from livekit.protocol.egress import StopEgressRequest

    m = _main()
    for eid in egress_id:
        info = m.run_api(ctx, lambda lk, eid=eid: lk.egress.stop_egress(StopEgressRequest(egress_id=eid)))
        out.print(f"Stopping {info.egress_id} ({_status(info)})")


@egress_app.command("update-layout")
def update_layout(
    ctx: typer.Context,
    egress_id: str = typer.Option(..., "--id", help="Egress id."),
    layout: str = typer.Option(..., "--layout", help="grid, speaker, single-speaker (+ -light / -dark)."),
) -> None:
    """Change the layout of a room composite."""
    from livekit.protocol.egress import UpdateLayoutRequest

    m = _main()
    info = m.run_api(ctx, lambda lk: lk.egress.update_layout(UpdateLayoutRequest(egress_id=egress_id, layout=layout)))
    out.print(f"Updated {info.egress_id} layout to {layout}")


@egress_app.command("update-stream")
def update_stream(
    ctx: typer.Context,
    egress_id: str = typer.Option(..., "--id", help="Egress id."),
    add_urls: list[str] | None = typer.Option(None, "--add-urls", help="Stream URL to add (repeatable)."),
    remove_urls: list[str] | None = typer.Option(None, "--remove-urls", help="Stream URL to remove (repeatable)."),
) -> None:
    """Add or remove RTMP destinations of a streaming egress."""
    from livekit.protocol.egress import UpdateStreamRequest

    m = _main()
    info = m.run_api(ctx, lambda lk: lk.egress.update_stream(UpdateStreamRequest(
        egress_id=egress_id, add_output_urls=add_urls or [], remove_output_urls=remove_urls or [])))
    out.print(f"Updated {info.egress_id}: {', '.join(s.url for s in info.stream_results if s.status == 0) or 'no streams'}")
