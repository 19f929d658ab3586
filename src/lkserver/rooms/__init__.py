"""The domain: rooms, participants, tracks, their lifecycle and permissions."""

from .errors import ParticipantNotFound, RoomError, RoomFull, RoomNotFound, RpcError
from .manager import RoomManager, UnknownRoomPreset
from .participant import Participant, ParticipantConnection
from .room import Room

__all__ = ["Participant", "ParticipantConnection", "ParticipantNotFound", "Room", "RoomError",
           "RoomFull", "RoomManager", "RoomNotFound", "RpcError", "UnknownRoomPreset"]
