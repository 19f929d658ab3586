"""Domain errors; the service layer maps them to LiveKit's Twirp errors."""


class RoomError(Exception):
    pass


class RoomNotFound(RoomError):
    pass


class ParticipantNotFound(RoomError):
    pass


class RoomFull(RoomError):
    """max_participants reached."""


class RpcError(RoomError):
    """A participant RPC failed; `code` is the data-channel RPC error code (1400-1505)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
