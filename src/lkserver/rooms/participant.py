"""A participant as the room sees it: its ParticipantInfo and the connection that serves it.

The room domain does not know how a participant is connected. A connection (the signalling
session of rtc/, an ingress, a SIP call) implements `ParticipantConnection`; the room calls it
to deliver signal messages and to close it with a reason.
"""

from __future__ import annotations

from typing import Protocol

from livekit.protocol.models import DataPacket, DisconnectReason, ParticipantInfo
from livekit.protocol.rtc import SignalResponse

DEPENDENT_KINDS = (ParticipantInfo.Kind.AGENT, ParticipantInfo.Kind.EGRESS)


class ParticipantConnection(Protocol):
    def close(self, reason: "DisconnectReason.ValueType") -> None:
        """Disconnect the participant (it receives `leave{reason}` if it can)."""

    def send_signal(self, msg: SignalResponse) -> None:
        """Queue a signal message for the participant (bounded; never blocks)."""

    def send_data(self, packet: DataPacket) -> None:
        """Deliver a data packet on the participant's data channel."""

    async def perform_rpc(self, method: str, payload: str, timeout_ms: int) -> str:
        """Send an RPC request to the participant and wait for its response payload."""


class Participant:
    __slots__ = ("info", "connection", "ever_active")

    def __init__(self, info: ParticipantInfo, connection: ParticipantConnection | None = None) -> None:
        self.info = info
        self.connection = connection
        self.ever_active = info.state == ParticipantInfo.State.ACTIVE

    @property
    def identity(self) -> str:
        return self.info.identity

    @property
    def sid(self) -> str:
        return self.info.sid

    @property
    def is_dependent(self) -> bool:
        """Agents and recorders neither keep a room alive nor count toward its limits."""
        return self.info.kind in DEPENDENT_KINDS or self.info.permission.recorder or self.info.permission.agent

    @property
    def is_publisher(self) -> bool:
        return len(self.info.tracks) > 0
