"""`lkserver ingress`: create, list, update and delete ingress endpoints, in the style of `lk ingress`.

    lkserver ingress create [FILE] [--input-type rtmp|whip|url] --room R --identity I [--name N]
                            [--participant-name N] [--metadata M] [--url URL] [--transcoding/--no-transcoding]
                            [--video-preset H264_720P_30FPS_3_LAYERS] [--audio-preset OPUS_STEREO_96KBPS] [--disabled]
    lkserver ingress list [--room R] [--id IN_...] [--json]
    lkserver ingress update [FILE] --id IN_... [--name N] [--room R] [--identity I] [--enabled/--disabled] ...
    lkserver ingress delete IN_...

FILE is the request as JSON with LiveKit's field names (`lk ingress create ingress.json` reads the
same file); options given on the command line override its fields.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

ingress_app = typer.Typer(help="Ingress endpoints: RTMP, WHIP and URL inputs into rooms.", no_args_is_help=True)

INPUT_TYPES = {"rtmp": 0, "whip": 1, "url": 2}


def _main() -> Any:
    from . import main

    return main


def _from_file(path: str | None, msg: Any) -> Any:
    from google.protobuf.json_format import Parse, ParseError

    if path:
        try:
            with open(path, encoding="utf-8") as f:
                Parse(f.read(), msg)
        except (OSError, ParseError) as e:
            _main().fail(f"{path}: {e}")
    return msg


def _presets(req: Any, video_preset: str, audio_preset: str) -> None:
    from livekit.protocol import ingress as pi

    try:
        if video_preset:
            req.video.preset = pi.IngressVideoEncodingPreset.Value(video_preset.upper())
        if audio_preset:
            req.audio.preset = pi.IngressAudioEncodingPreset.Value(audio_preset.upper())
    except ValueError:
        names = ", ".join(pi.IngressVideoEncodingPreset.keys() + pi.IngressAudioEncodingPreset.keys())
        _main().fail(f"unknown preset: expected one of {names}")


def _status(info: Any) -> str:
    from livekit.protocol import ingress as pi

    return pi.IngressState.Status.Name(info.state.status)


def _print_info(info: Any, as_json: bool, verb: str) -> None:
    m = _main()
    if as_json:
        m.print_json(info)
        return
    m.out.print(f"{verb} ingress {info.ingress_id} ({_status(info)})", highlight=False)
    if info.url:
        m.out.print(f"URL: {info.url}", highlight=False, soft_wrap=True)
    if info.stream_key:
        m.out.print(f"Stream key: {info.stream_key}", highlight=False, soft_wrap=True)


@ingress_app.command("create")
def ingress_create(
    ctx: typer.Context,
    file: str = typer.Argument(None, help="CreateIngressRequest as JSON."),
    input_type: str = typer.Option("", "--input-type", "-t", help="rtmp, whip or url."),
    name: str = typer.Option("", "--name", help="Name of the ingress."),
    room: str = typer.Option("", "--room", "-r", help="Room to publish into."),
    identity: str = typer.Option("", "--identity", "-i", help="Identity of the ingress participant."),
    participant_name: str = typer.Option("", "--participant-name", help="Its display name."),
    metadata: str = typer.Option("", "--metadata", help="Its metadata."),
    url: str = typer.Option("", "--url", help="Source to pull (URL input): http(s) file or HLS."),
    transcoding: bool | None = typer.Option(None, "--transcoding/--no-transcoding",
                                            help="Transcode (WHIP only may bypass)."),
    video_preset: str = typer.Option("", "--video-preset", help="e.g. H264_1080P_30FPS_3_LAYERS."),
    audio_preset: str = typer.Option("", "--audio-preset", help="OPUS_STEREO_96KBPS or OPUS_MONO_64KBS."),
    disabled: bool = typer.Option(False, "--disabled", help="Create it disabled (refuses publishers)."),
    as_json: bool = typer.Option(False, "--json", "-j", help="Print JSON."),
) -> None:
    """Create an ingress (RTMP and WHIP: a URL and stream key for the encoder; URL input starts pulling)."""
    from livekit.protocol import ingress as pi

    m = _main()
    req = _from_file(file, pi.CreateIngressRequest())
    if input_type:
        if input_type.lower() not in INPUT_TYPES:
            m.fail(f"--input-type {input_type!r}: expected rtmp, whip or url")
        req.input_type = INPUT_TYPES[input_type.lower()]
    for field, value in (("name", name), ("room_name", room), ("participant_identity", identity),
                         ("participant_name", participant_name), ("participant_metadata", metadata), ("url", url)):
        if value:
            setattr(req, field, value)
    if transcoding is not None:
        req.enable_transcoding = transcoding
    if disabled:
        req.enabled = False
    _presets(req, video_preset, audio_preset)
    info = m.run_api(ctx, lambda lk: lk.ingress.create_ingress(req))
    _print_info(info, as_json, "Created")


@ingress_app.command("list")
def ingress_list(
    ctx: typer.Context,
    room: str = typer.Option("", "--room", "-r", help="Only this room's ingresses."),
    ingress_id: str = typer.Option("", "--id", help="Only this ingress."),
    as_json: bool = typer.Option(False, "--json", "-j", help="Print JSON."),
) -> None:
    """List ingresses and their state."""
    from livekit.protocol import ingress as pi

    m = _main()
    res = m.run_api(ctx, lambda lk: lk.ingress.list_ingress(pi.ListIngressRequest(room_name=room,
                                                                                  ingress_id=ingress_id)))
    if as_json:
        m.print_json(list(res.items))
        return
    table = Table("IngressID", "Name", "Room", "Identity", "Input", "Status", "URL", "StreamKey", "Error")
    for i in res.items:
        table.add_row(i.ingress_id, i.name, i.room_name, i.participant_identity,
                      pi.IngressInput.Name(i.input_type).removesuffix("_INPUT"), _status(i), i.url, i.stream_key,
                      i.state.error)
    m.out.print(table)


@ingress_app.command("update")
def ingress_update(
    ctx: typer.Context,
    file: str = typer.Argument(None, help="UpdateIngressRequest as JSON."),
    ingress_id: str = typer.Option("", "--id", help="The ingress (IN_...)."),
    name: str = typer.Option("", "--name", help="New name."),
    room: str = typer.Option("", "--room", "-r", help="New room."),
    identity: str = typer.Option("", "--identity", "-i", help="New participant identity."),
    participant_name: str = typer.Option("", "--participant-name", help="New display name."),
    metadata: str = typer.Option("", "--metadata", help="New metadata."),
    transcoding: bool | None = typer.Option(None, "--transcoding/--no-transcoding", help="WHIP: transcode or not."),
    enabled: bool | None = typer.Option(None, "--enabled/--disabled", help="Accept publishers or not."),
    video_preset: str = typer.Option("", "--video-preset", help="New video preset."),
    audio_preset: str = typer.Option("", "--audio-preset", help="New audio preset."),
    as_json: bool = typer.Option(False, "--json", "-j", help="Print JSON."),
) -> None:
    """Change a reusable ingress; only what is given changes. A live session ends (the encoder reconnects)."""
    from livekit.protocol import ingress as pi

    m = _main()
    req = _from_file(file, pi.UpdateIngressRequest())
    for field, value in (("ingress_id", ingress_id), ("name", name), ("room_name", room),
                         ("participant_identity", identity), ("participant_name", participant_name),
                         ("participant_metadata", metadata)):
        if value:
            setattr(req, field, value)
    if not req.ingress_id:
        m.fail("an ingress id is required: --id IN_... (or ingress_id in the file)")
    if transcoding is not None:
        req.enable_transcoding = transcoding
    if enabled is not None:
        req.enabled = enabled
    _presets(req, video_preset, audio_preset)
    info = m.run_api(ctx, lambda lk: lk.ingress.update_ingress(req))
    _print_info(info, as_json, "Updated")


@ingress_app.command("delete")
def ingress_delete(ctx: typer.Context, ingress_id: str = typer.Argument(..., help="The ingress (IN_...).")) -> None:
    """Delete an ingress (a live session ends first)."""
    from livekit.protocol import ingress as pi

    m = _main()
    m.run_api(ctx, lambda lk: lk.ingress.delete_ingress(pi.DeleteIngressRequest(ingress_id=ingress_id)))
    m.out.print(f"Deleted ingress {ingress_id}", highlight=False)
