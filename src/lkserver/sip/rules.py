"""SIP trunks and dispatch rules: validation, conflicts, call matching and rule evaluation.

Reproduces livekit/protocol's `livekit/sip.go`, `livekit/sip_validation.go` and `sip/sip.go`
(reference media-services.md §3.1-3.2): the same checks in the same order, the same conflict
keys and rule priorities, and the same error strings, which users debug with. Pure functions
over the protobuf records; no I/O. Errors carry the Twirp code LiveKit answers with.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from livekit.protocol import models
from livekit.protocol import sip as proto

from .. import ids

# livekit/attrs.go
ATTR_CALL_ID = "sip.callID"
ATTR_TRUNK_ID = "sip.trunkID"
ATTR_RULE_ID = "sip.ruleID"
ATTR_PHONE_NUMBER = "sip.phoneNumber"
ATTR_HOSTNAME = "sip.hostname"
ATTR_TRUNK_NUMBER = "sip.trunkPhoneNumber"
ATTR_CALL_STATUS = "sip.callStatus"

MAX_MEDIA_TIMEOUT = 3600.0  # seconds (protocol MaxSIPMediaTimeout is an hour)


class SipRuleError(Exception):
    """A validation or matching failure. `code` is the Twirp code; `psrpc` marks errors LiveKit
    raises as psrpc errors (their visible message gains the `twirp error unknown: ` prefix when
    not re-wrapped); `plain` marks plain Go errors (answered `unknown`)."""

    def __init__(self, msg: str, code: str = "invalid_argument", *, psrpc: bool = False,
                 plain: bool = False) -> None:
        super().__init__(msg)
        self.msg = msg
        self.code = code
        self.psrpc = psrpc
        self.plain = plain


# -- numbers ---------------------------------------------------------------------------------------

_NUMBER = re.compile(r"^\+?[\d\- ()]+$")


def normalize_number(num: str) -> str:
    """E.164-ish form: formatting removed and a leading `+` (other strings unchanged)."""
    if not num or not _NUMBER.match(num):
        return num
    num = num.replace(" ", "").replace("-", "").replace("(", "").replace(")", "")
    return num if num.startswith("+") else "+" + num


def _go_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _print_numbers(numbers: Iterable[str]) -> str:
    numbers = list(numbers)
    if not numbers:
        return "<any>"
    return "[" + " ".join(_go_quote(n) for n in numbers) + "]"


def _print_id(s: str) -> str:
    return s or "<new>"


def _print_name(s: str) -> str:
    return s or "<blank name>"


# -- headers (livekit/sip_validation.go) ------------------------------------------------------------

_TOKEN_CHARS = set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-.!%*_+`'~")
FORBIDDEN_HEADERS = {
    "accept", "accept-encoding", "accept-language", "allow", "allow-events", "call-id", "contact",
    "content-encoding", "content-length", "content-type", "cseq", "event", "expires", "from",
    "max-forwards", "record-route", "refer-to", "reply-to", "k", "l", "m", "o", "r", "t", "u", "v",
}


def _check_chars(value: str, allowed: set[str]) -> str | None:
    for ch in value:
        if ord(ch) >= 128:
            return f"char {ord(ch)} out of range, consider explicilty adding utf8 characters"
        if ch not in allowed:
            return f"char {ord(ch)} not allowed"
    return None


def validate_header_name(name: str, restrict: bool) -> None:
    if not name:
        raise SipRuleError("header name cannot be empty")
    if len(name) > 255:
        raise SipRuleError("header name too long (max 255 characters)")
    bad = _check_chars(name, _TOKEN_CHARS)
    if bad:
        raise SipRuleError(f"header name {name} contains invalid characters: {bad}")
    if restrict and name.lower() in FORBIDDEN_HEADERS:
        raise SipRuleError(f"header name {name} not supported")


def validate_header_value(name: str, value: str) -> None:
    if not value:
        return
    if len(value.encode()) > 1024:
        raise SipRuleError(f"header {name}: value too long (max 1024 characters)")
    for ch in value:
        o = ord(ch)
        if o < 128 and not (0x20 <= o <= 0x7E or o == 0x09):
            raise SipRuleError(f"header {name}: value: char {o} not allowed")


def validate_headers(headers: dict[str, str]) -> None:
    for name, value in headers.items():
        try:
            validate_header_name(name, True)
        except SipRuleError as e:
            raise SipRuleError(f"invalid header name: {e.msg}") from None
        try:
            validate_header_value(name, value)
        except SipRuleError as e:
            raise SipRuleError(f"invalid header value for {name}: {e.msg}") from None


def _validate_header_maps(to_headers: Iterable[str], from_headers: Iterable[str]) -> None:
    for name in list(to_headers) + list(from_headers):
        try:
            validate_header_name(name, False)
        except SipRuleError as e:
            raise SipRuleError(f"invalid header name: {e.msg}") from None


def validate_media(media: proto.SIPMediaConfig | None) -> None:
    if media is None:
        return
    for c in media.codecs:
        if not c.name:
            raise SipRuleError("missing codec name")
        if any(ch in c.name for ch in " \t\n\r"):
            raise SipRuleError("invalid codec name")
        if "/" in c.name:
            raise SipRuleError("codec name must not contain '/'")
    if media.HasField("media_timeout"):
        t = media.media_timeout.seconds + media.media_timeout.nanos / 1e9
        if t < 0:
            raise SipRuleError("media_timeout must not be negative")
        if t > MAX_MEDIA_TIMEOUT:
            raise SipRuleError("media_timeout must not exceed 1h0m0s")


def _media(msg: object) -> proto.SIPMediaConfig | None:
    return msg.media if msg.HasField("media") else None  # type: ignore[attr-defined]


def validate_hostname(value: str, field_name: str) -> None:
    if "transport=" in value:
        raise SipRuleError(f"{field_name} should not contain transport parameter")
    if "@" in value or ";" in value or value.startswith(("sip:", "sips:")):
        raise SipRuleError(f"{field_name} should be a hostname or IP, not SIP URI")


# -- trunks and rules ---------------------------------------------------------------------------

def validate_inbound_trunk(t: proto.SIPInboundTrunkInfo) -> None:
    if not (t.auth_username or t.auth_password) and not t.allowed_addresses and not t.numbers:
        raise SipRuleError("for security, one of the fields must be set: AuthUsername+AuthPassword, "
                           "AllowedAddresses or Numbers", psrpc=True)
    validate_media(_media(t))
    validate_headers(dict(t.headers))
    _validate_header_maps(t.attributes_to_headers.values(), t.headers_to_attributes.keys())


def validate_outbound_trunk(t: proto.SIPOutboundTrunkInfo) -> None:
    if not t.numbers:
        raise SipRuleError("no trunk numbers specified", plain=True)
    if not t.address:
        raise SipRuleError("no outbound address specified", plain=True)
    validate_hostname(t.address, "trunk address")
    validate_hostname(t.from_host, "from_host")
    validate_headers(dict(t.headers))
    _validate_header_maps(t.attributes_to_headers.values(), t.headers_to_attributes.keys())
    validate_media(_media(t))


def validate_list_update(u: models.ListUpdate) -> None:
    change = len(u.set) + len(u.add) + len(u.remove) > 0
    if not u.clear and not change:
        raise SipRuleError("unsupported list update operation", plain=True)
    if u.clear and change:
        raise SipRuleError("cannot clear and change the list at the same time", plain=True)
    if u.set and (u.add or u.remove):
        raise SipRuleError("cannot set and change the list at the same time", plain=True)
    if any(v == "" for v in [*u.set, *u.add, *u.remove]):
        raise SipRuleError("empty element in the list", plain=True)


def apply_list_update(target: object, u: models.ListUpdate) -> None:
    """Apply a ListUpdate to a repeated string field in place."""
    cur = list(target)  # type: ignore[call-overload]
    if u.clear:
        cur = []
    elif u.set:
        cur = list(u.set)
    else:
        for v in u.remove:
            if v in cur:
                cur.remove(v)
        for v in u.add:
            if v not in cur:
                cur.append(v)
    del target[:]  # type: ignore[attr-defined]
    target.extend(cur)  # type: ignore[attr-defined]


def _apply_optional(info: object, diff: object, names: Iterable[str]) -> None:
    for name in names:
        if diff.HasField(name):  # type: ignore[attr-defined]
            setattr(info, name, getattr(diff, name))


def apply_inbound_update(info: proto.SIPInboundTrunkInfo, diff: proto.SIPInboundTrunkUpdate) -> None:
    for name in ("numbers", "allowed_addresses", "allowed_numbers"):
        if diff.HasField(name):
            validate_list_update(getattr(diff, name))
    validate_media(_media(diff))
    for name in ("numbers", "allowed_addresses", "allowed_numbers"):
        if diff.HasField(name):
            apply_list_update(getattr(info, name), getattr(diff, name))
    _apply_optional(info, diff, ("auth_username", "auth_password", "auth_realm", "name", "metadata",
                                 "media_encryption"))
    if diff.HasField("media"):
        info.media.CopyFrom(diff.media)
    validate_inbound_trunk(info)


def apply_outbound_update(info: proto.SIPOutboundTrunkInfo, diff: proto.SIPOutboundTrunkUpdate) -> None:
    if diff.HasField("numbers"):
        validate_list_update(diff.numbers)
    validate_media(_media(diff))
    _apply_optional(info, diff, ("address", "transport", "destination_country", "auth_username",
                                 "auth_password", "name", "metadata", "from_host", "media_encryption"))
    if diff.HasField("numbers"):
        apply_list_update(info.numbers, diff.numbers)
    if diff.HasField("media"):
        info.media.CopyFrom(diff.media)
    validate_outbound_trunk(info)


def validate_rule(r: proto.SIPDispatchRuleInfo) -> None:
    if not r.HasField("rule") or r.rule.WhichOneof("rule") is None:
        raise SipRuleError("missing rule", plain=True)
    validate_media(_media(r))


def apply_rule_update(info: proto.SIPDispatchRuleInfo, diff: proto.SIPDispatchRuleUpdate) -> None:
    if diff.HasField("trunk_ids"):
        validate_list_update(diff.trunk_ids)
    validate_media(_media(diff))
    if diff.HasField("trunk_ids"):
        apply_list_update(info.trunk_ids, diff.trunk_ids)
    if diff.HasField("rule"):
        info.rule.CopyFrom(diff.rule)
    _apply_optional(info, diff, ("name", "metadata", "media_encryption"))
    for k, v in diff.attributes.items():
        if v:
            info.attributes[k] = v
        else:
            info.attributes.pop(k, None)
    if diff.HasField("media"):
        info.media.CopyFrom(diff.media)
    validate_rule(info)


def pin_and_room(r: proto.SIPDispatchRuleInfo) -> tuple[str, str]:
    """(room name or prefix, pin) of a rule."""
    kind = r.rule.WhichOneof("rule")
    if kind == "dispatch_rule_direct":
        return r.rule.dispatch_rule_direct.room_name, r.rule.dispatch_rule_direct.pin
    if kind == "dispatch_rule_individual":
        return r.rule.dispatch_rule_individual.room_prefix, r.rule.dispatch_rule_individual.pin
    if kind == "dispatch_rule_callee":
        return r.rule.dispatch_rule_callee.room_prefix, r.rule.dispatch_rule_callee.pin
    raise SipRuleError(f"unsupported SIP Dispatch Rule: {kind}", psrpc=True)


def rule_priority(r: proto.SIPDispatchRuleInfo) -> int:
    """Lower is preferred: PIN-protected before open, direct < individual < callee, and a
    1000 penalty for each of inbound_numbers and numbers left empty (sip.DispatchRulePriority)."""
    kind = r.rule.WhichOneof("rule")
    base = {"dispatch_rule_direct": 0, "dispatch_rule_individual": 1, "dispatch_rule_callee": 2}.get(kind or "")
    if base is None:
        return 2**31 - 1
    _, pin = pin_and_room(r)
    p = base if pin else base + 100
    if not r.inbound_numbers:
        p += 1000
    if not r.numbers:
        p += 1000
    return p


def _higher(a: proto.SIPDispatchRuleInfo, b: proto.SIPDispatchRuleInfo) -> bool:
    pa, pb = rule_priority(a), rule_priority(b)
    if pa != pb:
        return pa < pb
    return pin_and_room(a)[0] < pin_and_room(b)[0]


def validate_trunks(trunks: Iterable[proto.SIPInboundTrunkInfo]) -> None:
    """Inbound trunks conflict when they serve a common number (or both serve any number) and
    either neither restricts callers or their allowed callers overlap (sip.ValidateTrunksIter)."""
    by_number: dict[str, dict[str, proto.SIPInboundTrunkInfo]] = {}
    for t in trunks:
        keys = list(dict.fromkeys(normalize_number(n) for n in t.numbers)) if t.numbers else [""]
        for key in keys:
            by_inbound = by_number.setdefault(key, {})
            if not t.allowed_numbers:
                t2 = by_inbound.get("")
                if t2 is not None and t2.sip_trunk_id != t.sip_trunk_id:
                    raise SipRuleError(
                        f"Conflicting inbound SIP Trunks: {_go_quote(_print_id(t.sip_trunk_id))} and "
                        f"{_go_quote(_print_id(t2.sip_trunk_id))}, using the same number(s) "
                        f"{_print_numbers(t.numbers)} without AllowedNumbers set")
                by_inbound[""] = t
            else:
                seen: set[str] = set()
                for num in t.allowed_numbers:
                    k = normalize_number(num)
                    if k in seen:
                        continue
                    seen.add(k)
                    t2 = by_inbound.get(k)
                    if t2 is not None and t2.sip_trunk_id != t.sip_trunk_id:
                        raise SipRuleError(
                            f"Conflicting inbound SIP Trunks: {_go_quote(_print_id(t.sip_trunk_id))} and "
                            f"{_go_quote(_print_id(t2.sip_trunk_id))}, using the same number(s) "
                            f"{_print_numbers(t.numbers)} and AllowedNumber {_go_quote(num)}")
                    by_inbound[k] = t


def validate_rules(rules: Iterable[proto.SIPDispatchRuleInfo]) -> list[proto.SIPDispatchRuleInfo]:
    """Rules sharing a (trunk, inbound number, number, PIN) key conflict; empty lists are a
    wildcard key that collides only with other wildcards. Returns the rules, checked."""
    seen: dict[tuple[str, str, str, str], proto.SIPDispatchRuleInfo] = {}
    out = []
    for r in rules:
        _, pin = pin_and_room(r)
        for trunk in list(r.trunk_ids) or [""]:
            for inbound in list(r.inbound_numbers) or [""]:
                for number in list(r.numbers) or [""]:
                    key = (pin, trunk, normalize_number(inbound), normalize_number(number))
                    r2 = seen.get(key)
                    if r2 is not None:
                        raise SipRuleError(
                            "Dispatch rule for the same trunk, inbound number, number, and PIN combination "
                            f"already exists in dispatch rule {_go_quote(_print_id(r2.sip_dispatch_rule_id))} "
                            f"{_go_quote(_print_name(r2.name))}")
                    seen[key] = r
        out.append(r)
    return out


# -- matching a call ---------------------------------------------------------------------------

@dataclass
class CallInfo:
    """What the bridge knows of an inbound call when it picks a trunk and a rule."""
    from_user: str
    to_user: str
    from_host: str = ""
    source_ip: str = ""
    call_id: str = field(default_factory=lambda: ids.new_id(ids.SIP_CALL))
    pin: str = ""
    no_pin: bool = False


def _valid_mask(mask: str) -> bool:
    return not any(c in mask for c in "()+*;, \t\n\r") and "://" not in mask


def _match_addr(source_ip: str, host: str, masks: Iterable[str]) -> bool:
    try:
        ip = ipaddress.ip_address(source_ip)
    except ValueError:
        return True
    masks = [m for m in masks if _valid_mask(m)]
    if not masks:
        return True
    for m in masks:
        if m == host:
            return True
        try:
            if "/" in m:
                if ip in ipaddress.ip_network(m, strict=False):
                    return True
            elif ip == ipaddress.ip_address(m):
                return True
        except ValueError:
            continue
    return False


def _match_numbers(num: str, allowed: Iterable[str]) -> bool:
    allowed = list(allowed)
    if not allowed:
        return True
    norm = normalize_number(num)
    return any(num == a or norm == normalize_number(a) for a in allowed)


def match_trunk(trunks: Iterable[proto.SIPInboundTrunkInfo], call: CallInfo) -> proto.SIPInboundTrunkInfo | None:
    """The inbound trunk for a call: one serving the called number, else the one default trunk;
    None when nothing matches (sip.MatchTrunkDetailed)."""
    selected = None
    defaults: list[proto.SIPInboundTrunkInfo] = []
    called = normalize_number(call.to_user)
    for t in trunks:
        if not _match_numbers(call.from_user, t.allowed_numbers):
            continue
        if not _match_addr(call.source_ip, call.from_host, t.allowed_addresses):
            continue
        if not t.numbers:
            defaults.append(t)
            continue
        if any(n == call.to_user or normalize_number(n) == called for n in t.numbers):
            if selected is not None:
                raise SipRuleError(f"Multiple SIP Trunks matched for {_go_quote(call.to_user)}",
                                   "failed_precondition")
            selected = t
    if selected is not None:
        return selected
    if len(defaults) > 1:
        raise SipRuleError(f"Multiple default SIP Trunks matched for {_go_quote(call.to_user)}",
                           "failed_precondition")
    return defaults[0] if defaults else None


def match_rule(trunk: proto.SIPInboundTrunkInfo | None, rules: Iterable[proto.SIPDispatchRuleInfo],
               call: CallInfo) -> proto.SIPDispatchRuleInfo:
    """The best rule for a call (sip.MatchDispatchRuleIter): rules for the matched trunk before
    wildcard ones, then by priority; a sent PIN keeps only rules with that PIN."""
    specific = default = None
    n_specific = n_default = 0
    for r in validate_rules(rules):
        if r.inbound_numbers and call.from_user not in r.inbound_numbers:
            continue
        if r.numbers and call.to_user not in r.numbers:
            continue
        _, pin = pin_and_room(r)
        if call.no_pin:
            if pin:
                continue
        elif call.pin and pin != call.pin:  # a sent PIN keeps only the rules with that PIN
            continue
        if not r.trunk_ids:
            n_default += 1
            if default is None or _higher(r, default):
                default = r
            continue
        if trunk is None or trunk.sip_trunk_id not in r.trunk_ids:
            continue
        n_specific += 1
        if specific is None or _higher(r, specific):
            specific = r
    if specific is not None:
        return specific
    if default is not None:
        return default
    if n_specific == 0 and n_default == 0:
        raise SipRuleError("No SIP Dispatch Rules defined", "failed_precondition")
    if trunk is None:  # pragma: no cover - unreachable with the counts above, kept as LiveKit words it
        raise SipRuleError(f"No SIP Trunk or Dispatch Rules matched for {_go_quote(call.to_user)}",
                           "failed_precondition")
    raise SipRuleError(f"No SIP Dispatch Rules matched for {_go_quote(call.to_user)}", "failed_precondition")


@dataclass
class Dispatch:
    """Where an accepted call goes (rpc.EvaluateSIPDispatchRulesResponse)."""
    request_pin: bool
    room_name: str = ""
    identity: str = ""
    name: str = ""
    metadata: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    room_preset: str = ""
    room_config: object | None = None
    headers: dict[str, str] = field(default_factory=dict)
    rule_id: str = ""
    trunk_id: str = ""


def evaluate_rule(trunk: proto.SIPInboundTrunkInfo | None, rule: proto.SIPDispatchRuleInfo,
                  call: CallInfo) -> Dispatch:
    """Room, identity and attributes for a call (sip.EvaluateDispatchRule)."""
    trunk_id = trunk.sip_trunk_id if trunk is not None else ""
    attrs = dict(rule.attributes)
    attrs[ATTR_CALL_ID] = call.call_id
    attrs[ATTR_TRUNK_ID] = trunk_id
    to, frm = call.to_user, call.from_user
    name, identity = "Phone " + frm, "sip_" + frm
    if rule.hide_phone_number:
        identity = "sip_" + hashlib.sha256(frm.encode()).hexdigest()[:16]
        n = 4 if len(frm) > 4 else 1
        frm = frm[-n:]
        name = "Phone " + frm
    else:
        attrs[ATTR_PHONE_NUMBER] = call.from_user
        attrs[ATTR_HOSTNAME] = call.from_host
        attrs[ATTR_TRUNK_NUMBER] = call.to_user
    room, pin = pin_and_room(rule)
    if pin:
        if not call.pin:
            return Dispatch(request_pin=True, rule_id=rule.sip_dispatch_rule_id, trunk_id=trunk_id)
        if pin != call.pin:
            raise SipRuleError("Incorrect PIN for SIP room", "permission_denied")
    kind = rule.rule.WhichOneof("rule")
    if kind == "dispatch_rule_individual":
        ind = rule.rule.dispatch_rule_individual
        room = f"{ind.room_prefix}_{frm}" if ind.room_prefix else frm
        if not ind.no_randomness:
            room += "_" + ids.new_id("")
    elif kind == "dispatch_rule_callee":
        cal = rule.rule.dispatch_rule_callee
        room = f"{cal.room_prefix}_{to}" if cal.room_prefix else to
        if cal.randomize:
            room += "_" + ids.new_id("")
    attrs[ATTR_RULE_ID] = rule.sip_dispatch_rule_id
    return Dispatch(
        request_pin=False, room_name=room, identity=identity, name=name, metadata=rule.metadata,
        attributes=attrs, room_preset=rule.room_preset,
        room_config=rule.room_config if rule.HasField("room_config") else None,
        headers=dict(trunk.headers) if trunk is not None else {},
        rule_id=rule.sip_dispatch_rule_id, trunk_id=trunk_id,
    )
