"""`lkserver dispatch`: agent dispatches of a room, in the style of `lk dispatch`.

    lkserver dispatch create --room ROOM --agent-name NAME [--metadata M]
    lkserver dispatch list ROOM
    lkserver dispatch delete --room ROOM DISPATCH_ID
"""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

dispatch_app = typer.Typer(help="Send agents into rooms (agent dispatch).", no_args_is_help=True)


def _main() -> Any:
    from . import main

    return main


@dispatch_app.command("create")
def dispatch_create(
    ctx: typer.Context,
    room: str = typer.Option(..., "--room", help="Room (created if needed)."),
    agent_name: str = typer.Option(..., "--agent-name", help="The agent workers registered as."),
    metadata: str = typer.Option("", "--metadata", help="Job metadata for the agent."),
    as_json: bool = typer.Option(False, "--json", "-j", help="Print JSON."),
) -> None:
    """Dispatch an agent to a room."""
    from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest

    m = _main()
    d = m.run_api(ctx, lambda lk: lk.agent_dispatch.create_dispatch(CreateAgentDispatchRequest(
        room=room, agent_name=agent_name, metadata=metadata)))
    m.print_json(d) if as_json else m.out.print(f"Dispatched {agent_name} to {room} ({d.id})", highlight=False)


@dispatch_app.command("list")
def dispatch_list(
    ctx: typer.Context,
    room: str = typer.Argument(..., help="Room name."),
    as_json: bool = typer.Option(False, "--json", "-j", help="Print JSON."),
) -> None:
    """List a room's dispatches (including the implicit one for automatic agents)."""
    m = _main()
    res = m.run_api(ctx, lambda lk: lk.agent_dispatch.list_dispatch(room))
    if as_json:
        m.print_json(list(res))
        return
    table = Table("DispatchID", "AgentName", "Metadata", "Jobs")
    for d in res:
        table.add_row(d.id, d.agent_name or "<automatic>", d.metadata, str(len(d.state.jobs)))
    m.out.print(table)


@dispatch_app.command("delete")
def dispatch_delete(
    ctx: typer.Context,
    dispatch_id: str = typer.Argument(..., help="Dispatch ID (AD_...)."),
    room: str = typer.Option(..., "--room", help="Room name."),
) -> None:
    """Delete a dispatch; its agents leave the room."""
    m = _main()
    m.run_api(ctx, lambda lk: lk.agent_dispatch.delete_dispatch(dispatch_id, room))
    m.out.print(f"Deleted dispatch {dispatch_id}", highlight=False)
