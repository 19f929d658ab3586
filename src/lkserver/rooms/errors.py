"""Domain errors; the service layer maps them to LiveKit's Twirp errors."""


class RoomError(Exception):
    pass


class RoomNotFound(RoomError):
    pass


class ParticipantNotFound(RoomError):
    pass


class RoomFull(RoomError):
    """max_participants reached."""
