"""Resource identifiers in LiveKit's format (protocol utils/guid).

An id is a prefix plus 12 characters drawn uniformly from the shortuuid base57 alphabet.
"""

from __future__ import annotations

import secrets

BASE57 = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

ROOM = "RM_"
PARTICIPANT = "PA_"
TRACK = "TR_"
NODE = "ND_"
EGRESS = "EG_"
INGRESS = "IN_"
SIP_TRUNK = "ST_"
SIP_DISPATCH_RULE = "SDR_"
SIP_CALL = "SCL_"
SIP_TRANSFER = "STR_"
AGENT_DISPATCH = "AD_"
AGENT_JOB = "AJ_"
AGENT_WORKER = "AW_"
WEBHOOK_EVENT = "EV_"


def new_id(prefix: str, length: int = 12) -> str:
    # one draw of a uniform integer below 57**length (rejection sampling keeps every character
    # uniform and independent, as `secrets.choice` per character would), written in base 57:
    # one random call per id instead of one per character, on CreateRoom's and every event's path
    space = 57**length
    bits = space.bit_length()
    n = secrets.randbits(bits)
    while n >= space:
        n = secrets.randbits(bits)
    chars = []
    for _ in range(length):
        n, r = divmod(n, 57)
        chars.append(BASE57[r])
    return prefix + "".join(chars)


def random_secret() -> str:
    """A 256-bit secret in base62, as LiveKit's utils.RandomSecret (used for turn_password)."""
    n = int.from_bytes(secrets.token_bytes(32), "big")
    out = []
    while n:
        n, r = divmod(n, 62)
        out.append(BASE62[r])
    return "".join(reversed(out)) or "0"
