"""The SIP Twirp service through the official `livekit-api`: CRUD, conflicts and errors as LiveKit
words them (reference server-api.md §7, media-services.md §3.2), records surviving a restart."""

from __future__ import annotations

import livekit.api as lk
import pytest
from conftest import API_KEY, API_SECRET
from livekit.protocol import models, sip


@pytest.fixture
async def lkapi(server):
    api = lk.LiveKitAPI(server.url, API_KEY, API_SECRET)
    yield api
    await api.aclose()


async def expect_error(coro, code: str, msg: str) -> lk.TwirpError:
    with pytest.raises(lk.TwirpError) as e:
        await coro
    assert (e.value.code, e.value.message) == (code, msg), (e.value.code, e.value.message)
    return e.value


async def clear(api: lk.LiveKitAPI) -> None:
    for t in (await api.sip.list_inbound_trunk(sip.ListSIPInboundTrunkRequest())).items:
        await api.sip.delete_trunk(sip.DeleteSIPTrunkRequest(sip_trunk_id=t.sip_trunk_id))
    for t in (await api.sip.list_outbound_trunk(sip.ListSIPOutboundTrunkRequest())).items:
        await api.sip.delete_trunk(sip.DeleteSIPTrunkRequest(sip_trunk_id=t.sip_trunk_id))
    for r in (await api.sip.list_dispatch_rule(sip.ListSIPDispatchRuleRequest())).items:
        await api.sip.delete_dispatch_rule(sip.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=r.sip_dispatch_rule_id))


async def test_inbound_trunk_crud_and_conflicts(lkapi):
    await clear(lkapi)
    a = await lkapi.sip.create_inbound_trunk(sip.CreateSIPInboundTrunkRequest(trunk=sip.SIPInboundTrunkInfo(
        name="a", numbers=["+1 (555) 0100"], auth_username="u", auth_password="p", headers={"X-A": "1"})))
    assert a.sip_trunk_id.startswith("ST_") and len(a.sip_trunk_id) == 15
    assert list(a.numbers) == ["+1 (555) 0100"] and a.name == "a"

    # the same number (normalized) without AllowedNumbers on either side
    await expect_error(lkapi.sip.create_inbound_trunk(sip.CreateSIPInboundTrunkRequest(
        trunk=sip.SIPInboundTrunkInfo(name="b", numbers=["+15550100"], allowed_addresses=["10.0.0.0/8"]))),
        "invalid_argument",
        f'Conflicting inbound SIP Trunks: "<new>" and "{a.sip_trunk_id}", using the same number(s) '
        '["+15550100"] without AllowedNumbers set')
    # restricted callers make it distinct; an overlapping caller does not
    b = await lkapi.sip.create_inbound_trunk(sip.CreateSIPInboundTrunkRequest(trunk=sip.SIPInboundTrunkInfo(
        name="b", numbers=["+15550100"], allowed_numbers=["+15557777"])))
    await expect_error(lkapi.sip.create_inbound_trunk(sip.CreateSIPInboundTrunkRequest(
        trunk=sip.SIPInboundTrunkInfo(numbers=["15550100"], allowed_numbers=["+1 555 7777"]))),
        "invalid_argument",
        f'Conflicting inbound SIP Trunks: "<new>" and "{b.sip_trunk_id}", using the same number(s) '
        '["15550100"] and AllowedNumber "+1 555 7777"')

    await expect_error(lkapi.sip.create_inbound_trunk(sip.CreateSIPInboundTrunkRequest(
        trunk=sip.SIPInboundTrunkInfo(name="open"))), "invalid_argument",
        "for security, one of the fields must be set: AuthUsername+AuthPassword, AllowedAddresses or Numbers")
    await expect_error(lkapi.sip.create_inbound_trunk(sip.CreateSIPInboundTrunkRequest(
        trunk=sip.SIPInboundTrunkInfo(sip_trunk_id="ST_x", numbers=["+1"]))), "invalid_argument",
        "trunk id must not be set")
    await expect_error(lkapi.sip.create_inbound_trunk(sip.CreateSIPInboundTrunkRequest(
        trunk=sip.SIPInboundTrunkInfo(numbers=["+1999"], headers={"Call-ID": "x"}))), "invalid_argument",
        "invalid header name: header name Call-ID not supported")

    got = await lkapi.sip.get_inbound_trunk(sip.GetSIPInboundTrunkRequest(sip_trunk_id=a.sip_trunk_id)) \
        if hasattr(lkapi.sip, "get_inbound_trunk") else None
    if got is not None:
        assert got.trunk.sip_trunk_id == a.sip_trunk_id

    # partial update: add a number, rename; a conflicting update is refused
    upd = await lkapi.sip.update_inbound_trunk_fields(a.sip_trunk_id, numbers=models.ListUpdate(add=["+15550111"]),
                                                      name="a2")
    assert list(upd.numbers) == ["+1 (555) 0100", "+15550111"] and upd.name == "a2" and upd.auth_username == "u"
    c = await lkapi.sip.create_inbound_trunk(sip.CreateSIPInboundTrunkRequest(trunk=sip.SIPInboundTrunkInfo(
        name="c", numbers=["+15550999"], allowed_numbers=["+15557777"])))
    with pytest.raises(lk.TwirpError) as e:
        await lkapi.sip.update_inbound_trunk_fields(c.sip_trunk_id, numbers=models.ListUpdate(add=["+15550100"]))
    assert e.value.code == "invalid_argument" and e.value.message.startswith("Conflicting inbound SIP Trunks: ")
    assert b.sip_trunk_id in e.value.message and c.sip_trunk_id in e.value.message
    assert e.value.message.endswith('and AllowedNumber "+15557777"')
    await lkapi.sip.delete_trunk(sip.DeleteSIPTrunkRequest(sip_trunk_id=c.sip_trunk_id))
    rep = await lkapi.sip.update_inbound_trunk(b.sip_trunk_id, sip.SIPInboundTrunkInfo(
        name="b2", numbers=["+15550200"]))
    assert rep.sip_trunk_id == b.sip_trunk_id and rep.name == "b2" and not rep.allowed_numbers
    await expect_error(lkapi.sip.update_inbound_trunk("ST_missing", sip.SIPInboundTrunkInfo(numbers=["+1"])),
                       "not_found", "requested sip trunk does not exist")

    listed = await lkapi.sip.list_inbound_trunk(sip.ListSIPInboundTrunkRequest())
    assert [t.sip_trunk_id for t in listed.items] == sorted([a.sip_trunk_id, b.sip_trunk_id])
    by_number = await lkapi.sip.list_inbound_trunk(sip.ListSIPInboundTrunkRequest(numbers=["+15550200"]))
    assert [t.sip_trunk_id for t in by_number.items] == [b.sip_trunk_id]

    # delete: no existence check, answers the id
    gone = await lkapi.sip.delete_trunk(sip.DeleteSIPTrunkRequest(sip_trunk_id="ST_neverwas"))
    assert gone.sip_trunk_id == "ST_neverwas"
    await lkapi.sip.delete_trunk(sip.DeleteSIPTrunkRequest(sip_trunk_id=b.sip_trunk_id))
    listed = await lkapi.sip.list_inbound_trunk(sip.ListSIPInboundTrunkRequest())
    assert [t.sip_trunk_id for t in listed.items] == [a.sip_trunk_id]


async def test_outbound_trunk_crud(lkapi):
    await clear(lkapi)
    await expect_error(lkapi.sip.create_outbound_trunk(sip.CreateSIPOutboundTrunkRequest(
        trunk=sip.SIPOutboundTrunkInfo(address="sip.example.com"))), "invalid_argument", "no trunk numbers specified")
    await expect_error(lkapi.sip.create_outbound_trunk(sip.CreateSIPOutboundTrunkRequest(
        trunk=sip.SIPOutboundTrunkInfo(numbers=["+1"]))), "invalid_argument", "no outbound address specified")
    await expect_error(lkapi.sip.create_outbound_trunk(sip.CreateSIPOutboundTrunkRequest(
        trunk=sip.SIPOutboundTrunkInfo(numbers=["+1"], address="sip:carrier.example.com"))),
        "invalid_argument", "trunk address should be a hostname or IP, not SIP URI")
    t = await lkapi.sip.create_outbound_trunk(sip.CreateSIPOutboundTrunkRequest(trunk=sip.SIPOutboundTrunkInfo(
        name="out", address="sip.example.com", numbers=["+15550101"], transport=sip.SIPTransport.SIP_TRANSPORT_TCP)))
    t2 = await lkapi.sip.create_outbound_trunk(sip.CreateSIPOutboundTrunkRequest(trunk=sip.SIPOutboundTrunkInfo(
        name="same", address="sip.example.com", numbers=["+15550101"])))  # no cross-trunk check
    u = await lkapi.sip.update_outbound_trunk_fields(t.sip_trunk_id, address="sip2.example.com", metadata="m")
    assert (u.address, u.metadata, u.transport, list(u.numbers)) == (
        "sip2.example.com", "m", sip.SIPTransport.SIP_TRANSPORT_TCP, ["+15550101"])
    listed = await lkapi.sip.list_outbound_trunk(sip.ListSIPOutboundTrunkRequest(trunk_ids=[t2.sip_trunk_id]))
    assert [x.name for x in listed.items] == ["same"]


async def test_dispatch_rules(lkapi):
    await clear(lkapi)
    direct = sip.SIPDispatchRule(dispatch_rule_direct=sip.SIPDispatchRuleDirect(room_name="lobby"))
    r1 = await lkapi.sip.create_dispatch_rule(sip.CreateSIPDispatchRuleRequest(dispatch_rule=sip.SIPDispatchRuleInfo(
        name="first", rule=direct, trunk_ids=["ST_a"])))
    assert r1.sip_dispatch_rule_id.startswith("SDR_") and len(r1.sip_dispatch_rule_id) == 16
    # same (trunk, inbound number, number, pin) key
    await expect_error(lkapi.sip.create_dispatch_rule(sip.CreateSIPDispatchRuleRequest(
        dispatch_rule=sip.SIPDispatchRuleInfo(rule=direct, trunk_ids=["ST_b", "ST_a"]))), "invalid_argument",
        "Dispatch rule for the same trunk, inbound number, number, and PIN combination already exists in "
        f'dispatch rule "{r1.sip_dispatch_rule_id}" "first"')
    # a PIN makes another key; a wildcard (no trunks) collides only with wildcards
    pinned = sip.SIPDispatchRule(dispatch_rule_direct=sip.SIPDispatchRuleDirect(room_name="vip", pin="1234"))
    await lkapi.sip.create_dispatch_rule(sip.CreateSIPDispatchRuleRequest(dispatch_rule=sip.SIPDispatchRuleInfo(
        rule=pinned, trunk_ids=["ST_a"])))
    ind = sip.SIPDispatchRule(dispatch_rule_individual=sip.SIPDispatchRuleIndividual(room_prefix="call"))
    w = await lkapi.sip.create_dispatch_rule(sip.CreateSIPDispatchRuleRequest(dispatch_rule=sip.SIPDispatchRuleInfo(
        rule=ind)))
    await expect_error(lkapi.sip.create_dispatch_rule(sip.CreateSIPDispatchRuleRequest(
        dispatch_rule=sip.SIPDispatchRuleInfo(rule=direct))), "invalid_argument",
        "Dispatch rule for the same trunk, inbound number, number, and PIN combination already exists in "
        f'dispatch rule "{w.sip_dispatch_rule_id}" "<blank name>"')
    await expect_error(lkapi.sip.create_dispatch_rule(sip.CreateSIPDispatchRuleRequest(
        dispatch_rule=sip.SIPDispatchRuleInfo(name="norule"))), "invalid_argument", "missing rule")

    u = await lkapi.sip.update_dispatch_rule_fields(r1.sip_dispatch_rule_id, name="renamed",
                                                    attributes={"team": "blue"})
    assert u.name == "renamed" and dict(u.attributes) == {"team": "blue"} and list(u.trunk_ids) == ["ST_a"]
    listed = await lkapi.sip.list_dispatch_rule(sip.ListSIPDispatchRuleRequest(trunk_ids=["ST_a"]))
    assert len(listed.items) == 3  # the two for ST_a and the wildcard
    deleted = await lkapi.sip.delete_dispatch_rule(sip.DeleteSIPDispatchRuleRequest(
        sip_dispatch_rule_id=r1.sip_dispatch_rule_id))
    assert deleted.name == "renamed"
    await expect_error(lkapi.sip.delete_dispatch_rule(sip.DeleteSIPDispatchRuleRequest(
        sip_dispatch_rule_id=r1.sip_dispatch_rule_id)), "not_found", "requested sip dispatch rule does not exist")


async def test_call_requests_validated_and_grants_enforced(lkapi, server):
    await expect_error(lkapi.sip.create_sip_participant(sip.CreateSIPParticipantRequest(
        sip_call_to="+1", room_name="r")), "invalid_argument", "missing sip trunk id and sip number")
    await expect_error(lkapi.sip.create_sip_participant(sip.CreateSIPParticipantRequest(
        sip_trunk_id="ST_x", sip_call_to="alice@example.com", room_name="r")), "invalid_argument",
        "SipCallTo should be a phone number or SIP user, not a full SIP URI")
    await expect_error(lkapi.sip.create_sip_participant(sip.CreateSIPParticipantRequest(
        sip_trunk_id="ST_x", sip_call_to="+1")), "invalid_argument", "missing room name")
    await expect_error(lkapi.sip.create_sip_participant(sip.CreateSIPParticipantRequest(
        sip_trunk_id="ST_x", sip_call_to="+1", room_name="r")), "not_found", "requested sip trunk does not exist")
    await expect_error(lkapi.sip.transfer_sip_participant(sip.TransferSIPParticipantRequest(
        room_name="r", participant_identity="p", transfer_to="+15550100")), "invalid_argument",
        "transfer_to must be a valid SIP(s) or TEL URI (sip:, sips: or tel:)")
    # a token without the SIP grant: LiveKit's "permissions denied"
    tok = lk.AccessToken(API_KEY, API_SECRET).with_grants(lk.VideoGrants(room_create=True)).to_jwt()
    import aiohttp

    async with aiohttp.ClientSession() as s, s.post(f"{server.url}/twirp/livekit.SIP/ListSIPInboundTrunk", json={},
                                                    headers={"Authorization": f"Bearer {tok}"}) as r:
        assert r.status == 401 and (await r.json()) == {"code": "unauthenticated", "msg": "permissions denied"}


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_records_survive_restart(server_factory, request, backend):
    """Trunks and rules are stored: a SIGKILLed server has them back (SQLite file, or Redis in
    LiveKit's layout: `sip_inbound_trunk` / `sip_dispatch_rule` hashes of binary protobuf)."""
    config = None
    if backend == "redis":
        import redis.asyncio as aioredis
        import yaml
        from conftest import free_port

        redis_url = request.getfixturevalue("redis_url")
        host, port = redis_url.rsplit(":", 1)
        client = aioredis.Redis(host=host, port=int(port), db=7)
        await client.flushdb()
        config = yaml.safe_dump({"keys": {API_KEY: API_SECRET}, "bind_addresses": ["127.0.0.1"],
                                 "rtc": {"tcp_port": 0, "udp_port": free_port()},
                                 "redis": {"address": redis_url, "db": 7}})
    s = server_factory(config=config)
    api = lk.LiveKitAPI(s.url, API_KEY, API_SECRET)
    t = await api.sip.create_inbound_trunk(sip.CreateSIPInboundTrunkRequest(
        trunk=sip.SIPInboundTrunkInfo(name="keep", numbers=["+15550300"])))
    r = await api.sip.create_dispatch_rule(sip.CreateSIPDispatchRuleRequest(dispatch_rule=sip.SIPDispatchRuleInfo(
        rule=sip.SIPDispatchRule(dispatch_rule_callee=sip.SIPDispatchRuleCallee(room_prefix="c")))))
    await api.aclose()
    if backend == "redis":
        raw = await client.hget("sip_inbound_trunk", t.sip_trunk_id)
        assert sip.SIPInboundTrunkInfo.FromString(raw) == t
        assert await client.hexists("sip_dispatch_rule", r.sip_dispatch_rule_id)
        await client.aclose()
    s.kill()
    s.start()
    api = lk.LiveKitAPI(s.url, API_KEY, API_SECRET)
    try:
        trunks = (await api.sip.list_inbound_trunk(sip.ListSIPInboundTrunkRequest())).items
        rules_ = (await api.sip.list_dispatch_rule(sip.ListSIPDispatchRuleRequest())).items
    finally:
        await api.aclose()
    assert [x.sip_trunk_id for x in trunks] == [t.sip_trunk_id] and trunks[0].name == "keep"
    assert [x.sip_dispatch_rule_id for x in rules_] == [r.sip_dispatch_rule_id]
