"""A minimal worker built with the official `livekit-agents` framework (run in .venv/agents).

    agent_worker.py URL KEY SECRET [--agent-name NAME] [--type room|publisher]

Registers with the server; for each job it accepts, joins the room and prints one JSON line
`{"event": "job", "room": ..., "job_id": ..., "identity": ..., "dispatch_id": ..., "metadata": ...}`
to stdout; `{"event": "registered", "worker_id": ...}` once registered. Stops after --seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from livekit.agents import AgentServer, JobContext, JobExecutorType
from livekit.agents.worker import ServerType


def say(**kw: object) -> None:
    print(json.dumps(kw), flush=True)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("key")
    ap.add_argument("secret")
    ap.add_argument("--agent-name", default="")
    ap.add_argument("--type", default="room")
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()

    server = AgentServer(ws_url=args.url, api_key=args.key, api_secret=args.secret,
                         job_executor_type=JobExecutorType.THREAD, num_idle_processes=0, port=0,
                         load_threshold=1.0)

    @server.rtc_session(agent_name=args.agent_name,
                        type=ServerType.PUBLISHER if args.type == "publisher" else ServerType.ROOM)
    async def entry(ctx: JobContext) -> None:
        await ctx.connect()
        say(event="job", room=ctx.room.name, job_id=ctx.job.id, dispatch_id=ctx.job.dispatch_id,
            identity=ctx.room.local_participant.identity, metadata=ctx.job.metadata,
            agent_name=ctx.job.agent_name)
        await asyncio.sleep(args.seconds)

    @server.on("worker_registered")
    def _registered(worker_id: str, server_info: object) -> None:
        say(event="registered", worker_id=worker_id)

    task = asyncio.ensure_future(server.run(devmode=True))
    try:
        await asyncio.wait_for(asyncio.shield(task), args.seconds)
    except TimeoutError:
        pass
    finally:
        await server.aclose()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
