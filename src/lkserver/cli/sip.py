"""`lkserver sip`: trunks, dispatch rules and calls, in the style of `lk sip`.

    lkserver sip trunk list | get ID | delete ID
    lkserver sip trunk create-inbound --number +1555... [--allowed-address CIDR] [--auth-user U --auth-pass P]
    lkserver sip trunk create-outbound --address sip.carrier.com --number +1555... [--transport tcp]
    lkserver sip dispatch-rule list | delete ID
    lkserver sip dispatch-rule create (--direct ROOM | --individual PREFIX | --callee PREFIX) [--pin N] [--trunk ID]
    lkserver sip participant create --trunk ID --call NUMBER --room ROOM [--identity I] [--wait]
    lkserver sip participant transfer --room ROOM --identity I --to sip:...|tel:...

Every create also takes `--file F`: the record as JSON (LiveKit's field names), as `lk` reads it.
"""

from __future__ import annotations

from typing import Any

import typer
from google.protobuf.json_format import Parse
from rich.table import Table

sip_app = typer.Typer(help="SIP trunks, dispatch rules and calls.", no_args_is_help=True)
trunk_app = typer.Typer(help="Inbound and outbound SIP trunks.", no_args_is_help=True)
rule_app = typer.Typer(help="SIP dispatch rules.", no_args_is_help=True)
participant_app = typer.Typer(help="Dial out and transfer calls.", no_args_is_help=True)
sip_app.add_typer(trunk_app, name="trunk")
sip_app.add_typer(rule_app, name="dispatch-rule")
sip_app.add_typer(participant_app, name="participant")


def _main() -> Any:
    from . import main

    return main


def _from_file(path: str | None, msg: Any) -> Any:
    if path:
        with open(path, encoding="utf-8") as f:
            Parse(f.read(), msg, ignore_unknown_fields=False)
    return msg


def _csv(values: list[str] | None) -> str:
    return ", ".join(values or [])


# -- trunks ------------------------------------------------------------------------------------------

@trunk_app.command("list")
def trunk_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", "-j", help="Print JSON.")) -> None:
    """List inbound and outbound trunks."""
    from livekit.protocol import sip

    m = _main()

    async def go(lk: Any) -> Any:
        return (await lk.sip.list_inbound_trunk(sip.ListSIPInboundTrunkRequest()),
                await lk.sip.list_outbound_trunk(sip.ListSIPOutboundTrunkRequest()))

    inbound, outbound = m.run_api(ctx, go)
    if as_json:
        m.print_json(list(inbound.items) + list(outbound.items))
        return
    table = Table("SipTrunkID", "Kind", "Name", "Numbers", "Address / AllowedAddresses", "Auth")
    for t in inbound.items:
        table.add_row(t.sip_trunk_id, "inbound", t.name, _csv(t.numbers), _csv(t.allowed_addresses),
                      t.auth_username and f"{t.auth_username} / ****")
    for o in outbound.items:
        table.add_row(o.sip_trunk_id, "outbound", o.name, _csv(o.numbers), o.address,
                      o.auth_username and f"{o.auth_username} / ****")
    m.out.print(table)


@trunk_app.command("get")
def trunk_get(ctx: typer.Context, trunk_id: str = typer.Argument(..., help="Trunk ID (ST_...).")) -> None:
    """Show one trunk (inbound or outbound) as JSON."""
    from livekit.protocol import sip

    from ..api import ServerError

    m = _main()

    async def go(lk: Any) -> Any:
        try:
            return (await lk.sip.get_inbound_trunk(sip.GetSIPInboundTrunkRequest(sip_trunk_id=trunk_id))).trunk
        except ServerError as e:
            if e.code != "not_found":
                raise
        return (await lk.sip.get_outbound_trunk(sip.GetSIPOutboundTrunkRequest(sip_trunk_id=trunk_id))).trunk

    m.print_json(m.run_api(ctx, go))


@trunk_app.command("create-inbound")
def trunk_create_inbound(
    ctx: typer.Context,
    name: str = typer.Option("", "--name"),
    numbers: list[str] | None = typer.Option(None, "--number", help="Called number served (repeatable)."),
    allowed_addresses: list[str] | None = typer.Option(None, "--allowed-address", help="IP or CIDR (repeatable)."),
    allowed_numbers: list[str] | None = typer.Option(None, "--allowed-number", help="Caller (repeatable)."),
    auth_user: str = typer.Option("", "--auth-user"),
    auth_pass: str = typer.Option("", "--auth-pass"),
    metadata: str = typer.Option("", "--metadata"),
    file: str | None = typer.Option(None, "--file", help="SIPInboundTrunkInfo as JSON."),
    as_json: bool = typer.Option(False, "--json", "-j", help="Print JSON."),
) -> None:
    """Create an inbound trunk (who may call in, to which numbers)."""
    from livekit.protocol import sip

    m = _main()
    info = _from_file(file, sip.SIPInboundTrunkInfo())
    info.numbers.extend(numbers or [])
    info.allowed_addresses.extend(allowed_addresses or [])
    info.allowed_numbers.extend(allowed_numbers or [])
    info.name = name or info.name
    info.metadata = metadata or info.metadata
    info.auth_username = auth_user or info.auth_username
    info.auth_password = auth_pass or info.auth_password
    t = m.run_api(ctx, lambda lk: lk.sip.create_inbound_trunk(sip.CreateSIPInboundTrunkRequest(trunk=info)))
    m.print_json(t) if as_json else m.out.print(f"Created inbound trunk {t.sip_trunk_id}", highlight=False)


@trunk_app.command("create-outbound")
def trunk_create_outbound(
    ctx: typer.Context,
    address: str = typer.Option("", "--address", help="Carrier host[:port], not a sip: URI."),
    numbers: list[str] | None = typer.Option(None, "--number", help="Caller ID numbers (repeatable)."),
    transport: str = typer.Option("auto", "--transport", help="auto, udp or tcp."),
    name: str = typer.Option("", "--name"),
    auth_user: str = typer.Option("", "--auth-user"),
    auth_pass: str = typer.Option("", "--auth-pass"),
    file: str | None = typer.Option(None, "--file", help="SIPOutboundTrunkInfo as JSON."),
    as_json: bool = typer.Option(False, "--json", "-j", help="Print JSON."),
) -> None:
    """Create an outbound trunk (where CreateSIPParticipant dials)."""
    from livekit.protocol import sip

    m = _main()
    info = _from_file(file, sip.SIPOutboundTrunkInfo())
    info.address = address or info.address
    info.numbers.extend(numbers or [])
    info.name = name or info.name
    info.auth_username = auth_user or info.auth_username
    info.auth_password = auth_pass or info.auth_password
    transports = {"auto": 0, "udp": 1, "tcp": 2, "tls": 3}
    if transport.lower() not in transports:
        m.fail(f"--transport: expected one of {', '.join(transports)}")
    if transport.lower() != "auto":
        info.transport = transports[transport.lower()]
    t = m.run_api(ctx, lambda lk: lk.sip.create_outbound_trunk(sip.CreateSIPOutboundTrunkRequest(trunk=info)))
    m.print_json(t) if as_json else m.out.print(f"Created outbound trunk {t.sip_trunk_id}", highlight=False)


@trunk_app.command("delete")
def trunk_delete(ctx: typer.Context, trunk_id: str = typer.Argument(..., help="Trunk ID (ST_...).")) -> None:
    """Delete a trunk."""
    from livekit.protocol import sip

    m = _main()
    m.run_api(ctx, lambda lk: lk.sip.delete_trunk(sip.DeleteSIPTrunkRequest(sip_trunk_id=trunk_id)))
    m.out.print(f"Deleted trunk {trunk_id}", highlight=False)


# -- dispatch rules -------------------------------------------------------------------------------

def _rule_text(r: Any) -> str:
    kind = r.rule.WhichOneof("rule") or ""
    inner = getattr(r.rule, kind) if kind else None
    if kind == "dispatch_rule_direct":
        return f"direct {inner.room_name}" + (" (pin)" if inner.pin else "")
    if kind == "dispatch_rule_individual":
        return f"individual {inner.room_prefix}_<caller>" + (" (pin)" if inner.pin else "")
    if kind == "dispatch_rule_callee":
        return f"callee {inner.room_prefix}_<called>" + (" (pin)" if inner.pin else "")
    return kind


@rule_app.command("list")
def rule_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", "-j", help="Print JSON.")) -> None:
    """List dispatch rules."""
    from livekit.protocol import sip

    m = _main()
    res = m.run_api(ctx, lambda lk: lk.sip.list_dispatch_rule(sip.ListSIPDispatchRuleRequest()))
    if as_json:
        m.print_json(list(res.items))
        return
    table = Table("SipDispatchRuleID", "Name", "SipTrunks", "Type", "Numbers")
    for r in res.items:
        table.add_row(r.sip_dispatch_rule_id, r.name, _csv(r.trunk_ids) or "<any>", _rule_text(r),
                      _csv(r.numbers) or "<any>")
    m.out.print(table)


@rule_app.command("create")
def rule_create(
    ctx: typer.Context,
    direct: str = typer.Option("", "--direct", help="Every call to this room."),
    individual: str = typer.Option("", "--individual", help="A room per caller with this prefix."),
    callee: str = typer.Option("", "--callee", help="A room per called number with this prefix."),
    pin: str = typer.Option("", "--pin", help="Callers must enter this PIN (DTMF, then #)."),
    trunks: list[str] | None = typer.Option(None, "--trunk", help="Only calls from this trunk (repeatable)."),
    name: str = typer.Option("", "--name"),
    hide_phone_number: bool = typer.Option(False, "--hide-phone-number"),
    file: str | None = typer.Option(None, "--file", help="SIPDispatchRuleInfo as JSON."),
    as_json: bool = typer.Option(False, "--json", "-j", help="Print JSON."),
) -> None:
    """Create a dispatch rule: which room an inbound call joins."""
    from livekit.protocol import sip

    m = _main()
    info = _from_file(file, sip.SIPDispatchRuleInfo())
    if sum(bool(x) for x in (direct, individual, callee)) > 1:
        m.fail("give one of --direct, --individual or --callee")
    if direct:
        info.rule.dispatch_rule_direct.CopyFrom(sip.SIPDispatchRuleDirect(room_name=direct, pin=pin))
    elif individual:
        info.rule.dispatch_rule_individual.CopyFrom(sip.SIPDispatchRuleIndividual(room_prefix=individual, pin=pin))
    elif callee:
        info.rule.dispatch_rule_callee.CopyFrom(sip.SIPDispatchRuleCallee(room_prefix=callee, pin=pin))
    info.trunk_ids.extend(trunks or [])
    info.name = name or info.name
    info.hide_phone_number = hide_phone_number or info.hide_phone_number
    r = m.run_api(ctx, lambda lk: lk.sip.create_dispatch_rule(sip.CreateSIPDispatchRuleRequest(dispatch_rule=info)))
    m.print_json(r) if as_json else m.out.print(f"Created dispatch rule {r.sip_dispatch_rule_id}", highlight=False)


@rule_app.command("delete")
def rule_delete(ctx: typer.Context, rule_id: str = typer.Argument(..., help="Rule ID (SDR_...).")) -> None:
    """Delete a dispatch rule."""
    from livekit.protocol import sip

    m = _main()
    m.run_api(ctx, lambda lk: lk.sip.delete_dispatch_rule(sip.DeleteSIPDispatchRuleRequest(
        sip_dispatch_rule_id=rule_id)))
    m.out.print(f"Deleted dispatch rule {rule_id}", highlight=False)


# -- calls ----------------------------------------------------------------------------------------

@participant_app.command("create")
def participant_create(
    ctx: typer.Context,
    trunk: str = typer.Option(..., "--trunk", help="Outbound trunk ID (ST_...)."),
    call: str = typer.Option(..., "--call", help="Number (or SIP user) to dial."),
    room: str = typer.Option(..., "--room", help="Room the call joins."),
    identity: str = typer.Option("", "--identity", help="Participant identity (default sip_<number>)."),
    name: str = typer.Option("", "--name", help="Participant name."),
    number: str = typer.Option("", "--number", help="Caller ID (default: one of the trunk's numbers)."),
    dtmf: str = typer.Option("", "--dtmf", help="Digits to send once answered (w: 0.5 s pause)."),
    wait: bool = typer.Option(False, "--wait", help="Return only once the callee answers."),
    as_json: bool = typer.Option(False, "--json", "-j", help="Print JSON."),
) -> None:
    """Dial a phone number into a room."""
    from livekit.protocol import sip

    m = _main()
    req = sip.CreateSIPParticipantRequest(sip_trunk_id=trunk, sip_call_to=call, room_name=room,
                                          participant_identity=identity, participant_name=name,
                                          sip_number=number, dtmf=dtmf, wait_until_answered=wait)
    info = m.run_api(ctx, lambda lk: lk.sip.create_sip_participant(req))
    if as_json:
        m.print_json(info)
    else:
        m.out.print(f"Dialing {call} into {info.room_name} as {info.participant_identity} "
                    f"(call {info.sip_call_id})", highlight=False)


@participant_app.command("transfer")
def participant_transfer(
    ctx: typer.Context,
    room: str = typer.Option(..., "--room"),
    identity: str = typer.Option(..., "--identity", help="The SIP participant."),
    to: str = typer.Option(..., "--to", help="sip:, sips: or tel: URI."),
) -> None:
    """Transfer a call elsewhere (SIP REFER); the participant leaves the room."""
    from livekit.protocol import sip

    m = _main()
    m.run_api(ctx, lambda lk: lk.sip.transfer_sip_participant(sip.TransferSIPParticipantRequest(
        room_name=room, participant_identity=identity, transfer_to=to)))
    m.out.print(f"Transferred {identity} to {to}", highlight=False)
